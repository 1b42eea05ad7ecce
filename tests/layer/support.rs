//! What the layer tests share: export to bytes, sha256sum, Python's tarfile
//! view of a tarball, tree views, and the lowers and changes of the round
//! trip.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use unionfs::oci::{self as layer, ExportOptions};

use crate::common::*;

pub(crate) fn export_bytes(upper: &Path, opts: &ExportOptions) -> (Vec<u8>, layer::LayerDigests) {
    let mut out = Vec::new();
    let d = layer::export(upper, &mut out, opts)
        .unwrap_or_else(|e| panic!("export {}: {e}", upper.display()));
    assert_eq!(d.size, out.len() as u64);
    (out, d)
}

pub(crate) fn sha256sum(p: &Path) -> String {
    let out = run_ok(Command::new("sha256sum").arg(p));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// One member as Python's tarfile sees it.
#[derive(Debug)]
pub(crate) struct PyMember {
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) size: u64,
    pub(crate) link: String,
    pub(crate) dev: (u32, u32),
    pub(crate) pax: Vec<(String, String)>,
}

impl PyMember {
    /// The `SCHILY.xattr.*` records.
    pub(crate) fn xattrs(&self) -> Vec<(String, String)> {
        self.pax
            .iter()
            .filter(|(k, _)| k.starts_with("SCHILY.xattr."))
            .cloned()
            .collect()
    }

    pub(crate) fn pax(&self, key: &str) -> Option<&str> {
        self.pax
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) const PY_LIST: &str = r#"
import sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    for m in t.getmembers():
        pax = ";".join(k + "=" + v.replace(";", ",") for k, v in sorted(m.pax_headers.items()))
        print("|".join([m.name, m.type.decode(), "%o" % m.mode, str(m.uid), str(m.gid),
                        str(m.size), m.linkname, str(m.devmajor), str(m.devminor), pax]))
"#;

pub(crate) fn python_members(tar: &Path) -> Vec<PyMember> {
    let out = run_ok(Command::new("python3").args(["-c", PY_LIST]).arg(tar));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(10, '|').collect();
            assert_eq!(f.len(), 10, "python line {l:?}");
            PyMember {
                name: f[0].to_string(),
                kind: f[1].to_string(),
                mode: u32::from_str_radix(f[2], 8).expect("mode"),
                uid: f[3].parse().expect("uid"),
                gid: f[4].parse().expect("gid"),
                size: f[5].parse().expect("size"),
                link: f[6].to_string(),
                dev: (f[7].parse().expect("major"), f[8].parse().expect("minor")),
                pax: f[9]
                    .split(';')
                    .filter(|s| !s.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                        (k.to_string(), v.to_string())
                    })
                    .collect(),
            }
        })
        .collect()
}

pub(crate) fn member<'a>(ms: &'a [PyMember], name: &str) -> &'a PyMember {
    ms.iter().find(|m| m.name == name).unwrap_or_else(|| {
        panic!(
            "no member {name} in {:#?}",
            ms.iter().map(|m| &m.name).collect::<Vec<_>>()
        )
    })
}

/// A snapshot for comparing merged views: everything but the root entry,
/// whose attributes come from each mount's own (fresh) upper.
pub(crate) fn view(root: &Path) -> Tree {
    let mut t = snapshot(root, SnapOpts::with_times());
    t.0.remove(Path::new(""));
    t
}

pub(crate) fn ino(p: &Path) -> u64 {
    lstat(p).ino()
}

/// Tests that build layers with trusted.* xattrs, owners and whiteouts
/// need root (no mount): false (after saying why) when not root.
pub(crate) fn needs_root() -> bool {
    environment_ok(Impl::Kernel)
}

/// A v2 `security.capability` value: cap_net_bind_service, effective.
pub(crate) const CAP_NET_BIND: [u8; 20] =
    [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

pub(crate) fn capability(p: &Path) -> Vec<u8> {
    sys::lgetxattr(p, "security.capability")
        .unwrap_or_else(|e| panic!("security.capability of {}: {e}", p.display()))
}

/// Lowers with enough variety for every kind of change.
pub(crate) fn build_lowers(fx: &Fixture) {
    let l1 = fx.lower(1);
    l1.file("etc/passwd", b"root:x:0:0\n")
        .file("etc/group", b"root:x:0:\n")
        .file_mode("usr/bin/tool", b"#!/bin/sh\n", 0o755)
        .file("data/old/a", b"a")
        .file("data/old/b", b"b")
        .file("data/keep", b"keep")
        .file("rmdir_me/x/y", b"y")
        .file("rmdir_me/z", b"z")
        .file("replace_dir/inner", b"inner")
        .file("replace_file", b"was a file")
        .symlink("sym", "etc/passwd")
        .file("hl/a", b"linked")
        .hardlink("hl/a", "hl/b")
        .xattr("etc/passwd", "user.origin_note", b"lower");
    let l0 = fx.lower(0);
    l0.file("etc/hosts", b"127.0.0.1 localhost\n")
        .file("data/top", b"top")
        .file("data/old/c", b"c");
}

/// The changes a container would make, through the merged view.
pub(crate) fn change_everything(m: &Mounted) {
    let p = |r: &str| m.p(r);
    // New files, owners, modes, a hard link, a fifo, a device, xattrs.
    fs::create_dir_all(p("new/sub")).expect("mkdir new/sub");
    write(&p("new/file"), b"new content\n");
    std::os::unix::fs::lchown(p("new/file"), Some(1234), Some(5678)).expect("chown");
    fs::set_permissions(p("new/file"), fs::Permissions::from_mode(0o640)).expect("chmod");
    fs::hard_link(p("new/file"), p("new/link")).expect("link");
    sys::mknod(&p("new/fifo"), libc::S_IFIFO | 0o620, 0, 0).expect("mkfifo");
    sys::mknod(&p("new/null"), libc::S_IFCHR | 0o666, 1, 3).expect("mknod");
    fs::set_permissions(p("new/fifo"), fs::Permissions::from_mode(0o620)).expect("chmod fifo");
    fs::set_permissions(p("new/null"), fs::Permissions::from_mode(0o666)).expect("chmod null");
    sys::lsetxattr(&p("new/file"), "user.test", b"hello", 0).expect("user xattr");
    sys::lsetxattr(&p("new/file"), "trusted.note", b"t", 0).expect("trusted xattr");
    // A user's own trusted.overlay.* xattr: stored escaped in the upper.
    sys::lsetxattr(&p("new/sub"), "trusted.overlay.mine", b"m", 0).expect("overlay xattr");
    symlink("../etc/hosts", p("new/sub/hosts")).expect("symlink");
    let long = "l".repeat(120);
    write(&p(&format!("new/sub/{long}")), b"long name");
    symlink("x".repeat(150), p("new/longtarget")).expect("long symlink");
    // setuid/setgid binary, chmod after chown (chown clears setuid).
    write(&p("usr/bin/suid"), b"#!/bin/sh\n");
    std::os::unix::fs::lchown(p("usr/bin/suid"), Some(0), Some(50)).expect("chown suid");
    fs::set_permissions(p("usr/bin/suid"), fs::Permissions::from_mode(0o6755)).expect("chmod suid");
    // A file capability (set last: chown would clear it).
    write(&p("usr/bin/capped"), b"cap");
    sys::lsetxattr(
        &p("usr/bin/capped"),
        "security.capability",
        &CAP_NET_BIND,
        0,
    )
    .expect("set security.capability");
    // Modify (copy-up), with a nanosecond mtime.
    append(&p("etc/passwd"), b"user:x:1000:1000\n");
    sys::utimensat(
        &p("etc/passwd"),
        Ts(1_600_000_000, 5),
        Ts(1_600_000_000, 123_456_789),
        true,
    )
    .expect("utimens");
    // Delete lower files (whiteouts), in both lowers.
    fs::remove_file(p("etc/group")).expect("rm group");
    fs::remove_file(p("data/old/a")).expect("rm a");
    fs::remove_file(p("data/top")).expect("rm top");
    // rm -r of a lower dir, then mkdir of the same name: opaque.
    fs::remove_dir_all(p("rmdir_me")).expect("rm -r");
    fs::create_dir(p("rmdir_me")).expect("mkdir again");
    write(&p("rmdir_me/fresh"), b"fresh");
    // Dir replaced by a file, file replaced by a dir.
    fs::remove_dir_all(p("replace_dir")).expect("rm -r replace_dir");
    write(&p("replace_dir"), b"now a file");
    fs::remove_file(p("replace_file")).expect("rm replace_file");
    fs::create_dir(p("replace_file")).expect("mkdir replace_file");
    write(&p("replace_file/child"), b"child");
    // Symlink retargeted, file renamed, dir attributes changed.
    fs::remove_file(p("sym")).expect("rm sym");
    symlink("usr/bin/tool", p("sym")).expect("new sym");
    fs::rename(p("data/keep"), p("data/kept")).expect("rename");
    std::os::unix::fs::lchown(p("data"), Some(7), Some(8)).expect("chown data");
    fs::set_permissions(p("data"), fs::Permissions::from_mode(0o2750)).expect("chmod data");
    sys::utimensat(
        &p("data/old"),
        Ts(1_500_000_000, 0),
        Ts(1_500_000_000, 999),
        true,
    )
    .expect("utimens dir");
}
