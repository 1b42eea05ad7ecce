//! Process-level calls: fork for daemonising, signals, mount/umount, limits.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::check;
use crate::errno::Result;

pub enum Fork {
    Parent(i32),
    Child,
}

/// fork(2). Call only while the process has a single thread.
pub fn fork() -> Result<Fork> {
    // SAFETY: the caller guarantees no other thread exists, so the child is consistent.
    let pid = check(unsafe { libc::fork() })?;
    Ok(if pid == 0 {
        Fork::Child
    } else {
        Fork::Parent(pid)
    })
}

/// A pipe, both ends close-on-exec: (read, write).
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: fds has room for two ints.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn setsid() -> Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::setsid() })?;
    Ok(())
}

/// Points stdin/stdout/stderr at `fd` (e.g. /dev/null) after daemonising.
pub fn redirect_stdio(fd: BorrowedFd<'_>) -> Result<()> {
    for target in 0..3 {
        // SAFETY: dup2 onto the standard descriptors, which we own as a process.
        check(unsafe { libc::dup2(fd.as_raw_fd(), target) })?;
    }
    Ok(())
}

/// Waits for a child; returns its raw wait status.
pub fn waitpid(pid: i32) -> Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: status is a valid out pointer.
        match check(unsafe { libc::waitpid(pid, &mut status, 0) }) {
            Err(crate::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e),
            Ok(_) => return Ok(status),
        }
    }
}

pub(crate) fn sigset(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before sigaddset writes to it.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, *s);
        }
        set
    }
}

/// Blocks signals in the calling thread; threads created later inherit the mask.
pub fn block_signals(signals: &[i32]) -> Result<()> {
    let set = sigset(signals);
    // SAFETY: set is initialised; the old mask is not needed.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(crate::errno::Errno::from_raw(r));
    }
    Ok(())
}

/// Waits for one of the (blocked) signals and returns its number.
pub fn wait_signal(signals: &[i32]) -> i32 {
    let set = sigset(signals);
    let mut sig = 0;
    // SAFETY: set is initialised and sig is a valid out pointer.
    let r = unsafe { libc::sigwait(&set, &mut sig) };
    if r == 0 {
        sig
    } else {
        libc::SIGTERM
    }
}

pub fn mount(src: &CStr, target: &CStr, fstype: &CStr, flags: u64, data: &CStr) -> Result<()> {
    // SAFETY: all strings are NUL-terminated.
    check(unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags as libc::c_ulong,
            data.as_ptr().cast(),
        )
    })?;
    Ok(())
}

pub fn umount2(target: &CStr, flags: i32) -> Result<()> {
    // SAFETY: target is NUL-terminated.
    check(unsafe { libc::umount2(target.as_ptr(), flags) })?;
    Ok(())
}

/// Raises RLIMIT_NOFILE's soft limit to the hard limit: one server serves many files.
pub fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid out pointer, then a valid in pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// RLIMIT_NOFILE's soft limit (1024 if it cannot be read).
pub fn nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid out pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        1024
    }
}

/// Gives freed heap memory back to the system: glibc keeps it in its arenas
/// otherwise, so the server's RSS would stay at its peak after the kernel
/// forgot a big walk's inodes.
pub fn trim_heap() {
    // SAFETY: malloc_trim only releases the allocator's own free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Keeps glibc's malloc to one arena unless the environment sets
/// MALLOC_ARENA_MAX or GLIBC_TUNABLES. By default each serving thread gets
/// an arena of its own (up to 8 per CPU), and memory a thread freed after a
/// big merged listing stays in its arena: over a long mixed workload the
/// RSS kept growing. Must run before the serving threads start.
pub fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some()
        || std::env::var_os("GLIBC_TUNABLES").is_some()
    {
        return;
    }
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Sets the process umask; the server applies callers' modes exactly.
pub fn set_umask(mask: u32) {
    // SAFETY: umask cannot fail.
    unsafe {
        libc::umask(mask as libc::mode_t);
    }
}

pub fn geteuid() -> u32 {
    // SAFETY: cannot fail.
    unsafe { libc::geteuid() }
}

pub fn getegid() -> u32 {
    // SAFETY: cannot fail.
    unsafe { libc::getegid() }
}

pub fn getpid() -> i32 {
    // SAFETY: cannot fail.
    unsafe { libc::getpid() }
}

pub fn kill(pid: i32, sig: i32) -> Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::kill(pid, sig) })?;
    Ok(())
}

/// What the kernel's set-id rules need to know about a calling process.
pub struct ProcCreds {
    /// CAP_FSETID is effective and the process is in our user namespace.
    pub cap_fsetid: bool,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

const CAP_FSETID: u32 = 4;

/// Reads the credentials of process `pid` from /proc; None when it is gone
/// or cannot be read. A process in another user namespace counts as not
/// holding CAP_FSETID: its capabilities do not reach our files.
pub fn proc_creds(pid: u32) -> Option<ProcCreds> {
    if pid == 0 {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
    };
    let cap_eff = u64::from_str_radix(field("CapEff:")?, 16).ok()?;
    let groups = field("Groups:")?
        .split_whitespace()
        .filter_map(|g| g.parse().ok())
        .collect();
    // Our own user namespace does not change, so it is read once.
    static OWN_NS: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    let own = OWN_NS.get_or_init(|| std::fs::read_link("/proc/self/ns/user").ok());
    let same_ns = match (std::fs::read_link(format!("/proc/{pid}/ns/user")), own) {
        (Ok(a), Some(b)) => a == *b,
        _ => false,
    };
    Some(ProcCreds {
        cap_fsetid: same_ns && cap_eff & (1 << CAP_FSETID) != 0,
        groups,
    })
}

/// Whether this process runs inside a user namespace other than the initial
/// one, where trusted.* xattrs are out of reach.
pub fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(m) => {
            let f: Vec<&str> = m.split_whitespace().collect();
            !(f.len() == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295")
        }
        Err(_) => false,
    }
}

/// Whether trusted.* xattrs are out of reach here, so overlay xattrs live
/// in user.overlay.* (as overlayfs `userxattr`).
pub fn needs_userxattr() -> bool {
    geteuid() != 0 || in_user_namespace()
}

/// 64 random bits from the kernel (0 if it has none to give yet).
pub fn random_u64() -> u64 {
    let mut v = 0u64;
    // SAFETY: getrandom writes at most 8 bytes into v, which has 8.
    let n = unsafe { libc::getrandom((&mut v as *mut u64).cast(), 8, libc::GRND_NONBLOCK) };
    if n == 8 {
        v
    } else {
        0
    }
}
