//! On-disk format interop (overlay-semantics.md 3.8c): an upper written by
//! one implementation must show the same view when the other mounts it.
//! With UNIONFS_TEST_IMPL=kernel both sides are the kernel, which validates
//! the expectations; by default "ours" writes and the kernel reads, and vice
//! versa.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;

fn lowers(fx: &Fixture) {
    fx.lower(1)
        .file("etc/passwd", b"root:x:0:0\n")
        .file("etc/hosts", b"127.0.0.1 localhost\n")
        .file("etc/deleted", b"gone soon\n")
        .file("var/lib/db/data", b"0123456789")
        .file("var/lib/db/journal", b"j")
        .file("var/log/old.log", b"old")
        .file_mode("usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o755)
        .file("usr/share/doc/readme", b"doc")
        .symlink("usr/bin/alias", "tool")
        .file("home/hl1", b"linked\n")
        .hardlink("home/hl1", "home/hl2")
        .times("etc/hosts", Ts(1_000_000_000, 1), Ts(1_000_000_000, 2));
    fx.lower(0)
        .file("etc/hosts", b"127.0.0.1 localhost top\n")
        .file("etc/motd", b"welcome\n")
        .dir("var/cache")
        .file("opt/app/conf", b"a=1\n")
        .xattr("opt/app/conf", "user.tag", b"t")
        .fifo("run/fifo")
        .times("etc/hosts", Ts(1_100_000_000, 3), Ts(1_100_000_000, 4));
}

/// A sequence of changes touching every kind of on-disk state.
fn changes(m: &Mounted) {
    append(&m.p("etc/hosts"), b"10.0.0.1 new\n");
    fs::set_permissions(m.p("etc/passwd"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(m.p("etc/motd"), Some(12), Some(34)).unwrap();
    fs::remove_file(m.p("etc/deleted")).unwrap();
    fs::remove_dir_all(m.p("var/lib/db")).unwrap();
    fs::create_dir(m.p("var/lib/db")).unwrap();
    write(&m.p("var/lib/db/fresh"), b"fresh");
    fs::rename(m.p("var/log/old.log"), m.p("var/log/old.log.1")).unwrap();
    fs::create_dir_all(m.p("srv/www/html")).unwrap();
    write(&m.p("srv/www/html/index.html"), b"<html/>");
    fs::rename(m.p("srv/www"), m.p("srv/web")).unwrap();
    std::os::unix::fs::symlink("../etc/hosts", m.p("srv/hosts-link")).unwrap();
    fs::hard_link(m.p("usr/bin/tool"), m.p("usr/bin/tool2")).unwrap();
    append(&m.p("home/hl1"), b"changed\n");
    sys::mknod(&m.p("run/null"), libc::S_IFCHR | 0o666, 1, 3).unwrap();
    sys::mknod(&m.p("run/fifo2"), libc::S_IFIFO | 0o600, 0, 0).unwrap();
    sys::lsetxattr(&m.p("opt/app/conf"), "user.tag", b"changed", 0).unwrap();
    sys::lsetxattr(&m.p("opt/app"), "trusted.dirtag", b"d", 0).unwrap();
    sys::truncate(&m.p("var/log/old.log.1"), 1).unwrap();
    fs::remove_dir(m.p("var/cache")).unwrap();
    fs::remove_file(m.p("usr/share/doc/readme")).unwrap();
    fs::remove_dir(m.p("usr/share/doc")).unwrap();
    sys::utimensat(
        &m.p("opt/app/conf"),
        Ts(1_200_000_000, 5),
        Ts(1_200_000_000, 6),
        false,
    )
    .unwrap();
    sys::utimensat(
        &m.p("srv/hosts-link"),
        Ts(1_300_000_000, 7),
        Ts(1_300_000_000, 8),
        true,
    )
    .unwrap();
}

fn view(m: &Mounted) -> Tree {
    snapshot(&m.p(""), SnapOpts::with_times())
}

/// Checks the raw upper is in kernel format: no `.wh.` files, whiteouts and
/// opaque dirs where the changes put them.
fn check_raw_upper(m: &Mounted) {
    assert_no_wh_markers(&m.up(""));
    for w in [
        "etc/deleted",
        "var/cache",
        "usr/share/doc",
        "var/log/old.log",
    ] {
        assert_whiteout(&m.up(w));
    }
    assert!(is_opaque(&m.up("var/lib/db")));
    assert_eq!(ls(&m.up("var/lib/db")), ["fresh"]);
}

/// Mounts `reader` over the upper `writer` produced (fresh workdir and mount
/// point) and compares with the view the writer showed.
fn cross_check(writer: Impl, reader: Impl, reuse_workdir: bool) {
    let Some(fx) = Fixture::for_impl(writer) else {
        return;
    };
    if !environment_ok(reader) {
        return;
    }
    lowers(&fx);
    let mut m = fx.mount_with(writer);
    changes(&m);
    let shown = view(&m);
    check_raw_upper(&m);
    m.unmount();
    let work = if reuse_workdir {
        fx.work()
    } else {
        fx.dir("work2")
    };
    let r = Mounted::mount(
        reader,
        &fx.lowers(),
        Some(&fx.upper().root),
        Some(&work),
        &fx.dir("merged2"),
    );
    let seen = view(&r);
    assert_same(
        &shown,
        &seen,
        &format!("view by {writer:?} (left) vs {reader:?} over the same upper (right)"),
    );
    // Both keep working on that upper.
    write(&r.p("etc/after"), b"x");
    fs::remove_file(r.p("etc/motd")).unwrap();
    assert_whiteout(&r.up("etc/motd"));
}

#[test]
fn kernel_over_our_upper_shows_same_view() {
    let ours = impl_under_test();
    cross_check(ours, Impl::Kernel, false);
}

#[test]
fn ours_over_kernel_upper_shows_same_view() {
    let ours = impl_under_test();
    cross_check(Impl::Kernel, ours, false);
}

#[test]
fn ours_over_kernel_upper_and_used_workdir_shows_same_view() {
    // The kernel leaves work/ (mode 000) and stale #xxx objects in workdir.
    let ours = impl_under_test();
    cross_check(Impl::Kernel, ours, true);
}

#[test]
fn st_ino_same_when_other_implementation_mounts_the_upper() {
    let ours = impl_under_test();
    let Some(fx) = Fixture::for_impl(ours) else {
        return;
    };
    lowers(&fx);
    let mut m = fx.mount_with(ours);
    changes(&m);
    let opts = SnapOpts {
        ino: true,
        ..SnapOpts::basic()
    };
    let shown = snapshot(&m.p(""), opts);
    m.unmount();
    let k = Mounted::mount(
        Impl::Kernel,
        &fx.lowers(),
        Some(&fx.upper().root),
        Some(&fx.dir("work2")),
        &fx.dir("merged2"),
    );
    let seen = snapshot(&k.p(""), opts);
    // Copied-up hard links: their st_ino depends on index=on/off (see
    // hardlink.rs), so they are left out here.
    let strip = |t: Tree| t.without("home/hl1").without("home/hl2");
    assert_same(
        &strip(shown),
        &strip(seen),
        &format!("st_ino via {ours:?} vs kernel"),
    );
}

#[test]
fn ours_over_kernel_upper_with_shared_whiteout_inode() {
    // Kernel whiteouts are mode 0000 hard links of one inode; deleting and
    // recreating through the reader must keep working.
    let ours = impl_under_test();
    let Some(fx) = Fixture::for_impl(Impl::Kernel) else {
        return;
    };
    if !environment_ok(ours) {
        return;
    }
    fx.lower(0)
        .file("a", b"")
        .file("b", b"")
        .file("c", b"")
        .file("d/x", b"");
    let mut k = fx.mount_with(Impl::Kernel);
    for n in ["a", "b", "c"] {
        fs::remove_file(k.p(n)).unwrap();
    }
    fs::remove_dir_all(k.p("d")).unwrap();
    k.unmount();
    let m = Mounted::mount(
        ours,
        &fx.lowers(),
        Some(&fx.upper().root),
        Some(&fx.work()),
        &fx.dir("merged2"),
    );
    assert_eq!(ls(&m.p("")), Vec::<String>::new());
    write(&m.p("a"), b"again");
    fs::create_dir(m.p("d")).unwrap();
    assert_eq!(read(&m.p("a")), "again");
    assert!(lstat(&m.up("a")).is_file());
    assert!(is_opaque(&m.up("d")));
    assert_whiteout(&m.up("b"));
    assert_eq!(ls(&m.p("")), ["a", "d"]);
}
