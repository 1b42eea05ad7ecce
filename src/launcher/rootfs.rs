//! The command process's steps: its own namespaces, /proc, /dev and /sys
//! on the union, the binds, the switch of root, and exec (the container
//! steps among them are in [`super::container`]).
//!
//! The special filesystems are mounted on top of the merged dir's `proc`,
//! `dev` and `sys`, so nothing of them goes through the union or lands in
//! the upper. Only when the image lacks one of those dirs is it created
//! through the union (so the empty dir lands in the upper, as in a
//! container's writable layer). A symlink or file in their place is refused
//! rather than followed, since a mount follows symlinks on the host side.

use std::path::Path;

use super::container;
use super::seam::{Entry, Mount, Sys};
use super::{Error, Mode, Plan};
use crate::errno::{Errno, Result};

/// Host devices bound into the rootfs's /dev (missing ones are skipped).
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// What a step returns: nothing, or the error naming it.
type Done = std::result::Result<(), Error>;
/// A named step of the command process.
type Step<S> = (&'static str, fn(&mut S, &Plan) -> Done);

/// Runs the command process's steps in order; returns only on failure (on
/// success, exec replaced the process).
pub fn command_process<S: Sys>(sys: &mut S, plan: &Plan) -> Error {
    let steps: [Step<S>; 10] = [
        ("command mount namespace", own_mount_namespace),
        ("hostname", container::set_hostname),
        ("loopback", container::loopback),
        ("mount /proc", mount_proc),
        ("mount /dev", mount_dev),
        ("mount /sys", mount_sys),
        ("mount binds", container::mount_binds),
        ("switch root", switch_root),
        ("set user", container::set_user),
        ("cwd", container::change_dir),
    ];
    for (name, step) in steps {
        log::debug!("step: {name}");
        if let Err(e) = step(sys, plan) {
            return e;
        }
    }
    log::debug!("step: exec");
    exec_command(sys, plan)
}

/// A mount namespace of the command's own, all private: switching root there
/// moves neither the launcher nor the server, and nothing propagates out.
/// With it a UTS namespace, and with `--net none` a network namespace
/// (before /sys is mounted, so sysfs shows its devices).
pub fn own_mount_namespace<S: Sys>(sys: &mut S, plan: &Plan) -> Done {
    sys.unshare(container::namespace_flags(plan))
        .map_err(Error::CommandNamespace)?;
    sys.mount(&Mount {
        source: None,
        target: Path::new("/"),
        fstype: None,
        flags: libc::MS_REC | libc::MS_PRIVATE,
        data: None,
    })
    .map_err(Error::CommandNamespace)
}

/// Makes sure `path` (inside the union) is a directory to mount on.
fn ensure_dir<S: Sys>(sys: &mut S, path: &Path, mode: u32) -> Result<()> {
    match sys.entry(path) {
        Entry::Dir => Ok(()),
        Entry::Missing => sys.mkdir(path, mode),
        Entry::Other => Err(Errno::ENOTDIR),
    }
}

fn bind<'a>(source: &'a str, target: &'a Path, rec: bool) -> Mount<'a> {
    Mount {
        source: Some(source),
        target,
        fstype: None,
        flags: libc::MS_BIND | if rec { libc::MS_REC } else { 0 },
        data: None,
    }
}

/// A fresh procfs (of the new PID namespace with `--pid`). Without a PID
/// namespace of its own, a user namespace may not mount procfs (EPERM); the
/// host's /proc is bound instead.
pub fn mount_proc<S: Sys>(sys: &mut S, plan: &Plan) -> Done {
    let target = plan.merged.join("proc");
    let fail = |e| Error::MountProc(target.clone(), e);
    ensure_dir(sys, &target, 0o555).map_err(fail)?;
    let fresh = Mount {
        source: Some("proc"),
        target: &target,
        fstype: Some("proc"),
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: None,
    };
    match sys.mount(&fresh) {
        Err(e) if e == Errno::EPERM => {
            log::info!("a fresh /proc needs a PID namespace of our own here (try --pid); binding the host's /proc");
            sys.mount(&bind("/proc", &target, true)).map_err(fail)
        }
        r => r.map_err(fail),
    }
}

/// A tmpfs /dev: host device nodes bound onto empty files, a private devpts
/// instance with /dev/ptmx pointing into it, a tmpfs /dev/shm, and the
/// fd/stdin/stdout/stderr links.
pub fn mount_dev<S: Sys>(sys: &mut S, plan: &Plan) -> Done {
    let dev = plan.merged.join("dev");
    ensure_dir(sys, &dev, 0o755).map_err(|e| Error::MountDev(dev.clone(), e))?;
    let at = |p: &Path| {
        let p = p.to_path_buf();
        move |e| Error::MountDev(p, e)
    };
    sys.mount(&Mount {
        source: Some("tmpfs"),
        target: &dev,
        fstype: Some("tmpfs"),
        flags: libc::MS_NOSUID | libc::MS_STRICTATIME,
        data: Some("mode=0755"),
    })
    .map_err(at(&dev))?;
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        if sys.entry(&host) == Entry::Missing {
            log::info!("{} is missing on the host; not binding it", host.display());
            continue;
        }
        let target = dev.join(name);
        sys.create_file(&target).map_err(at(&target))?;
        let source = format!("/dev/{name}");
        sys.mount(&bind(&source, &target, false))
            .map_err(at(&target))?;
    }
    let pts = dev.join("pts");
    sys.mkdir(&pts, 0o755).map_err(at(&pts))?;
    // gid=5 (tty) exists only in a full id map; a single-id map lacks it.
    let pts_opts = match plan.mode {
        Mode::Root => "newinstance,ptmxmode=0666,mode=0620,gid=5",
        Mode::Rootless(_) => "newinstance,ptmxmode=0666,mode=0620",
    };
    sys.mount(&Mount {
        source: Some("devpts"),
        target: &pts,
        fstype: Some("devpts"),
        flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        data: Some(pts_opts),
    })
    .map_err(at(&pts))?;
    let shm = dev.join("shm");
    sys.mkdir(&shm, 0o755).map_err(at(&shm))?;
    sys.mount(&Mount {
        source: Some("shm"),
        target: &shm,
        fstype: Some("tmpfs"),
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: Some("mode=1777"),
    })
    .map_err(at(&shm))?;
    let links = [
        ("pts/ptmx", "ptmx"),
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    for (target, name) in links {
        let link = dev.join(name);
        sys.symlink(target, &link).map_err(at(&link))?;
    }
    Ok(())
}

/// A read-only sysfs. A user namespace that does not own the network
/// namespace may not mount one (EPERM); the host's /sys is bound and made
/// read-only instead, repeating the flags the kernel locked on it.
pub fn mount_sys<S: Sys>(sys: &mut S, plan: &Plan) -> Done {
    let target = plan.merged.join("sys");
    let fail = |e| Error::MountSys(target.clone(), e);
    ensure_dir(sys, &target, 0o555).map_err(fail)?;
    let fresh = Mount {
        source: Some("sysfs"),
        target: &target,
        fstype: Some("sysfs"),
        flags: libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: None,
    };
    match sys.mount(&fresh) {
        Err(e) if e == Errno::EPERM => {
            log::info!("sysfs may not be mounted here; binding the host's /sys read-only");
            sys.mount(&bind("/sys", &target, true)).map_err(fail)?;
            let locked = sys.mount_flags(&target).map_err(fail)?;
            sys.mount(&Mount {
                source: None,
                target: &target,
                fstype: None,
                flags: libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | locked,
                data: None,
            })
            .map_err(fail)
        }
        r => r.map_err(fail),
    }
}

/// pivot_root into the union, or chroot with `--chroot` or where pivot_root
/// is impossible (EINVAL: e.g. the current root is an initramfs, or we are
/// already in a chroot).
pub fn switch_root<S: Sys>(sys: &mut S, plan: &Plan) -> Done {
    if plan.chroot {
        return sys.chroot(&plan.merged).map_err(Error::Chroot);
    }
    match sys.pivot_root(&plan.merged) {
        Err(e) if e == Errno::EINVAL => {
            log::warn!("pivot_root is impossible here (EINVAL); falling back to chroot");
            sys.chroot(&plan.merged).map_err(Error::Chroot)
        }
        r => r.map_err(Error::PivotRoot),
    }
}

/// No new privileges for the command (as bubblewrap), then exec.
pub fn exec_command<S: Sys>(sys: &mut S, plan: &Plan) -> Error {
    let name = plan
        .command
        .first()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Err(e) = sys.set_no_new_privs() {
        return Error::Exec(name, e);
    }
    Error::Exec(name, sys.exec(&plan.command, &plan.env))
}
