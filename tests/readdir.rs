//! readdir rules (overlay-semantics.md 1.5): upper first then each lower,
//! deduplicated, whiteouts and entries below opaque dirs dropped, `.`/`..`
//! once, correct d_type; the merged list is a snapshot per open directory
//! handle that a rewind (offset 0) rebuilds.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;

fn names(ents: &[sys::Dirent]) -> Vec<String> {
    let mut v: Vec<String> = ents
        .iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn read_rest(f: &File, buf: usize) -> Vec<sys::Dirent> {
    let mut all = Vec::new();
    loop {
        let chunk = sys::getdents64(f.as_fd(), buf).expect("getdents64");
        if chunk.is_empty() {
            return all;
        }
        all.extend(chunk);
    }
}

#[test]
fn readdir_merges_and_deduplicates() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(1)
        .file("d/a", b"")
        .file("d/dup", b"1")
        .dir("d/sub/x");
    fx.lower(0)
        .file("d/b", b"")
        .file("d/dup", b"0")
        .dir("d/sub/y");
    fx.upper()
        .file("d/c", b"")
        .file("d/dup", b"u")
        .dir("d/sub/z");
    let m = fx.mount();
    let ents = getdents_all(&m.p("d"));
    assert_eq!(names(&ents), [".", "..", "a", "b", "c", "dup", "sub"]);
    let sub = getdents_all(&m.p("d/sub"));
    assert_eq!(names(&sub), [".", "..", "x", "y", "z"]);
    let root = getdents_all(&m.p(""));
    assert_eq!(names(&root), [".", "..", "d"]);
    assert_eq!(
        ls(&m.up("d")),
        ["c", "dup", "sub"],
        "readdir wrote to upper"
    );
}

#[test]
fn readdir_hides_whiteouts_and_entries_below_opaque_dirs() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(1)
        .file("d/gone0", b"")
        .file("d/gone1", b"")
        .file("d/keep", b"")
        .file("o/hidden", b"");
    fx.lower(0)
        .whiteout("d/gone0")
        .opaque("o")
        .file("o/shown", b"");
    fx.upper().whiteout("d/gone1");
    let m = fx.mount();
    assert_eq!(names(&getdents_all(&m.p("d"))), [".", "..", "keep"]);
    assert_eq!(names(&getdents_all(&m.p("o"))), [".", "..", "shown"]);
    assert_whiteout(&m.up("d/gone1"));
}

#[test]
fn readdir_reports_correct_d_type() {
    let Some(fx) = Fixture::new() else { return };
    let l = fx.lower(0);
    l.file("d/file", b"x")
        .dir("d/dir")
        .symlink("d/link", "file")
        .symlink("d/dangling", "nowhere")
        .fifo("d/fifo")
        .chardev("d/chr", 1, 3)
        .blockdev("d/blk", 7, 0);
    let _sock = UnixListener::bind(l.path("d/sock")).expect("bind lower socket");
    fx.upper()
        .file("d/ufile", b"u")
        .dir("d/udir")
        .fifo("d/ufifo");
    let m = fx.mount();
    let got: BTreeMap<OsString, u8> = getdents_all(&m.p("d"))
        .into_iter()
        .map(|e| (e.name, e.d_type))
        .collect();
    let want = [
        (".", libc::DT_DIR),
        ("..", libc::DT_DIR),
        ("file", libc::DT_REG),
        ("dir", libc::DT_DIR),
        ("link", libc::DT_LNK),
        ("dangling", libc::DT_LNK),
        ("fifo", libc::DT_FIFO),
        ("chr", libc::DT_CHR),
        ("blk", libc::DT_BLK),
        ("sock", libc::DT_SOCK),
        ("ufile", libc::DT_REG),
        ("udir", libc::DT_DIR),
        ("ufifo", libc::DT_FIFO),
    ];
    let want: BTreeMap<OsString, u8> = want.iter().map(|(n, t)| (n.into(), *t)).collect();
    assert_eq!(got, want);
}

/// A merged dir with enough entries that a small getdents buffer reads it in
/// several calls.
fn big_merged_dir(fx: &Fixture) {
    for i in 0..30 {
        fx.lower(0).file(&format!("d/lower_{i:02}"), b"");
    }
    for i in 0..10 {
        fx.upper().file(&format!("d/upper_{i:02}"), b"");
    }
}

#[test]
fn readdir_snapshot_per_open_handle_ignores_changes_mid_stream() {
    let Some(fx) = Fixture::new() else { return };
    big_merged_dir(&fx);
    let m = fx.mount();
    let f = File::open(m.p("d")).expect("opendir");
    let first = sys::getdents64(f.as_fd(), 160).expect("getdents64");
    assert!(
        !first.is_empty() && first.len() < 20,
        "{} entries",
        first.len()
    );
    write(&m.p("d/new_entry"), b"n");
    let rest = read_rest(&f, 160);
    let mut all = first.clone();
    all.extend(rest);
    let n = names(&all);
    assert_eq!(n.len(), 42, "{n:?}");
    assert!(
        !n.contains(&"new_entry".to_string()),
        "entry created mid-stream listed"
    );
    // No name twice within one pass.
    let mut dedup = n.clone();
    dedup.dedup();
    assert_eq!(dedup, n);
    // Rewinding to offset 0 rebuilds the list.
    sys::lseek(f.as_fd(), 0, libc::SEEK_SET).expect("rewind");
    let again = names(&read_rest(&f, 160));
    assert_eq!(again.len(), 43, "{again:?}");
    assert!(again.contains(&"new_entry".to_string()));
    assert!(lstat(&m.up("d/new_entry")).is_file());
}

#[test]
fn readdir_snapshot_is_taken_at_first_read_not_at_open() {
    let Some(fx) = Fixture::new() else { return };
    big_merged_dir(&fx);
    let m = fx.mount();
    let early = File::open(m.p("d")).expect("opendir");
    let reading = File::open(m.p("d")).expect("opendir");
    let first = sys::getdents64(reading.as_fd(), 160).expect("getdents64");
    fs::remove_file(m.p("d/upper_09")).expect("unlink");
    write(&m.p("d/new_entry"), b"n");
    // The handle that had not read yet sees the current state.
    let e = names(&read_rest(&early, 4096));
    assert!(e.contains(&"new_entry".to_string()), "{e:?}");
    assert!(!e.contains(&"upper_09".to_string()), "{e:?}");
    // The handle that had started reading lists every entry that stayed
    // exactly once. Whether it shows `new_entry` or `upper_09` is
    // unspecified (POSIX);
    // kernel overlayfs keeps the list it started with, ours may resume in
    // the fresh list the other handle took (README, "Deviations").
    let mut all = first;
    all.extend(read_rest(&reading, 160));
    let r = names(&all);
    let mut dedup = r.clone();
    dedup.dedup();
    assert_eq!(dedup, r, "a name listed twice");
    for i in 0..30 {
        assert!(r.contains(&format!("lower_{i:02}")), "{r:?}");
    }
    for i in 0..9 {
        assert!(r.contains(&format!("upper_{i:02}")), "{r:?}");
    }
}

#[test]
fn readdir_rewind_after_create_in_upper_only_dir_shows_new_entry() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("x", b"");
    fx.upper().file("u/a", b"").file("u/b", b"");
    let m = fx.mount();
    let f = File::open(m.p("u")).expect("opendir");
    assert_eq!(names(&read_rest(&f, 4096)), [".", "..", "a", "b"]);
    write(&m.p("u/c"), b"");
    fs::remove_file(m.p("u/a")).expect("unlink");
    sys::lseek(f.as_fd(), 0, libc::SEEK_SET).expect("rewind");
    assert_eq!(names(&read_rest(&f, 4096)), [".", "..", "b", "c"]);
    assert_eq!(ls(&m.up("u")), ["b", "c"]);
}

#[test]
fn readdir_seek_to_returned_offset_resumes_after_that_entry() {
    let Some(fx) = Fixture::new() else { return };
    big_merged_dir(&fx);
    let m = fx.mount();
    let f = File::open(m.p("d")).expect("opendir");
    let all = read_rest(&f, 160);
    assert_eq!(all.len(), 42);
    for k in [0usize, 5, 17, 40] {
        sys::lseek(f.as_fd(), all[k].off, libc::SEEK_SET).expect("seekdir");
        let resumed = read_rest(&f, 160);
        let want: Vec<OsString> = all[k + 1..].iter().map(|e| e.name.clone()).collect();
        let got: Vec<OsString> = resumed.iter().map(|e| e.name.clone()).collect();
        assert_eq!(got, want, "resume after entry {k}");
    }
}

#[test]
fn readdir_of_large_merged_dir_lists_every_entry_once() {
    let Some(fx) = Fixture::new() else { return };
    for i in 0..1500 {
        let layer = match i % 3 {
            0 => fx.lower(1),
            1 => fx.lower(0),
            _ => fx.upper(),
        };
        layer.file(&format!("big/entry_with_a_longish_name_{i:05}"), b"");
    }
    // Some names in two layers, some whited out.
    for i in (0..1500).step_by(7) {
        fx.upper()
            .file(&format!("big/entry_with_a_longish_name_{i:05}.dup"), b"");
        fx.lower(1)
            .file(&format!("big/entry_with_a_longish_name_{i:05}.dup"), b"");
    }
    fx.upper().whiteout("big/entry_with_a_longish_name_00000");
    let m = fx.mount();
    let ents = getdents_all(&m.p("big"));
    let n = names(&ents);
    let mut dedup = n.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), n.len(), "an entry was listed twice");
    assert_eq!(n.len(), 2 + 1500 + 215 - 1);
    assert!(!n.contains(&"entry_with_a_longish_name_00000".to_string()));
    assert_eq!(ls(&m.p("big")).len(), 1500 + 215 - 1);
}

#[test]
fn readdir_at_the_end_stays_there_after_a_create() {
    let Some(fx) = Fixture::new() else { return };
    big_merged_dir(&fx);
    fx.lower(0).file("w/b", b"");
    let m = fx.mount();
    for dir in ["d", "w"] {
        let f = File::open(m.p(dir)).expect("opendir");
        let all = names(&read_rest(&f, 160));
        assert!(all.len() > 2, "{all:?}");
        write(&m.p(&format!("{dir}/zz_new")), b"n");
        // Without a rewind, a handle at the end lists nothing more.
        assert_eq!(names(&read_rest(&f, 160)), Vec::<String>::new());
        sys::lseek(f.as_fd(), 0, libc::SEEK_SET).expect("rewind");
        assert!(names(&read_rest(&f, 4096)).contains(&"zz_new".to_string()));
    }
}

/// A reader that stopped one entry short of the end, while that last entry
/// is unlinked and another reader lists the dir afresh, goes on without
/// seeing an entry twice (the entry it stopped at is now the last one).
#[test]
fn resumed_listing_after_the_last_entry_went_repeats_nothing() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("mg/lower", b"");
    for i in 1..=10 {
        fx.upper().file(&format!("mg/f{i}"), b"");
    }
    let m = fx.mount();
    let order: Vec<OsString> = {
        let f = File::open(m.p("mg")).unwrap();
        read_rest(&f, 4096).into_iter().map(|e| e.name).collect()
    };
    let last = order.last().unwrap().clone();
    assert!(last != "." && last != "..", "{order:?}");
    // 32 bytes hold exactly one of these entries.
    let f = File::open(m.p("mg")).unwrap();
    let mut seen: Vec<OsString> = Vec::new();
    while seen.len() < order.len() - 1 {
        let chunk = sys::getdents64(f.as_fd(), 32).expect("getdents64");
        assert_eq!(chunk.len(), 1);
        seen.extend(chunk.into_iter().map(|e| e.name));
    }
    fs::remove_file(m.p("mg").join(&last)).unwrap();
    assert_eq!(fs::read_dir(m.p("mg")).unwrap().count(), order.len() - 3);
    seen.extend(read_rest(&f, 32).into_iter().map(|e| e.name));
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "an entry came twice: {seen:?}");
}
