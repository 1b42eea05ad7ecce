//! Load: a randomized multi-threaded stress run over a layered tree, and a
//! soak run that watches the server's fd count and RSS.
//!
//! The stress run must find no deadlock (an op taking more than 30 s fails
//! the test), no panic in the daemon log, no error that the same ops on
//! kernel overlayfs would not give (ENOENT, EEXIST, ENOTEMPTY, EXDEV,
//! EISDIR, ENOTDIR and EBUSY are expected under races, plus ENODATA for
//! xattr reads/removals and EPERM for hard links of directories; anything
//! else, e.g. EIO, ESTALE, EINVAL, fails), and at the end the merged view
//! must equal the other implementation's reading of the same upper (ours
//! unmounted, kernel overlayfs mounted with a fresh workdir).
//!
//! Env switches for long runs:
//! * `UNIONFS_STRESS_SECS=N` — length of the stress run (default 50).
//! * `UNIONFS_SOAK_SECS=N` — length of the soak run (default 10); from 60 s
//!   on it also requires a flat RSS.
//! * `UNIONFS_SEED=N` — seed of the random choices (printed on each run).
//! * `UNIONFS_STRESS_WORKERS=N`, `UNIONFS_STRESS_OPS=create,rename,...` —
//!   number of worker threads (default 4) and a subset of the op mix, to
//!   narrow down a failure.
//!
//! Runs longer than 60 s also need `UNIONFS_TEST_TIMEOUT` (the harness's
//! per-mount watchdog, default 120 s) raised to the run length plus 60 s.
//!
//! `UNIONFS_TEST_IMPL=kernel` runs the stress ops on kernel overlayfs, which
//! validates the list of expected errors.

mod common;
mod rootless_support;

use common::*;
use rootless_support::{inside, run_inside, Map};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Errors that kernel overlayfs gives too when the same ops race.
fn expected(op: &str, e: &io::Error) -> bool {
    match e.raw_os_error() {
        Some(
            libc::ENOENT
            | libc::EEXIST
            | libc::ENOTEMPTY
            | libc::EXDEV
            | libc::EISDIR
            | libc::ENOTDIR
            | libc::EBUSY,
        ) => true,
        Some(libc::ENODATA) => op == "getxattr" || op == "removexattr",
        // link(2) of a directory.
        Some(libc::EPERM) => op == "link",
        _ => false,
    }
}

/// Dirs the workers act in (some come and go), and the leaf names.
const DIRS: &[&str] = &[
    "a0", "a1", "a2", "a3", "a4", "a0/s0", "a1/s0", "a2/s1", "n0", "n1",
];
const LEAVES: &[&str] = &[
    "f0", "f1", "f2", "f3", "f4", "f5", "g0", "g1", "g2", "g3", "x0", "x1", "x2", "x3",
];

/// `user.overlay.opaque` rootless (userxattr), `trusted.overlay.opaque`
/// as root.
fn build_stress_layers(fx: &Fixture, rootless: bool) {
    let l1 = fx.lower(1);
    for d in ["a0", "a1", "a2", "a3"] {
        for f in ["f0", "f1", "f2", "f3", "f4", "f5"] {
            l1.file(&format!("{d}/{f}"), format!("{d}/{f} lower1").as_bytes());
        }
    }
    l1.file("a0/s0/f0", b"deep")
        .file("a1/s0/f1", b"deep")
        .file("a2/s1/f2", b"deep")
        .xattr("a0/f0", "user.k0", b"lower");
    l1.hardlink("a3/f0", "a3/f5.hl");
    let l0 = fx.lower(0);
    for d in ["a0", "a1", "a4"] {
        for g in ["g0", "g1", "g2", "g3"] {
            l0.file(&format!("{d}/{g}"), format!("{d}/{g} lower0").as_bytes());
        }
    }
    l0.whiteout("a1/f3");
    if rootless {
        l0.dir("a2/s1").xattr("a2/s1", "user.overlay.opaque", b"y");
    } else {
        l0.opaque("a2/s1");
    }
    l0.file("a2/s1/g0", b"opaque");
}

#[derive(Default)]
struct Stats {
    ops: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    unexpected: Vec<String>,
}

/// One worker's state, visible to the watchdog.
struct Slot {
    busy_since_ms: AtomicU64,
    op: Mutex<String>,
}

struct Shared {
    merged: PathBuf,
    /// Restricts the op mix (`UNIONFS_STRESS_OPS=create,rename,...`).
    only: Vec<String>,
    stop: AtomicBool,
    start: Instant,
    slots: Vec<Slot>,
    stats: Mutex<Stats>,
}

/// The op mix, in percent.
fn pick_op(n: u64) -> &'static str {
    match n {
        0..=11 => "create",
        12..=25 => "write",
        26..=37 => "read",
        38..=47 => "rename",
        48..=55 => "unlink",
        56..=61 => "mkdir",
        62..=66 => "rmdir",
        67..=72 => "setxattr",
        73..=75 => "removexattr",
        76..=78 => "getxattr",
        79..=81 => "link",
        82..=84 => "symlink",
        85..=89 => "readdir",
        90..=93 => "stat",
        94..=96 => "chmod",
        97 => "truncate",
        98 => "dirrename",
        _ => "dirchurn",
    }
}

fn one_op(sh: &Shared, rng: &mut Rng, slot: &Slot) {
    let m = &sh.merged;
    let d = rng.pick(DIRS);
    let n = rng.pick(LEAVES);
    let p = m.join(d).join(n);
    let op = loop {
        let op = pick_op(rng.below(100));
        if sh.only.is_empty() || sh.only.iter().any(|o| o == op) {
            break op;
        }
    };
    *slot.op.lock().unwrap() = format!("{op} {}", p.display());
    slot.busy_since_ms
        .store(sh.start.elapsed().as_millis() as u64 + 1, Ordering::Release);
    let mut buf = vec![0u8; 1 + rng.below(8192) as usize];
    for b in buf.iter_mut() {
        *b = rng.next() as u8;
    }
    let r: io::Result<()> = match op {
        "create" => {
            let mut o = OpenOptions::new();
            o.write(true);
            if rng.below(3) == 0 {
                o.create_new(true);
            } else {
                o.create(true).truncate(rng.below(2) == 0);
            }
            o.open(&p).and_then(|mut f| f.write_all(&buf))
        }
        "write" => OpenOptions::new().write(true).open(&p).and_then(|f| {
            f.write_all_at(&buf, rng.below(65536))?;
            if rng.below(4) == 0 {
                f.sync_all()?;
            }
            Ok(())
        }),
        "read" => File::open(&p).and_then(|mut f| {
            let mut v = Vec::new();
            f.read_to_end(&mut v).map(drop)
        }),
        "rename" => {
            let q = m.join(rng.pick(DIRS)).join(rng.pick(LEAVES));
            if rng.below(5) == 0 {
                sys::renameat2(&p, &q, libc::RENAME_NOREPLACE)
            } else {
                fs::rename(&p, &q)
            }
        }
        "unlink" => fs::remove_file(&p),
        "mkdir" => {
            if rng.below(4) == 0 {
                fs::create_dir(m.join(d))
            } else {
                fs::create_dir(&p)
            }
        }
        "rmdir" => {
            if rng.below(3) == 0 {
                fs::remove_dir(m.join(d))
            } else {
                fs::remove_dir(&p)
            }
        }
        "setxattr" => {
            let k = format!("user.k{}", rng.below(4));
            let v = &buf[..buf.len().min(200)];
            xattr_follow(&p, &k, Some(v))
        }
        "removexattr" => xattr_follow(&p, &format!("user.k{}", rng.below(4)), None),
        "getxattr" => xattr_get(&p, &format!("user.k{}", rng.below(4))),
        "link" => fs::hard_link(&p, m.join(rng.pick(DIRS)).join(rng.pick(LEAVES))),
        "symlink" => std::os::unix::fs::symlink(format!("t{}", rng.below(4)), &p),
        "readdir" => fs::read_dir(m.join(d)).and_then(|rd| {
            for e in rd {
                let e = e?;
                let _ = fs::symlink_metadata(e.path());
            }
            Ok(())
        }),
        "stat" => fs::symlink_metadata(&p).map(drop),
        "chmod" => fs::set_permissions(
            &p,
            fs::Permissions::from_mode(*rng.pick(&[0o644, 0o600, 0o755])),
        ),
        "truncate" => sys::truncate(&p, rng.below(100_000) as i64),
        "dirrename" => {
            // Renames within one parent only: never into a descendant.
            let pairs = [
                ("n0", "n1"),
                ("n1", "n0"),
                ("a0/s0", "a0/s9"),
                ("a0/s9", "a0/s0"),
                ("a4", "n0"),
                ("a2/s1", "a2/s8"),
            ];
            let (a, b) = rng.pick(&pairs);
            fs::rename(m.join(a), m.join(b))
        }
        _ => {
            // A new upper subtree created and torn down.
            let base = m.join(format!("n{}", rng.below(2)));
            (|| {
                let t = base.join(format!("t{}", rng.below(3)));
                fs::create_dir(&t)?;
                fs::write(t.join("x"), &buf[..16.min(buf.len())])?;
                fs::remove_file(t.join("x"))?;
                fs::remove_dir(&t)
            })()
        }
    };
    slot.busy_since_ms.store(0, Ordering::Release);
    let mut st = sh.stats.lock().unwrap();
    *st.ops.entry(op.to_string()).or_default() += 1;
    if let Err(e) = r {
        *st.errors.entry(ename(&e)).or_default() += 1;
        if !expected(op, &e) && st.unexpected.len() < 50 {
            st.unexpected
                .push(format!("{op} {}: {} ({e})", p.display(), ename(&e)));
        }
    }
}

/// setxattr / removexattr following symlinks (as `setfattr` does).
fn xattr_follow(p: &Path, name: &str, value: Option<&[u8]>) -> io::Result<()> {
    match value {
        Some(v) => sys::setxattr(p, name, v, 0),
        None => sys::removexattr(p, name),
    }
}

fn xattr_get(p: &Path, name: &str) -> io::Result<()> {
    sys::lgetxattr(p, name).map(drop)
}

/// A snapshot that records failures instead of panicking: relative path ->
/// description (type, mode, owner, size, content hash, symlink target,
/// nlink, user./trusted. xattrs minus overlay-private ones) or `ERR ...`.
fn tolerant_snapshot(root: &Path) -> BTreeMap<String, String> {
    use std::collections::hash_map::DefaultHasher;
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = if rel.as_os_str().is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let key = format!("/{}", rel.display());
        let md = match fs::symlink_metadata(&full) {
            Ok(md) => md,
            Err(e) => {
                out.insert(key, format!("ERR lstat {}", ename(&e)));
                continue;
            }
        };
        let ft = md.file_type();
        let mut desc = format!("{:o} {}:{}", md.mode(), md.uid(), md.gid());
        if ft.is_dir() {
            match fs::read_dir(&full) {
                Ok(rd) => {
                    for e in rd {
                        match e {
                            Ok(e) => stack.push(rel.join(e.file_name())),
                            Err(e) => desc += &format!(" ERR readdir-entry {}", ename(&e)),
                        }
                    }
                }
                Err(e) => desc += &format!(" ERR readdir {}", ename(&e)),
            }
        } else {
            desc += &format!(" size={} nlink={}", md.len(), md.nlink());
        }
        if ft.is_file() {
            match fs::read(&full) {
                Ok(d) => {
                    let mut h = DefaultHasher::new();
                    d.hash(&mut h);
                    desc += &format!(" hash={:016x}", h.finish());
                }
                Err(e) => desc += &format!(" ERR read {}", ename(&e)),
            }
        }
        if ft.is_symlink() {
            match fs::read_link(&full) {
                Ok(t) => desc += &format!(" -> {}", t.display()),
                Err(e) => desc += &format!(" ERR readlink {}", ename(&e)),
            }
        }
        match sys::llistxattr(&full) {
            Ok(mut names) => {
                names.sort();
                for n in names {
                    let private =
                        n.starts_with("trusted.overlay.") || n.starts_with("user.overlay.");
                    if private || !(n.starts_with("user.") || n.starts_with("trusted.")) {
                        continue;
                    }
                    match sys::lgetxattr(&full, &n) {
                        Ok(v) => {
                            let mut h = DefaultHasher::new();
                            v.hash(&mut h);
                            desc += &format!(" {n}=#{:08x}/{}", h.finish() as u32, v.len());
                        }
                        Err(e) => desc += &format!(" ERR getxattr {n} {}", ename(&e)),
                    }
                }
            }
            Err(e) => desc += &format!(" ERR listxattr {}", ename(&e)),
        }
        out.insert(key, desc);
    }
    out
}

fn diff_maps(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (k, v) in a {
        match b.get(k) {
            None => out += &format!("  only in left:  {k}  {v}\n"),
            Some(w) if w != v => {
                out += &format!("  differs: {k}\n    left:  {v}\n    right: {w}\n")
            }
            _ => {}
        }
    }
    for (k, v) in b {
        if !a.contains_key(k) {
            out += &format!("  only in right: {k}  {v}\n");
        }
    }
    out
}

/// The harness's watchdog kills our daemon after `UNIONFS_TEST_TIMEOUT`
/// seconds (default 120): long runs must raise it.
fn check_watchdog_budget(secs: u64) {
    let limit = env_num("UNIONFS_TEST_TIMEOUT", 120);
    assert!(
        secs + 60 <= limit,
        "a {secs} s run needs UNIONFS_TEST_TIMEOUT of at least {} (now {limit}), \
         or the harness watchdog kills the daemon mid-run",
        secs + 60
    );
}

fn daemon_log(fx: &Fixture) -> String {
    fs::read_to_string(fx.root().join("merged.log")).unwrap_or_default()
}

#[test]
fn randomized_stress_finds_no_deadlock_panic_or_unexpected_error() {
    stress(false);
}

/// The same run in a user namespace made by `unionfs-sub` (a subordinate
/// id range, as rootless podman has): ours in its automatic userxattr
/// mode, ending with the kernel's rootless reading (`userxattr`) of the
/// same upper. drop_caches cannot be written there, so the "uncached"
/// view is only a second reading.
#[test]
fn rootless_randomized_stress_finds_no_deadlock_panic_or_unexpected_error() {
    const NAME: &str = "rootless_randomized_stress_finds_no_deadlock_panic_or_unexpected_error";
    match inside() {
        Some(map) => {
            assert_eq!(map, Map::Range);
            stress(true);
        }
        None => {
            run_inside(NAME, Map::Range);
        }
    }
}

/// Kernel overlayfs rootless needs `userxattr`; ours finds it by itself.
fn mount_kind(fx: &Fixture, kind: Impl, rootless: bool, work: &Path) -> Mounted {
    let (lowers, upper) = (fx.lowers(), fx.upper().root);
    if rootless {
        Mounted::mount_kernel_opts(
            kind,
            &lowers,
            Some(&upper),
            Some(work),
            &fx.merged(),
            "userxattr",
        )
    } else {
        Mounted::mount(kind, &lowers, Some(&upper), Some(work), &fx.merged())
    }
}

fn stress(rootless: bool) {
    let Some(fx) = Fixture::new() else { return };
    let kind = fx.kind;
    let secs = env_num("UNIONFS_STRESS_SECS", if rootless { 30 } else { 50 });
    check_watchdog_budget(secs);
    let seed = seed();
    let workers = env_num("UNIONFS_STRESS_WORKERS", 4) as usize;
    let only: Vec<String> = std::env::var("UNIONFS_STRESS_OPS")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    eprintln!(
        "stress: {kind:?}{}, {secs} s, {workers} workers, UNIONFS_SEED={seed}",
        if rootless { " rootless" } else { "" }
    );
    build_stress_layers(&fx, rootless);
    let mut m = mount_kind(&fx, kind, rootless, &fx.work());
    let sh = Arc::new(Shared {
        merged: m.p(""),
        only,
        stop: AtomicBool::new(false),
        start: Instant::now(),
        slots: (0..workers)
            .map(|_| Slot {
                busy_since_ms: AtomicU64::new(0),
                op: Mutex::new(String::new()),
            })
            .collect(),
        stats: Mutex::new(Stats::default()),
    });
    let mut root_rng = Rng::new(seed);
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let sh = sh.clone();
            let mut rng = Rng::new(root_rng.next());
            thread::spawn(move || {
                while !sh.stop.load(Ordering::Relaxed) {
                    one_op(&sh, &mut rng, &sh.slots[w]);
                }
            })
        })
        .collect();
    // Watchdog: an op running for 30 s is a deadlock.
    let limit_ms = 30_000;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut stuck: Option<String> = None;
    while Instant::now() < deadline && stuck.is_none() {
        thread::sleep(Duration::from_millis(250));
        let now = sh.start.elapsed().as_millis() as u64;
        for s in &sh.slots {
            let since = s.busy_since_ms.load(Ordering::Acquire);
            if since != 0 && now.saturating_sub(since) > limit_ms {
                stuck = Some(s.op.lock().unwrap().clone());
            }
        }
    }
    sh.stop.store(true, Ordering::Relaxed);
    // Workers finish their current op; give them the same 30 s.
    let stop_at = Instant::now();
    while !handles.iter().all(|h| h.is_finished()) && stuck.is_none() {
        if stop_at.elapsed() > Duration::from_millis(limit_ms) {
            let ops: Vec<String> = sh
                .slots
                .iter()
                .filter(|s| s.busy_since_ms.load(Ordering::Acquire) != 0)
                .map(|s| s.op.lock().unwrap().clone())
                .collect();
            stuck = Some(ops.join("; "));
        }
        thread::sleep(Duration::from_millis(50));
    }
    if let Some(op) = &stuck {
        // Unblock the stuck callers before failing.
        if let Some(pid) = m.pid() {
            let _ = sys::kill(pid, libc::SIGKILL);
        }
        let _ = sys::umount2(&m.p(""), libc::MNT_DETACH);
        m.forget_and_wait(Duration::from_secs(5));
        panic!("deadlock: an op took more than 30 s: {op}");
    }
    for h in handles {
        h.join().expect("worker panicked");
    }
    let stats = std::mem::take(&mut *sh.stats.lock().unwrap());
    let total: u64 = stats.ops.values().sum();
    eprintln!(
        "stress: {total} ops in {:?} ({:.0}/s)\n  ops: {:?}\n  errors by kind: {:?}",
        sh.start.elapsed(),
        total as f64 / sh.start.elapsed().as_secs_f64(),
        stats.ops,
        stats.errors
    );
    let live = tolerant_snapshot(&m.p(""));
    // The same view again once the kernel forgot its caches: the server's
    // own answers, without anything cached on the kernel side.
    drop_caches();
    let uncached = tolerant_snapshot(&m.p(""));
    m.unmount();
    let log = daemon_log(&fx);
    // The other implementation's reading of the same upper.
    let other = mount_kind(&fx, kind.other(), rootless, &fx.dir("work2"));
    let cross = tolerant_snapshot(&other.p(""));
    drop(other);
    let mut problems = Vec::new();
    if log.contains("panic") {
        problems.push(format!("the daemon log mentions a panic:\n{log}"));
    }
    if !stats.unexpected.is_empty() {
        // With RUST_LOG=unionfs::reply=debug the daemon names the request
        // behind each unusual answer.
        let lines: Vec<&str> = log.lines().collect();
        let answered = lines.iter().filter(|l| l.contains(" answered ")).take(20);
        let last = &lines[lines.len().saturating_sub(30)..];
        let tail: Vec<&str> = answered.chain(last).copied().collect();
        problems.push(format!(
            "errors the kernel would not give under these races (first {}):\n  {}\n  daemon log tail:\n{}",
            stats.unexpected.len(),
            stats.unexpected.join("\n  "),
            tail.join("\n")
        ));
    }
    let errs: Vec<String> = live
        .iter()
        .chain(uncached.iter())
        .filter(|(_, v)| v.contains("ERR"))
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    if !errs.is_empty() {
        problems.push(format!(
            "the quiescent {kind:?} view has entries that fail:\n  {}",
            errs.join("\n  ")
        ));
    }
    let d = diff_maps(&live, &uncached);
    if !d.is_empty() {
        problems.push(format!(
            "the {kind:?} view changes when the kernel caches are dropped (left cached, right uncached):\n{d}"
        ));
    }
    let d = diff_maps(&live, &cross);
    if !d.is_empty() {
        problems.push(format!(
            "the final {kind:?} view differs from {:?} reading the same upper (left {kind:?}):\n{d}",
            kind.other()
        ));
    }
    assert!(
        problems.is_empty(),
        "stress (seed {seed}) found {} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Soak
// ---------------------------------------------------------------------------

fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

#[test]
fn soak_keeps_fd_count_and_rss_flat() {
    if only_for_ours() {
        return;
    }
    let Some(fx) = Fixture::new() else { return };
    let secs = env_num("UNIONFS_SOAK_SECS", 10);
    check_watchdog_budget(secs);
    let l = fx.lower(0);
    for i in 0..50 {
        l.file(&format!("w/f{i}"), format!("lower {i}").as_bytes());
    }
    let m = fx.mount();
    let pid = m.pid().unwrap();
    drop_caches();
    thread::sleep(Duration::from_millis(200));
    let baseline_fds = fd_count(pid);
    let mut rng = Rng::new(seed());
    let start = Instant::now();
    let mut samples: Vec<(f64, usize, u64)> = Vec::new();
    let mut next_sample = Duration::ZERO;
    let mut ops = 0u64;
    let mut errors = BTreeMap::<String, u64>::new();
    // The same working set all the time: 50 lower names and 50 new names in
    // one dir, recreated, rewritten, renamed and deleted over and over.
    while start.elapsed() < Duration::from_secs(secs) {
        let i = rng.below(50);
        let a = m.p(&format!("w/f{i}"));
        let b = m.p(&format!("w/n{}", rng.below(50)));
        let r: io::Result<()> = match rng.below(8) {
            0 => fs::write(&b, format!("new {i}")),
            1 => fs::read(&a).map(drop),
            2 => fs::rename(&b, m.p(&format!("w/n{}", rng.below(50)))),
            3 => fs::remove_file(&b),
            4 => OpenOptions::new()
                .append(true)
                .open(&a)
                .and_then(|mut f| f.write_all(b"+")),
            5 => fs::read_dir(m.p("w")).map(|rd| {
                rd.count();
            }),
            6 => fs::metadata(&b).map(drop),
            _ => sys::lsetxattr(&a, "user.soak", &rng.next().to_le_bytes(), 0),
        };
        ops += 1;
        if let Err(e) = r {
            *errors.entry(ename(&e)).or_default() += 1;
        }
        if start.elapsed() >= next_sample {
            samples.push((start.elapsed().as_secs_f64(), fd_count(pid), rss_kib(pid)));
            next_sample += Duration::from_secs(1);
        }
    }
    samples.push((start.elapsed().as_secs_f64(), fd_count(pid), rss_kib(pid)));
    drop_caches();
    let t = Instant::now();
    let mut after = fd_count(pid);
    while after > baseline_fds + 2 && t.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(200));
        drop_caches();
        after = fd_count(pid);
    }
    let max_fds = samples.iter().map(|s| s.1).max().unwrap_or(0);
    eprintln!(
        "soak: {secs} s, {ops} ops, errors {errors:?}; fds baseline {baseline_fds}, max {max_fds}, after close+drop_caches {after}"
    );
    eprintln!("  samples (s, fds, rss KiB): {samples:?}");
    let unexpected: Vec<&String> = errors
        .keys()
        .filter(|k| !matches!(k.as_str(), "ENOENT" | "ENODATA"))
        .collect();
    assert!(unexpected.is_empty(), "unexpected errors: {errors:?}");
    assert!(
        after <= baseline_fds + 2,
        "daemon fds do not return to the baseline: {baseline_fds} before, {after} after"
    );
    assert!(!m.log().contains("panic"), "daemon log:\n{}", m.log());
    if secs >= 60 {
        // Long run: RSS and fds flat once warmed up (after the first 20 %).
        let warm: Vec<&(f64, usize, u64)> = samples
            .iter()
            .filter(|s| s.0 >= secs as f64 * 0.2)
            .collect();
        let first = warm.first().map(|s| s.2).unwrap_or(0);
        let last = warm.last().map(|s| s.2).unwrap_or(0);
        assert!(
            last <= first + first / 5 + 8192,
            "RSS grows while the working set stays the same: {first} KiB -> {last} KiB"
        );
        let fmin = warm.iter().map(|s| s.1).min().unwrap_or(0);
        let fmax = warm.iter().map(|s| s.1).max().unwrap_or(0);
        assert!(
            fmax <= fmin + 64,
            "fd count not flat while the working set stays the same: {fmin}..{fmax}"
        );
    }
}
