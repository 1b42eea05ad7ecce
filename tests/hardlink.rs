//! Hard links (overlay-semantics.md 1.8). link() of a lower file copies it
//! up first and the names share one upper inode.
//!
//! For a multiply-linked lower file this suite requires kernel `index=on`
//! semantics (the brief for this project): after writing through one name,
//! every name shows the new data with one st_ino, also after a remount. The
//! kernel reference mount for that test uses `-o index=on`. NOTE: this
//! differs from overlay-semantics.md 3.5, which makes the kernel default
//! (index=off: copy-up breaks the link) the project default; the index=off
//! expectation is kept below as an ignored test until that is settled.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

#[test]
fn lower_hardlinks_share_ino_and_nlink() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("a", b"x").hardlink("a", "d/b");
    let m = fx.mount();
    let (a, b) = (lstat(&m.p("a")), lstat(&m.p("d/b")));
    assert_eq!(a.ino(), b.ino());
    assert_eq!((a.nlink(), b.nlink()), (2, 2));
    assert_eq!(ls(&m.up("")), Vec::<String>::new());
}

#[test]
fn link_of_lower_file_copies_up_and_joins_names() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("f", b"one");
    let mut m = fx.mount();
    let ino_before = lstat(&m.p("f")).ino();
    fs::hard_link(m.p("f"), m.p("g")).expect("link");
    let (f, g) = (lstat(&m.up("f")), lstat(&m.up("g")));
    assert_eq!(f.ino(), g.ino(), "upper f and g must be one inode");
    assert_eq!(f.nlink(), 2);
    let (f, g) = (lstat(&m.p("f")), lstat(&m.p("g")));
    assert_eq!(f.ino(), g.ino());
    assert_eq!(f.ino(), ino_before, "st_ino changed by link copy-up");
    assert_eq!((f.nlink(), g.nlink()), (2, 2));
    append(&m.p("g"), b"+two");
    assert_eq!(read(&m.p("f")), "one+two");
    m.remount();
    assert_eq!(read(&m.p("f")), "one+two");
    assert_eq!(read(&m.p("g")), "one+two");
    let (f, g) = (lstat(&m.p("f")), lstat(&m.p("g")));
    assert_eq!(f.ino(), g.ino());
    assert_eq!(f.nlink(), 2);
    assert_eq!(read(&fx.lower(0).path("f")), "one");
}

#[test]
fn link_of_upper_file_and_unlink_of_one_name() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).dir("d");
    let m = fx.mount();
    write(&m.p("d/a"), b"data");
    fs::hard_link(m.p("d/a"), m.p("b")).expect("link");
    assert_eq!(lstat(&m.p("d/a")).ino(), lstat(&m.p("b")).ino());
    assert_eq!(lstat(&m.p("b")).nlink(), 2);
    write(&m.p("b"), b"changed");
    assert_eq!(read(&m.p("d/a")), "changed");
    fs::remove_file(m.p("d/a")).expect("unlink");
    assert_eq!(lstat(&m.p("b")).nlink(), 1);
    assert_eq!(read(&m.p("b")), "changed");
    assert_eq!(lstat(&m.up("b")).nlink(), 1);
    assert_eq!(ls(&m.up("d")), Vec::<String>::new());
}

#[test]
fn copy_up_of_one_lower_hardlink_keeps_all_names_joined_index_on() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0)
        .file("hl1", b"h\n")
        .hardlink("hl1", "hl2")
        .hardlink("hl1", "sub/hl3");
    let mut m = Mounted::mount_kernel_opts(
        fx.kind,
        &fx.lowers(),
        Some(&fx.upper().root),
        Some(&fx.work()),
        &fx.merged(),
        "index=on",
    );
    let ino = lstat(&m.p("hl1")).ino();
    append(&m.p("hl1"), b"more");
    let check = |m: &Mounted, when: &str| {
        for n in ["hl1", "hl2", "sub/hl3"] {
            assert_eq!(
                read(&m.p(n)),
                "h\nmore",
                "{when}: {n} must show the new data"
            );
            let md = lstat(&m.p(n));
            assert_eq!(md.ino(), ino, "{when}: st_ino of {n}");
            assert_eq!(md.nlink(), 3, "{when}: nlink of {n}");
        }
    };
    check(&m, "mounted");
    assert_eq!(
        read(&m.up("hl1")),
        "h\nmore",
        "upper must hold the new data"
    );
    assert_eq!(read(&fx.lower(0).path("hl2")), "h\n", "lower modified");
    m.remount();
    check(&m, "after remount");
    // Writing through another name after the remount reaches all names too.
    append(&m.p("sub/hl3"), b"!");
    assert_eq!(read(&m.p("hl2")), "h\nmore!");
    assert_eq!(read(&m.p("hl1")), "h\nmore!");
}

#[test]
#[ignore = "kernel default index=off (overlay-semantics.md 3.5) conflicts with the \
            index=on semantics this project chose; run with --ignored to check index=off"]
fn copy_up_of_one_lower_hardlink_breaks_link_consistently() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("hl1", b"h\n").hardlink("hl1", "hl2");
    let mut m = fx.mount();
    append(&m.p("hl1"), b"more");
    let check = |m: &Mounted, when: &str| {
        assert_eq!(read(&m.p("hl1")), "h\nmore", "{when}");
        assert_eq!(
            read(&m.p("hl2")),
            "h\n",
            "{when}: hl2 must keep the lower data"
        );
        let (a, b) = (lstat(&m.p("hl1")), lstat(&m.p("hl2")));
        assert_eq!(a.nlink(), 1, "{when}: copied-up name");
        assert_eq!(b.nlink(), 2, "{when}: lower name reports the lower nlink");
        assert_ne!(a.ino(), b.ino(), "{when}: two different files share st_ino");
    };
    check(&m, "mounted");
    assert_eq!(lstat(&m.up("hl1")).nlink(), 1);
    assert!(!exists(&m.up("hl2")));
    m.remount();
    check(&m, "after remount");
}

#[test]
fn link_of_lower_fifo_and_device_copies_them_up() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).fifo("p").chardev("c", 1, 3).symlink("s", "p");
    let m = fx.mount();
    fs::hard_link(m.p("p"), m.p("p2")).expect("link fifo");
    fs::hard_link(m.p("c"), m.p("c2")).expect("link char dev");
    assert!(lstat(&m.up("p2")).file_type().is_fifo());
    assert!(lstat(&m.up("c2")).file_type().is_char_device());
    assert_eq!(lstat(&m.up("p")).ino(), lstat(&m.up("p2")).ino());
    assert_eq!(lstat(&m.p("c")).ino(), lstat(&m.p("c2")).ino());
    assert_eq!(lstat(&m.p("c2")).nlink(), 2);
    // chmod through one name shows on the other.
    fs::set_permissions(m.p("p2"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(lstat(&m.p("p")).mode() & 0o777, 0o600);
}

/// Linking a copied-up file (one with an origin) into a dir that exists only
/// in the upper marks that dir impure, as the kernel does, so a later
/// kernel mount of the upper reports the entry's d_ino from the origin.
#[test]
fn link_of_copied_up_file_marks_new_parent_impure() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("f", b"x");
    let m = fx.mount();
    fs::create_dir(m.p("new")).unwrap();
    fs::hard_link(m.p("f"), m.p("new/g")).unwrap();
    drop(m);
    let impure = sys::lgetxattr(&fx.upper().path("new"), "trusted.overlay.impure");
    assert_eq!(impure.ok().as_deref(), Some(&b"y"[..]), "new/ not impure");
}

/// `redirect_dir=on` on both, and the kernel's `index=on` (the semantics
/// this suite requires of lower hard links).
fn mount_redirect_dir(fx: &Fixture) -> Mounted {
    let (lowers, upper, work) = (fx.lowers(), fx.upper().root, fx.work());
    match fx.kind {
        Impl::Kernel => Mounted::mount_kernel_opts(
            fx.kind,
            &lowers,
            Some(&upper),
            Some(&work),
            &fx.merged(),
            "index=on,redirect_dir=on",
        ),
        Impl::Ours => Mounted::mount_ours_opts(
            fx.kind,
            &lowers,
            Some(&upper),
            Some(&work),
            &fx.merged(),
            "redirect_dir=on",
        ),
    }
}

/// The names of one lower inode below a dir that a rename moved are not at
/// their lower path any more; a copy-up through another name still joins
/// them, as the kernel's index does.
#[test]
fn copy_up_of_a_lower_hardlink_joins_its_name_below_a_renamed_dir() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0)
        .file("h1", b"old\n")
        .hardlink("h1", "d/h2")
        .dir("w");
    let mut m = mount_redirect_dir(&fx);
    fs::rename(m.p("d"), m.p("w/moved")).expect("rename lower dir");
    append(&m.p("h1"), b"new");
    let check = |m: &Mounted, when: &str| {
        assert_eq!(read(&m.p("w/moved/h2")), "old\nnew", "{when}: moved name");
        let (a, b) = (lstat(&m.p("h1")), lstat(&m.p("w/moved/h2")));
        assert_eq!(a.ino(), b.ino(), "{when}: one object, one st_ino");
        assert_eq!((a.nlink(), b.nlink()), (2, 2), "{when}: nlink");
    };
    check(&m, "mounted");
    m.remount();
    check(&m, "after remount");
    assert_eq!(read(&fx.lower(0).path("d/h2")), "old\n", "lower modified");
}

/// Removing one name of a lower hard link leaves the others, also one
/// below a renamed dir, with one link less.
#[test]
fn unlink_of_a_lower_hardlink_counts_its_name_below_a_renamed_dir() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0)
        .file("h1", b"x")
        .hardlink("h1", "d/h2")
        .hardlink("h1", "h3");
    let mut m = mount_redirect_dir(&fx);
    fs::rename(m.p("d"), m.p("e")).expect("rename lower dir");
    fs::remove_file(m.p("h1")).expect("unlink");
    let check = |m: &Mounted, when: &str| {
        let (b, c) = (lstat(&m.p("e/h2")), lstat(&m.p("h3")));
        assert_eq!(b.ino(), c.ino(), "{when}: one object, one st_ino");
        assert_eq!((b.nlink(), c.nlink()), (2, 2), "{when}: nlink");
    };
    check(&m, "mounted");
    m.remount();
    check(&m, "after remount");
}
