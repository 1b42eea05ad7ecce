//! The layered fixture of the differential harness and the path vocabulary
//! the op generator draws from.
//!
//! Three lowers (`lower0` is the top one, as in `lowerdir=`), built fresh for
//! every case in a few milliseconds. Every entry gets a fixed, old mtime
//! (2001-2002, ns precision), so any mtime a union reports that is older than
//! [`super::ops::RECENT`] must match exactly.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::common::{sys, Layer, Ts};
use super::ops::short;

/// A 255-byte name (NAME_MAX).
pub fn long_name() -> String {
    "L".repeat(255)
}

/// A 255-byte dir name at the root.
pub fn long_dir() -> String {
    "K".repeat(255)
}

/// A 256-byte name (ENAMETOOLONG).
pub fn too_long() -> String {
    "M".repeat(256)
}

/// A deep dir (about 2.8 KB of path), merged from two lowers.
pub fn deep_dir() -> String {
    let mut s = "deep".to_string();
    for c in b'A'..b'A' + 11 {
        s.push('/');
        s.push_str(&(c as char).to_string().repeat(250));
    }
    s
}

/// Dirs the generator puts names in (weight, path); "" is the root.
pub fn gen_dirs() -> Vec<(u32, String)> {
    let mut v: Vec<(u32, String)> = [
        (14, ""),
        (8, "d"),
        (4, "d/e"),
        (5, "x"),
        (3, "n"),
        (3, "w"),
        (2, "o"),
        (2, "m"),
        (2, "u"),
        (2, "d2f"),
        (1, "f2d"),
        (3, "dl"),
        (1, "el"),
        (3, "new"),
        (1, "new/s"),
    ]
    .iter()
    .map(|(w, s)| (*w, s.to_string()))
    .collect();
    v.push((2, deep_dir()));
    v.push((1, long_dir()));
    v
}

/// Names the generator uses (weight, name).
pub fn gen_leaves() -> Vec<(u32, String)> {
    let mut v: Vec<(u32, String)> = [
        (6, "a"),
        (5, "b"),
        (4, "c"),
        (3, "e"),
        (2, "z"),
        (3, "h1"),
        (2, "h2"),
        (2, "hb1"),
        (2, "hb2"),
        (2, "l"),
        (2, "dl"),
        (2, "dangle"),
        (1, "up"),
        (2, "p"),
        (1, "cdev"),
        (1, "bdev"),
        (2, "s"),
        (1, "g"),
        (2, "sp"),
        (2, "oth"),
        (1, "acl"),
        (1, "cap"),
        (3, "new"),
        (2, "new2"),
        (1, "f2d"),
        (1, "d2f"),
        (1, ".wh.oci"),
        (1, ".wh.a"),
        (1, ".wh..wh..opq"),
        (1, "nowhere"),
    ]
    .iter()
    .map(|(w, s)| (*w, s.to_string()))
    .collect();
    v.push((2, long_name()));
    v.push((1, too_long()));
    v
}

/// Targets of symlinks created by ops (relative ones never contain `..`, so
/// nothing escapes the mount).
pub const SYMLINK_TARGETS: &[&str] = &[
    "a",
    "b",
    "d",
    "d/a",
    "nowhere",
    "h1",
    "sp",
    "p",
    "dl/c",
    "x",
    "new",
    "/nonexistent-unionfs-diff/y",
];

/// A POSIX ACL (system.posix_acl_access) granting uid 1000 rw.
fn acl_value() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 6, 1000),
        (0x04, 4, u32::MAX),
        (0x10, 6, u32::MAX),
        (0x20, 4, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// security.capability v2 with cap_net_raw permitted+effective.
fn cap_value() -> Vec<u8> {
    let mut v = 0x0200_0001u32.to_le_bytes().to_vec();
    for w in [1u32 << 13, 0, 0, 0] {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v
}

/// Builds `lower0..lower2` below `root`.
pub fn build(root: &Path) {
    build_variant(root, None);
}

/// What a user inside a user namespace can put in a layer
/// (tests/differential_rootless.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rootless {
    /// The map covers the fixture's other ids (1000, 2000, gid 50): a
    /// subordinate range. With a single-id map those entries stay the user's.
    pub foreign_ids: bool,
}

/// The rootless fixture: the same entries minus what an unprivileged user
/// cannot make (device nodes, trusted.* xattrs, unmapped owners and ACL
/// entries), with `user.overlay.*` markers, and without lower hard links
/// (the kernel's `userxattr` mount has no index, so it breaks them at
/// copy-up where ours keeps them joined: a README deviation).
#[allow(dead_code)] // differential_rootless.rs only
pub fn build_rootless(root: &Path, r: Rootless) {
    build_variant(root, Some(r));
}

fn build_variant(root: &Path, rootless: Option<Rootless>) {
    let full = rootless.is_none();
    let ids = rootless.map_or(true, |r| r.foreign_ids);
    let ns = if full { "trusted" } else { "user" };
    let l2 = Layer::new(root.join("lower2"));
    let l1 = Layer::new(root.join("lower1"));
    let l0 = Layer::new(root.join("lower0"));
    let deep = deep_dir();
    let long = long_name();

    // Bottom layer.
    l2.file("a", b"lower2 a\n")
        .file("d/a", b"d/a from lower2\n")
        .xattr("d/a", "user.a", b"l2")
        .file("d/b", b"d/b whited out by lower0\n")
        .file("d/e/a", b"d/e/a\n")
        .file("x/a", b"x/a\n")
        .file("x/b", b"x/b\n")
        .file("x/c", b"x/c whited out by lower1\n")
        .file("n/b", b"n/b hidden by opaque n in lower1\n")
        .file("w/a", b"w/a hidden by xattr whiteout\n")
        .file("w/b", b"w/b visible\n")
        .file("o/a", b"o/a hidden by opaque o in lower0\n")
        .file("f2d/a", b"dir f2d hidden by file f2d in lower0\n")
        .file("d2f", b"file d2f hidden by dir d2f in lower0\n")
        .file("m/j", b"m/j\n")
        .file("h1", b"hard linked\n")
        .file_mode("s", b"#!/bin/true\n", 0o4755)
        .file_mode("g", b"setgid\n", 0o2755)
        .dir_mode("u", 0o750)
        .file_mode("u/a", b"private\n", 0o600)
        .file_mode("oth", b"other owner\n", 0o640)
        .xattr("oth", "user.a", b"o")
        .sparse(
            "sp",
            1 << 20,
            &[(0, b"head".as_slice()), (512 << 10, b"middle".as_slice())],
        )
        .fifo("p")
        .symlink("l", "a")
        .symlink("dl", "d")
        .symlink("dangle", "nowhere")
        .symlink("d/e/up", "../a")
        .symlink("abs", "/nonexistent-unionfs-diff/x")
        .file_mode("acl", b"acl\n", 0o664)
        .file_mode("cap", b"cap\n", 0o755)
        .xattr("cap", "security.capability", &cap_value())
        .file(&format!("{deep}/a"), b"deep a\n")
        .file(&format!("x/{long}"), b"255-byte name\n")
        .file(&format!("{}/a", long_dir()), b"in a 255-byte dir\n")
        .dir("dx")
        .file("dx/a", b"dir only in lower2\n");
    if full {
        // Three names of one inode, in three dirs.
        l2.hardlink("h1", "d/h2")
            .hardlink("h1", "x/h1")
            .xattr("x/a", "trusted.t", b"tx")
            .chardev("cdev", 1, 3)
            .blockdev("bdev", 7, 250);
    }
    if ids {
        l2.chown("g", 0, 50)
            .chown("u/a", 1000, 1000)
            .chown("u", 1000, 1000)
            .chown("oth", 1000, 2000)
            .xattr("acl", "system.posix_acl_access", &acl_value())
            .chown("l", 1000, 1000);
    }

    // Middle layer.
    l1.file("b", b"lower1 b\n")
        .file("d/c", b"d/c from lower1\n")
        .xattr("d/c", "user.a", b"l1")
        .xattr("d", "user.dir", b"l1 (hidden: lower0 has d)")
        .file("d/e/b", b"d/e/b\n")
        .dir("d/e/e")
        .whiteout("x/c")
        .dir("n")
        .xattr("n", &format!("{ns}.overlay.opaque"), b"y")
        .file("n/a", b"n/a\n")
        .file("w/a", b"")
        .xattr("w/a", &format!("{ns}.overlay.whiteout"), b"")
        .xattr("w", &format!("{ns}.overlay.opaque"), b"x")
        .file(".wh.oci", b"OCI-style name: a plain file for the kernel\n")
        .file("hb1", b"lower1 hard link\n")
        .symlink("el", "d/e")
        .file(&format!("{deep}/b"), b"deep b\n")
        .file(&format!("{deep}/{long}"), b"deep long\n");
    if full {
        l1.hardlink("hb1", "d/hb2");
    }

    // Top layer.
    l0.file_mode("a", b"lower0 a overrides lower2\n", 0o600)
        .xattr("a", "user.a", b"l0")
        .whiteout("d/b")
        .file("d/z", b"d/z\n")
        .file("d/e/c", b"d/e/c\n")
        .dir("o")
        .xattr("o", &format!("{ns}.overlay.opaque"), b"y")
        .file("o/b", b"o/b\n")
        .file("f2d", b"file over a lower dir\n")
        .file("d2f/a", b"dir over a lower file\n")
        .file(
            "m/.wh..wh..opq",
            b"OCI opaque marker: a plain file for the kernel\n",
        )
        .file(
            "m/.wh.j",
            b"OCI whiteout of j: a plain file for the kernel\n",
        )
        .file("m/k", b"m/k\n");
    if ids {
        l0.chown("a", 1000, 1000);
    }

    for (i, l) in [&l0, &l1, &l2].iter().enumerate() {
        set_times(&l.root, Path::new(""), i as u64);
    }
}

fn fnv(data: &[u8], salt: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ salt;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Gives every entry a fixed old atime/mtime (children before their dir).
fn set_times(root: &Path, rel: &Path, layer: u64) {
    let full = root.join(rel);
    let md = fs::symlink_metadata(&full).expect("lstat fixture");
    if md.is_dir() {
        let mut names: Vec<_> = fs::read_dir(&full)
            .expect("readdir fixture")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        for n in names {
            set_times(root, &rel.join(n), layer);
        }
    }
    let h = fnv(rel.as_os_str().as_encoded_bytes(), layer);
    let mtime = Ts(
        978_307_200 + (h % 31_536_000) as i64,
        ((h >> 32) % 1_000_000_000) as i64,
    );
    let atime = Ts(mtime.0 + 17, 0);
    sys::utimensat(&full, atime, mtime, true).expect("utimensat fixture");
}

/// One line per layer describing what `rel` is there.
pub fn describe(root: &Path, rel: &str) -> String {
    let mut out = String::new();
    for i in 0..3 {
        let p = root.join(format!("lower{i}")).join(rel);
        let _ = write!(out, " L{i}: {};", describe_one(&p));
    }
    out
}

fn describe_one(p: &Path) -> String {
    let Ok(md) = fs::symlink_metadata(p) else {
        return "-".into();
    };
    let ft = md.file_type();
    let mut s = if ft.is_char_device() && md.rdev() == 0 {
        "whiteout(c 0/0)".to_string()
    } else if ft.is_dir() {
        format!("dir {:04o} {}:{}", md.mode() & 0o7777, md.uid(), md.gid())
    } else if ft.is_symlink() {
        format!(
            "symlink -> {}",
            short(&fs::read_link(p).unwrap_or_default().to_string_lossy())
        )
    } else {
        format!(
            "{} {:04o} {}:{} size={} nlink={}",
            super::ops::kind_of(ft),
            md.mode() & 0o7777,
            md.uid(),
            md.gid(),
            md.size(),
            md.nlink()
        )
    };
    if let Ok(names) = sys::llistxattr(p) {
        for n in names {
            let v = sys::lgetxattr(p, &n).unwrap_or_default();
            let shown = if v.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
                format!("{:?}", String::from_utf8_lossy(&v))
            } else {
                format!("<{} bytes>", v.len())
            };
            let _ = write!(s, " {n}={shown}");
        }
    }
    s
}

/// A human-readable listing of the whole fixture (for reports).
pub fn listing(root: &Path) -> String {
    let mut out = String::new();
    for i in 0..3 {
        let lr = root.join(format!("lower{i}"));
        let _ = writeln!(out, "lower{i}{}:", if i == 0 { " (top)" } else { "" });
        let mut paths = Vec::new();
        collect(&lr, Path::new(""), &mut paths);
        for rel in paths {
            let _ = writeln!(out, "  /{}  {}", short(&rel), describe_one(&lr.join(&rel)));
        }
    }
    out
}

fn collect(root: &Path, rel: &Path, out: &mut Vec<String>) {
    let full = root.join(rel);
    let Ok(rd) = fs::read_dir(&full) else { return };
    let mut names: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
    names.sort();
    for n in names {
        let r = rel.join(&n);
        out.push(r.to_string_lossy().into_owned());
        if fs::symlink_metadata(root.join(&r)).is_ok_and(|m| m.is_dir()) {
            collect(root, &r, out);
        }
    }
}
