//! unionfs-fuse: a union filesystem in userspace that reads and writes
//! kernel overlayfs's on-disk format.
//!
//! Architecture, dependencies pointing down:
//! - `sys`: fd-based syscall wrappers; the only module with `unsafe`.
//! - `format`: the only module that knows how whiteouts, opaque dirs and
//!   private xattrs are stored on disk.
//! - `layers`, `node`, `dir_fd`: the layer stack, the in-memory inodes and
//!   the bounded pool of layer dir fds.
//! - `union`: the overlay logic, with no FUSE types, one file per operation
//!   family under `union/`.
//! - `adapter`: the only module that imports fuser; it serves `Union` and
//!   mounts it.
//! - `options`: command line parsing and directory checks.
//! - `logging`: the binaries' logger.
#![deny(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod adapter;
pub mod dir_fd;
pub mod errno;
pub mod format;
pub mod idmap;
pub mod launcher;
pub mod layers;
pub mod logging;
pub mod node;
pub mod oci;
pub mod options;
pub mod sys;
pub mod union;
