//! The set-id / KILLPRIV policy in one place: which set-id bits a write,
//! truncate or chown by a caller removes (the kernel's rule, which the server
//! applies itself with FUSE_HANDLE_KILLPRIV_V2), and when a write the server
//! never sees (passthrough) must not meet them.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::errno::Result;
use crate::sys;

use super::files::FileHandle;
use super::{Caller, SetAttr, Union};

/// Whether `mode` makes exec(2) raise privileges: setuid, or setgid with
/// group exec (setgid alone marks mandatory locking and grants nothing).
pub fn raises_privileges(mode: u32) -> bool {
    let sgid = libc::S_ISGID | libc::S_IXGRP;
    mode & libc::S_ISUID != 0 || mode & sgid == sgid
}

impl Union {
    /// The set-id bits that a write or truncate by `caller` removes from a
    /// regular file, by the kernel's rule: setuid always, setgid when the file
    /// is group-executable or the caller is not in its group, nothing for a
    /// caller with CAP_FSETID. `incapable`: the kernel already found the
    /// caller without it (FUSE_WRITE_KILL_SUIDGID).
    fn setid_bits_to_drop(&self, st: &libc::stat, caller: &Caller, incapable: bool) -> u32 {
        let setid = st.st_mode & (libc::S_ISUID | libc::S_ISGID);
        if setid == 0 || st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return 0;
        }
        let creds = sys::proc::proc_creds(caller.pid);
        if !incapable && creds.as_ref().is_some_and(|c| c.cap_fsetid) {
            return 0;
        }
        let mut drop = setid & libc::S_ISUID;
        if setid & libc::S_ISGID != 0 {
            let gid = self.opts.gid_map.to_inside(st.st_gid);
            let in_group =
                caller.gid == gid || creds.as_ref().is_some_and(|c| c.groups.contains(&gid));
            if st.st_mode & libc::S_IXGRP != 0 || !in_group {
                drop |= libc::S_ISGID;
            }
        }
        drop
    }

    /// Drops what `setid_bits_to_drop` says from the file behind `file` (an
    /// open or O_PATH fd); true if it dropped any. The server writes with
    /// CAP_FSETID, so its own write or truncate would keep them.
    pub(super) fn drop_setid(
        &self,
        file: BorrowedFd<'_>,
        caller: &Caller,
        incapable: bool,
    ) -> Result<bool> {
        let st = sys::fs::fstat(file)?;
        let drop = self.setid_bits_to_drop(&st, caller, incapable);
        if drop != 0 {
            sys::fs::fchmodat(file, c"", st.st_mode & 0o7777 & !drop)?;
        }
        Ok(drop != 0)
    }

    /// Whether writes by `writer` that the server never sees (passthrough)
    /// must not meet set-id bits of a file owned by `owner` (as callers see
    /// owners): the kernel would drop the bits at such a write (the writer
    /// lacks CAP_FSETID), and nobody can. The owner is let through: the bits
    /// give nobody more than the owner already has.
    pub fn unseen_writes_unsafe(&self, writer: &Caller, owner: u32) -> bool {
        writer.uid != owner && !sys::proc::proc_creds(writer.pid).is_some_and(|c| c.cap_fsetid)
    }

    /// Whether `writer` may write to the file behind `fd` without the server
    /// seeing the writes: not when the file's bits would make exec raise
    /// privileges and such a write would drop them.
    pub fn may_write_unseen(&self, fd: &OwnedFd, writer: &Caller) -> bool {
        sys::fs::fstat(fd.as_fd()).is_ok_and(|st| {
            !(raises_privileges(st.st_mode)
                && self.unseen_writes_unsafe(writer, self.opts.uid_map.to_inside(st.st_uid)))
        })
    }

    /// The generation of node `ino` and the owner `a` leaves it with (as
    /// callers see owners).
    pub fn generation_and_owner_after(&self, ino: u64, a: &SetAttr) -> Result<(u64, u32)> {
        let generation = self.node(ino)?.generation;
        let owner = match a.uid {
            Some(uid) => uid,
            None => self.getattr(ino, None)?.st_uid,
        };
        Ok((generation, owner))
    }

    /// Whether the file behind `fd` has a set-id bit.
    pub fn file_is_setid(&self, fd: &OwnedFd) -> bool {
        sys::fs::fstat(fd.as_fd()).is_ok_and(|st| st.st_mode & (libc::S_ISUID | libc::S_ISGID) != 0)
    }

    /// Drops the set-id bits a change of open file `h` by `caller` removes.
    /// The kernel's cached mode would still show them (after a write it only
    /// refetches times and size), so the node's attributes are invalidated.
    pub(super) fn drop_setid_of(
        &self,
        h: &FileHandle,
        caller: &Caller,
        incapable: bool,
    ) -> Result<()> {
        if self.drop_setid(h.fd().as_fd(), caller, incapable)? {
            self.attributes_changed(h.node.ino);
        }
        Ok(())
    }
}
