//! unionfs-fuse: a union filesystem in userspace that reads and writes
//! kernel overlayfs's on-disk format.
//!
//! Architecture, dependencies pointing down:
//! - `sys`: fd-based syscall wrappers; the only module with `unsafe`.
//! - `format`: the only module that knows how whiteouts, opaque dirs and
//!   private xattrs are stored on disk.
//! - `layers`, `node`: the layer stack and the in-memory inodes.
//! - `union` (lookup, attributes, namespace changes), `copy_up`, `handles`
//!   (open files and merged directory listings): the overlay logic, with no
//!   FUSE types.
//! - `adapter`: the only module that imports fuser; it serves `Union` and
//!   mounts it.
//! - `options`: command line parsing and directory checks.
#![deny(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod adapter;
pub mod dir_fd;
pub mod errno;
pub mod format;
/// The path adapter/ names `DirEntry` by; goes once it imports it from `node`.
pub mod handles {
    pub use crate::node::DirEntry;
}
pub mod idmap;
pub mod launcher;
pub mod layer;
pub mod layers;
pub mod node;
pub mod options;
pub mod sys;
pub mod union;
