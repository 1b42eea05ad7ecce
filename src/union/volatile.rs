//! The sync status of a `volatile` mount, as the kernel's
//! `ovl_sync_status`: fsync and syncfs skip the upper, but once the upper
//! has had a writeback error since the mount, every later fsync fails with
//! the latest such error, for good ("the filesystem will not recover",
//! Documentation/filesystems/overlayfs.rst, "Volatile mount").
//!
//! The kernel compares the upper superblock's writeback errseq with a
//! sample taken at mount. Userspace reads that errseq only through syncfs,
//! which would sync. So the errors are read per file, without syncing:
//! `sync_file_range(WAIT_BEFORE)` reports a writeback error of the file not
//! yet reported to that fd. At every fsync each open upper file is asked,
//! and so are the last `WATCHED` written files closed; an error is latched
//! mount-wide. A writeback error of a file closed longer ago is missed.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::errno::{Errno, Result};
use crate::sys;

use super::files::FileHandle;
use super::Union;

/// How many closed written files a volatile mount keeps asking.
const WATCHED: usize = 256;

impl Union {
    /// What an fsync (or fsyncdir) of a volatile mount answers.
    pub(super) fn volatile_sync_status(&self) -> Result<()> {
        let mut fds: Vec<Arc<OwnedFd>> = self
            .files
            .iter()
            .filter(|h| h.is_upper())
            .map(|h| h.fd())
            .collect();
        fds.extend(self.wb_watch.lock().iter().cloned());
        for fd in fds {
            // EBADF/EINVAL: the call does not apply; anything else is the
            // error the writeback of that file met.
            if let Err(e) = sys::fileattr::writeback_error(fd.as_fd()) {
                if e != Errno::EBADF && e != Errno::EINVAL {
                    self.wb_error.store(e.raw(), Ordering::Release);
                }
            }
        }
        // A removed file's space is not held for long.
        self.wb_watch
            .lock()
            .retain(|fd| sys::fs::fstat(fd.as_fd()).is_ok_and(|st| st.st_nlink > 0));
        match self.wb_error.load(Ordering::Acquire) {
            0 => Ok(()),
            raw => Err(Errno::from_raw(raw)),
        }
    }

    /// Keeps a closed written upper file of a volatile mount asked.
    pub(super) fn watch_released(&self, h: &FileHandle) {
        if !self.opts.volatile || !h.writable() || !h.is_upper() {
            return;
        }
        let mut w = self.wb_watch.lock();
        if w.len() == WATCHED {
            w.pop_front();
        }
        w.push_back(h.fd());
    }
}
