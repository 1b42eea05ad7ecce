//! Hard links to multiply-linked lower files: after a copy-up, every visible
//! name of the lower inode is linked to the upper copy, so all names show the
//! new data, on this mount, after a remount, and under kernel overlayfs
//! (`index=on` semantics without an index dir). And one number for all
//! names of an upper object with several links (`linked_key`).
//!
//! A lower name is found in the merged view at its lower path, or below a
//! dir that a rename with redirect_dir moved there: the kernel's index
//! shows the copy at every merged name of the lower inode, wherever the
//! dir holding it now is.

use std::collections::HashMap;
use std::ffi::{CStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use super::Union;
use crate::errno::{Errno, Result};
use crate::format::{cname, Format, Redirect};
use crate::node::{Body, Node};
use crate::sys;
use crate::sys::fs::bfd;

/// Lower inode number -> the paths (as components) of its names in a layer.
pub type LinkMap = HashMap<u64, Vec<Vec<OsString>>>;

/// Upper dirs with a redirect: (merged path, the lower path it stands for).
pub type MovedDirs = Vec<(Vec<OsString>, Vec<OsString>)>;

/// A dir still to scan: its parent's fd, its name, its merged path and the
/// lower path it stands for.
type PendingDir = (Arc<OwnedFd>, OsString, Vec<OsString>, Vec<OsString>);

/// Walks the upper's dirs and records each dir with a redirect, with the
/// lower path it stands for (an ancestor's redirect applies below it).
fn scan_moved(fmt: &Format, root: &OwnedFd) -> MovedDirs {
    let mut out = MovedDirs::new();
    let mut stack: Vec<PendingDir> = Vec::new();
    if let Ok(fd) = sys::fs::openat_noatime(root.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY)
    {
        scan_moved_dir(fmt, &Arc::new(fd), &[], &[], &mut out, &mut stack);
    }
    while let Some((parent, name, merged, lower)) = stack.pop() {
        if let Some(fd) = open_subdir(&parent, &name) {
            scan_moved_dir(fmt, &fd, &merged, &lower, &mut out, &mut stack);
        }
    }
    out
}

fn scan_moved_dir(
    fmt: &Format,
    dir: &Arc<OwnedFd>,
    merged: &[OsString],
    lower: &[OsString],
    out: &mut MovedDirs,
    stack: &mut Vec<PendingDir>,
) {
    let Ok(entries) = sys::dir::read_all(dir.as_fd()) else {
        return;
    };
    for e in entries {
        if e.d_type != libc::DT_DIR && e.d_type != libc::DT_UNKNOWN {
            continue;
        }
        let Ok(c) = cname(&e.name) else { continue };
        if !sys::fs::lstatat(dir.as_fd(), &c)
            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
        {
            continue;
        }
        let m = [merged, std::slice::from_ref(&e.name)].concat();
        let redirect = fmt.redirect(dir.as_fd(), &c);
        let l = match &redirect {
            Some(Redirect::Absolute(p)) => p.clone(),
            Some(Redirect::Relative(n)) => [lower, std::slice::from_ref(n)].concat(),
            None => [lower, std::slice::from_ref(&e.name)].concat(),
        };
        if redirect.is_some() {
            out.push((m.clone(), l.clone()));
        }
        stack.push((dir.clone(), e.name, m, l));
    }
}

/// Walks one layer and records every non-dir with more than one link.
pub(super) fn scan_layer(root: &OwnedFd) -> LinkMap {
    let mut map = LinkMap::new();
    // Pending dirs: (their parent fd, name, path). Fds are opened when popped.
    let mut stack: Vec<(Arc<OwnedFd>, OsString, Vec<OsString>)> = Vec::new();
    let root_fd =
        match sys::fs::openat_noatime(root.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY) {
            Ok(fd) => Arc::new(fd),
            Err(_) => return map,
        };
    scan_dir(&root_fd, &[], &mut map, &mut stack);
    while let Some((parent, name, path)) = stack.pop() {
        if let Some(fd) = open_subdir(&parent, &name) {
            scan_dir(&fd, &path, &mut map, &mut stack);
        }
    }
    map
}

/// Opens dir `name` in `parent` for a scan; None: gone or not a dir.
fn open_subdir(parent: &OwnedFd, name: &OsString) -> Option<Arc<OwnedFd>> {
    let c = cname(name).ok()?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
    sys::fs::openat_noatime(bfd(parent), &c, flags)
        .ok()
        .map(Arc::new)
}

fn scan_dir(
    dir: &Arc<OwnedFd>,
    path: &[OsString],
    map: &mut LinkMap,
    stack: &mut Vec<(Arc<OwnedFd>, OsString, Vec<OsString>)>,
) {
    let Ok(entries) = sys::dir::read_all(dir.as_fd()) else {
        return;
    };
    for e in entries {
        let mut p = path.to_vec();
        p.push(e.name.clone());
        if e.d_type == libc::DT_DIR {
            stack.push((dir.clone(), e.name, p));
            continue;
        }
        let Ok(c) = cname(&e.name) else { continue };
        let Ok(st) = sys::fs::lstatat(dir.as_fd(), &c) else {
            continue;
        };
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            stack.push((dir.clone(), e.name, p));
        } else if st.st_nlink > 1 {
            map.entry(st.st_ino).or_default().push(p);
        }
    }
}

impl Union {
    /// Records that `node` serves its upper object, which has (or is about
    /// to get) several links, so its other names get the node's number.
    pub(super) fn remember_linked(&self, node: &Node) {
        if !node.is_dir() {
            self.linked.insert(self.leaf_real(node), node.key);
        }
    }

    /// The key of the live node serving upper object `real`, if any.
    pub(super) fn linked_key(&self, real: (u64, u64)) -> Option<u64> {
        let key = *self.linked.get(&real)?;
        if self
            .nodes
            .current(key)
            .is_some_and(|n| self.leaf_real(&n) == real)
        {
            return Some(key);
        }
        // Forgotten, or the number went to another object: the next name
        // found decides again.
        self.linked.remove_if(&real, |_, k| *k == key);
        None
    }

    /// The names of lower inode `ino` in `layer` (scanned once per layer).
    fn link_names(&self, layer: usize, ino: u64) -> Vec<Vec<OsString>> {
        let map = {
            let mut cache = self.link_maps.lock();
            if let Some(m) = cache.get(&layer) {
                m.clone()
            } else {
                let Some(l) = self.layers.list.get(layer) else {
                    return Vec::new();
                };
                let m = Arc::new(scan_layer(&l.fd));
                cache.insert(layer, m.clone());
                m
            }
        };
        map.get(&ino).cloned().unwrap_or_default()
    }

    /// The upper's redirected dirs (scanned again after a dir moved).
    fn moved_dirs(&self) -> Arc<MovedDirs> {
        let mut cache = self.moved_dirs.lock();
        if let Some(m) = cache.as_ref() {
            return m.clone();
        }
        let m = Arc::new(match self.layers.upper() {
            Some(u) => scan_moved(&self.fmt, &u.fd),
            None => MovedDirs::new(),
        });
        *cache = Some(m.clone());
        m
    }

    /// A dir moved: the redirects and the paths below them may have changed.
    pub(super) fn forget_moved_dirs(&self) {
        *self.moved_dirs.lock() = None;
    }

    /// The merged paths that may show lower path `lower`: itself, and the
    /// same path below each dir whose redirect names one of its ancestors.
    /// Each is checked before it is linked.
    fn merged_candidates(&self, lower: &[OsString]) -> Vec<Vec<OsString>> {
        let mut out = vec![lower.to_vec()];
        let dir = &lower[..lower.len().saturating_sub(1)];
        for (merged, lp) in self.moved_dirs().iter() {
            if dir.starts_with(lp) {
                out.push([merged.as_slice(), &lower[lp.len()..]].concat());
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Walks `path` from the root through the merged view; returns the parent
    /// node of the last component.
    fn walk_to_parent(&self, path: &[OsString]) -> Result<Arc<Node>> {
        let mut node = self.node(crate::union::ROOT_INO)?;
        for comp in path.iter().take(path.len().saturating_sub(1)) {
            let body = node.dir_body().ok_or(Errno::ENOTDIR)?;
            let r = self.resolve(&body, comp)?.ok_or(Errno::ENOENT)?;
            if r.kind != libc::S_IFDIR {
                return Err(Errno::ENOTDIR);
            }
            node = self.install_transient(&node, comp, &r)?;
        }
        Ok(node)
    }

    /// After copying up a lower file with several links, links the copy at
    /// each other visible name of the same lower inode, also those that a
    /// dir's rename moved.
    pub(super) fn link_other_names(
        &self,
        layer: usize,
        lower_ino: u64,
        src_dir: BorrowedFd<'_>,
        src_name: &CStr,
    ) {
        let names = self.link_names(layer, lower_ino);
        let moved = !names.is_empty() && !self.moved_dirs().is_empty();
        let paths: Vec<Vec<OsString>> = if moved {
            let mut all: Vec<_> = names
                .iter()
                .flat_map(|p| self.merged_candidates(p))
                .collect();
            all.sort();
            all.dedup();
            all
        } else {
            names
        };
        for path in paths {
            let Some(last) = path.last() else { continue };
            if let Err(e) = self.link_one(&path, last, layer, lower_ino, src_dir, src_name) {
                if e != Errno::ENOENT && e != Errno::EEXIST && e != Errno::ENOTDIR {
                    log::warn!("hard link {:?} not joined after copy-up: {e}", path);
                }
            }
        }
    }

    fn link_one(
        &self,
        path: &[OsString],
        last: &OsString,
        layer: usize,
        lower_ino: u64,
        src_dir: BorrowedFd<'_>,
        src_name: &CStr,
    ) -> Result<()> {
        let parent = self.walk_to_parent(path)?;
        let body = parent.dir_body().ok_or(Errno::ENOTDIR)?;
        let r = self.resolve(&body, last)?.ok_or(Errno::ENOENT)?;
        // Only a name that still shows this very lower inode is joined.
        match &r.body {
            Body::Leaf(l)
                if l.upper.is_none() && l.lower.as_ref().is_some_and(|(li, _)| *li == layer) => {}
            _ => return Err(Errno::EEXIST),
        }
        if r.st.st_ino != lower_ino {
            return Err(Errno::EEXIST);
        }
        self.copy_up(&parent)?;
        let pu = parent.dir_body().and_then(|d| d.upper).ok_or(Errno::EIO)?;
        let cn = cname(last)?;
        let _g = parent.dir_lock.lock();
        sys::fs::linkat(src_dir, src_name, bfd(&pu.fd()?), &cn, 0)
    }
}
