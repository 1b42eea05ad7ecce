//! What the hostile tests share: a canary dir outside every layer that must
//! never change, opens that resolve inside the merged root (openat2
//! RESOLVE_IN_ROOT), a bounded call and host probe names.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::common::*;

/// Runs `f` in a thread and gives up after `limit` (the thread is left
/// behind: the caller then kills our daemon so that it returns).
pub(crate) fn with_timeout<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

/// A directory outside every layer whose contents, owners, modes, xattrs
/// and mtimes must never change.
pub(crate) struct Canary {
    dir: TempDir,
    before: Tree,
}

impl Canary {
    pub(crate) fn new() -> Canary {
        let dir = TempDir::new("canary");
        let l = Layer::new(dir.path().to_path_buf());
        l.file("f", b"CANARY-SECRET")
            .file("sub/file", b"CANARY-SECRET")
            .file("srv/hostname", b"CANARY-SECRET")
            .dir("sub/v");
        let before = snapshot(dir.path(), SnapOpts::with_times());
        Canary { dir, before }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    #[track_caller]
    pub(crate) fn assert_untouched(&self, what: &str) {
        let now = snapshot(self.dir.path(), SnapOpts::with_times());
        let d = self.before.diff(&now);
        assert!(
            d.is_empty(),
            "{what}: the canary dir outside the layers changed:\n{d}"
        );
    }
}

/// Fails if any regular file below `root` (not following symlinks)
/// contains the canary's secret.
#[track_caller]
pub(crate) fn assert_no_canary_data(root: &Path, what: &str) {
    for p in snapshot(root, SnapOpts::basic()).paths() {
        let full = root.join(&p);
        if lstat(&full).is_file() {
            let data = fs::read(&full).unwrap_or_default();
            assert!(
                !data.windows(13).any(|w| w == b"CANARY-SECRET"),
                "{what}: {p} holds data read from the canary outside the layers"
            );
        }
    }
}

/// openat2 of `rel` below `root` with RESOLVE_IN_ROOT (mode 0644 if it
/// creates).
pub(crate) fn openat2_in_root(root: BorrowedFd<'_>, rel: &str, flags: i32) -> io::Result<OwnedFd> {
    let mode = if flags & libc::O_CREAT != 0 { 0o644 } else { 0 };
    sys::openat2(root, Path::new(rel), flags, mode, libc::RESOLVE_IN_ROOT)
}

pub(crate) fn open_in_root(m: &Mounted, rel: &str, flags: i32) -> io::Result<OwnedFd> {
    let root = File::open(m.p("")).expect("open merged root");
    openat2_in_root(root.as_fd(), rel, flags)
}

/// Every entry of an open directory except `.` and `..` (getdents64 order).
pub(crate) fn entries(dir: BorrowedFd<'_>) -> io::Result<Vec<sys::Dirent>> {
    let mut all = Vec::new();
    loop {
        let chunk = sys::getdents64(dir, 8192)?;
        if chunk.is_empty() {
            return Ok(all);
        }
        all.extend(
            chunk
                .into_iter()
                .filter(|d| d.name != "." && d.name != ".."),
        );
    }
}

/// `ok [names]` (sorted) of an open directory, or the errno.
pub(crate) fn sorted_names(dir: BorrowedFd<'_>) -> String {
    match entries(dir) {
        Ok(v) => {
            let mut names: Vec<String> = v
                .into_iter()
                .map(|d| d.name.to_string_lossy().into_owned())
                .collect();
            names.sort();
            format!("ok {names:?}")
        }
        Err(e) => ename(&e),
    }
}

pub(crate) fn read_in_root(m: &Mounted, rel: &str) -> String {
    match open_in_root(m, rel, libc::O_RDONLY) {
        Ok(fd) => {
            let mut s = String::new();
            match File::from(fd).read_to_string(&mut s) {
                Ok(_) => format!("ok {s:?}"),
                Err(e) => ename(&e),
            }
        }
        Err(e) => ename(&e),
    }
}

pub(crate) fn names_in_root(m: &Mounted, rel: &str) -> String {
    match open_in_root(m, rel, libc::O_RDONLY | libc::O_DIRECTORY) {
        Ok(fd) => sorted_names(fd.as_fd()),
        Err(e) => ename(&e),
    }
}

/// A unique name that must never appear in host `/etc`.
pub(crate) fn host_probe_name(tag: &str) -> String {
    format!("unionfs-hostile-{tag}-{}", std::process::id())
}
