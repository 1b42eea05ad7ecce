//! Metadata-only copies (overlay-semantics.md 1.10) written by the kernel
//! with `metacopy=on`: without metacopy support a lookup of one fails with
//! EPERM, as the kernel's own refusal without `metacopy=on`, and never shows
//! the copy's missing data as zeros (a later write would make them its
//! data for good).

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

const DATA: &[u8] = b"lower data here\n";

/// Lets the kernel (metacopy=on) write metadata-only copies of `f` (chown),
/// `g` (chmod) and `h` (setxattr); returns the fixture.
fn kernel_metacopy_upper() -> Option<Fixture> {
    let fx = Fixture::for_impl(Impl::Kernel)?;
    fx.lower(0)
        .file("d/f", DATA)
        .file("d/g", DATA)
        .file("d/h", DATA)
        .file("d/plain", DATA);
    fs::create_dir_all(fx.upper().root).unwrap();
    let m = Mounted::mount_kernel_opts(
        Impl::Kernel,
        &fx.lowers(),
        Some(&fx.upper().root),
        Some(&fx.work()),
        &fx.merged(),
        "metacopy=on,redirect_dir=on",
    );
    std::os::unix::fs::chown(m.p("d/f"), Some(1000), None).unwrap();
    fs::set_permissions(m.p("d/g"), fs::Permissions::from_mode(0o600)).unwrap();
    sys::lsetxattr(&m.p("d/h"), "user.tag", b"1", 0).unwrap();
    assert_eq!(fs::read(m.p("d/f")).unwrap(), DATA);
    drop(m);
    for n in ["f", "g", "h"] {
        let up = fx.upper().path(&format!("d/{n}"));
        assert!(
            sys::lgetxattr(&up, "trusted.overlay.metacopy").is_ok(),
            "the kernel wrote no metacopy for {n}"
        );
        assert_eq!(lstat(&up).size(), DATA.len() as u64);
    }
    Some(fx)
}

#[test]
fn a_kernel_metacopy_upper_gives_eperm_without_metacopy_support_never_zeros() {
    let Some(fx) = kernel_metacopy_upper() else {
        return;
    };
    let m = Mounted::mount(
        impl_under_test(),
        &fx.lowers(),
        Some(&fx.upper().root),
        Some(&fx.work()),
        &fx.merged(),
    );
    for n in ["f", "g", "h"] {
        let p = m.p(&format!("d/{n}"));
        let e = fs::read(&p).expect_err("read of a metacopy file without metacopy=on");
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "read d/{n}: {e}");
        let e = fs::symlink_metadata(&p).expect_err("stat of a metacopy file");
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "stat d/{n}: {e}");
        let e = fs::OpenOptions::new().append(true).open(&p).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "open d/{n} for write");
    }
    // The rest of the dir is served as usual.
    assert_eq!(fs::read(m.p("d/plain")).unwrap(), DATA);
    // A listing of the dir is left out: the kernel's readdir fails with
    // EPERM when it looks the entries up, ours lists what it can.
    drop(m);
    // Nothing was copied over the metadata-only copies.
    for n in ["f", "g", "h"] {
        let up = fx.upper().path(&format!("d/{n}"));
        assert!(sys::lgetxattr(&up, "trusted.overlay.metacopy").is_ok());
        let f = fs::File::open(&up).unwrap();
        let data = sys::lseek(std::os::fd::AsFd::as_fd(&f), 0, libc::SEEK_DATA);
        assert_eq!(
            data.map_err(|e| e.raw_os_error()),
            Err(Some(libc::ENXIO)),
            "d/{n} got data"
        );
    }
}

/// The same upper reused as a lower layer: still EPERM, not zeros.
#[test]
fn a_metacopy_file_in_a_lower_layer_gives_eperm_too() {
    let Some(fx) = kernel_metacopy_upper() else {
        return;
    };
    let mut lowers = vec![fx.upper().root.clone()];
    lowers.extend(fx.lowers());
    let m = Mounted::mount(impl_under_test(), &lowers, None, None, &fx.merged());
    let e = fs::read(m.p("d/f")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    assert_eq!(fs::read(m.p("d/plain")).unwrap(), DATA);
}
