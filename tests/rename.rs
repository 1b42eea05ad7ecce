//! rename rules (overlay-semantics.md 1.7): files always rename (after
//! copy-up, leaving a whiteout where a lower name was); lower or merged dirs
//! give EXDEV (no redirect_dir); pure-upper dirs rename normally;
//! RENAME_NOREPLACE and RENAME_EXCHANGE behave as on the kernel.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

const NOREPLACE: u32 = libc::RENAME_NOREPLACE;
const EXCHANGE: u32 = libc::RENAME_EXCHANGE;

#[test]
fn rename_lower_file_copies_up_and_leaves_whiteout() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0)
        .file_mode("f", b"data", 0o640)
        .chown("f", 3, 4)
        .times("f", Ts(1_000_000_000, 1), Ts(1_000_000_000, 2));
    let mut m = fx.mount();
    fs::rename(m.p("f"), m.p("g")).expect("rename");
    assert!(!exists(&m.p("f")));
    assert_eq!(read(&m.p("g")), "data");
    assert_whiteout(&m.up("f"));
    let md = lstat(&m.up("g"));
    assert!(md.is_file());
    assert_eq!(
        (md.mode() & 0o7777, md.uid(), md.gid(), md.mtime_nsec()),
        (0o640, 3, 4, 2)
    );
    assert_eq!(read(&fx.lower(0).path("f")), "data");
    m.remount();
    assert_eq!(ls(&m.p("")), ["g"]);
    assert_eq!(read(&m.p("g")), "data");
}

#[test]
fn rename_lower_file_over_lower_file() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(1).file("b", b"B");
    fx.lower(0).file("a", b"A");
    let m = fx.mount();
    fs::rename(m.p("a"), m.p("b")).expect("rename");
    assert_eq!(ls(&m.p("")), ["b"]);
    assert_eq!(read(&m.p("b")), "A");
    assert_whiteout(&m.up("a"));
    assert!(lstat(&m.up("b")).is_file());
    assert_eq!(read(&m.up("b")), "A");
}

#[test]
fn rename_lower_file_into_other_lower_dir() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0)
        .file("d1/f", b"f")
        .file("d1/stay", b"")
        .dir("d2");
    let m = fx.mount();
    fs::rename(m.p("d1/f"), m.p("d2/f")).expect("rename");
    assert_eq!(ls(&m.p("d1")), ["stay"]);
    assert_eq!(ls(&m.p("d2")), ["f"]);
    assert_whiteout(&m.up("d1/f"));
    assert_eq!(read(&m.up("d2/f")), "f");
}

#[test]
fn rename_upper_file_leaves_no_whiteout() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("x", b"");
    let m = fx.mount();
    write(&m.p("n"), b"n");
    fs::rename(m.p("n"), m.p("n2")).expect("rename");
    assert_eq!(ls(&m.up("")), ["n2"]);
    assert_eq!(ls(&m.p("")), ["n2", "x"]);
}

#[test]
fn rename_noreplace_onto_existing_name_is_eexist() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("a", b"A").file("b", b"B").dir("d");
    let m = fx.mount();
    write(&m.p("u"), b"U");
    for (from, to) in [("a", "b"), ("u", "b"), ("a", "u"), ("a", "d")] {
        assert_errno(
            sys::renameat2(&m.p(from), &m.p(to), NOREPLACE),
            libc::EEXIST,
            &format!("renameat2({from}, {to}, NOREPLACE)"),
        );
    }
    assert_eq!(read(&m.p("a")), "A");
    assert_eq!(read(&m.p("b")), "B");
    assert_eq!(read(&m.p("u")), "U");
    assert_eq!(ls(&m.up("")), ["u"], "failed renames changed the upper");
}

#[test]
fn rename_noreplace_onto_whiteout_name_succeeds() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("gone", b"old").file("a", b"A");
    let m = fx.mount();
    fs::remove_file(m.p("gone")).expect("unlink");
    sys::renameat2(&m.p("a"), &m.p("gone"), NOREPLACE).expect("rename NOREPLACE");
    assert_eq!(read(&m.p("gone")), "A");
    assert!(!exists(&m.p("a")));
    assert!(lstat(&m.up("gone")).is_file());
    assert_whiteout(&m.up("a"));
}

#[test]
fn rename_exchange_swaps_lower_files() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("a", b"A").file("b", b"BB");
    let mut m = fx.mount();
    sys::renameat2(&m.p("a"), &m.p("b"), EXCHANGE).expect("RENAME_EXCHANGE");
    assert_eq!(read(&m.p("a")), "BB");
    assert_eq!(read(&m.p("b")), "A");
    assert_eq!(read(&m.up("a")), "BB");
    assert_eq!(read(&m.up("b")), "A");
    assert_eq!(read(&fx.lower(0).path("a")), "A");
    m.remount();
    assert_eq!(read(&m.p("a")), "BB");
    assert_eq!(read(&m.p("b")), "A");
}

#[test]
fn rename_exchange_of_upper_and_lower_file() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("low", b"L");
    let m = fx.mount();
    write(&m.p("up"), b"U");
    sys::renameat2(&m.p("up"), &m.p("low"), EXCHANGE).expect("RENAME_EXCHANGE");
    assert_eq!(read(&m.p("low")), "U");
    assert_eq!(read(&m.p("up")), "L");
    assert_eq!(read(&m.up("low")), "U");
    assert_eq!(read(&m.up("up")), "L");
}

#[test]
fn rename_exchange_with_missing_name_is_enoent() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("a", b"A").file("gone", b"");
    let m = fx.mount();
    fs::remove_file(m.p("gone")).unwrap();
    for to in ["nothing", "gone"] {
        assert_errno(
            sys::renameat2(&m.p("a"), &m.p(to), EXCHANGE),
            libc::ENOENT,
            &format!("exchange with {to}"),
        );
    }
    assert_eq!(read(&m.p("a")), "A");
}

#[test]
fn rename_exchange_with_lower_dir_is_exdev() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("f", b"F").file("d/x", b"");
    let m = fx.mount();
    assert_errno(
        sys::renameat2(&m.p("f"), &m.p("d"), EXCHANGE),
        libc::EXDEV,
        "exchange file with lower dir",
    );
    assert!(lstat(&m.p("d")).is_dir());
    assert_eq!(read(&m.p("f")), "F");
}

#[test]
fn rename_of_lower_dir_is_exdev() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("d/x", b"x").dir("empty");
    let m = fx.mount();
    assert_errno(
        fs::rename(m.p("d"), m.p("d2")),
        libc::EXDEV,
        "rename lower dir",
    );
    assert_errno(
        fs::rename(m.p("empty"), m.p("e2")),
        libc::EXDEV,
        "rename empty lower dir",
    );
    assert_eq!(ls(&m.p("")), ["d", "empty"]);
    assert!(!exists(&m.up("d2")));
    assert!(!exists(&m.up("e2")));
}

#[test]
fn rename_of_merged_dir_is_exdev() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("d/x", b"x").file("c/y", b"y");
    let m = fx.mount();
    // d becomes merged (copied up because something was created in it).
    write(&m.p("d/new"), b"n");
    assert!(lstat(&m.up("d")).is_dir());
    assert_errno(
        fs::rename(m.p("d"), m.p("d2")),
        libc::EXDEV,
        "rename merged dir",
    );
    // c is copied up by chmod only; it still has a lower origin.
    fs::set_permissions(m.p("c"), fs::Permissions::from_mode(0o700)).unwrap();
    assert_errno(
        fs::rename(m.p("c"), m.p("c2")),
        libc::EXDEV,
        "rename copied-up dir",
    );
    assert_eq!(ls(&m.p("d")), ["new", "x"]);
}

#[test]
fn rename_of_upper_only_dir_works() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("x", b"").dir("target_parent");
    let mut m = fx.mount();
    fs::create_dir_all(m.p("n/sub")).unwrap();
    write(&m.p("n/sub/f"), b"f");
    fs::rename(m.p("n"), m.p("target_parent/moved")).expect("rename upper dir");
    assert!(!exists(&m.p("n")));
    assert_eq!(read(&m.p("target_parent/moved/sub/f")), "f");
    assert!(
        !exists(&m.up("n")),
        "no whiteout needed for an upper-only dir"
    );
    assert!(
        is_opaque(&m.up("target_parent/moved")),
        "moved into a merge dir: must be opaque"
    );
    assert_eq!(read(&m.up("target_parent/moved/sub/f")), "f");
    m.remount();
    assert_eq!(read(&m.p("target_parent/moved/sub/f")), "f");
}

#[test]
fn rename_upper_dir_into_merged_parent_marks_it_opaque() {
    // Kernel ovl_rename: a pure-upper dir moved into a merge dir gets
    // trusted.overlay.opaque=y (also a rename within the same merge dir).
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).dir("lowerdir").file("x", b"");
    let m = fx.mount();
    fs::create_dir_all(m.p("p1/a")).unwrap();
    fs::create_dir_all(m.p("p1/b")).unwrap();
    fs::create_dir(m.p("lowerdir/c")).unwrap();
    fs::rename(m.p("p1/a"), m.p("lowerdir/a")).expect("into lower dir");
    fs::rename(m.p("p1/b"), m.p("b")).expect("into merged root");
    fs::rename(m.p("lowerdir/c"), m.p("lowerdir/c2")).expect("within merged dir");
    for d in ["lowerdir/a", "b", "lowerdir/c2"] {
        assert!(is_opaque(&m.up(d)), "{d} must be opaque after the move");
    }
    assert_eq!(ls(&m.p("lowerdir")), ["a", "c2"]);
}

#[test]
fn rename_exchange_of_upper_dirs_marks_the_one_entering_a_merged_parent_opaque() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("merged/x", b"");
    let m = fx.mount();
    fs::create_dir_all(m.p("p/from_upper_only")).unwrap();
    write(&m.p("p/from_upper_only/marker1"), b"");
    fs::create_dir(m.p("merged/from_merged")).unwrap();
    write(&m.p("merged/from_merged/marker2"), b"");
    sys::renameat2(
        &m.p("p/from_upper_only"),
        &m.p("merged/from_merged"),
        EXCHANGE,
    )
    .expect("RENAME_EXCHANGE of two upper dirs");
    assert_eq!(ls(&m.p("merged/from_merged")), ["marker1"]);
    assert_eq!(ls(&m.p("p/from_upper_only")), ["marker2"]);
    assert!(
        is_opaque(&m.up("merged/from_merged")),
        "dir that entered a merge dir must be opaque"
    );
    assert_eq!(
        opaque_value(&m.up("p/from_upper_only")),
        None,
        "dir that entered an upper-only dir stays non-opaque"
    );
}

#[test]
fn rename_upper_dir_between_upper_only_parents_stays_non_opaque() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("x", b"");
    let m = fx.mount();
    fs::create_dir_all(m.p("p1/d")).unwrap();
    fs::create_dir(m.p("p2")).unwrap();
    fs::rename(m.p("p1/d"), m.p("p2/d")).expect("rename");
    assert_eq!(opaque_value(&m.up("p2/d")), None);
    assert_eq!(ls(&m.p("p2")), ["d"]);
}

#[test]
fn rename_of_opaque_recreated_dir_works() {
    // A dir recreated over a whiteout is pure upper (opaque): it can move.
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("d/x", b"");
    let mut m = fx.mount();
    fs::remove_dir_all(m.p("d")).unwrap();
    fs::create_dir(m.p("d")).unwrap();
    write(&m.p("d/y"), b"y");
    fs::rename(m.p("d"), m.p("e")).expect("rename opaque upper dir");
    assert_eq!(ls(&m.p("e")), ["y"]);
    assert!(!exists(&m.p("d")));
    assert_whiteout(&m.up("d"));
    assert!(is_opaque(&m.up("e")));
    m.remount();
    assert_eq!(ls(&m.p("")), ["e"]);
    assert_eq!(ls(&m.p("e")), ["y"]);
}

#[test]
fn rename_upper_dir_over_empty_lower_dir() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).dir("empty").file("full/x", b"");
    let mut m = fx.mount();
    fs::create_dir(m.p("n")).unwrap();
    write(&m.p("n/f"), b"f");
    assert_errno(
        fs::rename(m.p("n"), m.p("full")),
        libc::ENOTEMPTY,
        "rename over non-empty lower dir",
    );
    fs::rename(m.p("n"), m.p("empty")).expect("rename over empty lower dir");
    assert_eq!(ls(&m.p("empty")), ["f"]);
    assert!(!exists(&m.p("n")));
    assert!(
        is_opaque(&m.up("empty")),
        "dir moved over a lower dir must be opaque"
    );
    assert!(!exists(&m.up("n")));
    m.remount();
    assert_eq!(ls(&m.p("")), ["empty", "full"]);
    assert_eq!(ls(&m.p("empty")), ["f"]);
}

/// An upper that cannot hold whiteouts (here another union, which refuses
/// to make 0/0 devices and has no RENAME_WHITEOUT): renaming a lower file
/// fails with nothing moved, not with the file under both names.
#[test]
fn a_rename_whose_whiteout_the_upper_refuses_moves_nothing() {
    if only_for_ours() {
        return;
    }
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).dir("inner");
    let inner = fx.mount();
    let (up, work) = (inner.p("up"), inner.p("work"));
    fs::create_dir(&up).expect("mkdir up");
    fs::create_dir(&work).expect("mkdir work");
    let lower = Layer::new(fx.dir("outer-lower"));
    lower.file("a", b"A");
    let outer = Mounted::mount(
        Impl::Ours,
        std::slice::from_ref(&lower.root),
        Some(&up),
        Some(&work),
        &fx.dir("outer-merged"),
    );
    let err = fs::rename(outer.p("a"), outer.p("b")).expect_err("rename");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    assert_eq!(ls(&outer.p("")), ["a"]);
    assert_eq!(read(&outer.p("a")), "A");
    assert!(!exists(&up.join("b")), "b was made in the upper");
    drop(outer);
}
