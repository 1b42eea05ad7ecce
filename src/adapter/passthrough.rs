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
//!   its stack depth (ELOOP): then the mount falls back to normal I/O.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use fuser::BackingId;
use parking_lot::Mutex;

pub use crate::options::PassthroughMode as Mode;

#[derive(Default)]
enum NodeIo {
    #[default]
    Idle,
    Cached(u32),
    Passthrough(Arc<BackingId>, u32),
}

pub struct Passthrough {
    mode: Mode,
    enabled: AtomicBool,
    /// Keyed by (inode number, node generation): a RELEASE of the old object
    /// may arrive after its number stands for a new one.
    nodes: DashMap<(u64, u64), Arc<Mutex<NodeIo>>>,
    /// fh -> (node key, passthrough?)
    handles: DashMap<u64, ((u64, u64), bool)>,
}

/// How to answer an open.
pub enum Open {
    Cached,
    Passthrough(Arc<BackingId>),
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

    /// Decides how `fh` of node `key` is opened. `eligible` says whether the file
    /// may pass through (asked only when the node has no mode yet and
    /// passthrough is on); `backing` opens a backing id for it.
    pub fn open(
        &self,
        key: (u64, u64),
        fh: u64,
        eligible: impl FnOnce() -> bool,
        backing: impl FnOnce() -> std::io::Result<BackingId>,
    ) -> Open {
        let (slot, mut io) = loop {
            let slot = self.nodes.entry(key).or_default().clone();
            let io = slot.lock_arc();
            // A release may have retired this slot meanwhile: take the live one.
            if self.nodes.get(&key).is_some_and(|s| Arc::ptr_eq(&s, &slot)) {
                break (slot, io);
            }
        };
        let _ = &slot;
        let decision = match &mut *io {
            NodeIo::Passthrough(id, n) => {
                // Must match the mode the inode is already in.
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
        self.handles
            .insert(fh, (key, matches!(decision, Open::Passthrough(_))));
        decision
    }

    /// Forgets `fh`; the node's backing id goes when its last handle does.
    pub fn release(&self, fh: u64) {
        let Some((_, (key, _))) = self.handles.remove(&fh) else {
            return;
        };
        let Some(slot) = self.nodes.get(&key).map(|s| s.clone()) else {
            return;
        };
        let mut io = slot.lock();
        let left = match &mut *io {
            NodeIo::Passthrough(_, n) | NodeIo::Cached(n) => {
                *n = n.saturating_sub(1);
                *n
            }
            NodeIo::Idle => 0,
        };
        if left == 0 {
            *io = NodeIo::Idle;
            // Retired while still locked, so a racing open sees it gone.
            self.nodes.remove_if(&key, |_, s| Arc::ptr_eq(s, &slot));
        }
    }
}
