//! `mount; cat; umount` in a script must not meet EBUSY. The server once
//! opened the mount root from a thread of its own after signalling ready,
//! and 5 of 300 such umounts failed.
//!
//! The only test in its binary: a child that another test thread spawns
//! holds copies of this process's fds until it execs, which pins the mount
//! as well and would hide what this test looks for.

mod common;

use common::*;
use std::fs;

#[test]
fn umount_right_after_the_mount_returns_is_not_busy() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    fx.lower(0).file("f", b"x");
    let m = fx.merged();
    for round in 0..40 {
        run_ok(&mut daemon_cmd(&fx));
        let read = fs::read_to_string(m.join("f"));
        if let Err(e) = sys::umount2(&m, 0) {
            let _ = sys::umount2(&m, libc::MNT_DETACH);
            panic!("round {round}: umount right after the mount: {e}");
        }
        assert_eq!(read.expect("read f"), "x");
    }
}
