//! The test fixture: which implementation runs (ours or kernel overlayfs),
//! whether this environment can mount at all, uniquely named temp dirs that
//! detach leftover mounts before removal, and [`Fixture`], a temp dir with
//! lowers, an upper, a work dir and a mount point.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use super::layers::{mkdir_p, Layer};
use super::mount::Mounted;
use super::mountinfo::mounts_below;
use super::sys;

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
        self.mount_extra(kind, None, None)
    }

    /// As [`Fixture::mount`], adding `opts` to the `-o` of whichever
    /// implementation is under test.
    pub fn mount_opts(&self, opts: &str) -> Mounted {
        self.mount_extra(self.kind, Some(opts), Some(opts))
    }

    /// As [`Fixture::mount`], adding `opts` to the `-o` of our binary only
    /// (options the kernel does not know; ignored when it is under test).
    pub fn mount_ours_opts(&self, opts: &str) -> Mounted {
        self.mount_extra(self.kind, None, Some(opts))
    }

    fn mount_extra(
        &self,
        kind: Impl,
        kernel_opts: Option<&str>,
        ours_opts: Option<&str>,
    ) -> Mounted {
        let lowers = self.lowers();
        assert!(!lowers.is_empty(), "fixture has no lower layer");
        Mounted::mount_extra(
            kind,
            &lowers,
            Some(&self.upper().root),
            Some(&self.work()),
            &self.merged(),
            kernel_opts,
            ours_opts,
        )
    }

    /// Read-only union of the lowers (no upper) at `merged`.
    pub fn mount_ro(&self) -> Mounted {
        let lowers = self.lowers();
        assert!(!lowers.is_empty(), "fixture has no lower layer");
        Mounted::mount(self.kind, &lowers, None, None, &self.merged())
    }
}
