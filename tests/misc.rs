//! Everything else a union must pass through like the kernel: statfs of the
//! upper fs, fallocate, SEEK_DATA/SEEK_HOLE, flock, coherent MAP_SHARED
//! writes, NAME_MAX names and paths deeper than PATH_MAX.

mod common;

use common::*;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

#[test]
fn statfs_reports_upper_fs() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("f", b"");
    let m = fx.mount();
    let merged = sys::statvfs(&m.p("")).expect("statvfs merged");
    let upper = sys::statvfs(&m.up("")).expect("statvfs upper");
    assert_eq!(
        merged.f_blocks * merged.f_frsize,
        upper.f_blocks * upper.f_frsize,
        "total size differs from the upper fs"
    );
    assert_eq!(merged.f_files, upper.f_files, "inode count differs");
    assert_eq!(merged.f_namemax, 255);
    let free_m = (merged.f_bavail * merged.f_frsize) as f64;
    let free_u = (upper.f_bavail * upper.f_frsize) as f64;
    assert!(
        (free_m - free_u).abs() <= free_u * 0.01 + (64 << 20) as f64,
        "free space {free_m} vs upper {free_u}"
    );
    assert_eq!(merged.f_flag & libc::ST_RDONLY, 0);
}

/// Linux truncates on O_RDONLY|O_TRUNC as well (it asks for write
/// permission for it); the lower file is copied up and emptied.
#[test]
fn read_only_open_with_o_trunc_truncates() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("f", b"0123456789");
    let m = fx.mount();
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_TRUNC)
        .open(m.p("f"))
        .expect("open O_RDONLY|O_TRUNC");
    assert_eq!(f.metadata().expect("fstat").len(), 0);
    drop(f);
    assert_eq!(fs::metadata(m.p("f")).expect("stat").len(), 0);
    assert_eq!(fx.lower(0).path("f").metadata().expect("lower").len(), 10);
}

#[test]
fn fallocate_allocates_and_punches_holes() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("f", b"abc");
    let m = fx.mount();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("f"))
        .expect("open rw");
    sys::fallocate(f.as_fd(), 0, 0, 1 << 20).expect("fallocate");
    let md = lstat(&m.p("f"));
    assert_eq!(md.len(), 1 << 20);
    assert!(md.blocks() >= 2048, "blocks {}", md.blocks());
    assert!(lstat(&m.up("f")).blocks() >= 2048);
    let mut buf = [0u8; 3];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"abc");
    sys::fallocate(f.as_fd(), libc::FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20)
        .expect("fallocate KEEP_SIZE");
    assert_eq!(
        lstat(&m.p("f")).len(),
        1 << 20,
        "KEEP_SIZE changed the size"
    );
    let before = lstat(&m.up("f")).blocks();
    sys::fallocate(
        f.as_fd(),
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        0,
        1 << 20,
    )
    .expect("punch hole");
    let md = lstat(&m.up("f"));
    assert_eq!(md.len(), 1 << 20);
    assert!(
        md.blocks() + 2000 <= before,
        "blocks before punch {before}, after {}",
        md.blocks()
    );
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, [0, 0, 0]);
}

#[test]
fn lseek_data_and_hole_follow_the_real_file() {
    // Data and holes on 1 MiB boundaries: kernel copy-up preserves holes at
    // its 1 MiB chunk granularity, so these offsets survive copy-up exactly.
    let Some(fx) = Fixture::new() else { return };
    const MIB: i64 = 1 << 20;
    let chunk = vec![7u8; 1 << 20];
    fx.lower(0)
        .sparse("s", 5 << 20, &[(0, &chunk), (3 << 20, &chunk)]);
    let m = fx.mount();
    let check = |f: &File, when: &str| {
        let fd = f.as_fd();
        let seek = |off: i64, whence: i32| sys::lseek(fd, off, whence);
        assert_eq!(seek(0, libc::SEEK_DATA).unwrap(), 0, "{when}");
        assert_eq!(seek(0, libc::SEEK_HOLE).unwrap(), MIB, "{when}");
        assert_eq!(seek(MIB, libc::SEEK_DATA).unwrap(), 3 * MIB, "{when}");
        assert_eq!(seek(2 * MIB, libc::SEEK_HOLE).unwrap(), 2 * MIB, "{when}");
        assert_eq!(seek(3 * MIB, libc::SEEK_HOLE).unwrap(), 4 * MIB, "{when}");
        assert_errno(
            seek(4 * MIB, libc::SEEK_DATA),
            libc::ENXIO,
            &format!("{when}: SEEK_DATA after last data"),
        );
        assert_errno(
            seek(6 * MIB, libc::SEEK_HOLE),
            libc::ENXIO,
            &format!("{when}: SEEK_HOLE past EOF"),
        );
    };
    let ro = File::open(m.p("s")).expect("open lower file");
    check(&ro, "lower file");
    drop(ro);
    let rw = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("s"))
        .unwrap();
    check(&rw, "after copy-up");
    assert!(lstat(&m.up("s")).is_file());
}

#[test]
fn flock_excludes_other_open_file_descriptions() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("lower", b"");
    let m = fx.mount();
    write(&m.p("upper"), b"");
    for name in ["lower", "upper"] {
        let a = File::open(m.p(name)).unwrap();
        let b = File::open(m.p(name)).unwrap();
        sys::flock(a.as_fd(), libc::LOCK_EX).expect("LOCK_EX");
        assert_errno(
            sys::flock(b.as_fd(), libc::LOCK_EX | libc::LOCK_NB),
            libc::EWOULDBLOCK,
            &format!("second LOCK_EX on {name}"),
        );
        assert_errno(
            sys::flock(b.as_fd(), libc::LOCK_SH | libc::LOCK_NB),
            libc::EWOULDBLOCK,
            &format!("LOCK_SH against LOCK_EX on {name}"),
        );
        sys::flock(a.as_fd(), libc::LOCK_UN).expect("LOCK_UN");
        sys::flock(b.as_fd(), libc::LOCK_SH | libc::LOCK_NB).expect("LOCK_SH after unlock");
        sys::flock(a.as_fd(), libc::LOCK_SH | libc::LOCK_NB).expect("two LOCK_SH");
    }
    assert!(!exists(&m.up("lower")), "flock copied up a lower file");
}

#[test]
fn mmap_shared_write_is_coherent_with_read() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("f", &[b'.'; 8192]);
    let mut m = fx.mount();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("f"))
        .unwrap();
    let reader = File::open(m.p("f")).unwrap();
    let mut map = sys::SharedMap::new(f.as_fd(), 8192).expect("mmap");
    map.bytes_mut()[100..105].copy_from_slice(b"hello");
    map.bytes_mut()[8000..8003].copy_from_slice(b"end");
    let mut buf = [0u8; 5];
    reader.read_exact_at(&mut buf, 100).unwrap();
    assert_eq!(&buf, b"hello", "read() does not see the MAP_SHARED write");
    // And the other way round: write() shows in the mapping.
    f.write_all_at(b"WORLD", 200).unwrap();
    assert_eq!(&map.bytes_mut()[200..205], b"WORLD");
    map.sync().expect("msync");
    drop(map);
    drop(f);
    let data = fs::read(m.up("f")).unwrap();
    assert_eq!(&data[100..105], b"hello");
    assert_eq!(&data[8000..8003], b"end");
    drop(reader);
    m.remount();
    let data = fs::read(m.p("f")).unwrap();
    assert_eq!(&data[100..105], b"hello");
    assert_eq!(&data[200..205], b"WORLD");
}

#[test]
fn names_of_255_bytes_work_and_256_is_enametoolong() {
    let Some(fx) = Fixture::new() else { return };
    let n255 = "n".repeat(255);
    let l255 = "l".repeat(255);
    fx.lower(0).file(&format!("d/{l255}"), b"lower").dir("e");
    let m = fx.mount();
    write(&m.p(&n255), b"root");
    write(&m.p(&format!("e/{n255}")), b"in copied-up dir");
    let d255 = "D".repeat(255);
    fs::create_dir(m.p(&format!("e/{d255}"))).expect("mkdir 255");
    assert!(lstat(&m.up(&format!("e/{d255}"))).is_dir());
    assert_eq!(read(&m.p(&n255)), "root");
    assert_eq!(read(&m.up(&format!("e/{n255}"))), "in copied-up dir");
    fs::remove_file(m.p(&format!("d/{l255}"))).expect("unlink 255-byte lower name");
    assert_whiteout(&m.up(&format!("d/{l255}")));
    assert_eq!(ls(&m.p("d")), Vec::<String>::new());
    let n256 = "n".repeat(256);
    assert_errno(fs::write(m.p(&n256), b""), libc::ENAMETOOLONG, "create 256");
    assert_errno(
        fs::symlink_metadata(m.p(&n256)),
        libc::ENAMETOOLONG,
        "lookup 256",
    );
    assert_errno(fs::create_dir(m.p(&n256)), libc::ENAMETOOLONG, "mkdir 256");
}

/// Walks (creating when `create`) `depth` dirs named `name` below `root`
/// through dir fds, returning the fd of the deepest one.
fn deep_dir(root: &Path, name: &OsStr, depth: usize, create: bool) -> OwnedFd {
    let mut fd: OwnedFd = File::open(root).expect("open root").into();
    for level in 0..depth {
        if create {
            match sys::mkdirat(fd.as_fd(), name, 0o755) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => panic!("mkdirat at level {level}: {e}"),
            }
        }
        fd = sys::openat(fd.as_fd(), name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .unwrap_or_else(|e| panic!("openat at level {level}: {e}"));
    }
    fd
}

fn write_at_fd(dir: &OwnedFd, name: &str, data: &[u8], flags: i32) {
    let fd = sys::openat(
        dir.as_fd(),
        OsStr::new(name),
        libc::O_WRONLY | libc::O_CREAT | flags,
        0o644,
    )
    .unwrap_or_else(|e| panic!("openat {name}: {e}"));
    File::from(fd).write_all_at(data, 0).expect("write");
}

fn read_at_fd(dir: &OwnedFd, name: &str) -> String {
    let fd = sys::openat(dir.as_fd(), OsStr::new(name), libc::O_RDONLY, 0)
        .unwrap_or_else(|e| panic!("openat {name}: {e}"));
    let mut s = String::new();
    std::io::Read::read_to_string(&mut File::from(fd), &mut s).unwrap();
    s
}

#[test]
fn path_deeper_than_path_max_works() {
    let Some(fx) = Fixture::new() else { return };
    let (dname, nname) = ("d".repeat(200), "n".repeat(200));
    let name = OsStr::new(&dname);
    const DEPTH: usize = 25; // 25 * 201 bytes > PATH_MAX (4096)
                             // A deep path in the lower, with a file at the bottom.
    let lower_bottom = deep_dir(&fx.lower(0).root, name, DEPTH, true);
    write_at_fd(&lower_bottom, "f", b"lower", libc::O_TRUNC);
    drop(lower_bottom);
    let m = fx.mount();
    // Modify the deep lower file through the union: copies up 25 ancestors.
    let bottom = deep_dir(&m.p(""), name, DEPTH, false);
    write_at_fd(&bottom, "f", b"LOW", 0);
    assert_eq!(read_at_fd(&bottom, "f"), "LOWer");
    // Create an even deeper new path through the union.
    let new_bottom = deep_dir(&m.p(""), OsStr::new(&nname), DEPTH + 5, true);
    write_at_fd(&new_bottom, "g", b"new", 0);
    assert_eq!(read_at_fd(&new_bottom, "g"), "new");
    sys::unlinkat(bottom.as_fd(), OsStr::new("f"), 0).expect("unlink deep lower file");
    drop((bottom, new_bottom));
    // Raw upper: whiteout at the bottom of the copied-up chain, new file below.
    let up_bottom = deep_dir(&m.up(""), name, DEPTH, false);
    let fd = sys::openat(
        up_bottom.as_fd(),
        OsStr::new("f"),
        libc::O_PATH | libc::O_NOFOLLOW,
        0,
    )
    .expect("upper whiteout exists");
    let md = File::from(fd).metadata().unwrap();
    assert!(
        std::os::unix::fs::FileTypeExt::is_char_device(&md.file_type()) && md.rdev() == 0,
        "deep unlink did not leave a whiteout"
    );
    let up_new = deep_dir(&m.up(""), OsStr::new(&nname), DEPTH + 5, false);
    assert_eq!(read_at_fd(&up_new, "g"), "new");
    let low = deep_dir(&fx.lower(0).root, name, DEPTH, false);
    assert_eq!(read_at_fd(&low, "f"), "lower");
}

#[test]
fn open_file_survives_unlink() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("lower", b"lower data");
    let m = fx.mount();
    write(&m.p("upper"), b"upper data");
    let lf = File::open(m.p("lower")).unwrap();
    let uf = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("upper"))
        .unwrap();
    fs::remove_file(m.p("lower")).unwrap();
    fs::remove_file(m.p("upper")).unwrap();
    assert!(!exists(&m.p("lower")) && !exists(&m.p("upper")));
    let mut buf = [0u8; 10];
    lf.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"lower data");
    uf.write_all_at(b"UPPER", 0).unwrap();
    uf.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"UPPER data");
    let md = uf.metadata().expect("fstat of an open, unlinked file");
    assert_eq!((md.nlink(), md.len()), (0, 10));
    assert_eq!(lf.metadata().expect("fstat of open lower file").len(), 10);
    assert_whiteout(&m.up("lower"));
    assert!(!exists(&m.up("upper")));
}

/// The kernel lets ftruncate, fchmod, fchown, futimens, f*xattr, fsync and
/// close reach a file whose last name is gone: here one made in the upper
/// and a lower one copied up by its open for writing.
fn change_unlinked_files_through_their_fds(m: &Mounted) {
    write(&m.p("upper"), b"upper data");
    for name in ["upper", "lower"] {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.p(name))
            .expect("open");
        fs::remove_file(m.p(name)).expect("unlink");
        f.write_all_at(b"XY", 0).expect("pwrite");
        f.set_len(4).expect("ftruncate");
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .expect("fchmod");
        std::os::unix::fs::fchown(&f, Some(7), Some(8)).expect("fchown");
        let mtime = UNIX_EPOCH + Duration::new(1000, 5);
        f.set_times(fs::FileTimes::new().set_modified(mtime))
            .expect("futimens");
        sys::fsetxattr(f.as_fd(), "user.k", b"v").expect("fsetxattr");
        assert_eq!(
            sys::fgetxattr(f.as_fd(), "user.k").expect("fgetxattr"),
            b"v"
        );
        f.sync_all().expect("fsync");
        let mut buf = [0u8; 8];
        assert_eq!(f.read_at(&mut buf, 0).expect("pread"), 4);
        assert_eq!(&buf[..2], b"XY", "{name}");
        let md = f.metadata().expect("fstat");
        assert_eq!(
            (md.len(), md.mode() & 0o7777, md.uid(), md.gid()),
            (4, 0o600, 7, 8),
            "{name}"
        );
        assert_eq!(
            (md.mtime(), md.mtime_nsec(), md.nlink()),
            (1000, 5, 0),
            "{name}"
        );
        sys::close(f.into()).expect("close");
    }
    assert_whiteout(&m.up("lower"));
    assert!(!exists(&m.up("upper")));
}

#[test]
fn an_unlinked_file_changes_through_its_fd() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("lower", b"lower data");
    change_unlinked_files_through_their_fds(&fx.mount());
}

/// With the writeback cache the kernel also flushes the times it kept at
/// fsync and close, as a setattr of the unlinked file.
#[test]
fn an_unlinked_file_changes_through_its_fd_with_writeback() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("lower", b"lower data");
    let m = fx.mount_ours_opts("writeback");
    change_unlinked_files_through_their_fds(&m);
}

/// An ioctl the union does not serve fails with ENOTTY, as on the kernel,
/// and leaves nothing in the server's log: every isatty() on a file in the
/// union sends one.
#[test]
fn unserved_ioctls_fail_quietly() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("f", b"x");
    let m = fx.mount();
    let f = File::open(m.p("f")).expect("open");
    for _ in 0..3 {
        let err = sys::tcgetattr(f.as_fd()).expect_err("a file is no terminal");
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY), "{err}");
    }
    assert!(!m.log().contains("ioctl"), "daemon log:\n{}", m.log());
}

#[test]
fn parallel_creates_and_unlinks_in_one_dir() {
    let Some(fx) = Fixture::new() else { return };
    for i in 0..40 {
        fx.lower(0).file(&format!("d/low{i}"), b"l");
    }
    let m = fx.mount();
    std::thread::scope(|s| {
        for t in 0..4 {
            let m = &m;
            s.spawn(move || {
                for i in 0..50 {
                    write(&m.p(&format!("d/t{t}_{i}")), b"x");
                }
                for i in (t..40).step_by(4) {
                    fs::remove_file(m.p(&format!("d/low{i}"))).unwrap();
                }
                for i in (0..50).step_by(2) {
                    fs::remove_file(m.p(&format!("d/t{t}_{i}"))).unwrap();
                }
            });
        }
    });
    let names = ls(&m.p("d"));
    assert_eq!(names.len(), 4 * 25, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with('t')));
    let up = ls(&m.up("d"));
    assert_eq!(up.len(), 100 + 40, "upper: 100 files + 40 whiteouts");
    for i in 0..40 {
        assert_whiteout(&m.up(&format!("d/low{i}")));
    }
}

/// INIT caps a FUSE mount's readahead at 128 KiB; as root the server raises
/// it through sysfs so a cold sequential read comes as 1 MiB READs (one per
/// max_write) instead of 256 KiB ones.
#[test]
fn readahead_of_the_mount_is_one_max_write() {
    if only_for_ours() {
        return;
    }
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("f", b"x");
    let m = fx.mount();
    let dev = lstat(&m.p("")).dev();
    let knob = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    );
    // The server raises it from a thread once the session runs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut kb = String::new();
    while std::time::Instant::now() < deadline {
        kb = fs::read_to_string(&knob).expect("read read_ahead_kb");
        if kb.trim() == "1024" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(kb.trim(), "1024", "{knob}");
}

/// Reading through the union leaves a lower layer's atimes alone, as the
/// kernel does (it opens lower objects with O_NOATIME): the layer may be
/// shared by other mounts. With an atime far in the past, relatime would
/// otherwise update it at the first read.
#[test]
fn reading_does_not_touch_lower_atimes() {
    let Some(fx) = Fixture::new() else { return };
    const OLD: Ts = Ts(978_307_200, 0); // 2001-01-01
    fx.lower(0)
        .file("d/f", b"data")
        .file("d/g", b"more")
        .times("d/f", OLD, OLD)
        .times("d", OLD, OLD);
    let m = fx.mount();
    assert_eq!(read(&m.p("d/f")), "data");
    assert_eq!(ls(&m.p("d")), ["f", "g"]);
    drop(m);
    for rel in ["d", "d/f"] {
        let st = lstat(&fx.lower(0).path(rel));
        assert_eq!(st.atime(), OLD.0, "atime of lower {rel} changed");
    }
}

/// Times before 1970 with a fraction of a second are stored as given:
/// 1969-12-31 23:59:59.25 is (-1 s, 250,000,000 ns), through the union and
/// in the upper.
#[test]
fn pre_epoch_times_keep_their_nanoseconds() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("f", b"x");
    let m = fx.mount();
    let (a, mt) = (Ts(-1, 250_000_000), Ts(-86_401, 999_999_999));
    sys::utimensat(&m.p("f"), a, mt, true).expect("utimensat");
    for p in [m.p("f"), m.up("f")] {
        let st = lstat(&p);
        assert_eq!(
            (st.atime(), st.atime_nsec(), st.mtime(), st.mtime_nsec()),
            (a.0, a.1, mt.0, mt.1),
            "{}",
            p.display()
        );
    }
}
