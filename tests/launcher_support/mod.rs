//! Helpers shared by the `unionfs-run` test crates (tests/launcher*.rs):
//! the tiny image made from the host's own programs, a test's dirs, the
//! runs as root and as uid [`USER`], and their skip-or-fail rule.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, Lines};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

pub const RUN: &str = env!("CARGO_BIN_EXE_unionfs-run");
pub const FUSE: &str = env!("CARGO_BIN_EXE_unionfs-fuse");

/// The uid and gid the rootless test runs as.
pub const USER: u32 = 1000;

pub fn skip_or_fail(reason: &str) -> bool {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("launcher test cannot run under CI=true: {reason}");
    }
    eprintln!("skipping launcher test: {reason}");
    false
}

/// Whether the launcher can be run as root here.
pub fn environment_ok() -> bool {
    let root = fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root {
        return skip_or_fail("not running as root");
    }
    if !Path::new("/dev/fuse").exists() {
        return skip_or_fail("no /dev/fuse");
    }
    true
}

/// A fresh directory, removed (with everything in it) on drop.
pub struct TestDir(pub PathBuf);

impl TestDir {
    pub fn new() -> TestDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "unionfs-run-test.{}.{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let p = std::env::temp_dir().join(name);
        let _ = fs::remove_dir_all(&p);
        fs::create_dir(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        TestDir(p)
    }

    pub fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.0.join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Shared libraries of `bin`, from ldd's output.
pub fn libraries(bin: &str) -> Vec<PathBuf> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .unwrap_or_else(|e| panic!("ldd {bin}: {e} (libc-bin is needed to build the test image)"));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}

pub fn copy_in(root: &Path, host: &Path) {
    let dest = root.join(host.strip_prefix("/").unwrap());
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    fs::copy(host, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", host.display()));
}

/// Copies the host's `bin` and the shared libraries it needs into `root`.
pub fn copy_program(root: &Path, bin: &str) {
    copy_in(root, Path::new(bin));
    for lib in libraries(bin) {
        copy_in(root, &lib);
    }
}

/// The image: sh, cat and ls with their libraries, /etc/hello, and the
/// /proc /dev /sys /tmp dirs an image has.
pub fn build_image(root: &Path) {
    for bin in ["/bin/sh", "/bin/cat", "/bin/ls"] {
        copy_program(root, bin);
    }
    for dir in ["etc", "proc", "dev", "sys", "tmp"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(root.join("etc/hello"), "hi\n").unwrap();
}

/// The launcher's arguments `ARGS -- /bin/sh -c SCRIPT`.
pub fn sh_args<'a>(args: &[&'a OsStr], script: &'a str) -> Vec<&'a OsStr> {
    let mut v = args.to_vec();
    v.extend(["--", "/bin/sh", "-c", script].map(OsStr::new));
    v
}

/// A test's dirs: `image` (lower), `upper`, and `tmp` (the launcher's
/// TMPDIR, where its scratch dir and a throwaway upper go).
pub struct Setup {
    pub dir: TestDir,
    pub image: PathBuf,
    pub upper: PathBuf,
    pub tmp: PathBuf,
}

impl Setup {
    pub fn new() -> Setup {
        let dir = TestDir::new();
        let image = dir.mkdir("image");
        build_image(&image);
        let upper = dir.mkdir("upper");
        let tmp = dir.mkdir("tmp");
        Setup {
            dir,
            image,
            upper,
            tmp,
        }
    }

    pub fn command(&self, args: &[&OsStr]) -> Command {
        let mut cmd = Command::new(RUN);
        cmd.args(args)
            .env("TMPDIR", &self.tmp)
            .env_remove("RUST_LOG");
        cmd
    }

    pub fn run(&self, args: &[&OsStr]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{RUN}: {e}"))
    }

    /// Runs `sh -c SCRIPT` in the union of the image and the upper.
    pub fn sh(&self, script: &str) -> Output {
        self.run(&sh_args(
            &[self.image.as_os_str(), self.upper.as_os_str()],
            script,
        ))
    }

    /// The launcher's TMPDIR is empty again: scratch and throwaway removed.
    pub fn assert_tmp_empty(&self) {
        let left: Vec<_> = fs::read_dir(&self.tmp)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}

/// Starts `cmd` with stdin and stdout piped and waits for the `ready` line
/// it prints first; returns the child and the rest of its stdout.
#[track_caller]
pub fn start_ready(cmd: &mut Command) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("ready"));
    (child, lines)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn describe(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Makes /dev/fuse usable by everyone for as long as it lives, then puts
/// its mode back (this VM ships it 0600).
pub struct FuseDeviceOpen {
    mode: u32,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl FuseDeviceOpen {
    pub fn new() -> FuseDeviceOpen {
        static SERIAL: Mutex<()> = Mutex::new(());
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let mode = fs::metadata("/dev/fuse").unwrap().permissions().mode() & 0o7777;
        fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o666)).unwrap();
        FuseDeviceOpen {
            mode,
            _serial: serial,
        }
    }
}

impl Drop for FuseDeviceOpen {
    fn drop(&mut self) {
        let _ = fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(self.mode));
    }
}

/// For the rootless tests: a setup and a world-readable `bin` dir holding a
/// copy of unionfs-run (the user must reach the binaries), or None when the
/// test is skipped (no root, /dev/fuse or setpriv).
pub fn rootless_setup() -> Option<(Setup, PathBuf)> {
    if !environment_ok() {
        return None;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        skip_or_fail("no setpriv (util-linux)");
        return None;
    }
    let s = Setup::new();
    let bin = s.dir.mkdir("bin");
    fs::copy(RUN, bin.join("unionfs-run")).unwrap();
    Some((s, bin))
}

/// `unionfs-run` from `bin` as uid and gid [`USER`] without supplementary
/// groups, with TMPDIR `tmp` and stdin from /dev/null.
pub fn rootless_run(bin: &Path, tmp: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={USER}"))
        .arg(format!("--regid={USER}"))
        .arg("--clear-groups")
        .arg(bin.join("unionfs-run"))
        .env("TMPDIR", tmp)
        .stdin(Stdio::null());
    cmd
}

/// Whether `uid` gets a subordinate range (then the map is not single).
pub fn has_subordinate_range(uid: u32) -> bool {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
    });
    let listed = |file: &str| {
        fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .any(|l| {
                let who = l.split(':').next().unwrap_or("");
                who == uid.to_string() || Some(who) == name.as_deref()
            })
    };
    let tool = |t: &str| {
        ["/usr/bin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(t).exists())
    };
    listed("/etc/subuid") && listed("/etc/subgid") && tool("newuidmap") && tool("newgidmap")
}
