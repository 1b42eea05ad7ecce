//! Clean-exit checks: a server that ends did so by itself with status 0 and
//! without a panic, a run that should mount nothing left no mount, and a
//! run expected to end by itself is stopped after a limit.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use super::mountinfo::{mount_type, mounts};
use super::process::wait_timeout;
use super::sys;

/// Asserts that the server exited (`st` is Some: within the caller's
/// limit) with status 0, and that its log shows no panic.
#[track_caller]
pub fn assert_clean_exit(st: Option<ExitStatus>, log: &str, what: &str) {
    assert!(!log.contains("panic"), "{what}: daemon panicked:\n{log}");
    assert!(st.is_some(), "{what}: daemon did not exit:\n{log}");
    assert!(
        st.is_some_and(|s| s.success()),
        "{what}: daemon exit {st:?}:\n{log}"
    );
}

/// Detaches `mp` if it is still a mount point and asserts that it was not.
#[track_caller]
pub fn assert_unmounted(mp: &Path, what: &str) {
    let left = mount_type(mp);
    if left.is_some() {
        let _ = sys::umount2(mp, libc::MNT_DETACH);
    }
    assert_eq!(left, None, "{what}: {} is still mounted", mp.display());
}

/// Detaches every FUSE mount below `root` (lazily) and returns them: a run
/// that should mount nothing must get an empty list. Other mounts (a test's
/// own tmpfs) stay.
pub fn detach_fuse_mounts_below(root: &Path) -> Vec<PathBuf> {
    let left: Vec<PathBuf> = mounts()
        .into_iter()
        .filter(|(mp, ty, _)| mp.starts_with(root) && mp != root && ty.starts_with("fuse"))
        .map(|(mp, _, _)| mp)
        .collect();
    for mp in left.iter().rev() {
        let _ = sys::umount2(mp, libc::MNT_DETACH);
    }
    left
}

/// How a bounded run ended.
#[derive(Debug)]
pub struct Ended {
    /// None: still running at the limit, then killed.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` with stdin from /dev/null and stdout and stderr piped, for at
/// most `limit`; a process still running then (it mounted, or hangs) is
/// killed. For runs expected to end by themselves, e.g. on bad input; the
/// caller detaches what it may have mounted.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Ended {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let status = wait_timeout(&mut child, limit);
    if status.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("wait for child");
    Ended {
        status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
