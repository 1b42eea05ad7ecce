//! The writeback cache (`-o writeback`; the default where passthrough cannot
//! work). Writes gather in the kernel's page cache and reach the server in
//! large requests, so the server has to let the kernel read through files
//! opened write-only (it fills partial pages) and leave appending to it
//! (its writes carry offsets). Checked against kernel overlayfs over the
//! same layers.

mod common;

use common::*;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::process::Command;

const NAMES: [&str; 6] = ["append", "poke", "two", "small", "setid", "synced"];

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Runs the writes on a mount and returns, per name, the mode, size and
/// contents seen through the mount, and what the upper holds once fsynced.
fn write_and_look(m: &Mounted) -> Vec<(String, u32, u64, Vec<u8>)> {
    // Appending to a lower file: the tail page must be read first, through
    // the write-only file.
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.p("append"))
        .expect("open append");
    f.write_all(b"TAIL").expect("append");
    drop(f);

    // A write into the middle of a page of a lower file, write-only.
    let f = OpenOptions::new()
        .write(true)
        .open(m.p("poke"))
        .expect("open poke");
    f.write_all_at(b"XYZ", 5000).expect("pwrite");
    drop(f);

    // Two appenders take turns.
    let open_append = || {
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .open(m.p("two"))
            .expect("open two")
    };
    let (mut a, mut b) = (open_append(), open_append());
    for _ in 0..3 {
        a.write_all(b"a").expect("write a");
        b.write_all(b"bb").expect("write b");
    }
    drop((a, b));

    // Many small writes, a truncate down and a write past the end.
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(m.p("small"))
        .expect("open small");
    for i in 0..1000u32 {
        f.write_all(&[(i % 251) as u8; 100]).expect("small write");
    }
    f.set_len(50_000).expect("truncate");
    f.write_all_at(b"end", 60_000).expect("write past the end");
    drop(f);

    // A writer without CAP_FSETID drops the set-id bits.
    run_ok(
        Command::new("setpriv")
            .args(["--bounding-set=-fsetid", "sh", "-c", "printf x >> \"$0\""])
            .arg(m.p("setid")),
    );

    // After fsync the data is in the upper file, not only in the cache.
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.p("synced"))
        .expect("open synced");
    f.write_all(&pattern(20_000)).expect("write synced");
    f.sync_all().expect("fsync");
    let upper_synced = fs::read(m.up("synced")).expect("read upper synced");
    assert_eq!(upper_synced, pattern(20_000), "upper after fsync");
    drop(f);

    NAMES
        .iter()
        .map(|n| {
            let md = fs::metadata(m.p(n)).expect("stat");
            let data = fs::read(m.p(n)).expect("read");
            (n.to_string(), md.mode() & 0o7777, md.len(), data)
        })
        .collect()
}

#[test]
fn writes_through_the_writeback_cache_match_the_kernel() {
    let mut results = Vec::new();
    for kind in [Impl::Ours, Impl::Kernel] {
        let Some(fx) = Fixture::for_impl(kind) else {
            return;
        };
        fx.lower(0)
            .file("append", &pattern(10_000))
            .file("poke", &pattern(10_000))
            .file_mode("setid", b"s", 0o4777);
        let lowers = fx.lowers();
        let seen = {
            let m = Mounted::mount_ours_opts(
                kind,
                &lowers,
                Some(&fx.upper().root),
                Some(&fx.work()),
                &fx.merged(),
                "writeback",
            );
            write_and_look(&m)
        };
        // Unmounted: the upper holds everything that was written.
        for (name, _, size, data) in &seen {
            let up = fs::read(fx.upper().path(name)).expect("read upper");
            assert_eq!(up.len() as u64, *size, "{kind:?}: upper size of {name}");
            assert!(up == *data, "{kind:?}: upper content of {name}");
        }
        results.push(seen);
    }
    let (ours, kernel) = (&results[0], &results[1]);
    for (o, k) in ours.iter().zip(kernel) {
        assert_eq!((&o.0, o.1, o.2), (&k.0, k.1, k.2), "mode and size");
        assert!(o.3 == k.3, "content of {} differs from the kernel's", o.0);
    }
    let mut expect = pattern(10_000);
    expect[5000..5003].copy_from_slice(b"XYZ");
    assert!(ours[1].3 == expect, "poke");
    assert_eq!(ours[2].3, b"abbabbabb");
    assert_eq!(ours[4].1, 0o777, "set-id bits dropped");
}

/// An fd still open on a lower file that is unlinked sees nlink 1, as on
/// the kernel (the lower file is still there, behind a whiteout): the
/// writeback cache would otherwise keep the kernel's own nlink 0.
#[test]
fn open_fd_of_an_unlinked_lower_file_keeps_its_nlink() {
    for kind in [Impl::Ours, Impl::Kernel] {
        let Some(fx) = Fixture::for_impl(kind) else {
            return;
        };
        fx.lower(0).file("u/a", b"data");
        let m = fx.mount_ours_opts("writeback");
        let f = fs::File::open(m.p("u/a")).expect("open");
        fs::remove_file(m.p("u/a")).expect("unlink");
        assert_eq!(f.metadata().expect("fstat").nlink(), 1, "{kind:?}");
    }
}
