//! Crash consistency: the server is SIGKILLed at random points during
//! copy-ups, fsynced writes, renames and dir churn; after a remount the upper
//! is consistent (no half copy, no lost fsynced data, no temp name).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::*;

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
    let mount_ours = |up: &Path, wk: &Path| {
        Mounted::mount(
            Impl::Ours,
            std::slice::from_ref(&lower.root),
            Some(up),
            Some(wk),
            &merged,
        )
    };
    for k in 0..points as usize {
        let up = fx.dir(&format!("pt{k}/upper"));
        let wk = fx.dir(&format!("pt{k}/work"));
        let kw = fx.dir(&format!("pt{k}/kwork"));
        let mut m = mount_ours(&up, &wk);
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
        let mut m = mount_ours(&up, &wk);
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
