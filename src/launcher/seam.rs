//! The syscall seam under the launcher (youki's `Syscall` trait): every call
//! that changes the mount table, the namespaces or the process image goes
//! through [`Sys`], so unit tests can record the exact order without root.
//! `real::RealSys` is the kernel; `fake::FakeSys` (tests only) records.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::userns::IdMapping;
use crate::errno::{Errno, Result};

/// One mount(2) call; `None` fields are NULL.
#[derive(Debug, Clone, Copy)]
pub struct Mount<'a> {
    pub source: Option<&'a str>,
    pub target: &'a Path,
    pub fstype: Option<&'a str>,
    pub flags: u64,
    pub data: Option<&'a str>,
}

impl Mount<'_> {
    /// `mount(SOURCE, TARGET, TYPE, FLAGS, DATA)`, `-` for NULL; for logs
    /// and for the recording fake.
    pub fn describe(&self) -> String {
        format!(
            "mount({}, {}, {}, {}, {})",
            self.source.unwrap_or("-"),
            self.target.display(),
            self.fstype.unwrap_or("-"),
            flag_names(self.flags),
            self.data.unwrap_or("-")
        )
    }
}

/// MS_* flags by name, `|`-separated (`0` for none).
pub fn flag_names(flags: u64) -> String {
    const NAMES: [(u64, &str); 13] = [
        (libc::MS_RDONLY, "RDONLY"),
        (libc::MS_NOSUID, "NOSUID"),
        (libc::MS_NODEV, "NODEV"),
        (libc::MS_NOEXEC, "NOEXEC"),
        (libc::MS_REMOUNT, "REMOUNT"),
        (libc::MS_NOATIME, "NOATIME"),
        (libc::MS_NODIRATIME, "NODIRATIME"),
        (libc::MS_BIND, "BIND"),
        (libc::MS_REC, "REC"),
        (libc::MS_PRIVATE, "PRIVATE"),
        (libc::MS_SLAVE, "SLAVE"),
        (libc::MS_RELATIME, "RELATIME"),
        (libc::MS_STRICTATIME, "STRICTATIME"),
    ];
    let names: Vec<&str> = NAMES
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    if names.is_empty() {
        "0".into()
    } else {
        names.join("|")
    }
}

/// CLONE_* flags by name, for the same purpose.
pub fn clone_names(flags: i32) -> String {
    let names: Vec<&str> = [
        (libc::CLONE_NEWUSER, "NEWUSER"),
        (libc::CLONE_NEWNS, "NEWNS"),
        (libc::CLONE_NEWPID, "NEWPID"),
        (libc::CLONE_NEWUTS, "NEWUTS"),
        (libc::CLONE_NEWNET, "NEWNET"),
    ]
    .iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, n)| *n)
    .collect();
    names.join("|")
}

/// What is at a path, without following a final symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Missing,
    Dir,
    Other,
}

/// The attributes an init-layer dir copies from the image's dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirAttrs {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// (seconds, nanoseconds)
    pub mtime: (i64, i64),
}

/// One dir of a path resolved in the image; `attrs` None where the image
/// lacks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDir {
    pub name: String,
    pub attrs: Option<DirAttrs>,
}

pub trait Sys {
    /// The absolute, symlink-free form of `path`, which must be a directory.
    fn canonical_dir(&mut self, path: &Path) -> Result<PathBuf>;
    /// The absolute, symlink-free form of `path`, and whether it is a dir.
    fn canonical(&mut self, path: &Path) -> Result<(PathBuf, bool)>;
    fn entry(&mut self, path: &Path) -> Entry;
    /// Creates `path`, which must not exist, holding `data`, with `mode`.
    fn write_new_file(&mut self, path: &Path, data: &str, mode: u32) -> Result<()>;
    /// Gives the dir `path` these mode, owner (where allowed) and mtime.
    fn set_attrs(&mut self, path: &Path, attrs: &DirAttrs) -> Result<()>;
    /// Where `path` resolves in the union of `lowers` (see `image::image_dir`).
    fn image_dir(&mut self, lowers: &[PathBuf], path: &str) -> Result<Vec<ImageDir>>;
    /// A file of the rootfs at `root`, read without leaving it; None if missing.
    fn read_in_root(&mut self, root: &Path, path: &Path) -> Result<Option<String>>;
    /// Makes `dst` a mount point inside `root` (see `image::mount_point`);
    /// returns a path naming it that a mount may follow.
    fn mount_point(&mut self, root: &Path, dst: &Path, file: bool) -> Result<PathBuf>;
    /// Binds `source` with its submounts onto `target`, read-only throughout
    /// with `read_only`.
    fn bind(&mut self, source: &Path, target: &Path, read_only: bool) -> Result<()>;
    fn sethostname(&mut self, name: &str) -> Result<()>;
    /// Brings up `lo` in the current network namespace.
    fn loopback_up(&mut self) -> Result<()>;
    /// Switches to `uid`/`gid`, and to `groups` when given.
    fn set_identity(&mut self, uid: u32, gid: u32, groups: Option<&[u32]>) -> Result<()>;
    fn chdir(&mut self, dir: &Path) -> Result<()>;
    fn rename(&mut self, from: &Path, to: &Path) -> Result<()>;
    fn chmod(&mut self, path: &Path, mode: u32) -> Result<()>;
    fn mkdir(&mut self, path: &Path, mode: u32) -> Result<()>;
    /// Creates an empty file to bind a device onto.
    fn create_file(&mut self, path: &Path) -> Result<()>;
    fn symlink(&mut self, target: &str, link: &Path) -> Result<()>;
    /// Writes `data` in one write(2) to an existing file (/proc/self/*).
    fn write_file(&mut self, path: &Path, data: &str) -> Result<()>;
    /// Whether the real ids may open `path` read-write.
    fn access_rw(&mut self, path: &Path) -> Result<()>;
    fn unshare(&mut self, flags: i32) -> Result<()>;
    /// Forks the newuidmap/newgidmap helper while still outside the new
    /// user namespace; it waits for [`Sys::finish_id_helper`].
    fn start_id_helper(&mut self, mapping: &IdMapping) -> Result<()>;
    /// Lets the helper write this process's maps and waits for it.
    fn finish_id_helper(&mut self) -> Result<()>;
    fn mount(&mut self, m: &Mount<'_>) -> Result<()>;
    /// The MS_* flags `path`'s mount carries now.
    fn mount_flags(&mut self, path: &Path) -> Result<u64>;
    fn umount(&mut self, target: &Path, flags: i32) -> Result<()>;
    /// Starts the unionfs-fuse server; returns its pid.
    fn spawn_server(&mut self, argv: &[OsString]) -> Result<i32>;
    /// The server's exit status once it has ended.
    fn server_exited(&mut self) -> Option<i32>;
    /// SIGTERM to the server, SIGKILL after `grace`, then reap it.
    fn stop_server(&mut self, grace: Duration);
    /// Whether `path` is the root of a mount other than its parent's.
    fn is_mount_point(&mut self, path: &Path) -> bool;
    /// Makes `new_root` the root (and cwd) and detaches the old root.
    fn pivot_root(&mut self, new_root: &Path) -> Result<()>;
    /// chroot into `new_root`, cwd at its `/`.
    fn chroot(&mut self, new_root: &Path) -> Result<()>;
    fn set_no_new_privs(&mut self) -> Result<()>;
    /// Replaces the process with `argv` (PATH lookup in `env`), with
    /// exactly the environment `env`; returns only on error.
    fn exec(&mut self, argv: &[OsString], env: &[(OsString, OsString)]) -> Errno;
    fn remove_dir(&mut self, path: &Path) -> Result<()>;
    /// Removes a tree (the throwaway upper or workdir, which hold no mounts).
    fn remove_tree(&mut self, path: &Path) -> Result<()>;
    fn remove_file(&mut self, path: &Path) -> Result<()>;
    /// Creates the file `path`, which must not exist, and locks it for the
    /// rest of this process's life (children do not inherit the lock's fd).
    /// Ok(false), with the file removed again, where the filesystem has no
    /// file locks.
    fn create_lock(&mut self, path: &Path) -> Result<bool>;
    /// Locks an existing lock file without waiting, until [`Sys::unlock`];
    /// false while another process holds it.
    fn try_lock(&mut self, path: &Path) -> Result<bool>;
    fn unlock(&mut self, path: &Path);
    /// The scratch dirs in `dir` (`unionfs-run.*`, real dirs) that belong to
    /// the effective uid.
    fn scratch_dirs(&mut self, dir: &Path) -> Vec<PathBuf>;
    fn sleep(&mut self, d: Duration);
}
