//! Our server still running a few seconds after an unmount began.
//!
//! Usually another mount namespace holds a copy of the mount: one made by
//! any process on the machine (rootless podman's pause process, a
//! container, `unshare -m`, unionfs-run) while the case's mount existed.
//! `/` is a private mount here, so our unmount does not reach that copy,
//! the FUSE connection stays up and the server rightly keeps serving it.
//! Such a server is stopped with SIGTERM (it exits 0) and the holders are
//! named on stderr; that is no divergence. Otherwise (a server that does
//! not end with its only mount) its threads' names, states, wait channels
//! and kernel stacks are read from /proc for the report.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
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
    /// Starts watching server `pid` serving the mount at `merged`; call
    /// just before unmounting.
    pub fn watch(pid: u32, merged: &Path) -> ExitProbe {
        // The FUSE superblock's device, as mountinfo's "major:minor".
        let dev = fs::symlink_metadata(merged).map(|m| {
            let d = m.dev();
            format!("{}:{}", libc::major(d), libc::minor(d))
        });
        let (done, rx) = mpsc::channel::<()>();
        let thread = thread::spawn(move || match rx.recv_timeout(AFTER) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let dev = dev.ok()?;
                let holders = held_elsewhere(&dev);
                if !holders.is_empty() && !mounted_at("self", &dev) {
                    eprintln!(
                        "[differential] server {pid} outlived its unmount: mount {dev} is still \
                         held in another mount namespace by {}; stopped with SIGTERM",
                        holders.join(", ")
                    );
                    let _ = crate::common::sys::kill(pid, libc::SIGTERM);
                    return None;
                }
                threads_of(pid)
            }
            _ => None,
        });
        ExitProbe { done, thread }
    }

    /// The threads read, if the unmount and exit took longer than `AFTER`
    /// and no other namespace explains it.
    pub fn finish(self) -> Option<String> {
        drop(self.done);
        self.thread.join().ok().flatten()
    }
}

/// Whether process `proc` (a pid, or "self") sees a FUSE mount of `dev`.
fn mounted_at(proc: &str, dev: &str) -> bool {
    fs::read_to_string(format!("/proc/{proc}/mountinfo")).is_ok_and(|mi| {
        mi.lines().any(|l| {
            let mut f = l.split(' ');
            let fstype = l.split(" - ").nth(1).unwrap_or("");
            f.nth(2) == Some(dev) && fstype.starts_with("fuse")
        })
    })
}

/// The processes ("pid comm") in other mount namespaces that see `dev`.
fn held_elsewhere(dev: &str) -> Vec<String> {
    let ours = fs::read_link("/proc/self/ns/mnt").ok();
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let ns = fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
            if ns.is_none() || ns == ours || !mounted_at(&pid, dev) {
                return None;
            }
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            Some(format!("{pid} {}", comm.trim()))
        })
        .collect()
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
