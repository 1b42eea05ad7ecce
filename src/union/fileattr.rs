//! Inode flags (`lsattr`/`chattr`, the fileattr ioctls) as kernel overlayfs
//! keeps them (fs/overlayfs/inode.c `ovl_fileattr_get/set`, util.c
//! `ovl_set_protattr`, copy_up.c `ovl_copy_fileattr`):
//! - reading shows the top object's real flags plus the append-only and
//!   immutable flags kept in `overlay.protattr`;
//! - setting copies the object up, keeps append-only/immutable in
//!   `overlay.protattr` only, and gives the upper inode the other flags;
//! - a copy-up keeps a lower object's append-only/immutable flags in
//!   `overlay.protattr`, and its sync/noatime flags on the copy;
//! - immutable and append-only objects refuse the changes the VFS refuses
//!   them (EPERM): the kernel sets these flags on the overlay inode, which
//!   a FUSE inode cannot carry, so the server checks them.

use std::ffi::{CStr, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::errno::{Errno, Result};
use crate::format::cname;
use crate::node::{Body, Node};
use crate::sys;
use crate::sys::fileattr::{
    FsXattr, FS_APPEND_FL, FS_IMMUTABLE_FL, FS_NOATIME_FL, FS_SYNC_FL, FS_XFLAG_APPEND,
    FS_XFLAG_IMMUTABLE,
};
use crate::sys::fs::{bfd, Time};

use super::{Resolved, SetAttr, Union};

/// The flags the kernel keeps in `overlay.protattr` instead of the upper.
const PROT_FLAGS: u32 = FS_APPEND_FL | FS_IMMUTABLE_FL;
const PROT_XFLAGS: u32 = FS_XFLAG_APPEND | FS_XFLAG_IMMUTABLE;
/// The real flags a copy-up gives the copy (`OVL_COPY_FS_FLAGS_MASK`).
const COPY_FLAGS: u32 = FS_SYNC_FL | FS_NOATIME_FL;

/// What a change needs of the object it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Guard {
    /// Neither immutable nor append-only (data rewrite, chmod, unlink...).
    Unprotected,
    /// Not immutable (an append, a create in a dir, a touch to now).
    NotImmutable,
}

fn xflags_of(flags: u32) -> u32 {
    let mut x = 0;
    if flags & FS_APPEND_FL != 0 {
        x |= FS_XFLAG_APPEND;
    }
    if flags & FS_IMMUTABLE_FL != 0 {
        x |= FS_XFLAG_IMMUTABLE;
    }
    x
}

fn flags_of_xflags(x: u32) -> u32 {
    let mut f = 0;
    if x & FS_XFLAG_APPEND != 0 {
        f |= FS_APPEND_FL;
    }
    if x & FS_XFLAG_IMMUTABLE != 0 {
        f |= FS_IMMUTABLE_FL;
    }
    f
}

/// Reopens an O_PATH fd for the flag ioctls, without touching atime.
fn reopen_for_ioctl(fd: BorrowedFd<'_>, dir: bool) -> Result<OwnedFd> {
    // No O_NOFOLLOW: the /proc link is followed to the object checked before.
    let mut flags = libc::O_RDONLY | libc::O_NONBLOCK;
    if dir {
        flags |= libc::O_DIRECTORY;
    }
    match sys::fs::reopen(fd, flags | libc::O_NOATIME) {
        Err(e) if e == Errno::EPERM => sys::fs::reopen(fd, flags),
        r => r,
    }
}

/// `Node::prot`, the cache the guards read instead of a getxattr/statx per
/// change: the low byte holds the protected flags, `KNOWN` says they are
/// valid, `UPPER` says they were read while the object was in the upper
/// layer (a copy-up moves the object, so the value read from the lower is
/// no longer the answer), the bits from `EPOCH` up count invalidations.
///
/// The flags change through the union only by `set_protected` (which bumps
/// the epoch after writing `overlay.protattr`, so a guard that read the old
/// value meanwhile cannot store it) and by a copy-up (caught by `UPPER`).
/// A lower object's flags are its real inode's, read once: lower layers do
/// not change under a mount. Flags or protattr changed in a layer behind
/// the union's back are not seen while the node lives (until the kernel
/// forgets it, or a remount), as for the other state a node keeps; the
/// kernel too reads them into its overlay inode when it makes it.
const KNOWN: u64 = 1 << 8;
const UPPER: u64 = 1 << 9;
const EPOCH: u64 = 1 << 16;

fn body_in_upper(body: &Body) -> bool {
    match body {
        Body::Dir(d) => d.upper.is_some(),
        Body::Leaf(l) => l.upper.is_some(),
    }
}

/// The flags a cache word holds for an object now (not) in the upper layer.
fn cached(word: u64, upper: bool) -> Option<u32> {
    let valid = word & KNOWN != 0 && (word & UPPER != 0) == upper;
    valid.then_some((word as u32) & PROT_FLAGS)
}

fn epoch_of(word: u64) -> u64 {
    word & !(EPOCH - 1)
}

impl Union {
    /// The append-only/immutable flags of the object `body` (named `name` in
    /// its layer dir) stands for, read from the layer: its
    /// `overlay.protattr` when it is in the upper, its real flags when only
    /// in a lower layer.
    fn read_protection(&self, body: &Body, name: &CStr) -> Result<u32> {
        match body {
            Body::Dir(d) => match (&d.upper, d.lowers.first()) {
                (Some(u), _) => self.fmt.protattr(bfd(&*u.fd()?), c""),
                (None, Some(l)) => sys::fileattr::protection_bits(bfd(&*l.fd()?), c""),
                (None, None) => Ok(0),
            },
            Body::Leaf(l) => match (&l.upper, &l.lower) {
                (Some(u), _) => self.fmt.protattr(bfd(&*u.get()?), name),
                (None, Some((_, dir))) => sys::fileattr::protection_bits(bfd(&*dir.get()?), name),
                (None, None) => Ok(0),
            },
        }
    }

    /// `node`'s append-only/immutable flags, from its cache when valid.
    /// An object the server cannot read them of shows none (uncached).
    pub(super) fn protection(&self, node: &Node) -> u32 {
        let word = node.prot.load(Ordering::Acquire);
        let st = node.state.read();
        let upper = body_in_upper(&st.body);
        if let Some(p) = cached(word, upper) {
            return p;
        }
        let (body, name) = (st.body.clone(), st.name.clone());
        drop(st);
        let Ok(p) = self.read_protection(&body, &name) else {
            return 0;
        };
        let mut new = epoch_of(word) | KNOWN | u64::from(p & PROT_FLAGS);
        if upper {
            new |= UPPER;
        }
        // Fails when an invalidation came in meanwhile: then the value read
        // may be older than the change, and the next guard reads again.
        let _ = node
            .prot
            .compare_exchange(word, new, Ordering::AcqRel, Ordering::Relaxed);
        p
    }

    /// Drops `node`'s cached flags once they changed on disk, and makes a
    /// guard that is reading the old ones keep them to itself.
    fn protection_changed(node: &Node) {
        let _ = node
            .prot
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                Some(epoch_of(w).wrapping_add(EPOCH))
            });
    }

    /// Records that `node` stands for an upper object just created, which
    /// has no protected flags (no `overlay.protattr`), so that its first
    /// guard (the unlink or chmod that often follows) reads nothing.
    pub(super) fn created_unprotected(node: &Node) {
        let _ = node
            .prot
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                Some(epoch_of(w).wrapping_add(EPOCH) | KNOWN | UPPER)
            });
    }

    /// EPERM when the flags `prot` forbid a change that needs `g`.
    pub(super) fn check_guard(prot: u32, g: Guard) -> Result<()> {
        let refused = match g {
            Guard::Unprotected => prot & PROT_FLAGS != 0,
            Guard::NotImmutable => prot & FS_IMMUTABLE_FL != 0,
        };
        if refused {
            Err(Errno::EPERM)
        } else {
            Ok(())
        }
    }

    /// EPERM when `node`'s flags forbid a change that needs `g`.
    pub(super) fn guard(&self, node: &Node, g: Guard) -> Result<()> {
        Self::check_guard(self.protection(node), g)
    }

    /// The guard an open with `flags` needs: a write that is not an append
    /// and every truncate need an unprotected file (the VFS's may_open).
    pub(super) fn guard_open(&self, node: &Node, flags: i32) -> Result<()> {
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let trunc = flags & libc::O_TRUNC != 0;
        if !write && !trunc {
            return Ok(());
        }
        let prot = self.protection(node);
        if trunc || flags & libc::O_APPEND == 0 {
            Self::check_guard(prot, Guard::Unprotected)
        } else {
            Self::check_guard(prot, Guard::NotImmutable)
        }
    }

    /// The guards of a setattr, as the VFS's: chmod, chown and explicit
    /// times need an unprotected object, a touch to now a mutable one; a
    /// truncate by name an unprotected file, through an open file (only
    /// one opened before the flag was set can write) one not append-only.
    /// Explicit times with a file handle are the kernel writing back the
    /// mtime of its writeback cache, not a caller's utimes.
    pub(super) fn guard_setattr(&self, node: &Node, a: &SetAttr) -> Result<()> {
        let explicit = |t: Option<Time>| matches!(t, Some(Time::At(..)));
        let now = |t: Option<Time>| matches!(t, Some(Time::Now));
        let owner_or_mode = a.mode.is_some() || a.uid.is_some() || a.gid.is_some();
        let utimes = a.fh.is_none() && (explicit(a.atime) || explicit(a.mtime));
        let touch = now(a.atime) || now(a.mtime);
        if !owner_or_mode && !utimes && !touch && a.size.is_none() {
            return Ok(());
        }
        let prot = self.protection(node);
        let immutable = prot & FS_IMMUTABLE_FL != 0;
        let append = prot & FS_APPEND_FL != 0;
        let refused = ((owner_or_mode || utimes) && (immutable || append))
            || (touch && immutable)
            || (a.size.is_some() && (append || (immutable && a.fh.is_none())));
        if refused {
            Err(Errno::EPERM)
        } else {
            Ok(())
        }
    }

    /// The guards of removing `name` (resolved to `r`) from `parent`:
    /// neither may be immutable or append-only (the VFS's may_delete). The
    /// object's flags come from the cache of the node the kernel looked the
    /// name up as (it did, to remove it), else from the layer.
    pub(super) fn guard_removal(
        &self,
        parent: &Arc<Node>,
        r: &Resolved,
        name: &OsStr,
    ) -> Result<()> {
        self.guard(parent, Guard::Unprotected)?;
        let prot = match self.node_of(parent, r, name) {
            Some(node) => self.protection(&node),
            None => self.read_protection(&r.body, &cname(name)?).unwrap_or(0),
        };
        Self::check_guard(prot, Guard::Unprotected)
    }

    /// The node that stands for what `parent/name` resolved to, if any: the
    /// one installed last under its number, checked to be that object (a
    /// non-dir by its real inode; a dir by its name and layer, as a removed
    /// dir's number goes to a node of its own while the old one is held).
    fn node_of(&self, parent: &Arc<Node>, r: &Resolved, name: &OsStr) -> Option<Arc<Node>> {
        let node = self.nodes.current(r.ino)?;
        if node.kind != r.kind {
            return None;
        }
        let st = node.state.read();
        let same = match (&st.body, &r.body) {
            (Body::Leaf(l), Body::Leaf(rl)) => {
                l.real == rl.real && l.upper.is_some() == rl.upper.is_some()
            }
            (Body::Dir(d), Body::Dir(rd)) => {
                st.parent.as_ref().is_some_and(|p| Arc::ptr_eq(p, parent))
                    && st.name.as_bytes() == name.as_bytes()
                    && d.upper.is_some() == rd.upper.is_some()
            }
            _ => false,
        };
        drop(st);
        same.then_some(node)
    }

    /// An open fd on `node`'s top object for the flag ioctls, and whether
    /// that object is the upper one.
    fn fileattr_fd(&self, node: &Arc<Node>, fh: Option<u64>, upper: bool) -> Result<OwnedFd> {
        match node.dir_body() {
            Some(d) => reopen_for_ioctl(bfd(&*Self::dir_top(&d)?), true),
            None if node.kind == libc::S_IFREG => {
                reopen_for_ioctl(bfd(&*self.leaf_object(node, fh, upper)?), false)
            }
            // The kernel sends the fileattr ioctls for files and dirs only.
            None => Err(Errno::ENOTTY),
        }
    }

    /// `FS_IOC_GETFLAGS`: the real flags of the top object with the
    /// protected ones of the overlay inode merged in.
    pub fn get_flags(&self, ino: u64, fh: Option<u64>) -> Result<u32> {
        let node = self.node(ino)?;
        let fd = self.fileattr_fd(&node, fh, false)?;
        let real = sys::fileattr::get_flags(fd.as_fd())?;
        Ok(real | self.protection(&node))
    }

    /// `FS_IOC_FSGETXATTR`, merged as `get_flags`.
    pub fn get_fsxattr(&self, ino: u64, fh: Option<u64>) -> Result<FsXattr> {
        let node = self.node(ino)?;
        let fd = self.fileattr_fd(&node, fh, false)?;
        let mut fa = sys::fileattr::get_fsxattr(fd.as_fd())?;
        fa.xflags |= xflags_of(self.protection(&node));
        Ok(fa)
    }

    /// Copies `node` up and stores the protected flags of `prot` in its
    /// `overlay.protattr`; returns the fd to give the upper the rest.
    fn set_protected(&self, node: &Arc<Node>, fh: Option<u64>, prot: u32) -> Result<OwnedFd> {
        self.require_upper()?;
        self.copy_up(node)?;
        let fd = self.fileattr_fd(node, fh, true)?;
        let (dir, name) = self.upper_loc(node)?;
        let set = self.fmt.set_protattr(bfd(&*dir), &name, prot & PROT_FLAGS);
        // Also after a failure: the write may have happened all the same.
        Self::protection_changed(node);
        set?;
        self.attributes_changed(node.ino);
        Ok(fd)
    }

    /// `FS_IOC_SETFLAGS` (the kernel checked ownership and
    /// CAP_LINUX_IMMUTABLE against the flags `get_flags` gave it).
    pub fn set_flags(&self, ino: u64, fh: Option<u64>, flags: u32) -> Result<()> {
        let node = self.node(ino)?;
        let fd = self.set_protected(&node, fh, flags)?;
        sys::fileattr::set_flags(fd.as_fd(), flags & !PROT_FLAGS)
    }

    /// `FS_IOC_FSSETXATTR`, split as `set_flags`.
    pub fn set_fsxattr(&self, ino: u64, fh: Option<u64>, mut fa: FsXattr) -> Result<()> {
        let node = self.node(ino)?;
        let fd = self.set_protected(&node, fh, flags_of_xflags(fa.xflags))?;
        fa.xflags &= !PROT_XFLAGS;
        sys::fileattr::set_fsxattr(fd.as_fd(), &fa)
    }

    /// The copy-up part (`ovl_copy_fileattr`): a lower file's or dir's
    /// append-only/immutable flags go to the copy's `overlay.protattr`, its
    /// sync/noatime flags to the copy itself. A layer without the flag
    /// ioctls has no flags. An empty name means the object of the dir fd.
    pub(super) fn copy_fileattr(
        &self,
        sdir: BorrowedFd<'_>,
        sname: &CStr,
        ddir: BorrowedFd<'_>,
        dname: &CStr,
        kind: u32,
    ) -> Result<()> {
        if kind != libc::S_IFREG && kind != libc::S_IFDIR {
            return Ok(());
        }
        let dir = kind == libc::S_IFDIR;
        let open = |d: BorrowedFd<'_>, n: &CStr| -> Result<OwnedFd> {
            if n.to_bytes().is_empty() {
                return reopen_for_ioctl(d, dir);
            }
            let p = sys::fs::open_path(d, n)?;
            reopen_for_ioctl(p.as_fd(), dir)
        };
        let no_flags = |e: Errno| e == Errno::ENOTTY || e == Errno::EINVAL || e == Errno::ENOTSUP;
        // An object the server cannot open (a rootless server and an
        // unmapped owner) shows no flags: the copy-up goes on without them.
        let Ok(src_fd) = open(sdir, sname) else {
            return Ok(());
        };
        let src = match sys::fileattr::get_flags(src_fd.as_fd()) {
            Ok(f) => f,
            Err(e) if no_flags(e) => return Ok(()),
            Err(e) => return Err(e),
        };
        if src & PROT_FLAGS != 0 {
            match self.fmt.set_protattr(ddir, dname, src) {
                // No xattrs on the upper: the kernel warns and goes on.
                Err(e) if e == Errno::EPERM => {}
                r => r?,
            }
        }
        if src & COPY_FLAGS == 0 {
            return Ok(());
        }
        let Ok(dst) = open(ddir, dname) else {
            return Ok(());
        };
        let cur = match sys::fileattr::get_flags(dst.as_fd()) {
            Ok(f) => f,
            Err(e) if no_flags(e) => return Ok(()),
            Err(e) => return Err(e),
        };
        sys::fileattr::set_flags(dst.as_fd(), (cur & !COPY_FLAGS) | (src & COPY_FLAGS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_append_needs_only_a_mutable_file() {
        let a = FS_APPEND_FL;
        let i = FS_IMMUTABLE_FL;
        assert!(Union::check_guard(a, Guard::NotImmutable).is_ok());
        assert_eq!(Union::check_guard(a, Guard::Unprotected), Err(Errno::EPERM));
        assert_eq!(
            Union::check_guard(i, Guard::NotImmutable),
            Err(Errno::EPERM)
        );
        assert!(Union::check_guard(FS_NOATIME_FL, Guard::Unprotected).is_ok());
        assert_eq!(flags_of_xflags(xflags_of(a | i)), a | i);
    }
}
