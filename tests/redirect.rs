//! `redirect_dir=on`: renaming lower and merged dirs works, writes the
//! kernel's `overlay.redirect` values, and each implementation follows the
//! redirects the other wrote. The default stays EXDEV (see rename.rs).

mod common;

use common::*;
use std::fs;

fn lowers(fx: &Fixture) {
    fx.lower(1)
        .file("a/f", b"f")
        .file("a/sub/s", b"s")
        .file("b/g", b"g")
        .file("c/deep/x", b"x");
    fx.lower(0).file("a/top", b"t").dir("c/deep/more");
}

/// Renames within one dir, into another dir, and of a child of a moved dir.
fn moves(m: &Mounted) {
    fs::rename(m.p("a"), m.p("a2")).expect("rename merged dir in place");
    fs::rename(m.p("b"), m.p("a2/b3")).expect("rename lower dir elsewhere");
    fs::rename(m.p("a2/sub"), m.p("sub2")).expect("rename child of moved dir");
    fs::rename(m.p("c/deep"), m.p("deep2")).expect("rename merged dir up");
    append(&m.p("a2/f"), b"+");
}

fn mount(fx: &Fixture, kind: Impl, upper: &std::path::Path, work: &std::path::Path) -> Mounted {
    Mounted::mount_opts(
        kind,
        &fx.lowers(),
        Some(upper),
        Some(work),
        &fx.merged(),
        "redirect_dir=on",
    )
}

fn redirect(p: &std::path::Path) -> Option<String> {
    sys::lgetxattr(p, "trusted.overlay.redirect")
        .ok()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

#[test]
fn redirect_dir_on_renames_lower_and_merged_dirs_like_the_kernel() {
    let Some(fx) = Fixture::new() else { return };
    lowers(&fx);
    let mut m = mount(&fx, fx.kind, &fx.upper().root, &fx.work());
    moves(&m);
    assert_eq!(ls(&m.p("")), ["a2", "c", "deep2", "sub2"]);
    assert_eq!(ls(&m.p("a2")), ["b3", "f", "top"]);
    assert_eq!(ls(&m.p("a2/b3")), ["g"]);
    assert_eq!(ls(&m.p("deep2")), ["more", "x"]);
    assert_eq!(read(&m.p("a2/f")), "f+");
    assert_eq!(redirect(&m.up("a2")).as_deref(), Some("a"));
    assert_eq!(redirect(&m.up("a2/b3")).as_deref(), Some("/b"));
    assert_eq!(redirect(&m.up("sub2")).as_deref(), Some("/a/sub"));
    assert_eq!(redirect(&m.up("deep2")).as_deref(), Some("/c/deep"));
    assert!(is_whiteout(&m.up("a")) && is_whiteout(&m.up("b")) && is_whiteout(&m.up("c/deep")));
    let shown = snapshot(&m.p(""), SnapOpts::basic());
    m.remount();
    assert_same(
        &shown,
        &snapshot(&m.p(""), SnapOpts::basic()),
        "after remount",
    );
}

#[test]
fn redirects_written_by_one_implementation_are_followed_by_the_other() {
    let ours = impl_under_test();
    let Some(fx) = Fixture::for_impl(ours) else {
        return;
    };
    lowers(&fx);
    // Ours writes, the kernel reads.
    let mut m = mount(&fx, ours, &fx.upper().root, &fx.work());
    moves(&m);
    let shown = snapshot(&m.p(""), SnapOpts::basic());
    m.unmount();
    let mut k = mount(&fx, Impl::Kernel, &fx.upper().root, &fx.dir("work2"));
    assert_same(
        &shown,
        &snapshot(&k.p(""), SnapOpts::basic()),
        "kernel over our upper",
    );
    k.unmount();
    // The kernel writes, ours reads.
    let up2 = fx.dir("upper2");
    let mut k = mount(&fx, Impl::Kernel, &up2, &fx.dir("work3"));
    moves(&k);
    let shown = snapshot(&k.p(""), SnapOpts::basic());
    k.unmount();
    let m = mount(&fx, ours, &up2, &fx.dir("work4"));
    assert_same(
        &shown,
        &snapshot(&m.p(""), SnapOpts::basic()),
        "ours over kernel upper",
    );
}

#[test]
fn redirect_dir_off_keeps_exdev() {
    let Some(fx) = Fixture::new() else { return };
    lowers(&fx);
    let m = fx.mount();
    let e = fs::rename(m.p("a"), m.p("a2")).expect_err("merged dir rename");
    assert_eq!(e.raw_os_error(), Some(libc::EXDEV));
}

/// Redirects stored in lower layers (an old `redirect_dir=on` upper reused
/// as a lower) send the lookup in the layers below elsewhere, as on the
/// kernel: absolute ones from each layer's root, relative ones in the same
/// parent, and one redirect found below another one applies on top of it.
#[test]
fn redirects_in_lower_layers_are_followed() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(2)
        .file("red/r1", b"1")
        .file("a/src/s1", b"s")
        .file("rel_target/t", b"t");
    fx.lower(1)
        .file("moved/own1", b"o")
        .xattr("moved", "trusted.overlay.redirect", b"/red")
        .dir("rel")
        .xattr("rel", "trusted.overlay.redirect", b"rel_target")
        .file("b/dst/own", b"o")
        .xattr("b/dst", "trusted.overlay.redirect", b"/a/src");
    fx.lower(0)
        .file("x/top", b"t")
        .xattr("x", "trusted.overlay.redirect", b"moved");
    let m = fx.mount();
    assert_eq!(ls(&m.p("moved")), ["own1", "r1"]);
    assert_eq!(ls(&m.p("rel")), ["t"]);
    assert_eq!(ls(&m.p("b/dst")), ["own", "s1"]);
    assert_eq!(ls(&m.p("x")), ["own1", "r1", "top"]);
    assert_eq!(read(&m.p("x/r1")), "1");
}

/// With userxattr a redirect is not followed but refused (EPERM), as the
/// kernel refuses it: user.overlay.* can be set on a layer by its owner.
#[test]
fn userxattr_refuses_to_follow_redirects() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(1).file("red/r1", b"1").file("moved/below", b"b");
    fx.lower(0)
        .file("moved/own", b"o")
        .xattr("moved", "user.overlay.redirect", b"/red")
        .file("plain/p", b"p");
    let m = fx.mount_opts("userxattr");
    assert_errno(
        fs::read_dir(m.p("moved")),
        libc::EPERM,
        "lookup of a redirected dir",
    );
    assert_eq!(ls(&m.p("plain")), ["p"]);
    assert_eq!(ls(&m.p("red")), ["r1"]);
}

/// A malformed redirect fails the lookup as on the kernel: EINVAL for an
/// empty component or a `/` in a relative one, EACCES for `.` or `..`.
#[test]
fn malformed_redirects_fail_the_lookup_like_the_kernel() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(1).file("real/r", b"r");
    let cases: [(&str, &[u8], i32); 6] = [
        ("d1", b"//real", libc::EINVAL),
        ("d2", b"/real/", libc::EINVAL),
        ("d3", b"a/b", libc::EINVAL),
        ("d4", b"..", libc::EACCES),
        ("d5", b"/../real", libc::EACCES),
        ("d6", b"/./real", libc::EACCES),
    ];
    for (d, v, _) in &cases {
        fx.lower(0).dir(d).xattr(d, "trusted.overlay.redirect", v);
    }
    fx.lower(0)
        .dir("ok")
        .xattr("ok", "trusted.overlay.redirect", b"/real");
    let m = fx.mount();
    for (d, _, errno) in &cases {
        assert_errno(fs::read_dir(m.p(d)), *errno, d);
    }
    assert_eq!(ls(&m.p("ok")), ["r"]);
}
