//! Symlinks in lowers that point outside (`/`, `/etc`, `../../..`, an
//! absolute canary dir) on names the server walks through, lower dirs
//! covered by a symlink in a higher layer, layers swapped for symlinks while
//! mounted, and a work dir that is (or holds) a symlink. The server must act
//! on the symlink semantics the kernel gives, never read or write outside the
//! layer roots and never hang.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use crate::support::*;

#[test]
fn symlinks_in_lowers_pointing_outside_keep_kernel_semantics() {
    let canary = Canary::new();
    let can = canary.path().to_path_buf();
    let new1 = host_probe_name("new1");
    let new2 = host_probe_name("new2");
    let build = |fx: &Fixture| {
        fx.lower(0)
            .symlink("d", "/etc")
            .symlink("loop", "/loop")
            .symlink("root", "/")
            .symlink("up", "../../..")
            .symlink("can", can.to_str().unwrap())
            .symlink("dd/esc", "../../../../../..");
        fx.lower(1)
            .file("can/f", b"lower1-can")
            .file("etc/hostname", b"union-etc")
            .file("dd/esc/x", b"lower1-esc");
        Layout::standard(fx)
    };
    let ops = |m: &Mounted, t: &mut Transcript| {
        for n in ["d", "loop", "root", "up", "can", "dd/esc"] {
            t.rec(&format!("readlink {n}"), readlink_res(&m.p(n)));
            t.rec(&format!("lstat {n}"), kind_res(&m.p(n)));
        }
        // Resolution as a process chrooted at the merged dir (a container)
        // sees it: d -> /etc is the union's /etc, never the host's.
        t.expect(
            "in-root read d/hostname",
            read_in_root(m, "d/hostname"),
            "ok \"union-etc\"",
        );
        t.expect(
            "in-root read up/etc/hostname",
            read_in_root(m, "up/etc/hostname"),
            "ok \"union-etc\"",
        );
        t.expect(
            "in-root read dd/esc/etc/hostname",
            read_in_root(m, "dd/esc/etc/hostname"),
            "ok \"union-etc\"",
        );
        t.expect(
            "in-root read dd/esc/x (hidden lower dir)",
            read_in_root(m, "dd/esc/x"),
            "ENOENT",
        );
        t.expect(
            "in-root read loop/x (loop -> /loop)",
            read_in_root(m, "loop/x"),
            "ELOOP",
        );
        t.expect(
            "in-root create d/new1",
            res(open_in_root(
                m,
                &format!("d/{new1}"),
                libc::O_CREAT | libc::O_WRONLY,
            )),
            "ok",
        );
        t.expect(
            "in-root create root/etc/new2",
            res(open_in_root(
                m,
                &format!("root/etc/{new2}"),
                libc::O_CREAT | libc::O_WRONLY,
            )),
            "ok",
        );
        t.expect(
            "in-root list d",
            names_in_root(m, "d"),
            &format!("ok {:?}", {
                let mut v = vec!["hostname".to_string(), new1.clone(), new2.clone()];
                v.sort();
                v
            }),
        );
        // Operations that do not follow the final symlink.
        t.expect("mkdir d", res(fs::create_dir(m.p("d"))), "EEXIST");
        t.expect(
            "create_new d",
            res(OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(m.p("d"))),
            "EEXIST",
        );
        t.expect(
            "open d O_NOFOLLOW",
            res(OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(m.p("d"))),
            "ELOOP",
        );
        t.expect(
            "mkfifo root",
            res(sys::mknod(&m.p("root"), libc::S_IFIFO | 0o644, 0, 0)),
            "EEXIST",
        );
        t.expect(
            "symlink over up",
            res(std::os::unix::fs::symlink("x", m.p("up"))),
            "EEXIST",
        );
        t.expect(
            "lchown can",
            res(std::os::unix::fs::lchown(m.p("can"), Some(UID), Some(GID))),
            "ok",
        );
        t.expect(
            "lsetxattr trusted on can",
            res(sys::lsetxattr(&m.p("can"), "trusted.hostile", b"1", 0)),
            "ok",
        );
        t.expect(
            "lutimes can",
            res(sys::utimensat(&m.p("can"), Ts(1, 0), Ts(2, 0), true)),
            "ok",
        );
        t.expect(
            "lchown d 0:0",
            res(std::os::unix::fs::lchown(m.p("d"), Some(0), Some(0))),
            "ok",
        );
        t.expect("rename d d2", res(fs::rename(m.p("d"), m.p("d2"))), "ok");
        t.expect("readlink d2", readlink_res(&m.p("d2")), "ok /etc");
        t.expect("lstat d", kind_res(&m.p("d")), "ENOENT");
        t.expect(
            "ls etc",
            ls_res(&m.p("etc")),
            &format!("ok {:?}", {
                let mut v = vec!["hostname".to_string(), new1.clone(), new2.clone()];
                v.sort();
                v
            }),
        );
        t.expect("unlink root", res(fs::remove_file(m.p("root"))), "ok");
        t.expect(
            "hard link up up2",
            res(fs::hard_link(m.p("up"), m.p("up2"))),
            "ok",
        );
        t.expect("readlink up2", readlink_res(&m.p("up2")), "ok ../../..");
        t.expect("lstat can", kind_res(&m.p("can")), "*");
    };
    differential_of(&build, &ops);
    canary.assert_untouched("symlinks pointing outside");
    for n in [&new1, &new2] {
        assert!(
            !exists(&Path::new("/etc").join(n)),
            "a file was created on the host outside the union: {n}"
        );
    }
}

#[test]
fn lower_dir_covered_by_a_symlink_in_a_higher_layer() {
    let build = |fx: &Fixture| {
        fx.lower(1)
            .file("x/f", b"lower1-x")
            .file("x/sub/g", b"lower1-g");
        fx.lower(0)
            .symlink("x", "/t")
            .file("t/tf", b"lower0-t")
            .file("y/yf", b"lower0-y");
        fx.upper().symlink("y", "/t");
        Layout::standard(fx)
    };
    let ops = |m: &Mounted, t: &mut Transcript| {
        t.expect("ls /", ls_res(&m.p("")), "ok [\"t\", \"x\", \"y\"]");
        t.expect("readlink x", readlink_res(&m.p("x")), "ok /t");
        t.expect("readlink y", readlink_res(&m.p("y")), "ok /t");
        t.expect("in-root ls x", names_in_root(m, "x"), "ok [\"tf\"]");
        t.expect("in-root ls y", names_in_root(m, "y"), "ok [\"tf\"]");
        t.expect("in-root read x/f", read_in_root(m, "x/f"), "ENOENT");
        t.expect("in-root read x/sub/g", read_in_root(m, "x/sub/g"), "ENOENT");
        t.expect("in-root read y/yf", read_in_root(m, "y/yf"), "ENOENT");
        t.expect(
            "in-root create x/new",
            res(open_in_root(m, "x/new", libc::O_CREAT | libc::O_WRONLY)),
            "ok",
        );
        t.expect("ls t", ls_res(&m.p("t")), "ok [\"new\", \"tf\"]");
        t.expect("unlink x", res(fs::remove_file(m.p("x"))), "ok");
        t.expect("unlink y", res(fs::remove_file(m.p("y"))), "ok");
        t.expect("ls / after unlink", ls_res(&m.p("")), "ok [\"t\"]");
        t.expect("mkdir x", res(fs::create_dir(m.p("x"))), "ok");
        t.expect("mkdir y", res(fs::create_dir(m.p("y"))), "ok");
        t.expect("ls x", ls_res(&m.p("x")), "ok []");
        t.expect("ls y", ls_res(&m.p("y")), "ok []");
        t.expect(
            "rename t t2 (lower dir)",
            res(fs::rename(m.p("t"), m.p("t2"))),
            "EXDEV",
        );
    };
    differential_of(&build, &ops);
}

/// Replacing layer dirs by symlinks while mounted is undefined behaviour for
/// overlayfs, but it must never make the server read or write outside the
/// layers, crash, or hang. The symlinks point at a canary *relative to the
/// layer* (`../../canary`), which from the merged dir leads nowhere.
#[test]
fn layers_swapped_for_symlinks_while_mounted_never_escape() {
    let kind = impl_under_test();
    let Some(fx) = Fixture::new() else { return };
    let canary = Layer::new(fx.root().join("canary"));
    canary
        .file("sub/file", b"CANARY-SECRET")
        .dir("sub/dnew")
        .file("f", b"CANARY-SECRET");
    let before = snapshot(&canary.root, SnapOpts::with_times());
    let lower = Layer::new(fx.root().join("layers/lower"));
    let upper = Layer::new(fx.root().join("layers/upper"));
    let work = fx.dir("layers/work");
    let merged = fx.dir("mnt/a/merged");
    lower
        .file("l/sub/file", b"lower-data")
        .file("l2/sub/file", b"lower2-data");
    upper.file("u/sub/file", b"upper-data");
    let m = Mounted::mount(
        kind,
        std::slice::from_ref(&lower.root),
        Some(&upper.root),
        Some(&work),
        &merged,
    );
    // Warm the caches: nodes for every dir on the way.
    assert_eq!(read(&m.p("l/sub/file")), "lower-data");
    assert_eq!(read(&m.p("u/sub/file")), "upper-data");
    assert_eq!(read(&m.p("l2/sub/file")), "lower2-data");
    // Swap the dirs for symlinks leading to the canary from inside the layer.
    fs::rename(lower.path("l"), lower.path("l.old")).unwrap();
    std::os::unix::fs::symlink("../../canary", lower.path("l")).unwrap();
    fs::rename(upper.path("u"), upper.path("u.old")).unwrap();
    std::os::unix::fs::symlink("../../canary", upper.path("u")).unwrap();
    fs::rename(lower.path("l2/sub"), lower.path("l2/sub.old")).unwrap();
    std::os::unix::fs::symlink("../../../canary/sub", lower.path("l2/sub")).unwrap();

    let mut t = Transcript::default();
    let pid = m.pid();
    let merged_root = m.p("");
    for round in ["cached", "after drop_caches"] {
        if round != "cached" {
            drop_caches();
        }
        let mr = merged_root.clone();
        let r = with_timeout(Duration::from_secs(20), move || {
            let mut lines = Vec::new();
            let root = File::open(&mr).expect("open merged");
            let at = |rel: &str, flags: i32| openat2_in_root(root.as_fd(), rel, flags);
            let append = |rel: &str| {
                res(at(rel, libc::O_WRONLY | libc::O_APPEND)
                    .and_then(|fd| File::from(fd).write_all(b"X")))
            };
            lines.push(format!("append l/sub/file: {}", append("l/sub/file")));
            lines.push(format!("append l2/sub/file: {}", append("l2/sub/file")));
            lines.push(format!("append u/sub/file: {}", append("u/sub/file")));
            for rel in ["l/sub/new", "u/sub/new", "l2/sub/new"] {
                lines.push(format!(
                    "create {rel}: {}",
                    res(at(rel, libc::O_CREAT | libc::O_WRONLY))
                ));
            }
            for rel in ["l/sub/dnew", "u/sub/dnew", "l2/sub/dnew"] {
                lines.push(format!(
                    "mkdir {rel}: {}",
                    res(fs::create_dir(mr.join(rel)))
                ));
            }
            for rel in ["l/sub", "u/sub", "l2/sub"] {
                lines.push(format!(
                    "chmod {rel}: {}",
                    res(fs::set_permissions(
                        mr.join(rel),
                        fs::Permissions::from_mode(0o700)
                    ))
                ));
                lines.push(format!(
                    "setxattr {rel}: {}",
                    res(sys::lsetxattr(&mr.join(rel), "user.hostile", b"1", 0))
                ));
            }
            for rel in ["l/sub/file", "u/sub/file", "l2/sub/file"] {
                lines.push(format!(
                    "unlink {rel}: {}",
                    res(fs::remove_file(mr.join(rel)))
                ));
            }
            lines.push(format!("ls l2/sub: {}", ls_res(&mr.join("l2/sub"))));
            lines
        });
        match r {
            Some(lines) => {
                for l in lines {
                    t.rec(round, l);
                }
            }
            None => {
                if let Some(pid) = pid {
                    let _ = sys::kill(pid, libc::SIGKILL);
                }
                panic!("{kind:?}: an operation on swapped layers hung for 20 s ({round})");
            }
        }
    }
    for l in &t.lines {
        eprintln!("  {l}");
    }
    // The server is still alive and serving.
    assert!(exists(&m.p("l2")), "{kind:?}: mount stopped answering");
    if kind == Impl::Ours {
        assert!(!m.log().contains("panic"), "daemon panicked:\n{}", m.log());
    }
    drop(m);
    let after = snapshot(&canary.root, SnapOpts::with_times());
    let d = before.diff(&after);
    assert!(
        d.is_empty(),
        "{kind:?}: the canary outside the layers changed:\n{d}"
    );
    assert_no_canary_data(&upper.root, &format!("{kind:?} upper"));
}

/// The work dir is the server's own scratch space: a symlink there (as
/// `work` itself or as debris inside it) must not lead the cleanup at mount
/// time out of the work dir.
#[test]
fn work_dir_symlinks_never_lead_cleanup_outside() {
    let kind = impl_under_test();
    let Some(fx) = Fixture::new() else { return };
    let canary = Canary::new();
    let can = canary.path().to_str().unwrap().to_string();
    fx.lower(0).file("f", b"lower");
    // Case 1: debris below work/work, including symlinks to the canary and
    // to a canary subdir, a dir holding such a symlink, and a hard link.
    let w = fx.work();
    fs::create_dir_all(w.join("work/#ufs1.0")).unwrap();
    fs::create_dir_all(w.join("work/#ufs1.2")).unwrap();
    std::os::unix::fs::symlink(&can, w.join("work/lnk")).unwrap();
    std::os::unix::fs::symlink(format!("{can}/sub"), w.join("work/#ufs1.0/esc")).unwrap();
    std::os::unix::fs::symlink(&can, w.join("work/#ufs1.2/esc")).unwrap();
    fs::write(w.join("work/#ufs1.1"), b"half copied").unwrap();
    let mut m = fx.mount();
    assert_eq!(read(&m.p("f")), "lower");
    write(&m.p("g"), b"new");
    m.unmount();
    canary.assert_untouched(&format!("{kind:?}: debris in work dir"));
    let left: Vec<String> = ls(&w.join("work"))
        .into_iter()
        .filter(|n| n.starts_with("#ufs") || n == "lnk")
        .collect();
    assert!(
        left.is_empty(),
        "{kind:?}: work-dir debris not cleaned at mount: {left:?}"
    );
    // Case 2: work/work itself is a symlink to the canary.
    let w2 = fx.dir("work-symlink");
    std::os::unix::fs::symlink(&can, w2.join("work")).unwrap();
    let outcome = match kind {
        Impl::Kernel => {
            let out = Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o"])
                .arg(format!(
                    "lowerdir={},upperdir={},workdir={}",
                    fx.lower(0).root.display(),
                    fx.upper().root.display(),
                    w2.display()
                ))
                .arg(fx.merged())
                .output()
                .unwrap();
            let ok = out.status.success();
            if ok {
                let _ = sys::umount2(&fx.merged(), 0);
            }
            format!(
                "mount ok={ok} {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
        }
        Impl::Ours => {
            let run = run_bounded(
                Command::new(BIN)
                    .arg(fx.lower(0).root)
                    .arg(fx.upper().root)
                    .arg(fx.merged())
                    .args(["-f", "-o", &format!("workdir={}", w2.display())]),
                Duration::from_secs(3),
            );
            match run.status {
                Some(st) => format!("exited {:?} {}", st.code(), run.stderr),
                None => "still running (mounted), killed".to_string(),
            }
        }
    };
    eprintln!("{kind:?} with work/work -> canary: {outcome}");
    for mp in mounts_below(fx.root()) {
        let _ = sys::umount2(&mp, libc::MNT_DETACH);
    }
    canary.assert_untouched(&format!("{kind:?}: work/work is a symlink"));
    if kind == Impl::Ours && outcome.contains("exited") {
        assert!(
            outcome.contains("work"),
            "refusal should name the work dir: {outcome}"
        );
    }
}
