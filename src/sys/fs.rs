//! `*at()` wrappers: every call names one component relative to a dir fd.

use std::ffi::{CStr, CString};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::check;
use crate::errno::{Errno, Result};

/// The empty path, used with `AT_EMPTY_PATH` to act on the fd itself.
pub const EMPTY: &CStr = c"";

/// openat(2) with O_CLOEXEC always set.
pub fn openat(dir: BorrowedFd<'_>, name: &CStr, flags: i32, mode: u32) -> Result<OwnedFd> {
    // SAFETY: name is a valid NUL-terminated string; the returned fd is fresh and owned by us.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: fd was just returned by openat and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// openat(2) of a lower layer's object for reading, with O_NOATIME as
/// kernel overlayfs opens it, so reading through the union does not change
/// a shared lower layer. O_NOATIME needs the owner or CAP_FOWNER (EPERM
/// otherwise), and then the plain open is what is left.
pub fn openat_noatime(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> Result<OwnedFd> {
    match openat(dir, name, flags | libc::O_NOATIME, 0) {
        Err(e) if e == Errno::EPERM => openat(dir, name, flags, 0),
        r => r,
    }
}

/// An O_PATH handle on one entry, never following a symlink.
pub fn open_path(dir: BorrowedFd<'_>, name: &CStr) -> Result<OwnedFd> {
    openat(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)
}

/// An O_PATH handle on a directory entry that must be a directory (not a symlink to one).
pub fn open_dir_path(dir: BorrowedFd<'_>, name: &CStr) -> Result<OwnedFd> {
    openat(
        dir,
        name,
        libc::O_PATH | libc::O_NOFOLLOW | libc::O_DIRECTORY,
        0,
    )
}

pub fn fstatat(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: st points to writable memory of the right size; name is NUL-terminated.
    check(unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), st.as_mut_ptr(), flags) })?;
    // SAFETY: fstatat succeeded and filled st.
    Ok(unsafe { st.assume_init() })
}

/// lstat of one entry.
pub fn lstatat(dir: BorrowedFd<'_>, name: &CStr) -> Result<libc::stat> {
    fstatat(dir, name, libc::AT_SYMLINK_NOFOLLOW)
}

/// stat of the object an fd refers to (works on O_PATH fds).
pub fn fstat(fd: BorrowedFd<'_>) -> Result<libc::stat> {
    fstatat(fd, EMPTY, libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW)
}

pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> Result<()> {
    // SAFETY: plain syscall on a valid fd and NUL-terminated name.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) })?;
    Ok(())
}

pub fn mknodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32, rdev: u64) -> Result<()> {
    // SAFETY: plain syscall on a valid fd and NUL-terminated name.
    check(unsafe {
        libc::mknodat(
            dir.as_raw_fd(),
            name.as_ptr(),
            mode as libc::mode_t,
            rdev as libc::dev_t,
        )
    })?;
    Ok(())
}

pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> Result<()> {
    // SAFETY: both strings are NUL-terminated; dir is a valid fd.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })?;
    Ok(())
}

pub fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: buf is writable for buf.len() bytes.
    let n = check(unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n as usize);
    Ok(buf)
}

pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> Result<()> {
    // SAFETY: plain syscall on a valid fd and NUL-terminated name.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })?;
    Ok(())
}

pub fn renameat2(
    olddir: BorrowedFd<'_>,
    old: &CStr,
    newdir: BorrowedFd<'_>,
    new: &CStr,
    flags: u32,
) -> Result<()> {
    // SAFETY: plain syscall on valid fds and NUL-terminated names.
    check(unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            olddir.as_raw_fd(),
            old.as_ptr(),
            newdir.as_raw_fd(),
            new.as_ptr(),
            flags,
        )
    })?;
    Ok(())
}

pub fn linkat(
    olddir: BorrowedFd<'_>,
    old: &CStr,
    newdir: BorrowedFd<'_>,
    new: &CStr,
    flags: i32,
) -> Result<()> {
    // SAFETY: plain syscall on valid fds and NUL-terminated names.
    check(unsafe {
        libc::linkat(
            olddir.as_raw_fd(),
            old.as_ptr(),
            newdir.as_raw_fd(),
            new.as_ptr(),
            flags,
        )
    })?;
    Ok(())
}

/// Gives the object of `tmp` (an O_TMPFILE, or any fd of an existing file)
/// a new name in `dir`, through its /proc/self/fd link.
pub fn link_tmpfile(tmp: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &CStr) -> Result<()> {
    let path = proc_fd_path(tmp, None)?;
    // SAFETY: AT_FDCWD with an absolute NUL-terminated path, and a valid target dir fd.
    check(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            path.as_ptr(),
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })?;
    Ok(())
}

/// `/proc/self/fd/N[/name]`: reaches an fd's object (and one entry below it)
/// through the magic link, without building a path to the layer.
pub fn proc_fd_path(fd: BorrowedFd<'_>, name: Option<&CStr>) -> Result<CString> {
    let mut s = format!("/proc/self/fd/{}", fd.as_raw_fd()).into_bytes();
    if let Some(n) = name {
        if !n.to_bytes().is_empty() {
            s.push(b'/');
            s.extend_from_slice(n.to_bytes());
        }
    }
    CString::new(s).map_err(|_| Errno::EINVAL)
}

/// Reopens an O_PATH fd with real access flags. Fails with ELOOP on symlinks.
pub fn reopen(fd: BorrowedFd<'_>, flags: i32) -> Result<OwnedFd> {
    let path = proc_fd_path(fd, None)?;
    // SAFETY: the path is NUL-terminated; the fd returned is fresh.
    let raw = check(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: raw was just returned by open.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

pub fn fchownat(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32, flags: i32) -> Result<()> {
    // SAFETY: plain syscall on a valid fd and NUL-terminated name.
    check(unsafe { libc::fchownat(dir.as_raw_fd(), name.as_ptr(), uid, gid, flags) })?;
    Ok(())
}

/// chmod of one entry, or of `dir` itself when `name` is empty. Symlinks
/// are refused by the kernel (their mode is fixed).
pub fn fchmodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> Result<()> {
    if name.to_bytes().is_empty() {
        let p = proc_fd_path(dir, None)?;
        // SAFETY: absolute NUL-terminated path through the fd's magic link.
        check(unsafe { libc::fchmodat(libc::AT_FDCWD, p.as_ptr(), mode as libc::mode_t, 0) })?;
        return Ok(());
    }
    // SAFETY: plain syscall on a valid fd and NUL-terminated name.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t, 0) })?;
    Ok(())
}

/// Sets times of one entry (never following a symlink), or of `dir` itself
/// when `name` is empty.
pub fn utimens_entry(dir: BorrowedFd<'_>, name: &CStr, atime: Time, mtime: Time) -> Result<()> {
    if name.to_bytes().is_empty() {
        futimens_any(dir, atime, mtime)
    } else {
        utimensat(dir, name, atime, mtime, libc::AT_SYMLINK_NOFOLLOW)
    }
}

pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> Result<()> {
    // SAFETY: plain syscall on a valid fd.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) })?;
    Ok(())
}

/// A timestamp to set: a value, "now", or leave unchanged.
#[derive(Clone, Copy, Debug)]
pub enum Time {
    Omit,
    Now,
    At(i64, i64),
}

impl Time {
    fn to_timespec(self) -> libc::timespec {
        match self {
            Time::Omit => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            Time::Now => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_NOW,
            },
            Time::At(s, ns) => libc::timespec {
                tv_sec: s,
                tv_nsec: ns,
            },
        }
    }
}

pub fn utimensat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    atime: Time,
    mtime: Time,
    flags: i32,
) -> Result<()> {
    let ts = [atime.to_timespec(), mtime.to_timespec()];
    // SAFETY: ts is an array of two timespecs as utimensat requires.
    check(unsafe { libc::utimensat(dir.as_raw_fd(), name.as_ptr(), ts.as_ptr(), flags) })?;
    Ok(())
}

/// Sets times on whatever an fd (also O_PATH, also a symlink) refers to.
pub fn futimens_any(fd: BorrowedFd<'_>, atime: Time, mtime: Time) -> Result<()> {
    utimensat(
        fd,
        EMPTY,
        atime,
        mtime,
        libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
    )
    .or_else(|e| {
        if e == Errno::EINVAL || e == Errno::ENOENT {
            // Older kernels lack AT_EMPTY_PATH for utimensat: go through /proc.
            let p = proc_fd_path(fd, None)?;
            let ts = [atime.to_timespec(), mtime.to_timespec()];
            // SAFETY: absolute NUL-terminated path and a two-element timespec array.
            check(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), ts.as_ptr(), 0) })?;
            Ok(())
        } else {
            Err(e)
        }
    })
}

pub fn fstatfs(fd: BorrowedFd<'_>) -> Result<libc::statfs> {
    let mut st = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: st is writable and large enough.
    check(unsafe { libc::fstatfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatfs succeeded.
    Ok(unsafe { st.assume_init() })
}

pub fn lseek(fd: BorrowedFd<'_>, off: i64, whence: i32) -> Result<i64> {
    // SAFETY: plain syscall on a valid fd.
    check(unsafe { libc::lseek(fd.as_raw_fd(), off, whence) })
}

pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, off: i64, len: i64) -> Result<()> {
    // SAFETY: plain syscall on a valid fd.
    check(unsafe { libc::fallocate(fd.as_raw_fd(), mode, off, len) })?;
    Ok(())
}

pub fn ftruncate(fd: BorrowedFd<'_>, len: i64) -> Result<()> {
    // SAFETY: plain syscall on a valid fd.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), len) })?;
    Ok(())
}

/// Takes an exclusive `flock` on `fd` without waiting: false when another
/// open file holds it. Released when the last fd of this open file closes.
pub fn try_lock_exclusive(fd: BorrowedFd<'_>) -> Result<bool> {
    // SAFETY: plain syscall on a valid fd.
    match check(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }) {
        Ok(_) => Ok(true),
        Err(e) if e == Errno::EAGAIN => Ok(false),
        Err(e) => Err(e),
    }
}

pub fn fsync(fd: BorrowedFd<'_>, datasync: bool) -> Result<()> {
    // SAFETY: plain syscalls on a valid fd.
    check(unsafe {
        if datasync {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    })?;
    Ok(())
}

pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], off: i64) -> Result<usize> {
    loop {
        // SAFETY: buf is writable for buf.len() bytes.
        let r = unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), off) };
        match check(r) {
            Err(Errno::EINTR) => continue,
            other => return other.map(|n| n as usize),
        }
    }
}

pub fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], off: i64) -> Result<usize> {
    loop {
        // SAFETY: buf is readable for buf.len() bytes.
        let r = unsafe { libc::pwrite(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), off) };
        match check(r) {
            Err(Errno::EINTR) => continue,
            other => return other.map(|n| n as usize),
        }
    }
}

/// Writes at the end of the file (for O_APPEND handles).
pub fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> Result<usize> {
    loop {
        // SAFETY: buf is readable for buf.len() bytes.
        let r = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        match check(r) {
            Err(Errno::EINTR) => continue,
            other => return other.map(|n| n as usize),
        }
    }
}

/// copy_file_range with explicit offsets; returns bytes copied (0 at EOF).
pub fn copy_file_range(
    src: BorrowedFd<'_>,
    src_off: &mut i64,
    dst: BorrowedFd<'_>,
    dst_off: &mut i64,
    len: usize,
) -> Result<usize> {
    // SAFETY: offsets point to valid i64s; fds are valid.
    let r = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            src_off as *mut i64,
            dst.as_raw_fd(),
            dst_off as *mut i64,
            len,
            0,
        )
    };
    check(r).map(|n| n as usize)
}

/// A file handle as name_to_handle_at(2) returns it: (handle_type, bytes).
pub fn name_to_handle(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> Result<(i32, Vec<u8>)> {
    const MAX: usize = 128;
    // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; }
    let mut buf = [0u32; 2 + MAX / 4];
    buf[0] = MAX as u32;
    let mut mount_id: libc::c_int = 0;
    // SAFETY: buf is a properly aligned file_handle with room for MAX bytes.
    check(unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr(),
            &mut mount_id as *mut libc::c_int,
            flags,
        )
    } as i32)?;
    let len = (buf[0] as usize).min(MAX);
    let typ = buf[1] as i32;
    let bytes: Vec<u8> = buf[2..]
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .take(len)
        .collect();
    Ok((typ, bytes))
}

/// The filesystem UUID (FS_IOC_GETFSUUID), if the filesystem has one.
pub fn fs_uuid(fd: BorrowedFd<'_>) -> Option<[u8; 16]> {
    #[repr(C)]
    struct FsUuid2 {
        len: u8,
        uuid: [u8; 16],
    }
    const FS_IOC_GETFSUUID: libc::c_ulong = 0x8011_1500;
    let mut u = FsUuid2 {
        len: 0,
        uuid: [0; 16],
    };
    // SAFETY: u matches struct fsuuid2 and is writable.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_GETFSUUID, &mut u as *mut FsUuid2) };
    (r == 0 && u.len == 16).then_some(u.uuid)
}

/// Borrow helper so callers can write `sys::fs::bfd(&owned)`.
pub fn bfd<F: AsFd>(f: &F) -> BorrowedFd<'_> {
    f.as_fd()
}

/// The current directory as a dir fd, for opening user-given paths at startup.
pub fn cwd() -> BorrowedFd<'static> {
    // SAFETY: AT_FDCWD is a valid dirfd for the lifetime of the process.
    unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) }
}

/// open_by_handle_at(2): the object a file handle names on `mount_fd`'s
/// filesystem. Needs CAP_DAC_READ_SEARCH.
pub fn open_by_handle(
    mount_fd: BorrowedFd<'_>,
    handle_type: i32,
    fid: &[u8],
    flags: i32,
) -> Result<OwnedFd> {
    const MAX: usize = 128;
    if fid.len() > MAX {
        return Err(Errno::EINVAL);
    }
    let mut buf = [0u32; 2 + MAX / 4];
    buf[0] = fid.len() as u32;
    buf[1] = handle_type as u32;
    for (i, chunk) in fid.chunks(4).enumerate() {
        let mut w = [0u8; 4];
        w[..chunk.len()].copy_from_slice(chunk);
        buf[2 + i] = u32::from_ne_bytes(w);
    }
    // SAFETY: buf is a properly aligned struct file_handle holding fid.len() bytes.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_fd.as_raw_fd(),
            buf.as_mut_ptr(),
            flags | libc::O_CLOEXEC,
        )
    } as i32)?;
    // SAFETY: fd was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An all-zero `stat`, for replies that need a placeholder.
pub fn zeroed_stat() -> libc::stat {
    // SAFETY: libc::stat is plain old data; all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

/// Sets or clears O_NONBLOCK on an open file.
pub fn set_nonblock(fd: BorrowedFd<'_>, on: bool) -> Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a valid fd take and return plain ints.
    let flags = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    let new = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    if new != flags {
        // SAFETY: as above.
        check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, new) })?;
    }
    Ok(())
}
