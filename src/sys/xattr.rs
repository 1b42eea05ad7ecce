//! Extended attributes of one entry below a dir fd, without following a
//! symlink: the `l*xattr` calls on `/proc/self/fd/DIR/NAME`. That reaches
//! fifos, devices and symlinks too, which an fd opened for reading could not.
//! An empty NAME means the object of DIR itself, reached through the magic
//! link with the following variants.

use std::ffi::CStr;
use std::os::fd::BorrowedFd;

use super::check;
use super::fs::proc_fd_path;
use crate::errno::{Errno, Result};

/// Reads an xattr value; ENODATA if absent.
pub fn get(dir: BorrowedFd<'_>, name: &CStr, key: &CStr) -> Result<Vec<u8>> {
    let path = proc_fd_path(dir, Some(name))?;
    let mut buf = vec![0u8; 256];
    loop {
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
        match check(r) {
            Ok(n) => {
                buf.truncate(n as usize);
                return Ok(buf);
            }
            Err(Errno::ERANGE) if buf.len() < 65536 * 2 => {
                // SAFETY: size query with a null buffer.
                let need =
                    check(unsafe { get(path.as_ptr(), key.as_ptr(), std::ptr::null_mut(), 0) })?;
                buf.resize((need as usize).max(buf.len() * 2), 0);
            }
            Err(e) => return Err(e),
        }
    }
}

pub fn set(dir: BorrowedFd<'_>, name: &CStr, key: &CStr, value: &[u8], flags: i32) -> Result<()> {
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

/// All xattr names, as the raw NUL-separated list split into entries.
pub fn list(dir: BorrowedFd<'_>, name: &CStr) -> Result<Vec<Vec<u8>>> {
    let path = proc_fd_path(dir, Some(name))?;
    let mut buf = vec![0u8; 1024];
    let n = loop {
        let lst = if name.to_bytes().is_empty() {
            libc::listxattr
        } else {
            libc::llistxattr
        };
        // SAFETY: path is NUL-terminated; buf is writable for its length.
        let r = unsafe { lst(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match check(r) {
            Ok(n) => break n as usize,
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
