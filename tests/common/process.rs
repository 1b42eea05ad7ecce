//! Processes: our binary's path and command lines, running commands (as
//! another user, expecting success), waiting with a limit, a daemon's open
//! fds, dropping the kernel's caches and numeric env switches.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::fixture::Fixture;

/// Path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_unionfs-fuse");

/// Waits up to `limit` for `child` to exit (polling every 5 ms); None if it
/// is still running then (it is left running).
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if start.elapsed() < limit => thread::sleep(Duration::from_millis(5)),
            Ok(None) => return None,
            Err(e) => panic!("waitpid: {e}"),
        }
    }
}

/// How many fds process `pid` has open (0 if it is gone).
pub fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Makes the kernel drop its cached dentries and inodes, so that it
/// forgets (and the server may close) what it looked up.
pub fn drop_caches() {
    let _ = fs::write("/proc/sys/vm/drop_caches", "2");
}

/// The number in env var `name`, or `default` when unset or not a number.
pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A command for our binary with stdin from /dev/null and stdout and stderr
/// piped (for runs expected to end by themselves, e.g. on bad input).
pub fn bin_piped() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Our binary over lower 0 and the upper, without -f: it daemonises and
/// exits once the mount is ready.
pub fn daemon_cmd(fx: &Fixture) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg(fx.lower(0).root)
        .arg(fx.upper().root)
        .arg(fx.merged())
        .arg("-o")
        .arg(format!("workdir={}", fx.work().display()));
    cmd
}

/// Runs `sh -c script` as uid/gid via setpriv, in `cwd`.
pub fn run_as(uid: u32, gid: u32, cwd: &Path, script: &str) -> Output {
    Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .args(["sh", "-c", script])
        .current_dir(cwd)
        .env("LC_ALL", "C")
        .output()
        .expect("run setpriv")
}

/// Runs a command, panicking with its output unless it succeeds.
#[track_caller]
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
