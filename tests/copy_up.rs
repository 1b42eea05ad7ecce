//! Copy-up rules (overlay-semantics.md 1.6): what triggers it, what it keeps
//! (content, holes, owner, mode incl. setuid, ns times, xattrs, symlink
//! target/times, parent dir times), ancestors first, and open read-only fds
//! following the copy.

mod common;

use common::*;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};

const OLD_A: Ts = Ts(1_000_000_001, 111_111_111);
const OLD_M: Ts = Ts(1_000_000_000, 987_654_321);

/// A lower file `d/f` with known content, mode, owner, times and an xattr.
fn lower_file(fx: &Fixture) {
    fx.lower(0)
        .file_mode("d/f", b"lower content\n", 0o640)
        .chown("d/f", 5, 6)
        .xattr("d/f", "user.keep", b"v")
        .times("d/f", OLD_A, OLD_M);
}

/// Asserts `d/f` was copied up with its metadata and `content` and that the
/// lower file is untouched.
#[track_caller]
fn assert_copied_up(fx: &Fixture, m: &Mounted, content: &str) {
    let up = m.up("d/f");
    let md = lstat(&up);
    assert!(md.is_file(), "d/f not copied up to the upper");
    assert_eq!(read(&up), content, "upper content");
    assert_eq!(read(&m.p("d/f")), content, "merged content");
    assert_eq!(
        read(&fx.lower(0).path("d/f")),
        "lower content\n",
        "lower modified"
    );
    assert_eq!(
        sys::lgetxattr(&up, "user.keep").expect("user.keep on upper"),
        b"v"
    );
    assert!(lstat(&m.up("d")).is_dir());
}

#[track_caller]
fn assert_not_copied_up(m: &Mounted) {
    assert!(
        !exists(&m.up("d")),
        "upper has {:?} although nothing was modified",
        ls(&m.up(""))
    );
}

#[test]
fn open_for_write_copies_up() {
    let Some(fx) = Fixture::new() else { return };
    lower_file(&fx);
    let m = fx.mount();
    let f = OpenOptions::new()
        .write(true)
        .open(m.p("d/f"))
        .expect("open O_WRONLY");
    assert_copied_up(&fx, &m, "lower content\n");
    let md = lstat(&m.up("d/f"));
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (5, 6, 0o640));
    f.write_all_at(b"LOWER", 0).expect("write");
    drop(f);
    assert_eq!(read(&m.up("d/f")), "LOWER content\n");
    assert_eq!(read(&m.p("d/f")), "LOWER content\n");
}

#[test]
fn read_only_access_does_not_copy_up() {
    let Some(fx) = Fixture::new() else { return };
    lower_file(&fx);
    let m = fx.mount();
    let mut s = String::new();
    File::open(m.p("d/f"))
        .expect("open")
        .read_to_string(&mut s)
        .expect("read");
    assert_eq!(s, "lower content\n");
    let _ = lstat(&m.p("d/f"));
    let _ = sys::llistxattr(&m.p("d/f")).expect("listxattr");
    let _ = sys::lgetxattr(&m.p("d/f"), "user.keep").expect("getxattr");
    let _ = ls(&m.p("d"));
    assert_not_copied_up(&m);
}

#[test]
fn open_o_trunc_copies_up_empty_file() {
    let Some(fx) = Fixture::new() else { return };
    lower_file(&fx);
    let m = fx.mount();
    drop(
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(m.p("d/f"))
            .expect("open O_TRUNC"),
    );
    assert_copied_up(&fx, &m, "");
    assert_eq!(lstat(&m.up("d/f")).uid(), 5);
}

#[test]
fn truncate_copies_up() {
    let Some(fx) = Fixture::new() else { return };
    lower_file(&fx);
    let m = fx.mount();
    sys::truncate(&m.p("d/f"), 5).expect("truncate");
    assert_copied_up(&fx, &m, "lower");
    assert_eq!(lstat(&m.p("d/f")).len(), 5);
}

#[test]
fn chmod_copies_up() {
    let Some(fx) = Fixture::new() else { return };
    lower_file(&fx);
    let m = fx.mount();
    fs::set_permissions(m.p("d/f"), fs::Permissions::from_mode(0o604)).expect("chmod");
    assert_copied_up(&fx, &m, "lower content\n");
    assert_eq!(lstat(&m.up("d/f")).mode() & 0o7777, 0o604);
    assert_eq!(lstat(&m.p("d/f")).mode() & 0o7777, 0o604);
    assert_eq!(lstat(&fx.lower(0).path("d/f")).mode() & 0o7777, 0o640);
}

#[test]
fn chown_copies_up() {
    let Some(fx) = Fixture::new() else { return };
    lower_file(&fx);
    let m = fx.mount();
    std::os::unix::fs::chown(m.p("d/f"), Some(1000), Some(1001)).expect("chown");
    assert_copied_up(&fx, &m, "lower content\n");
    let md = lstat(&m.up("d/f"));
    assert_eq!((md.uid(), md.gid()), (1000, 1001));
    let md = lstat(&m.p("d/f"));
    assert_eq!((md.uid(), md.gid()), (1000, 1001));
}

#[test]
fn utimensat_copies_up() {
    let Some(fx) = Fixture::new() else { return };
    lower_file(&fx);
    let m = fx.mount();
    sys::utimensat(
        &m.p("d/f"),
        Ts(1_500_000_000, 1),
        Ts(1_600_000_000, 2),
        false,
    )
    .expect("utimensat");
    // Check times before reading the file (a read may update atime).
    for p in [m.up("d/f"), m.p("d/f")] {
        let md = lstat(&p);
        assert_eq!((md.mtime(), md.mtime_nsec()), (1_600_000_000, 2));
        assert_eq!((md.atime(), md.atime_nsec()), (1_500_000_000, 1));
    }
    assert_copied_up(&fx, &m, "lower content\n");
}

#[test]
fn setxattr_copies_up() {
    let Some(fx) = Fixture::new() else { return };
    lower_file(&fx);
    let m = fx.mount();
    sys::lsetxattr(&m.p("d/f"), "user.new", b"1", 0).expect("setxattr");
    assert_copied_up(&fx, &m, "lower content\n");
    assert_eq!(sys::lgetxattr(&m.up("d/f"), "user.new").unwrap(), b"1");
    assert_errno(
        sys::lgetxattr(&fx.lower(0).path("d/f"), "user.new"),
        libc::ENODATA,
        "lower must not get the xattr",
    );
}

#[test]
fn removexattr_copies_up() {
    let Some(fx) = Fixture::new() else { return };
    lower_file(&fx);
    fx.lower(0).xattr("d/f", "user.drop", b"x");
    let m = fx.mount();
    sys::lremovexattr(&m.p("d/f"), "user.drop").expect("removexattr");
    assert_copied_up(&fx, &m, "lower content\n");
    assert_errno(
        sys::lgetxattr(&m.up("d/f"), "user.drop"),
        libc::ENODATA,
        "upper user.drop",
    );
    assert_errno(
        sys::lgetxattr(&m.p("d/f"), "user.drop"),
        libc::ENODATA,
        "merged user.drop",
    );
    assert!(sys::lgetxattr(&fx.lower(0).path("d/f"), "user.drop").is_ok());
}

#[test]
fn link_copies_up_source() {
    let Some(fx) = Fixture::new() else { return };
    lower_file(&fx);
    let m = fx.mount();
    fs::hard_link(m.p("d/f"), m.p("d/g")).expect("link");
    assert_copied_up(&fx, &m, "lower content\n");
    let (f, g) = (lstat(&m.up("d/f")), lstat(&m.up("d/g")));
    assert_eq!(f.ino(), g.ino(), "upper names must be one inode");
    assert_eq!(f.nlink(), 2);
    let (f, g) = (lstat(&m.p("d/f")), lstat(&m.p("d/g")));
    assert_eq!(f.ino(), g.ino());
    assert_eq!(f.nlink(), 2);
}

#[test]
fn chmod_of_lower_dir_copies_up_dir_but_not_children() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("d/a", b"a").file("d/sub/b", b"b");
    let m = fx.mount();
    fs::set_permissions(m.p("d"), fs::Permissions::from_mode(0o711)).expect("chmod");
    assert_eq!(lstat(&m.up("d")).mode() & 0o7777, 0o711);
    assert_eq!(ls(&m.up("d")), Vec::<String>::new());
    assert!(!is_opaque(&m.up("d")), "a copied-up dir must not be opaque");
    assert_eq!(ls(&m.p("d")), ["a", "sub"]);
    assert_eq!(read(&m.p("d/sub/b")), "b");
}

#[test]
fn copy_up_preserves_sparse_holes() {
    let Some(fx) = Fixture::new() else { return };
    const SIZE: u64 = 256 << 20;
    fx.lower(0).sparse(
        "big",
        SIZE,
        &[(0, b"head"), (100 << 20, b"middle"), (SIZE - 4, b"tail")],
    );
    let lower_blocks = lstat(&fx.lower(0).path("big")).blocks();
    let m = fx.mount();
    sys::lsetxattr(&m.p("big"), "user.trigger", b"1", 0).expect("setxattr");
    let md = lstat(&m.up("big"));
    assert_eq!(md.len(), SIZE);
    assert!(
        md.blocks() * 512 <= 4 << 20,
        "copy-up filled holes: {} bytes allocated (lower {} bytes)",
        md.blocks() * 512,
        lower_blocks * 512
    );
    let f = File::open(m.p("big")).expect("open");
    let mut buf = [0u8; 6];
    f.read_exact_at(&mut buf[..4], 0).unwrap();
    assert_eq!(&buf[..4], b"head");
    f.read_exact_at(&mut buf, 100 << 20).unwrap();
    assert_eq!(&buf, b"middle");
    f.read_exact_at(&mut buf[..4], SIZE - 4).unwrap();
    assert_eq!(&buf[..4], b"tail");
    f.read_exact_at(&mut buf, 50 << 20).unwrap();
    assert_eq!(buf, [0u8; 6]);
}

#[test]
fn copy_up_preserves_owner_setuid_mode_and_ns_times() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0)
        .file_mode("bin/suid", b"#!/bin/sh\n", 0o4755)
        .chown("bin/suid", 1, 1)
        .chmod("bin/suid", 0o4755)
        .file_mode("bin/sgid", b"x", 0o2750)
        .chown("bin/sgid", 2, 3)
        .chmod("bin/sgid", 0o2750)
        .times("bin/suid", OLD_A, OLD_M)
        .times("bin/sgid", OLD_A, OLD_M);
    let m = fx.mount();
    for name in ["bin/suid", "bin/sgid"] {
        sys::lsetxattr(&m.p(name), "user.trigger", b"1", 0).expect("setxattr");
    }
    for p in [m.up("bin/suid"), m.p("bin/suid")] {
        let md = lstat(&p);
        assert_eq!(md.mode(), libc::S_IFREG | 0o4755, "{}", p.display());
        assert_eq!((md.uid(), md.gid()), (1, 1), "{}", p.display());
        assert_eq!((md.mtime(), md.mtime_nsec()), (OLD_M.0, OLD_M.1));
        assert_eq!((md.atime(), md.atime_nsec()), (OLD_A.0, OLD_A.1));
    }
    for p in [m.up("bin/sgid"), m.p("bin/sgid")] {
        let md = lstat(&p);
        assert_eq!(md.mode(), libc::S_IFREG | 0o2750, "{}", p.display());
        assert_eq!((md.uid(), md.gid()), (2, 3), "{}", p.display());
    }
}

/// chown drops setuid, and setgid of a group-executable file, even by
/// root (Linux, and so kernel overlayfs); setgid without group exec stays.
#[test]
fn chown_by_root_drops_set_id_bits() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0)
        .file_mode("suid", b"x", 0o6755)
        .file_mode("sgid_nx", b"x", 0o2744);
    let m = fx.mount();
    for name in ["suid", "sgid_nx"] {
        std::os::unix::fs::lchown(m.p(name), Some(5), Some(5)).expect("chown");
    }
    assert_eq!(lstat(&m.p("suid")).mode(), libc::S_IFREG | 0o755);
    assert_eq!(lstat(&m.p("sgid_nx")).mode(), libc::S_IFREG | 0o2744);
}

#[test]
fn copy_up_preserves_user_and_trusted_xattrs() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0)
        .file("f", b"x")
        .xattr("f", "user.one", b"1")
        .xattr("f", "user.bin", &[0, 1, 2, 255])
        .xattr("f", "trusted.two", b"2");
    let m = fx.mount();
    fs::set_permissions(m.p("f"), fs::Permissions::from_mode(0o600)).expect("chmod");
    for p in [m.up("f"), m.p("f")] {
        assert_eq!(sys::lgetxattr(&p, "user.one").unwrap(), b"1");
        assert_eq!(sys::lgetxattr(&p, "user.bin").unwrap(), [0, 1, 2, 255]);
        assert_eq!(sys::lgetxattr(&p, "trusted.two").unwrap(), b"2");
    }
    let mut names = sys::llistxattr(&m.p("f")).unwrap();
    names.retain(|n| !n.starts_with("security."));
    names.sort();
    assert_eq!(names, ["trusted.two", "user.bin", "user.one"]);
}

#[test]
fn copy_up_of_symlink_keeps_target_owner_and_times() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0)
        .symlink("d/l", "../some/target")
        .chown("d/l", 3, 4)
        .times("d/l", OLD_A, OLD_M)
        .symlink("d/l2", "dangling")
        .times("d/l2", OLD_A, OLD_M);
    let m = fx.mount();
    // lchown copies up the link itself, not the target.
    std::os::unix::fs::lchown(m.p("d/l"), Some(9), None).expect("lchown");
    for p in [m.up("d/l"), m.p("d/l")] {
        let md = lstat(&p);
        assert!(md.file_type().is_symlink(), "{}", p.display());
        assert_eq!(fs::read_link(&p).unwrap().to_str(), Some("../some/target"));
        assert_eq!((md.uid(), md.gid()), (9, 4));
        assert_eq!((md.mtime(), md.mtime_nsec()), (OLD_M.0, OLD_M.1));
    }
    // lutimes copies up and sets the link's own times.
    sys::utimensat(
        &m.p("d/l2"),
        Ts(1_234_567_890, 5),
        Ts(1_234_567_891, 6),
        true,
    )
    .expect("lutimes");
    for p in [m.up("d/l2"), m.p("d/l2")] {
        let md = lstat(&p);
        assert_eq!(fs::read_link(&p).unwrap().to_str(), Some("dangling"));
        assert_eq!((md.mtime(), md.mtime_nsec()), (1_234_567_891, 6));
    }
}

#[test]
fn copy_up_restores_parent_dir_times() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0)
        .file("p/q/f", b"x")
        .times("p/q", OLD_A, OLD_M)
        .times("p", OLD_A, Ts(1_000_000_100, 5));
    let m = fx.mount();
    fs::set_permissions(m.p("p/q/f"), fs::Permissions::from_mode(0o600)).expect("chmod");
    for (rel, want) in [("p/q", OLD_M), ("p", Ts(1_000_000_100, 5))] {
        for p in [m.up(rel), m.p(rel)] {
            let md = lstat(&p);
            assert_eq!(
                (md.mtime(), md.mtime_nsec()),
                (want.0, want.1),
                "mtime of {}",
                p.display()
            );
        }
    }
}

#[test]
fn copy_up_copies_parents_first_for_deep_path() {
    let Some(fx) = Fixture::new() else { return };
    let l = fx.lower(0);
    l.file("a/b/c/d/e/f", b"deep")
        .dir_mode("a/b", 0o750)
        .chown("a/b", 11, 12)
        .xattr("a/b", "user.dir", b"b")
        .dir_mode("a/b/c", 0o2775)
        .chown("a/b/c", 0, 13)
        .chmod("a/b/c", 0o2775)
        .file("a/b/c/sibling", b"s");
    let m = fx.mount();
    append(&m.p("a/b/c/d/e/f"), b"er");
    assert_eq!(read(&m.up("a/b/c/d/e/f")), "deeper");
    let b = lstat(&m.up("a/b"));
    assert_eq!((b.mode() & 0o7777, b.uid(), b.gid()), (0o750, 11, 12));
    assert_eq!(sys::lgetxattr(&m.up("a/b"), "user.dir").unwrap(), b"b");
    let c = lstat(&m.up("a/b/c"));
    assert_eq!((c.mode() & 0o7777, c.uid(), c.gid()), (0o2775, 0, 13));
    assert_eq!(ls(&m.up("a/b/c")), ["d"], "siblings must not be copied up");
    assert_eq!(ls(&m.p("a/b/c")), ["d", "sibling"]);
    assert_eq!(read(&fx.lower(0).path("a/b/c/d/e/f")), "deep");
}

#[test]
fn copy_up_keeps_content_of_multi_megabyte_file() {
    let Some(fx) = Fixture::new() else { return };
    let data: Vec<u8> = (0..(3u32 << 20) + 12345)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fx.lower(0).file("blob", &data);
    let m = fx.mount();
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("blob"))
        .expect("open rw");
    f.seek(SeekFrom::End(0)).unwrap();
    f.write_all(b"!").unwrap();
    drop(f);
    let mut want = data.clone();
    want.push(b'!');
    assert!(
        fs::read(m.up("blob")).unwrap() == want,
        "upper content differs"
    );
    assert!(
        fs::read(m.p("blob")).unwrap() == want,
        "merged content differs"
    );
}

#[test]
fn ro_fd_opened_before_copy_up_sees_new_data() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("f", b"old data");
    let m = fx.mount();
    let ro = File::open(m.p("f")).expect("open ro");
    let mut buf = [0u8; 8];
    ro.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"old data");
    let rw = OpenOptions::new()
        .write(true)
        .open(m.p("f"))
        .expect("open rw");
    rw.write_all_at(b"NEW", 0).expect("write");
    drop(rw);
    ro.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"NEW data", "ro fd still reads the lower file");
    assert_eq!(read(&m.up("f")), "NEW data");
    assert_eq!(read(&fx.lower(0).path("f")), "old data");
}

#[test]
fn concurrent_copy_up_of_same_file_happens_once() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("d/shared", b"base\n");
    let m = fx.mount();
    let path = m.p("d/shared");
    let barrier = std::sync::Barrier::new(8);
    std::thread::scope(|s| {
        for i in 0..8 {
            let (path, barrier) = (&path, &barrier);
            s.spawn(move || {
                barrier.wait();
                let mut f = OpenOptions::new()
                    .append(true)
                    .open(path)
                    .expect("open for append");
                f.write_all(format!("line {i}\n").as_bytes()).unwrap();
            });
        }
    });
    let content = read(&m.p("d/shared"));
    assert!(content.starts_with("base\n"), "{content:?}");
    let mut lines: Vec<&str> = content.lines().skip(1).collect();
    lines.sort();
    let want: Vec<String> = (0..8).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, want, "lost or duplicated appends");
    assert_eq!(read(&m.up("d/shared")), content);
    assert_eq!(ls(&m.up("d")), ["shared"], "stray copy-up temp files");
    assert_eq!(read(&fx.lower(0).path("d/shared")), "base\n");
}

#[test]
fn truncate_extending_lower_file_zero_fills() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("f", b"abc");
    let m = fx.mount();
    sys::truncate(&m.p("f"), 10).expect("extend");
    assert_eq!(fs::read(m.p("f")).unwrap(), b"abc\0\0\0\0\0\0\0");
    assert_eq!(fs::read(m.up("f")).unwrap(), b"abc\0\0\0\0\0\0\0");
}

/// Without a work dir, copy-up stages objects under `#ufs<pid>.<n>` names
/// in the upper dir itself, which anyone can create through the union
/// first (or a crashed server with the same pid left). Such names are
/// skipped, never deleted: the copy-ups work and the caller's files stay.
/// (`union::tests` makes every staging attempt meet a taken name.)
#[test]
fn taken_staging_names_are_skipped_not_deleted() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    fx.lower(0)
        .symlink("d/link", "target")
        .fifo("d/fifo")
        .file("d/sub/f", b"f")
        .dir("d/sub2");
    let upper = fx.upper().root;
    let m = Mounted::mount(fx.kind, &fx.lowers(), Some(&upper), None, &fx.merged());
    let pid = m.pid().expect("server pid");
    let taken: Vec<String> = (0..64).map(|n| format!("#ufs{pid:x}.{n:x}")).collect();
    for dir in ["", "d", "d/sub"] {
        for t in &taken {
            fs::write(m.p(dir).join(t), b"mine").unwrap();
        }
    }
    std::os::unix::fs::lchown(m.p("d/link"), Some(1), Some(1)).expect("lchown of a lower symlink");
    std::os::unix::fs::chown(m.p("d/fifo"), Some(1), Some(1)).expect("chown of a lower fifo");
    fs::write(m.p("d/sub2/new"), b"x").expect("create in a lower dir");
    append(&m.p("d/sub/f"), b"+");
    fs::remove_file(m.p("d/sub/f")).expect("unlink over a lower file");
    for dir in ["", "d", "d/sub"] {
        for t in &taken {
            assert_eq!(read(&m.p(dir).join(t)), "mine", "{dir}/{t} was touched");
        }
    }
    assert_eq!(lstat(&m.p("d/link")).uid(), 1);
    assert!(!exists(&m.p("d/sub/f")));
}

/// An upper that cannot store user xattrs (ramfs) still takes copy-ups:
/// those xattrs are dropped, as the kernel drops them.
#[test]
fn copy_up_to_an_upper_without_xattrs_drops_user_xattrs() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("f", b"data\n").xattr("f", "user.x", b"1");
    let ram = Tmpfs::mount_type(&fx.dir("ram"), "ramfs", "mode=0755");
    let (upper, work) = (ram.0.join("upper"), ram.0.join("work"));
    fs::create_dir(&upper).unwrap();
    fs::create_dir(&work).unwrap();
    let m = Mounted::mount(
        fx.kind,
        &fx.lowers(),
        Some(&upper),
        Some(&work),
        &fx.merged(),
    );
    append(&m.p("f"), b"more\n");
    assert_eq!(read(&m.p("f")), "data\nmore\n");
    drop(m);
    assert_eq!(fs::read(upper.join("f")).unwrap(), b"data\nmore\n");
}
