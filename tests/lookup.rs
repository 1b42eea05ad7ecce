//! Lookup and merge rules (overlay-semantics.md 1.2, 1.3): the topmost object
//! wins unless all are directories, which merge; opaque dirs and whiteouts
//! (classic and xattr form) stop the merge. Lookups never write to the upper.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

#[test]
fn upper_file_hides_lower_file() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("f", b"lower0");
    fx.lower(1).file("f", b"lower1");
    fx.upper().file("f", b"upper");
    let before = snapshot(&fx.upper().root, SnapOpts::with_times());
    let m = fx.mount();
    assert_eq!(read(&m.p("f")), "upper");
    assert_eq!(lstat(&m.p("f")).len(), 5);
    drop(m);
    assert_same(
        &before,
        &snapshot(&fx.upper().root, SnapOpts::with_times()),
        "upper after lookup",
    );
}

#[test]
fn top_lower_hides_lower_below() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0)
        .file("f", b"top")
        .file_mode("g", b"top-g", 0o600);
    fx.lower(1)
        .file("f", b"bottom-bottom")
        .file_mode("g", b"bottom", 0o666);
    let m = fx.mount();
    assert_eq!(read(&m.p("f")), "top");
    assert_eq!(lstat(&m.p("f")).len(), 3);
    assert_eq!(lstat(&m.p("g")).mode() & 0o7777, 0o600);
    assert_eq!(ls(&m.up("")), Vec::<String>::new(), "lookup wrote to upper");
}

#[test]
fn non_dir_hides_dir_below() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(1).file("d/x", b"x").file("e", b"file below dir");
    fx.lower(0).file("d", b"file above dir").file("e/y", b"y");
    let m = fx.mount();
    let md = lstat(&m.p("d"));
    assert!(md.is_file(), "d must be the top lower's regular file");
    assert_eq!(read(&m.p("d")), "file above dir");
    assert_errno(fs::metadata(m.p("d/x")), libc::ENOTDIR, "stat d/x");
    // The dir on top hides the file below; it is not merged with anything.
    assert!(lstat(&m.p("e")).is_dir());
    assert_eq!(ls(&m.p("e")), ["y"]);
    assert_eq!(ls(&m.up("")), Vec::<String>::new(), "lookup wrote to upper");
}

#[test]
fn upper_symlink_hides_lower_dir() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("d/x", b"x").file("t/y", b"y");
    fx.upper().symlink("d", "t");
    let m = fx.mount();
    assert!(lstat(&m.p("d")).file_type().is_symlink());
    // Following the symlink leads to t, not to the lower dir d.
    assert_eq!(ls(&m.p("d")), ["y"]);
    assert!(!exists(&m.p("d/x")));
}

#[test]
fn dirs_merge_across_layers() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(1)
        .file("d/a", b"a1")
        .file("d/both", b"from lower1");
    fx.lower(0)
        .file("d/b", b"b0")
        .file("d/both", b"from lower0");
    fx.upper().file("d/c", b"cu");
    let m = fx.mount();
    assert_eq!(ls(&m.p("d")), ["a", "b", "both", "c"]);
    assert_eq!(read(&m.p("d/a")), "a1");
    assert_eq!(read(&m.p("d/b")), "b0");
    assert_eq!(read(&m.p("d/both")), "from lower0");
    assert_eq!(read(&m.p("d/c")), "cu");
    assert_eq!(ls(&m.up("d")), ["c"], "lookup wrote to upper");
}

#[test]
fn merged_dir_metadata_comes_from_topmost_dir() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(1)
        .dir_mode("d", 0o755)
        .file("d/a", b"a")
        .xattr("d", "user.bottom", b"1")
        .times("d", Ts(1_000_000_000, 0), Ts(1_000_000_000, 0));
    fx.lower(0)
        .dir_mode("d", 0o750)
        .file("d/b", b"b")
        .chown("d", 7, 8)
        .xattr("d", "user.top", b"2")
        .times("d", Ts(1_200_000_000, 5), Ts(1_100_000_000, 123_456_789));
    let m = fx.mount();
    let md = lstat(&m.p("d"));
    assert_eq!(md.mode() & 0o7777, 0o750);
    assert_eq!((md.uid(), md.gid()), (7, 8));
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_100_000_000, 123_456_789));
    let names = sys::llistxattr(&m.p("d")).expect("listxattr");
    assert!(names.contains(&"user.top".to_string()), "{names:?}");
    assert!(!names.contains(&"user.bottom".to_string()), "{names:?}");
    assert_errno(
        sys::lgetxattr(&m.p("d"), "user.bottom"),
        libc::ENODATA,
        "getxattr of a lower dir's xattr",
    );
    assert_eq!(ls(&m.p("d")), ["a", "b"]);
}

#[test]
fn opaque_dir_stops_merge() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(2).file("d/deep", b"2");
    fx.lower(1).file("d/a", b"1").file("e/hidden", b"1");
    fx.lower(0).opaque("d").file("d/b", b"0");
    fx.upper().opaque("e").file("e/c", b"u");
    let m = fx.mount();
    assert_eq!(
        ls(&m.p("d")),
        ["b"],
        "opaque lower0 dir hides lower1/lower2"
    );
    assert!(!exists(&m.p("d/a")));
    assert!(!exists(&m.p("d/deep")));
    assert_eq!(ls(&m.p("e")), ["c"], "opaque upper dir hides lower1");
    assert!(!exists(&m.p("e/hidden")));
    // The private xattr itself is not visible through the union.
    let names = sys::llistxattr(&m.p("d")).expect("listxattr");
    assert!(
        names.iter().all(|n| !n.starts_with("trusted.overlay.")),
        "{names:?}"
    );
    assert!(is_opaque(&m.up("e")));
    assert_eq!(ls(&m.up("e")), ["c"]);
}

#[test]
fn whiteout_hides_name() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(1)
        .file("f", b"f")
        .file("d/x", b"x")
        .file("g", b"g")
        .file("keep", b"k");
    fx.lower(0).whiteout("f").whiteout("d");
    fx.upper().whiteout("g");
    let m = fx.mount();
    for name in ["f", "d", "g"] {
        assert_errno(fs::symlink_metadata(m.p(name)), libc::ENOENT, name);
    }
    assert_errno(fs::metadata(m.p("d/x")), libc::ENOENT, "d/x");
    assert_eq!(ls(&m.p("")), ["keep"]);
    assert_whiteout(&m.up("g"));
    assert_eq!(ls(&m.up("")), ["g"]);
}

#[test]
fn whiteout_with_any_mode_and_nlink_hides_name() {
    // The kernel shares one whiteout inode (mode 0000, nlink > 1).
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("a", b"a").file("b", b"b").file("c", b"c");
    let up = fx.upper();
    up.whiteout("a").chmod("a", 0).hardlink("a", "b");
    up.whiteout("c").chmod("c", 0o644);
    assert_eq!(lstat(&up.path("a")).nlink(), 2);
    let m = fx.mount();
    assert_eq!(ls(&m.p("")), Vec::<String>::new());
    for n in ["a", "b", "c"] {
        assert!(!exists(&m.p(n)), "{n} visible despite whiteout");
    }
}

#[test]
fn xattr_whiteout_in_lower_hides_name_below() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(1)
        .file("d/x", b"x below")
        .file("d/y", b"y below")
        .file("d/z", b"z below");
    // d in lower0 is marked opaque=x ("contains xattr whiteouts"), not opaque.
    fx.lower(0).xattr_whiteout("d/x").file("d/w", b"w");
    let m = fx.mount();
    assert_eq!(ls(&m.p("d")), ["w", "y", "z"]);
    assert_errno(fs::symlink_metadata(m.p("d/x")), libc::ENOENT, "d/x");
    assert_eq!(read(&m.p("d/y")), "y below");
    assert_eq!(ls(&m.up("")), Vec::<String>::new());
}

#[test]
fn oci_wh_files_are_ordinary_files_with_oci_whiteouts_off() {
    // The kernel does not interpret OCI `.wh.` names; ours with the option off
    // shows them the same way.
    let Some(fx) = Fixture::new() else { return };
    oci_layers(&fx);
    let m = fx.mount_ours_opts("oci_whiteouts=off");
    assert_eq!(ls(&m.p("")), [".wh.f", "d", "f"]);
    assert_eq!(ls(&m.p("d")), [".wh..wh..opq", "a", "b"]);
}

#[test]
fn oci_whiteouts_in_lowers_hide_names_by_default() {
    // Ours only: containers store layers with OCI whiteouts, so they are
    // honoured by default; the markers themselves are never shown.
    let Some(fx) = Fixture::for_impl(Impl::Ours) else {
        return;
    };
    oci_layers(&fx);
    let m = fx.mount();
    assert_eq!(ls(&m.p("")), ["d"]);
    assert_eq!(ls(&m.p("d")), ["b"]);
    assert!(!exists(&m.p(".wh.f")), "lookup of a .wh. name is ENOENT");
    fs::create_dir(m.p("f")).expect("mkdir over OCI whiteout");
    assert_eq!(ls(&m.p("f")), Vec::<String>::new());
    assert_eq!(ls(&m.up("")), ["f"], "no marker files are written");
}

fn oci_layers(fx: &Fixture) {
    fx.lower(1).file("f", b"f").file("d/a", b"a");
    fx.lower(0)
        .file(".wh.f", b"")
        .file("d/.wh..wh..opq", b"")
        .file("d/b", b"b");
}

#[test]
fn read_only_union_without_upper() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(1).file("d/a", b"a").file("f", b"bottom");
    fx.lower(0)
        .file("d/b", b"b")
        .file("f", b"top")
        .whiteout("gone");
    fx.lower(1).file("gone", b"x");
    let m = fx.mount_ro();
    assert_eq!(ls(&m.p("")), ["d", "f"]);
    assert_eq!(ls(&m.p("d")), ["a", "b"]);
    assert_eq!(read(&m.p("f")), "top");
    assert_errno(fs::write(m.p("new"), b"x"), libc::EROFS, "create");
    assert_errno(
        fs::OpenOptions::new().write(true).open(m.p("f")),
        libc::EROFS,
        "open for write",
    );
    assert_errno(fs::remove_file(m.p("f")), libc::EROFS, "unlink");
    assert_errno(fs::create_dir(m.p("nd")), libc::EROFS, "mkdir");
    assert_errno(
        fs::set_permissions(m.p("f"), fs::Permissions::from_mode(0o600)),
        libc::EROFS,
        "chmod",
    );
    let st = sys::statvfs(&m.p("")).expect("statvfs");
    assert_ne!(
        st.f_flag & libc::ST_RDONLY,
        0,
        "statvfs must report ST_RDONLY"
    );
}

/// `-o ro` with an upper, as a read-only overlayfs mount: the upper's
/// files, whiteouts and opaque dirs stay in force, nothing can be written,
/// and the upper is left as it was.
#[test]
fn read_only_mount_keeps_the_upper_visible() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0)
        .file("f", b"lower")
        .file("gone", b"x")
        .file("d/old", b"old");
    fx.upper()
        .file("f", b"upper")
        .file("new", b"new")
        .whiteout("gone")
        .file("d/fresh", b"fresh")
        .opaque("d");
    let before = snapshot(&fx.upper().root, SnapOpts::with_times());
    let m = fx.mount_opts("ro");
    assert_eq!(ls(&m.p("")), ["d", "f", "new"]);
    assert_eq!(ls(&m.p("d")), ["fresh"]);
    assert_eq!(read(&m.p("f")), "upper");
    assert_errno(fs::write(m.p("f"), b"x"), libc::EROFS, "write");
    assert_errno(fs::remove_file(m.p("new")), libc::EROFS, "unlink");
    drop(m);
    assert_same(
        &before,
        &snapshot(&fx.upper().root, SnapOpts::with_times()),
        "upper after a read-only mount",
    );
}

/// A stack of six lowers, where the server answers lookups from each lower
/// dir's name list instead of probing every layer: whiteouts, opaque dirs and
/// the topmost-wins rule hold as with two layers, also for a lower dir too
/// big to keep its list.
#[test]
fn lookups_across_many_lowers_follow_the_merge_rules() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("d/a", b"top").whiteout("d/x");
    fx.lower(1).file("d/x", b"l1").file("d/b", b"b");
    fx.lower(2)
        .file("d/c", b"c")
        .file("d/sub/only2", b"2")
        .opaque("d/sub");
    fx.lower(3)
        .file("d/sub/hidden", b"h")
        .file("d/a", b"l3")
        .file("d/x", b"l3");
    fx.lower(4).file("d/e", b"e").file("d/f", b"f");
    fx.lower(5).file("d/g", b"g").file("d/big/last", b"last");
    for i in 0..100 {
        fx.lower(5).file(&format!("d/n{i:03}"), b"n");
    }
    for i in 0..5000 {
        fx.lower(4).file(&format!("d/big/e{i:04}"), b"");
    }
    fx.lower(1).file("d/big/e0042", b"over");
    let check = |m: &Mounted| {
        assert_eq!(read(&m.p("d/a")), "top");
        assert!(!exists(&m.p("d/x")), "whiteout in the top lower");
        for (n, v) in [("b", "b"), ("c", "c"), ("e", "e"), ("f", "f"), ("g", "g")] {
            assert_eq!(read(&m.p(&format!("d/{n}"))), v, "d/{n}");
        }
        assert_eq!(read(&m.p("d/n050")), "n");
        assert!(!exists(&m.p("d/zz")));
        assert!(!exists(&m.p("d/sub/hidden")), "below an opaque dir");
        assert_eq!(read(&m.p("d/sub/only2")), "2");
        assert_eq!(read(&m.p("d/big/e0042")), "over");
        assert_eq!(read(&m.p("d/big/last")), "last");
        assert_eq!(read(&m.p("d/big/e4999")), "");
        assert!(!exists(&m.p("d/big/e5000")));
        let mut want: Vec<String> = ["a", "b", "big", "c", "e", "f", "g", "sub"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        want.extend((0..100).map(|i| format!("n{i:03}")));
        want.sort();
        assert_eq!(ls(&m.p("d")), want);
    };
    let mut m = fx.mount();
    check(&m);
    // Changes through the mount, then the same view after a remount.
    fs::remove_file(m.p("d/e")).expect("unlink");
    fs::write(m.p("d/zz"), b"new").expect("create");
    assert!(!exists(&m.p("d/e")));
    assert_eq!(read(&m.p("d/zz")), "new");
    fs::remove_file(m.p("d/zz")).expect("unlink");
    fs::write(m.p("d/e"), b"e").expect("recreate");
    m.remount();
    check(&m);
}
