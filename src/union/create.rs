//! Making new names: create, mkdir, mknod, symlink and link, each built in
//! the parent's upper dir (over a whiteout atomically) and given to its
//! caller's owner.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::errno::{Errno, Result};
use crate::format::{cname, EntryKind};
use crate::node::{Body, LayerDir, LeafBody, Node};
use crate::sys;
use crate::sys::fs::bfd;

use super::fileattr::Guard;
use super::{is_absent, Caller, Entry, Resolved, Union};

/// Whether upper dir `dir` has a default ACL, which then decides the mode
/// of what is created in it instead of the caller's umask.
fn has_default_acl(dir: BorrowedFd<'_>) -> bool {
    sys::xattr::get(dir, c"", c"system.posix_acl_default").is_ok()
}

impl Union {
    /// Runs `build` to create an object named `name` in parent's upper dir,
    /// replacing a whiteout there atomically. New dirs over a whiteout are
    /// made opaque. Returns the upper dir it was made in.
    ///
    /// `build` gets the bits to clear from the new object's mode: the
    /// caller's umask, or none where the upper parent has a default ACL.
    fn create_in_upper(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        is_dir: bool,
        umask: u32,
        build: &mut dyn FnMut(BorrowedFd<'_>, &CStr, u32) -> Result<()>,
    ) -> Result<LayerDir> {
        self.require_upper()?;
        if self.fmt.is_oci_name(name) {
            // With OCI whiteouts on, such a name would act as a marker.
            return Err(Errno::EPERM);
        }
        self.guard(parent, Guard::NotImmutable)?;
        self.copy_up(parent)?;
        let body = Self::dir_body(parent)?;
        let upper = body.upper.clone().ok_or(Errno::EIO)?;
        let ufd = upper.fd()?;
        let ufd = bfd(&ufd);
        let cn = cname(name)?;
        let acl_default = umask != 0 && has_default_acl(ufd);
        let clear = if acl_default { 0 } else { umask };
        let _g = parent.dir_lock.lock();
        let existing = match sys::fs::lstatat(ufd, &cn) {
            Ok(st) => Some(st),
            Err(e) if is_absent(e) => None,
            Err(e) => return Err(e),
        };
        match existing {
            None => {
                build(ufd, &cn, clear)?;
                // With redirect_dir=on a new dir in a merged parent is opaque,
                // so a redirect can never merge something into it (as the
                // kernel does). It also keeps hiding what an OCI whiteout hid.
                if is_dir
                    && ((self.opts.redirect_dir && !body.lowers.is_empty())
                        || self.lower_has(&body, name)?)
                {
                    self.fmt.set_opaque(ufd, &cn)?;
                }
                Ok(upper.clone())
            }
            Some(st) if self.fmt.classify(ufd, &cn, &st, upper.xwh) == EntryKind::Whiteout => {
                // Staged in the parent itself where its default ACL must be
                // inherited: the work dir has none to give.
                let stage = if acl_default {
                    ufd
                } else {
                    self.stage_dir(ufd)
                };
                let tmp = self.stage_new(&mut |t| build(stage, t, clear))?;
                let r = if is_dir {
                    self.fmt
                        .set_opaque(stage, &tmp)
                        .and_then(|_| {
                            sys::fs::renameat2(stage, &tmp, ufd, &cn, libc::RENAME_EXCHANGE)
                        })
                        .map(|_| {
                            // The whiteout now sits at the temporary name.
                            let _ = sys::fs::unlinkat(stage, &tmp, 0);
                        })
                } else {
                    sys::fs::renameat2(stage, &tmp, ufd, &cn, 0)
                };
                if r.is_err() {
                    self.discard_staged(stage, &tmp);
                }
                r.map(|()| upper.clone())
            }
            Some(_) => Err(Errno::EEXIST),
        }
    }

    /// Gives a freshly created upper object to the caller: owner, and the
    /// group of a setgid parent.
    fn own_new(
        &self,
        parent: &Node,
        dir: BorrowedFd<'_>,
        name: &CStr,
        c: Caller,
        mode: u32,
    ) -> Result<()> {
        let pst = self.attr_of(parent)?;
        let gid = if pst.st_mode & libc::S_ISGID != 0 {
            pst.st_gid
        } else {
            self.opts.gid_map.to_outside(c.gid)
        };
        let c = Caller {
            uid: self.opts.uid_map.to_outside(c.uid),
            gid,
            ..c
        };
        let euid = sys::proc::geteuid();
        if c.uid != euid || gid != sys::proc::getegid() {
            sys::fs::fchownat(dir, name, c.uid, gid, libc::AT_SYMLINK_NOFOLLOW)?;
            // chown clears setuid/setgid: put them back (onto the mode the
            // filesystem gave, which a default ACL may have narrowed).
            let setid = mode & (libc::S_ISUID | libc::S_ISGID);
            if setid != 0 && mode & libc::S_IFMT != libc::S_IFLNK {
                let st = sys::fs::lstatat(dir, name)?;
                sys::fs::fchmodat(dir, name, (st.st_mode & 0o7777) | setid)?;
            }
        }
        // A dir made in a setgid dir is setgid too. One staged in the work
        // dir (over a whiteout) did not inherit it there.
        if mode & libc::S_IFMT == libc::S_IFDIR && pst.st_mode & libc::S_ISGID != 0 {
            let st = sys::fs::lstatat(dir, name)?;
            if st.st_mode & libc::S_ISGID == 0 {
                sys::fs::fchmodat(dir, name, (st.st_mode & 0o7777) | libc::S_ISGID)?;
            }
        }
        Ok(())
    }

    fn make_node(
        &self,
        parent_ino: u64,
        name: &OsStr,
        c: Caller,
        mode: u32,
        make: &dyn Fn(BorrowedFd<'_>, &CStr, u32) -> Result<()>,
    ) -> Result<Entry> {
        let parent = self.node(parent_ino)?;
        let is_dir = mode & libc::S_IFMT == libc::S_IFDIR;
        let parent2 = parent.clone();
        self.create_in_upper(&parent, name, is_dir, c.umask, &mut |dir, n, clear| {
            make(dir, n, clear)?;
            if let Err(e) = self.own_new(&parent2, dir, n, c, mode & !clear) {
                self.discard_staged(dir, n);
                return Err(e);
            }
            Ok(())
        })?;
        let e = self.lookup(parent_ino, name)?;
        Self::created_unprotected(&e.node);
        Ok(e)
    }

    pub fn mkdir(&self, parent: u64, name: &OsStr, mode: u32, c: Caller) -> Result<Entry> {
        let perm = mode & 0o7777;
        self.make_node(parent, name, c, libc::S_IFDIR | perm, &|d, n, clear| {
            sys::fs::mkdirat(d, n, perm & !clear)
        })
    }

    pub fn mknod(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u64,
        c: Caller,
    ) -> Result<Entry> {
        let fmt = mode & libc::S_IFMT;
        if fmt == libc::S_IFDIR || fmt == libc::S_IFLNK {
            return Err(Errno::EINVAL);
        }
        if fmt == libc::S_IFCHR && rdev == 0 {
            // Would read back as a whiteout; the kernel refuses it too.
            return Err(Errno::EPERM);
        }
        self.make_node(parent, name, c, mode, &|d, n, clear| {
            sys::fs::mknodat(d, n, mode & !clear, rdev)
        })
    }

    pub fn symlink(&self, parent: u64, name: &OsStr, target: &OsStr, c: Caller) -> Result<Entry> {
        let t = CString::new(std::os::unix::ffi::OsStrExt::as_bytes(target))
            .map_err(|_| Errno::EINVAL)?;
        let c = Caller { umask: 0, ..c };
        self.make_node(parent, name, c, libc::S_IFLNK | 0o777, &|d, n, _| {
            sys::fs::symlinkat(&t, d, n)
        })
    }

    /// Creates and opens a regular file.
    pub fn create(
        &self,
        parent_ino: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        c: Caller,
    ) -> Result<(Entry, u64)> {
        let parent = self.node(parent_ino)?;
        let perm = mode & 0o7777;
        let flags = self.real_file_flags(flags);
        let mut opened: Option<OwnedFd> = None;
        let open_flags = (flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_TRUNC))
            | libc::O_CREAT
            | libc::O_EXCL
            | libc::O_NOFOLLOW;
        let parent2 = parent.clone();
        let upper = self.create_in_upper(&parent, name, false, c.umask, &mut |dir, n, clear| {
            let fd = sys::fs::openat(dir, n, open_flags, perm & !clear)?;
            if let Err(e) = self.own_new(&parent2, dir, n, c, libc::S_IFREG | (perm & !clear)) {
                self.discard_staged(dir, n);
                return Err(e);
            }
            opened = Some(fd);
            Ok(())
        })?;
        let fd = opened.ok_or(Errno::EIO)?;
        let entry = self.install(&parent, name, self.created_file(&upper, &fd)?)?;
        Self::created_unprotected(&entry.node);
        let fh = self.add_file_handle(&entry.node, fd, flags, true);
        Ok((entry, fh))
    }

    /// What a resolve of a file `create` just made would find, from what it
    /// holds: made with O_EXCL, the file is `fd`, in upper dir `upper`, with
    /// one link and no origin, so it has its own number; resolving its name
    /// again would ask every layer.
    fn created_file(&self, upper: &LayerDir, fd: &OwnedFd) -> Result<Resolved> {
        let st = sys::fs::fstat(fd.as_fd())?;
        Ok(Resolved {
            kind: libc::S_IFREG,
            st,
            ino: self.layers.map_ino(st.st_dev, st.st_ino),
            body: Body::Leaf(LeafBody {
                upper: Some(upper.dir.clone()),
                lower: None,
                real: (st.st_dev, st.st_ino),
                data: None,
            }),
            in_lower: None,
        })
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &OsStr) -> Result<Entry> {
        let node = self.node(ino)?;
        if node.is_dir() {
            return Err(Errno::EPERM);
        }
        let np = self.node(newparent)?;
        self.guard(&node, Guard::Unprotected)?;
        self.copy_up(&node)?;
        if self.data_loc(&node).is_some() {
            // The kernel's order: the target's parent comes up before the
            // redirect (which may be too long: EXDEV).
            self.copy_up(&np)?;
            self.set_link_redirect(&node)?;
        }
        // Linked through an fd checked to be this object: the source name
        // may be renamed or replaced meanwhile.
        let src = self.leaf_path_fd(&node)?;
        // The new name is this node, under its number (the kernel shows the
        // old number at the old name until its dentry goes: a deviation).
        self.remember_linked(&node);
        self.create_in_upper(&np, newname, false, 0, &mut |dir, n, _| {
            sys::fs::link_tmpfile(src.as_fd(), dir, n)
        })?;
        // A name whose number comes from an origin makes the dir impure,
        // as a copy-up or rename into it does.
        if let Some(u) = Self::dir_body(&np)?.upper {
            let cn = cname(newname)?;
            if self.fmt.has_origin(bfd(&u.fd()?), &cn) {
                let _ = self.fmt.set_impure(bfd(&u.fd()?), c"");
            }
        }
        self.lookup(newparent, newname)
    }
}
