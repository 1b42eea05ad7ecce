//! Resolving a name across the layers, top first: whiteouts, opaque dirs,
//! redirects, OCI whiteouts, which lower objects a name has, and which
//! inode number the result shows (origin, the kernel's rule for dirs).

use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::fd::AsFd;

use crate::dir_fd::DirFd;
use crate::errno::{Errno, Result};
use crate::format::{cname, EntryKind, Format, Opacity};
use crate::node::{Body, DataLoc, DirBody, LayerDir, LeafBody};
use crate::sys;
use crate::sys::fs::bfd;

use super::metacopy::MetaAt;
use super::want::Want;
use super::{is_absent, kind_of, Entry, Resolved, Union, ROOT_INO};

/// From this many lower layers on, a dir's lower parts keep their name
/// lists, so a lookup skips the layers without the name instead of probing.
const MANY_LOWERS: usize = 3;

/// Lower dirs bigger than this are probed, not listed in memory.
const MAX_KEPT_NAMES: usize = 4096;

/// Whether a dir's lower parts keep their name lists (see `MANY_LOWERS`).
fn merges_many(d: &DirBody) -> bool {
    d.lowers.len() >= MANY_LOWERS
}

/// What `resolve` has found so far, carried from layer to layer.
struct Walk {
    /// The merged dir being built, once a layer had a dir.
    dir: Option<DirBody>,
    /// The topmost object's stat.
    top: Option<libc::stat>,
    /// What the layers below are asked for.
    want: Want,
    /// What the name's own topmost lower entry is (see `Resolved::in_lower`),
    /// once met; entries found through a redirect do not count.
    in_lower: Option<bool>,
    /// Whether the upper dir has an origin, once `fix_origin` looked.
    upper_origin: Option<bool>,
}

/// The upper layer's answer: final, or where the lower layers carry on.
enum Upper {
    Done(Option<Resolved>),
    Merge(Walk),
}

/// After one lower layer: a non-dir that ends the lookup, stop (a
/// whiteout, an opaque dir, a non-dir below a dir), or go on below.
// Returned once per layer and never stored: boxing would cost an
// allocation on every lower non-dir found.
#[allow(clippy::large_enum_variant)]
enum Step {
    Leaf(Resolved),
    Stop,
    Go,
}

impl Union {
    /// Resolves `name` inside a merged dir, top layer first. A lookup treats
    /// an xattr whiteout in a lower layer as a whiteout even outside an
    /// `opaque=x` dir (readdir lists it there), exactly as the kernel does.
    pub(super) fn resolve(&self, parent: &DirBody, name: &OsStr) -> Result<Option<Resolved>> {
        Ok(self.resolve_probed(parent, name)?.0)
    }

    /// [`Union::resolve`], and whether a lower layer has the name (see
    /// `Resolved::in_lower`) also when it resolves to nothing, so that a
    /// rename to a free name need not ask the lowers again.
    pub(super) fn resolve_probed(
        &self,
        parent: &DirBody,
        name: &OsStr,
    ) -> Result<(Option<Resolved>, Option<bool>)> {
        if self.fmt.is_oci_name(name) {
            return Ok((None, None));
        }
        let cn = cname(name)?;
        let mut walk = match self.resolve_upper(parent, &cn, name)? {
            Upper::Done(r) => {
                let in_lower = r.as_ref().and_then(|r| r.in_lower);
                return Ok((r, in_lower));
            }
            Upper::Merge(walk) => walk,
        };
        // A walk of the name's own lower dirs that meets nothing tells that
        // no lower has it; one that follows a redirect tells nothing.
        let own = walk.want == Want::Own;
        if let Some(leaf) = self.resolve_lowers(parent, &cn, name, &mut walk)? {
            let in_lower = leaf.in_lower;
            return Ok((Some(leaf), in_lower));
        }
        let in_lower = walk.in_lower.or(own.then_some(false));
        Ok(match (walk.dir, walk.top) {
            (Some(d), Some(st)) => {
                let r = self.resolved_dir(d, st, in_lower, walk.upper_origin);
                (Some(r), in_lower)
            }
            _ => (None, in_lower),
        })
    }

    /// The first phase of `resolve`: what the upper layer has under `cn`.
    fn resolve_upper(&self, parent: &DirBody, cn: &CStr, name: &OsStr) -> Result<Upper> {
        let mut walk = Walk {
            dir: None,
            top: None,
            want: Want::Own,
            in_lower: None,
            upper_origin: None,
        };
        let Some(u) = &parent.upper else {
            return Ok(Upper::Merge(walk));
        };
        let ufd = u.fd()?;
        let st = match sys::fs::lstatat(bfd(&ufd), cn) {
            Ok(st) => st,
            Err(e) if is_absent(e) => return Ok(Upper::Merge(walk)),
            Err(e) => return Err(e),
        };
        if self.fmt.classify(bfd(&ufd), cn, &st, u.xwh) == EntryKind::Whiteout {
            return Ok(Upper::Done(None));
        }
        if kind_of(&st) != libc::S_IFDIR {
            let at = MetaAt::new(bfd(&ufd), cn, name, &st, u.layer, Want::Own);
            let data = self.metacopy_data(parent, &at)?;
            let mut r = self.resolved_upper_leaf(parent, u, cn, name, st)?;
            if let Body::Leaf(l) = &mut r.body {
                l.data = data;
            }
            return Ok(Upper::Done(Some(r)));
        }
        let fd = sys::fs::open_dir_path(bfd(&ufd), cn)?;
        let opacity = self.fmt.opacity(bfd(&ufd), cn, false);
        let d = DirBody {
            upper: Some(LayerDir::new(
                u.layer,
                DirFd::upper(fd, &u.dir, cn, &self.dir_fds),
                opacity == Opacity::XattrWhiteouts,
            )),
            lowers: Vec::new(),
        };
        if opacity == Opacity::Opaque {
            return Ok(Upper::Done(Some(self.resolved_dir(d, st, None, None))));
        }
        // Where the layers below look: a renamed dir finds its lower dirs
        // where its redirect says, as on the kernel.
        walk.want = self
            .fmt
            .checked_redirect(bfd(&ufd), cn)?
            .map_or(Want::Own, Want::from);
        walk.dir = Some(d);
        walk.top = Some(st);
        Ok(Upper::Merge(walk))
    }

    /// The second phase of `resolve`: the lower layers, top-down, merging
    /// the dirs they hold into `walk`. Some: a lower non-dir ends the walk.
    fn resolve_lowers(
        &self,
        parent: &DirBody,
        own: &CStr,
        name: &OsStr,
        walk: &mut Walk,
    ) -> Result<Option<Resolved>> {
        let many = merges_many(parent);
        let layer_count = self.layers.merged_end();
        // The next layer to ask, and where the parent's lower dirs (in layer
        // order) are up to: one pass over each, also for deep stacks.
        let (mut next, mut cursor) = (self.layers.first_lower(), 0);
        while next < layer_count {
            let idx = match walk.want {
                Want::Path(_) => next,
                _ => {
                    while parent.lowers.get(cursor).is_some_and(|l| l.layer < next) {
                        cursor += 1;
                    }
                    match parent.lowers.get(cursor) {
                        Some(l) => l.layer,
                        None => break,
                    }
                }
            };
            next = idx + 1;
            // With user.overlay.* xattrs, which their owner can set on a
            // layer by hand, the kernel refuses to follow redirects
            // (userxattr implies redirect_dir=nofollow).
            if (self.opts.userxattr || self.opts.redirect_nofollow) && walk.want != Want::Own {
                return Err(Errno::EPERM);
            }
            let in_parent = parent.lowers.get(cursor).filter(|l| l.layer == idx);
            let Some((l, cn, name)) = self.lower_target(in_parent, idx, &walk.want, own, name)
            else {
                continue;
            };
            let (cn, name) = (cn.as_c_str(), name.as_os_str());
            if many && Self::known_absent(&l, name) {
                if self.oci_hides(&l, name, many) {
                    break;
                }
                continue;
            }
            let more = idx + 1 < layer_count;
            match self.resolve_in_lower(parent, &l, (cn, name), own, more, walk)? {
                Step::Leaf(r) => return Ok(Some(r)),
                Step::Stop => break,
                Step::Go => {}
            }
            if self.oci_hides(&l, name, many) {
                break;
            }
        }
        Ok(None)
    }

    /// One lower layer's part of `resolve_lowers`: `cn` in lower dir `l`.
    /// `more`: layers below this one follow.
    fn resolve_in_lower(
        &self,
        parent: &DirBody,
        l: &LayerDir,
        (cn, name): (&CStr, &OsStr),
        own: &CStr,
        more: bool,
        walk: &mut Walk,
    ) -> Result<Step> {
        let lfd = l.fd()?;
        let st = match sys::fs::lstatat(bfd(&lfd), cn) {
            Ok(st) => st,
            Err(e) if is_absent(e) => return Ok(Step::Go),
            Err(e) => return Err(e),
        };
        let object = self.fmt.classify(bfd(&lfd), cn, &st, true) == EntryKind::Object;
        if walk.want == Want::Own {
            walk.in_lower.get_or_insert(object);
        }
        if !object {
            return Ok(Step::Stop);
        }
        if kind_of(&st) != libc::S_IFDIR {
            if walk.top.is_some() {
                return Ok(Step::Stop);
            }
            let at = MetaAt::new(bfd(&lfd), cn, name, &st, l.layer, walk.want.clone());
            let data = self.metacopy_data(parent, &at)?;
            return Ok(Step::Leaf(self.resolved_lower_leaf(l, st, data)));
        }
        let found = DirFd::lower(&l.dir, cn, &st, &self.dir_fds)?;
        let opacity = self.fmt.opacity(bfd(&lfd), cn, true);
        let d = walk.dir.get_or_insert_with(DirBody::default);
        if d.lowers.is_empty() {
            if let (Some(pu), Some(du)) = (&parent.upper, &d.upper) {
                walk.upper_origin = Some(self.fix_origin(pu, du, l, cn, own));
            }
        }
        d.lowers.push(LayerDir::new(
            l.layer,
            found,
            opacity == Opacity::XattrWhiteouts,
        ));
        if walk.top.is_none() {
            walk.top = Some(st);
        }
        if opacity == Opacity::Opaque {
            return Ok(Step::Stop);
        }
        if more {
            if let Some(r) = self.fmt.checked_redirect(bfd(&lfd), cn)? {
                walk.want = std::mem::replace(&mut walk.want, Want::Own).then(r);
            }
        }
        Ok(Step::Go)
    }

    /// A lower non-dir with nothing above it: its own number.
    fn resolved_lower_leaf(&self, l: &LayerDir, st: libc::stat, data: Option<DataLoc>) -> Resolved {
        Resolved {
            kind: kind_of(&st),
            st,
            ino: self.layers.map_ino(st.st_dev, st.st_ino),
            body: Body::Leaf(LeafBody {
                upper: None,
                lower: Some((l.layer, l.dir.clone())),
                real: (st.st_dev, st.st_ino),
                data,
            }),
            in_lower: Some(true),
        }
    }

    /// An upper dir merged with a lower one but without an origin (made
    /// outside any overlay mount) gets the lower dir as its origin, and its
    /// parent is marked impure, at its first lookup, as the kernel's
    /// `ovl_fix_origin` does: its number is then the lower dir's, under
    /// either implementation. Returns whether the upper dir has an origin.
    fn fix_origin(
        &self,
        parent_upper: &LayerDir,
        upper: &LayerDir,
        lower: &LayerDir,
        lower_name: &CStr,
        name: &CStr,
    ) -> bool {
        // Asked through the parent: one path step, not a /proc walk.
        let (Ok(pfd), Ok(lfd), Ok(ufd)) = (parent_upper.fd(), lower.fd(), upper.fd()) else {
            return false;
        };
        let has = || self.fmt.has_origin(bfd(&pfd), name);
        if has() {
            return true;
        }
        // Without a file handle for the lower dir nothing is written.
        let _ = self.set_origin(bfd(&lfd), lower_name, bfd(&ufd), c"", lower.layer);
        let fixed = has();
        if fixed {
            let _ = self.fmt.set_impure(bfd(&pfd), c"");
        }
        fixed
    }

    /// Where lower layer `idx` holds the object looked up: the dir to look
    /// in and the name, or None if that layer has no such dir. `in_parent`
    /// is the parent's own dir in that layer, if any.
    pub(super) fn lower_target(
        &self,
        in_parent: Option<&LayerDir>,
        idx: usize,
        want: &Want,
        own: &CStr,
        name: &OsStr,
    ) -> Option<(LayerDir, CString, OsString)> {
        match want {
            Want::Own => Some((in_parent?.clone(), own.to_owned(), name.to_os_string())),
            Want::Name(n) => Some((in_parent?.clone(), cname(n).ok()?, n.clone())),
            Want::Path(comps) => {
                let (last, dirs) = comps.split_last()?;
                let mut fd = self.layers.list.get(idx)?.root.clone();
                for c in dirs {
                    let c = cname(c).ok()?;
                    let st = sys::fs::lstatat(bfd(&fd.get().ok()?), &c).ok()?;
                    fd = DirFd::lower(&fd, &c, &st, &self.dir_fds).ok()?;
                }
                Some((
                    LayerDir::new(idx, fd, false),
                    cname(last).ok()?,
                    last.clone(),
                ))
            }
        }
    }

    /// `upper_origin`: whether the upper dir has an origin, if known.
    fn resolved_dir(
        &self,
        d: DirBody,
        top: libc::stat,
        in_lower: Option<bool>,
        upper_origin: Option<bool>,
    ) -> Resolved {
        let ino = self.dir_ino_known(&d, &top, upper_origin);
        Resolved {
            kind: libc::S_IFDIR,
            st: top,
            ino,
            body: Body::Dir(d),
            in_lower,
        }
    }

    /// A dir's number, as the kernel picks it: the topmost lower dir's when
    /// there is no upper dir or the upper dir is a copy-up (has an origin),
    /// else the upper dir's. Copy-up and remount therefore never change it.
    pub(super) fn dir_ino(&self, d: &DirBody, top: &libc::stat) -> u64 {
        self.dir_ino_known(d, top, None)
    }

    /// [`Union::dir_ino`], told whether the upper dir has an origin when
    /// the caller already looked.
    fn dir_ino_known(&self, d: &DirBody, top: &libc::stat, upper_origin: Option<bool>) -> u64 {
        let from_lower = match &d.upper {
            None => true,
            Some(u) => {
                !d.lowers.is_empty()
                    && upper_origin.unwrap_or_else(|| {
                        u.fd().is_ok_and(|fd| self.fmt.has_origin(bfd(&fd), c""))
                    })
            }
        };
        let st = if from_lower {
            d.lowers
                .first()
                .and_then(|l| sys::fs::fstat(bfd(&l.fd().ok()?)).ok())
                .unwrap_or(*top)
        } else {
            *top
        };
        self.layers.map_ino(st.st_dev, st.st_ino)
    }

    /// The st_ino a node shows (the root's is its real dir's, not FUSE's 1).
    pub fn shown_ino(&self, ino: u64) -> u64 {
        if ino == ROOT_INO {
            self.root_ino
        } else {
            ino
        }
    }

    /// An upper non-dir: keeps its lower origin's inode number when the
    /// `overlay.origin` xattr names the lower object at the same path. An
    /// object with several upper links has one number for every name: the
    /// one it is served under on this mount, else its origin's (found by
    /// file handle, as root), else its upper inode's (the kernel's rule
    /// without CAP_DAC_READ_SEARCH, where it cannot decode origins).
    fn resolved_upper_leaf(
        &self,
        parent: &DirBody,
        u: &LayerDir,
        cn: &CStr,
        name: &OsStr,
        st: libc::stat,
    ) -> Result<Resolved> {
        let mut ino = self.layers.map_ino(st.st_dev, st.st_ino);
        let mut lower = None;
        let mut lower_present = false;
        let ufd = u.fd()?;
        let origin = sys::xattr::get(bfd(&ufd), cn, &self.fmt.origin_key()).ok();
        for l in &parent.lowers {
            let lfd = l.fd()?;
            match sys::fs::lstatat(bfd(&lfd), cn) {
                Ok(lst) => {
                    if self.fmt.classify(bfd(&lfd), cn, &lst, true) == EntryKind::Whiteout {
                        break;
                    }
                    lower_present = true;
                    if kind_of(&lst) == kind_of(&st) {
                        // A copy of one name of a hard link whose other names
                        // stayed below (the kernel's index=off) is its own
                        // object: only joined links keep the lower number.
                        let joined = lst.st_nlink <= 1 || self.fmt.has_index_nlink(bfd(&ufd), cn);
                        if let (Some(stored), true) = (&origin, joined) {
                            if let Ok((t, fid)) = sys::fs::name_to_handle(bfd(&lfd), cn, 0) {
                                if Format::origin_matches(stored, t, &fid) {
                                    if st.st_nlink <= 1 {
                                        ino = self.layers.map_ino(lst.st_dev, lst.st_ino);
                                    }
                                    lower = Some((l.layer, l.dir.clone()));
                                }
                            }
                        }
                    }
                    break;
                }
                Err(e) if is_absent(e) => {
                    if self.oci_hides(l, name, merges_many(parent)) {
                        break;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if st.st_nlink > 1 {
            if let Some(i) = self
                .linked_key((st.st_dev, st.st_ino))
                .or_else(|| origin.as_deref().and_then(|o| self.origin_ino(o)))
            {
                ino = i;
            }
        } else if lower.is_none() {
            if let Some(i) = origin.as_deref().and_then(|o| self.origin_ino(o)) {
                // Moved since its copy-up: the origin still names its number.
                ino = i;
            }
        }
        Ok(Resolved {
            kind: kind_of(&st),
            st,
            ino,
            body: Body::Leaf(LeafBody {
                upper: Some(u.dir.clone()),
                lower,
                real: (st.st_dev, st.st_ino),
                data: None,
            }),
            in_lower: Some(lower_present),
        })
    }

    /// The inode number of the lower object an origin xattr names, found by
    /// file handle (needs CAP_DAC_READ_SEARCH; None otherwise).
    fn origin_ino(&self, stored: &[u8]) -> Option<u64> {
        let (t, fid) = Format::decode_origin(stored)?;
        for l in self.layers.list.iter().skip(self.layers.first_lower()) {
            let Some(mfd) = &l.mount_fd else { continue };
            if let Ok(fd) = sys::fs::open_by_handle(mfd.as_fd(), t, fid, libc::O_PATH) {
                let st = sys::fs::fstat(fd.as_fd()).ok()?;
                return Some(self.layers.map_ino(st.st_dev, st.st_ino));
            }
        }
        None
    }

    /// Whether an OCI `.wh.NAME` entry in lower dir `l` hides `name`. The
    /// dir's names are read once (at its first miss), instead of probing
    /// every name; `many` (the dir merges many lowers) also keeps all names.
    fn oci_hides(&self, l: &LayerDir, name: &OsStr, many: bool) -> bool {
        if !self.fmt.oci() && !many {
            return false;
        }
        let names = match l.names.get() {
            Some(names) => names,
            None => {
                let Ok(fd) = l.fd() else { return false };
                l.names
                    .get_or_init(|| self.fmt.scan_layer_dir(bfd(&fd), many, MAX_KEPT_NAMES))
            }
        };
        self.fmt.oci() && names.hidden.contains(name)
    }

    /// Whether lower dir `l` is known not to hold `name`, without a syscall.
    fn known_absent(l: &LayerDir, name: &OsStr) -> bool {
        l.names
            .get()
            .and_then(|n| n.present.as_ref())
            .is_some_and(|p| !p.contains(name))
    }

    /// Whether `name` exists in a lower layer of `parent` (so deleting or
    /// moving it needs a whiteout).
    pub(super) fn lower_has(&self, parent: &DirBody, name: &OsStr) -> Result<bool> {
        let cn = cname(name)?;
        for l in &parent.lowers {
            let lfd = l.fd()?;
            match sys::fs::lstatat(bfd(&lfd), &cn) {
                Ok(st) => {
                    return Ok(self.fmt.classify(bfd(&lfd), &cn, &st, true) == EntryKind::Object)
                }
                Err(e) if is_absent(e) => {
                    if self.oci_hides(l, name, merges_many(parent)) {
                        return Ok(false);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Entry> {
        let p = self.node(parent)?;
        let body = Self::dir_body(&p)?;
        match self.resolve(&body, name)? {
            Some(r) => self.install(&p, name, r),
            None => Err(Errno::ENOENT),
        }
    }
}
