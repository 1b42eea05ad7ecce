//! Staging: new objects and whiteouts are built under a fresh temporary
//! name (in the work dir, or in the target dir without one) and only then
//! renamed into place, so no half-made object ever shows.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::Ordering;

use crate::errno::{Errno, Result};
use crate::format::{cname, Format};
use crate::sys;

use super::Union;

impl Union {
    /// A fresh temporary name for staging an object before it is renamed
    /// into place.
    pub(crate) fn tmp_name(&self) -> CString {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        CString::new(format!("#ufs{:x}.{:x}", sys::proc::getpid(), n)).unwrap_or_default()
    }

    /// Runs `create` (which makes a staging object) with fresh temporary
    /// names until one is free, and returns it. A taken name is skipped,
    /// never touched:
    /// without a work dir, callers can make such names in an upper dir, and
    /// a crashed server with the same pid may have left one.
    pub(crate) fn stage_new(&self, create: &mut dyn FnMut(&CStr) -> Result<()>) -> Result<CString> {
        for _ in 0..16 {
            let tmp = self.tmp_name();
            match create(&tmp) {
                Err(e) if e == Errno::EEXIST => {
                    // Names near a taken one may be taken too: jump away.
                    self.tmp_counter
                        .fetch_add(sys::proc::random_u64() >> 16, Ordering::Relaxed);
                }
                r => return r.map(|()| tmp),
            }
        }
        Err(Errno::EEXIST)
    }

    /// Where to stage objects destined for `target` (an upper dir): the work
    /// dir when there is one, else the target dir itself.
    pub(crate) fn stage_dir<'a>(&'a self, target: BorrowedFd<'a>) -> BorrowedFd<'a> {
        self.layers.work().unwrap_or(target)
    }

    /// Removes a staged object after a failure.
    pub(crate) fn discard_staged(&self, dir: BorrowedFd<'_>, name: &CStr) {
        if sys::fs::unlinkat(dir, name, 0).is_err() {
            let _ = self.clear_whiteouts_at(dir, name);
            let _ = sys::fs::unlinkat(dir, name, libc::AT_REMOVEDIR);
        }
    }

    /// Deletes the whiteouts inside upper dir `dir/name` so it can be removed.
    pub(crate) fn clear_whiteouts_at(&self, dir: BorrowedFd<'_>, name: &CStr) -> Result<()> {
        let d = sys::fs::openat(
            dir,
            name,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )?;
        for e in sys::dir::read_all(d.as_fd())? {
            let c = cname(&e.name)?;
            let st = sys::fs::lstatat(d.as_fd(), &c)?;
            if Format::is_whiteout_stat(&st) {
                sys::fs::unlinkat(d.as_fd(), &c, 0)?;
            }
        }
        Ok(())
    }
}
