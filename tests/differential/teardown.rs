//! What our server was doing when it did not exit after an unmount: its
//! threads' names, states, wait channels and kernel stacks, read from
//! /proc a few seconds after the unmount began, for the report of an
//! "unionfs-fuse still running after unmount" divergence.

use std::fmt::Write as _;
use std::fs;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// How long after the unmount began the threads are read.
const AFTER: Duration = Duration::from_secs(5);

pub struct ExitProbe {
    done: mpsc::Sender<()>,
    thread: thread::JoinHandle<Option<String>>,
}

impl ExitProbe {
    /// Starts watching server `pid`; call just before unmounting.
    pub fn watch(pid: u32) -> ExitProbe {
        let (done, rx) = mpsc::channel::<()>();
        let thread = thread::spawn(move || match rx.recv_timeout(AFTER) {
            Err(mpsc::RecvTimeoutError::Timeout) => threads_of(pid),
            _ => None,
        });
        ExitProbe { done, thread }
    }

    /// The threads read, if the unmount and exit took longer than `AFTER`.
    pub fn finish(self) -> Option<String> {
        drop(self.done);
        self.thread.join().ok().flatten()
    }
}

fn threads_of(pid: u32) -> Option<String> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut out = String::new();
    let read = |p: String| fs::read_to_string(p).unwrap_or_default();
    for t in tasks.flatten() {
        let dir = t.path().display().to_string();
        let state = read(format!("{dir}/status"))
            .lines()
            .find(|l| l.starts_with("State:"))
            .unwrap_or("")
            .to_string();
        let _ = writeln!(
            out,
            "  task {} {:?} {state} wchan={}",
            t.file_name().to_string_lossy(),
            read(format!("{dir}/comm")).trim(),
            read(format!("{dir}/wchan")),
        );
        for frame in read(format!("{dir}/stack")).lines().take(12) {
            let _ = writeln!(out, "      {frame}");
        }
    }
    Some(out)
}
