//! `xattr_permissions` at mount time, as fuse-overlayfs (1.14 and later,
//! its C `main.c`) does it: an upper root without the override xattr gets
//! the first one a lower root has, else `0:0:555`, so the merged root has
//! an owner and mode of its own; `=2` over an upper root that holds only
//! the older `user.fuseoverlayfs.override_stat` keeps writing that name.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

const CONTAINERS: &str = "user.containers.override_stat";
const OLDER: &str = "user.fuseoverlayfs.override_stat";
const PRIVILEGED: &str = "security.fuseoverlayfs.override_stat";

fn shown(m: &Mounted, rel: &str) -> (u32, u32, u32) {
    let md = lstat(&m.p(rel));
    (md.uid(), md.gid(), md.mode() & 0o7777)
}

#[test]
fn xattr_permissions_gives_an_upper_root_without_one_0_0_555() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    fx.lower(0).file("f", b"x");
    let up = fx.upper().path("");
    for (opt, key) in [
        ("xattr_permissions=2", CONTAINERS),
        ("xattr_permissions=1", PRIVILEGED),
    ] {
        let _ = sys::lremovexattr(&up, CONTAINERS);
        let _ = sys::lremovexattr(&up, PRIVILEGED);
        let m = fx.mount_ours_opts(opt);
        assert_eq!(shown(&m, ""), (0, 0, 0o555), "{opt}");
        drop(m);
        assert_eq!(sys::lgetxattr(&up, key).unwrap(), b"0:0:555", "{opt}");
        // Only the option's own name is written.
        let other = if key == CONTAINERS {
            PRIVILEGED
        } else {
            CONTAINERS
        };
        assert!(sys::lgetxattr(&up, other).is_err(), "{opt}: {other}");
        // The real owner and mode stay.
        assert_eq!(lstat(&up).mode() & 0o7777, 0o755);
    }
}

#[test]
fn xattr_permissions_copies_the_first_lower_roots_override_to_the_upper_root() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    // The top lower has none; the next has the older name only.
    fx.lower(0).file("f", b"x");
    fx.lower(1).xattr("", OLDER, b"5:6:750");
    fx.lower(2).xattr("", CONTAINERS, b"7:8:700");
    let m = fx.mount_ours_opts("xattr_permissions=2");
    assert_eq!(shown(&m, ""), (5, 6, 0o750));
    drop(m);
    let up = fx.upper().path("");
    assert_eq!(sys::lgetxattr(&up, CONTAINERS).unwrap(), b"5:6:750");
    assert!(sys::lgetxattr(&up, OLDER).is_err());
}

#[test]
fn xattr_permissions_keeps_an_upper_roots_own_override() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    fx.lower(0).xattr("", CONTAINERS, b"7:8:700");
    fx.upper().xattr("", CONTAINERS, b"1:2:711");
    let m = fx.mount_ours_opts("xattr_permissions=2");
    assert_eq!(shown(&m, ""), (1, 2, 0o711));
    drop(m);
    assert_eq!(
        sys::lgetxattr(&fx.upper().path(""), CONTAINERS).unwrap(),
        b"1:2:711"
    );
}

#[test]
fn xattr_permissions_2_over_an_upper_root_with_the_older_name_keeps_writing_it() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    fx.lower(0).file("f", b"x");
    fx.upper().xattr("", OLDER, b"3:4:755");
    let m = fx.mount_ours_opts("xattr_permissions=2");
    assert_eq!(shown(&m, ""), (3, 4, 0o755));
    fs::set_permissions(m.p("f"), fs::Permissions::from_mode(0o640)).expect("chmod");
    fs::create_dir(m.p("d")).expect("mkdir");
    assert_eq!(shown(&m, "f").2, 0o640);
    drop(m);
    let up = fx.upper();
    assert!(sys::lgetxattr(&up.path(""), CONTAINERS).is_err());
    assert_eq!(sys::lgetxattr(&up.path("f"), OLDER).unwrap(), b"0:0:640");
    assert!(sys::lgetxattr(&up.path("f"), CONTAINERS).is_err());
    assert!(sys::lgetxattr(&up.path("d"), OLDER).is_ok());
}
