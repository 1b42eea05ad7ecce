//! [`RealSys`]: the [`Sys`] seam on the kernel.

use std::ffi::{CString, OsString};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::image;
use super::seam::{DirAttrs, Entry, ImageDir, Mount, Sys};
use super::userns::{self, IdMapping};
use crate::errno::{Errno, Result};
use crate::sys;

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Errno::EINVAL)
}

/// The kernel.
#[derive(Debug, Default)]
pub struct RealSys {
    server: Option<Child>,
    id_helper: Option<(i32, OwnedFd)>,
    /// Lock files held, by path: the open file holds the flock.
    locks: Vec<(PathBuf, File)>,
    /// Mount points made in the rootfs, held until exec closes them.
    mount_points: Vec<OwnedFd>,
}

/// Runs newuidmap then newgidmap for `target`; true when both succeed.
fn run_id_tools(target: i32, mapping: &IdMapping) -> bool {
    let IdMapping::Subordinate {
        uid,
        gid,
        uids,
        gids,
        newuidmap,
        newgidmap,
    } = mapping
    else {
        return false;
    };
    let run = |tool: &Path, args: Vec<String>| {
        Command::new(tool)
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    };
    run(newuidmap, userns::helper_args(target, *uid, *uids))
        && run(newgidmap, userns::helper_args(target, *gid, *gids))
}

impl Sys for RealSys {
    fn canonical_dir(&mut self, path: &Path) -> Result<PathBuf> {
        let p = std::fs::canonicalize(path)?;
        if !std::fs::metadata(&p)?.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        Ok(p)
    }

    fn canonical(&mut self, path: &Path) -> Result<(PathBuf, bool)> {
        let p = std::fs::canonicalize(path)?;
        let dir = std::fs::metadata(&p)?.is_dir();
        Ok((p, dir))
    }

    fn write_new_file(&mut self, path: &Path, data: &str, mode: u32) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        f.write_all(data.as_bytes())?;
        // Exactly `mode`, whatever the umask.
        Ok(f.set_permissions(std::fs::Permissions::from_mode(mode))?)
    }

    fn set_attrs(&mut self, path: &Path, attrs: &DirAttrs) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        match std::os::unix::fs::lchown(path, Some(attrs.uid), Some(attrs.gid)) {
            // Rootless: the caller's own dir, shown as root inside.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            r => r?,
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(attrs.mode & 0o7777))?;
        let (sec, nsec) = attrs.mtime;
        let when = std::time::UNIX_EPOCH
            + Duration::from_secs(sec.max(0) as u64)
            + Duration::from_nanos(nsec.clamp(0, 999_999_999) as u64);
        let dir = File::open(path)?;
        Ok(dir.set_times(std::fs::FileTimes::new().set_modified(when))?)
    }

    fn image_dir(&mut self, lowers: &[PathBuf], path: &str) -> Result<Vec<ImageDir>> {
        image::image_dir(lowers, path)
    }

    fn read_in_root(&mut self, root: &Path, path: &Path) -> Result<Option<String>> {
        image::read_in_root(root, path)
    }

    fn mount_point(&mut self, root: &Path, dst: &Path, file: bool) -> Result<PathBuf> {
        use std::os::fd::AsRawFd;
        let fd = image::mount_point(root, dst, file)?;
        let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        self.mount_points.push(fd);
        Ok(path)
    }

    fn bind(&mut self, source: &Path, target: &Path, read_only: bool) -> Result<()> {
        log::debug!(
            "bind({}, {}, {})",
            source.display(),
            target.display(),
            if read_only { "ro" } else { "rw" }
        );
        sys::container::bind_tree(&cpath(source)?, &cpath(target)?, read_only)
    }

    fn sethostname(&mut self, name: &str) -> Result<()> {
        sys::container::sethostname(name.as_bytes())
    }

    fn loopback_up(&mut self) -> Result<()> {
        sys::container::loopback_up()
    }

    fn set_identity(&mut self, uid: u32, gid: u32, groups: Option<&[u32]>) -> Result<()> {
        sys::container::set_identity(uid, gid, groups)
    }

    fn chdir(&mut self, dir: &Path) -> Result<()> {
        sys::ns::chdir(&cpath(dir)?)
    }

    fn chmod(&mut self, path: &Path, mode: u32) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        Ok(std::fs::set_permissions(
            path,
            std::fs::Permissions::from_mode(mode),
        )?)
    }

    fn rename(&mut self, from: &Path, to: &Path) -> Result<()> {
        Ok(std::fs::rename(from, to)?)
    }

    fn entry(&mut self, path: &Path) -> Entry {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => Entry::Dir,
            Ok(_) => Entry::Other,
            Err(_) => Entry::Missing,
        }
    }

    fn mkdir(&mut self, path: &Path, mode: u32) -> Result<()> {
        Ok(std::fs::DirBuilder::new().mode(mode).create(path)?)
    }

    fn create_file(&mut self, path: &Path) -> Result<()> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)?;
        Ok(())
    }

    fn symlink(&mut self, target: &str, link: &Path) -> Result<()> {
        Ok(std::os::unix::fs::symlink(target, link)?)
    }

    fn write_file(&mut self, path: &Path, data: &str) -> Result<()> {
        let mut f = OpenOptions::new().write(true).open(path)?;
        Ok(f.write_all(data.as_bytes())?)
    }

    fn access_rw(&mut self, path: &Path) -> Result<()> {
        sys::ns::access(&cpath(path)?, libc::R_OK | libc::W_OK)
    }

    fn unshare(&mut self, flags: i32) -> Result<()> {
        sys::ns::unshare(flags)
    }

    fn start_id_helper(&mut self, mapping: &IdMapping) -> Result<()> {
        let (r, w) = sys::proc::pipe()?;
        let target = sys::proc::getpid();
        // Still single-threaded: the launcher has not started anything yet.
        match sys::proc::fork()? {
            sys::proc::Fork::Child => {
                drop(w);
                let mut go = [0u8; 1];
                let told = File::from(r).read(&mut go).is_ok_and(|n| n == 1);
                let ok = told && run_id_tools(target, mapping);
                sys::ns::exit_now(if ok { 0 } else { 1 });
            }
            sys::proc::Fork::Parent(pid) => {
                self.id_helper = Some((pid, w));
                Ok(())
            }
        }
    }

    fn finish_id_helper(&mut self) -> Result<()> {
        let (pid, w) = self.id_helper.take().ok_or(Errno::EINVAL)?;
        let wrote = File::from(w).write_all(b"g");
        let status = sys::proc::waitpid(pid)?;
        wrote?;
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            Ok(())
        } else {
            Err(Errno::EPERM)
        }
    }

    fn mount(&mut self, m: &Mount<'_>) -> Result<()> {
        let source = m.source.map(cstr).transpose()?;
        let fstype = m.fstype.map(cstr).transpose()?;
        let data = m.data.map(cstr).transpose()?;
        log::debug!("{}", m.describe());
        sys::ns::mount(
            source.as_deref(),
            &cpath(m.target)?,
            fstype.as_deref(),
            m.flags,
            data.as_deref(),
        )
    }

    fn mount_flags(&mut self, path: &Path) -> Result<u64> {
        sys::ns::mount_flags(&cpath(path)?)
    }

    fn umount(&mut self, target: &Path, flags: i32) -> Result<()> {
        sys::ns::umount2(&cpath(target)?, flags)
    }

    fn spawn_server(&mut self, argv: &[OsString]) -> Result<i32> {
        let (bin, args) = argv.split_first().ok_or(Errno::EINVAL)?;
        let mut cmd = Command::new(bin);
        cmd.args(args).stdin(Stdio::null());
        if std::env::var_os("RUST_LOG").is_none() {
            // fuser warns about every operation the server leaves to the
            // kernel's default; the command's output is no place for that.
            cmd.env("RUST_LOG", "warn,fuser=error");
        }
        let child = sys::ns::spawn_tied_to_parent(&mut cmd)?;
        let pid = child.id() as i32;
        self.server = Some(child);
        Ok(pid)
    }

    fn server_exited(&mut self) -> Option<i32> {
        let status = self.server.as_mut()?.try_wait().ok()??;
        self.server = None;
        use std::os::unix::process::ExitStatusExt;
        Some(status.into_raw())
    }

    fn stop_server(&mut self, grace: Duration) {
        let Some(mut child) = self.server.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        // SIGTERM makes unionfs-fuse unmount lazily and exit 0.
        let _ = sys::proc::kill(child.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        log::warn!(
            "unionfs-fuse (pid {}) ignored SIGTERM; killing it",
            child.id()
        );
        let _ = child.kill();
        let _ = child.wait();
    }

    fn is_mount_point(&mut self, path: &Path) -> bool {
        let parent = path.parent().unwrap_or(Path::new("/"));
        match (std::fs::metadata(path), std::fs::metadata(parent)) {
            (Ok(a), Ok(b)) => {
                use std::os::unix::fs::MetadataExt;
                a.dev() != b.dev()
            }
            _ => false,
        }
    }

    fn pivot_root(&mut self, new_root: &Path) -> Result<()> {
        let old = sys::ns::open_dir_handle(c"/")?;
        let new = sys::ns::open_dir_handle(&cpath(new_root)?)?;
        // pivot_root(".", ".") needs no put_old dir inside the image: the old
        // root ends up mounted on top of the new one, at the same place.
        sys::ns::fchdir(new.as_fd())?;
        sys::ns::pivot_root(c".", c".")?;
        // Step onto the old root and detach it with everything below it, so
        // the command cannot reach the host. The command's mount namespace is
        // all private, so the detach propagates nowhere.
        sys::ns::fchdir(old.as_fd())?;
        sys::ns::umount2(c".", libc::MNT_DETACH)?;
        sys::ns::chdir(c"/")
    }

    fn chroot(&mut self, new_root: &Path) -> Result<()> {
        sys::ns::chdir(&cpath(new_root)?)?;
        sys::ns::chroot(c".")?;
        sys::ns::chdir(c"/")
    }

    fn set_no_new_privs(&mut self) -> Result<()> {
        sys::ns::set_no_new_privs()
    }

    fn exec(&mut self, argv: &[OsString], env: &[(OsString, OsString)]) -> Errno {
        let Ok(args) = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<std::result::Result<Vec<_>, _>>()
        else {
            return Errno::EINVAL;
        };
        // exec keeps the signal mask and ignored signals: the command starts
        // with none blocked and SIGPIPE (which Rust ignores) at its default.
        let reset = sys::ns::unblock_all_signals()
            .and_then(|()| sys::ns::default_disposition(libc::SIGPIPE));
        if let Err(e) = reset {
            return e;
        }
        // This process is a forked, single-threaded child: nothing else
        // reads the environment while it changes. execvp looks up the
        // command with the new PATH.
        let old: Vec<OsString> = std::env::vars_os().map(|(k, _)| k).collect();
        for k in old {
            std::env::remove_var(k);
        }
        for (k, v) in env {
            std::env::set_var(k, v);
        }
        sys::ns::execvp(&args)
    }

    fn remove_dir(&mut self, path: &Path) -> Result<()> {
        Ok(std::fs::remove_dir(path)?)
    }

    fn remove_tree(&mut self, path: &Path) -> Result<()> {
        Ok(std::fs::remove_dir_all(path)?)
    }

    fn remove_file(&mut self, path: &Path) -> Result<()> {
        Ok(std::fs::remove_file(path)?)
    }

    fn create_lock(&mut self, path: &Path) -> Result<bool> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        if sys::fs::try_lock_exclusive(file.as_fd()) != Ok(true) {
            // An unlocked lock file would mark a live run as dead.
            std::fs::remove_file(path)?;
            return Ok(false);
        }
        self.locks.push((path.to_path_buf(), file));
        Ok(true)
    }

    fn try_lock(&mut self, path: &Path) -> Result<bool> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        let locked = sys::fs::try_lock_exclusive(file.as_fd())?;
        if locked {
            self.locks.push((path.to_path_buf(), file));
        }
        Ok(locked)
    }

    fn unlock(&mut self, path: &Path) {
        self.locks.retain(|(p, _)| p != path);
    }

    fn scratch_dirs(&mut self, dir: &Path) -> Vec<PathBuf> {
        use std::os::unix::fs::MetadataExt;
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let uid = sys::proc::geteuid();
        entries
            .flatten()
            .filter(|e| super::is_scratch_name(&e.file_name()))
            .map(|e| e.path())
            .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir() && m.uid() == uid))
            .collect()
    }

    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }
}
