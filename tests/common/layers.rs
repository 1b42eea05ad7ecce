//! [`Layer`]: builds a layer's contents (files with mode, owner and times,
//! dirs, symlinks, hard links, fifos, devices, xattrs, whiteouts, opaque dirs).

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use super::sys;
use super::sys::Ts;

pub(super) fn mkdir_p(path: &Path) {
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
