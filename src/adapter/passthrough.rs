//! FUSE passthrough (Linux 6.9+): reads and writes of an open file go
//! straight to its backing file in the kernel.
//!
//! The kernel's rules shape this module:
//! - every passthrough open of one inode must use the same backing file, and
//!   an inode cannot be open in passthrough and in cached mode at once (the
//!   open fails with EIO), so each node tracks its mode and shared backing id;
//! - a passthrough open of a lower file cannot follow a later copy-up, so by
//!   default only files that cannot be copied up any more pass through:
//!   upper files, and every file of a read-only union (`passthrough=all`
//!   also passes lower files, a documented deviation);
//! - the kernel refuses passthrough in a user namespace (EPERM) and beyond
//!   its stack depth (ELOOP): then the mount falls back to normal I/O;
//! - with FUSE_HANDLE_KILLPRIV_V2 a passthrough write drops no set-id bits
//!   (the kernel leaves that to the server, which never sees the write), so
//!   each node remembers who holds it open for writing in passthrough.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use fuser::BackingId;
use parking_lot::{ArcMutexGuard, Mutex, RawMutex};

pub use crate::options::PassthroughMode as Mode;
use crate::union::Caller;

#[derive(Default)]
enum NodeIo {
    #[default]
    Idle,
    Cached(u32),
    Passthrough(Arc<BackingId>, u32),
}

#[derive(Default)]
struct Slot {
    io: NodeIo,
    /// (fh, opener) of each passthrough handle open for writing.
    writers: Vec<(u64, Caller)>,
}

pub struct Passthrough {
    mode: Mode,
    enabled: AtomicBool,
    /// Keyed by (inode number, node generation): a RELEASE of the old object
    /// may arrive after its number stands for a new one.
    nodes: DashMap<(u64, u64), Arc<Mutex<Slot>>>,
    /// fh -> node key.
    handles: DashMap<u64, (u64, u64)>,
}

/// How to answer an open.
pub enum Open {
    Cached,
    Passthrough(Arc<BackingId>),
    /// The node is in passthrough and this writer may not join it (`may_join`).
    Refused,
}

impl Passthrough {
    pub fn new(mode: Mode) -> Passthrough {
        Passthrough {
            mode,
            enabled: AtomicBool::new(false),
            nodes: DashMap::new(),
            handles: DashMap::new(),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Called from init once the kernel accepted the capability.
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// The live slot of node `key`, locked (made if missing).
    fn lock_slot(&self, key: (u64, u64)) -> (Arc<Mutex<Slot>>, ArcMutexGuard<RawMutex, Slot>) {
        loop {
            let slot = self.nodes.entry(key).or_default().clone();
            let guard = slot.lock_arc();
            // A release may have retired this slot meanwhile: take the live one.
            if self.nodes.get(&key).is_some_and(|s| Arc::ptr_eq(&s, &slot)) {
                return (slot, guard);
            }
        }
    }

    /// Decides how `fh` of node `key` is opened. `eligible` says whether the file
    /// may pass through (asked only when the node has no mode yet and
    /// passthrough is on); `backing` opens a backing id for it. `writer` is
    /// the opener of a handle open for writing; `may_join` says whether it may
    /// write through a node already in passthrough (asked only then).
    pub fn open(
        &self,
        key: (u64, u64),
        fh: u64,
        writer: Option<Caller>,
        eligible: impl FnOnce() -> bool,
        may_join: impl FnOnce() -> bool,
        backing: impl FnOnce() -> std::io::Result<BackingId>,
    ) -> Open {
        let (_slot, mut guard) = self.lock_slot(key);
        let Slot { io, writers } = &mut *guard;
        let decision = match io {
            NodeIo::Passthrough(id, n) => {
                // Must match the mode the inode is already in.
                if writer.is_some() && !may_join() {
                    return Open::Refused;
                }
                *n += 1;
                Open::Passthrough(id.clone())
            }
            NodeIo::Cached(n) => {
                *n += 1;
                Open::Cached
            }
            NodeIo::Idle => {
                let want =
                    self.mode != Mode::Off && self.enabled.load(Ordering::Relaxed) && eligible();
                match want.then(backing) {
                    Some(Ok(id)) => {
                        let id = Arc::new(id);
                        *io = NodeIo::Passthrough(id.clone(), 1);
                        Open::Passthrough(id)
                    }
                    Some(Err(e)) => {
                        let raw = e.raw_os_error().unwrap_or(0);
                        if raw == libc::EPERM || raw == libc::ENOTTY || raw == libc::EOPNOTSUPP {
                            log::info!("passthrough refused ({e}); using normal I/O");
                            self.enabled.store(false, Ordering::Relaxed);
                        } else {
                            log::debug!("passthrough refused for one file: {e}");
                        }
                        *io = NodeIo::Cached(1);
                        Open::Cached
                    }
                    None => {
                        *io = NodeIo::Cached(1);
                        Open::Cached
                    }
                }
            }
        };
        if let (Open::Passthrough(_), Some(w)) = (&decision, writer) {
            writers.push((fh, w));
        }
        self.handles.insert(fh, key);
        decision
    }

    /// Runs `f` on the openers of node `key`'s passthrough handles open for
    /// writing, with the node's I/O mode locked: an open of the node waits
    /// until `f` is done, so what `f` checks stays true while it acts.
    pub fn with_writers<R>(&self, key: (u64, u64), f: impl FnOnce(&[Caller]) -> R) -> R {
        let (slot, guard) = self.lock_slot(key);
        let openers: Vec<Caller> = guard.writers.iter().map(|(_, c)| *c).collect();
        let r = f(&openers);
        if matches!(guard.io, NodeIo::Idle) {
            // No handle made this slot: retire it while still locked.
            self.nodes.remove_if(&key, |_, s| Arc::ptr_eq(s, &slot));
        }
        r
    }

    /// Forgets `fh`; the node's backing id goes when its last handle does.
    pub fn release(&self, fh: u64) {
        let Some((_, key)) = self.handles.remove(&fh) else {
            return;
        };
        let Some(slot) = self.nodes.get(&key).map(|s| s.clone()) else {
            return;
        };
        let mut guard = slot.lock();
        guard.writers.retain(|(f, _)| *f != fh);
        let left = match &mut guard.io {
            NodeIo::Passthrough(_, n) | NodeIo::Cached(n) => {
                *n = n.saturating_sub(1);
                *n
            }
            NodeIo::Idle => 0,
        };
        if left == 0 {
            guard.io = NodeIo::Idle;
            // Retired while still locked, so a racing open sees it gone.
            self.nodes.remove_if(&key, |_, s| Arc::ptr_eq(s, &slot));
        }
    }
}
