//! Namespace, mount-table and process-image calls, used only by the launcher
//! (`crate::launcher`): unshare, mount with optional arguments, pivot_root,
//! chroot, prctl, exec, and the signal plumbing of a supervising parent.
//! Paths here are whole paths on purpose: the launcher works on the mount
//! table, not inside a layer.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use super::check;
use crate::errno::{Errno, Result};

/// unshare(2) with CLONE_* flags. CLONE_NEWUSER needs a single-threaded caller.
pub fn unshare(flags: i32) -> Result<()> {
    // SAFETY: plain syscall on integer flags.
    check(unsafe { libc::unshare(flags) })?;
    Ok(())
}

fn opt_ptr(s: Option<&CStr>) -> *const libc::c_char {
    s.map_or(std::ptr::null(), CStr::as_ptr)
}

/// mount(2); `None` passes NULL (propagation changes, remounts, binds).
pub fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: u64,
    data: Option<&CStr>,
) -> Result<()> {
    // SAFETY: every pointer is NULL or a NUL-terminated string that outlives the call.
    check(unsafe {
        libc::mount(
            opt_ptr(source),
            target.as_ptr(),
            opt_ptr(fstype),
            flags as libc::c_ulong,
            opt_ptr(data).cast(),
        )
    })?;
    Ok(())
}

pub fn umount2(target: &CStr, flags: i32) -> Result<()> {
    // SAFETY: target is NUL-terminated.
    check(unsafe { libc::umount2(target.as_ptr(), flags) })?;
    Ok(())
}

/// pivot_root(2), which libc does not wrap.
pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> Result<()> {
    // SAFETY: both arguments are NUL-terminated strings.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) };
    check(r)?;
    Ok(())
}

pub fn chroot(path: &CStr) -> Result<()> {
    // SAFETY: path is NUL-terminated.
    check(unsafe { libc::chroot(path.as_ptr()) })?;
    Ok(())
}

pub fn chdir(path: &CStr) -> Result<()> {
    // SAFETY: path is NUL-terminated.
    check(unsafe { libc::chdir(path.as_ptr()) })?;
    Ok(())
}

pub fn fchdir(dir: BorrowedFd<'_>) -> Result<()> {
    // SAFETY: dir is a valid open fd for the duration of the call.
    check(unsafe { libc::fchdir(dir.as_raw_fd()) })?;
    Ok(())
}

/// Opens a directory as an O_PATH handle (for fchdir around pivot_root).
pub fn open_dir_handle(path: &CStr) -> Result<OwnedFd> {
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: path is NUL-terminated; the flags create no file.
    let fd = check(unsafe { libc::open(path.as_ptr(), flags) })?;
    // SAFETY: fd was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The MS_* flags a mount currently carries, from statvfs(3)'s f_flag.
/// A remount in a user namespace must repeat the locked ones.
pub fn mount_flags(path: &CStr) -> Result<u64> {
    // SAFETY: an all-zero statvfs is a valid out buffer.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: path is NUL-terminated and st is a valid out pointer.
    check(unsafe { libc::statvfs(path.as_ptr(), &mut st) })?;
    let pairs = [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    Ok(pairs
        .iter()
        .filter(|(st_flag, _)| st.f_flag & *st_flag != 0)
        .fold(0, |acc, (_, ms)| acc | *ms))
}

/// access(2), e.g. R_OK | W_OK on /dev/fuse, checked with the real ids.
pub fn access(path: &CStr, mode: i32) -> Result<()> {
    // SAFETY: path is NUL-terminated.
    check(unsafe { libc::access(path.as_ptr(), mode) })?;
    Ok(())
}

/// prctl(PR_SET_NO_NEW_PRIVS): exec can no longer gain privileges.
pub fn set_no_new_privs() -> Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
    Ok(())
}

/// prctl(PR_SET_PDEATHSIG): `sig` arrives when the parent dies.
pub fn set_parent_death_signal(sig: i32) -> Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig, 0, 0, 0) })?;
    Ok(())
}

/// Spawns `cmd` so that it gets SIGKILL when this process dies, and so that it
/// sits in its own process group (terminal signals stay with the command).
pub fn spawn_tied_to_parent(cmd: &mut Command) -> io::Result<Child> {
    cmd.process_group(0);
    // SAFETY: the hook runs in the forked child before exec and only calls
    // prctl, which is async-signal-safe and touches no shared state.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// execvp(3) with the caller's environment; returns only on failure.
pub fn execvp(argv: &[CString]) -> Errno {
    let Some(file) = argv.first() else {
        return Errno::EINVAL;
    };
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: ptrs is a NULL-terminated array of NUL-terminated strings that
    // outlive the call.
    unsafe { libc::execvp(file.as_ptr(), ptrs.as_ptr()) };
    Errno::last()
}

/// _exit(2): leaves a forked child without running the parent's atexit work.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and is always safe to call.
    unsafe { libc::_exit(code) }
}

use super::proc::sigset;

fn sigmask(how: i32, signals: &[i32]) -> Result<()> {
    let set = sigset(signals);
    // SAFETY: set is initialised; the old mask is not needed.
    let r = unsafe { libc::pthread_sigmask(how, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(Errno::from_raw(r));
    }
    Ok(())
}

/// Blocks `signals` so that [`wait_signal_info`] can take them synchronously.
pub fn block_signals(signals: &[i32]) -> Result<()> {
    sigmask(libc::SIG_BLOCK, signals)
}

/// Puts `sig`'s disposition back to the default. Rust starts programs with
/// SIGPIPE ignored, and an ignored signal stays ignored across exec.
pub fn default_disposition(sig: i32) -> Result<()> {
    // SAFETY: installing SIG_DFL runs no handler code in this process.
    if unsafe { libc::signal(sig, libc::SIG_DFL) } == libc::SIG_ERR {
        return Err(Errno::last());
    }
    Ok(())
}

/// Empties the signal mask (exec keeps the mask, so a child must clear it).
pub fn unblock_all_signals() -> Result<()> {
    sigmask(libc::SIG_SETMASK, &[])
}

/// sigwaitinfo(2) on blocked `signals`: the signal and its `si_code`
/// (SI_KERNEL for one a terminal sent to the whole foreground group).
pub fn wait_signal_info(signals: &[i32]) -> Result<(i32, i32)> {
    let set = sigset(signals);
    loop {
        // SAFETY: an all-zero siginfo_t is a valid out buffer.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: set is initialised and info is a valid out pointer.
        match check(unsafe { libc::sigwaitinfo(&set, &mut info) }) {
            Ok(sig) => return Ok((sig, info.si_code)),
            Err(e) if e == Errno::EINTR => continue,
            Err(e) => return Err(e),
        }
    }
}

/// waitpid(pid, WNOHANG): `Some(raw status)` once the child has ended.
pub fn try_wait(pid: i32) -> Result<Option<i32>> {
    let mut status = 0;
    loop {
        // SAFETY: status is a valid out pointer.
        match check(unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) }) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(status)),
            Err(e) if e == Errno::EINTR => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The real user and group ids (which a new user namespace maps).
pub fn real_ids() -> (u32, u32) {
    // SAFETY: getuid and getgid cannot fail.
    unsafe { (libc::getuid(), libc::getgid()) }
}
