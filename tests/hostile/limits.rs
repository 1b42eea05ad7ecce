//! Limits: 255-byte names and 4095-byte symlink targets, paths deeper than
//! PATH_MAX, 64 KiB xattrs and long xattr lists, and a sparse 100 GiB file.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::*;

#[test]
fn names_of_255_bytes_and_symlink_targets_of_4095_bytes() {
    let n255 = "n".repeat(255);
    let m255 = "m".repeat(255);
    let d255 = "D".repeat(255);
    let f255 = "F".repeat(255);
    let s255 = "S".repeat(255);
    let n252 = "q".repeat(252); // ".wh." + name would exceed NAME_MAX
    let n256 = "z".repeat(256);
    let long_target = format!("{}/end", "t".repeat(4091)); // 4095 bytes
    let too_long_target = "u".repeat(4096);
    let build = |fx: &Fixture| {
        fx.lower(0)
            .file(&n255, b"lower-255")
            .file(&n252, b"lower-252")
            .file(&format!("{d255}/{f255}"), b"deep-255")
            .symlink(&s255, &long_target);
        Layout::standard(fx)
    };
    let ops = |m: &Mounted, t: &mut Transcript| {
        t.expect("read n255", read_res(&m.p(&n255)), "ok \"lower-255\"");
        t.expect("read n252", read_res(&m.p(&n252)), "ok \"lower-252\"");
        t.expect("append n255", append_res(&m.p(&n255), b"+"), "ok");
        t.expect("append n252", append_res(&m.p(&n252), b"+"), "ok");
        t.expect(
            "rename n255 m255",
            res(fs::rename(m.p(&n255), m.p(&m255))),
            "ok",
        );
        t.expect(
            "readlink s255",
            readlink_res(&m.p(&s255)),
            &format!("ok {long_target}"),
        );
        t.expect(
            "lchown s255 (copy-up of a 4095-byte target)",
            res(std::os::unix::fs::lchown(m.p(&s255), Some(UID), None)),
            "ok",
        );
        t.expect(
            "readlink s255 after copy-up",
            readlink_res(&m.p(&s255)),
            &format!("ok {long_target}"),
        );
        t.expect(
            "unlink d255/f255",
            res(fs::remove_file(m.p(&format!("{d255}/{f255}")))),
            "ok",
        );
        t.expect("rmdir d255", res(fs::remove_dir(m.p(&d255))), "ok");
        t.expect("mkdir d255", res(fs::create_dir(m.p(&d255))), "ok");
        t.expect("ls d255", ls_res(&m.p(&d255)), "ok []");
        t.expect(
            "create d255/f255",
            create_res(&m.p(&format!("{d255}/{f255}")), b"new"),
            "ok",
        );
        t.expect(
            "symlink 4095-byte target",
            res(std::os::unix::fs::symlink(&long_target, m.p("s2"))),
            "ok",
        );
        t.expect(
            "symlink 4096-byte target",
            res(std::os::unix::fs::symlink(&too_long_target, m.p("s3"))),
            "ENAMETOOLONG",
        );
        t.expect("create 256", create_res(&m.p(&n256), b""), "ENAMETOOLONG");
        t.expect("mkdir 256", res(fs::create_dir(m.p(&n256))), "ENAMETOOLONG");
        t.expect(
            "rename to 256",
            res(fs::rename(m.p(&n252), m.p(&n256))),
            "ENAMETOOLONG",
        );
        t.expect(
            "link to 256",
            res(fs::hard_link(m.p(&n252), m.p(&n256))),
            "ENAMETOOLONG",
        );
        t.expect("unlink n252", res(fs::remove_file(m.p(&n252))), "ok");
        t.expect(
            "ls /",
            ls_res(&m.p("")),
            &format!("ok {:?}", {
                let mut v = vec![d255.clone(), m255.clone(), s255.clone(), "s2".to_string()];
                v.sort();
                v
            }),
        );
    };
    differential_of(&build, &ops);
}

/// Walks `depth` dirs named `name` below `root` through dir fds.
fn deep(root: &Path, name: &OsStr, depth: usize) -> io::Result<OwnedFd> {
    let mut fd: OwnedFd = File::open(root)?.into();
    for _ in 0..depth {
        fd = sys::openat(fd.as_fd(), name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    }
    Ok(fd)
}

fn build_deep(root: &Path, name: &OsStr, depth: usize) -> OwnedFd {
    let mut fd: OwnedFd = File::open(root).expect("open layer").into();
    for _ in 0..depth {
        match sys::mkdirat(fd.as_fd(), name, 0o755) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => panic!("mkdirat: {e}"),
        }
        fd = sys::openat(fd.as_fd(), name, libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
    }
    fd
}

fn dents(fd: &OwnedFd) -> String {
    match sys::openat(fd.as_fd(), OsStr::new("."), libc::O_RDONLY, 0) {
        Ok(dup) => sorted_names(dup.as_fd()),
        Err(e) => ename(&e),
    }
}

#[test]
fn paths_deeper_than_path_max_with_special_files_at_the_bottom() {
    const DEPTH: usize = 30; // 30 * 201 bytes: well past PATH_MAX
    let dname = "d".repeat(200);
    let name = OsStr::new(&dname);
    let build = |fx: &Fixture| {
        let bottom = build_deep(&fx.lower(0).root, name, DEPTH);
        let f = sys::openat(
            bottom.as_fd(),
            OsStr::new("f"),
            libc::O_CREAT | libc::O_WRONLY,
            0o644,
        )
        .unwrap();
        File::from(f).write_all(b"deep-lower").unwrap();
        let mid = deep(&fx.lower(0).root, name, DEPTH / 2).unwrap();
        let g = sys::openat(
            mid.as_fd(),
            OsStr::new("g"),
            libc::O_CREAT | libc::O_WRONLY,
            0o644,
        )
        .unwrap();
        drop(g);
        Layout::standard(fx)
    };
    let ops = |m: &Mounted, t: &mut Transcript| {
        let bottom = match deep(&m.p(""), name, DEPTH) {
            Ok(b) => b,
            Err(e) => {
                t.expect("walk to the bottom", ename(&e), "ok");
                return;
            }
        };
        t.expect("ls bottom", dents(&bottom), "ok [\"f\"]");
        t.expect(
            "append bottom/f (copies up 30 ancestors)",
            res(sys::openat(
                bottom.as_fd(),
                OsStr::new("f"),
                libc::O_WRONLY | libc::O_APPEND,
                0,
            )
            .and_then(|fd| File::from(fd).write_all(b"+"))),
            "ok",
        );
        t.expect(
            "read bottom/f",
            match sys::openat(bottom.as_fd(), OsStr::new("f"), libc::O_RDONLY, 0) {
                Ok(fd) => {
                    let mut s = String::new();
                    let _ = File::from(fd).read_to_string(&mut s);
                    format!("ok {s}")
                }
                Err(e) => ename(&e),
            },
            "ok deep-lower+",
        );
        t.expect(
            "mkdir bottom/new",
            res(sys::mkdirat(bottom.as_fd(), OsStr::new("new"), 0o755)),
            "ok",
        );
        t.expect(
            "create bottom/new2",
            res(sys::openat(
                bottom.as_fd(),
                OsStr::new("new2"),
                libc::O_CREAT | libc::O_WRONLY,
                0o600,
            )),
            "ok",
        );
        t.expect("ls bottom", dents(&bottom), "ok [\"f\", \"new\", \"new2\"]");
        drop(bottom);
        // Tear the chain down bottom-up: whiteouts at every lower level.
        for level in (0..DEPTH).rev() {
            let dir = match deep(&m.p(""), name, level + 1) {
                Ok(d) => d,
                Err(e) => {
                    t.expect(&format!("walk to level {level}"), ename(&e), "ok");
                    return;
                }
            };
            let mut names: Vec<_> = match entries(dir.as_fd()) {
                Ok(v) => v.into_iter().map(|d| (d.name, d.d_type)).collect(),
                Err(e) => {
                    t.expect(&format!("getdents level {level}"), ename(&e), "ok");
                    return;
                }
            };
            names.sort();
            for (n, ty) in names {
                let flags = if ty == libc::DT_DIR {
                    libc::AT_REMOVEDIR
                } else {
                    0
                };
                t.expect(
                    &format!(
                        "remove {} at level {level}",
                        n.to_string_lossy().chars().take(8).collect::<String>()
                    ),
                    res(sys::unlinkat(dir.as_fd(), &n, flags)),
                    "ok",
                );
            }
            drop(dir);
            let parent = deep(&m.p(""), name, level).unwrap();
            t.expect(
                &format!("rmdir level {level}"),
                res(sys::unlinkat(parent.as_fd(), name, libc::AT_REMOVEDIR)),
                "ok",
            );
        }
        t.expect("ls / at the end", ls_res(&m.p("")), "ok []");
    };
    differential_of(&build, &ops);
}

fn xattr_summary(r: io::Result<Vec<u8>>) -> String {
    match r {
        Ok(v) => {
            let distinct: std::collections::BTreeSet<u8> = v.iter().copied().collect();
            format!("ok len={} bytes={distinct:?}", v.len())
        }
        Err(e) => ename(&e),
    }
}

/// 64 KiB xattr values (XATTR_SIZE_MAX) and long xattr lists, on tmpfs
/// layers (ext4 without ea_inode cannot hold them).
#[test]
fn huge_xattrs_survive_lookup_copy_up_and_set() {
    let big = vec![b'A'; 65536];
    let bigt = vec![b'T'; 65536];
    let build = |fx: &Fixture| {
        let t = Tmpfs::mount(&fx.root().join("t"), "size=64m,mode=0755");
        let lower = Layer::new(t.0.join("lower"));
        lower
            .file("f", b"data")
            .xattr("f", "user.big", &big)
            .xattr("f", "trusted.big", &bigt)
            .dir("d")
            .xattr("d", "user.big", &big)
            .file("many", b"");
        for i in 0..200 {
            lower.xattr("many", &format!("user.{i:03}{}", "x".repeat(200)), b"v");
        }
        let upper = Layer::new(t.0.join("upper")).root;
        Layout {
            lowers: vec![lower.root],
            upper,
            work: t.0.join("work"),
            work2: {
                fs::create_dir_all(t.0.join("work2")).unwrap();
                fs::create_dir_all(t.0.join("work")).unwrap();
                t.0.join("work2")
            },
            merged: fx.merged(),
            _tmpfs: Some(t),
        }
    };
    let ops = |m: &Mounted, t: &mut Transcript| {
        let big = vec![b'B'; 65536];
        t.expect(
            "get user.big",
            xattr_summary(sys::lgetxattr(&m.p("f"), "user.big")),
            "ok len=65536 bytes={65}",
        );
        t.expect(
            "get trusted.big",
            xattr_summary(sys::lgetxattr(&m.p("f"), "trusted.big")),
            "ok len=65536 bytes={84}",
        );
        t.expect(
            "list many",
            match sys::llistxattr(&m.p("many")) {
                Ok(v) => format!("ok {}", v.len()),
                Err(e) => ename(&e),
            },
            "ok 200",
        );
        t.expect(
            "chmod f (copy-up with 64 KiB xattrs)",
            res(fs::set_permissions(
                m.p("f"),
                fs::Permissions::from_mode(0o600),
            )),
            "ok",
        );
        t.expect(
            "raw upper user.big",
            xattr_summary(sys::lgetxattr(&m.up("f"), "user.big")),
            "ok len=65536 bytes={65}",
        );
        t.expect(
            "raw upper trusted.big",
            xattr_summary(sys::lgetxattr(&m.up("f"), "trusted.big")),
            "ok len=65536 bytes={84}",
        );
        t.expect(
            "create d/g (copy-up of d)",
            create_res(&m.p("d/g"), b"g"),
            "ok",
        );
        t.expect(
            "raw upper d user.big",
            xattr_summary(sys::lgetxattr(&m.up("d"), "user.big")),
            "ok len=65536 bytes={65}",
        );
        t.expect(
            "set 64 KiB on new file",
            res(sys::lsetxattr(&m.p("d/g"), "user.big2", &big, 0)),
            "ok",
        );
        t.expect(
            "get it back",
            xattr_summary(sys::lgetxattr(&m.p("d/g"), "user.big2")),
            "ok len=65536 bytes={66}",
        );
        let mut too_big = big.clone();
        too_big.push(b'B');
        t.expect(
            "set 64 KiB + 1",
            res(sys::lsetxattr(&m.p("d/g"), "user.big3", &too_big, 0)),
            "E2BIG",
        );
        t.expect(
            "name of 256 bytes",
            res(sys::lsetxattr(
                &m.p("d/g"),
                &format!("user.{}", "n".repeat(251)),
                b"v",
                0,
            )),
            "ERANGE",
        );
        t.expect(
            "chmod many (copy-up with 200 xattrs)",
            res(fs::set_permissions(
                m.p("many"),
                fs::Permissions::from_mode(0o600),
            )),
            "ok",
        );
        t.expect(
            "list many after copy-up",
            match sys::llistxattr(&m.p("many")) {
                Ok(v) => format!("ok {}", v.len()),
                Err(e) => ename(&e),
            },
            "ok 200",
        );
    };
    differential_of(&build, &ops);
}

#[test]
fn sparse_100_gib_file_copies_up_sparse_and_quickly() {
    let Some(fx) = Fixture::new() else { return };
    const GIB: u64 = 1 << 30;
    let size = 100 * GIB;
    fx.lower(0).sparse(
        "huge",
        size,
        &[(0, b"head"), (50 * GIB, b"middle"), (size - 4096, b"tail")],
    );
    let m = fx.mount();
    let start = Instant::now();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("huge"))
        .expect("open 100 GiB file for writing (copy-up)");
    let took = start.elapsed();
    f.write_all_at(b"HEAD", 0).unwrap();
    let mut buf = [0u8; 6];
    f.read_exact_at(&mut buf, 50 * GIB).unwrap();
    assert_eq!(&buf, b"middle");
    f.read_exact_at(&mut buf[..4], size - 4096).unwrap();
    assert_eq!(&buf[..4], b"tail");
    f.read_exact_at(&mut buf[..4], 0).unwrap();
    assert_eq!(&buf[..4], b"HEAD");
    let mut zero = [1u8; 4096];
    f.read_exact_at(&mut zero, 20 * GIB).unwrap();
    assert!(zero.iter().all(|b| *b == 0), "hole reads back non-zero");
    drop(f);
    let up = lstat(&m.up("huge"));
    eprintln!(
        "{:?}: copy-up of a 100 GiB sparse file took {took:?}, upper uses {} KiB",
        fx.kind,
        up.blocks() / 2
    );
    assert_eq!(up.len(), size);
    assert!(
        up.blocks() * 512 <= 64 << 20,
        "copy-up filled holes: upper uses {} bytes",
        up.blocks() * 512
    );
    assert!(
        took < Duration::from_secs(30),
        "copy-up of a sparse file took {took:?}"
    );
}
