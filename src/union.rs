//! The union filesystem's operations, with no FUSE types. `Union` is one
//! struct whose `impl` blocks live in one child module per operation family:
//! - `types`: what callers and every family share (`Caller`, `Entry`, ...);
//! - `lookup`: resolving a name across the layers; `install`: the nodes;
//! - `attrs`: getattr, setattr, readlink; `setid`: the set-id policy;
//! - `staging`, `create`, `remove`, `rename`, `xattr`: changes;
//! - `copy_up`, `hardlinks`: bringing lower objects up;
//! - `files`: open files; `readdir`: open dirs and the merged listing;
//! - `fileattr`: inode flags; `volatile`: a volatile mount's sync status.
//!
//! This file holds the struct, its constructor and the few helpers every
//! family uses.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::dir_fd::FdPool;
use crate::errno::{Errno, Result};
use crate::format::{Format, Opacity};
use crate::layers::Layers;
use crate::node::{Body, DirBody, LayerDir, Node, NodeTable, State};
use crate::sys;
use crate::sys::fs::bfd;

mod attrs;
mod copy_up;
mod create;
mod fileattr;
mod files;
mod hardlinks;
mod install;
mod lookup;
mod metacopy;
mod readdir;
mod remove;
mod rename;
mod setid;
mod staging;
mod types;
mod volatile;
mod want;
mod xattr;

use files::FileHandle;
use readdir::DirHandle;
pub use setid::raises_privileges;
use types::Resolved;
pub use types::{Caller, Entry, Invalidator, Options, SetAttr, ROOT_INO};

pub struct Union {
    layers: Layers,
    fmt: Format,
    opts: Options,
    nodes: NodeTable,
    files: DashMap<u64, Arc<FileHandle>>,
    dirs: DashMap<u64, Arc<DirHandle>>,
    next_fh: AtomicU64,
    tmp_counter: AtomicU64,
    root: Arc<Node>,
    root_ino: u64,
    /// Tells the kernel to drop its cached attributes of an inode.
    invalidator: parking_lot::RwLock<Option<Invalidator>>,
    /// Per lower layer: multiply-linked inodes and their names (lazy).
    link_maps: parking_lot::Mutex<std::collections::HashMap<usize, Arc<hardlinks::LinkMap>>>,
    /// The upper's redirected dirs, for finding moved names of lower hard
    /// links (lazy; dropped when a dir moves).
    moved_dirs: parking_lot::Mutex<Option<Arc<hardlinks::MovedDirs>>>,
    /// Upper (st_dev, st_ino) of a hard-linked object -> the key of the node
    /// serving it on this mount, so a name found later gets that number.
    linked: DashMap<(u64, u64), u64>,
    /// The kernel's writeback cache is on (see `real_file_flags`).
    writeback: AtomicBool,
    /// Bounds the open fds of layer dirs.
    dir_fds: Arc<FdPool>,
    /// A volatile mount's latched upper writeback error (0: none yet).
    wb_error: AtomicI32,
    /// A volatile mount's recently closed written upper files, whose
    /// writeback errors fsync still reports (see `volatile`).
    wb_watch: parking_lot::Mutex<std::collections::VecDeque<Arc<std::os::fd::OwnedFd>>>,
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
        for (i, l) in layers.list.iter().enumerate().take(layers.merged_end()) {
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
        let dir_fds = FdPool::new(
            opts.dir_fds
                .unwrap_or_else(|| FdPool::budget_for_limit(sys::proc::nofile_limit())),
        );
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
            moved_dirs: parking_lot::Mutex::new(None),
            linked: DashMap::new(),
            writeback: AtomicBool::new(false),
            dir_fds,
            wb_error: AtomicI32::new(0),
            wb_watch: parking_lot::Mutex::new(std::collections::VecDeque::new()),
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
    fn attributes_changed(&self, ino: u64) {
        if let Some(f) = &*self.invalidator.read() {
            f(ino);
        }
    }

    pub fn has_upper(&self) -> bool {
        self.layers.has_upper
    }

    /// The layers' root dirs, the upper (if any) first, then the lowers
    /// top-down: for what a mount option sets up at mount time.
    pub fn layer_roots(&self) -> impl Iterator<Item = std::os::fd::BorrowedFd<'_>> {
        self.layers.list.iter().map(|l| bfd(&*l.fd))
    }

    fn next_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    fn node(&self, ino: u64) -> Result<Arc<Node>> {
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
}
