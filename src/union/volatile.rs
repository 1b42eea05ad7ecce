//! The sync status of a `volatile` mount, as the kernel's
//! `ovl_sync_status`: fsync and syncfs skip the upper, but once the upper
//! has had a writeback error since the mount, every later fsync fails with
//! the latest such error, for good ("the filesystem will not recover",
//! Documentation/filesystems/overlayfs.rst, "Volatile mount").
//!
//! The kernel compares the upper superblock's writeback errseq with a
//! sample taken at mount. Userspace can read that errseq only through
//! syncfs, which would sync. So the errors are read per file, without
//! syncing: `sync_file_range(WAIT_BEFORE)` reports a writeback error of the
//! file not yet reported to that fd. Each open upper file is asked at every
//! fsync; an error is latched mount-wide. A writeback error of a file no
//! longer open through the union is missed (a deviation).

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;

use crate::errno::{Errno, Result};
use crate::sys;

use super::Union;

impl Union {
    /// What an fsync (or fsyncdir) of a volatile mount answers.
    pub(super) fn volatile_sync_status(&self) -> Result<()> {
        let handles: Vec<_> = self
            .files
            .iter()
            .filter(|h| h.is_upper())
            .map(|h| h.clone())
            .collect();
        for h in handles {
            // EBADF/EINVAL: the call does not apply; anything else is the
            // error the writeback of that file met.
            if let Err(e) = sys::fileattr::writeback_error(h.fd().as_fd()) {
                if e != Errno::EBADF && e != Errno::EINVAL {
                    self.wb_error.store(e.raw(), Ordering::Release);
                }
            }
        }
        match self.wb_error.load(Ordering::Acquire) {
            0 => Ok(()),
            raw => Err(Errno::from_raw(raw)),
        }
    }
}
