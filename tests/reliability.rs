//! Faults: the server killed at random moments (crash consistency), a full
//! upper filesystem (ENOSPC), a low RLIMIT_NOFILE (EMFILE, fd leaks), and
//! callers of a dead server (ENOTCONN, restart on the same dirs).
//!
//! Env switches for long runs:
//! * `UNIONFS_CRASH_POINTS=N` — kill points of the crash test (default 20).
//! * `UNIONFS_SEED=N` — seed of the random choices (default: time based;
//!   the seed is printed so that a failure can be replayed).

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Self-describing file content: `UFS:<id>:<len>\n` then a pattern; any
/// prefix, truncation or mix of two contents fails [`check_content`].
fn content(id: u32, len: usize) -> Vec<u8> {
    let mut v = format!("UFS:{id}:{len}\n").into_bytes();
    let mut i = v.len();
    while v.len() < len {
        v.push((i as u32).wrapping_mul(31).wrapping_add(id) as u8);
        i += 1;
    }
    v.truncate(len);
    v
}

fn check_content(data: &[u8]) -> Result<(), String> {
    let nl = data
        .iter()
        .take(40)
        .position(|b| *b == b'\n')
        .ok_or_else(|| format!("no header ({} bytes)", data.len()))?;
    let head = String::from_utf8_lossy(&data[..nl]).into_owned();
    let mut parts = head.split(':');
    let (Some("UFS"), Some(id), Some(len)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("bad header {head:?}"));
    };
    let (id, len): (u32, usize) = (
        id.parse().map_err(|_| format!("bad id in {head:?}"))?,
        len.parse().map_err(|_| format!("bad len in {head:?}"))?,
    );
    if data.len() != len {
        return Err(format!("{head:?}: size {} instead of {len}", data.len()));
    }
    if data != content(id, len).as_slice() {
        return Err(format!("{head:?}: content differs"));
    }
    Ok(())
}

const BLK: usize = 4096;

/// Block `j` appended by the fsync writer to file `fid`.
fn block(fid: u32, j: usize) -> Vec<u8> {
    let mut v = format!("BLK:{fid}:{j}:").into_bytes();
    while v.len() < BLK {
        v.push((j as u32).wrapping_mul(7).wrapping_add(fid) as u8 | 1);
    }
    v
}

fn is_enotconn(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOTCONN)
}

fn count_entries(dir: &Path) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// All paths below `root` (not following symlinks) whose last component
/// starts with `#` (our `#ufs<pid>.<n>` staging names, or the kernel's).
fn temp_names(root: &Path) -> Vec<String> {
    snapshot(root, SnapOpts::basic())
        .paths()
        .into_iter()
        .filter(|p| {
            Path::new(p)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('#'))
        })
        .collect()
}

/// Joins a worker thread, failing if it does not finish within `limit`
/// (a caller hung on a dead server).
fn join_within<T>(h: thread::JoinHandle<T>, limit: Duration, what: &str) -> T {
    let start = Instant::now();
    while !h.is_finished() {
        assert!(
            start.elapsed() < limit,
            "{what}: a caller did not return within {limit:?} after the server died"
        );
        thread::sleep(Duration::from_millis(5));
    }
    h.join()
        .unwrap_or_else(|_| panic!("{what}: worker panicked"))
}

// ---------------------------------------------------------------------------
// Crash consistency
// ---------------------------------------------------------------------------

const N_BIG: u32 = 4;
const BIG_LEN: usize = 8 << 20;
const N_SMALL: u32 = 40;
const N_REN: u32 = 20;

fn build_crash_lower(l: &Layer) {
    for i in 0..N_BIG {
        l.file(&format!("big/b{i}"), &content(100 + i, BIG_LEN));
    }
    for i in 0..N_SMALL {
        l.file(
            &format!("small/s{i}"),
            &content(200 + i, 4096 * (1 + i as usize % 16) + 17),
        );
    }
    for i in 0..4u32 {
        for j in 0..4u32 {
            l.file(
                &format!("tree/d{i}/e{j}/f"),
                &content(300 + i * 10 + j, 1000),
            );
        }
    }
    for i in 0..N_REN {
        l.file(&format!("ren/r{i}"), &content(400 + i, 20000));
    }
    l.file("ren2/keep", &content(450, 100));
    for k in 0..2u32 {
        l.file(&format!("sync/base{k}"), &content(500 + k, 10000));
    }
    l.fifo("spec/fifo")
        .symlink("spec/sym", "../small/s0")
        .chardev("spec/chr", 1, 3);
}

/// What the fsync writer knows is durable: name -> (intact prefix content
/// id and length, fid of the appended blocks, blocks fsynced).
type Durable = Arc<Mutex<BTreeMap<String, (Option<(u32, usize)>, u32, usize)>>>;

struct Storm {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    durable: Durable,
}

fn copy_up_storm(m: &Path, rng: &mut Rng, st: &Storm) {
    let m = m.to_path_buf();
    while !st.stop.load(Ordering::Relaxed) {
        let target = match rng.below(10) {
            0..=3 => format!("big/b{}", rng.below(N_BIG as u64)),
            4..=6 => format!("small/s{}", rng.below(N_SMALL as u64)),
            7 => format!("tree/d{}/e{}", rng.below(4), rng.below(4)),
            8 => rng.pick(&["spec/fifo", "spec/sym", "spec/chr"]).to_string(),
            _ => format!("tree/d{}/e{}/f", rng.below(4), rng.below(4)),
        };
        let p = m.join(&target);
        let r: io::Result<()> = match rng.below(5) {
            0 => fs::set_permissions(
                &p,
                fs::Permissions::from_mode(*rng.pick(&[0o644, 0o640, 0o600])),
            ),
            1 => sys::lsetxattr(&p, "trusted.storm", &rng.next().to_le_bytes(), 0),
            2 => {
                if target.starts_with("spec/") || target.matches('/').count() == 2 {
                    std::os::unix::fs::lchown(&p, Some(1000), Some(1000))
                } else {
                    OpenOptions::new().write(true).open(&p).map(drop)
                }
            }
            3 => sys::utimensat(&p, Ts(1000, 0), Ts(rng.below(1 << 30) as i64, 0), true),
            _ => std::os::unix::fs::lchown(&p, Some(0), Some(rng.below(3) as u32)),
        };
        st.ops.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = r {
            if is_enotconn(&e) {
                return;
            }
        }
    }
}

fn fsync_writer(m: &Path, round: usize, rng: &mut Rng, st: &Storm) {
    let mut n = 0u32;
    while !st.stop.load(Ordering::Relaxed) {
        let (name, prefix) = match n {
            0 | 1 => (format!("sync/base{n}"), Some((500 + n, 10000))),
            _ => (format!("sync/n{round}_{n}"), None),
        };
        let fid = round as u32 * 100 + n;
        n += 1;
        let f = match OpenOptions::new()
            .append(true)
            .create(true)
            .open(m.join(&name))
        {
            Ok(f) => f,
            Err(e) if is_enotconn(&e) => return,
            Err(_) => continue,
        };
        st.ops.fetch_add(1, Ordering::Relaxed);
        let mut written = 0;
        for _ in 0..(4 + rng.below(12)) {
            if st.stop.load(Ordering::Relaxed) {
                return;
            }
            if let Err(e) = (&f).write_all(&block(fid, written)) {
                if is_enotconn(&e) {
                    return;
                }
                break;
            }
            written += 1;
            st.ops.fetch_add(1, Ordering::Relaxed);
            if rng.below(2) == 0 {
                match f.sync_all() {
                    Ok(()) => {
                        st.durable
                            .lock()
                            .unwrap()
                            .insert(name.clone(), (prefix, fid, written));
                    }
                    Err(e) if is_enotconn(&e) => return,
                    Err(_) => break,
                }
            }
        }
    }
}

fn renamer(m: &Path, rng: &mut Rng, st: &Storm) {
    let names: Vec<String> = (0..N_REN)
        .flat_map(|i| {
            [
                format!("ren/r{i}"),
                format!("ren/r{i}.x"),
                format!("ren2/r{i}"),
            ]
        })
        .collect();
    while !st.stop.load(Ordering::Relaxed) {
        let a = m.join(rng.pick(&names));
        let b = m.join(rng.pick(&names));
        let r = if rng.below(8) == 0 {
            sys::renameat2(&a, &b, libc::RENAME_NOREPLACE)
        } else {
            fs::rename(&a, &b)
        };
        st.ops.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = r {
            if is_enotconn(&e) {
                return;
            }
        }
    }
}

fn dir_churner(m: &Path, rng: &mut Rng, st: &Storm) {
    let mut x = 0u32;
    while !st.stop.load(Ordering::Relaxed) {
        let d = m.join(format!("tree/d{}/e{}", rng.below(4), rng.below(4)));
        let r: io::Result<()> = if d.is_dir() {
            // Empty it, then remove it (whiteout over a lower dir).
            (|| {
                for e in fs::read_dir(&d)? {
                    fs::remove_file(e?.path())?;
                }
                fs::remove_dir(&d)
            })()
        } else {
            // Recreate it (opaque) with a new file written in one go.
            (|| {
                fs::create_dir(&d)?;
                x += 1;
                let mut f = File::create(d.join(format!("n{x}")))?;
                f.write_all(&content(700 + x, 3000))
            })()
        };
        st.ops.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = r {
            if is_enotconn(&e) {
                return;
            }
        }
        let nd = m.join(format!("tree/new{}", rng.below(6)));
        let r = if rng.below(2) == 0 {
            fs::create_dir(&nd)
        } else {
            fs::remove_dir(&nd)
        };
        st.ops.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = r {
            if is_enotconn(&e) {
                return;
            }
        }
    }
}

/// Checks the merged view after a crash and remount; returns problems.
fn verify_after_crash(merged: &Path, durable: &Durable) -> Vec<String> {
    let mut problems = Vec::new();
    let tree = snapshot(merged, SnapOpts::basic());
    let durable = durable.lock().unwrap().clone();
    for rel in tree.paths() {
        let name = Path::new(&rel)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('#') {
            problems.push(format!(
                "temporary object visible in the merged view: {rel}"
            ));
            continue;
        }
        let full = merged.join(&rel);
        let md = lstat(&full);
        if !md.is_file() {
            continue;
        }
        let data = match fs::read(&full) {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("{rel}: read failed after remount: {e}"));
                continue;
            }
        };
        if rel.starts_with("sync/") {
            let base = rel
                .strip_prefix("sync/base")
                .map(|k| (500 + k.parse::<u32>().unwrap_or(0), 10000usize));
            let plen = base.map(|b| b.1).unwrap_or(0);
            if let Some((id, len)) = base {
                if data.len() < len || data[..len] != content(id, len)[..] {
                    problems.push(format!(
                        "{rel}: the copied-up lower data is not intact ({} bytes)",
                        data.len()
                    ));
                    continue;
                }
            }
            if let Some((_, fid, blocks)) = durable.get(&rel) {
                for j in 0..*blocks {
                    let at = plen + j * BLK;
                    if data.len() < at + BLK || data[at..at + BLK] != block(*fid, j)[..] {
                        problems.push(format!(
                            "{rel}: fsynced block {j} of {blocks} lost (file has {} bytes)",
                            data.len()
                        ));
                        break;
                    }
                }
            }
        } else if name.starts_with('n') && !name.starts_with("new") {
            // Created by the test with one write: empty (killed between
            // create and write) or complete.
            if !data.is_empty() {
                if let Err(e) = check_content(&data) {
                    problems.push(format!("{rel}: {e}"));
                }
            }
        } else if let Err(e) = check_content(&data) {
            problems.push(format!("{rel}: half-copied or mixed: {e}"));
        }
    }
    problems
}

#[test]
fn crash_at_random_points_leaves_a_consistent_upper() {
    if only_for_ours() {
        return;
    }
    let Some(fx) = Fixture::new() else { return };
    let points = env_num("UNIONFS_CRASH_POINTS", 20);
    let seed = seed();
    eprintln!("crash test: {points} kill points, UNIONFS_SEED={seed}");
    let mut rng = Rng::new(seed);
    let lower = fx.lower(0);
    build_crash_lower(&lower);
    let merged = fx.merged();
    let mut total_ops = 0u64;
    let mut debris_points = 0;
    let mut debris_entries = 0;
    let mut problems = Vec::new();
    let started = Instant::now();
    for k in 0..points as usize {
        let up = fx.dir(&format!("pt{k}/upper"));
        let wk = fx.dir(&format!("pt{k}/work"));
        let kw = fx.dir(&format!("pt{k}/kwork"));
        let mut m = Mounted::mount(
            Impl::Ours,
            std::slice::from_ref(&lower.root),
            Some(&up),
            Some(&wk),
            &merged,
        );
        let pid = m.pid().unwrap();
        let st = Arc::new(Storm {
            stop: Arc::new(AtomicBool::new(false)),
            ops: Arc::new(AtomicU64::new(0)),
            durable: Arc::new(Mutex::new(BTreeMap::new())),
        });
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let st = st.clone();
                let mp = merged.clone();
                let mut r = Rng::new(rng.next());
                thread::spawn(move || match w {
                    0 => copy_up_storm(&mp, &mut r, &st),
                    1 => fsync_writer(&mp, k, &mut r, &st),
                    2 => renamer(&mp, &mut r, &st),
                    _ => dir_churner(&mp, &mut r, &st),
                })
            })
            .collect();
        // Skewed towards early kills, when copy-ups of the big files run.
        let delay = 20 + rng.below(200) + rng.below(2) * rng.below(600);
        thread::sleep(Duration::from_millis(delay));
        sys::kill(pid, libc::SIGKILL).expect("kill -9 the server");
        st.stop.store(true, Ordering::Relaxed);
        for w in workers {
            join_within(w, Duration::from_secs(30), "crash test");
        }
        let ops = st.ops.load(Ordering::Relaxed);
        total_ops += ops;
        let _ = sys::umount2(&merged, libc::MNT_DETACH);
        let _ = m.forget_and_wait(Duration::from_secs(10));
        drop(m);

        let debris = count_entries(&wk.join("work"));
        if debris > 0 {
            debris_points += 1;
            debris_entries += debris;
        }
        for t in temp_names(&up) {
            problems.push(format!(
                "point {k}: staging object in the upper dir itself: {t}"
            ));
        }
        // Remount ours: debris gone, tree consistent.
        let mut m = Mounted::mount(
            Impl::Ours,
            std::slice::from_ref(&lower.root),
            Some(&up),
            Some(&wk),
            &merged,
        );
        let left = count_entries(&wk.join("work"));
        if left != 0 {
            problems.push(format!(
                "point {k}: {left} entries left in the work dir after the next mount"
            ));
        }
        for p in verify_after_crash(&merged, &st.durable) {
            problems.push(format!(
                "point {k} (killed after {delay} ms, {ops} ops): {p}"
            ));
        }
        let ours = snapshot(&merged, SnapOpts::basic());
        m.unmount();
        // The upper must be valid for kernel overlayfs and read the same.
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.root.display(),
                up.display(),
                kw.display()
            ))
            .arg(&merged)
            .output()
            .unwrap();
        if !out.status.success() {
            problems.push(format!(
                "point {k}: kernel overlayfs refuses the upper: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        } else {
            let kernel = snapshot(&merged, SnapOpts::basic());
            umount_when_idle(&merged).expect("umount kernel overlay");
            let d = ours.diff(&kernel);
            if !d.is_empty() {
                problems.push(format!(
                    "point {k}: ours and the kernel read the upper differently (left ours):\n{d}"
                ));
            }
        }
        eprintln!(
            "  point {k:2}: killed after {delay:3} ms, {ops:5} ops, {debris} work-dir entries left by the crash"
        );
        if problems.is_empty() {
            let _ = fs::remove_dir_all(fx.root().join(format!("pt{k}")));
        }
    }
    eprintln!(
        "crash test: {points} kill points in {:?}, {total_ops} ops, crash debris at {debris_points} points ({debris_entries} entries), all cleaned at the next mount: {}",
        started.elapsed(),
        problems.iter().all(|p| !p.contains("left in the work dir"))
    );
    assert!(
        problems.is_empty(),
        "{} problem(s) (seed {seed}):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------
// ENOSPC
// ---------------------------------------------------------------------------

/// Writes 256 KiB chunks to `f` until an error; returns it (None if 32 MiB
/// went through).
fn fill(f: &mut File) -> Option<io::Error> {
    let chunk = vec![0x5a; 256 << 10];
    for _ in 0..128 {
        if let Err(e) = f.write_all(&chunk) {
            return Some(e);
        }
    }
    f.sync_all().err()
}

#[test]
fn enospc_during_copy_up_and_writes_is_clean_and_recoverable() {
    let Some(fx) = Fixture::new() else { return };
    let kind = fx.kind;
    let t = Tmpfs::mount(&fx.root().join("small"), "size=8m,mode=0755");
    let upper = t.0.join("upper");
    let work = t.0.join("work");
    fs::create_dir(&upper).unwrap();
    fs::create_dir(&work).unwrap();
    let big = content(1, 5 << 20);
    let mid = content(2, 3 << 19);
    fx.lower(0)
        .file("big", &big)
        .file("mid", &mid)
        .file("small", &content(3, 10 << 10))
        .file("d/f", &content(4, 100));
    let mut m = Mounted::mount(kind, &fx.lowers(), Some(&upper), Some(&work), &fx.merged());

    // 1. Fill the upper through the mount: the caller gets ENOSPC.
    let mut filler = File::create(m.p("fill")).unwrap();
    let e = fill(&mut filler).expect("8 MiB tmpfs never filled up");
    assert_eq!(
        e.raw_os_error(),
        Some(libc::ENOSPC),
        "{kind:?}: filling the upper gave {e}"
    );
    drop(filler);
    // 2. The server stays up.
    assert!(exists(&m.p("d/f")), "{kind:?}: mount stopped answering");
    // 3. Copy-ups that do not fit fail with ENOSPC and leave nothing behind.
    let r = OpenOptions::new().append(true).open(m.p("big"));
    assert_errno(
        r,
        libc::ENOSPC,
        &format!("{kind:?}: copy-up of big on a full upper"),
    );
    let r = fs::set_permissions(m.p("mid"), fs::Permissions::from_mode(0o600));
    assert_errno(
        r,
        libc::ENOSPC,
        &format!("{kind:?}: chmod copy-up of mid on a full upper"),
    );
    let r = OpenOptions::new().append(true).open(m.p("small"));
    assert_errno(
        r,
        libc::ENOSPC,
        &format!("{kind:?}: copy-up of small on a full upper"),
    );
    assert_eq!(fs::read(m.p("big")).unwrap(), big, "{kind:?}: big changed");
    assert_eq!(fs::read(m.p("mid")).unwrap(), mid, "{kind:?}: mid changed");
    assert_eq!(lstat(&m.p("mid")).mode() & 0o777, 0o644);
    for n in ["big", "mid", "small"] {
        assert!(
            !exists(&upper.join(n)),
            "{kind:?}: a failed copy-up left {n} in the upper"
        );
    }
    if kind == Impl::Ours {
        assert_eq!(
            ls(&work.join("work")),
            Vec::<String>::new(),
            "failed copy-ups left staging debris"
        );
    }
    // 4. Writes to an already copied-up file also get ENOSPC.
    let mut f = OpenOptions::new().append(true).open(m.p("fill")).unwrap();
    let e = fill(&mut f).expect("append to a full fs succeeded");
    assert_eq!(
        e.raw_os_error(),
        Some(libc::ENOSPC),
        "{kind:?}: append gave {e}"
    );
    drop(f);
    // 5. Free the space through the mount: everything works again.
    fs::remove_file(m.p("fill")).unwrap();
    // FUSE sends RELEASE/FORGET asynchronously: allow a moment.
    let since = Instant::now();
    let mut free = sys::statvfs(&upper).unwrap();
    while free.f_bavail * free.f_frsize < 7 << 20 && since.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(20));
        free = sys::statvfs(&upper).unwrap();
    }
    eprintln!(
        "{kind:?}: space of the deleted file released after {:?}",
        since.elapsed()
    );
    assert!(
        free.f_bavail * free.f_frsize >= 7 << 20,
        "{kind:?}: space of the deleted file not released ({} bytes free): the server keeps it open?",
        free.f_bavail * free.f_frsize
    );
    let mut f = OpenOptions::new().append(true).open(m.p("big")).unwrap();
    f.write_all(b"appended").unwrap();
    drop(f);
    let mut want = big.clone();
    want.extend_from_slice(b"appended");
    assert_eq!(fs::read(m.p("big")).unwrap(), want);
    fs::set_permissions(m.p("mid"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::create_dir(m.p("d/new")).unwrap();
    write(&m.p("d/new/g"), b"ok");
    m.remount();
    assert_eq!(fs::read(m.p("big")).unwrap(), want);
    assert_eq!(fs::read(m.p("mid")).unwrap(), mid);
    assert_eq!(read(&m.p("d/new/g")), "ok");
    if kind == Impl::Ours {
        assert!(!m.log().contains("panic"), "daemon log:\n{}", m.log());
    }
    drop(m);
    drop(t);
}

// ---------------------------------------------------------------------------
// EMFILE
// ---------------------------------------------------------------------------

/// Our daemon started through a wrapper (`prlimit ... --`), which execs it
/// (so the pid is the daemon's). Unmounts and reaps on drop.
struct Wrapped {
    child: Option<Child>,
    merged: PathBuf,
    log: PathBuf,
}

impl Wrapped {
    fn start(wrapper: &[&str], args: &[String], merged: &Path, log: &Path) -> Wrapped {
        let logf = File::create(log).unwrap();
        let mut child = Command::new(wrapper[0])
            .args(&wrapper[1..])
            .arg(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("spawn wrapped daemon");
        let start = Instant::now();
        while !mount_type(merged).is_some_and(|t| t.starts_with("fuse")) {
            if child.try_wait().unwrap().is_some() || start.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "wrapped daemon did not mount: {}",
                    fs::read_to_string(log).unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
        Wrapped {
            child: Some(child),
            merged: merged.to_path_buf(),
            log: log.to_path_buf(),
        }
    }

    /// Our daemon over `lowers` and the fixture's upper, work dir and
    /// mount point, under RLIMIT_NOFILE 256 (soft and hard).
    fn under_nofile_256(fx: &Fixture, lowers: &str) -> Wrapped {
        Self::over_fixture(&["prlimit", "--nofile=256:256", "--"], fx, lowers)
    }

    /// Our daemon over `lowers` and the fixture's upper, work dir and
    /// mount point, started through `wrapper`.
    fn over_fixture(wrapper: &[&str], fx: &Fixture, lowers: &str) -> Wrapped {
        let merged = fx.merged();
        let args = vec![
            lowers.to_string(),
            fx.upper().root.display().to_string(),
            merged.display().to_string(),
            "-f".to_string(),
            "-o".to_string(),
            format!("workdir={}", fx.work().display()),
        ];
        Wrapped::start(wrapper, &args, &merged, &fx.root().join("daemon.log"))
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Unmounts and returns the exit status.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if sys::umount2(&self.merged, 0).is_err() {
            let _ = sys::umount2(&self.merged, libc::MNT_DETACH);
        }
        let mut child = self.child.take()?;
        let st = wait_timeout(&mut child, Duration::from_secs(10));
        if st.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        st
    }
}

impl Drop for Wrapped {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}

/// The daemon's fd count once the kernel forgot what it can (dropping
/// caches for up to 10 s until the count is back near `baseline`).
fn fds_once_forgotten(pid: u32, baseline: usize) -> usize {
    let start = Instant::now();
    let mut after = fd_count(pid);
    while after > baseline + 2 && start.elapsed() < Duration::from_secs(10) {
        drop_caches();
        thread::sleep(Duration::from_millis(200));
        after = fd_count(pid);
    }
    after
}

/// The daemon's fd count once it stopped changing (for up to 5 s).
fn settled_fd_count(pid: u32) -> usize {
    let start = Instant::now();
    let mut last = fd_count(pid);
    loop {
        thread::sleep(Duration::from_millis(100));
        let now = fd_count(pid);
        if now == last || start.elapsed() > Duration::from_secs(5) {
            return now;
        }
        last = now;
    }
}

fn soft_nofile_limit() -> u64 {
    let text = fs::read_to_string("/proc/self/limits").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024)
}

#[test]
fn emfile_server_under_nofile_256_stays_up_and_does_not_leak() {
    if only_for_ours() {
        return;
    }
    let Some(fx) = Fixture::new() else { return };
    const N: usize = 600;
    let l = fx.lower(0);
    for i in 0..N {
        l.file(&format!("f/{i}"), &content(i as u32, 100));
    }
    for i in 0..100 {
        l.file(&format!("dirs/d{i}/x"), b"x");
    }
    let merged = fx.merged();
    let mut d = Wrapped::under_nofile_256(&fx, &l.root.display().to_string());
    let pid = d.pid();
    drop_caches();
    thread::sleep(Duration::from_millis(200));
    let baseline = fd_count(pid);
    // Keep the test's own fds well below its soft limit.
    let budget = (soft_nofile_limit() as usize).saturating_sub(100).min(1500);
    let mut held: Vec<File> = Vec::new();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let note = |op: &str, e: &io::Error, errors: &mut BTreeMap<String, usize>| {
        *errors.entry(format!("{op}: {e}")).or_default() += 1;
    };
    let mut peak = 0;
    // Lookups of everything, then open many lower files for reading.
    for i in 0..N {
        if let Err(e) = fs::metadata(merged.join(format!("f/{i}"))) {
            note("stat", &e, &mut errors);
        }
    }
    for i in 0..100 {
        let _ = fs::read_dir(merged.join(format!("dirs/d{i}"))).map(|r| r.count());
    }
    peak = peak.max(fd_count(pid));
    for i in 0..N {
        if held.len() >= budget {
            break;
        }
        match File::open(merged.join(format!("f/{i}"))) {
            Ok(f) => held.push(f),
            Err(e) => note("open for reading", &e, &mut errors),
        }
        if i % 50 == 0 {
            peak = peak.max(fd_count(pid));
        }
    }
    // Copy-ups (open for writing) and new files, all kept open.
    for i in 0..300 {
        if held.len() >= budget {
            break;
        }
        match OpenOptions::new()
            .read(true)
            .write(true)
            .open(merged.join(format!("f/{i}")))
        {
            Ok(f) => held.push(f),
            Err(e) => note("open for writing (copy-up)", &e, &mut errors),
        }
    }
    for i in 0..300 {
        if held.len() >= budget {
            break;
        }
        match File::create(merged.join(format!("new{i}"))) {
            Ok(f) => held.push(f),
            Err(e) => note("create", &e, &mut errors),
        }
        if i % 50 == 0 {
            peak = peak.max(fd_count(pid));
        }
    }
    peak = peak.max(fd_count(pid));
    // Every fd we got works.
    let mut bad_reads = 0;
    for f in held.iter().take(N) {
        let mut buf = Vec::new();
        let mut r: &File = f;
        match r.read_to_end(&mut buf) {
            Ok(_) if buf.is_empty() || check_content(&buf).is_ok() => {}
            Ok(_) => bad_reads += 1,
            Err(e) => note("read", &e, &mut errors),
        }
    }
    let opened = held.len();
    drop(held);
    assert!(
        d.alive(),
        "the server died under RLIMIT_NOFILE 256:\n{}",
        d.log()
    );
    // Back to the baseline once the kernel forgets the inodes.
    let after = fds_once_forgotten(pid, baseline);
    // Still serving, copy-ups and creates included.
    assert_eq!(ls(&merged.join("dirs/d7")), ["x"]);
    let mut after_errors = Vec::new();
    for i in [1, 2, 299, 450] {
        if let Err(e) = OpenOptions::new()
            .append(true)
            .open(merged.join(format!("f/{i}")))
        {
            after_errors.push(format!("open f/{i} for writing: {e}"));
        }
    }
    if let Err(e) = File::create(merged.join("dirs/d9/after")) {
        after_errors.push(format!("create dirs/d9/after: {e}"));
    }
    assert_eq!(
        check_content(&fs::read(merged.join("f/5")).unwrap()),
        Ok(())
    );
    eprintln!(
        "EMFILE: daemon fds baseline {baseline}, peak {peak}, after close+drop_caches {after}; \
         {opened} files held open by callers; caller errors: {errors:?}"
    );
    let log = d.log();
    let st = d.stop();
    assert_clean_exit(st, &log, "after unmount");
    assert_eq!(bad_reads, 0, "reads returned wrong data");
    assert!(
        after_errors.is_empty(),
        "after closing everything: {after_errors:?}"
    );
    let unclean: Vec<&String> = errors
        .keys()
        .filter(|k| !(k.contains("os error 24") || k.contains("os error 23")))
        .collect();
    assert!(
        unclean.is_empty(),
        "callers got errors other than EMFILE/ENFILE: {errors:?}"
    );
    assert!(
        after <= baseline + 2,
        "daemon fds do not return to the baseline: {baseline} before, {after} after closing everything"
    );
}

/// The kernel keeps looked-up dirs cached (until memory pressure), and each
/// needs the server's fd of every layer dir it merges. A walk over more
/// lower dirs than RLIMIT_NOFILE allows must still work: the server closes
/// lower dir fds beyond a budget and reopens them when needed.
#[test]
fn a_walk_over_more_lower_dirs_than_the_fd_limit_works() {
    if only_for_ours() {
        return;
    }
    let Some(fx) = Fixture::new() else { return };
    // 2 x 2 x 400 lower dirs (each dir is in both lowers): 1,600 fds if kept.
    const N: usize = 400;
    let (l0, l1) = (fx.lower(0), fx.lower(1));
    for i in 0..N {
        l0.file(&format!("d{i}/sub/top"), &content(i as u32, 50));
        l1.file(
            &format!("d{i}/sub/bottom"),
            &content(i as u32 + N as u32, 60),
        );
    }
    let (merged, upper) = (fx.merged(), fx.upper().root);
    let lowers = format!("{}:{}", l0.root.display(), l1.root.display());
    let mut d = Wrapped::under_nofile_256(&fx, &lowers);
    let pid = d.pid();
    let mut errors = Vec::new();
    let mut peak = 0;
    for i in 0..N {
        let sub = merged.join(format!("d{i}/sub"));
        match fs::read_dir(&sub).and_then(|r| r.collect::<io::Result<Vec<_>>>()) {
            Ok(v) if v.len() == 2 => {}
            other => errors.push(format!("list d{i}/sub: {other:?}")),
        }
        if i % 50 == 0 {
            peak = peak.max(fd_count(pid));
        }
    }
    // The first dirs' fds were closed long ago: reads, a copy-up (which
    // copies the parents up first) and a rename inside them reopen them.
    for i in [0, 1, N / 2] {
        let sub = merged.join(format!("d{i}/sub"));
        match fs::read(sub.join("bottom")) {
            Ok(b) if b == content((i + N) as u32, 60) => {}
            other => errors.push(format!(
                "read d{i}/sub/bottom: {:?}",
                other.map(|b| b.len())
            )),
        }
        let r = OpenOptions::new()
            .append(true)
            .open(sub.join("top"))
            .and_then(|mut f| f.write_all(b"more"))
            .and_then(|_| fs::rename(sub.join("bottom"), sub.join("moved")));
        if let Err(e) = r {
            errors.push(format!("write and rename in d{i}/sub: {e}"));
        }
        match ls(&sub)[..] {
            [ref a, ref b] if a == "moved" && b == "top" => {}
            ref other => errors.push(format!("ls d{i}/sub after rename: {other:?}")),
        }
    }
    peak = peak.max(fd_count(pid));
    let up = fs::read(upper.join("d0/sub/top")).unwrap_or_default();
    let log = d.log();
    let st = d.stop();
    assert!(errors.is_empty(), "{errors:#?}\ndaemon log:\n{log}");
    assert!(peak < 256, "daemon fds peaked at {peak}");
    assert_eq!(up, [&content(0, 50)[..], b"more"].concat());
    assert_clean_exit(st, &log, "after unmount");
}

/// The same for upper dirs, which renames move and rmdir removes: a tree of
/// more new dirs than RLIMIT_NOFILE allows can be made, listed, renamed and
/// removed, and a dir made again where a merged one was removed is empty.
#[test]
fn a_tree_of_more_upper_dirs_than_the_fd_limit_works() {
    if only_for_ours() {
        return;
    }
    let Some(fx) = Fixture::new() else { return };
    let l = fx.lower(0);
    for i in 0..20 {
        l.file(&format!("m{i}/sub/below"), b"x");
    }
    let upper = fx.upper().root;
    let merged = fx.merged();
    let mut d = Wrapped::under_nofile_256(&fx, &l.root.display().to_string());
    let pid = d.pid();
    let mut errors = Vec::new();
    let mut peak = 0;
    // 2 x 400 new dirs, looked up and kept by the kernel.
    const N: usize = 400;
    for i in 0..N {
        let sub = merged.join(format!("new/n{i}/sub"));
        if let Err(e) = fs::create_dir_all(&sub).and_then(|_| fs::write(sub.join("f"), b"f")) {
            errors.push(format!("make new/n{i}/sub/f: {e}"));
        }
        if i % 50 == 0 {
            peak = peak.max(fd_count(pid));
        }
    }
    // The first dirs' fds were closed long ago.
    for i in [0, 1, 2] {
        let (from, to) = (format!("new/n{i}"), format!("new/moved{i}"));
        if let Err(e) = fs::rename(merged.join(&from), merged.join(&to)) {
            errors.push(format!("rename {from} {to}: {e}"));
        }
        if let Err(e) = fs::write(merged.join(format!("{to}/sub/g")), b"g") {
            errors.push(format!("write {to}/sub/g: {e}"));
        }
    }
    // Removed and made again (the new dir may get the old inode number).
    for i in [0, 1] {
        let m = merged.join(format!("m{i}"));
        let r = fs::remove_dir_all(&m).and_then(|_| fs::create_dir(&m));
        match r.map(|_| ls(&m)) {
            Ok(v) if v.is_empty() => {}
            other => errors.push(format!("m{i} removed and made again: {other:?}")),
        }
    }
    for i in 3..N {
        match ls(&merged.join(format!("new/n{i}/sub")))[..] {
            [ref f] if f == "f" => {}
            ref other => errors.push(format!("ls new/n{i}/sub: {other:?}")),
        }
    }
    peak = peak.max(fd_count(pid));
    let log = d.log();
    let st = d.stop();
    assert!(errors.is_empty(), "{errors:#?}\ndaemon log:\n{log}");
    assert!(peak < 256, "daemon fds peaked at {peak}");
    for i in [0, 1, 2] {
        assert_eq!(ls(&upper.join(format!("new/moved{i}/sub"))), ["f", "g"]);
        assert!(!upper.join(format!("new/n{i}")).exists());
    }
    assert_clean_exit(st, &log, "after unmount");
}

/// A removed dir whose fd the server had closed (beyond its fd budget) can
/// still be stat'ed and listed by a process inside it, as on the kernel:
/// nlink 0, no entries.
#[test]
fn a_removed_dir_stays_usable_from_inside_after_its_fd_was_closed() {
    if only_for_ours() {
        return;
    }
    let Some(fx) = Fixture::new() else { return };
    let l = fx.lower(0);
    l.file("keep", b"x");
    let merged = fx.merged();
    let mut d = Wrapped::under_nofile_256(&fx, &l.root.display().to_string());
    let pid = d.pid();
    // The serving threads' fds come shortly after the mount.
    let baseline = settled_fd_count(pid);
    let victim = merged.join("victim");
    fs::create_dir(&victim).unwrap();
    let inside = File::open(&victim).unwrap();
    // Enough dirs for the server to close the victim's fd.
    for i in 0..400 {
        fs::create_dir_all(merged.join(format!("other/o{i}"))).unwrap();
    }
    fs::remove_dir(&victim).unwrap();
    let stat = inside.metadata().map(|m| m.nlink());
    let listing = fs::read_dir(format!("/proc/self/fd/{}", inside.as_raw_fd()))
        .and_then(|r| r.collect::<io::Result<Vec<_>>>())
        .map(|v| v.len());
    drop(inside);
    // Its fd goes once the kernel forgets it.
    let _ = fs::remove_dir_all(merged.join("other"));
    let after = fds_once_forgotten(pid, baseline);
    let log = d.log();
    let st = d.stop();
    assert_eq!(
        (
            stat.map_err(|e| e.to_string()),
            listing.map_err(|e| e.to_string())
        ),
        (Ok(0), Ok(0)),
        "(nlink, entries) of the removed dir"
    );
    assert!(
        after <= baseline + 2,
        "daemon fds: {baseline} after mounting, {after} once the kernel forgot everything"
    );
    assert_clean_exit(st, &log, "after unmount");
}

/// Work through open fds of a dir (and of its subdir) while another thread
/// keeps renaming it, with a dir fd budget of 1 so that its fd is closed
/// and reopened all the time: no errors, as on the kernel. A reopen that
/// started at the dir's old place must follow it to the new one.
#[test]
fn a_dir_renamed_again_and_again_stays_usable_through_open_fds() {
    if only_for_ours() {
        return;
    }
    let Some(fx) = Fixture::new() else { return };
    let l = fx.lower(0);
    let merged = fx.merged();
    let lowers = l.root.display().to_string();
    let mut d = Wrapped::over_fixture(&["env", "UNIONFS_DIR_FDS=1"], &fx, &lowers);
    fs::create_dir_all(merged.join("D/X/sub")).unwrap();
    fs::create_dir_all(merged.join("E")).unwrap();
    for i in 0..20 {
        fs::create_dir_all(merged.join(format!("other/o{i}"))).unwrap();
    }
    let x = File::open(merged.join("D/X")).unwrap();
    let sub = File::open(merged.join("D/X/sub")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let renamer = {
        let (m, stop) = (merged.clone(), stop.clone());
        thread::spawn(move || {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for (a, b) in [("D/X", "D/Y"), ("D/Y", "E/Z"), ("E/Z", "D/X")] {
                    if let Err(e) = fs::rename(m.join(a), m.join(b)) {
                        errors.push(format!("rename {a} {b}: {e}"));
                    }
                }
            }
            errors
        })
    };
    let lister = {
        let (m, stop) = (merged.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for i in 0..20 {
                    let _ = fs::read_dir(m.join(format!("other/o{i}"))).map(|r| r.count());
                }
            }
        })
    };
    let mut errors = BTreeMap::new();
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(3) {
        i += 1;
        for (f, tag) in [(&x, "X"), (&sub, "X/sub")] {
            let at = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
            let n = at.join(format!("n{i}"));
            let results = [
                ("mkdir", fs::create_dir(&n)),
                ("rmdir", fs::remove_dir(&n)),
                ("list", fs::read_dir(&at).map(drop)),
                ("fstat", f.metadata().map(drop)),
            ];
            for (op, r) in results {
                if let Err(e) = r {
                    *errors.entry(format!("{tag} {op}: {e}")).or_insert(0) += 1;
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let rename_errors = renamer.join().unwrap();
    lister.join().unwrap();
    drop((x, sub));
    let log = d.log();
    let st = d.stop();
    assert!(
        errors.is_empty() && rename_errors.is_empty(),
        "{i} rounds; errors through the fds: {errors:?}; renames: {rename_errors:?}"
    );
    assert_clean_exit(st, &log, "after unmount");
}

// ---------------------------------------------------------------------------
// Dead server
// ---------------------------------------------------------------------------

/// SIGKILLs our (not yet reaped) daemon on drop unless disarmed.
struct KillOnDrop(Option<u32>);

impl KillOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = sys::kill(pid, libc::SIGKILL);
        }
    }
}

/// Waits until every thread of `pid` is in the stopped state (`T`).
fn wait_all_threads_stopped(pid: u32) {
    let start = Instant::now();
    loop {
        let all = fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.filter_map(|e| e.ok()).all(|e| {
                    fs::read_to_string(e.path().join("stat"))
                        .ok()
                        .and_then(|st| {
                            st.rsplit_once(')')
                                .map(|(_, rest)| rest.trim_start().starts_with('T'))
                        })
                        .unwrap_or(false)
                })
            })
            .unwrap_or(false);
        if all {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the server did not stop within 5 s of SIGSTOP"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn killed_server_gives_enotconn_and_restarts_on_the_same_dirs() {
    if only_for_ours() {
        return;
    }
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("low", b"lower").file("d/x", b"x");
    let mut m = fx.mount();
    let pid = m.pid().unwrap();
    let mut f = File::create(m.p("a")).unwrap();
    f.write_all(b"durable").unwrap();
    f.sync_all().unwrap();
    let held = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("a"))
        .unwrap();
    // A caller blocked inside the server when it dies.
    sys::kill(pid, libc::SIGSTOP).unwrap();
    // Never leave a stopped server behind (a stopped FUSE server can block
    // unmounts): if anything below panics before the kill, kill it.
    let guard = KillOnDrop(Some(pid));
    wait_all_threads_stopped(pid);
    let (tx, rx) = mpsc::channel();
    let p = m.p("never-looked-up");
    thread::spawn(move || {
        let _ = tx.send(fs::metadata(&p).map(drop));
    });
    thread::sleep(Duration::from_millis(300));
    assert!(
        rx.try_recv().is_err(),
        "lookup did not wait for the stopped server"
    );
    sys::kill(pid, libc::SIGKILL).unwrap();
    guard.disarm();
    let blocked = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a caller blocked in the server hangs after kill -9");
    // The kernel aborts requests in flight with ECONNABORTED.
    let e = blocked.expect_err("lookup on a dead server succeeded");
    assert!(
        matches!(
            e.raw_os_error(),
            Some(libc::ENOTCONN) | Some(libc::ECONNABORTED)
        ),
        "blocked lookup after kill -9: {e}"
    );
    // New calls fail fast with ENOTCONN.
    let t = Instant::now();
    assert_errno(fs::metadata(m.p("low2")), libc::ENOTCONN, "stat");
    assert_errno(File::open(m.p("low")), libc::ENOTCONN, "open");
    assert_errno(fs::read_dir(m.p("d")), libc::ENOTCONN, "readdir");
    assert_errno(fs::create_dir(m.p("n")), libc::ENOTCONN, "mkdir");
    assert_errno(File::create(m.p("nf")), libc::ENOTCONN, "create");
    // Ops on a file opened before the crash: no hang, no error but ENOTCONN
    // (with FUSE passthrough they may still reach the upper file directly).
    // With the writeback cache the write lands in the page cache and the
    // fsync fails (the data is lost, as on any filesystem whose fsync fails).
    let mut buf = [0u8; 7];
    let wrote = held.write_all_at(b"x", 100);
    let synced = held.sync_all();
    let kept = wrote.is_ok() && synced.is_ok();
    for (what, r) in [
        (
            "pwrite",
            wrote
                .as_ref()
                .map(drop)
                .map_err(|e| io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(0))),
        ),
        ("fsync", synced),
        ("pread", held.read_exact_at(&mut buf, 0)),
    ] {
        if let Err(e) = r {
            assert!(is_enotconn(&e), "{what} on an open file after kill -9: {e}");
        }
    }
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "calls were slow to fail"
    );
    drop(held);
    drop(f);
    // umount -l, then a restart on the same dirs works.
    run_ok(Command::new("umount").arg("-l").arg(m.p("")));
    let st = m.forget_and_wait(Duration::from_secs(5));
    assert!(st.is_some_and(|s| !s.success()), "status {st:?}");
    drop(m);
    let mut m = fx.mount();
    let durable = b"durable".to_vec();
    let mut with_x = durable.clone();
    with_x.resize(100, 0);
    with_x.push(b'x');
    let got = fs::read(m.p("a")).unwrap();
    // A write whose fsync failed may or may not have reached the upper
    // (a passthrough write does; one in the writeback cache does not).
    let may = match (wrote.is_ok(), kept) {
        (_, true) => vec![with_x],
        (true, false) => vec![durable, with_x],
        (false, _) => vec![durable],
    };
    assert!(may.contains(&got), "after the restart: {got:?}");
    assert_eq!(read(&m.p("low")), "lower");
    append(&m.p("low"), b"+");
    m.remount();
    assert_eq!(read(&m.p("low")), "lower+");
    assert_eq!(ls(&fx.work().join("work")), Vec::<String>::new());
}
