//! Callers of a dead server get ENOTCONN, and a new server starts on the
//! same dirs.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::*;

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
