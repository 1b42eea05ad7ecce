//! rename, with RENAME_NOREPLACE and RENAME_EXCHANGE: the checks, the
//! copy-ups, the move on disk (redirects, opaque marks, the whiteout left
//! behind) and the nodes following it.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use crate::dir_fd::Held;
use crate::errno::{Errno, Result};
use crate::format::{cname, EntryKind, Format, Redirect};
use crate::node::{Body, DirBody, LayerDir, Node};
use crate::sys;
use crate::sys::fs::bfd;

use super::fileattr::Guard;
use super::{is_absent, kind_of, Resolved, Union};

/// What the checks of a rename found, for the phases after them.
struct Plan<'a> {
    parent: Arc<Node>,
    name: &'a OsStr,
    newparent: Arc<Node>,
    newname: &'a OsStr,
    src: Resolved,
    /// What the new name holds now.
    dst: Option<Resolved>,
    /// Whether a lower layer has the new name, if its resolve found out
    /// (`Resolved::in_lower`, also for a free name).
    dst_in_lower: Option<bool>,
    exchange: bool,
    /// The source (or, exchanged, the target) is a dir with lower dirs,
    /// which records where they are in a redirect.
    src_redirect: bool,
    dst_redirect: bool,
}

/// What the copy-ups left for the move: the objects that move, their
/// parents' upper dirs, and the names on disk.
struct Prepared {
    src_node: Arc<Node>,
    /// The object that moves the other way (exchange only).
    dst_node: Option<Arc<Node>>,
    pu: LayerDir,
    nu: LayerDir,
    cold: CString,
    cnew: CString,
    /// Dirs that move stay open until their new place is recorded.
    _held: Vec<Held>,
}

impl Union {
    /// Renames in four phases: checks, copy-ups (before any dir lock), the
    /// move on disk (under the dir locks), and the nodes following it.
    pub fn rename(
        &self,
        parent_ino: u64,
        name: &OsStr,
        newparent_ino: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Result<()> {
        let Some(plan) = self.rename_check(parent_ino, name, newparent_ino, newname, flags)? else {
            return Ok(());
        };
        let prep = self.rename_prepare(&plan)?;
        // An error of a step after the object moved: reported once the
        // nodes follow the move.
        let after_move = self.rename_on_disk(&plan, &prep);
        let moved_dir = plan.src.kind == libc::S_IFDIR
            || plan.exchange && plan.dst.as_ref().is_some_and(|d| d.kind == libc::S_IFDIR);
        if moved_dir {
            // Also after an error: a redirect may have been written.
            self.forget_moved_dirs();
        }
        let after_move = after_move?;
        self.rename_nodes(&plan, &prep);
        after_move
    }

    /// The checks, before anything changes. None: both names are one
    /// object, and POSIX says do nothing.
    fn rename_check<'a>(
        &self,
        parent_ino: u64,
        name: &'a OsStr,
        newparent_ino: u64,
        newname: &'a OsStr,
        flags: u32,
    ) -> Result<Option<Plan<'a>>> {
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
        let (dst, dst_in_lower) = self.resolve_probed(&nbody, newname)?;
        if flags & libc::RENAME_NOREPLACE != 0 && dst.is_some() {
            return Err(Errno::EEXIST);
        }
        if exchange && dst.is_none() {
            return Err(Errno::ENOENT);
        }
        // Renaming a name onto another name of the same object does nothing,
        // as the VFS does before its may_delete checks.
        if !dst.as_ref().is_some_and(|d| d.ino == src.ino && !exchange) {
            self.guard_removal(&parent, &src, name)?;
            match &dst {
                // Replacing (or exchanging with) an object removes it from its dir.
                Some(d) => self.guard_removal(&newparent, d, newname)?,
                None => self.guard(&newparent, Guard::NotImmutable)?,
            }
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
                return Ok(None);
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
        Ok(Some(Plan {
            parent,
            name,
            newparent,
            newname,
            src,
            dst,
            dst_in_lower,
            exchange,
            src_redirect,
            dst_redirect,
        }))
    }

    /// The copy-ups, all before any dir lock is taken.
    fn rename_prepare(&self, p: &Plan<'_>) -> Result<Prepared> {
        if let Some(d) = p.dst.as_ref().filter(|_| !p.exchange) {
            // Replacing one name of a lower hard link.
            self.join_lower_links(&p.newparent, p.newname, d)?;
        }
        let src_node = self.install_transient(&p.parent, p.name, &p.src)?;
        self.copy_up(&src_node)?;
        let dst_node = match &p.dst {
            Some(d) if p.exchange => {
                let n = self.install_transient(&p.newparent, p.newname, d)?;
                self.copy_up(&n)?;
                Some(n)
            }
            _ => None,
        };
        self.copy_up(&p.parent)?;
        self.copy_up(&p.newparent)?;
        let pu = Self::dir_body(&p.parent)?.upper.ok_or(Errno::EIO)?;
        let nu = Self::dir_body(&p.newparent)?.upper.ok_or(Errno::EIO)?;
        let (cold, cnew) = (cname(p.name)?, cname(p.newname)?);
        let _held = [Some(&src_node), dst_node.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|n| n.dir_body().and_then(|d| d.upper))
            .map(|u| u.dir.hold())
            .collect::<Result<Vec<_>>>()?;
        Ok(Prepared {
            src_node,
            dst_node,
            pu,
            nu,
            cold,
            cnew,
            _held,
        })
    }

    /// The move on disk, under both parents' dir locks: redirects, opaque
    /// marks, the rename itself and the whiteout it leaves. Err: nothing
    /// moved; Ok(Err): it moved, but a later step failed.
    fn rename_on_disk(&self, p: &Plan<'_>, m: &Prepared) -> Result<Result<()>> {
        let (pfd, nfd) = (m.pu.fd()?, m.nu.fd()?);
        let (pfd, nfd) = (bfd(&pfd), bfd(&nfd));
        let (cold, cnew) = (m.cold.as_c_str(), m.cnew.as_c_str());
        let pbody = Self::dir_body(&p.parent)?;
        let nbody = Self::dir_body(&p.newparent)?;
        let same = Arc::ptr_eq(&p.parent, &p.newparent);
        // A metacopy file finds its data through its redirect, as a
        // renamed dir finds its lower dirs.
        let src_target = if p.src_redirect || self.data_loc(&m.src_node).is_some() {
            Some(self.redirect_for(&m.src_node, same)?)
        } else {
            None
        };
        // Not failed yet: the kernel writes the source's redirect before it
        // finds the target's too long (EXDEV), and leaves it.
        let dst_target = match &m.dst_node {
            Some(n) if p.dst_redirect || self.data_loc(n).is_some() => {
                Some(self.redirect_for(n, same))
            }
            _ => None,
        };

        let (_g1, _g2) = if same {
            (Some(p.parent.dir_lock.lock()), None)
        } else if p.parent.ino < p.newparent.ino {
            let a = p.parent.dir_lock.lock();
            (Some(a), Some(p.newparent.dir_lock.lock()))
        } else {
            let b = p.newparent.dir_lock.lock();
            (Some(p.parent.dir_lock.lock()), Some(b))
        };

        if let Some(r) = &src_target {
            self.fmt.set_redirect(pfd, cold, r)?;
        }
        if let Some(r) = dst_target {
            self.fmt.set_redirect(nfd, cnew, &r?)?;
        }
        let after_move = if p.exchange {
            self.rename_exchanging(p, (pfd, cold, &pbody), (nfd, cnew, &nbody))?;
            Ok(())
        } else {
            self.rename_replacing(p, m, (pfd, &pbody), (nfd, &nbody))?
        };
        // Entries whose number comes from an origin make the dir impure.
        if self.fmt.has_origin(nfd, cnew) || (p.exchange && self.fmt.has_origin(pfd, cold)) {
            let _ = self.fmt.set_impure(nfd, c"");
            if p.exchange {
                let _ = self.fmt.set_impure(pfd, c"");
            }
        }
        Ok(after_move)
    }

    /// The move of RENAME_EXCHANGE: both objects swap places.
    fn rename_exchanging(
        &self,
        p: &Plan<'_>,
        (pfd, cold, pbody): (BorrowedFd<'_>, &CStr, &DirBody),
        (nfd, cnew, nbody): (BorrowedFd<'_>, &CStr, &DirBody),
    ) -> Result<()> {
        let src_dir = p.src.kind == libc::S_IFDIR;
        // A pure-upper dir moving into a merged dir must not merge with
        // what lies below its new path (the kernel marks it opaque).
        if src_dir && !p.src_redirect && !nbody.lowers.is_empty() {
            self.fmt.set_opaque(pfd, cold)?;
        }
        let dst_dir = p.dst.as_ref().is_some_and(|d| d.kind == libc::S_IFDIR);
        if dst_dir && !p.dst_redirect && !pbody.lowers.is_empty() {
            self.fmt.set_opaque(nfd, cnew)?;
        }
        sys::fs::renameat2(pfd, cold, nfd, cnew, libc::RENAME_EXCHANGE)
    }

    /// The move of a rename that is no exchange: the target name, if any,
    /// is replaced, and the old name gets a whiteout where a lower layer
    /// still has it. Err: nothing moved; Ok(Err): as `rename_then_whiteout`.
    fn rename_replacing(
        &self,
        p: &Plan<'_>,
        m: &Prepared,
        (pfd, pbody): (BorrowedFd<'_>, &DirBody),
        (nfd, nbody): (BorrowedFd<'_>, &DirBody),
    ) -> Result<Result<()>> {
        let (cold, cnew) = (m.cold.as_c_str(), m.cnew.as_c_str());
        let src_dir = p.src.kind == libc::S_IFDIR;
        // Known from the checks' resolves where they looked: lower layers
        // never change under the mount.
        let old_needs_whiteout = match p.src.in_lower {
            Some(known) => known,
            None => self.lower_has(pbody, p.name)?,
        };
        let dst_upper = match sys::fs::lstatat(nfd, cnew) {
            Ok(st) => Some(st),
            Err(e) if is_absent(e) => None,
            Err(e) => return Err(e),
        };
        let dst_is_whiteout = dst_upper
            .as_ref()
            .is_some_and(|st| self.fmt.classify(nfd, cnew, st, m.nu.xwh) == EntryKind::Whiteout);
        let new_has_lower = match p.dst_in_lower {
            Some(known) => known,
            None => self.lower_has(nbody, p.newname)?,
        };
        let mut after_move = Ok(());
        if src_dir {
            // A moved pure-upper dir must not merge with lower dirs at its
            // new path; a redirected one merges with its own.
            if !p.src_redirect && (new_has_lower || dst_is_whiteout || !nbody.lowers.is_empty()) {
                self.fmt.set_opaque(pfd, cold)?;
            }
            if let Some(st) = &dst_upper {
                if kind_of(st) == libc::S_IFDIR {
                    self.clear_whiteouts_at(nfd, cnew)?;
                    if let Some(d) = &p.dst {
                        self.keep_open_before_removal(d.ino);
                    }
                }
            }
        }
        if src_dir && dst_is_whiteout {
            // A dir cannot replace a non-dir: swap, then deal with the
            // whiteout that landed at the old name.
            sys::fs::renameat2(pfd, cold, nfd, cnew, libc::RENAME_EXCHANGE)?;
            if !old_needs_whiteout {
                // The dir has moved; a whiteout left there hides nothing.
                if let Err(e) = sys::fs::unlinkat(pfd, cold, 0) {
                    log::warn!("rename: removing the whiteout it swapped out: {e}");
                }
            }
        } else if old_needs_whiteout {
            match sys::fs::renameat2(pfd, cold, nfd, cnew, libc::RENAME_WHITEOUT) {
                Ok(()) => {}
                Err(e) if e == Errno::EPERM || e == Errno::EINVAL => {
                    after_move = self.rename_then_whiteout(pfd, cold, nfd, cnew)?;
                }
                Err(e) => return Err(e),
            }
        } else {
            sys::fs::renameat2(pfd, cold, nfd, cnew, 0)?;
        }
        Ok(after_move)
    }

    /// Brings the in-memory nodes in line with the new names.
    fn rename_nodes(&self, p: &Plan<'_>, m: &Prepared) {
        if let Some(d) = &p.dst {
            if !p.exchange {
                self.forget_name(&p.newparent, &m.cnew, d.ino);
            }
        }
        self.move_node(
            &m.src_node,
            &p.parent,
            &m.cold,
            &p.newparent,
            &m.cnew,
            &m.nu,
        );
        if let Some(dn) = &m.dst_node {
            self.move_node(dn, &p.newparent, &m.cnew, &p.parent, &m.cold, &m.pu);
        }
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
        // The names of a hard link may sit in other dirs: a metacopy file
        // whose lower is linked records an absolute redirect, as the
        // kernel's `ovl_need_absolute_redirect`.
        let samedir = samedir && !self.data_is_linked(node);
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

    /// A hard link to a metacopy file: every name of it must find its data,
    /// so it records the absolute path of its lower (the kernel's
    /// `ovl_set_link_redirect`).
    pub(super) fn set_link_redirect(&self, node: &Arc<Node>) -> Result<()> {
        let st = node.snapshot();
        let parent = st.parent.clone().ok_or(Errno::EIO)?;
        let pu = parent.dir_body().and_then(|d| d.upper).ok_or(Errno::EIO)?;
        let pfd = pu.fd()?;
        if matches!(
            self.fmt.redirect(bfd(&pfd), &st.name),
            Some(Redirect::Absolute(_))
        ) {
            return Ok(());
        }
        let r = Redirect::Absolute(self.lower_path(node)?);
        if r.encode().len() > 256 {
            return Err(Errno::EXDEV);
        }
        self.fmt.set_redirect(bfd(&pfd), &st.name, &r)
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
