//! rename, with RENAME_NOREPLACE and RENAME_EXCHANGE: the checks, the
//! copy-ups, the move on disk (redirects, opaque marks, the whiteout left
//! behind) and the nodes following it.

use std::ffi::{CStr, OsStr, OsString};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use crate::errno::{Errno, Result};
use crate::format::{cname, EntryKind, Format, Redirect};
use crate::node::{Body, Node};
use crate::sys;
use crate::sys::fs::bfd;

use super::{is_absent, kind_of, Resolved, Union};

impl Union {
    pub fn rename(
        &self,
        parent_ino: u64,
        name: &OsStr,
        newparent_ino: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Result<()> {
        self.require_upper()?;
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 {
            return Err(Errno::EINVAL);
        }
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        if self.fmt.is_oci_name(newname) {
            return Err(Errno::EPERM);
        }
        let parent = self.node(parent_ino)?;
        let newparent = self.node(newparent_ino)?;
        let pbody = Self::dir_body(&parent)?;
        let nbody = Self::dir_body(&newparent)?;
        let src = self.resolve(&pbody, name)?.ok_or(Errno::ENOENT)?;
        let dst = self.resolve(&nbody, newname)?;
        if flags & libc::RENAME_NOREPLACE != 0 && dst.is_some() {
            return Err(Errno::EEXIST);
        }
        if exchange && dst.is_none() {
            return Err(Errno::ENOENT);
        }
        let src_dir = src.kind == libc::S_IFDIR;
        // Without redirect_dir a lower or merged dir cannot move (the kernel's
        // EXDEV; mv then copies). With it, the moved dir records its origin.
        let src_redirect = src_dir && self.dir_has_lower(&src);
        if src_redirect && !self.opts.redirect_dir {
            return Err(Errno::EXDEV);
        }
        let mut dst_redirect = false;
        if let Some(d) = &dst {
            if d.ino == src.ino && !exchange {
                // Two names of one object: POSIX says do nothing.
                return Ok(());
            }
            let dst_dir = d.kind == libc::S_IFDIR;
            if exchange {
                dst_redirect = dst_dir && self.dir_has_lower(d);
                if dst_redirect && !self.opts.redirect_dir {
                    return Err(Errno::EXDEV);
                }
            } else {
                if dst_dir && !src_dir {
                    return Err(Errno::EISDIR);
                }
                if !dst_dir && src_dir {
                    return Err(Errno::ENOTDIR);
                }
                if let Body::Dir(db) = &d.body {
                    if !self.merged_is_empty(db)? {
                        return Err(Errno::ENOTEMPTY);
                    }
                }
            }
        }
        // Copy-ups first, before any dir lock.
        if let Some(d) = dst.as_ref().filter(|_| !exchange) {
            // Replacing one name of a lower hard link.
            self.join_lower_links(&newparent, newname, d)?;
        }
        let src_node = self.install_transient(&parent, name, &src)?;
        self.copy_up(&src_node)?;
        let dst_node = match &dst {
            Some(d) if exchange => {
                let n = self.install_transient(&newparent, newname, d)?;
                self.copy_up(&n)?;
                Some(n)
            }
            _ => None,
        };
        self.copy_up(&parent)?;
        self.copy_up(&newparent)?;
        let pu = Self::dir_body(&parent)?.upper.ok_or(Errno::EIO)?;
        let nu = Self::dir_body(&newparent)?.upper.ok_or(Errno::EIO)?;
        let (pfd, nfd) = (pu.fd()?, nu.fd()?);
        let (pfd, nfd) = (bfd(&pfd), bfd(&nfd));
        let (cold, cnew) = (cname(name)?, cname(newname)?);
        // Dirs that move stay open until their new place is recorded.
        let _held = [Some(&src_node), dst_node.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|n| n.dir_body().and_then(|d| d.upper))
            .map(|u| u.dir.hold())
            .collect::<Result<Vec<_>>>()?;
        let pbody = Self::dir_body(&parent)?;
        let nbody = Self::dir_body(&newparent)?;
        let same = Arc::ptr_eq(&parent, &newparent);
        let src_target = if src_redirect {
            Some(self.redirect_for(&src_node, same)?)
        } else {
            None
        };
        let dst_target = match &dst_node {
            Some(n) if dst_redirect => Some(self.redirect_for(n, same)?),
            _ => None,
        };

        let (_g1, _g2) = if same {
            (Some(parent.dir_lock.lock()), None)
        } else if parent.ino < newparent.ino {
            let a = parent.dir_lock.lock();
            (Some(a), Some(newparent.dir_lock.lock()))
        } else {
            let b = newparent.dir_lock.lock();
            (Some(parent.dir_lock.lock()), Some(b))
        };

        if let Some(r) = &src_target {
            self.fmt.set_redirect(pfd, &cold, r)?;
        }
        if let Some(r) = &dst_target {
            self.fmt.set_redirect(nfd, &cnew, r)?;
        }
        // An error of a step after the object moved: reported once the
        // nodes follow the move.
        let mut after_move = Ok(());
        if exchange {
            // A pure-upper dir moving into a merged dir must not merge with
            // what lies below its new path (the kernel marks it opaque).
            if src_dir && !src_redirect && !nbody.lowers.is_empty() {
                self.fmt.set_opaque(pfd, &cold)?;
            }
            let dst_dir = dst.as_ref().is_some_and(|d| d.kind == libc::S_IFDIR);
            if dst_dir && !dst_redirect && !pbody.lowers.is_empty() {
                self.fmt.set_opaque(nfd, &cnew)?;
            }
            sys::fs::renameat2(pfd, &cold, nfd, &cnew, libc::RENAME_EXCHANGE)?;
        } else {
            let old_needs_whiteout = self.lower_has(&pbody, name)?;
            let dst_upper = match sys::fs::lstatat(nfd, &cnew) {
                Ok(st) => Some(st),
                Err(e) if is_absent(e) => None,
                Err(e) => return Err(e),
            };
            let dst_is_whiteout = dst_upper
                .as_ref()
                .is_some_and(|st| self.fmt.classify(nfd, &cnew, st, nu.xwh) == EntryKind::Whiteout);
            let new_has_lower = self.lower_has(&nbody, newname)?;
            if src_dir {
                // A moved pure-upper dir must not merge with lower dirs at its
                // new path; a redirected one merges with its own.
                if !src_redirect && (new_has_lower || dst_is_whiteout || !nbody.lowers.is_empty()) {
                    self.fmt.set_opaque(pfd, &cold)?;
                }
                if let Some(st) = &dst_upper {
                    if kind_of(st) == libc::S_IFDIR {
                        self.clear_whiteouts_at(nfd, &cnew)?;
                        if let Some(d) = &dst {
                            self.keep_open_before_removal(d.ino);
                        }
                    }
                }
            }
            if src_dir && dst_is_whiteout {
                // A dir cannot replace a non-dir: swap, then deal with the
                // whiteout that landed at the old name.
                sys::fs::renameat2(pfd, &cold, nfd, &cnew, libc::RENAME_EXCHANGE)?;
                if !old_needs_whiteout {
                    // The dir has moved; a whiteout left there hides nothing.
                    if let Err(e) = sys::fs::unlinkat(pfd, &cold, 0) {
                        log::warn!("rename: removing the whiteout it swapped out: {e}");
                    }
                }
            } else if old_needs_whiteout {
                match sys::fs::renameat2(pfd, &cold, nfd, &cnew, libc::RENAME_WHITEOUT) {
                    Ok(()) => {}
                    Err(e) if e == Errno::EPERM || e == Errno::EINVAL => {
                        after_move = self.rename_then_whiteout(pfd, &cold, nfd, &cnew)?;
                    }
                    Err(e) => return Err(e),
                }
            } else {
                sys::fs::renameat2(pfd, &cold, nfd, &cnew, 0)?;
            }
        }
        // Entries whose number comes from an origin make the dir impure.
        if self.fmt.has_origin(nfd, &cnew) || (exchange && self.fmt.has_origin(pfd, &cold)) {
            let _ = self.fmt.set_impure(nfd, c"");
            if exchange {
                let _ = self.fmt.set_impure(pfd, c"");
            }
        }
        drop((_g1, _g2));

        // Bring the in-memory nodes in line with the new names.
        if let Some(d) = &dst {
            if !exchange {
                self.forget_name(&newparent, &cnew, d.ino);
            }
        }
        self.move_node(&src_node, &parent, &cold, &newparent, &cnew, &nu);
        if let Some(dn) = dst_node {
            self.move_node(&dn, &newparent, &cnew, &parent, &cold, &pu);
        }
        after_move
    }

    /// A rename that leaves a whiteout, on an upper without RENAME_WHITEOUT.
    /// The whiteout is made first, under a staging name: on an upper that
    /// cannot hold one the rename fails before anything moved. Err: nothing
    /// moved; Ok(Err): the object moved, but its old name shows the lower
    /// object again.
    fn rename_then_whiteout(
        &self,
        pfd: BorrowedFd<'_>,
        cold: &CStr,
        nfd: BorrowedFd<'_>,
        cnew: &CStr,
    ) -> Result<Result<()>> {
        let stage = self.stage_dir(pfd);
        let tmp = self.stage_new(&mut |t| Format::make_whiteout(stage, t))?;
        if let Err(e) = sys::fs::renameat2(pfd, cold, nfd, cnew, 0) {
            let _ = sys::fs::unlinkat(stage, &tmp, 0);
            return Err(e);
        }
        Ok(
            sys::fs::renameat2(stage, &tmp, pfd, cold, 0).inspect_err(|_| {
                let _ = sys::fs::unlinkat(stage, &tmp, 0);
            }),
        )
    }

    /// The redirect a lower or merged dir gets when it moves: its name when
    /// it stays in the same parent (or what it already has), else the
    /// absolute path of its lower dirs. Too long a path gives EXDEV, as the
    /// kernel's `redirect_max`.
    fn redirect_for(&self, node: &Arc<Node>, samedir: bool) -> Result<Redirect> {
        let st = node.snapshot();
        let parent = st.parent.clone().ok_or(Errno::EXDEV)?;
        let pu = parent.dir_body().and_then(|d| d.upper).ok_or(Errno::EIO)?;
        let existing = self.fmt.redirect(bfd(&pu.fd()?), &st.name);
        let r = match (samedir, existing) {
            (true, Some(r)) => r,
            (true, None) => {
                Redirect::Relative(OsStr::from_bytes(st.name.to_bytes()).to_os_string())
            }
            (false, _) => Redirect::Absolute(self.lower_path(node)?),
        };
        if r.encode().len() > 256 {
            return Err(Errno::EXDEV);
        }
        Ok(r)
    }

    /// The path (from the lower layers' root) where a dir's lower dirs are,
    /// following the redirects of it and its ancestors.
    fn lower_path(&self, node: &Arc<Node>) -> Result<Vec<OsString>> {
        let mut rev: Vec<OsString> = Vec::new();
        let mut cur = node.clone();
        while let Some(parent) = cur.parent() {
            let name = cur.snapshot().name;
            let redirect = parent
                .dir_body()
                .and_then(|d| d.upper)
                .and_then(|u| self.fmt.redirect(bfd(&u.fd().ok()?), &name));
            match redirect {
                Some(Redirect::Absolute(p)) => {
                    rev.reverse();
                    let mut out = p;
                    out.extend(rev);
                    return Ok(out);
                }
                Some(Redirect::Relative(n)) => rev.push(n),
                None => rev.push(OsStr::from_bytes(name.to_bytes()).to_os_string()),
            }
            cur = parent;
        }
        rev.reverse();
        Ok(rev)
    }

    fn dir_has_lower(&self, r: &Resolved) -> bool {
        matches!(&r.body, Body::Dir(d) if !d.lowers.is_empty())
    }
}
