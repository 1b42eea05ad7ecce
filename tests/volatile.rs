//! `volatile` and writeback errors (Documentation/filesystems/overlayfs.rst,
//! "Volatile mount"; fs/overlayfs/util.c `ovl_sync_status`): fsync is a
//! no-op, but once the upper has had a writeback error since the mount,
//! every later fsync fails, for good, also of files that never failed.
//!
//! The upper is an ext4 (no journal) on a loop image that sits on a tmpfs
//! smaller than the data written: writing it back fails with EIO. Validated
//! against the kernel with `UNIONFS_TEST_IMPL=kernel`.

mod common;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;

use common::ext4::Ext4Image;
use common::*;

fn syncfs(f: &File) -> std::io::Result<()> {
    // SAFETY: plain syscall on an open fd.
    if unsafe { libc::syncfs(f.as_raw_fd()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[test]
fn a_volatile_mount_fails_every_fsync_once_the_upper_lost_a_writeback() {
    let Some(fx) = Fixture::new() else { return };
    let _disk = Ext4Image::failing_writes_at(fx.root(), 64, 12);
    fx.lower(0).file("l", b"lower\n");
    let m = fx.mount_opts("volatile");

    let mut other = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.p("other"))
        .expect("create other");
    other.write_all(b"x").expect("write other");
    other.sync_all().expect("fsync before any error");
    {
        let mut big = File::create(m.p("big")).expect("create big");
        let mb = vec![0xabu8; 1 << 20];
        for _ in 0..20 {
            big.write_all(&mb).expect("write big");
        }
        // Closed before the error: the failure is not this file's to see.
    }

    // The host syncs the upper's filesystem itself: writing back 20 MiB
    // into a 12 MiB tmpfs fails.
    let upper = File::open(fx.upper().root).expect("open upper");
    assert_errno(syncfs(&upper), libc::EIO, "syncfs of the upper itself");

    assert_errno(
        other.sync_all(),
        libc::EIO,
        "fsync of a file that never failed",
    );
    assert_errno(other.sync_all(), libc::EIO, "fsync again: the error stays");
    let new = File::create(m.p("new")).expect("create new");
    assert_errno(
        new.sync_all(),
        libc::EIO,
        "fsync of a file made after the error",
    );
    let dir = File::open(&m.merged).expect("open the root dir");
    assert_errno(dir.sync_all(), libc::EIO, "fsync of a dir");
    match m.kind {
        Impl::Kernel => assert_errno(syncfs(&dir), libc::EIO, "syncfs of the union"),
        // FUSE sends no SYNCFS for a /dev/fuse mount (only virtiofs gets
        // one): syncfs of our union cannot fail (a deviation the README lists).
        Impl::Ours => syncfs(&dir).expect("syncfs of our union"),
    }
}
