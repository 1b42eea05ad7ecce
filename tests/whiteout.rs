//! Whiteouts and opaque dirs (overlay-semantics.md 1.3): deleting a lower
//! name leaves a char 0/0 whiteout in the upper; recreating a deleted dir
//! makes it opaque (trusted.overlay.opaque=y) with no whiteouts inside;
//! upper-only objects vanish without a trace; no `.wh.` markers are written.

mod common;

use common::*;
use std::fs;

#[test]
fn unlink_lower_file_leaves_whiteout() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("f", b"f").file("keep", b"k");
    let mut m = fx.mount();
    fs::remove_file(m.p("f")).expect("unlink");
    assert_errno(fs::symlink_metadata(m.p("f")), libc::ENOENT, "lstat f");
    assert_eq!(ls(&m.p("")), ["keep"]);
    assert_whiteout(&m.up("f"));
    assert_eq!(ls(&m.up("")), ["f"]);
    assert_eq!(read(&fx.lower(0).path("f")), "f", "lower modified");
    m.remount();
    assert!(!exists(&m.p("f")), "whiteout lost across remount");
    assert_eq!(ls(&m.p("")), ["keep"]);
}

#[test]
fn unlink_in_lower_dir_copies_up_parent_and_leaves_whiteout() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(1).file("d/below", b"b");
    fx.lower(0).file("d/f", b"f").file("d/other", b"o");
    let m = fx.mount();
    fs::remove_file(m.p("d/f")).expect("unlink");
    assert_eq!(ls(&m.p("d")), ["below", "other"]);
    assert!(lstat(&m.up("d")).is_dir());
    assert!(
        opaque_value(&m.up("d")).is_none(),
        "parent must not become opaque"
    );
    assert_eq!(ls(&m.up("d")), ["f"]);
    assert_whiteout(&m.up("d/f"));
}

#[test]
fn unlink_of_name_in_upper_and_lower_leaves_whiteout() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("f", b"lower");
    fx.upper().file("f", b"upper");
    let m = fx.mount();
    fs::remove_file(m.p("f")).expect("unlink");
    assert!(!exists(&m.p("f")));
    assert_whiteout(&m.up("f"));
}

#[test]
fn unlink_upper_only_file_leaves_no_whiteout() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("x", b"x");
    let m = fx.mount();
    write(&m.p("new"), b"n");
    fs::create_dir(m.p("nd")).expect("mkdir");
    write(&m.p("nd/inner"), b"i");
    assert!(lstat(&m.up("new")).is_file());
    fs::remove_file(m.p("new")).expect("unlink");
    fs::remove_file(m.p("nd/inner")).expect("unlink inner");
    fs::remove_dir(m.p("nd")).expect("rmdir");
    assert!(!exists(&m.p("new")));
    assert!(!exists(&m.p("nd")));
    assert_eq!(ls(&m.up("")), Vec::<String>::new(), "upper keeps traces");
}

#[test]
fn rmdir_lower_dir_leaves_whiteout() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).dir("e").file("keep", b"");
    let mut m = fx.mount();
    fs::remove_dir(m.p("e")).expect("rmdir");
    assert!(!exists(&m.p("e")));
    assert_whiteout(&m.up("e"));
    m.remount();
    assert!(!exists(&m.p("e")));
}

#[test]
fn rmdir_of_dir_with_lower_entries_is_enotempty() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(1).file("d/below", b"");
    fx.lower(0).dir("d");
    fx.lower(0).file("e/x", b"");
    let m = fx.mount();
    assert_errno(fs::remove_dir(m.p("d")), libc::ENOTEMPTY, "rmdir d");
    assert_errno(fs::remove_dir(m.p("e")), libc::ENOTEMPTY, "rmdir e");
    assert_eq!(ls(&m.p("d")), ["below"]);
    assert_eq!(ls(&m.p("e")), ["x"]);
    assert_eq!(ls(&m.up("")), Vec::<String>::new());
}

#[test]
fn rmdir_of_dir_emptied_by_whiteouts_leaves_single_whiteout() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(1).file("d/a", b"");
    fx.lower(0).file("d/b", b"").file("d/sub/c", b"");
    let m = fx.mount();
    fs::remove_file(m.p("d/a")).expect("unlink a");
    fs::remove_file(m.p("d/b")).expect("unlink b");
    assert_errno(fs::remove_dir(m.p("d")), libc::ENOTEMPTY, "rmdir non-empty");
    fs::remove_file(m.p("d/sub/c")).expect("unlink c");
    fs::remove_dir(m.p("d/sub")).expect("rmdir sub");
    assert_eq!(ls(&m.p("d")), Vec::<String>::new());
    fs::remove_dir(m.p("d")).expect("rmdir d");
    assert!(!exists(&m.p("d")));
    assert_whiteout(&m.up("d"));
    assert_eq!(ls(&m.up("")), ["d"]);
}

#[test]
fn mkdir_over_whiteout_gives_opaque_dir() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(1).file("d/x", b"x").file("d/sub/y", b"y");
    fx.lower(0).file("d/z", b"z");
    let mut m = fx.mount();
    fs::remove_dir_all(m.p("d")).expect("rm -r d");
    assert_whiteout(&m.up("d"));
    fs::create_dir(m.p("d")).expect("mkdir over whiteout");
    assert_eq!(
        ls(&m.p("d")),
        Vec::<String>::new(),
        "lower entries came back"
    );
    assert!(is_opaque(&m.up("d")), "recreated dir is not opaque=y");
    assert_eq!(
        ls(&m.up("d")),
        Vec::<String>::new(),
        "opaque dir holds entries"
    );
    write(&m.p("d/new"), b"n");
    m.remount();
    assert_eq!(
        ls(&m.p("d")),
        ["new"],
        "lower entries came back after remount"
    );
    assert!(is_opaque(&m.up("d")));
}

#[test]
fn mkdir_over_lower_whiteout_is_plain_dir_still_hiding_below() {
    // The whiteout in lower0 already stops the merge, so the kernel creates
    // a plain (non-opaque) upper dir and lower1's d stays hidden.
    let Some(fx) = Fixture::new() else { return };
    fx.lower(1).file("d/x", b"x");
    fx.lower(0).whiteout("d");
    let mut m = fx.mount();
    assert!(!exists(&m.p("d")));
    fs::create_dir(m.p("d")).expect("mkdir");
    assert_eq!(ls(&m.p("d")), Vec::<String>::new());
    assert!(lstat(&m.up("d")).is_dir());
    assert_eq!(
        opaque_value(&m.up("d")),
        None,
        "kernel does not mark it opaque"
    );
    m.remount();
    assert_eq!(ls(&m.p("d")), Vec::<String>::new());
}

#[test]
fn mkdir_over_whiteout_of_lower_file_gives_opaque_dir() {
    // The kernel marks every dir created over an upper whiteout opaque, even
    // when what was deleted below was not a directory.
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("f", b"file").symlink("l", "f");
    let m = fx.mount();
    fs::remove_file(m.p("f")).expect("unlink file");
    fs::remove_file(m.p("l")).expect("unlink symlink");
    fs::create_dir(m.p("f")).expect("mkdir over file whiteout");
    fs::create_dir(m.p("l")).expect("mkdir over symlink whiteout");
    for n in ["f", "l"] {
        assert!(
            is_opaque(&m.up(n)),
            "{n}: dir over whiteout must be opaque=y"
        );
        assert_eq!(ls(&m.p(n)), Vec::<String>::new());
    }
}

#[test]
fn mkdir_of_new_name_is_not_opaque() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("x", b"");
    let m = fx.mount();
    fs::create_dir(m.p("fresh")).expect("mkdir");
    assert!(lstat(&m.up("fresh")).is_dir());
    assert_eq!(opaque_value(&m.up("fresh")), None);
}

#[test]
fn create_file_over_whiteout_replaces_it() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("f", b"lower").dir("d");
    let mut m = fx.mount();
    fs::remove_file(m.p("f")).expect("unlink");
    fs::remove_dir(m.p("d")).expect("rmdir");
    write(&m.p("f"), b"new");
    write(&m.p("d"), b"file where a dir was");
    for n in ["f", "d"] {
        let md = lstat(&m.up(n));
        assert!(md.is_file(), "upper {n} is not a regular file");
    }
    assert_eq!(read(&m.p("f")), "new");
    m.remount();
    assert_eq!(read(&m.p("f")), "new");
    assert_eq!(read(&m.p("d")), "file where a dir was");
}

#[test]
fn symlink_over_whiteout_replaces_it() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("f", b"lower");
    let m = fx.mount();
    fs::remove_file(m.p("f")).expect("unlink");
    std::os::unix::fs::symlink("target", m.p("f")).expect("symlink");
    assert!(lstat(&m.up("f")).file_type().is_symlink());
    assert_eq!(fs::read_link(m.p("f")).unwrap().to_str(), Some("target"));
}

#[test]
fn no_wh_marker_files_ever_written() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(1)
        .file("a/b/c", b"")
        .file("a/x", b"")
        .file("top", b"");
    fx.lower(0).file("a/y", b"").dir("e").file("g/h", b"");
    let m = fx.mount();
    fs::remove_file(m.p("a/x")).unwrap();
    fs::remove_dir_all(m.p("a/b")).unwrap();
    fs::create_dir(m.p("a/b")).unwrap();
    fs::remove_dir(m.p("e")).unwrap();
    fs::create_dir(m.p("e")).unwrap();
    fs::rename(m.p("top"), m.p("renamed")).unwrap();
    fs::remove_dir_all(m.p("g")).unwrap();
    write(&m.p("g"), b"");
    assert_no_wh_markers(&m.up(""));
    assert!(is_opaque(&m.up("a/b")));
    assert!(is_opaque(&m.up("e")));
    assert_whiteout(&m.up("a/x"));
    assert_whiteout(&m.up("top"));
    assert!(lstat(&m.up("g")).is_file());
    assert_eq!(ls(&m.p("")), ["a", "e", "g", "renamed"]);
    assert_eq!(ls(&m.p("a")), ["b", "y"]);
}

#[test]
fn mknod_of_whiteout_device_is_eperm() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("x", b"");
    let m = fx.mount();
    assert_errno(
        sys::mknod(&m.p("wh"), libc::S_IFCHR | 0o644, 0, 0),
        libc::EPERM,
        "mknod c 0 0 through the union",
    );
    assert!(!exists(&m.p("wh")));
    assert!(!exists(&m.up("wh")));
}

#[test]
fn exclusive_create_sees_lower_names_but_not_whited_out_ones() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0)
        .file("exists", b"lower")
        .file("deleted", b"lower");
    let m = fx.mount();
    assert_errno(
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(m.p("exists")),
        libc::EEXIST,
        "O_EXCL over a lower file",
    );
    assert!(!exists(&m.up("exists")), "failed O_EXCL copied up");
    fs::remove_file(m.p("deleted")).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.p("deleted"))
        .expect("O_EXCL over a whiteout");
    assert!(lstat(&m.up("deleted")).is_file());
    assert_eq!(lstat(&m.p("deleted")).len(), 0);
}
