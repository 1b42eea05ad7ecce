//! A recording [`Sys`] for unit tests: every call that changes something is
//! appended to `calls` as one line; queries answer from a few fields.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::seam::{clone_names, DirAttrs, Entry, ImageDir, Mount, Sys};
use super::userns::IdMapping;
use crate::errno::{Errno, Result};

#[derive(Debug, Default)]
pub struct FakeSys {
    pub calls: Vec<String>,
    /// A call whose line starts with the prefix fails with the errno.
    pub failures: Vec<(String, Errno)>,
    /// Paths that `entry` reports missing (all others are dirs).
    pub missing: Vec<PathBuf>,
    /// `is_mount_point` answers false this many times first.
    pub not_mounted_polls: usize,
    /// What `server_exited` answers.
    pub server_status: Option<i32>,
    pub flags_of_mounts: u64,
    /// What `scratch_dirs` lists.
    pub scratch_dirs: Vec<PathBuf>,
    /// Lock files that another process holds.
    pub busy_locks: Vec<PathBuf>,
    /// Host paths `canonical` reports as files (others are dirs).
    pub files: Vec<PathBuf>,
    /// What `image_dir` answers (default: `etc`, a plain dir).
    pub image_etc: Option<Vec<ImageDir>>,
    /// Files `read_in_root` finds, by path inside the root.
    pub root_files: Vec<(PathBuf, String)>,
}

/// The attributes the fake's image gives its dirs.
pub const IMAGE_DIR: DirAttrs = DirAttrs {
    mode: 0o40755,
    uid: 0,
    gid: 0,
    mtime: (1, 0),
};

impl FakeSys {
    fn record(&mut self, line: String) -> Result<()> {
        let failure = self
            .failures
            .iter()
            .find(|(prefix, _)| line.starts_with(prefix.as_str()))
            .map(|(_, e)| *e);
        self.calls.push(line);
        failure.map_or(Ok(()), Err)
    }

    pub fn fail(mut self, prefix: &str, errno: Errno) -> FakeSys {
        self.failures.push((prefix.into(), errno));
        self
    }
}

fn show(argv: &[OsString]) -> String {
    let words: Vec<String> = argv.iter().map(|a| a.to_string_lossy().into()).collect();
    words.join(" ")
}

impl Sys for FakeSys {
    fn canonical_dir(&mut self, path: &Path) -> Result<PathBuf> {
        if self.missing.iter().any(|m| m == path) {
            return Err(Errno::ENOENT);
        }
        Ok(path.to_path_buf())
    }

    fn canonical(&mut self, path: &Path) -> Result<(PathBuf, bool)> {
        if self.missing.iter().any(|m| m == path) {
            return Err(Errno::ENOENT);
        }
        Ok((path.to_path_buf(), !self.files.iter().any(|f| f == path)))
    }

    fn write_new_file(&mut self, path: &Path, data: &str, mode: u32) -> Result<()> {
        let first = data.lines().next().unwrap_or("");
        self.record(format!("write_new({}, {mode:o}, {first})", path.display()))
    }

    fn set_attrs(&mut self, path: &Path, a: &DirAttrs) -> Result<()> {
        self.record(format!("set_attrs({}, {:o})", path.display(), a.mode))
    }

    fn image_dir(&mut self, _lowers: &[PathBuf], path: &str) -> Result<Vec<ImageDir>> {
        Ok(self.image_etc.clone().unwrap_or_else(|| {
            vec![ImageDir {
                name: path.into(),
                attrs: Some(IMAGE_DIR),
            }]
        }))
    }

    fn read_in_root(&mut self, root: &Path, path: &Path) -> Result<Option<String>> {
        let _ = root;
        Ok(self
            .root_files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, t)| t.clone()))
    }

    fn mount_point(&mut self, root: &Path, dst: &Path, file: bool) -> Result<PathBuf> {
        let at = root.join(dst.strip_prefix("/").unwrap_or(dst));
        let kind = if file { "file" } else { "dir" };
        self.record(format!("mount_point({}, {kind})", at.display()))?;
        Ok(at)
    }

    fn bind(&mut self, source: &Path, target: &Path, read_only: bool) -> Result<()> {
        let how = if read_only { "ro" } else { "rw" };
        self.record(format!(
            "bind({}, {}, {how})",
            source.display(),
            target.display()
        ))
    }

    fn sethostname(&mut self, name: &str) -> Result<()> {
        self.record(format!("sethostname({name})"))
    }

    fn loopback_up(&mut self) -> Result<()> {
        self.record("loopback_up".into())
    }

    fn set_identity(&mut self, uid: u32, gid: u32, groups: Option<&[u32]>) -> Result<()> {
        let groups = groups.map_or("-".into(), |g| format!("{g:?}"));
        self.record(format!("set_identity({uid}, {gid}, {groups})"))
    }

    fn chdir(&mut self, dir: &Path) -> Result<()> {
        self.record(format!("chdir({})", dir.display()))
    }

    fn chmod(&mut self, path: &Path, mode: u32) -> Result<()> {
        self.record(format!("chmod({}, {mode:o})", path.display()))
    }

    fn rename(&mut self, from: &Path, to: &Path) -> Result<()> {
        self.record(format!("rename({}, {})", from.display(), to.display()))
    }

    fn entry(&mut self, path: &Path) -> Entry {
        if self.missing.iter().any(|m| m == path) {
            Entry::Missing
        } else {
            Entry::Dir
        }
    }

    fn mkdir(&mut self, path: &Path, mode: u32) -> Result<()> {
        self.record(format!("mkdir({}, {mode:o})", path.display()))
    }

    fn create_file(&mut self, path: &Path) -> Result<()> {
        self.record(format!("create({})", path.display()))
    }

    fn symlink(&mut self, target: &str, link: &Path) -> Result<()> {
        self.record(format!("symlink({target}, {})", link.display()))
    }

    fn write_file(&mut self, path: &Path, data: &str) -> Result<()> {
        self.record(format!("write({}, {})", path.display(), data.trim_end()))
    }

    fn access_rw(&mut self, path: &Path) -> Result<()> {
        self.record(format!("access_rw({})", path.display()))
    }

    fn unshare(&mut self, flags: i32) -> Result<()> {
        self.record(format!("unshare({})", clone_names(flags)))
    }

    fn start_id_helper(&mut self, _mapping: &IdMapping) -> Result<()> {
        self.record("start_id_helper".into())
    }

    fn finish_id_helper(&mut self) -> Result<()> {
        self.record("finish_id_helper".into())
    }

    fn mount(&mut self, m: &Mount<'_>) -> Result<()> {
        self.record(m.describe())
    }

    fn mount_flags(&mut self, _path: &Path) -> Result<u64> {
        Ok(self.flags_of_mounts)
    }

    fn umount(&mut self, target: &Path, flags: i32) -> Result<()> {
        let how = if flags & libc::MNT_DETACH != 0 {
            "DETACH"
        } else {
            "0"
        };
        self.record(format!("umount({}, {how})", target.display()))
    }

    fn spawn_server(&mut self, argv: &[OsString]) -> Result<i32> {
        self.record(format!("spawn({})", show(argv)))?;
        Ok(4242)
    }

    fn server_exited(&mut self) -> Option<i32> {
        self.server_status
    }

    fn stop_server(&mut self, _grace: Duration) {
        self.calls.push("stop_server".into());
    }

    fn is_mount_point(&mut self, _path: &Path) -> bool {
        if self.not_mounted_polls > 0 {
            self.not_mounted_polls -= 1;
            return false;
        }
        true
    }

    fn pivot_root(&mut self, new_root: &Path) -> Result<()> {
        self.record(format!("pivot_root({})", new_root.display()))
    }

    fn chroot(&mut self, new_root: &Path) -> Result<()> {
        self.record(format!("chroot({})", new_root.display()))
    }

    fn set_no_new_privs(&mut self) -> Result<()> {
        self.record("no_new_privs".into())
    }

    fn exec(&mut self, argv: &[OsString], _env: &[(OsString, OsString)]) -> Errno {
        // A real exec does not return; the fake reports ENOEXEC to end the run.
        match self.record(format!("exec({})", show(argv))) {
            Err(e) => e,
            Ok(()) => Errno(libc::ENOEXEC),
        }
    }

    fn remove_dir(&mut self, path: &Path) -> Result<()> {
        self.record(format!("rmdir({})", path.display()))
    }

    fn remove_tree(&mut self, path: &Path) -> Result<()> {
        self.record(format!("rm -r({})", path.display()))
    }

    fn remove_file(&mut self, path: &Path) -> Result<()> {
        self.record(format!("rm({})", path.display()))
    }

    fn create_lock(&mut self, path: &Path) -> Result<bool> {
        self.record(format!("create_lock({})", path.display()))?;
        Ok(true)
    }

    fn try_lock(&mut self, path: &Path) -> Result<bool> {
        self.record(format!("try_lock({})", path.display()))?;
        Ok(!self.busy_locks.iter().any(|b| b == path))
    }

    fn unlock(&mut self, path: &Path) {
        self.calls.push(format!("unlock({})", path.display()));
    }

    fn scratch_dirs(&mut self, _dir: &Path) -> Vec<PathBuf> {
        self.scratch_dirs.clone()
    }

    fn sleep(&mut self, _d: Duration) {}
}
