//! Calls a container's command process makes on itself, used only by the
//! launcher: hostname, identity, the loopback interface, lookups confined to
//! a root dir (openat2 RESOLVE_IN_ROOT), and recursive bind mounts made with
//! the new mount API so that a read-only one is read-only all the way down.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::check;
use crate::errno::Result;

/// sethostname(2) in the caller's UTS namespace.
pub fn sethostname(name: &[u8]) -> Result<()> {
    // SAFETY: name points to name.len() readable bytes.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })?;
    Ok(())
}

/// Becomes `uid`/`gid`, with `groups` as the supplementary groups when
/// given (a user namespace with setgroups denied cannot change them).
pub fn set_identity(uid: u32, gid: u32, groups: Option<&[u32]>) -> Result<()> {
    if let Some(groups) = groups {
        // SAFETY: groups points to groups.len() gid_t values.
        check(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) })?;
    }
    // Group first: after the uid changes, the right to change it is gone.
    // SAFETY: plain syscalls on integers.
    check(unsafe { libc::setresgid(gid, gid, gid) })?;
    // SAFETY: as above.
    check(unsafe { libc::setresuid(uid, uid, uid) })?;
    Ok(())
}

/// Sets IFF_UP on `lo` (a new network namespace starts with it down).
pub fn loopback_up() -> Result<()> {
    // SAFETY: socket(2) with integer arguments; the fd is owned below.
    let fd =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fd was just returned by socket and is owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero ifreq is valid (empty name, zero flags).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: req is a valid ifreq for SIOCGIFFLAGS, which fills ifru_flags.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
    // SAFETY: the kernel just wrote ifru_flags, the active union member.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: req is a valid ifreq for SIOCSIFFLAGS.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) })?;
    Ok(())
}

/// openat2(2) of `path` with `root` as `/`: symlinks and `..` resolve as
/// if `root` were the root, so nothing outside it is reached.
pub fn open_in_root(root: BorrowedFd<'_>, path: &CStr, flags: i32, mode: u32) -> Result<OwnedFd> {
    // SAFETY: an all-zero open_how is valid; the fields are set below.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = mode as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: path is NUL-terminated and how is a valid open_how of the size passed.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    })?;
    // SAFETY: fd was just returned by openat2 and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Bind-mounts the tree at `source` (with the mounts below it) onto
/// `target`; `read_only` makes every mount of the copy read-only before it
/// is attached (a remount would reach only the top one).
pub fn bind_tree(source: &CStr, target: &CStr, read_only: bool) -> Result<()> {
    let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as u32;
    // SAFETY: source is NUL-terminated; the returned fd is owned below.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            source.as_ptr(),
            flags as libc::c_uint,
        )
    })?;
    // SAFETY: fd was just returned by open_tree and is owned by nobody else.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    if read_only {
        // SAFETY: an all-zero mount_attr changes nothing; attr_set is set below.
        let mut attr: libc::mount_attr = unsafe { std::mem::zeroed() };
        attr.attr_set = libc::MOUNT_ATTR_RDONLY;
        // SAFETY: the empty path with AT_EMPTY_PATH names the tree fd; attr is valid.
        check(unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                tree.as_raw_fd(),
                c"".as_ptr(),
                (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
                &attr as *const libc::mount_attr,
                std::mem::size_of::<libc::mount_attr>(),
            )
        })?;
    }
    // SAFETY: both paths are NUL-terminated; the tree fd is valid.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            // T_SYMLINKS: the target may be a /proc/self/fd magic link.
            (libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_SYMLINKS) as libc::c_uint,
        )
    })?;
    Ok(())
}
