//! Running a test rootless, shared by the crates that do (differential
//! rootless, stress, podman): the two test users that .ci/run makes, and a
//! way to run a program as one of them with a usable /dev/fuse.
//!
//! The host's /dev/fuse stays as it is (mode 0600): each run starts, as
//! root, a private mount namespace where a `0666` copy of the device node
//! is bound over /dev/fuse, then drops to the user with setpriv. Two users:
//! * `unionfs-one`, without a subordinate range: a user namespace can map
//!   only `0 U 1`;
//! * `unionfs-sub`, with `100000:65536` in /etc/subuid and /etc/subgid:
//!   `0 U 1` plus `1 S 65535` (through newuidmap), as rootless podman has.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{self, environment_ok, Impl, TempDir};

/// The test user with a subordinate id range.
pub const SUB_USER: &str = "unionfs-sub";
/// The test user without one.
pub const ONE_USER: &str = "unionfs-one";
/// Set in the environment of a test binary re-run inside a namespace.
pub const INNER: &str = "UNIONFS_ROOTLESS_INNER";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Map {
    /// `0 U 1`.
    Single,
    /// `0 U 1` and `1 S 65535`.
    Range,
}

impl Map {
    pub fn name(self) -> &'static str {
        match self {
            Map::Single => "single",
            Map::Range => "range",
        }
    }

    pub fn user(self) -> &'static str {
        match self {
            Map::Single => ONE_USER,
            Map::Range => SUB_USER,
        }
    }
}

pub fn skip_or_fail(reason: &str) -> bool {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("rootless test cannot run under CI=true: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
    false
}

/// The uid of `user` from /etc/passwd.
pub fn uid_of(user: &str) -> Option<u32> {
    fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[0] == user).then(|| f[2].parse().ok())?
        })
}

fn has_range(user: &str) -> bool {
    ["/etc/subuid", "/etc/subgid"].iter().all(|f| {
        fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(':').next() == Some(user))
    })
}

pub fn tool(name: &str) -> bool {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .any(|d| Path::new(d).join(name).exists())
}

/// The uid of the user a map needs, or None (after skip_or_fail) when this
/// machine lacks something.
pub fn user_for(map: Map) -> Option<u32> {
    if !environment_ok(Impl::Kernel) || !environment_ok(Impl::Ours) {
        return None;
    }
    let user = map.user();
    let mut missing: Vec<String> = ["setpriv", "unshare", "mount"]
        .iter()
        .filter(|t| !tool(t))
        .map(|t| format!("no {t}"))
        .collect();
    let uid = uid_of(user);
    if uid.is_none() {
        missing.push(format!("no user {user} (made by .ci/run)"));
    }
    match map {
        Map::Range if !has_range(user) || !tool("newuidmap") => missing.push(format!(
            "{user} needs /etc/subuid and subgid ranges and uidmap"
        )),
        Map::Single if has_range(user) => {
            missing.push(format!("{user} must have no range in /etc/subuid"))
        }
        _ => {}
    }
    if missing.is_empty() {
        uid
    } else {
        skip_or_fail(&missing.join("; "));
        None
    }
}

/// A `0666` FUSE device node in a temp dir, to bind over /dev/fuse in a
/// private mount namespace. Removed on drop.
pub struct FuseNode {
    dir: TempDir,
}

impl FuseNode {
    pub fn new() -> FuseNode {
        let dir = TempDir::new("rootless-dev");
        let node = dir.path().join("fuse");
        let st = fs::metadata("/dev/fuse").expect("stat /dev/fuse");
        common::sys::mknod(
            &node,
            libc::S_IFCHR | 0o666,
            libc::major(st.rdev()),
            libc::minor(st.rdev()),
        )
        .expect("mknod a fuse node");
        fs::set_permissions(&node, fs::Permissions::from_mode(0o666)).expect("chmod fuse node");
        FuseNode { dir }
    }

    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("fuse")
    }
}

impl Default for FuseNode {
    fn default() -> Self {
        FuseNode::new()
    }
}

/// `unshare` (as root) with a private mount namespace, plus a new pid
/// namespace when `pid_ns` (every process the run leaves is killed when
/// its first one exits), where `node` is bound over /dev/fuse and the
/// shell commands `setup` run (as root, in that namespace), then setpriv
/// to `uid`; the caller appends the program and its arguments.
pub fn as_user_with_fuse(node: &Path, uid: u32, pid_ns: bool, setup: &[&str]) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private"]);
    if pid_ns {
        cmd.args(["--pid", "--fork", "--mount-proc"]);
    }
    let steps: String = setup.iter().map(|c| format!("{c} && ")).collect();
    cmd.args(["sh", "-c"])
        .arg(format!(
            "mount --bind \"$1\" /dev/fuse && shift && {steps}exec \"$@\""
        ))
        .arg("sh")
        .arg(node)
        .args([
            "setpriv",
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
        ])
        .args(["--init-groups", "--"]);
    cmd
}

/// Runs test `name` of this binary again, as `map`'s user inside a new user
/// and mount namespace where it is root; false if it was skipped. Panics if
/// it failed.
pub fn run_inside(name: &str, map: Map) -> bool {
    let Some(uid) = user_for(map) else {
        return false;
    };
    let node = FuseNode::new();
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = as_user_with_fuse(&node.path(), uid, false, &[]);
    cmd.args(["unshare", "--user", "--mount"]);
    if map == Map::Range {
        cmd.arg("--map-auto");
    }
    cmd.args(["--map-root-user", "--"])
        .arg(&exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(INNER, map.name())
        .env_remove("UNIONFS_TEST_TMPDIR")
        .stdin(Stdio::null());
    let out = cmd.output().expect("run unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{name} in a user namespace ({} map) failed ({}):\n{stdout}\n{stderr}",
        map.name(),
        out.status
    );
    true
}

/// Inside the namespace: which map this run has, checked against
/// /proc/self/uid_map. None outside.
pub fn inside() -> Option<Map> {
    let map = match std::env::var(INNER).ok()?.as_str() {
        "single" => Map::Single,
        "range" => Map::Range,
        other => panic!("{INNER}={other:?}"),
    };
    let lines = fs::read_to_string("/proc/self/uid_map").expect("uid_map");
    let n = lines.lines().count();
    assert_eq!(
        n,
        if map == Map::Single { 1 } else { 2 },
        "uid_map: {lines}"
    );
    Some(map)
}
