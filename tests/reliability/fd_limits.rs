//! A low RLIMIT_NOFILE: the server stays up under EMFILE, does not leak fds,
//! and handles more lower and upper dirs than it may hold fds for (closing
//! and reopening dir fds), also for removed and renamed dirs kept open.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::*;

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

    /// Stops the daemon and checks the run: no caller errors, fds stayed
    /// below the limit of 256, a clean exit.
    #[track_caller]
    fn finish_under_256(&mut self, errors: &[String], peak: usize) {
        let log = self.log();
        let st = self.stop();
        assert!(errors.is_empty(), "{errors:#?}\ndaemon log:\n{log}");
        assert!(peak < 256, "daemon fds peaked at {peak}");
        assert_clean_exit(st, &log, "after unmount");
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
    d.finish_under_256(&errors, peak);
    let up = fs::read(upper.join("d0/sub/top")).unwrap_or_default();
    assert_eq!(up, [&content(0, 50)[..], b"more"].concat());
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
    d.finish_under_256(&errors, peak);
    for i in [0, 1, 2] {
        assert_eq!(ls(&upper.join(format!("new/moved{i}/sub"))), ["f", "g"]);
        assert!(!upper.join(format!("new/n{i}")).exists());
    }
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
