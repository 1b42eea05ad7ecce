//! Inode flags (`chattr`/`lsattr`): the `FS_IOC_GETFLAGS`/`SETFLAGS` and
//! `FS_IOC_FSGETXATTR`/`FSSETXATTR` ioctls on open fds, the statx
//! attribute bits that show immutable/append-only without an open, and the
//! `sync_file_range` wait that reports a file's writeback error without
//! starting a sync.

use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::check;
use crate::errno::Result;

/// `FS_IOC_GETFLAGS` (`_IOR('f', 1, long)`) and its 32-bit form.
pub const FS_IOC_GETFLAGS: u32 = 0x8008_6601;
pub const FS_IOC32_GETFLAGS: u32 = 0x8004_6601;
/// `FS_IOC_SETFLAGS` (`_IOW('f', 2, long)`) and its 32-bit form.
pub const FS_IOC_SETFLAGS: u32 = 0x4008_6602;
pub const FS_IOC32_SETFLAGS: u32 = 0x4004_6602;
/// `FS_IOC_FSGETXATTR` / `FS_IOC_FSSETXATTR` (`struct fsxattr`, 28 bytes).
pub const FS_IOC_FSGETXATTR: u32 = 0x801c_581f;
pub const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;

pub const FS_IMMUTABLE_FL: u32 = 0x10;
pub const FS_APPEND_FL: u32 = 0x20;
pub const FS_SYNC_FL: u32 = 0x8;
pub const FS_NOATIME_FL: u32 = 0x80;
pub const FS_XFLAG_IMMUTABLE: u32 = 0x8;
pub const FS_XFLAG_APPEND: u32 = 0x10;
pub const FS_XFLAG_SYNC: u32 = 0x20;
pub const FS_XFLAG_NOATIME: u32 = 0x40;

/// `struct fsxattr` from `<linux/fs.h>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsXattr {
    pub xflags: u32,
    pub extsize: u32,
    pub nextents: u32,
    pub projid: u32,
    pub cowextsize: u32,
    pub pad: [u8; 8],
}

pub const FSXATTR_SIZE: usize = std::mem::size_of::<FsXattr>();

impl FsXattr {
    pub fn from_bytes(b: &[u8]) -> Option<FsXattr> {
        let word = |i: usize| {
            b.get(i * 4..i * 4 + 4)
                .and_then(|w| w.try_into().ok())
                .map(u32::from_ne_bytes)
        };
        let mut pad = [0u8; 8];
        pad.copy_from_slice(b.get(20..28)?);
        Some(FsXattr {
            xflags: word(0)?,
            extsize: word(1)?,
            nextents: word(2)?,
            projid: word(3)?,
            cowextsize: word(4)?,
            pad,
        })
    }

    pub fn to_bytes(self) -> Vec<u8> {
        let mut v = Vec::with_capacity(FSXATTR_SIZE);
        for w in [
            self.xflags,
            self.extsize,
            self.nextents,
            self.projid,
            self.cowextsize,
        ] {
            v.extend_from_slice(&w.to_ne_bytes());
        }
        v.extend_from_slice(&self.pad);
        v
    }
}

/// The inode flags of an open (not O_PATH) fd.
pub fn get_flags(fd: BorrowedFd<'_>) -> Result<u32> {
    let mut flags: libc::c_int = 0;
    // SAFETY: the kernel writes one int (the flags are an int despite the
    // `long` in the ioctl number) into `flags`, which outlives the call.
    check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            FS_IOC_GETFLAGS as libc::Ioctl,
            &mut flags as *mut libc::c_int,
        )
    })?;
    Ok(flags as u32)
}

pub fn set_flags(fd: BorrowedFd<'_>, flags: u32) -> Result<()> {
    let flags = flags as libc::c_int;
    // SAFETY: the kernel reads one int from `flags`, which outlives the call.
    check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            FS_IOC_SETFLAGS as libc::Ioctl,
            &flags as *const libc::c_int,
        )
    })?;
    Ok(())
}

pub fn get_fsxattr(fd: BorrowedFd<'_>) -> Result<FsXattr> {
    let mut fa = FsXattr::default();
    // SAFETY: `fa` has the layout of `struct fsxattr`, which the kernel fills.
    check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            FS_IOC_FSGETXATTR as libc::Ioctl,
            &mut fa as *mut FsXattr,
        )
    })?;
    Ok(fa)
}

pub fn set_fsxattr(fd: BorrowedFd<'_>, fa: &FsXattr) -> Result<()> {
    // SAFETY: `fa` has the layout of `struct fsxattr`, which the kernel reads.
    check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            FS_IOC_FSSETXATTR as libc::Ioctl,
            fa as *const FsXattr,
        )
    })?;
    Ok(())
}

/// The immutable/append-only bits (as `FS_*_FL`) of one entry below `dir`
/// (or of `dir` itself for an empty name), from statx without opening it.
pub fn protection_bits(dir: BorrowedFd<'_>, name: &CStr) -> Result<u32> {
    let mut stx = MaybeUninit::<libc::statx>::zeroed();
    let flags = if name.to_bytes().is_empty() {
        libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    // SAFETY: stx is writable memory of the right size; name is NUL-terminated.
    check(unsafe { libc::statx(dir.as_raw_fd(), name.as_ptr(), flags, 0, stx.as_mut_ptr()) })?;
    // SAFETY: statx succeeded and filled stx (zeroed before, so no field is uninit).
    let stx = unsafe { stx.assume_init() };
    let attrs = stx.stx_attributes & stx.stx_attributes_mask;
    let mut out = 0;
    if attrs & libc::STATX_ATTR_IMMUTABLE as u64 != 0 {
        out |= FS_IMMUTABLE_FL;
    }
    if attrs & libc::STATX_ATTR_APPEND as u64 != 0 {
        out |= FS_APPEND_FL;
    }
    Ok(out)
}

/// Waits for the writeback already under way on `fd` and reports a
/// writeback error of its file not yet reported to this fd (the errseq
/// check of `file_fdatawait_range`). Starts no writeback and no flush.
pub fn writeback_error(fd: BorrowedFd<'_>) -> Result<()> {
    // SAFETY: plain syscall on a valid fd.
    check(unsafe {
        libc::sync_file_range(fd.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WAIT_BEFORE)
    })?;
    Ok(())
}
