//! A full upper filesystem (ENOSPC) during copy-up and writes: clean
//! errors, and everything works again once space is freed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::*;

/// Writes 256 KiB chunks to `f` until an error; returns it (None if 32 MiB
/// went through).
fn fill(f: &mut File) -> Option<io::Error> {
    let chunk = vec![0x5a; 256 << 10];
    for _ in 0..128 {
        if let Err(e) = f.write_all(&chunk) {
            return Some(e);
        }
    }
    f.sync_all().err()
}

#[test]
fn enospc_during_copy_up_and_writes_is_clean_and_recoverable() {
    let Some(fx) = Fixture::new() else { return };
    let kind = fx.kind;
    let t = Tmpfs::mount(&fx.root().join("small"), "size=8m,mode=0755");
    let upper = t.0.join("upper");
    let work = t.0.join("work");
    fs::create_dir(&upper).unwrap();
    fs::create_dir(&work).unwrap();
    let big = content(1, 5 << 20);
    let mid = content(2, 3 << 19);
    fx.lower(0)
        .file("big", &big)
        .file("mid", &mid)
        .file("small", &content(3, 10 << 10))
        .file("d/f", &content(4, 100));
    let mut m = Mounted::mount(kind, &fx.lowers(), Some(&upper), Some(&work), &fx.merged());

    // 1. Fill the upper through the mount: the caller gets ENOSPC.
    let mut filler = File::create(m.p("fill")).unwrap();
    let e = fill(&mut filler).expect("8 MiB tmpfs never filled up");
    assert_eq!(
        e.raw_os_error(),
        Some(libc::ENOSPC),
        "{kind:?}: filling the upper gave {e}"
    );
    drop(filler);
    // 2. The server stays up.
    assert!(exists(&m.p("d/f")), "{kind:?}: mount stopped answering");
    // 3. Copy-ups that do not fit fail with ENOSPC and leave nothing behind.
    let r = OpenOptions::new().append(true).open(m.p("big"));
    assert_errno(
        r,
        libc::ENOSPC,
        &format!("{kind:?}: copy-up of big on a full upper"),
    );
    let r = fs::set_permissions(m.p("mid"), fs::Permissions::from_mode(0o600));
    assert_errno(
        r,
        libc::ENOSPC,
        &format!("{kind:?}: chmod copy-up of mid on a full upper"),
    );
    let r = OpenOptions::new().append(true).open(m.p("small"));
    assert_errno(
        r,
        libc::ENOSPC,
        &format!("{kind:?}: copy-up of small on a full upper"),
    );
    assert_eq!(fs::read(m.p("big")).unwrap(), big, "{kind:?}: big changed");
    assert_eq!(fs::read(m.p("mid")).unwrap(), mid, "{kind:?}: mid changed");
    assert_eq!(lstat(&m.p("mid")).mode() & 0o777, 0o644);
    for n in ["big", "mid", "small"] {
        assert!(
            !exists(&upper.join(n)),
            "{kind:?}: a failed copy-up left {n} in the upper"
        );
    }
    if kind == Impl::Ours {
        assert_eq!(
            ls(&work.join("work")),
            Vec::<String>::new(),
            "failed copy-ups left staging debris"
        );
    }
    // 4. Writes to an already copied-up file also get ENOSPC.
    let mut f = OpenOptions::new().append(true).open(m.p("fill")).unwrap();
    let e = fill(&mut f).expect("append to a full fs succeeded");
    assert_eq!(
        e.raw_os_error(),
        Some(libc::ENOSPC),
        "{kind:?}: append gave {e}"
    );
    drop(f);
    // 5. Free the space through the mount: everything works again.
    fs::remove_file(m.p("fill")).unwrap();
    // FUSE sends RELEASE/FORGET asynchronously: allow a moment.
    let since = Instant::now();
    let mut free = sys::statvfs(&upper).unwrap();
    while free.f_bavail * free.f_frsize < 7 << 20 && since.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(20));
        free = sys::statvfs(&upper).unwrap();
    }
    eprintln!(
        "{kind:?}: space of the deleted file released after {:?}",
        since.elapsed()
    );
    assert!(
        free.f_bavail * free.f_frsize >= 7 << 20,
        "{kind:?}: space of the deleted file not released ({} bytes free): the server keeps it open?",
        free.f_bavail * free.f_frsize
    );
    let mut f = OpenOptions::new().append(true).open(m.p("big")).unwrap();
    f.write_all(b"appended").unwrap();
    drop(f);
    let mut want = big.clone();
    want.extend_from_slice(b"appended");
    assert_eq!(fs::read(m.p("big")).unwrap(), want);
    fs::set_permissions(m.p("mid"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::create_dir(m.p("d/new")).unwrap();
    write(&m.p("d/new/g"), b"ok");
    m.remount();
    assert_eq!(fs::read(m.p("big")).unwrap(), want);
    assert_eq!(fs::read(m.p("mid")).unwrap(), mid);
    assert_eq!(read(&m.p("d/new/g")), "ok");
    if kind == Impl::Ours {
        assert!(!m.log().contains("panic"), "daemon log:\n{}", m.log());
    }
    drop(m);
    drop(t);
}
