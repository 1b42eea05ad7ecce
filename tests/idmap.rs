//! `uidmapping=`/`gidmapping=` (the fuse-overlayfs options containers/storage
//! passes): stored ids show mapped, ids set through the mount are stored
//! mapped back, unmapped ids show as 65534.

mod common;

use common::*;
use std::os::unix::fs::{chown, MetadataExt};

#[test]
fn id_mappings_apply_in_both_directions() {
    let Some(fx) = Fixture::for_impl(Impl::Ours) else {
        return;
    };
    fx.lower(0).file("mine", b"m").file("roots", b"r");
    chown(fx.lower(0).root.join("mine"), Some(1000), Some(1000)).expect("chown fixture");
    let m = fx
        .mount_ours_opts("uidmapping=:0:1000:1:1:100000:65536,gidmapping=:0:1000:1:1:100000:65536");
    let st = lstat(&m.p("mine"));
    assert_eq!((st.uid(), st.gid()), (0, 0), "stored 1000 shows as 0");
    let st = lstat(&m.p("roots"));
    assert_eq!(
        (st.uid(), st.gid()),
        (65534, 65534),
        "unmapped shows as nobody"
    );
    chown(m.p("roots"), Some(5), Some(7)).expect("chown through the mount");
    let up = lstat(&m.up("roots"));
    assert_eq!((up.uid(), up.gid()), (100004, 100006), "stored mapped back");
    write(&m.p("new"), b"n");
    let up = lstat(&m.up("new"));
    assert_eq!(
        (up.uid(), up.gid()),
        (1000, 1000),
        "root's new file stored as 1000"
    );
    assert_eq!(lstat(&m.p("new")).uid(), 0);
}

#[test]
fn bad_id_mapping_is_rejected() {
    let Some(fx) = Fixture::for_impl(Impl::Ours) else {
        return;
    };
    fx.lower(0).file("f", b"f");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_unionfs-fuse"))
        .arg(fx.lower(0).root.as_os_str())
        .arg(fx.upper().root.as_os_str())
        .arg(fx.merged().as_os_str())
        .args(["-o", "uidmapping=0:1000"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("uidmapping")
            || String::from_utf8_lossy(&out.stderr).contains("id mapping")
    );
    assert!(mount_type(&fx.merged()).is_none(), "nothing mounted");
}
