//! xattr rules (overlay-semantics.md 1.4): user./trusted. xattrs pass
//! through; private `trusted.overlay.*` xattrs of the layers are hidden;
//! `trusted.overlay.X` set through the union is stored escaped as
//! `trusted.overlay.overlay.X` (kernel 6.7+ nesting), and escaped xattrs in a
//! layer show up unescaped.

mod common;

use common::*;

fn sorted_names(p: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = sys::llistxattr(p)
        .expect("listxattr")
        .into_iter()
        .filter(|n| !n.starts_with("security."))
        .collect();
    v.sort();
    v
}

#[test]
fn xattr_set_get_list_remove_pass_through() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).dir("d");
    let m = fx.mount();
    let f = m.p("d/f");
    write(&f, b"");
    let big = vec![b'v'; 3000];
    sys::lsetxattr(&f, "user.a", b"1", 0).expect("set user.a");
    sys::lsetxattr(&f, "trusted.b", b"2", 0).expect("set trusted.b");
    sys::lsetxattr(&f, "user.big", &big, 0).expect("set user.big");
    sys::lsetxattr(&f, "user.empty", b"", 0).expect("set user.empty");
    assert_eq!(
        sorted_names(&f),
        ["trusted.b", "user.a", "user.big", "user.empty"]
    );
    assert_eq!(sys::lgetxattr(&f, "user.a").unwrap(), b"1");
    assert_eq!(sys::lgetxattr(&f, "user.big").unwrap(), big);
    assert_eq!(sys::lgetxattr(&f, "user.empty").unwrap(), b"");
    let up = m.up("d/f");
    assert_eq!(sys::lgetxattr(&up, "trusted.b").unwrap(), b"2");
    assert_eq!(sys::lgetxattr(&up, "user.big").unwrap(), big);
    sys::lremovexattr(&f, "user.a").expect("remove user.a");
    assert_errno(sys::lgetxattr(&f, "user.a"), libc::ENODATA, "get removed");
    assert_errno(sys::lgetxattr(&up, "user.a"), libc::ENODATA, "raw upper");
    assert_errno(
        sys::lremovexattr(&f, "user.a"),
        libc::ENODATA,
        "remove twice",
    );
    assert_errno(
        sys::lgetxattr(&f, "user.none"),
        libc::ENODATA,
        "get missing",
    );
}

#[test]
fn xattr_create_and_replace_flags() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("f", b"").xattr("f", "user.x", b"lower");
    let m = fx.mount();
    assert_errno(
        sys::lsetxattr(&m.p("f"), "user.x", b"1", libc::XATTR_CREATE),
        libc::EEXIST,
        "XATTR_CREATE on existing",
    );
    assert_errno(
        sys::lsetxattr(&m.p("f"), "user.y", b"1", libc::XATTR_REPLACE),
        libc::ENODATA,
        "XATTR_REPLACE on missing",
    );
    sys::lsetxattr(&m.p("f"), "user.x", b"new", libc::XATTR_REPLACE).expect("replace");
    assert_eq!(sys::lgetxattr(&m.p("f"), "user.x").unwrap(), b"new");
    assert_eq!(sys::lgetxattr(&m.up("f"), "user.x").unwrap(), b"new");
    assert_eq!(
        sys::lgetxattr(&fx.lower(0).path("f"), "user.x").unwrap(),
        b"lower"
    );
}

#[test]
fn xattr_on_lower_dir_copies_up_dir() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("d/x", b"").xattr("d", "user.old", b"o");
    let m = fx.mount();
    sys::lsetxattr(&m.p("d"), "user.new", b"n", 0).expect("setxattr dir");
    assert_eq!(sorted_names(&m.p("d")), ["user.new", "user.old"]);
    let mut raw = sorted_names(&m.up("d"));
    raw.retain(|n| !n.starts_with("trusted.overlay."));
    assert_eq!(raw, ["user.new", "user.old"]);
    assert_eq!(ls(&m.up("d")), Vec::<String>::new());
    assert_eq!(ls(&m.p("d")), ["x"]);
}

#[test]
fn user_xattr_on_symlink_is_eperm_without_copy_up() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).symlink("l", "target");
    let m = fx.mount();
    assert_errno(
        sys::lsetxattr(&m.p("l"), "user.x", b"1", 0),
        libc::EPERM,
        "user xattr on symlink",
    );
    assert!(!exists(&m.up("l")));
}

/// trusted.* xattrs on symlinks act on the link, never on its target,
/// whether the target is a file, a dir or missing.
#[test]
fn trusted_xattr_on_symlink_acts_on_the_link() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0)
        .file("t", b"")
        .xattr("t", "trusted.x", b"target")
        .dir("td")
        .symlink("to_file", "t")
        .symlink("to_dir", "td")
        .symlink("dangling", "nowhere")
        .xattr("to_file", "trusted.x", b"lower link");
    let m = fx.mount();
    assert_eq!(
        sys::lgetxattr(&m.p("to_file"), "trusted.x").unwrap(),
        b"lower link"
    );
    for l in ["to_file", "to_dir", "dangling"] {
        let p = m.p(l);
        sys::lsetxattr(&p, "trusted.y", l.as_bytes(), 0).expect("set on link");
        assert_eq!(sys::lgetxattr(&p, "trusted.y").unwrap(), l.as_bytes());
        assert!(sorted_names(&p).contains(&"trusted.y".to_string()), "{l}");
        assert_eq!(sys::lgetxattr(&m.up(l), "trusted.y").unwrap(), l.as_bytes());
        sys::lremovexattr(&p, "trusted.y").expect("remove on link");
        assert_errno(sys::lgetxattr(&p, "trusted.y"), libc::ENODATA, l);
    }
    assert_eq!(sys::lgetxattr(&m.p("t"), "trusted.x").unwrap(), b"target");
    assert_errno(sys::lgetxattr(&m.p("t"), "trusted.y"), libc::ENODATA, "t");
    assert_errno(sys::lgetxattr(&m.p("td"), "trusted.y"), libc::ENODATA, "td");
}

#[test]
fn private_overlay_xattrs_are_hidden() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0)
        .file("f", b"")
        .xattr("f", "trusted.overlay.foo", b"private")
        .xattr("f", "user.visible", b"1")
        .opaque("o")
        .file("o/x", b"");
    fx.upper().opaque("uo");
    let m = fx.mount();
    assert_eq!(sorted_names(&m.p("f")), ["user.visible"]);
    assert_errno(
        sys::lgetxattr(&m.p("f"), "trusted.overlay.foo"),
        libc::ENODATA,
        "get private xattr",
    );
    for d in ["o", "uo"] {
        assert_eq!(sorted_names(&m.p(d)), Vec::<String>::new(), "{d}");
        assert_errno(
            sys::lgetxattr(&m.p(d), "trusted.overlay.opaque"),
            libc::ENODATA,
            &format!("get opaque xattr of {d}"),
        );
    }
    // Copy-up does not carry private xattrs.
    sys::lsetxattr(&m.p("f"), "user.trigger", b"1", 0).unwrap();
    assert_errno(
        sys::lgetxattr(&m.up("f"), "trusted.overlay.foo"),
        libc::ENODATA,
        "private xattr copied up",
    );
    assert_errno(
        sys::lremovexattr(&m.p("uo"), "trusted.overlay.opaque"),
        libc::ENODATA,
        "remove private opaque xattr",
    );
    assert!(
        is_opaque(&m.up("uo")),
        "opaque xattr removed through the union"
    );
}

#[test]
fn trusted_overlay_xattr_set_through_union_is_stored_escaped() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("f", b"").dir("d");
    let m = fx.mount();
    write(&m.p("u"), b"");
    for rel in ["f", "u", "d"] {
        let p = m.p(rel);
        sys::lsetxattr(&p, "trusted.overlay.opaque", b"y", 0).expect("set escaped name");
        assert_eq!(sys::lgetxattr(&p, "trusted.overlay.opaque").unwrap(), b"y");
        assert_eq!(sorted_names(&p), ["trusted.overlay.opaque"], "{rel}");
        let raw = m.up(rel);
        assert_eq!(
            sys::lgetxattr(&raw, "trusted.overlay.overlay.opaque").unwrap(),
            b"y",
            "{rel}: not stored escaped"
        );
        assert_errno(
            sys::lgetxattr(&raw, "trusted.overlay.opaque"),
            libc::ENODATA,
            &format!("{rel}: a real private xattr was written"),
        );
    }
    assert!(!is_opaque(&m.up("d")));
    assert_eq!(ls(&m.p("")), ["d", "f", "u"]);
    sys::lremovexattr(&m.p("u"), "trusted.overlay.opaque").expect("remove escaped");
    assert_errno(
        sys::lgetxattr(&m.up("u"), "trusted.overlay.overlay.opaque"),
        libc::ENODATA,
        "escaped xattr not removed",
    );
}

#[test]
fn escaped_overlay_xattr_in_lower_is_shown_unescaped() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0)
        .file("f", b"")
        .xattr("f", "trusted.overlay.overlay.esc", b"E");
    let m = fx.mount();
    assert_eq!(sorted_names(&m.p("f")), ["trusted.overlay.esc"]);
    assert_eq!(
        sys::lgetxattr(&m.p("f"), "trusted.overlay.esc").unwrap(),
        b"E"
    );
    assert_errno(
        sys::lgetxattr(&m.p("f"), "trusted.overlay.overlay.esc"),
        libc::ENODATA,
        "escaped name itself",
    );
}
