//! The binary's CLI contract (our binary only): bad invocations exit
//! non-zero with a message and mount nothing; a good mount shows up as a
//! fuse mount with default_permissions,allow_other,suid,dev; SIGTERM and an
//! external umount end the daemon with status 0; without -f it daemonises.
//! A table of bad command lines and bad layer combinations, each rejected
//! with a clear message and no mount left.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Runs our binary with `args` (adding -f), expecting a prompt failure.
#[track_caller]
fn assert_rejected(fx: &Fixture, args: &[&Path], extra: &[&str], what: &str) {
    let run = run_bounded(
        Command::new(BIN).args(args).arg("-f").args(extra),
        Duration::from_secs(10),
    );
    let left = detach_fuse_mounts_below(fx.root());
    let Some(status) = run.status else {
        panic!("{what}: unionfs-fuse {args:?} {extra:?} did not exit (it mounted?)");
    };
    let stderr = run.stderr;
    assert!(!status.success(), "{what}: exited 0 for {args:?} {extra:?}");
    assert!(
        !stderr.trim().is_empty(),
        "{what}: failed without a message on stderr"
    );
    assert!(left.is_empty(), "{what}: left mounts behind: {left:?}");
}

fn work_opt(fx: &Fixture) -> String {
    format!("workdir={}", fx.work().display())
}

#[test]
fn missing_lower_path_is_rejected() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    let l0 = fx.lower(0).root;
    let missing = fx.root().join("does-not-exist");
    let lowers = PathBuf::from(format!("{}:{}", l0.display(), missing.display()));
    let (u, m) = (fx.upper().root, fx.merged());
    assert_rejected(
        &fx,
        &[&lowers, &u, &m],
        &["-o", &work_opt(&fx)],
        "missing lower",
    );
}

#[test]
fn non_directory_upper_is_rejected() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    let l0 = fx.lower(0).root;
    let file = fx.root().join("upper-file");
    fs::write(&file, b"").unwrap();
    let m = fx.merged();
    assert_rejected(
        &fx,
        &[&l0, &file, &m],
        &["-o", &work_opt(&fx)],
        "file as upper",
    );
}

#[test]
fn upper_inside_a_lower_is_rejected() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    let l = fx.lower(0);
    l.dir("nested-upper");
    let m = fx.merged();
    assert_rejected(
        &fx,
        &[&l.root, &l.path("nested-upper"), &m],
        &["-o", &work_opt(&fx)],
        "upper inside lower",
    );
}

#[test]
fn lower_inside_upper_is_rejected() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    let u = fx.upper();
    u.dir("lower-in-upper");
    let m = fx.merged();
    assert_rejected(
        &fx,
        &[&u.path("lower-in-upper"), &u.root, &m],
        &["-o", &work_opt(&fx)],
        "lower inside upper",
    );
}

#[test]
fn work_dir_inside_a_lower_is_rejected() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    let l = fx.lower(0);
    l.dir("w");
    let (u, m) = (fx.upper().root, fx.merged());
    let opt = format!("workdir={}", l.path("w").display());
    assert_rejected(
        &fx,
        &[&l.root, &u, &m],
        &["-o", &opt],
        "work dir inside lower",
    );
}

#[test]
fn merged_inside_upper_is_rejected() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    let l0 = fx.lower(0).root;
    let u = fx.upper();
    u.dir("mnt");
    assert_rejected(
        &fx,
        &[&l0, &u.root, &u.path("mnt")],
        &["-o", &work_opt(&fx)],
        "merged inside upper",
    );
}

#[test]
fn same_dir_twice_is_rejected() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    let l0 = fx.lower(0).root;
    let twice = PathBuf::from(format!("{}:{}", l0.display(), l0.display()));
    let (u, m) = (fx.upper().root, fx.merged());
    assert_rejected(
        &fx,
        &[&twice, &u, &m],
        &["-o", &work_opt(&fx)],
        "lower twice",
    );
    assert_rejected(
        &fx,
        &[&l0, &l0, &m],
        &["-o", &work_opt(&fx)],
        "upper == lower",
    );
    let w = format!("workdir={}", u.display());
    assert_rejected(&fx, &[&l0, &u, &m], &["-o", &w], "workdir == upper");
}

#[test]
fn unknown_mount_option_is_rejected() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    let (l0, u, m) = (fx.lower(0).root, fx.upper().root, fx.merged());
    let opts = format!("{},no_such_option=1", work_opt(&fx));
    assert_rejected(&fx, &[&l0, &u, &m], &["-o", &opts], "unknown -o option");
}

fn super_and_mount_opts(path: &Path) -> (String, String) {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = path.to_str().unwrap();
    for line in text.lines().rev() {
        let (left, right) = line.split_once(" - ").unwrap();
        let l: Vec<&str> = left.split(' ').collect();
        if l[4] == want {
            let r: Vec<&str> = right.split(' ').collect();
            return (r[2].to_string(), l[5].to_string());
        }
    }
    panic!("{} not in mountinfo", path.display());
}

#[test]
fn root_mount_uses_default_permissions_allow_other_suid_dev() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    fx.lower(0).file("f", b"");
    let m = fx.mount();
    assert!(mount_type(&m.merged).unwrap().starts_with("fuse"));
    let (sup, mnt) = super_and_mount_opts(&m.merged);
    let sup: Vec<&str> = sup.split(',').collect();
    let mnt: Vec<&str> = mnt.split(',').collect();
    assert!(
        sup.contains(&"default_permissions"),
        "super options {sup:?}"
    );
    assert!(sup.contains(&"allow_other"), "super options {sup:?}");
    assert!(!mnt.contains(&"nosuid"), "mount options {mnt:?}");
    assert!(!mnt.contains(&"nodev"), "mount options {mnt:?}");
}

#[test]
fn sigterm_unmounts_and_exits_zero() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    fx.lower(0).file("f", b"x");
    let mut m = fx.mount();
    assert_eq!(read(&m.p("f")), "x");
    sys::kill(m.pid().unwrap(), libc::SIGTERM).unwrap();
    let st = m.forget_and_wait(Duration::from_secs(10));
    assert_unmounted(&m.merged, "after SIGTERM");
    assert_clean_exit(st, &m.log(), "after SIGTERM");
}

#[test]
fn external_umount_exits_zero() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    fx.lower(0).file("f", b"x");
    let mut m = fx.mount();
    run_ok(Command::new("umount").arg(&m.merged));
    let st = m.forget_and_wait(Duration::from_secs(10));
    assert_clean_exit(st, &m.log(), "after umount");
}

/// PIDs of processes whose command line mentions `needle` (our daemons).
fn pids_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(needle) {
                out.push(pid);
            }
        }
    }
    out
}

#[test]
fn without_f_daemonises_and_exits_zero_once_mounted() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    fx.lower(0).file("f", b"daemon");
    let m = fx.merged();
    let mut child = daemon_cmd(&fx)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let Some(status) = wait_timeout(&mut child, Duration::from_secs(15)) else {
        let _ = child.kill();
        let _ = child.wait();
        let _ = sys::umount2(&m, libc::MNT_DETACH);
        panic!("launcher did not exit within 15s");
    };
    let mounted = mount_type(&m);
    let readable = fs::read_to_string(m.join("f")).ok();
    let _ = sys::umount2(&m, 0).or_else(|_| sys::umount2(&m, libc::MNT_DETACH));
    // The daemon must go away after the unmount.
    let needle = m.to_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left = pids_mentioning(&needle);
    while !left.is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
        left = pids_mentioning(&needle);
    }
    for pid in &left {
        let _ = sys::kill(*pid, libc::SIGKILL);
    }
    assert!(status.success(), "launcher exit status {status}");
    assert!(
        mounted.as_deref().is_some_and(|t| t.starts_with("fuse")),
        "not mounted when the launcher exited: {mounted:?}"
    );
    assert_eq!(readable.as_deref(), Some("daemon"));
    assert!(
        left.is_empty(),
        "daemon {left:?} still running after umount"
    );
}

fn nofile_limits(pid: u32) -> (String, String) {
    let text = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files line");
    let f: Vec<&str> = line.split_whitespace().collect();
    (f[3].to_string(), f[4].to_string())
}

#[test]
fn daemon_raises_nofile_soft_limit_to_hard_limit() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    fx.lower(0).file("f", b"");
    let (l0, u, m, w) = (fx.lower(0).root, fx.upper().root, fx.merged(), fx.work());
    // prlimit execs our binary, so the child pid is the daemon's.
    let mut child = Command::new("prlimit")
        .arg("--nofile=256:4096")
        .arg("--")
        .arg(BIN)
        .arg(&l0)
        .arg(&u)
        .arg(&m)
        .arg("-f")
        .arg("-o")
        .arg(format!("workdir={}", w.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn prlimit");
    let start = Instant::now();
    while !mount_type(&m).is_some_and(|t| t.starts_with("fuse")) {
        if child.try_wait().unwrap().is_some() || start.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("daemon under prlimit did not mount");
        }
        thread::sleep(Duration::from_millis(10));
    }
    let limits = nofile_limits(child.id());
    let _ = sys::umount2(&m, 0).or_else(|_| sys::umount2(&m, libc::MNT_DETACH));
    let _ = wait_timeout(&mut child, Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        limits,
        ("4096".to_string(), "4096".to_string()),
        "RLIMIT_NOFILE (soft, hard) of the daemon"
    );
}

// ---------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------

struct BadRun {
    code: Option<i32>,
    stderr: String,
    left_mounted: Vec<PathBuf>,
}

fn run_bad(fx: &Fixture, args: &[String]) -> BadRun {
    let run = run_bounded(Command::new(BIN).args(args), Duration::from_secs(10));
    // Only FUSE mounts count (the test's own tmpfs lives below the fixture).
    BadRun {
        code: run.status.and_then(|s| s.code()),
        stderr: run.stderr,
        left_mounted: detach_fuse_mounts_below(fx.root()),
    }
}

#[test]
fn bad_command_lines_and_layer_combinations_are_rejected_clearly() {
    if only_for_ours() {
        return;
    }
    let Some(fx) = Fixture::new() else { return };
    let l0 = fx.lower(0);
    l0.dir("nested").file("sub/x", b"");
    let l1 = fx.lower(1);
    let up = fx.upper();
    up.dir("mnt").dir("lower-in-upper").dir("work-in-upper");
    let (m, w) = (fx.merged(), fx.work());
    let file = fx.root().join("a-file");
    fs::write(&file, b"").unwrap();
    let missing = fx.root().join("no-such-dir");
    let tmpfs = Tmpfs::mount(&fx.root().join("tmpfs"), "size=1m");
    let tw = tmpfs.0.join("w");
    fs::create_dir(&tw).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let wo = |p: &Path| format!("workdir={}", p.display());
    let (sl0, sl1, su, sm) = (s(&l0.root), s(&l1.root), s(&up.root), s(&m));
    // (what, argv, words the message must contain)
    let cases: Vec<(&str, Vec<String>, Vec<&str>)> = vec![
        (
            "missing lower",
            vec![s(&missing), su.clone(), sm.clone(), "-o".into(), wo(&w)],
            vec!["no-such-dir"],
        ),
        (
            "missing second lower",
            vec![
                format!("{sl0}:{}", s(&missing)),
                su.clone(),
                sm.clone(),
                "-o".into(),
                wo(&w),
            ],
            vec!["no-such-dir"],
        ),
        (
            "missing upper",
            vec![sl0.clone(), s(&missing), sm.clone(), "-o".into(), wo(&w)],
            vec!["no-such-dir"],
        ),
        (
            "missing mount point",
            vec![sl0.clone(), su.clone(), s(&missing), "-o".into(), wo(&w)],
            vec!["no-such-dir"],
        ),
        (
            "missing workdir",
            vec![
                sl0.clone(),
                su.clone(),
                sm.clone(),
                "-o".into(),
                wo(&missing),
            ],
            vec!["no-such-dir"],
        ),
        (
            "file as lower",
            vec![s(&file), su.clone(), sm.clone(), "-o".into(), wo(&w)],
            vec!["a-file", "not a directory"],
        ),
        (
            "file as upper",
            vec![sl0.clone(), s(&file), sm.clone(), "-o".into(), wo(&w)],
            vec!["a-file", "not a directory"],
        ),
        (
            "file as mount point",
            vec![sl0.clone(), su.clone(), s(&file), "-o".into(), wo(&w)],
            vec!["a-file", "not a directory"],
        ),
        (
            "file as workdir",
            vec![sl0.clone(), su.clone(), sm.clone(), "-o".into(), wo(&file)],
            vec!["a-file", "not a directory"],
        ),
        (
            "upper inside lower",
            vec![
                sl0.clone(),
                s(&l0.path("nested")),
                sm.clone(),
                "-o".into(),
                wo(&w),
            ],
            vec!["inside"],
        ),
        (
            "lower inside upper",
            vec![
                s(&up.path("lower-in-upper")),
                su.clone(),
                sm.clone(),
                "-o".into(),
                wo(&w),
            ],
            vec!["inside"],
        ),
        (
            "mount point inside upper",
            vec![
                sl0.clone(),
                su.clone(),
                s(&up.path("mnt")),
                "-o".into(),
                wo(&w),
            ],
            vec!["inside"],
        ),
        (
            "mount point inside lower",
            vec![
                sl0.clone(),
                su.clone(),
                s(&l0.path("sub")),
                "-o".into(),
                wo(&w),
            ],
            vec!["inside"],
        ),
        (
            "mount point is the upper",
            vec![sl0.clone(), su.clone(), su.clone(), "-o".into(), wo(&w)],
            vec!["upper"],
        ),
        (
            "same lower twice",
            vec![
                format!("{sl0}:{sl0}"),
                su.clone(),
                sm.clone(),
                "-o".into(),
                wo(&w),
            ],
            vec!["twice"],
        ),
        (
            "lower is the upper",
            vec![sl0.clone(), sl0.clone(), sm.clone(), "-o".into(), wo(&w)],
            vec!["twice"],
        ),
        (
            "workdir is the upper",
            vec![
                sl0.clone(),
                su.clone(),
                sm.clone(),
                "-o".into(),
                wo(&up.root),
            ],
            vec!["twice"],
        ),
        (
            "workdir is a lower",
            vec![
                format!("{sl0}:{sl1}"),
                su.clone(),
                sm.clone(),
                "-o".into(),
                wo(&l1.root),
            ],
            vec!["twice"],
        ),
        (
            "workdir on another filesystem",
            vec![sl0.clone(), su.clone(), sm.clone(), "-o".into(), wo(&tw)],
            vec!["another filesystem"],
        ),
        (
            "workdir inside upper",
            vec![
                sl0.clone(),
                su.clone(),
                sm.clone(),
                "-o".into(),
                wo(&up.path("work-in-upper")),
            ],
            vec!["workdir", "upper"],
        ),
        (
            "unknown option",
            vec![
                sl0.clone(),
                su.clone(),
                sm.clone(),
                "-o".into(),
                format!("{},bogus", wo(&w)),
            ],
            vec!["bogus"],
        ),
        (
            "unknown option with value",
            vec![
                sl0.clone(),
                su.clone(),
                sm.clone(),
                "-o".into(),
                "no_such_opt=1".into(),
            ],
            vec!["no_such_opt"],
        ),
        (
            "timeout=x",
            vec![
                sl0.clone(),
                su.clone(),
                sm.clone(),
                "-o".into(),
                "timeout=x".into(),
            ],
            vec!["timeout"],
        ),
        (
            "timeout=-1",
            vec![
                sl0.clone(),
                su.clone(),
                sm.clone(),
                "-o".into(),
                "timeout=-1".into(),
            ],
            vec!["timeout"],
        ),
        (
            "threads=0",
            vec![
                sl0.clone(),
                su.clone(),
                sm.clone(),
                "-o".into(),
                "threads=0".into(),
            ],
            vec!["threads"],
        ),
        (
            "threads=many",
            vec![
                sl0.clone(),
                su.clone(),
                sm.clone(),
                "-o".into(),
                "threads=many".into(),
            ],
            vec!["threads"],
        ),
        (
            "redirect_dir=maybe",
            vec![
                sl0.clone(),
                su.clone(),
                sm.clone(),
                "-o".into(),
                "redirect_dir=maybe".into(),
            ],
            vec!["redirect_dir"],
        ),
        (
            "oci_whiteouts=perhaps",
            vec![
                sl0.clone(),
                su.clone(),
                sm.clone(),
                "-o".into(),
                "oci_whiteouts=perhaps".into(),
            ],
            vec!["oci_whiteouts"],
        ),
        (
            "workdir without a value",
            vec![
                sl0.clone(),
                su.clone(),
                sm.clone(),
                "-o".into(),
                "workdir".into(),
            ],
            vec!["workdir"],
        ),
        (
            // `::` alone starts the data-only layers, as in the kernel's
            // lowerdir=; three colons leave an empty item between them.
            "empty lowerdir item (middle, :::)",
            vec![
                format!("{sl0}:::{sl1}"),
                su.clone(),
                sm.clone(),
                "-o".into(),
                wo(&w),
            ],
            vec!["empty"],
        ),
        (
            "empty lowerdir item (trailing)",
            vec![
                format!("{sl0}:"),
                su.clone(),
                sm.clone(),
                "-o".into(),
                wo(&w),
            ],
            vec!["empty"],
        ),
        (
            "empty lowerdir= option",
            vec![
                "-o".into(),
                format!("lowerdir=,upperdir={su},{}", wo(&w)),
                sm.clone(),
            ],
            vec!["empty"],
        ),
        (
            "-o lowerdir= with 3 positionals",
            vec![
                "-o".into(),
                format!("lowerdir={sl0}"),
                sl1.clone(),
                su.clone(),
                sm.clone(),
            ],
            vec!["lowerdir"],
        ),
        (
            "workdir without upper",
            vec![sl0.clone(), sm.clone(), "-o".into(), wo(&w)],
            vec!["workdir"],
        ),
        ("no arguments at all", vec![], vec!["ARGS"]),
        ("only a mount point", vec![sm.clone()], vec!["lower"]),
    ];
    let mut problems = Vec::new();
    for (what, mut argv, words) in cases {
        argv.push("-f".into());
        let r = run_bad(&fx, &argv);
        let lines: Vec<&str> = r
            .stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let first = lines.first().copied().unwrap_or("");
        let lower_err = r.stderr.to_lowercase();
        let mut why = Vec::new();
        match r.code {
            None => why.push("did not exit within 10 s (killed)".to_string()),
            Some(0) => why.push("exited 0".to_string()),
            Some(_) => {}
        }
        if !r.left_mounted.is_empty() {
            why.push(format!("left mounts behind: {:?}", r.left_mounted));
        }
        if lines.is_empty() {
            why.push("no message on stderr".into());
        }
        for w in &words {
            if !lower_err.contains(&w.to_lowercase()) {
                why.push(format!("message does not mention {w:?}"));
            }
        }
        if lower_err.contains("panicked") || lower_err.contains("backtrace") {
            why.push("panicked".into());
        }
        // One message: an error line first, not a dump of the usage text.
        let has_error_line = first.starts_with("unionfs-fuse:") || first.starts_with("error:");
        if !has_error_line || lines.len() > 4 {
            why.push(format!("not one clear message ({} lines)", lines.len()));
        }
        eprintln!("{what:40} exit={:?} {first}", r.code);
        if !why.is_empty() {
            problems.push(format!(
                "{what}: {}\n    argv: {argv:?}\n    stderr: {:?}",
                why.join("; "),
                r.stderr
            ));
        }
    }
    drop(tmpfs);
    assert!(
        problems.is_empty(),
        "{} bad invocation(s) not rejected cleanly:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
