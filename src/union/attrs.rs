//! Attributes and the objects behind nodes: getattr, setattr, readlink,
//! statfs, and the helpers that find a node's object in its layer and check
//! that a name still holds it.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use crate::errno::{Errno, Result};
use crate::node::{Body, DirBody, Node};
use crate::sys;
use crate::sys::fs::{bfd, Time};

use super::{Caller, SetAttr, Union};

impl Union {
    /// Where a non-dir lives right now: (layer dir fd, name).
    pub(super) fn leaf_loc(&self, node: &Node) -> Result<(Arc<OwnedFd>, CString)> {
        let st = node.state.read();
        match &st.body {
            Body::Leaf(l) => {
                let dir = l
                    .upper
                    .as_ref()
                    .or(l.lower.as_ref().map(|(_, dir)| dir))
                    .ok_or(Errno::ESTALE)?;
                Ok((dir.get()?, st.name.clone()))
            }
            Body::Dir(_) => Err(Errno::EISDIR),
        }
    }

    /// Whether a non-dir node is still only in a lower layer.
    pub(super) fn leaf_is_lower(&self, node: &Node) -> bool {
        matches!(&node.state.read().body, Body::Leaf(l) if l.upper.is_none())
    }

    /// The fd of a directory's topmost part.
    pub(super) fn dir_top(body: &DirBody) -> Result<Arc<OwnedFd>> {
        body.upper
            .as_ref()
            .or(body.lowers.first())
            .ok_or(Errno::ESTALE)?
            .fd()
    }

    pub(super) fn attr_of(&self, node: &Node) -> Result<libc::stat> {
        let mut st = match node.dir_body() {
            Some(d) => {
                let mut st = sys::fs::fstat(bfd(&*Self::dir_top(&d)?))?;
                if usize::from(d.upper.is_some()) + d.lowers.len() > 1 {
                    // Like the kernel: counting subdirs of a merged dir is not worth it.
                    st.st_nlink = 1;
                }
                st
            }
            None => {
                let mut st = self.checked_leaf(node)?.2;
                if let Some(blocks) = self.data_blocks(node) {
                    // A metacopy file shows its data's blocks, as the kernel.
                    st.st_blocks = blocks;
                }
                st
            }
        };
        st.st_ino = self.shown_ino(node.ino);
        Ok(st)
    }

    /// The (st_dev, st_ino) a non-dir node stands for.
    pub(super) fn leaf_real(&self, node: &Node) -> (u64, u64) {
        match &node.state.read().body {
            Body::Leaf(l) => l.real,
            Body::Dir(_) => (0, 0),
        }
    }

    /// An O_PATH fd on a non-dir node's object, checked to be that object.
    pub(super) fn leaf_path_fd(&self, node: &Node) -> Result<OwnedFd> {
        let (dir, name) = self.leaf_loc(node)?;
        let fd = sys::fs::open_path(bfd(&*dir), &name)?;
        let st = sys::fs::fstat(fd.as_fd())?;
        if (st.st_dev, st.st_ino) != self.leaf_real(node) {
            return Err(Errno::ENOENT);
        }
        Ok(fd)
    }

    /// An fd of a non-dir node's object, checked to be it; for a file whose
    /// last name is gone, through an open file of it (see
    /// [`Union::unlinked_object`]).
    pub(super) fn leaf_object(
        &self,
        node: &Arc<Node>,
        fh: Option<u64>,
        upper: bool,
    ) -> Result<Arc<OwnedFd>> {
        match self.leaf_path_fd(node) {
            Ok(fd) => Ok(Arc::new(fd)),
            Err(e) if e == Errno::ENOENT || e == Errno::ESTALE => {
                self.unlinked_object(node, fh, upper).map_err(|_| e)
            }
            Err(e) => Err(e),
        }
    }

    /// `leaf_loc` and the stat of what it names, checked to be this node's
    /// object: a racing unlink or rename may have given the name to a
    /// whiteout or another file (ENOENT then: this object is gone).
    pub(super) fn checked_leaf(&self, node: &Node) -> Result<(Arc<OwnedFd>, CString, libc::stat)> {
        let (dir, name) = self.leaf_loc(node)?;
        let st = sys::fs::lstatat(bfd(&*dir), &name)?;
        if (st.st_dev, st.st_ino) != self.leaf_real(node) {
            return Err(Errno::ENOENT);
        }
        Ok((dir, name, st))
    }

    /// The upper location of a node that is in the upper layer: for a dir,
    /// (its own fd, ""), for a non-dir, (parent upper dir, name).
    pub(super) fn upper_loc(&self, node: &Node) -> Result<(Arc<OwnedFd>, CString)> {
        let st = node.state.read();
        match &st.body {
            Body::Dir(d) => Ok((
                d.upper.as_ref().ok_or(Errno::EIO)?.fd()?,
                CString::default(),
            )),
            Body::Leaf(l) => Ok((l.upper.as_ref().ok_or(Errno::EIO)?.get()?, st.name.clone())),
        }
    }

    /// Attributes, from the open file `fh` when given (it stays valid after
    /// the last name is gone).
    pub fn getattr(&self, ino: u64, fh: Option<u64>) -> Result<libc::stat> {
        let node = self.node(ino)?;
        match self.attr_of(&node) {
            Err(e) if !node.is_dir() && (e == Errno::ENOENT || e == Errno::ESTALE) => {
                let mut st = self.open_file_stat(&node, fh)?;
                st.st_ino = self.shown_ino(node.ino);
                Ok(self.present(st))
            }
            r => r.map(|st| self.present(st)),
        }
    }

    /// Attributes as callers see them (owners through the id maps).
    pub(super) fn present(&self, mut st: libc::stat) -> libc::stat {
        st.st_uid = self.opts.uid_map.to_inside(st.st_uid);
        st.st_gid = self.opts.gid_map.to_inside(st.st_gid);
        st
    }

    /// The attributes of the root dir (its number included).
    pub fn root_stat(&self) -> libc::stat {
        self.attr_of(&self.root)
            .unwrap_or_else(|_| sys::fs::zeroed_stat())
    }

    /// Changes attributes for `caller`. A truncate without a new mode drops
    /// the set-id bits the caller's truncate removes (the kernel leaves that
    /// to us with FUSE_HANDLE_KILLPRIV_V2, and our own truncate keeps them).
    pub fn setattr(&self, ino: u64, a: SetAttr, caller: &Caller) -> Result<libc::stat> {
        let node = self.node(ino)?;
        self.require_upper()?;
        if a.mode.is_some() && node.kind == libc::S_IFLNK {
            // A symlink's mode is fixed; a chmod through /proc would follow it.
            return Err(Errno::ENOTSUP);
        }
        self.guard_setattr(&node, &a)?;
        if a.size.is_some() {
            self.copy_up_data(&node)?;
        } else {
            self.copy_up(&node)?;
        }
        // Non-dirs are changed through an fd checked to be this object, so
        // a racing rename or unlink of the name cannot redirect the change.
        let (dir, name) = if node.is_dir() {
            self.upper_loc(&node)?
        } else {
            (self.leaf_object(&node, a.fh, true)?, CString::default())
        };
        let dfd = bfd(&*dir);
        if let Some(size) = a.size {
            match node.kind {
                libc::S_IFREG => {}
                libc::S_IFDIR => return Err(Errno::EISDIR),
                _ => return Err(Errno::EINVAL),
            }
            let fh = a.fh.and_then(|f| self.files.get(&f).map(|h| h.clone()));
            match fh.filter(|h| h.writable()) {
                Some(h) => sys::fs::ftruncate(bfd(&*h.fd()), size as i64)?,
                None => {
                    let f = sys::fs::reopen(dfd, libc::O_WRONLY | libc::O_NONBLOCK)?;
                    sys::fs::ftruncate(f.as_fd(), size as i64)?;
                }
            }
            // A regular file here, so `dfd` is the file itself.
            if a.mode.is_none() {
                self.drop_setid(dfd, caller, false)?;
            }
        }
        if a.uid.is_some() || a.gid.is_some() {
            sys::fs::fchownat(
                dfd,
                &name,
                a.uid
                    .map(|u| self.opts.uid_map.to_outside(u))
                    .unwrap_or(u32::MAX),
                a.gid
                    .map(|g| self.opts.gid_map.to_outside(g))
                    .unwrap_or(u32::MAX),
                libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH,
            )?;
        }
        if let Some(mode) = a.mode {
            sys::fs::fchmodat(dfd, &name, mode & 0o7777)?;
        }
        if a.atime.is_some() || a.mtime.is_some() {
            let _turn = node.times_lock.lock();
            sys::fs::utimens_entry(
                dfd,
                &name,
                a.atime.unwrap_or(Time::Omit),
                a.mtime.unwrap_or(Time::Omit),
            )?;
        }
        self.getattr(ino, a.fh)
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let node = self.node(ino)?;
        // Through an O_PATH fd checked to be this link: by name, a racing
        // rename could put a file there after the check (EINVAL).
        let fd = self.leaf_path_fd(&node)?;
        sys::fs::readlinkat(fd.as_fd(), c"")
    }

    pub fn statfs(&self) -> Result<libc::statfs> {
        let l = self.layers.list.first().ok_or(Errno::EIO)?;
        sys::fs::fstatfs(bfd(&*l.fd))
    }
}
