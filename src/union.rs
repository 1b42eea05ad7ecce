//! The union filesystem's operations, with no FUSE types: lookup across
//! layers, attributes, and every change to the namespace.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::dir_fd::FdPool;
use crate::errno::{Errno, Result};
use crate::format::{cname, EntryKind, Format, Opacity, Redirect};
use crate::layers::Layers;
use crate::node::{Body, DirBody, LayerDir, Node, NodeTable, State};
use crate::sys;
use crate::sys::fs::bfd;

mod attrs;
mod copy_up;
mod create;
mod files;
mod hardlinks;
mod install;
mod lookup;
mod readdir;
mod remove;
mod setid;
mod staging;
mod types;

use files::FileHandle;
use readdir::DirHandle;
pub use setid::raises_privileges;
pub(crate) use types::Resolved;
pub use types::{Caller, Entry, Invalidator, Options, SetAttr, ROOT_INO};

pub struct Union {
    pub(crate) layers: Layers,
    pub(crate) fmt: Format,
    pub(crate) opts: Options,
    pub(crate) nodes: NodeTable,
    pub(crate) files: DashMap<u64, Arc<FileHandle>>,
    pub(crate) dirs: DashMap<u64, Arc<DirHandle>>,
    next_fh: AtomicU64,
    tmp_counter: AtomicU64,
    root: Arc<Node>,
    root_ino: u64,
    /// Tells the kernel to drop its cached attributes of an inode.
    invalidator: parking_lot::RwLock<Option<Invalidator>>,
    /// Per lower layer: multiply-linked inodes and their names (lazy).
    pub(crate) link_maps:
        parking_lot::Mutex<std::collections::HashMap<usize, Arc<hardlinks::LinkMap>>>,
    /// The kernel's writeback cache is on (see `real_file_flags`).
    writeback: AtomicBool,
    /// Bounds the open fds of layer dirs.
    pub(crate) dir_fds: Arc<FdPool>,
}

fn kind_of(st: &libc::stat) -> u32 {
    st.st_mode & libc::S_IFMT
}

fn is_absent(e: Errno) -> bool {
    e == Errno::ENOENT || e == Errno::ENAMETOOLONG || e == Errno::ENOTDIR
}

impl Union {
    pub fn new(layers: Layers, opts: Options) -> Result<Union> {
        let fmt = Format::new(opts.userxattr, opts.oci_whiteouts);
        let nodes = NodeTable::new();
        let mut body = DirBody::default();
        let mut stop = false;
        for (i, l) in layers.list.iter().enumerate() {
            if stop {
                break;
            }
            let opacity = fmt.opacity(bfd(&*l.fd), c".", i >= layers.first_lower());
            let ld = LayerDir::new(i, l.root.clone(), opacity == Opacity::XattrWhiteouts);
            if layers.has_upper && i == 0 {
                body.upper = Some(ld);
            } else {
                body.lowers.push(ld);
            }
            stop = opacity == Opacity::Opaque;
        }
        let root = Arc::new(Node::new(
            ROOT_INO,
            0,
            libc::S_IFDIR,
            State {
                parent: None,
                name: CString::default(),
                aliases: Vec::new(),
                body: Body::Dir(body.clone()),
            },
        ));
        let root_body = body;
        nodes.insert_root(root.clone());
        Ok(Union {
            layers,
            fmt,
            opts,
            nodes,
            files: DashMap::new(),
            dirs: DashMap::new(),
            next_fh: AtomicU64::new(1),
            // A random start: names left by a crashed server with the same
            // pid, or made by callers, are then unlikely to be met.
            tmp_counter: AtomicU64::new(sys::proc::random_u64() >> 16),
            root,
            root_ino: ROOT_INO,
            invalidator: parking_lot::RwLock::new(None),
            link_maps: parking_lot::Mutex::new(std::collections::HashMap::new()),
            writeback: AtomicBool::new(false),
            // Tests set UNIONFS_DIR_FDS to make reopening the common case.
            dir_fds: FdPool::new(
                std::env::var("UNIONFS_DIR_FDS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| FdPool::budget_for_limit(sys::proc::nofile_limit())),
            ),
        })
        .map(|mut u| {
            if let Ok(st) = Self::dir_top(&root_body).and_then(|fd| sys::fs::fstat(bfd(&*fd))) {
                u.root_ino = u.dir_ino(&root_body, &st);
            }
            u
        })
    }

    /// Whether a layer sits on overlayfs or FUSE (FUSE passthrough then
    /// needs stack depth 2).
    pub fn layers_on_stacking_fs(&self) -> bool {
        const OVERLAYFS_MAGIC: i64 = 0x794c_7630;
        const FUSE_MAGIC: i64 = 0x6573_5546;
        self.layers.list.iter().any(|l| {
            sys::fs::fstatfs(bfd(&*l.fd))
                .map(|s| s.f_type == OVERLAYFS_MAGIC || s.f_type == FUSE_MAGIC)
                .unwrap_or(false)
        })
    }

    /// Installs the hook that drops the kernel's cached attributes.
    pub fn set_invalidator(&self, f: Invalidator) {
        *self.invalidator.write() = Some(f);
    }

    /// The kernel's cached attributes of `ino` are stale (the server changed
    /// something the kernel did not ask for).
    pub(crate) fn attributes_changed(&self, ino: u64) {
        if let Some(f) = &*self.invalidator.read() {
            f(ino);
        }
    }

    pub fn has_upper(&self) -> bool {
        self.layers.has_upper
    }

    pub(crate) fn next_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn node(&self, ino: u64) -> Result<Arc<Node>> {
        if ino == ROOT_INO {
            return Ok(self.root.clone());
        }
        self.nodes.get(ino).ok_or(Errno::ESTALE)
    }

    fn dir_body(node: &Node) -> Result<DirBody> {
        node.dir_body().ok_or(Errno::ENOTDIR)
    }

    fn require_upper(&self) -> Result<()> {
        if self.layers.has_upper {
            Ok(())
        } else {
            Err(Errno::EROFS)
        }
    }

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
        self.copy_up(&node)?;
        let (fd, name) = self.xattr_loc(&node, true)?;
        sys::xattr::remove(bfd(&*fd), &name, &k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt};

    /// Without a work dir, staging names live in the upper dir, where a
    /// caller may have made them first: copy-up skips them, and the files
    /// there stay as they were.
    #[test]
    fn copy_up_skips_taken_staging_names() {
        let root = std::env::temp_dir().join(format!("ufs-stage-{}", std::process::id()));
        let (lower, upper) = (root.join("lower"), root.join("upper"));
        std::fs::create_dir_all(lower.join("d")).unwrap();
        std::fs::create_dir_all(&upper).unwrap();
        symlink("target", lower.join("d/link")).unwrap();
        let layers = Layers::new(
            Some(crate::layers::open_dir(&upper).unwrap()),
            vec![crate::layers::open_dir(&lower).unwrap()],
            None,
        )
        .unwrap();
        let opts = Options {
            userxattr: false,
            oci_whiteouts: false,
            volatile: true,
            redirect_dir: false,
            uid_map: Default::default(),
            gid_map: Default::default(),
        };
        let u = Union::new(layers, opts).unwrap();
        u.tmp_counter.store(0, Ordering::Relaxed);
        let pid = sys::proc::getpid();
        let taken: Vec<String> = (0..40).map(|n| format!("#ufs{pid:x}.{n:x}")).collect();
        for t in &taken {
            std::fs::write(upper.join(t), b"mine").unwrap();
        }
        let d = u.lookup(ROOT_INO, OsStr::new("d")).unwrap();
        let link = u.lookup(d.ino, OsStr::new("link")).unwrap();
        u.copy_up(&link.node).unwrap();
        for t in &taken {
            assert_eq!(std::fs::read(upper.join(t)).unwrap(), b"mine", "{t}");
        }
        assert_eq!(
            std::fs::read_link(upper.join("d/link")).unwrap().to_str(),
            Some("target")
        );
        assert!(std::fs::symlink_metadata(upper.join("d")).unwrap().ino() != 0);
        let _ = std::fs::remove_dir_all(&root);
    }
}
