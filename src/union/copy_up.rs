//! Copy-up: bringing a lower object into the upper layer, atomically.
//!
//! The object is built under a temporary name in the work dir (or as an
//! O_TMPFILE / a temporary name in the target dir when there is no work dir),
//! gets data (holes kept), xattrs, owner, then mode (so setuid survives the
//! chown), then times and the `origin` xattr, and only then appears under its
//! name through one rename or link. The parent's times are restored after.
//! With `metacopy=on` a regular file copied up for a change of its metadata
//! gets no data: its size, and `overlay.metacopy` (see metacopy.rs).

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::Union;
use crate::dir_fd::DirFd;
use crate::errno::{Errno, Result};
use crate::format::Format;
use crate::node::{Body, DataLoc, LayerDir, Node};
use crate::sys;
use crate::sys::fs::{bfd, Time};

const CHUNK: usize = 1 << 20;

fn time_of(sec: i64, nsec: i64) -> Time {
    Time::At(sec, nsec)
}

impl Union {
    /// Makes sure `node` (and all its ancestors) exist in the upper layer;
    /// for a change of metadata only, so with `metacopy=on` a regular file
    /// may come up without its data.
    pub(super) fn copy_up(&self, node: &Arc<Node>) -> Result<()> {
        self.copy_up_chain(node, true)
    }

    /// Makes sure `node` and its data are in the upper layer (for a write,
    /// a truncate or an open for writing).
    pub(super) fn copy_up_data(&self, node: &Arc<Node>) -> Result<()> {
        self.copy_up_chain(node, false)?;
        if self.data_loc(node).is_some() {
            self.copy_up_metacopy_data(node)?;
        }
        Ok(())
    }

    fn copy_up_chain(&self, node: &Arc<Node>, meta: bool) -> Result<()> {
        if node.in_upper() {
            return Ok(());
        }
        if !self.has_upper() {
            return Err(Errno::EROFS);
        }
        // Parents first, top-down, without recursion (paths may be very deep).
        let mut chain = vec![node.clone()];
        while let Some(p) = chain.last().and_then(|n| n.parent()) {
            if p.in_upper() {
                break;
            }
            chain.push(p);
        }
        for n in chain.iter().rev() {
            self.copy_up_one(n, meta)?;
        }
        Ok(())
    }

    fn copy_up_one(&self, node: &Arc<Node>, meta: bool) -> Result<()> {
        let _g = node.copy_lock.lock();
        if node.in_upper() {
            return Ok(());
        }
        let parent = node.parent().ok_or(Errno::EIO)?;
        let pu = parent.dir_body().and_then(|d| d.upper).ok_or(Errno::EIO)?;
        let st = node.snapshot();
        let pfd = pu.fd()?;
        let pfd = bfd(&pfd);
        let pst = sys::fs::fstat(pfd)?;
        match &st.body {
            Body::Dir(d) => {
                let lower = d.lowers.first().ok_or(Errno::EIO)?;
                let fd = self.copy_up_dir(pfd, &st.name, bfd(&lower.fd()?), lower.layer)?;
                {
                    let mut w = node.state.write();
                    if let Body::Dir(d) = &mut w.body {
                        let dir = DirFd::upper(fd, &pu.dir, &st.name, &self.dir_fds);
                        d.upper = Some(LayerDir::new(0, dir, false));
                    }
                }
                // Now merged, it reports nlink 1, like the kernel.
                self.attributes_changed(node.ino);
            }
            Body::Leaf(l) => {
                let (layer, ldir) = l.lower.clone().ok_or(Errno::EIO)?;
                let meta_only = meta && self.may_copy_meta_only(node);
                // The data: the lower file's own, or a lower metacopy file's.
                let data = if meta_only || node.kind != libc::S_IFREG {
                    None
                } else {
                    Some(match self.open_data(node, 0) {
                        Some(fd) => fd?,
                        None => sys::fs::openat_noatime(
                            bfd(&ldir.get()?),
                            &st.name,
                            libc::O_RDONLY | libc::O_NOFOLLOW,
                        )?,
                    })
                };
                let lst =
                    self.copy_up_leaf(pfd, &st.name, bfd(&ldir.get()?), layer, data.as_ref())?;
                let ust = sys::fs::lstatat(pfd, &st.name)?;
                {
                    let mut w = node.state.write();
                    if let Body::Leaf(l) = &mut w.body {
                        l.upper = Some(pu.dir.clone());
                        l.real = (ust.st_dev, ust.st_ino);
                        if meta_only && l.data.is_none() {
                            l.data = Some(DataLoc::At {
                                layer,
                                dir: ldir.clone(),
                                name: st.name.clone(),
                            });
                        } else if !meta_only {
                            l.data = None;
                        }
                    }
                }
                if lst.st_nlink > 1 {
                    self.remember_linked(node);
                    self.link_other_names(layer, lst.st_ino, pfd, &st.name);
                    // Every name is in the upper: its own nlink is the truth
                    // (the kernel's index=on accounting, "U+0").
                    let _ = self.fmt.set_index_nlink(pfd, &st.name);
                }
            }
        }
        if self.data_loc(node).is_none() {
            node.copied_up.store(true, Ordering::Release);
            if !node.is_dir() {
                self.retarget_readers(node);
            }
        }
        let _ = self.fmt.set_impure(pfd, c"");
        // Linking into the parent changed its times; the kernel restores them.
        let _ = sys::fs::futimens_any(
            pfd,
            time_of(pst.st_atime, pst.st_atime_nsec),
            time_of(pst.st_mtime, pst.st_mtime_nsec),
        );
        Ok(())
    }

    fn copy_up_dir(
        &self,
        pfd: BorrowedFd<'_>,
        name: &CStr,
        lower: BorrowedFd<'_>,
        layer: usize,
    ) -> Result<OwnedFd> {
        let lst = sys::fs::fstat(lower)?;
        let stage = self.stage_dir(pfd);
        let tmp = self.stage_new(&mut |t| sys::fs::mkdirat(stage, t, 0o700))?;
        // The fd is taken before the rename (it follows the dir), so nothing
        // can fail once the dir is in place.
        let r = sys::fs::open_dir_path(stage, &tmp).and_then(|fd| {
            self.copy_meta(lower, c"", stage, &tmp, &lst)?;
            self.set_origin(lower, c"", stage, &tmp, layer)?;
            sys::fs::renameat2(stage, &tmp, pfd, name, libc::RENAME_NOREPLACE)?;
            Ok(fd)
        });
        match r {
            Ok(fd) => Ok(fd),
            Err(e) => {
                let _ = sys::fs::unlinkat(stage, &tmp, libc::AT_REMOVEDIR);
                if e == Errno::EEXIST {
                    // Already copied up (an earlier attempt that failed
                    // later): use that dir.
                    return sys::fs::open_dir_path(pfd, name);
                }
                Err(e)
            }
        }
    }

    /// `data`: the data of a regular file; None: a metadata-only copy.
    fn copy_up_leaf(
        &self,
        pfd: BorrowedFd<'_>,
        name: &CStr,
        ldir: BorrowedFd<'_>,
        layer: usize,
        data: Option<&OwnedFd>,
    ) -> Result<libc::stat> {
        let lst = sys::fs::lstatat(ldir, name)?;
        let kind = lst.st_mode & libc::S_IFMT;
        let stage = self.stage_dir(pfd);

        if kind == libc::S_IFREG && self.layers.work.is_none() {
            // No work dir: an unnamed O_TMPFILE is linked in once complete.
            match sys::fs::openat(pfd, c".", libc::O_TMPFILE | libc::O_WRONLY, 0o600) {
                Ok(dst) => {
                    self.fill_regular(ldir, name, &dst, &lst, layer, data)?;
                    return sys::fs::link_tmpfile(dst.as_fd(), pfd, name)
                        .map(|_| lst)
                        .map_err(|e| if e == Errno::EEXIST { Errno::ENOENT } else { e });
                }
                Err(e) if e == Errno::ENOTSUP || e == Errno::EINVAL || e == Errno::EISDIR => {}
                Err(e) => return Err(e),
            }
        }

        let link_target = match kind {
            libc::S_IFLNK => Some(
                sys::fs::readlinkat(ldir, name)
                    .and_then(|t| std::ffi::CString::new(t).map_err(|_| Errno::EIO))?,
            ),
            _ => None,
        };
        let mut dst: Option<OwnedFd> = None;
        let tmp = self.stage_new(&mut |t| match (kind, &link_target) {
            (libc::S_IFREG, _) => {
                let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY;
                dst = Some(sys::fs::openat(stage, t, flags, 0o600)?);
                Ok(())
            }
            (_, Some(target)) => sys::fs::symlinkat(target, stage, t),
            _ => sys::fs::mknodat(stage, t, kind | 0o600, lst.st_rdev),
        })?;
        let built = match &dst {
            Some(dst) => self.fill_regular(ldir, name, dst, &lst, layer, data),
            None => self
                .copy_meta(ldir, name, stage, &tmp, &lst)
                .and_then(|_| self.set_origin(ldir, name, stage, &tmp, layer)),
        };
        let r =
            built.and_then(|_| sys::fs::renameat2(stage, &tmp, pfd, name, libc::RENAME_NOREPLACE));
        if let Err(e) = r {
            let _ = sys::fs::unlinkat(stage, &tmp, 0);
            return Err(if e == Errno::EEXIST { Errno::ENOENT } else { e });
        }
        Ok(lst)
    }

    /// Data (from `data`; None: only the size, and the metacopy mark),
    /// metadata and origin of a regular file into the open `dst`.
    fn fill_regular(
        &self,
        ldir: BorrowedFd<'_>,
        name: &CStr,
        dst: &OwnedFd,
        lst: &libc::stat,
        layer: usize,
        data: Option<&OwnedFd>,
    ) -> Result<()> {
        match data {
            Some(src) => copy_data(src.as_fd(), dst.as_fd(), lst.st_size)?,
            None => {
                sys::fs::ftruncate(dst.as_fd(), lst.st_size)?;
                self.fmt.set_metacopy(dst.as_fd(), c"")?;
            }
        }
        self.copy_meta(ldir, name, dst.as_fd(), c"", lst)?;
        self.set_origin(ldir, name, dst.as_fd(), c"", layer)?;
        if !self.opts.volatile {
            // Like the kernel: a copied-up file is durable before it is visible.
            sys::fs::fsync(dst.as_fd(), false)?;
        }
        Ok(())
    }

    /// owner, xattrs, mode, times, in that order. An empty `dname` means
    /// the object of `ddir` itself.
    fn copy_meta(
        &self,
        sdir: BorrowedFd<'_>,
        sname: &CStr,
        ddir: BorrowedFd<'_>,
        dname: &CStr,
        st: &libc::stat,
    ) -> Result<()> {
        // Owner first: a chown after the xattrs would strip
        // security.capability (and setuid, which the chmod below restores).
        let own_flags = libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH;
        // An owner this user namespace cannot map (shown as the overflow
        // id) cannot be given to the copy: EOVERFLOW, as the kernel says.
        sys::fs::fchownat(ddir, dname, st.st_uid, st.st_gid, own_flags).map_err(|e| {
            if e == Errno::EINVAL {
                Errno::EOVERFLOW
            } else {
                e
            }
        })?;
        let keys = match sys::xattr::list(sdir, sname) {
            Ok(k) => k,
            Err(e) if e == Errno::ENOTSUP => Vec::new(),
            Err(e) => return Err(e),
        };
        for k in keys {
            if self.fmt.is_private_xattr(&k) {
                continue;
            }
            let Ok(key) = std::ffi::CString::new(k) else {
                continue;
            };
            let v = match sys::xattr::get(sdir, sname, &key) {
                Ok(v) => v,
                Err(e) if e == Errno::ENODATA => continue,
                Err(e) => return Err(e),
            };
            if let Err(e) = sys::xattr::set(ddir, dname, &key, &v, 0) {
                // Security labels may be refused by an LSM. An upper that
                // cannot store a namespace (EOPNOTSUPP) loses those xattrs,
                // as on the kernel, except ACLs, which decide access.
                let k = key.to_bytes();
                let droppable = k.starts_with(b"security.")
                    || (e == Errno::ENOTSUP && !k.starts_with(b"system.posix_acl_"));
                if !droppable {
                    return Err(e);
                }
            }
        }
        let kind = st.st_mode & libc::S_IFMT;
        self.copy_fileattr(sdir, sname, ddir, dname, kind)?;
        if kind != libc::S_IFLNK {
            sys::fs::fchmodat(ddir, dname, st.st_mode & 0o7777)?;
        }
        sys::fs::utimens_entry(
            ddir,
            dname,
            time_of(st.st_atime, st.st_atime_nsec),
            time_of(st.st_mtime, st.st_mtime_nsec),
        )
    }

    /// Records the lower object as the copy's `overlay.origin`, as the kernel
    /// does, so its inode number survives copy-up and remount.
    pub(super) fn set_origin(
        &self,
        ldir: BorrowedFd<'_>,
        lname: &CStr,
        ddir: BorrowedFd<'_>,
        dname: &CStr,
        layer: usize,
    ) -> Result<()> {
        let flags = if lname.to_bytes().is_empty() {
            libc::AT_EMPTY_PATH
        } else {
            0
        };
        let Ok((t, fid)) = sys::fs::name_to_handle(ldir, lname, flags) else {
            return Ok(());
        };
        let uuid = self
            .layers
            .list
            .get(layer)
            .map(|l| l.uuid)
            .unwrap_or([0; 16]);
        if let Some(v) = Format::encode_origin(t, &fid, &uuid) {
            if let Err(e) = sys::xattr::set(ddir, dname, &self.fmt.origin_key(), &v, 0) {
                // Without the origin only the inode number changes.
                log::debug!("origin xattr not written: {e}");
            }
        }
        Ok(())
    }
}

/// Copies `size` bytes, skipping holes so sparse files stay sparse.
pub(super) fn copy_data(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, size: i64) -> Result<()> {
    let mut off: i64 = 0;
    while off < size {
        let data = match sys::fs::lseek(src, off, libc::SEEK_DATA) {
            Ok(d) => d,
            Err(e) if e.raw() == libc::ENXIO => break,
            Err(e) if e == Errno::EINVAL => off,
            Err(e) => return Err(e),
        };
        let hole = sys::fs::lseek(src, data, libc::SEEK_HOLE)
            .unwrap_or(size)
            .min(size);
        copy_range(src, dst, data, hole)?;
        off = hole.max(data + 1);
    }
    sys::fs::ftruncate(dst, size)
}

fn copy_range(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, start: i64, end: i64) -> Result<()> {
    let mut so = start;
    let mut d_off = start;
    while so < end {
        let len = ((end - so) as usize).min(CHUNK * 64);
        match sys::fs::copy_file_range(src, &mut so, dst, &mut d_off, len) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e)
                if e == Errno::EXDEV
                    || e == Errno::EINVAL
                    || e == Errno::ENOSYS
                    || e == Errno::ENOTSUP
                    || e == Errno::EOVERFLOW =>
            {
                return copy_range_rw(src, dst, so, end);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn copy_range_rw(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, mut off: i64, end: i64) -> Result<()> {
    let mut buf = vec![0u8; CHUNK];
    while off < end {
        let want = ((end - off) as usize).min(CHUNK);
        let n = sys::fs::pread(src, &mut buf[..want], off)?;
        if n == 0 {
            break;
        }
        let mut w = 0;
        while w < n {
            w += sys::fs::pwrite(dst, &buf[w..n], off + w as i64)?;
        }
        off += n as i64;
    }
    Ok(())
}
