//! Extended attributes of one entry below a dir fd, without following a
//! symlink. Uses the `*xattrat` syscalls (Linux 6.13+), which work on
//! O_PATH fds and fifos/devices/symlinks alike; on older kernels falls back
//! to the `l*xattr` calls on `/proc/self/fd/DIR/NAME`. An empty NAME means
//! the object of DIR itself.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use super::check;
use super::fs::proc_fd_path;
use crate::errno::{Errno, Result};

const SYS_SETXATTRAT: libc::c_long = 463;
const SYS_GETXATTRAT: libc::c_long = 464;
const SYS_LISTXATTRAT: libc::c_long = 465;
const SYS_REMOVEXATTRAT: libc::c_long = 466;

/// Cleared once the kernel answers ENOSYS to an `*xattrat` call.
static HAVE_AT: AtomicBool = AtomicBool::new(true);

#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

fn at_flags(name: &CStr) -> libc::c_uint {
    if name.to_bytes().is_empty() {
        libc::AT_EMPTY_PATH as libc::c_uint
    } else {
        libc::AT_SYMLINK_NOFOLLOW as libc::c_uint
    }
}

/// Runs an `*xattrat` call; None means "not supported, use the fallback".
/// With an empty name the call would need a non-O_PATH fd (EBADF), so the
/// object itself always goes through /proc.
fn try_at(name: &CStr, f: impl FnOnce() -> libc::c_long) -> Option<Result<usize>> {
    if name.to_bytes().is_empty() || !HAVE_AT.load(Ordering::Relaxed) {
        return None;
    }
    match check(f()) {
        Err(e) if e == Errno::ENOSYS => {
            HAVE_AT.store(false, Ordering::Relaxed);
            None
        }
        r => Some(r.map(|n| n as usize)),
    }
}

fn get_into(dir: BorrowedFd<'_>, name: &CStr, key: &CStr, buf: &mut [u8]) -> Result<usize> {
    let mut args = XattrArgs {
        value: buf.as_mut_ptr() as u64,
        size: buf.len() as u32,
        flags: 0,
    };
    let at = try_at(name, || {
        // SAFETY: args describes a writable buffer; strings are NUL-terminated.
        unsafe {
            libc::syscall(
                SYS_GETXATTRAT,
                dir.as_raw_fd(),
                name.as_ptr(),
                at_flags(name),
                key.as_ptr(),
                &mut args as *mut XattrArgs,
                std::mem::size_of::<XattrArgs>(),
            )
        }
    });
    if let Some(r) = at {
        return r;
    }
    let path = proc_fd_path(dir, Some(name))?;
    let get = if name.to_bytes().is_empty() {
        libc::getxattr
    } else {
        libc::lgetxattr
    };
    // SAFETY: path/key are NUL-terminated; buf is writable for its length.
    let r = unsafe {
        get(
            path.as_ptr(),
            key.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    check(r).map(|n| n as usize)
}

/// Reads an xattr value; ENODATA if absent.
pub fn get(dir: BorrowedFd<'_>, name: &CStr, key: &CStr) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match get_into(dir, name, key, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::ERANGE) if buf.len() < 1 << 17 => {
                let l = buf.len() * 4;
                buf.resize(l, 0);
            }
            Err(e) => return Err(e),
        }
    }
}

pub fn set(dir: BorrowedFd<'_>, name: &CStr, key: &CStr, value: &[u8], flags: i32) -> Result<()> {
    let args = XattrArgs {
        value: value.as_ptr() as u64,
        size: value.len() as u32,
        flags: flags as u32,
    };
    let at = try_at(name, || {
        // SAFETY: args describes a readable buffer; strings are NUL-terminated.
        unsafe {
            libc::syscall(
                SYS_SETXATTRAT,
                dir.as_raw_fd(),
                name.as_ptr(),
                at_flags(name),
                key.as_ptr(),
                &args as *const XattrArgs,
                std::mem::size_of::<XattrArgs>(),
            )
        }
    });
    if let Some(r) = at {
        return r.map(|_| ());
    }
    let path = proc_fd_path(dir, Some(name))?;
    let setx = if name.to_bytes().is_empty() {
        libc::setxattr
    } else {
        libc::lsetxattr
    };
    // SAFETY: path/key are NUL-terminated; value is readable for its length.
    check(unsafe {
        setx(
            path.as_ptr(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })?;
    Ok(())
}

pub fn remove(dir: BorrowedFd<'_>, name: &CStr, key: &CStr) -> Result<()> {
    let at = try_at(name, || {
        // SAFETY: strings are NUL-terminated.
        unsafe {
            libc::syscall(
                SYS_REMOVEXATTRAT,
                dir.as_raw_fd(),
                name.as_ptr(),
                at_flags(name),
                key.as_ptr(),
            )
        }
    });
    if let Some(r) = at {
        return r.map(|_| ());
    }
    let path = proc_fd_path(dir, Some(name))?;
    let rm = if name.to_bytes().is_empty() {
        libc::removexattr
    } else {
        libc::lremovexattr
    };
    // SAFETY: path/key are NUL-terminated.
    check(unsafe { rm(path.as_ptr(), key.as_ptr()) })?;
    Ok(())
}

fn list_into(dir: BorrowedFd<'_>, name: &CStr, buf: &mut [u8]) -> Result<usize> {
    let at = try_at(name, || {
        // SAFETY: buf is writable for its length; name is NUL-terminated.
        unsafe {
            libc::syscall(
                SYS_LISTXATTRAT,
                dir.as_raw_fd(),
                name.as_ptr(),
                at_flags(name),
                buf.as_mut_ptr(),
                buf.len(),
            )
        }
    });
    if let Some(r) = at {
        return r;
    }
    let path = proc_fd_path(dir, Some(name))?;
    let lst = if name.to_bytes().is_empty() {
        libc::listxattr
    } else {
        libc::llistxattr
    };
    // SAFETY: path is NUL-terminated; buf is writable for its length.
    let r = unsafe { lst(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    check(r).map(|n| n as usize)
}

/// All xattr names of an entry.
pub fn list(dir: BorrowedFd<'_>, name: &CStr) -> Result<Vec<Vec<u8>>> {
    let mut buf = vec![0u8; 1024];
    let n = loop {
        match list_into(dir, name, &mut buf) {
            Ok(n) => break n,
            Err(Errno::ERANGE) if buf.len() < 1 << 20 => {
                let l = buf.len() * 4;
                buf.resize(l, 0);
            }
            Err(e) => return Err(e),
        }
    };
    Ok(buf[..n]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| s.to_vec())
        .collect())
}
