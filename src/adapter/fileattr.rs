//! The ioctls the adapter answers: the kernel's fileattr requests
//! (`FS_IOC_GETFLAGS`/`SETFLAGS`, `FS_IOC_FSGETXATTR`/`FSSETXATTR`), which
//! FUSE sends after a private open of the file or dir for `lsattr`,
//! `chattr` and the VFS's own flag checks. Every other ioctl is ENOTTY.

use crate::errno::{Errno, Result};
use crate::sys::fileattr::{
    FsXattr, FS_IOC32_GETFLAGS, FS_IOC32_SETFLAGS, FS_IOC_FSGETXATTR, FS_IOC_FSSETXATTR,
    FS_IOC_GETFLAGS, FS_IOC_SETFLAGS,
};
use crate::union::Union;

/// The reply data of ioctl `cmd` on `ino` (open as `fh`) with input `input`.
pub(super) fn answer(fs: &Union, ino: u64, fh: u64, cmd: u32, input: &[u8]) -> Result<Vec<u8>> {
    let fh = Some(fh);
    match cmd {
        FS_IOC_GETFLAGS | FS_IOC32_GETFLAGS => {
            fs.get_flags(ino, fh).map(|f| f.to_ne_bytes().to_vec())
        }
        FS_IOC_SETFLAGS | FS_IOC32_SETFLAGS => {
            let flags = input
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_ne_bytes)
                .ok_or(Errno::EINVAL)?;
            fs.set_flags(ino, fh, flags).map(|()| Vec::new())
        }
        FS_IOC_FSGETXATTR => fs.get_fsxattr(ino, fh).map(|fa| fa.to_bytes()),
        FS_IOC_FSSETXATTR => {
            let fa = FsXattr::from_bytes(input).ok_or(Errno::EINVAL)?;
            fs.set_fsxattr(ino, fh, fa).map(|()| Vec::new())
        }
        // Others stay unanswered without a log line each (callers probe many).
        _ => Err(Errno::ENOTTY),
    }
}
