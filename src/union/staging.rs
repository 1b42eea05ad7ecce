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
    pub(super) fn tmp_name(&self) -> CString {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        CString::new(format!("#ufs{:x}.{:x}", sys::proc::getpid(), n)).unwrap_or_default()
    }

    /// Runs `create` (which makes a staging object) with fresh temporary
    /// names until one is free, and returns it. A taken name is skipped,
    /// never touched:
    /// without a work dir, callers can make such names in an upper dir, and
    /// a crashed server with the same pid may have left one.
    pub(super) fn stage_new(&self, create: &mut dyn FnMut(&CStr) -> Result<()>) -> Result<CString> {
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
    pub(super) fn stage_dir<'a>(&'a self, target: BorrowedFd<'a>) -> BorrowedFd<'a> {
        self.layers.work().unwrap_or(target)
    }

    /// Removes a staged object after a failure.
    pub(super) fn discard_staged(&self, dir: BorrowedFd<'_>, name: &CStr) {
        if sys::fs::unlinkat(dir, name, 0).is_err() {
            let _ = self.clear_whiteouts_at(dir, name);
            let _ = sys::fs::unlinkat(dir, name, libc::AT_REMOVEDIR);
        }
    }

    /// Deletes the whiteouts inside upper dir `dir/name` so it can be removed.
    pub(super) fn clear_whiteouts_at(&self, dir: BorrowedFd<'_>, name: &CStr) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::os::unix::fs::{symlink, MetadataExt};
    use std::sync::atomic::Ordering;

    use crate::layers::Layers;
    use crate::sys;
    use crate::union::{Options, Union, ROOT_INO};

    /// Without a work dir, staging names live in the upper dir, where a
    /// caller may have made them first: copy-up skips them, and the files
    /// there stay as they were.
    #[test]
    fn copy_up_skips_taken_staging_names() {
        let root = std::env::temp_dir().join(format!("ufs-stage-{}", std::process::id()));
        let (lower, upper) = (root.join("lower"), root.join("upper"));
        std::fs::create_dir_all(lower.join("d")).unwrap();
        std::fs::create_dir_all(&upper).unwrap();
        symlink("target", lower.join("d/link")).unwrap();
        let layers = Layers::new(
            Some(crate::layers::open_dir(&upper).unwrap()),
            vec![crate::layers::open_dir(&lower).unwrap()],
            None,
        )
        .unwrap();
        let opts = Options {
            userxattr: false,
            oci_whiteouts: false,
            volatile: true,
            redirect_dir: false,
            redirect_nofollow: false,
            metacopy: false,
            uid_map: Default::default(),
            gid_map: Default::default(),
        };
        let u = Union::new(layers, opts).unwrap();
        u.tmp_counter.store(0, Ordering::Relaxed);
        let pid = sys::proc::getpid();
        let taken: Vec<String> = (0..40).map(|n| format!("#ufs{pid:x}.{n:x}")).collect();
        for t in &taken {
            std::fs::write(upper.join(t), b"mine").unwrap();
        }
        let d = u.lookup(ROOT_INO, OsStr::new("d")).unwrap();
        let link = u.lookup(d.ino, OsStr::new("link")).unwrap();
        u.copy_up(&link.node).unwrap();
        for t in &taken {
            assert_eq!(std::fs::read(upper.join(t)).unwrap(), b"mine", "{t}");
        }
        assert_eq!(
            std::fs::read_link(upper.join("d/link")).unwrap().to_str(),
            Some("target")
        );
        assert!(std::fs::symlink_metadata(upper.join("d")).unwrap().ino() != 0);
        let _ = std::fs::remove_dir_all(&root);
    }
}
