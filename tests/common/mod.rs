//! Integration-test harness for unionfs-fuse.
//!
//! * [`Fixture`]: a fresh temp dir holding lower layers, an upper, a workdir and
//!   mount points; [`Layer`] builds layer contents (files with mode/owner/times,
//!   dirs, symlinks, hard links, fifos, devices, xattrs, whiteouts, opaque dirs).
//! * [`Mounted`]: a union mounted either by our binary (child with `-f`) or by
//!   kernel overlayfs (`mount -t overlay`); `Drop` always unmounts (lazily if
//!   busy) and reaps our child. `UNIONFS_TEST_IMPL=kernel` switches every
//!   per-rule test to kernel overlayfs, which is how the expectations are
//!   validated. `UNIONFS_TEST_OURS_OPTS=OPTS` adds `-o OPTS` to every mount
//!   of ours (to run a suite in another mode, e.g. `writeback`).
//! * Snapshots ([`tree`]) and raw upper-dir inspection (whiteouts, opaque).
//!
//! Without root or /dev/fuse the tests return early with a reason, except
//! under `CI=true`, where they fail.
//!
//! One file per purpose; everything is re-exported here, so tests just
//! `use common::*`.

#![allow(dead_code, unused_imports)]

pub mod ext4;
pub mod sys;
pub mod tree;

mod errno;
mod exit;
mod fixture;
mod fsutil;
mod layers;
mod mount;
mod mountinfo;
mod process;
mod rng;
mod scenario;

pub use errno::*;
pub use exit::*;
pub use fixture::*;
pub use fsutil::*;
pub use layers::*;
pub use mount::*;
pub use mountinfo::*;
pub use process::*;
pub use rng::*;
pub use scenario::*;
pub use sys::Ts;
pub use tree::{assert_same, snapshot, SnapOpts, Tree};
