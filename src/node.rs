//! In-memory inodes of the merged view and the table that maps FUSE inode
//! numbers to them.
//!
//! Lock discipline:
//! - The table is a `DashMap<u64, Arc<Node>>`; lookup-count changes happen
//!   inside `entry()`. No syscall runs while a shard guard is held.
//! - `Node::state` (RwLock) is held only to copy out or swap small fields,
//!   never across a syscall that may block for long.
//! - `Node::copy_lock` serialises copy-up of that node; `Node::dir_lock`
//!   serialises changes to the names inside a directory's upper dir.
//! - Order: child `copy_lock` -> parent `dir_lock`; two `dir_lock`s are taken
//!   lower inode number first. Copy-ups happen before any `dir_lock` is taken.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};

use crate::dir_fd::DirFd;
use crate::errno::Result;

/// One layer's directory that takes part in a merged directory.
#[derive(Clone, Debug)]
pub struct LayerDir {
    pub layer: usize,
    pub dir: Arc<DirFd>,
    /// The dir is `opaque=x`: zero-size files in it may be xattr whiteouts.
    pub xwh: bool,
    /// What this (lower) dir holds, read once: lower layers never change
    /// under a mount.
    pub names: Arc<std::sync::OnceLock<LayerNames>>,
}

/// The names of a lower layer dir that lookups consult instead of probing.
#[derive(Debug, Default)]
pub struct LayerNames {
    /// Names hidden by OCI `.wh.NAME` entries.
    pub hidden: std::collections::HashSet<std::ffi::OsString>,
    /// Every name, kept for dirs that merge many layers (where a lookup
    /// would probe each one) unless the dir is big.
    pub present: Option<std::collections::HashSet<std::ffi::OsString>>,
}

impl LayerDir {
    pub fn new(layer: usize, dir: Arc<DirFd>, xwh: bool) -> LayerDir {
        LayerDir {
            layer,
            dir,
            xwh,
            names: Arc::default(),
        }
    }

    /// The dir's fd (reopened if a lower one was closed).
    pub fn fd(&self) -> Result<Arc<OwnedFd>> {
        self.dir.get()
    }
}

/// One entry of a merged directory listing.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub name: std::ffi::OsString,
    /// S_IFMT bits, or 0 when unknown.
    pub kind: u32,
    pub ino: u64,
    /// Where the entry sits in its listing: a read at offset `o` resumes
    /// with the first entry whose cookie is above `o`.
    pub cookie: u64,
    /// The offset handed to the kernel with the entry (where a read resumes
    /// after it): its cookie, except past the end of a listing.
    pub offset: u64,
}

/// Where a directory's parts live.
#[derive(Clone, Debug, Default)]
pub struct DirBody {
    pub upper: Option<LayerDir>,
    /// Lower dirs that merge in, top-down (stops at an opaque dir).
    pub lowers: Vec<LayerDir>,
}

/// Where a non-directory lives: a layer dir fd of its parent plus its name.
#[derive(Clone, Debug)]
pub struct LeafBody {
    /// The parent's upper dir, once the object is in the upper layer.
    pub upper: Option<Arc<DirFd>>,
    /// The parent's lower dir holding the object (copy-up source).
    pub lower: Option<(usize, Arc<DirFd>)>,
    /// (st_dev, st_ino) of the object the node stands for right now. Names
    /// can change under a request (a racing unlink, rename or create), so
    /// what a name resolves to is checked against this before it is used.
    pub real: (u64, u64),
    /// For a metadata-only copy (`overlay.metacopy`): where its data is.
    /// None: the object holds its own data.
    pub data: Option<DataLoc>,
}

/// Where the data of a metacopy file is.
#[derive(Clone, Debug)]
pub enum DataLoc {
    /// The regular file `name` in dir `dir` of layer `layer`.
    At {
        layer: usize,
        dir: Arc<DirFd>,
        name: CString,
    },
    /// Not in any data-only layer: opening the file gives ENOENT, as the
    /// kernel's lazy data lookup.
    Missing,
}

#[derive(Clone, Debug)]
pub enum Body {
    Dir(DirBody),
    Leaf(LeafBody),
}

#[derive(Clone, Debug)]
pub struct State {
    pub parent: Option<Arc<Node>>,
    pub name: CString,
    /// Further names of a hard-linked object: (parent, name).
    pub aliases: Vec<(Arc<Node>, CString)>,
    pub body: Body,
}

#[derive(Debug)]
pub struct Node {
    /// The FUSE node id, also shown as st_ino (fuser 0.18 uses one for both).
    pub ino: u64,
    /// The mapped inode number of the backing object. Equals `ino` except
    /// for a node that got a synthetic id (see `NodeTable::lookup_or_insert`).
    pub key: u64,
    pub generation: u64,
    /// S_IFMT bits of the object.
    pub kind: u32,
    nlookup: AtomicU64,
    pub state: RwLock<State>,
    pub copy_lock: Mutex<()>,
    pub dir_lock: Mutex<()>,
    /// With the writeback cache the kernel keeps a file's mtime and sends
    /// it later: a data write (which would move it) and a change of times
    /// take turns (see `Union::write`).
    pub times_lock: Mutex<()>,
    /// Set once the object's data is in the upper layer (a metadata-only
    /// copy has none); read handles reopen on it.
    pub copied_up: AtomicBool,
    /// A dir's listing between reads that continue it (see `dir_listing`).
    pub listing: Mutex<Option<Arc<Vec<DirEntry>>>>,
    /// The object's immutable/append-only flags, cached for the guards of
    /// every change (encoding and invalidation in `union/fileattr.rs`).
    pub prot: AtomicU64,
}

impl Node {
    pub fn new(ino: u64, generation: u64, kind: u32, state: State) -> Node {
        let copied = match &state.body {
            Body::Leaf(l) => l.upper.is_some() && l.data.is_none(),
            Body::Dir(d) => d.upper.is_some(),
        };
        Node {
            ino,
            key: ino,
            generation,
            kind,
            nlookup: AtomicU64::new(0),
            state: RwLock::new(state),
            copy_lock: Mutex::new(()),
            dir_lock: Mutex::new(()),
            times_lock: Mutex::new(()),
            copied_up: AtomicBool::new(copied),
            listing: Mutex::new(None),
            prot: AtomicU64::new(0),
        }
    }

    pub fn is_dir(&self) -> bool {
        self.kind == libc::S_IFDIR
    }

    pub fn snapshot(&self) -> State {
        self.state.read().clone()
    }

    pub fn dir_body(&self) -> Option<DirBody> {
        match &self.state.read().body {
            Body::Dir(d) => Some(d.clone()),
            Body::Leaf(_) => None,
        }
    }

    /// Whether the object exists in the upper layer.
    pub fn in_upper(&self) -> bool {
        match &self.state.read().body {
            Body::Dir(d) => d.upper.is_some(),
            Body::Leaf(l) => l.upper.is_some(),
        }
    }

    pub fn parent(&self) -> Option<Arc<Node>> {
        self.state.read().parent.clone()
    }
}

/// Synthetic node ids live above every number `Layers::map_ino` produces.
const SYNTHETIC_BASE: u64 = 0xC000_0000_0000_0000;

/// FUSE inode number -> node, for every node the kernel holds a reference to.
#[derive(Debug, Default)]
pub struct NodeTable {
    map: DashMap<u64, Arc<Node>>,
    /// Mapped inode number -> synthetic id of the node that now stands for
    /// the object with that number, while the number's own node still
    /// belongs to a gone object the kernel holds.
    displaced: DashMap<u64, u64>,
    next_generation: AtomicU64,
    next_synthetic: AtomicU64,
    /// Forgets since the last check, and the node count seen at the last
    /// check: the server trims its heap once most nodes are gone.
    forgets: AtomicU64,
    high_water: AtomicU64,
}

impl NodeTable {
    pub fn new() -> NodeTable {
        NodeTable {
            map: DashMap::new(),
            displaced: DashMap::new(),
            next_generation: AtomicU64::new(1),
            next_synthetic: AtomicU64::new(SYNTHETIC_BASE),
            forgets: AtomicU64::new(0),
            high_water: AtomicU64::new(0),
        }
    }

    pub fn get(&self, ino: u64) -> Option<Arc<Node>> {
        self.map.get(&ino).map(|n| n.clone())
    }

    pub fn next_generation(&self) -> u64 {
        self.next_generation.fetch_add(1, Ordering::Relaxed)
    }

    /// Installs the root with a lookup count that never drops to zero.
    pub fn insert_root(&self, node: Arc<Node>) {
        node.nlookup.store(1 << 40, Ordering::Relaxed);
        self.map.insert(node.ino, node);
    }

    /// The synthetic id the object with mapped number `key` has, if any.
    fn displaced_id(&self, key: u64) -> Option<u64> {
        if self.displaced.is_empty() {
            return None;
        }
        self.displaced.get(&key).map(|id| *id)
    }

    /// The node standing for the object whose mapped inode number is `key`.
    pub fn current(&self, key: u64) -> Option<Arc<Node>> {
        self.displaced_id(key)
            .and_then(|id| self.get(id))
            .or_else(|| self.get(key))
    }

    /// The st_ino a listing shows for an object with mapped number `key`.
    pub fn shown_id(&self, key: u64) -> u64 {
        self.displaced_id(key).unwrap_or(key)
    }

    /// Returns the node the kernel should see for the object with mapped
    /// inode number `key`, counting one lookup. `same` decides whether an
    /// existing node still stands for that object; `update` refreshes it;
    /// otherwise `make(id, generation)` builds a new node.
    ///
    /// A filesystem reuses the inode number of a deleted object. While the
    /// kernel still holds the old node under that number (an open file, a
    /// cwd, a FORGET not processed yet), a new generation under the same
    /// node id would make the kernel mark its inode bad and fail the old
    /// object's I/O with EIO, and reusing the node would mix the caches of
    /// two objects. So the new object gets a synthetic id until the kernel
    /// forgets it; its st_ino then differs from the backing one.
    pub fn lookup_or_insert(
        &self,
        key: u64,
        same: impl Fn(&Arc<Node>) -> bool,
        update: impl Fn(&Arc<Node>),
        make: impl Fn(u64, u64) -> Node,
    ) -> Arc<Node> {
        loop {
            if let Some(node) = self.try_lookup_or_insert(key, &same, &update, &make) {
                return node;
            }
        }
    }

    /// One attempt of `lookup_or_insert`; None when a FORGET and a racing
    /// lookup replaced the node found, so the attempt must start over.
    fn try_lookup_or_insert(
        &self,
        key: u64,
        same: &impl Fn(&Arc<Node>) -> bool,
        update: &impl Fn(&Arc<Node>),
        make: &impl Fn(u64, u64) -> Node,
    ) -> Option<Arc<Node>> {
        // `same`/`update` may take node locks and make syscalls: never under
        // a `map` guard. (Lock order: `displaced` before `map`.)
        let reuse = |id: u64| self.get(id).filter(|n| same(n));
        let mut found = self
            .displaced_id(key)
            .and_then(&reuse)
            .or_else(|| reuse(key));
        if found.is_none() && self.map.contains_key(&key) {
            // The number still belongs to a gone object the kernel holds.
            // Choosing the synthetic id under the `displaced` entry makes
            // racing lookups of the new object agree on one node.
            let mut slot = self.displaced.entry(key).or_insert(0);
            found = Some(*slot).filter(|id| *id != 0).and_then(&reuse);
            if found.is_none() {
                let id = self.next_synthetic.fetch_add(1, Ordering::Relaxed);
                let node = self.new_node(key, make(id, self.next_generation()));
                self.map.insert(id, node.clone());
                *slot = id;
                return Some(node);
            }
        }
        if let Some(existing) = found {
            update(&existing);
            existing.nlookup.fetch_add(1, Ordering::Relaxed);
            return match self.map.entry(existing.ino) {
                // Forgotten meanwhile: the kernel gets it back under its
                // old generation, which it no longer holds.
                dashmap::Entry::Vacant(v) => {
                    v.insert(existing.clone());
                    Some(existing)
                }
                dashmap::Entry::Occupied(o) if Arc::ptr_eq(o.get(), &existing) => Some(existing),
                // Forgotten, and a racing lookup already made a new node
                // (a new generation) under this id: answering with the old
                // one would make the kernel mark its inode bad (EIO).
                dashmap::Entry::Occupied(_) => None,
            };
        }
        let node = self.new_node(key, make(key, self.next_generation()));
        // The number's own node serves again; an older synthetic one stays
        // valid under its id until the kernel forgets it.
        self.displaced.remove(&key);
        match self.map.entry(key) {
            dashmap::Entry::Vacant(v) => {
                v.insert(node.clone());
                Some(node)
            }
            // A racing lookup of the same object got there first: one node.
            dashmap::Entry::Occupied(o) => {
                let other = o.get().clone();
                drop(o);
                update(&other);
                other.nlookup.fetch_add(1, Ordering::Relaxed);
                Some(other)
            }
        }
    }

    fn new_node(&self, key: u64, mut node: Node) -> Arc<Node> {
        node.key = key;
        node.nlookup.store(1, Ordering::Relaxed);
        Arc::new(node)
    }

    /// Drops `n` kernel references; forgets the node when none remain.
    pub fn forget(&self, ino: u64, n: u64) {
        if let dashmap::Entry::Occupied(e) = self.map.entry(ino) {
            let node = e.get();
            let prev = node.nlookup.fetch_sub(
                n.min(node.nlookup.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
            if prev <= n {
                let (_, node) = e.remove_entry();
                self.unlink_synthetic(&node);
            }
        }
    }

    /// Whether the table shrank to under half its size at the last check
    /// (checked every 4096 forgets): then freed memory is worth returning.
    pub fn shrank(&self) -> bool {
        if self.forgets.fetch_add(1, Ordering::Relaxed) % 4096 != 4095 {
            return false;
        }
        let now = self.map.len() as u64;
        let high = self.high_water.fetch_max(now, Ordering::Relaxed).max(now);
        if high >= 8192 && now < high / 2 {
            self.high_water.store(now, Ordering::Relaxed);
            return true;
        }
        false
    }

    fn unlink_synthetic(&self, node: &Node) {
        if node.key != node.ino {
            self.displaced.remove_if(&node.key, |_, id| *id == node.ino);
        }
    }

    /// Whether the kernel still holds references to `node`.
    pub fn is_referenced(&self, node: &Arc<Node>) -> bool {
        node.nlookup.load(Ordering::Relaxed) > 0
            && self
                .map
                .get(&node.ino)
                .is_some_and(|n| Arc::ptr_eq(&n, node))
    }

    /// Takes back one lookup counted for internal use only.
    pub fn drop_lookup(&self, node: &Arc<Node>) {
        if let dashmap::Entry::Occupied(e) = self.map.entry(node.ino) {
            if Arc::ptr_eq(e.get(), node) {
                let prev = node.nlookup.fetch_sub(1, Ordering::Relaxed);
                if prev <= 1 {
                    let (_, node) = e.remove_entry();
                    self.unlink_synthetic(&node);
                }
            }
        }
    }

    /// Replaces whatever node `ino` maps to (used when an object changes identity).
    pub fn remove_if_same(&self, node: &Arc<Node>) {
        if self
            .map
            .remove_if(&node.ino, |_, v| Arc::ptr_eq(v, node))
            .is_some()
        {
            self.unlink_synthetic(node);
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn dir_node(id: u64, generation: u64) -> Node {
        let state = State {
            parent: None,
            name: CString::default(),
            aliases: Vec::new(),
            body: Body::Dir(DirBody::default()),
        };
        Node::new(id, generation, libc::S_IFDIR, state)
    }

    /// A lookup that found a node while the kernel's FORGET of it and a
    /// racing lookup replaced it must answer with the new node: the old
    /// generation under the same id would make the kernel's inode bad.
    #[test]
    fn a_lookup_racing_a_forget_and_a_fresh_node_answers_the_fresh_one() {
        let table = NodeTable::default();
        let key = 42;
        let old = table.lookup_or_insert(key, |_| true, |_| {}, dir_node);
        let raced = Cell::new(false);
        let answered = table.lookup_or_insert(
            key,
            |_| true,
            |_| {
                // Runs between finding `old` and counting the lookup.
                if !raced.replace(true) {
                    table.forget(key, 1);
                    table.lookup_or_insert(key, |_| true, |_| {}, dir_node);
                }
            },
            dir_node,
        );
        let current = table.get(key).expect("a node under the id");
        assert!(Arc::ptr_eq(&answered, &current));
        assert_ne!(answered.generation, old.generation);
        assert_eq!(answered.nlookup.load(Ordering::Relaxed), 2);
    }
}
