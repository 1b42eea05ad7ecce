//! Reading a directory through an fd with getdents64, no path-based readdir.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStringExt;

use super::check;
use crate::errno::Result;

/// One raw directory entry.
#[derive(Debug, Clone)]
pub struct RawEntry {
    pub ino: u64,
    pub d_type: u8,
    pub name: OsString,
}

/// Reads every entry of an open (O_RDONLY|O_DIRECTORY) dir fd, skipping `.` and `..`.
pub fn read_all(fd: BorrowedFd<'_>) -> Result<Vec<RawEntry>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: buf is writable for buf.len() bytes; the kernel writes whole records.
        let n = check(unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                fd.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        })? as usize;
        if n == 0 {
            return Ok(out);
        }
        parse(&buf[..n.min(buf.len())], &mut out);
    }
}

/// Parses linux_dirent64 records: u64 ino, i64 off, u16 reclen, u8 type, name.
fn parse(mut b: &[u8], out: &mut Vec<RawEntry>) {
    while b.len() >= 19 {
        let ino = u64::from_ne_bytes(b[0..8].try_into().unwrap_or([0; 8]));
        let reclen = u16::from_ne_bytes([b[16], b[17]]) as usize;
        if reclen < 19 || reclen > b.len() {
            return;
        }
        let d_type = b[18];
        let raw = &b[19..reclen];
        let end = raw.iter().position(|c| *c == 0).unwrap_or(raw.len());
        let name = &raw[..end];
        if name != b"." && name != b".." {
            out.push(RawEntry {
                ino,
                d_type,
                name: OsString::from_vec(name.to_vec()),
            });
        }
        b = &b[reclen..];
    }
}
