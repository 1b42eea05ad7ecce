//! Faults: the server killed at random moments (crash consistency), a full
//! upper filesystem (ENOSPC), a low RLIMIT_NOFILE (EMFILE, fd leaks), and
//! callers of a dead server (ENOTCONN, restart on the same dirs).
//!
//! Env switches for long runs:
//! * `UNIONFS_CRASH_POINTS=N` — kill points of the crash test (default 20).
//! * `UNIONFS_SEED=N` — seed of the random choices (default: time based;
//!   the seed is printed so that a failure can be replayed).
//!
//! One module per fault: crash, enospc, fd_limits, dead_server.

#[path = "../common/mod.rs"]
mod common;
mod support;

mod crash;
mod dead_server;
mod enospc;
mod fd_limits;
