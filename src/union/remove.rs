//! Removing names: unlink and rmdir, with the whiteout a name needs when a
//! lower layer still has it.

use std::ffi::OsStr;
use std::sync::Arc;

use crate::errno::{Errno, Result};
use crate::format::{cname, Format};
use crate::node::{Body, Node};
use crate::sys;
use crate::sys::fs::bfd;

use super::{is_absent, Resolved, Union};

impl Union {
    pub fn unlink(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.remove(parent, name, false)
    }

    pub fn rmdir(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.remove(parent, name, true)
    }

    fn remove(&self, parent_ino: u64, name: &OsStr, want_dir: bool) -> Result<()> {
        self.require_upper()?;
        let parent = self.node(parent_ino)?;
        let body = Self::dir_body(&parent)?;
        let r = self.resolve(&body, name)?.ok_or(Errno::ENOENT)?;
        // Before the type and emptiness checks, as the VFS's may_delete.
        self.guard_removal(&parent, &r, name)?;
        let is_dir = r.kind == libc::S_IFDIR;
        if want_dir && !is_dir {
            return Err(Errno::ENOTDIR);
        }
        if !want_dir && is_dir {
            return Err(Errno::EISDIR);
        }
        if let Body::Dir(d) = &r.body {
            if !self.merged_is_empty(d)? {
                return Err(Errno::ENOTEMPTY);
            }
        }
        self.join_lower_links(&parent, name, &r)?;
        self.copy_up(&parent)?;
        let body = Self::dir_body(&parent)?;
        let upper = body.upper.clone().ok_or(Errno::EIO)?;
        let ufd = upper.fd()?;
        let ufd = bfd(&ufd);
        let cn = cname(name)?;
        let needs_whiteout = match r.in_lower {
            Some(known) => known,
            None => self.lower_has(&body, name)?,
        };
        {
            let _g = parent.dir_lock.lock();
            let in_upper = match sys::fs::lstatat(ufd, &cn) {
                Ok(_) => true,
                Err(e) if is_absent(e) => false,
                Err(e) => return Err(e),
            };
            if in_upper && is_dir {
                self.keep_open_before_removal(r.ino);
            }
            match (in_upper, needs_whiteout) {
                (false, true) => Format::make_whiteout(ufd, &cn)?,
                (false, false) => return Err(Errno::ENOENT),
                (true, false) => {
                    if is_dir {
                        self.clear_whiteouts_at(ufd, &cn)?;
                        sys::fs::unlinkat(ufd, &cn, libc::AT_REMOVEDIR)?;
                    } else {
                        sys::fs::unlinkat(ufd, &cn, 0)?;
                    }
                }
                (true, true) => {
                    let stage = self.stage_dir(ufd);
                    let tmp = self.stage_new(&mut |t| Format::make_whiteout(stage, t))?;
                    let flags = if is_dir { libc::RENAME_EXCHANGE } else { 0 };
                    if let Err(e) = sys::fs::renameat2(stage, &tmp, ufd, &cn, flags) {
                        let _ = sys::fs::unlinkat(stage, &tmp, 0);
                        return Err(e);
                    }
                    if is_dir {
                        // The removed dir now sits at the temporary name.
                        self.discard_staged(stage, &tmp);
                    }
                }
            }
        }
        self.forget_name(&parent, &cn, r.ino);
        // With the writeback cache the kernel keeps a file's cached
        // attributes across an unlink and only drops nlink itself, so an fd
        // still open on an object that lives on (a lower file, now whited
        // out) would show nlink 0. Let the next stat ask.
        if self.writeback() && !is_dir {
            self.attributes_changed(r.ino);
        }
        Ok(())
    }

    /// The upper dir of node `ino` is about to be removed: its fd must
    /// outlive it (see `DirFd::keep_open`).
    pub(super) fn keep_open_before_removal(&self, ino: u64) {
        let upper = self.nodes.current(ino).and_then(|n| n.dir_body()?.upper);
        if let Some(u) = upper {
            let _ = u.dir.keep_open();
        }
    }

    /// Before one name of a lower hard link goes away, the other names must
    /// show one link less, as with the kernel's index: copying it up joins
    /// them all in the upper first.
    pub(super) fn join_lower_links(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        r: &Resolved,
    ) -> Result<()> {
        if matches!(&r.body, Body::Leaf(l) if l.upper.is_none()) && r.st.st_nlink > 1 {
            let node = self.install_transient(parent, name, r)?;
            self.copy_up(&node)?;
        }
        Ok(())
    }
}
