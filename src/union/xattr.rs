//! Extended attributes: get, list, set and remove on a node's top object
//! (set and remove copy it up first); format.rs decides which names callers
//! see and what they map to on disk.

use std::ffi::{CString, OsStr};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::errno::{Errno, Result};
use crate::node::Node;
use crate::sys;
use crate::sys::fs::bfd;

use super::fileattr::Guard;
use super::Union;

impl Union {
    /// (dir fd, name) addressing a node's top object for the xattr calls;
    /// `change`: to set or remove one, which must reach the upper object.
    fn xattr_loc(&self, node: &Arc<Node>, change: bool) -> Result<(Arc<OwnedFd>, CString)> {
        match node.dir_body() {
            Some(d) => Ok((Self::dir_top(&d)?, CString::default())),
            // Through an fd checked to be this object. For a symlink too:
            // the /proc link of its O_PATH fd lands on the link itself.
            None => Ok((self.leaf_object(node, None, change)?, CString::default())),
        }
    }

    pub fn getxattr(&self, ino: u64, key: &OsStr) -> Result<Vec<u8>> {
        let node = self.node(ino)?;
        let (fd, name) = self.xattr_loc(&node, false)?;
        let real = self
            .fmt
            .real_xattr(std::os::unix::ffi::OsStrExt::as_bytes(key));
        let k = CString::new(real).map_err(|_| Errno::EINVAL)?;
        sys::xattr::get(bfd(&*fd), &name, &k)
    }

    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        let node = self.node(ino)?;
        let (fd, name) = self.xattr_loc(&node, false)?;
        let mut out = Vec::new();
        for k in sys::xattr::list(bfd(&*fd), &name)? {
            if let Some(v) = self.fmt.visible_xattr(&k) {
                out.extend_from_slice(&v);
                out.push(0);
            }
        }
        Ok(out)
    }

    pub fn setxattr(&self, ino: u64, key: &OsStr, value: &[u8], flags: i32) -> Result<()> {
        self.require_upper()?;
        let node = self.node(ino)?;
        self.guard(&node, Guard::Unprotected)?;
        self.copy_up(&node)?;
        let (fd, name) = self.xattr_loc(&node, true)?;
        let real = self
            .fmt
            .real_xattr(std::os::unix::ffi::OsStrExt::as_bytes(key));
        let k = CString::new(real).map_err(|_| Errno::EINVAL)?;
        sys::xattr::set(bfd(&*fd), &name, &k, value, flags)
    }

    pub fn removexattr(&self, ino: u64, key: &OsStr) -> Result<()> {
        self.require_upper()?;
        let node = self.node(ino)?;
        let real = self
            .fmt
            .real_xattr(std::os::unix::ffi::OsStrExt::as_bytes(key));
        let k = CString::new(real).map_err(|_| Errno::EINVAL)?;
        // Removing an absent xattr must not copy up.
        let (fd, name) = self.xattr_loc(&node, false)?;
        sys::xattr::get(bfd(&*fd), &name, &k)?;
        self.guard(&node, Guard::Unprotected)?;
        self.copy_up(&node)?;
        let (fd, name) = self.xattr_loc(&node, true)?;
        sys::xattr::remove(bfd(&*fd), &name, &k)
    }
}
