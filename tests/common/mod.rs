//! Integration-test harness for unionfs-fuse.
//!
//! * [`Fixture`]: a fresh temp dir holding lower layers, an upper, a workdir and
//!   mount points; [`Layer`] builds layer contents (files with mode/owner/times,
//!   dirs, symlinks, hard links, fifos, devices, xattrs, whiteouts, opaque dirs).
//! * [`Mounted`]: a union mounted either by our binary (child with `-f`) or by
//!   kernel overlayfs (`mount -t overlay`); `Drop` always unmounts (lazily if
//!   busy) and reaps our child. `UNIONFS_TEST_IMPL=kernel` switches every
//!   per-rule test to kernel overlayfs, which is how the expectations are
//!   validated. `UNIONFS_TEST_OURS_OPTS=OPTS` adds `-o OPTS` to every mount
//!   of ours (to run a suite in another mode, e.g. `writeback`).
//! * Snapshots ([`tree`]) and raw upper-dir inspection (whiteouts, opaque).
//!
//! Without root or /dev/fuse the tests return early with a reason, except
//! under `CI=true`, where they fail.

#![allow(dead_code, unused_imports)]

pub mod ext4;
pub mod sys;
pub mod tree;

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use sys::Ts;
pub use tree::{assert_same, snapshot, SnapOpts, Tree};

/// Path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_unionfs-fuse");

/// Which implementation a [`Mounted`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    /// Our FUSE binary.
    Ours,
    /// Kernel overlayfs, the reference.
    Kernel,
}

impl Impl {
    /// The other implementation (for cross-mount tests).
    pub fn other(self) -> Impl {
        match self {
            Impl::Ours => Impl::Kernel,
            Impl::Kernel => Impl::Ours,
        }
    }
}

/// The implementation per-rule tests run against: `UNIONFS_TEST_IMPL=kernel`
/// or `ours` (default).
pub fn impl_under_test() -> Impl {
    match std::env::var("UNIONFS_TEST_IMPL").as_deref() {
        Ok("kernel") => Impl::Kernel,
        Ok("ours") | Ok("") | Err(_) => Impl::Ours,
        Ok(other) => panic!("UNIONFS_TEST_IMPL={other:?}: expected `kernel` or `ours`"),
    }
}

fn is_root() -> bool {
    // /proc/self is owned by the effective uid of the reading process.
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Checks that mounts can be made. Returns false (after printing why) when the
/// test should be skipped; panics instead when `CI=true`.
pub fn environment_ok(kind: Impl) -> bool {
    let mut problems = Vec::new();
    if !is_root() {
        problems.push("not running as root (mounting needs CAP_SYS_ADMIN)".to_string());
    }
    if kind == Impl::Ours && !Path::new("/dev/fuse").exists() {
        problems.push("/dev/fuse is missing".to_string());
    }
    if problems.is_empty() {
        return true;
    }
    let msg = problems.join("; ");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("unionfs-fuse integration tests cannot run: {msg}. CI=true, so this is a failure, not a skip.");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

/// Returns true (after printing why) when a test that only makes sense for our
/// binary is run with UNIONFS_TEST_IMPL=kernel.
pub fn only_for_ours() -> bool {
    if impl_under_test() == Impl::Kernel {
        eprintln!("SKIPPED: this test checks our binary only (UNIONFS_TEST_IMPL=kernel)");
        return true;
    }
    false
}

// ---------------------------------------------------------------------------
// Temp dirs
// ---------------------------------------------------------------------------

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_base() -> PathBuf {
    let base = std::env::var_os("UNIONFS_TEST_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    fs::canonicalize(&base).unwrap_or(base)
}

/// A uniquely named directory, removed (after detaching any mount below it)
/// on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let tag: String = tag
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(48)
            .collect();
        let base = temp_base();
        loop {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!(
                "unionfs-test-{tag}-{}-{n}-{nanos:x}",
                std::process::id()
            ));
            match fs::create_dir(&path) {
                Ok(()) => {
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                        .expect("chmod temp dir");
                    return TempDir { path };
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create temp dir {}: {e}", path.display()),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Never recurse into a live mount: detach anything still mounted below.
        for mp in mounts_below(&self.path) {
            eprintln!(
                "warning: {} still mounted at cleanup; detaching",
                mp.display()
            );
            let _ = sys::umount2(&mp, libc::MNT_DETACH);
        }
        if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!("warning: cannot remove {}: {e}", self.path.display());
        }
    }
}

// ---------------------------------------------------------------------------
// mountinfo
// ---------------------------------------------------------------------------

/// umount2(2), retried for half a second while the mount is busy: a child
/// that another test thread spawns holds copies of this process's fds until
/// it execs, which can pin a file under the mount that was already closed.
pub fn umount_when_idle(mp: &Path) -> io::Result<()> {
    let mut tries = 0;
    loop {
        match sys::umount2(mp, 0) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 50 => {
                tries += 1;
                thread::sleep(Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

/// Decodes the octal escapes (`\040`, `\011`, `\012`, `\134`, `\072`) of mountinfo.
fn unescape_mountinfo(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok());
            if let Some(v) = oct {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(<OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&out))
}

/// (mount point, fstype, major:minor) of every mount of this process.
pub fn mounts() -> Vec<(PathBuf, String, String)> {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    text.lines()
        .filter_map(|line| {
            let mut halves = line.splitn(2, " - ");
            let left: Vec<&str> = halves.next()?.split(' ').collect();
            let fstype = halves.next()?.split(' ').next()?.to_string();
            Some((
                unescape_mountinfo(left.get(4)?),
                fstype,
                left.get(2)?.to_string(),
            ))
        })
        .collect()
}

/// fstype of the topmost mount at exactly `path`, if any.
pub fn mount_type(path: &Path) -> Option<String> {
    mounts()
        .into_iter()
        .rev()
        .find(|(mp, _, _)| mp == path)
        .map(|(_, t, _)| t)
}

/// Mount points strictly below `dir`, deepest first.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = mounts()
        .into_iter()
        .map(|(mp, _, _)| mp)
        .filter(|mp| mp.starts_with(dir) && mp != dir)
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

// ---------------------------------------------------------------------------
// Layers
// ---------------------------------------------------------------------------

fn mkdir_p(path: &Path) {
    if path.is_dir() {
        return;
    }
    if let Some(parent) = path.parent() {
        mkdir_p(parent);
    }
    match fs::create_dir(path) {
        Ok(()) => fs::set_permissions(path, fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display())),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => panic!("mkdir {}: {e}", path.display()),
    }
}

/// A directory tree used as a layer; all methods take paths relative to it,
/// create missing parents (0755) and panic on failure.
#[derive(Clone, Debug)]
pub struct Layer {
    pub root: PathBuf,
}

impl Layer {
    pub fn new(root: PathBuf) -> Layer {
        mkdir_p(&root);
        Layer { root }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    fn parent_of(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            mkdir_p(parent);
        }
        p
    }

    /// Regular file with `content`, mode 0644.
    pub fn file(&self, rel: &str, content: &[u8]) -> &Self {
        self.file_mode(rel, content, 0o644)
    }

    /// Regular file with `content` and `mode` (permission bits, may include setuid).
    pub fn file_mode(&self, rel: &str, content: &[u8], mode: u32) -> &Self {
        let p = self.parent_of(rel);
        fs::write(&p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        self.chmod(rel, mode)
    }

    /// Sparse file of `size` bytes with `chunks` of data written at offsets.
    pub fn sparse(&self, rel: &str, size: u64, chunks: &[(u64, &[u8])]) -> &Self {
        use std::os::unix::fs::FileExt;
        let p = self.parent_of(rel);
        let f = File::create(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        for (off, data) in chunks {
            f.write_all_at(data, *off).expect("pwrite");
        }
        f.set_len(size).expect("ftruncate");
        self
    }

    /// Directory (and parents), mode 0755.
    pub fn dir(&self, rel: &str) -> &Self {
        mkdir_p(&self.path(rel));
        self
    }

    /// Directory with `mode` (may include setgid/sticky).
    pub fn dir_mode(&self, rel: &str, mode: u32) -> &Self {
        self.dir(rel).chmod(rel, mode)
    }

    pub fn symlink(&self, rel: &str, target: &str) -> &Self {
        let p = self.parent_of(rel);
        symlink(target, &p).unwrap_or_else(|e| panic!("symlink {}: {e}", p.display()));
        self
    }

    /// Hard link `new` to the existing `existing`.
    pub fn hardlink(&self, existing: &str, new: &str) -> &Self {
        let p = self.parent_of(new);
        fs::hard_link(self.path(existing), &p)
            .unwrap_or_else(|e| panic!("link {}: {e}", p.display()));
        self
    }

    pub fn fifo(&self, rel: &str) -> &Self {
        let p = self.parent_of(rel);
        sys::mknod(&p, libc::S_IFIFO | 0o644, 0, 0)
            .unwrap_or_else(|e| panic!("mkfifo {}: {e}", p.display()));
        self
    }

    pub fn chardev(&self, rel: &str, major: u32, minor: u32) -> &Self {
        let p = self.parent_of(rel);
        sys::mknod(&p, libc::S_IFCHR | 0o644, major, minor)
            .unwrap_or_else(|e| panic!("mknod c {}: {e}", p.display()));
        self
    }

    pub fn blockdev(&self, rel: &str, major: u32, minor: u32) -> &Self {
        let p = self.parent_of(rel);
        sys::mknod(&p, libc::S_IFBLK | 0o644, major, minor)
            .unwrap_or_else(|e| panic!("mknod b {}: {e}", p.display()));
        self
    }

    pub fn chmod(&self, rel: &str, mode: u32) -> &Self {
        let p = self.path(rel);
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
        self
    }

    /// lchown (does not follow symlinks).
    pub fn chown(&self, rel: &str, uid: u32, gid: u32) -> &Self {
        let p = self.path(rel);
        std::os::unix::fs::lchown(&p, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("lchown {}: {e}", p.display()));
        self
    }

    /// Sets atime and mtime without following symlinks.
    pub fn times(&self, rel: &str, atime: Ts, mtime: Ts) -> &Self {
        let p = self.path(rel);
        sys::utimensat(&p, atime, mtime, true)
            .unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
        self
    }

    pub fn xattr(&self, rel: &str, name: &str, value: &[u8]) -> &Self {
        let p = self.path(rel);
        sys::lsetxattr(&p, name, value, 0)
            .unwrap_or_else(|e| panic!("setxattr {} {name}: {e}", p.display()));
        self
    }

    /// Classic whiteout: char device 0/0 at `rel`.
    pub fn whiteout(&self, rel: &str) -> &Self {
        let p = self.parent_of(rel);
        sys::mknod(&p, libc::S_IFCHR, 0, 0)
            .unwrap_or_else(|e| panic!("mknod whiteout {}: {e}", p.display()));
        self
    }

    /// Opaque directory: creates `rel` if needed and sets trusted.overlay.opaque=y.
    pub fn opaque(&self, rel: &str) -> &Self {
        self.dir(rel).xattr(rel, "trusted.overlay.opaque", b"y")
    }

    /// xattr whiteout: zero-size file with trusted.overlay.whiteout, parent
    /// dir marked trusted.overlay.opaque=x.
    pub fn xattr_whiteout(&self, rel: &str) -> &Self {
        self.file(rel, b"")
            .xattr(rel, "trusted.overlay.whiteout", b"");
        let parent = Path::new(rel)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.xattr(&parent, "trusted.overlay.opaque", b"x")
    }
}

// ---------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------

/// A temp dir with `lower0..lowerN`, `upper`, `work` and `merged` below it.
pub struct Fixture {
    pub tmp: TempDir,
    pub kind: Impl,
}

impl Fixture {
    /// A fixture for the implementation under test, or None (skip) when the
    /// environment cannot mount (see [`environment_ok`]).
    pub fn new() -> Option<Fixture> {
        Fixture::for_impl(impl_under_test())
    }

    /// A fixture for `kind`, or None (skip) when the environment cannot mount.
    pub fn for_impl(kind: Impl) -> Option<Fixture> {
        if !environment_ok(kind) {
            return None;
        }
        let name = thread::current()
            .name()
            .map(|n| n.rsplit("::").next().unwrap_or(n).to_string())
            .unwrap_or_else(|| "test".to_string());
        Some(Fixture {
            tmp: TempDir::new(&name),
            kind,
        })
    }

    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// Lower layer number `i` (0 is the top lower, as in `lowerdir=`).
    pub fn lower(&self, i: usize) -> Layer {
        Layer::new(self.root().join(format!("lower{i}")))
    }

    pub fn upper(&self) -> Layer {
        Layer::new(self.root().join("upper"))
    }

    pub fn work(&self) -> PathBuf {
        self.dir("work")
    }

    pub fn merged(&self) -> PathBuf {
        self.dir("merged")
    }

    /// A (possibly new) directory below the fixture root.
    pub fn dir(&self, name: &str) -> PathBuf {
        let p = self.root().join(name);
        mkdir_p(&p);
        p
    }

    /// All `lowerN` dirs that exist, top first.
    pub fn lowers(&self) -> Vec<PathBuf> {
        (0..)
            .map(|i| self.root().join(format!("lower{i}")))
            .take_while(|p| p.is_dir())
            .collect()
    }

    /// Mounts the lowers, `upper` and `work` at `merged` with the
    /// implementation under test.
    pub fn mount(&self) -> Mounted {
        self.mount_with(self.kind)
    }

    /// As [`Fixture::mount`] but with an explicit implementation.
    pub fn mount_with(&self, kind: Impl) -> Mounted {
        let lowers = self.lowers();
        assert!(!lowers.is_empty(), "fixture has no lower layer");
        Mounted::mount(
            kind,
            &lowers,
            Some(&self.upper().root),
            Some(&self.work()),
            &self.merged(),
        )
    }

    /// As [`Fixture::mount`], adding `opts` to the `-o` of whichever
    /// implementation is under test.
    pub fn mount_opts(&self, opts: &str) -> Mounted {
        Mounted::mount_opts(
            self.kind,
            &self.lowers(),
            Some(&self.upper().root),
            Some(&self.work()),
            &self.merged(),
            opts,
        )
    }

    /// As [`Fixture::mount`], adding `opts` to the `-o` of our binary only
    /// (options the kernel does not know; ignored when it is under test).
    pub fn mount_ours_opts(&self, opts: &str) -> Mounted {
        Mounted::mount_ours_opts(
            self.kind,
            &self.lowers(),
            Some(&self.upper().root),
            Some(&self.work()),
            &self.merged(),
            opts,
        )
    }

    /// Read-only union of the lowers (no upper) at `merged`.
    pub fn mount_ro(&self) -> Mounted {
        let lowers = self.lowers();
        assert!(!lowers.is_empty(), "fixture has no lower layer");
        Mounted::mount(self.kind, &lowers, None, None, &self.merged())
    }
}

// ---------------------------------------------------------------------------
// Tmpfs
// ---------------------------------------------------------------------------

/// A tmpfs mounted for a test; unmounted (lazily if busy) on drop.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(at: &Path, opts: &str) -> Tmpfs {
        Tmpfs::mount_type(at, "tmpfs", opts)
    }

    /// A memory filesystem of another type (`ramfs`: no xattrs at all).
    pub fn mount_type(at: &Path, fstype: &str, opts: &str) -> Tmpfs {
        fs::create_dir_all(at).expect("mkdir tmpfs mount point");
        run_ok(
            Command::new("mount")
                .args(["-t", fstype, "-o", opts, fstype])
                .arg(at),
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if sys::umount2(&self.0, 0).is_err() {
            let _ = sys::umount2(&self.0, libc::MNT_DETACH);
        }
    }
}

// ---------------------------------------------------------------------------
// Mounted
// ---------------------------------------------------------------------------

fn watchdog_limit() -> Duration {
    Duration::from_secs(env_num("UNIONFS_TEST_TIMEOUT", 120))
}

/// Kills a hung daemon so that a stuck syscall in the test fails (ENOTCONN)
/// instead of hanging the suite.
struct Watchdog {
    stop: mpsc::Sender<()>,
    thread: thread::JoinHandle<()>,
}

impl Watchdog {
    fn start(pid: u32, merged: PathBuf) -> Watchdog {
        let (stop, rx) = mpsc::channel::<()>();
        let limit = watchdog_limit();
        let thread = thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!(
                    "watchdog: mount {} alive for more than {limit:?}; killing unionfs-fuse pid {pid}",
                    merged.display()
                );
                let _ = sys::kill(pid, libc::SIGKILL);
            }
        });
        Watchdog { stop, thread }
    }

    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// A mounted union. Unmounts (lazily if busy) and reaps our daemon on drop.
pub struct Mounted {
    pub kind: Impl,
    pub merged: PathBuf,
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    /// Extra `-o` options for kernel mounts only (e.g. `index=on`).
    pub kernel_opts: Option<String>,
    /// Extra `-o` options for our binary (ignored for the kernel).
    pub ours_opts: Option<String>,
    child: Option<Child>,
    watchdog: Option<Watchdog>,
    log: PathBuf,
    mounted: bool,
}

fn join_lowers(lowers: &[PathBuf]) -> String {
    lowers
        .iter()
        .map(|p| p.to_str().expect("utf-8 test path").to_string())
        .collect::<Vec<_>>()
        .join(":")
}

fn read_log(log: &Path) -> String {
    let s = fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = s.lines().rev().take(40).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

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

impl Mounted {
    /// Mounts `lowers` (top first) plus optional upper/work at `merged`.
    /// Without upper and work the union is read-only.
    pub fn mount(
        kind: Impl,
        lowers: &[PathBuf],
        upper: Option<&Path>,
        work: Option<&Path>,
        merged: &Path,
    ) -> Mounted {
        Mounted::mount_full(kind, lowers, upper, work, merged, None)
    }

    /// As [`Mounted::mount`], adding `kernel_opts` to the `-o` of a kernel
    /// mount (ignored for ours).
    pub fn mount_kernel_opts(
        kind: Impl,
        lowers: &[PathBuf],
        upper: Option<&Path>,
        work: Option<&Path>,
        merged: &Path,
        kernel_opts: &str,
    ) -> Mounted {
        Mounted::mount_full(kind, lowers, upper, work, merged, Some(kernel_opts))
    }

    /// As [`Mounted::mount`], adding `ours_opts` to the `-o` of our binary
    /// (ignored for the kernel).
    pub fn mount_ours_opts(
        kind: Impl,
        lowers: &[PathBuf],
        upper: Option<&Path>,
        work: Option<&Path>,
        merged: &Path,
        ours_opts: &str,
    ) -> Mounted {
        let mut m = Mounted::new_unmounted(kind, lowers, upper, work, merged, None);
        m.ours_opts = Some(ours_opts.to_string());
        m.do_mount();
        m
    }

    /// As [`Mounted::mount`], adding `opts` to the `-o` of whichever
    /// implementation `kind` is (both understand them).
    pub fn mount_opts(
        kind: Impl,
        lowers: &[PathBuf],
        upper: Option<&Path>,
        work: Option<&Path>,
        merged: &Path,
        opts: &str,
    ) -> Mounted {
        match kind {
            Impl::Kernel => Mounted::mount_kernel_opts(kind, lowers, upper, work, merged, opts),
            Impl::Ours => Mounted::mount_ours_opts(kind, lowers, upper, work, merged, opts),
        }
    }

    fn mount_full(
        kind: Impl,
        lowers: &[PathBuf],
        upper: Option<&Path>,
        work: Option<&Path>,
        merged: &Path,
        kernel_opts: Option<&str>,
    ) -> Mounted {
        let mut m = Mounted::new_unmounted(kind, lowers, upper, work, merged, kernel_opts);
        m.do_mount();
        m
    }

    fn new_unmounted(
        kind: Impl,
        lowers: &[PathBuf],
        upper: Option<&Path>,
        work: Option<&Path>,
        merged: &Path,
        kernel_opts: Option<&str>,
    ) -> Mounted {
        let log = merged.with_file_name(format!(
            "{}.log",
            merged.file_name().unwrap_or_default().to_string_lossy()
        ));
        Mounted {
            kind,
            merged: merged.to_path_buf(),
            lowers: lowers.to_vec(),
            upper: upper.map(Path::to_path_buf),
            work: work.map(Path::to_path_buf),
            kernel_opts: kernel_opts.map(str::to_string),
            ours_opts: None,
            child: None,
            watchdog: None,
            log,
            mounted: false,
        }
    }

    fn do_mount(&mut self) {
        assert!(!self.mounted, "already mounted");
        match self.kind {
            Impl::Kernel => self.mount_kernel(),
            Impl::Ours => self.mount_ours(),
        }
        self.mounted = true;
    }

    fn mount_kernel(&mut self) {
        let mut opts = format!("lowerdir={}", join_lowers(&self.lowers));
        if let (Some(u), Some(w)) = (&self.upper, &self.work) {
            opts += &format!(",upperdir={},workdir={}", u.display(), w.display());
        }
        if let Some(extra) = &self.kernel_opts {
            opts += ",";
            opts += extra;
        }
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&self.merged)
            .output()
            .expect("run mount(8)");
        assert!(
            out.status.success(),
            "kernel overlay mount failed ({opts}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(mount_type(&self.merged).as_deref(), Some("overlay"));
    }

    /// The argv for our binary (without the program name).
    pub fn our_args(&self) -> Vec<String> {
        let mut args = vec![join_lowers(&self.lowers)];
        if let Some(u) = &self.upper {
            args.push(u.display().to_string());
        }
        args.push(self.merged.display().to_string());
        args.push("-f".to_string());
        // An upper without a work dir is ours alone (the kernel needs one).
        match (&self.upper, &self.work) {
            (_, Some(w)) => args.extend(["-o".to_string(), format!("workdir={}", w.display())]),
            (None, None) => args.extend(["-o".to_string(), "ro".to_string()]),
            (Some(_), None) => {}
        }
        if let Some(extra) = &self.ours_opts {
            args.push("-o".to_string());
            args.push(extra.clone());
        }
        // For running a suite against another mode, e.g. `writeback`.
        if let Ok(extra) = std::env::var("UNIONFS_TEST_OURS_OPTS") {
            args.push("-o".to_string());
            args.push(extra);
        }
        args
    }

    fn mount_ours(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open daemon log");
        let mut child = Command::new(BIN)
            .args(self.our_args())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
        let start = Instant::now();
        loop {
            if mount_type(&self.merged).is_some_and(|t| t.starts_with("fuse")) {
                break;
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "unionfs-fuse exited ({st}) before mounting {}; args {:?}; output:\n{}",
                    self.merged.display(),
                    self.our_args(),
                    read_log(&self.log)
                );
            }
            if start.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "unionfs-fuse did not mount {} within 15s; output:\n{}",
                    self.merged.display(),
                    read_log(&self.log)
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
        self.watchdog = Some(Watchdog::start(child.id(), self.merged.clone()));
        self.child = Some(child);
    }

    /// PID of our daemon, if this is our mount.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Path below the merged dir.
    pub fn p(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.merged.clone()
        } else {
            self.merged.join(rel)
        }
    }

    /// Path below the upper dir (panics for a read-only union).
    pub fn up(&self, rel: &str) -> PathBuf {
        let u = self.upper.as_ref().expect("read-only union has no upper");
        if rel.is_empty() {
            u.clone()
        } else {
            u.join(rel)
        }
    }

    /// The daemon's output so far (empty for kernel mounts).
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// Unmounts and (for ours) waits for the daemon; Err describes what went
    /// wrong. Never panics.
    fn teardown(&mut self) -> Result<(), String> {
        let mut errors = Vec::new();
        if self.mounted {
            self.mounted = false;
            match umount_when_idle(&self.merged) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    errors.push("mount stayed busy; detached lazily".to_string());
                    let _ = sys::umount2(&self.merged, libc::MNT_DETACH);
                }
                Err(e) => errors.push(format!("umount {}: {e}", self.merged.display())),
            }
        }
        if let Some(w) = self.watchdog.take() {
            w.stop();
        }
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            match wait_timeout(&mut child, Duration::from_secs(10)) {
                Some(st) if st.success() => {}
                Some(st) => errors.push(format!("unionfs-fuse exited with {st} after unmount")),
                None => {
                    errors.push(format!(
                        "unionfs-fuse (pid {pid}) still running 10s after unmount"
                    ));
                    let _ = sys::kill(pid, libc::SIGTERM);
                    if wait_timeout(&mut child, Duration::from_secs(2)).is_none() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                }
            }
        }
        // A kernel mount of the same dir could still be stacked (should not happen).
        if mount_type(&self.merged).is_some() {
            errors.push(format!("{} is still a mount point", self.merged.display()));
            let _ = sys::umount2(&self.merged, libc::MNT_DETACH);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{}\ndaemon output:\n{}",
                errors.join("; "),
                self.log()
            ))
        }
    }

    /// Unmounts; panics if the unmount or the daemon's exit is not clean.
    pub fn unmount(&mut self) {
        if let Err(e) = self.teardown() {
            panic!("unmount of {:?} mount failed: {e}", self.kind);
        }
    }

    /// Unmounts and mounts the same layers again (persistence tests).
    pub fn remount(&mut self) {
        self.unmount();
        self.do_mount();
    }

    /// Marks the mount as gone (the test unmounted it by other means) and
    /// reaps the daemon, returning its exit status.
    pub fn forget_and_wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        self.mounted = false;
        if let Some(w) = self.watchdog.take() {
            w.stop();
        }
        let mut child = self.child.take()?;
        let st = wait_timeout(&mut child, limit);
        if st.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        st
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            if thread::panicking() {
                eprintln!("teardown of {:?} mount: {e}", self.kind);
            } else {
                panic!("teardown of {:?} mount: {e}", self.kind);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Random choices and env switches
// ---------------------------------------------------------------------------

/// xorshift64*: small, seedable, good enough to pick ops.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

/// `UNIONFS_SEED`, or a time-based seed (callers print it for replays).
pub fn seed() -> u64 {
    std::env::var("UNIONFS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
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

// ---------------------------------------------------------------------------
// Assertions and small helpers
// ---------------------------------------------------------------------------

/// Asserts that `r` failed with exactly `errno`.
#[track_caller]
pub fn assert_errno<T: std::fmt::Debug>(r: io::Result<T>, errno: i32, what: &str) {
    match r {
        Ok(v) => panic!(
            "{what}: expected {} but it succeeded ({v:?})",
            errno_name(errno)
        ),
        Err(e) => assert_eq!(
            e.raw_os_error(),
            Some(errno),
            "{what}: expected {} got {e}",
            errno_name(errno)
        ),
    }
}

/// Symbolic name of an errno (covers everything these tests can see).
pub fn errno_ident(e: i32) -> Option<&'static str> {
    Some(match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ENOTCONN => "ENOTCONN",
        libc::ESTALE => "ESTALE",
        _ => return None,
    })
}

/// Symbolic errno name of an I/O error: `errnoN` for an errno without a
/// name, the error's text for an error without an errno.
pub fn ename(e: &io::Error) -> String {
    let Some(n) = e.raw_os_error() else {
        return format!("{e}");
    };
    errno_ident(n).map_or_else(|| format!("errno{n}"), str::to_string)
}

/// Symbolic name of common errnos, for messages.
pub fn errno_name(e: i32) -> String {
    let n = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EACCES => "EACCES",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EROFS => "EROFS",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EWOULDBLOCK => "EWOULDBLOCK",
        libc::EBUSY => "EBUSY",
        _ => return format!("errno {e}"),
    };
    n.to_string()
}

/// lstat that panics with the path on failure.
#[track_caller]
pub fn lstat(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
}

/// True when `p` exists (without following a final symlink).
pub fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

/// Reads a file to a String, panicking with the path on failure.
#[track_caller]
pub fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Writes a file (create/truncate), panicking with the path on failure.
#[track_caller]
pub fn write(p: &Path, data: &[u8]) {
    fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()))
}

/// Appends to an existing file.
#[track_caller]
pub fn append(p: &Path, data: &[u8]) {
    let mut f = OpenOptions::new()
        .append(true)
        .open(p)
        .unwrap_or_else(|e| panic!("open {} for append: {e}", p.display()));
    f.write_all(data).expect("append");
}

/// Sorted names in a directory (via std readdir; no `.`/`..`).
#[track_caller]
pub fn ls(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", p.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

/// Raw upper inspection: is `p` a classic whiteout (char device 0/0)?
pub fn is_whiteout(p: &Path) -> bool {
    fs::symlink_metadata(p)
        .map(|m| m.file_type().is_char_device() && m.rdev() == 0)
        .unwrap_or(false)
}

/// Raw upper inspection: value of trusted.overlay.opaque, if set.
pub fn opaque_value(p: &Path) -> Option<Vec<u8>> {
    sys::lgetxattr(p, "trusted.overlay.opaque").ok()
}

/// Raw upper inspection: is `p` a dir with trusted.overlay.opaque=y?
pub fn is_opaque(p: &Path) -> bool {
    lstat(p).is_dir() && opaque_value(p).as_deref() == Some(b"y")
}

#[track_caller]
pub fn assert_whiteout(p: &Path) {
    let md = fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("expected a whiteout at {}, lstat: {e}", p.display()));
    assert!(
        md.file_type().is_char_device() && md.rdev() == 0,
        "expected a char 0/0 whiteout at {}, found mode {:o} rdev {:x}",
        p.display(),
        md.mode(),
        md.rdev()
    );
}

/// Asserts that no `.wh.*` marker file exists anywhere below `root`.
#[track_caller]
pub fn assert_no_wh_markers(root: &Path) {
    for p in snapshot(root, SnapOpts::basic()).paths() {
        let name = Path::new(&p)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        assert!(
            !name.starts_with(".wh."),
            "found a .wh. marker {p} in {}",
            root.display()
        );
    }
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

/// Entries of a directory read with getdents64 (including `.` and `..`).
pub fn getdents_all(p: &Path) -> Vec<sys::Dirent> {
    use std::os::fd::AsFd;
    let f = File::open(p).unwrap_or_else(|e| panic!("open dir {}: {e}", p.display()));
    let mut all = Vec::new();
    loop {
        let chunk = sys::getdents64(f.as_fd(), 4096).expect("getdents64");
        if chunk.is_empty() {
            return all;
        }
        all.extend(chunk);
    }
}
