//! Thin wrappers around the few syscalls std does not offer (mknod, xattrs,
//! renameat2, umount2, utimensat, fallocate, lseek, flock, mmap, statfs,
//! getdents64, *at calls, kill, close). This module holds every `unsafe` block of the
//! test suite; each one is a single libc call on valid, owned arguments.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// Converts a path or name to a C string; test paths never contain NUL.
pub fn cstr(p: impl AsRef<OsStr>) -> CString {
    CString::new(p.as_ref().as_bytes()).expect("test path contains a NUL byte")
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// mknod(2); `mode` includes the file type bits (S_IFCHR, S_IFIFO, ...).
pub fn mknod(path: &Path, mode: u32, major: u32, minor: u32) -> io::Result<()> {
    let p = cstr(path);
    // SAFETY: `p` is a valid NUL-terminated string that outlives the call.
    check(unsafe { libc::mknod(p.as_ptr(), mode, libc::makedev(major, minor)) }).map(drop)
}

/// lsetxattr(2) (does not follow a final symlink).
pub fn lsetxattr(path: &Path, name: &str, value: &[u8], flags: i32) -> io::Result<()> {
    set_xattr_with(libc::lsetxattr, path, name, value, flags)
}

/// The signature lsetxattr(2) and setxattr(2) share.
type SetXattr = unsafe extern "C" fn(
    *const libc::c_char,
    *const libc::c_char,
    *const libc::c_void,
    libc::size_t,
    libc::c_int,
) -> libc::c_int;

fn set_xattr_with(
    f: SetXattr,
    path: &Path,
    name: &str,
    value: &[u8],
    flags: i32,
) -> io::Result<()> {
    let p = cstr(path);
    let n = cstr(name);
    // SAFETY: `f` is lsetxattr or setxattr; valid C strings and a (ptr, len)
    // pair from a live slice.
    check(unsafe {
        f(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

/// lgetxattr(2), returning the whole value.
pub fn lgetxattr(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    let p = cstr(path);
    let n = cstr(name);
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: valid C strings; `buf` is writable for `buf.len()` bytes.
        let r =
            unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match check_size(r) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => {
                let l = buf.len() * 4;
                buf.resize(l, 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// fsetxattr(2).
pub fn fsetxattr(fd: BorrowedFd<'_>, name: &str, value: &[u8]) -> io::Result<()> {
    let n = cstr(name);
    // SAFETY: a valid fd and C string, and a (ptr, len) pair from a live slice.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// fgetxattr(2) of a value of at most 256 bytes.
pub fn fgetxattr(fd: BorrowedFd<'_>, name: &str) -> io::Result<Vec<u8>> {
    let n = cstr(name);
    let mut buf = vec![0u8; 256];
    // SAFETY: a valid fd and C string; `buf` is writable for `buf.len()` bytes.
    let r = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            n.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    buf.truncate(check_size(r)?);
    Ok(buf)
}

/// tcgetattr(3), the ioctl behind isatty(3).
pub fn tcgetattr(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a valid fd and a zeroed termios the call may fill.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `t` outlives the call.
    check(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) }).map(drop)
}

/// close(2), with its error (dropping a File ignores it).
pub fn close(fd: OwnedFd) -> io::Result<()> {
    use std::os::fd::IntoRawFd;
    // SAFETY: the fd is owned and given up here, so it is closed once.
    check(unsafe { libc::close(fd.into_raw_fd()) }).map(drop)
}

/// llistxattr(2), split into names.
pub fn llistxattr(path: &Path) -> io::Result<Vec<String>> {
    let p = cstr(path);
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: valid C string; `buf` is writable for `buf.len()` bytes.
        let r = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match check_size(r) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(buf
                    .split(|b| *b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect());
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => {
                let l = buf.len() * 4;
                buf.resize(l, 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// lremovexattr(2).
pub fn lremovexattr(path: &Path, name: &str) -> io::Result<()> {
    let p = cstr(path);
    let n = cstr(name);
    // SAFETY: valid C strings.
    check(unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) }).map(drop)
}

/// renameat2(2) with AT_FDCWD-relative paths.
pub fn renameat2(old: &Path, new: &Path, flags: u32) -> io::Result<()> {
    let o = cstr(old);
    let n = cstr(new);
    // SAFETY: raw syscall with valid C strings; AT_FDCWD needs no fd.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            o.as_ptr(),
            libc::AT_FDCWD,
            n.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// umount2(2).
pub fn umount2(path: &Path, flags: i32) -> io::Result<()> {
    let p = cstr(path);
    // SAFETY: valid C string.
    check(unsafe { libc::umount2(p.as_ptr(), flags) }).map(drop)
}

/// A timestamp for [`utimensat`]: seconds and nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ts(pub i64, pub i64);

/// utimensat(2) on a path; `nofollow` sets AT_SYMLINK_NOFOLLOW (lutimes).
pub fn utimensat(path: &Path, atime: Ts, mtime: Ts, nofollow: bool) -> io::Result<()> {
    let p = cstr(path);
    let times = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    let flags = if nofollow {
        libc::AT_SYMLINK_NOFOLLOW
    } else {
        0
    };
    // SAFETY: valid C string and a two-element timespec array.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), flags) }).map(drop)
}

/// truncate(2) by path (FUSE setattr(size) without an open file).
pub fn truncate(path: &Path, len: i64) -> io::Result<()> {
    let p = cstr(path);
    // SAFETY: valid C string.
    check(unsafe { libc::truncate(p.as_ptr(), len) }).map(drop)
}

/// fallocate(2).
pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, off: i64, len: i64) -> io::Result<()> {
    // SAFETY: `fd` is a live descriptor borrowed for the call.
    check(unsafe { libc::fallocate(fd.as_raw_fd(), mode, off, len) }).map(drop)
}

/// lseek(2), returning the new offset.
pub fn lseek(fd: BorrowedFd<'_>, off: i64, whence: i32) -> io::Result<i64> {
    // SAFETY: `fd` is a live descriptor borrowed for the call.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), off, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// flock(2).
pub fn flock(fd: BorrowedFd<'_>, op: i32) -> io::Result<()> {
    // SAFETY: `fd` is a live descriptor borrowed for the call.
    check(unsafe { libc::flock(fd.as_raw_fd(), op) }).map(drop)
}

/// statfs(2).
pub fn statfs(path: &Path) -> io::Result<libc::statfs> {
    let p = cstr(path);
    // SAFETY: all-zero is a valid bit pattern for the plain-data statfs struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and a writable statfs struct.
    check(unsafe { libc::statfs(p.as_ptr(), &mut st) })?;
    Ok(st)
}

/// statvfs(3).
pub fn statvfs(path: &Path) -> io::Result<libc::statvfs> {
    let p = cstr(path);
    // SAFETY: all-zero is a valid bit pattern for the plain-data statvfs struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and a writable statvfs struct.
    check(unsafe { libc::statvfs(p.as_ptr(), &mut st) })?;
    Ok(st)
}

/// kill(2).
pub fn kill(pid: u32, sig: i32) -> io::Result<()> {
    // SAFETY: plain syscall on integers.
    check(unsafe { libc::kill(pid as libc::pid_t, sig) }).map(drop)
}

/// openat(2) relative to a directory fd; always O_CLOEXEC.
pub fn openat(dir: BorrowedFd<'_>, name: &OsStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let n = cstr(name);
    // SAFETY: live dir fd, valid C string.
    let fd =
        check(unsafe { libc::openat(dir.as_raw_fd(), n.as_ptr(), flags | libc::O_CLOEXEC, mode) })?;
    // SAFETY: `fd` was just returned by openat and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// mkdirat(2).
pub fn mkdirat(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    let n = cstr(name);
    // SAFETY: live dir fd, valid C string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), n.as_ptr(), mode) }).map(drop)
}

/// unlinkat(2); `flags` may be AT_REMOVEDIR.
pub fn unlinkat(dir: BorrowedFd<'_>, name: &OsStr, flags: i32) -> io::Result<()> {
    let n = cstr(name);
    // SAFETY: live dir fd, valid C string.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), n.as_ptr(), flags) }).map(drop)
}

/// One entry returned by getdents64(2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dirent {
    pub ino: u64,
    pub off: i64,
    pub d_type: u8,
    pub name: OsString,
}

/// One getdents64(2) call with a buffer of `buf_len` bytes; empty at end of dir.
pub fn getdents64(fd: BorrowedFd<'_>, buf_len: usize) -> io::Result<Vec<Dirent>> {
    let mut buf = vec![0u8; buf_len];
    // SAFETY: live fd; `buf` is writable for `buf.len()` bytes.
    let n = check_long(unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            fd.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    })? as usize;
    let mut out = Vec::new();
    let mut pos = 0;
    // struct linux_dirent64 { u64 d_ino; s64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
    while pos < n {
        let rec = &buf[pos..n];
        let ino = u64::from_ne_bytes(rec[0..8].try_into().unwrap());
        let off = i64::from_ne_bytes(rec[8..16].try_into().unwrap());
        let reclen = u16::from_ne_bytes(rec[16..18].try_into().unwrap()) as usize;
        let d_type = rec[18];
        let name_bytes = &rec[19..reclen];
        let end = name_bytes
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(name_bytes.len());
        out.push(Dirent {
            ino,
            off,
            d_type,
            name: OsString::from_vec(name_bytes[..end].to_vec()),
        });
        pos += reclen;
    }
    Ok(out)
}

/// A MAP_SHARED read/write mapping, unmapped on drop.
pub struct SharedMap {
    ptr: *mut libc::c_void,
    len: usize,
}

impl SharedMap {
    /// mmap(2) `len` bytes of `fd` from offset 0 with PROT_READ|PROT_WRITE, MAP_SHARED.
    pub fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<SharedMap> {
        // SAFETY: a fresh mapping chosen by the kernel (addr NULL) of a live fd.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedMap { ptr, len })
    }

    /// The mapped bytes.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` maps `len` readable and writable bytes for the lifetime
        // of `self`, and `&mut self` makes this the only live slice.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.cast::<u8>(), self.len) }
    }

    /// msync(2) with MS_SYNC.
    pub fn sync(&self) -> io::Result<()> {
        // SAFETY: `ptr`/`len` describe our own live mapping.
        check(unsafe { libc::msync(self.ptr, self.len, libc::MS_SYNC) }).map(drop)
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe our own mapping, unmapped exactly once.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// openat2(2) with RESOLVE_* flags (e.g. RESOLVE_IN_ROOT, to resolve symlinks
/// as a process chrooted at `dir` would); always O_CLOEXEC.
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &Path,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let p = cstr(path);
    // SAFETY: all-zero is a valid bit pattern for the plain-data open_how struct.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = mode as u64;
    how.resolve = resolve;
    // RESOLVE_IN_ROOT/BENEATH fail with EAGAIN when any rename on the
    // machine races with a `..` step (rename_lock is global): retry.
    let mut tries = 0;
    let fd = loop {
        // SAFETY: live dir fd, valid C string, and a pointer/size pair for `how`.
        let r = check_long(unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                p.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        });
        match r {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && tries < 100 => tries += 1,
            r => break r?,
        }
    };
    // SAFETY: `fd` was just returned by openat2 and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// setxattr(2), following a final symlink (as `setfattr` does).
pub fn setxattr(path: &Path, name: &str, value: &[u8], flags: i32) -> io::Result<()> {
    set_xattr_with(libc::setxattr, path, name, value, flags)
}

/// removexattr(2), following a final symlink.
pub fn removexattr(path: &Path, name: &str) -> io::Result<()> {
    let p = cstr(path);
    let n = cstr(name);
    // SAFETY: valid C strings.
    check(unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) }).map(drop)
}
