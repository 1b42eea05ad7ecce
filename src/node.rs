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

/// One layer's directory that takes part in a merged directory.
#[derive(Clone, Debug)]
pub struct LayerDir {
    pub layer: usize,
    pub fd: Arc<OwnedFd>,
    /// The dir is `opaque=x`: zero-size files in it may be xattr whiteouts.
    pub xwh: bool,
    /// Names hidden by OCI `.wh.NAME` entries in this dir, read once.
    pub oci: Arc<std::sync::OnceLock<std::collections::HashSet<std::ffi::OsString>>>,
}

impl LayerDir {
    pub fn new(layer: usize, fd: Arc<OwnedFd>, xwh: bool) -> LayerDir {
        LayerDir {
            layer,
            fd,
            xwh,
            oci: Arc::default(),
        }
    }
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
    pub upper: Option<Arc<OwnedFd>>,
    /// The parent's lower dir holding the object (copy-up source).
    pub lower: Option<(usize, Arc<OwnedFd>)>,
    /// (st_dev, st_ino) of the object the node stands for right now. Names
    /// can change under a request (a racing unlink, rename or create), so
    /// what a name resolves to is checked against this before it is used.
    pub real: (u64, u64),
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
    pub ino: u64,
    pub generation: u64,
    /// S_IFMT bits of the object.
    pub kind: u32,
    nlookup: AtomicU64,
    pub state: RwLock<State>,
    pub copy_lock: Mutex<()>,
    pub dir_lock: Mutex<()>,
    /// Set once the object has been copied up; read handles reopen on it.
    pub copied_up: AtomicBool,
}

impl Node {
    pub fn new(ino: u64, generation: u64, kind: u32, state: State) -> Node {
        let copied = match &state.body {
            Body::Leaf(l) => l.upper.is_some(),
            Body::Dir(d) => d.upper.is_some(),
        };
        Node {
            ino,
            generation,
            kind,
            nlookup: AtomicU64::new(0),
            state: RwLock::new(state),
            copy_lock: Mutex::new(()),
            dir_lock: Mutex::new(()),
            copied_up: AtomicBool::new(copied),
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

/// FUSE inode number -> node, for every node the kernel holds a reference to.
#[derive(Debug, Default)]
pub struct NodeTable {
    map: DashMap<u64, Arc<Node>>,
    next_generation: AtomicU64,
}

impl NodeTable {
    pub fn new() -> NodeTable {
        NodeTable {
            map: DashMap::new(),
            next_generation: AtomicU64::new(1),
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

    /// Returns the node the kernel should see for `ino`, counting one lookup.
    /// `same` decides whether an existing node is still the same object;
    /// `update` refreshes it; otherwise `make` builds a replacement (with a
    /// new generation, so the kernel never mixes the two).
    pub fn lookup_or_insert(
        &self,
        ino: u64,
        same: impl FnOnce(&Arc<Node>) -> bool,
        update: impl FnOnce(&Arc<Node>),
        make: impl FnOnce(u64) -> Node,
    ) -> Arc<Node> {
        // Decide outside the shard guard: `same`/`update` may take node locks.
        if let Some(existing) = self.get(ino) {
            if same(&existing) {
                update(&existing);
                existing.nlookup.fetch_add(1, Ordering::Relaxed);
                // The node may have been forgotten meanwhile; put it back.
                self.map.entry(ino).or_insert_with(|| existing.clone());
                return existing;
            }
        }
        let node = Arc::new(make(self.next_generation()));
        // A replaced node's outstanding kernel references will be forgotten
        // under the same number, so the new node inherits their count.
        let inherited = self
            .get(ino)
            .map(|old| old.nlookup.load(Ordering::Relaxed))
            .unwrap_or(0);
        node.nlookup.store(inherited + 1, Ordering::Relaxed);
        self.map.insert(ino, node.clone());
        node
    }

    /// Adds lookups to a node the caller already holds (readdirplus, create).
    pub fn add_lookup(&self, node: &Arc<Node>) {
        node.nlookup.fetch_add(1, Ordering::Relaxed);
        self.map.entry(node.ino).or_insert_with(|| node.clone());
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
                e.remove();
            }
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
                    e.remove();
                }
            }
        }
    }

    /// Replaces whatever node `ino` maps to (used when an object changes identity).
    pub fn remove_if_same(&self, node: &Arc<Node>) {
        self.map.remove_if(&node.ino, |_, v| Arc::ptr_eq(v, node));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
