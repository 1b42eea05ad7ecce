//! Metadata-only copies (`overlay.metacopy`, overlay-semantics.md 1.10):
//! finding a metacopy file's data in the layers below it, as the kernel's
//! `ovl_lookup` does, and bringing that data up at the first write.
//!
//! The chain (measured on 6.18): from the metacopy object, its name (or
//! its redirect, relative or absolute) is looked up in the layers below;
//! further metacopy files on the way are skipped, their redirects
//! followed; the first plain regular file holds the data. A whiteout or a
//! non-regular object ends the chain. When it ends without data, a chain
//! whose last redirect was absolute and met a lower layer continues in the
//! data-only layers (`::`); otherwise the lookup fails with EIO.
//! Without `metacopy=on` a metacopy object may only reach the data-only
//! layers that way, from the last layer below its parent: any other step
//! to a further layer fails with EPERM ("refusing to follow metacopy
//! origin").

use std::ffi::{CStr, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::errno::{Errno, Result};
use crate::format::{cname, EntryKind, Redirect};
use crate::node::{Body, DataLoc, DirBody, Node};
use crate::sys;
use crate::sys::fs::bfd;

use super::want::Want;
use super::{is_absent, kind_of, Union};

/// A regular file a lookup found, which may be a metacopy file.
pub(super) struct MetaAt<'a> {
    dir: BorrowedFd<'a>,
    name: &'a CStr,
    own: &'a OsStr,
    st: &'a libc::stat,
    layer: usize,
    /// Where the lookup looked for it (the name's own place, or a redirect).
    want: Want,
}

impl<'a> MetaAt<'a> {
    pub(super) fn new(
        dir: BorrowedFd<'a>,
        name: &'a CStr,
        own: &'a OsStr,
        st: &'a libc::stat,
        layer: usize,
        want: Want,
    ) -> MetaAt<'a> {
        MetaAt {
            dir,
            name,
            own,
            st,
            layer,
            want,
        }
    }
}

impl Union {
    /// Where the data of the object `at` is, if it is a metacopy file; the
    /// kernel's errno when its lookup fails.
    pub(super) fn metacopy_data(
        &self,
        parent: &DirBody,
        at: &MetaAt<'_>,
    ) -> Result<Option<DataLoc>> {
        if !self.fmt.metacopy(at.dir, at.name, at.st)? {
            return Ok(None);
        }
        let mut want = at.want.clone();
        let mut absolute = false;
        if let Some(r) = self.fmt.checked_redirect(at.dir, at.name)? {
            absolute = matches!(r, Redirect::Absolute(_));
            want = want.then(r);
        }
        let own = at.name;
        let mut lower_seen = at.layer >= self.layers.first_lower();
        let end = self.layers.merged_end();
        let mut next = at.layer + 1;
        loop {
            let idx = match want {
                Want::Path(_) if next < end => next,
                Want::Path(_) => break,
                _ => match parent.lowers.iter().find(|l| l.layer >= next) {
                    Some(l) => l.layer,
                    None => break,
                },
            };
            next = idx + 1;
            if !self.opts.metacopy {
                log::warn!(
                    "refusing to follow metacopy origin for {} (no metacopy=on)",
                    at.own.to_string_lossy()
                );
                return Err(Errno::EPERM);
            }
            let in_parent = parent.lowers.iter().find(|l| l.layer == idx);
            let Some((l, cn, _)) = self.lower_target(in_parent, idx, &want, own, at.own) else {
                continue;
            };
            let lfd = l.fd()?;
            let st = match sys::fs::lstatat(bfd(&lfd), &cn) {
                Ok(st) => st,
                Err(e) if is_absent(e) => continue,
                Err(e) => return Err(e),
            };
            if self.fmt.classify(bfd(&lfd), &cn, &st, true) == EntryKind::Whiteout
                || kind_of(&st) != libc::S_IFREG
            {
                break;
            }
            lower_seen = true;
            if self.fmt.metacopy(bfd(&lfd), &cn, &st)? {
                absolute = false;
                if let Some(r) = self.fmt.checked_redirect(bfd(&lfd), &cn)? {
                    absolute = matches!(r, Redirect::Absolute(_));
                    want = want.then(r);
                }
                continue;
            }
            return Ok(Some(DataLoc::At {
                layer: idx,
                dir: l.dir.clone(),
                name: cn,
            }));
        }
        if let Want::Path(path) = &want {
            if absolute && lower_seen && !self.layers.data_layers().is_empty() {
                return Ok(Some(self.data_layer_file(path)));
            }
        }
        if !self.opts.metacopy {
            log::warn!(
                "refusing to follow metacopy origin for {} (no metacopy=on)",
                at.own.to_string_lossy()
            );
            return Err(Errno::EPERM);
        }
        log::warn!(
            "metacopy with no lower data found for {}",
            at.own.to_string_lossy()
        );
        Err(Errno::EIO)
    }

    /// The regular file at `path` in the first data-only layer that has one.
    fn data_layer_file(&self, path: &[std::ffi::OsString]) -> DataLoc {
        let want = Want::Path(path.to_vec());
        let Some(last) = path.last() else {
            return DataLoc::Missing;
        };
        let Ok(own) = cname(last) else {
            return DataLoc::Missing;
        };
        let first = self.layers.merged_end();
        for idx in first..first + self.layers.data_layers().len() {
            let Some((l, cn, _)) = self.lower_target(None, idx, &want, &own, last) else {
                continue;
            };
            let Ok(lfd) = l.fd() else { continue };
            if sys::fs::lstatat(bfd(&lfd), &cn).is_ok_and(|st| kind_of(&st) == libc::S_IFREG) {
                return DataLoc::At {
                    layer: idx,
                    dir: l.dir.clone(),
                    name: cn,
                };
            }
        }
        DataLoc::Missing
    }

    /// Where a node's data is, if it is a metacopy file.
    pub(super) fn data_loc(&self, node: &Node) -> Option<DataLoc> {
        match &node.state.read().body {
            Body::Leaf(l) => l.data.clone(),
            Body::Dir(_) => None,
        }
    }

    /// Opens a metacopy file's data for reading (`flags` without the
    /// access mode bits), or None when the node holds its own data.
    pub(super) fn open_data(&self, node: &Node, flags: i32) -> Option<Result<OwnedFd>> {
        let loc = self.data_loc(node)?;
        Some(match loc {
            DataLoc::At { dir, name, .. } => dir.get().and_then(|d| {
                let fd = sys::fs::openat_noatime(
                    bfd(&d),
                    &name,
                    (flags & !libc::O_ACCMODE) | libc::O_RDONLY | libc::O_NOFOLLOW,
                )?;
                if kind_of(&sys::fs::fstat(fd.as_fd())?) != libc::S_IFREG {
                    return Err(Errno::EIO);
                }
                Ok(fd)
            }),
            DataLoc::Missing => Err(Errno::ENOENT),
        })
    }

    /// The blocks a metacopy file shows: its data's, as the kernel.
    pub(super) fn data_blocks(&self, node: &Node) -> Option<i64> {
        match self.data_loc(node)? {
            DataLoc::At { dir, name, .. } => {
                let d = dir.get().ok()?;
                sys::fs::lstatat(bfd(&d), &name).ok().map(|st| st.st_blocks)
            }
            DataLoc::Missing => None,
        }
    }

    /// Brings the data of an upper metacopy file up, in place as the
    /// kernel does: the data is written into the upper file, synced, and
    /// only then is the metacopy mark removed, so a reader (or a crash)
    /// never meets a half-written file without it: until then the data is
    /// read from below.
    pub(super) fn copy_up_metacopy_data(&self, node: &Arc<Node>) -> Result<()> {
        let _g = node.copy_lock.lock();
        let Some(loc) = self.data_loc(node) else {
            return Ok(());
        };
        let src = match self.open_data(node, 0) {
            Some(r) => r?,
            None => return Ok(()),
        };
        let (dir, name, _) = self.checked_leaf(node)?;
        let ust = sys::fs::lstatat(bfd(&dir), &name)?;
        let dst = sys::fs::openat(
            bfd(&dir),
            &name,
            libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
            0,
        )?;
        if sys::fs::fstat(dst.as_fd()).map(|s| (s.st_dev, s.st_ino))? != (ust.st_dev, ust.st_ino) {
            return Err(Errno::ENOENT);
        }
        // Writing the data makes the upper fs drop the file capability;
        // the kernel reads it first and sets it again after the copy.
        let caps = sys::xattr::get(dst.as_fd(), c"", c"security.capability").ok();
        // The write moves the file's mtime, as the kernel's in-place data
        // copy-up does (measured on 6.18: mtime is the time of the copy).
        super::copy_up::copy_data(src.as_fd(), dst.as_fd(), ust.st_size)?;
        if let Some(v) = &caps {
            sys::xattr::set(dst.as_fd(), c"", c"security.capability", v, 0)?;
        }
        if !self.opts.volatile {
            sys::fs::fsync(dst.as_fd(), false)?;
        }
        self.fmt.clear_metacopy(dst.as_fd(), c"")?;
        drop(loc);
        {
            let mut w = node.state.write();
            if let Body::Leaf(l) = &mut w.body {
                l.data = None;
            }
        }
        node.copied_up.store(true, Ordering::Release);
        self.retarget_readers(node);
        self.attributes_changed(node.ino);
        Ok(())
    }

    /// Whether a metacopy file's data file has several names.
    pub(super) fn data_is_linked(&self, node: &Node) -> bool {
        match self.data_loc(node) {
            Some(DataLoc::At { dir, name, .. }) => dir
                .get()
                .and_then(|d| sys::fs::lstatat(bfd(&d), &name))
                .is_ok_and(|st| st.st_nlink > 1),
            _ => false,
        }
    }

    /// Whether a copy-up of `node` may copy only its metadata: a regular
    /// file, with `metacopy=on`, for a change that leaves the data alone.
    pub(super) fn may_copy_meta_only(&self, node: &Node) -> bool {
        self.opts.metacopy && node.kind == libc::S_IFREG
    }
}
