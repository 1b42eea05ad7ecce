//! OCI layers (`unionfs::oci`): an upper written through the union is
//! exported as a layer tar, and the tar, used as a new lower on top of the
//! old lowers, shows exactly what the union showed, both when unpacked by
//! us (kernel format: char 0/0 whiteouts, opaque xattrs) and when extracted
//! by GNU tar (OCI format: `.wh.` files). GNU tar and Python's tarfile read
//! the tarball; exports are reproducible; hostile tarballs are refused
//! without writing outside the target.

mod common;

use common::*;
use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use unionfs::oci::{
    self as layer, Compression, ExportOptions, LayerError, MtimePolicy, UnpackOptions,
};

fn export_bytes(upper: &Path, opts: &ExportOptions) -> (Vec<u8>, layer::LayerDigests) {
    let mut out = Vec::new();
    let d = layer::export(upper, &mut out, opts)
        .unwrap_or_else(|e| panic!("export {}: {e}", upper.display()));
    assert_eq!(d.size, out.len() as u64);
    (out, d)
}

fn sha256sum(p: &Path) -> String {
    let out = run_ok(Command::new("sha256sum").arg(p));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// One member as Python's tarfile sees it.
#[derive(Debug)]
struct PyMember {
    name: String,
    kind: String,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    link: String,
    dev: (u32, u32),
    pax: Vec<(String, String)>,
}

impl PyMember {
    /// The `SCHILY.xattr.*` records.
    fn xattrs(&self) -> Vec<(String, String)> {
        self.pax
            .iter()
            .filter(|(k, _)| k.starts_with("SCHILY.xattr."))
            .cloned()
            .collect()
    }

    fn pax(&self, key: &str) -> Option<&str> {
        self.pax
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

const PY_LIST: &str = r#"
import sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    for m in t.getmembers():
        pax = ";".join(k + "=" + v.replace(";", ",") for k, v in sorted(m.pax_headers.items()))
        print("|".join([m.name, m.type.decode(), "%o" % m.mode, str(m.uid), str(m.gid),
                        str(m.size), m.linkname, str(m.devmajor), str(m.devminor), pax]))
"#;

fn python_members(tar: &Path) -> Vec<PyMember> {
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

fn member<'a>(ms: &'a [PyMember], name: &str) -> &'a PyMember {
    ms.iter().find(|m| m.name == name).unwrap_or_else(|| {
        panic!(
            "no member {name} in {:#?}",
            ms.iter().map(|m| &m.name).collect::<Vec<_>>()
        )
    })
}

/// A snapshot for comparing merged views: everything but the root entry,
/// whose attributes come from each mount's own (fresh) upper.
fn view(root: &Path) -> Tree {
    let mut t = snapshot(root, SnapOpts::with_times());
    t.0.remove(Path::new(""));
    t
}

fn ino(p: &Path) -> u64 {
    lstat(p).ino()
}

/// Tests that build layers with trusted.* xattrs, owners and whiteouts
/// need root (no mount): false (after saying why) when not root.
fn needs_root() -> bool {
    environment_ok(Impl::Kernel)
}

/// A v2 `security.capability` value: cap_net_bind_service, effective.
const CAP_NET_BIND: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn capability(p: &Path) -> Vec<u8> {
    sys::lgetxattr(p, "security.capability")
        .unwrap_or_else(|e| panic!("security.capability of {}: {e}", p.display()))
}

/// Lowers with enough variety for every kind of change.
fn build_lowers(fx: &Fixture) {
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
fn change_everything(m: &Mounted) {
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

#[test]
fn round_trip_through_export_unpack_and_tar_x() {
    let Some(fx) = Fixture::new() else { return };
    build_lowers(&fx);
    let mut m = fx.mount();
    change_everything(&m);
    let before = view(&m.p(""));
    eprintln!("merged view at the end of the session:\n{before}");
    for gone in [
        "etc/group",
        "data/old/a",
        "data/top",
        "data/keep",
        "rmdir_me/x",
    ] {
        assert!(
            !before.0.contains_key(Path::new(gone)),
            "{gone} still visible"
        );
    }
    for kept in [
        "etc/hosts",
        "data/old/b",
        "data/old/c",
        "hl/b",
        "usr/bin/tool",
    ] {
        assert!(before.0.contains_key(Path::new(kept)), "{kept} missing");
    }
    assert_eq!(ls(&m.p("rmdir_me")), ["fresh"]);
    assert_eq!(ino(&m.p("new/file")), ino(&m.p("new/link")));
    assert_eq!(capability(&m.p("usr/bin/capped")), CAP_NET_BIND);
    m.unmount();
    drop(m);
    let upper = fx.upper().root;

    // Export, twice: same bytes, and the diff_id is the file's sha256.
    let tar = fx.root().join("layer.tar");
    let d = layer::export_file(&upper, &tar, &ExportOptions::default()).expect("export");
    let (again, d2) = export_bytes(&upper, &ExportOptions::default());
    assert_eq!(fs::read(&tar).expect("read tar"), again, "exports differ");
    assert_eq!(d, d2);
    assert_eq!(d.diff_id, d.digest);
    assert_eq!(
        format!("{}", d.diff_id),
        format!("sha256:{}", sha256sum(&tar))
    );

    // GNU tar reads it.
    let listing = run_ok(Command::new("tar").arg("tvf").arg(&tar));
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    let line = |name: &str| -> String {
        listing
            .lines()
            .find(|l| l.ends_with(name) || l.contains(&format!(" {name} ")))
            .unwrap_or_else(|| panic!("tar tvf lacks {name}:\n{listing}"))
            .to_string()
    };
    assert!(
        line("usr/bin/suid").starts_with("-rwsr-sr-x 0/50"),
        "{listing}"
    );
    assert!(
        line("new/link link to new/file").starts_with("hrw-r----- 1234/5678"),
        "{listing}"
    );
    assert!(line("new/fifo").starts_with("prw--w----"), "{listing}");
    assert!(line("new/null").starts_with("crw-rw-rw-") && line("new/null").contains("1,3"));
    assert!(line("sym -> usr/bin/tool").starts_with("lrwxrwxrwx"));
    line("etc/.wh.group");
    line("data/old/.wh.a");
    line("data/.wh.top");
    line("data/.wh.keep");
    line("rmdir_me/.wh..wh..opq");
    line(&format!("new/sub/{}", "l".repeat(120)));
    assert!(
        !listing.contains("rmdir_me/.wh.x"),
        "whiteouts inside an opaque dir:\n{listing}"
    );

    // Python's tarfile reads it, with PAX records where needed.
    let ms = python_members(&tar);
    let f = member(&ms, "new/file");
    assert_eq!(
        (f.kind.as_str(), f.mode, f.uid, f.gid, f.size),
        ("0", 0o640, 1234, 5678, 12)
    );
    assert_eq!(f.pax("SCHILY.xattr.user.test"), Some("hello"));
    assert_eq!(f.pax("SCHILY.xattr.trusted.note"), Some("t"));
    assert_eq!(
        member(&ms, "new/sub").pax("SCHILY.xattr.trusted.overlay.mine"),
        Some("m")
    );
    let link = member(&ms, "new/link");
    assert_eq!((link.kind.as_str(), link.link.as_str()), ("1", "new/file"));
    assert_eq!(member(&ms, "new/fifo").kind, "6");
    let null = member(&ms, "new/null");
    assert_eq!((null.kind.as_str(), null.dev), ("3", (1, 3)));
    assert_eq!(member(&ms, "usr/bin/suid").mode, 0o6755);
    let cap = member(&ms, "usr/bin/capped").pax("SCHILY.xattr.security.capability");
    assert!(cap.is_some(), "file capability not exported");
    assert_eq!(
        member(&ms, "etc/passwd").pax("mtime"),
        Some("1600000000.123456789")
    );
    assert_eq!(member(&ms, "data").mode, 0o2750);
    assert_eq!(member(&ms, "rmdir_me/.wh..wh..opq").kind, "0");
    assert_eq!(member(&ms, "new/longtarget").link, "x".repeat(150));
    assert!(member(&ms, &format!("new/sub/{}", "l".repeat(120)))
        .pax("path")
        .is_some());
    for m in &ms {
        for (k, _) in &m.pax {
            let private = [
                "opaque", "origin", "impure", "redirect", "whiteout", "nlink", "metacopy",
            ]
            .iter()
            .any(|p| k.ends_with(&format!(".overlay.{p}")));
            assert!(!private, "{}: private xattr {k} exported", m.name);
        }
    }
    // Entries are sorted: dirs before their contents, names in byte order.
    let names: Vec<&str> = ms.iter().map(|m| m.name.as_str()).collect();
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap_or(usize::MAX);
    assert!(pos("data") < pos("data/.wh.keep") && pos("data/.wh.keep") < pos("data/kept"));
    assert!(pos("etc") < pos("etc/.wh.group") && pos("etc/.wh.group") < pos("etc/passwd"));

    // (a) Unpacked by us as a kernel-format lower on top of the old lowers.
    let kdir = fx.dir("layer-kernel");
    let r = layer::unpack_file(&tar, &kdir, &UnpackOptions::default()).expect("unpack");
    assert_eq!(r.diff_id, d.diff_id);
    assert!(!r.compressed);
    assert_whiteout(&kdir.join("etc/group"));
    assert!(is_opaque(&kdir.join("rmdir_me")));
    assert_no_wh_markers(&kdir);
    assert_eq!(
        sys::lgetxattr(&kdir.join("new/sub"), "trusted.overlay.overlay.mine").expect("escaped"),
        b"m"
    );
    assert_eq!(ino(&kdir.join("new/file")), ino(&kdir.join("new/link")));
    let mut lowers = vec![kdir.clone()];
    lowers.extend(fx.lowers());
    let merged_k = fx.dir("merged-k");
    let mk = Mounted::mount(
        Impl::Ours,
        &lowers,
        Some(&fx.dir("upper-k")),
        Some(&fx.dir("work-k")),
        &merged_k,
    );
    assert_eq!(capability(&merged_k.join("usr/bin/capped")), CAP_NET_BIND);
    assert_same(
        &before,
        &view(&merged_k),
        "union before export vs kernel-format layer",
    );
    assert_eq!(
        ino(&merged_k.join("new/file")),
        ino(&merged_k.join("new/link"))
    );
    assert_eq!(
        sys::lgetxattr(&merged_k.join("new/sub"), "trusted.overlay.mine").expect("unescaped"),
        b"m"
    );
    drop(mk);
    // Kernel overlayfs reads the same lowers the same way.
    let merged_kk = fx.dir("merged-kk");
    let kk = Mounted::mount(Impl::Kernel, &lowers, None, None, &merged_kk);
    assert_eq!(capability(&merged_kk.join("usr/bin/capped")), CAP_NET_BIND);
    assert_same(
        &before,
        &view(&merged_kk),
        "union before export vs kernel overlayfs",
    );
    drop(kk);

    // (b) Extracted by GNU tar as an OCI-format lower (.wh. files).
    let odir = fx.dir("layer-oci");
    run_ok(
        Command::new("tar")
            .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
            .arg(&tar)
            .arg("-C")
            .arg(&odir),
    );
    assert!(lstat(&odir.join("etc/.wh.group")).is_file());
    let mut lowers = vec![odir.clone()];
    lowers.extend(fx.lowers());
    let merged_o = fx.dir("merged-o");
    let mo = Mounted::mount(
        Impl::Ours,
        &lowers,
        Some(&fx.dir("upper-o")),
        Some(&fx.dir("work-o")),
        &merged_o,
    );
    assert_eq!(capability(&merged_o.join("usr/bin/capped")), CAP_NET_BIND);
    assert_same(
        &before,
        &view(&merged_o),
        "union before export vs OCI-format layer",
    );
    assert_eq!(
        ino(&merged_o.join("new/file")),
        ino(&merged_o.join("new/link"))
    );
    drop(mo);
}

#[test]
fn export_is_reproducible_and_gzip_and_zstd_match_their_tools() {
    if !needs_root() {
        return;
    }
    let tmp = TempDir::new("layer-repro");
    let up = Layer::new(tmp.path().join("upper"));
    up.file("a/b", b"hello")
        .file_mode("a/x", &vec![b'z'; 300_000], 0o600)
        .whiteout("gone")
        .opaque("o")
        .file("o/in", b"in")
        .symlink("s", "a/b")
        .times("a/b", Ts(1_000, 0), Ts(2_000_000_000, 77));
    let fixed = ExportOptions {
        mtime: MtimePolicy::Fixed(1_700_000_000),
        ..ExportOptions::default()
    };
    let (t1, d1) = export_bytes(&up.root, &fixed);
    // Touching the tree does not change a fixed-mtime export.
    up.times("a/x", Ts(5, 0), Ts(6, 0));
    up.times("o", Ts(5, 0), Ts(6, 0));
    let (t2, d2) = export_bytes(&up.root, &fixed);
    assert_eq!(t1, t2, "fixed-mtime exports differ");
    assert_eq!(d1.diff_id, d2.diff_id);

    // Clamp: later mtimes become the epoch, earlier ones stay.
    let clamp = ExportOptions {
        mtime: MtimePolicy::Clamp(1_000_000_000),
        ..ExportOptions::default()
    };
    let (tc, _) = export_bytes(&up.root, &clamp);
    let file = tmp.path().join("clamp.tar");
    fs::write(&file, &tc).expect("write");
    let ms = python_members(&file);
    assert_eq!(member(&ms, "a/b").pax("mtime"), None);
    let list = run_ok(Command::new("tar").args(["--full-time", "-tvf"]).arg(&file));
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(
        list.lines()
            .any(|l| l.contains("2001-09-09") && l.ends_with(" a/b")),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.contains("1970-01-01") && l.ends_with(" a/x")),
        "{list}"
    );

    // gzip: deterministic, readable by gzip(1), same diff_id.
    let gz = ExportOptions {
        compression: Compression::Gzip,
        ..fixed.clone()
    };
    let (z1, zd1) = export_bytes(&up.root, &gz);
    let (z2, zd2) = export_bytes(&up.root, &gz);
    assert_eq!(z1, z2, "gzip exports differ");
    assert_eq!(zd1, zd2);
    assert_eq!(zd1.compression, Compression::Gzip);
    assert_eq!(
        zd1.diff_id, d1.diff_id,
        "diff_id must be the uncompressed digest"
    );
    assert_ne!(zd1.digest, zd1.diff_id);
    assert!(
        z1.len() < t1.len() / 4,
        "gzip did not compress: {} vs {}",
        z1.len(),
        t1.len()
    );
    let zfile = tmp.path().join("layer.tar.gz");
    fs::write(&zfile, &z1).expect("write gz");
    assert_eq!(
        format!("{}", zd1.digest),
        format!("sha256:{}", sha256sum(&zfile))
    );
    let plain = run_ok(Command::new("gzip").arg("-dc").arg(&zfile));
    assert_eq!(plain.stdout, t1, "gzip -dc differs from the plain export");
    run_ok(Command::new("gzip").arg("-t").arg(&zfile));
    run_ok(Command::new("tar").arg("tzf").arg(&zfile));

    // Unpacking detects gzip by magic; a tar gzipped by gzip(1) works too.
    let r = layer::check(&mut &z1[..]).expect("check gz");
    assert!(r.compressed);
    assert_eq!((r.diff_id, r.digest), (zd1.diff_id, zd1.digest));
    let tfile = tmp.path().join("plain.tar");
    fs::write(&tfile, &t1).expect("write tar");
    let gz9 = run_ok(Command::new("gzip").args(["-9", "-n", "-c"]).arg(&tfile));
    let target = tmp.path().join("from-gzip9");
    fs::create_dir(&target).expect("mkdir");
    let r = layer::unpack(&mut &gz9.stdout[..], &target, &UnpackOptions::default())
        .expect("unpack gzip -9");
    assert_eq!(r.diff_id, d1.diff_id);
    assert_eq!(read(&target.join("o/in")), "in");
    assert_whiteout(&target.join("gone"));
    assert!(is_opaque(&target.join("o")));
    assert_eq!(
        fs::read(target.join("a/x")).expect("read"),
        vec![b'z'; 300_000]
    );

    // zstd: deterministic, readable by zstd(1), same diff_id; and a tar
    // compressed by zstd(1) unpacks.
    let zs = ExportOptions {
        compression: Compression::Zstd,
        ..fixed.clone()
    };
    let (s1, sd1) = export_bytes(&up.root, &zs);
    assert_eq!(s1, export_bytes(&up.root, &zs).0, "zstd exports differ");
    assert_eq!(sd1.diff_id, d1.diff_id);
    assert_eq!(sd1.compression, Compression::Zstd);
    let sfile = tmp.path().join("layer.tar.zst");
    fs::write(&sfile, &s1).expect("write zst");
    let plain = run_ok(Command::new("zstd").args(["-dc", "-q"]).arg(&sfile));
    assert_eq!(plain.stdout, t1, "zstd -dc differs from the plain export");
    let z19 = run_ok(Command::new("zstd").args(["-19", "-q", "-c"]).arg(&tfile));
    let target = tmp.path().join("from-zstd19");
    fs::create_dir(&target).expect("mkdir");
    let r = layer::unpack(&mut &z19.stdout[..], &target, &UnpackOptions::default())
        .expect("unpack zstd -19");
    assert_eq!((r.diff_id, r.compression), (d1.diff_id, Compression::Zstd));
    assert_whiteout(&target.join("gone"));

    // Other compressions are refused clearly.
    let xz = [0xfdu8, b'7', b'z', b'X', b'Z', 0, 0, 0];
    match layer::check(&mut &xz[..]) {
        Err(LayerError::Unsupported(m)) => assert!(m.contains("xz"), "{m}"),
        other => panic!("xz input: {other:?}"),
    }
}

#[test]
fn upper_format_details_and_userxattr() {
    if !needs_root() {
        return;
    }
    let tmp = TempDir::new("layer-format");
    let up = Layer::new(tmp.path().join("upper"));
    up.file("d/kept", b"k")
        .xattr_whiteout("x/gone")
        .file("x/here", b"h")
        .xattr("d/kept", "trusted.overlay.origin", b"\0\xfbjunk")
        .xattr("d", "trusted.overlay.impure", b"y")
        .xattr("d/kept", "trusted.overlay.overlay.opaque", b"user value")
        .whiteout("d/w");
    let (t, _) = export_bytes(&up.root, &ExportOptions::default());
    let file = tmp.path().join("l.tar");
    fs::write(&file, &t).expect("write");
    let ms = python_members(&file);
    let names: Vec<&str> = ms.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        ["d", "d/.wh.w", "d/kept", "x", "x/.wh.gone", "x/here"]
    );
    assert!(
        member(&ms, "d").xattrs().is_empty(),
        "{:?}",
        member(&ms, "d").pax
    );
    assert_eq!(
        member(&ms, "d/kept").xattrs(),
        [(
            "SCHILY.xattr.trusted.overlay.opaque".to_string(),
            "user value".to_string()
        )]
    );
    assert!(member(&ms, "x").xattrs().is_empty());
    assert_eq!(member(&ms, "x/.wh.gone").mode, 0o600);

    // userxattr: the user.overlay.* namespace is private instead.
    let uup = Layer::new(tmp.path().join("uupper"));
    uup.dir("o")
        .xattr("o", "user.overlay.opaque", b"y")
        .file("o/f", b"f")
        .xattr("o/f", "user.overlay.origin", b"o")
        .xattr("o/f", "user.keep", b"1");
    let uopts = ExportOptions {
        userxattr: true,
        ..ExportOptions::default()
    };
    let (ut, _) = export_bytes(&uup.root, &uopts);
    let target = tmp.path().join("unpacked-user");
    fs::create_dir(&target).expect("mkdir");
    let uo = UnpackOptions {
        userxattr: true,
        ..UnpackOptions::default()
    };
    let r = layer::unpack(&mut &ut[..], &target, &uo).expect("unpack");
    assert_eq!(r.opaque_dirs, 1);
    assert_eq!(
        sys::lgetxattr(&target.join("o"), "user.overlay.opaque").expect("opaque"),
        b"y"
    );
    assert!(opaque_value(&target.join("o")).is_none());
    assert_eq!(
        sys::llistxattr(&target.join("o/f")).expect("list"),
        ["user.keep"]
    );

    // An upper of the other mode is refused, not exported with its
    // bookkeeping (host file handles) as if it were user data.
    let e = layer::export(&uup.root, &mut Vec::new(), &ExportOptions::default());
    assert!(
        matches!(&e, Err(LayerError::Unsupported(m)) if m.contains("--userxattr")),
        "{e:?}"
    );

    // What a layer cannot carry is refused with a reason.
    let bad = Layer::new(tmp.path().join("bad1"));
    bad.dir("moved")
        .xattr("moved", "trusted.overlay.redirect", b"/old");
    let e = layer::export(&bad.root, &mut Vec::new(), &ExportOptions::default());
    assert!(
        matches!(&e, Err(LayerError::Unsupported(m)) if m.contains("redirect")),
        "{e:?}"
    );
    let bad = Layer::new(tmp.path().join("bad2"));
    bad.file(".wh.literal", b"");
    let e = layer::export(&bad.root, &mut Vec::new(), &ExportOptions::default());
    assert!(
        matches!(&e, Err(LayerError::Unsupported(m)) if m.contains(".wh.")),
        "{e:?}"
    );

    // Excludes drop a path and its subtree.
    let ex = ExportOptions {
        exclude: vec![PathBuf::from("/x/"), PathBuf::from("d/w")],
        ..ExportOptions::default()
    };
    let (et, _) = export_bytes(&up.root, &ex);
    fs::write(&file, &et).expect("write");
    let names: Vec<String> = python_members(&file).into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["d", "d/kept"]);
}

/// Builds a tarball with Python's tarfile: `spec` lines `reg NAME DATA`,
/// `dir NAME`, `sym NAME TARGET`, `lnk NAME TARGET`.
fn python_tar(out: &Path, spec: &[&str]) {
    const PY: &str = r#"
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT) as t:
    for line in sys.argv[2:]:
        kind, name, arg = (line.split(" ", 2) + [""])[:3]
        ti = tarfile.TarInfo(name)
        ti.mode = 0o644
        data = None
        if kind == "reg":
            data = arg.encode()
            ti.size = len(data)
        elif kind == "dir":
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
        elif kind == "sym":
            ti.type, ti.linkname = tarfile.SYMTYPE, arg
        elif kind == "lnk":
            ti.type, ti.linkname = tarfile.LNKTYPE, arg
        t.addfile(ti, io.BytesIO(data) if data is not None else None)
"#;
    run_ok(Command::new("python3").args(["-c", PY]).arg(out).args(spec));
}

/// Everything below `root` (paths relative to it), for before/after checks.
fn listing(root: &Path) -> Vec<String> {
    snapshot(root, SnapOpts::with_times())
        .0
        .iter()
        .map(|(p, n)| format!("{} {n}", p.display()))
        .collect()
}

#[test]
fn hostile_tarballs_are_refused_without_writing_outside() {
    let tmp = TempDir::new("layer-hostile");
    let canary = tmp.path().join("canary");
    fs::create_dir(&canary).expect("mkdir canary");
    fs::write(canary.join("secret"), b"secret").expect("write canary");
    let c = canary.display().to_string();
    let c_rel = c.trim_start_matches('/').to_string();
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("absolute", vec![format!("reg {c}/evil x")]),
        ("dotdot", vec!["reg ../canary/evil x".into()]),
        ("dotdot-inner", vec!["reg a/../../canary/evil x".into()]),
        (
            "symlink-root",
            vec!["sym a /".into(), format!("reg a/{c_rel}/evil x")],
        ),
        (
            "symlink-canary",
            vec![format!("sym b {c}"), "reg b/evil x".into()],
        ),
        (
            "symlink-rel",
            vec!["sym b ../canary".into(), "dir b/sub".into()],
        ),
        ("hardlink-dotdot", vec!["lnk h ../canary/secret".into()]),
        ("hardlink-abs", vec![format!("lnk h {c}/secret")]),
        (
            "hardlink-via-symlink",
            vec![format!("sym s {c}"), "lnk h s/secret".into()],
        ),
        (
            "linked-symlink",
            vec![
                format!("sym s {c}"),
                "lnk h s".into(),
                "reg h/evil x".into(),
            ],
        ),
        (
            "whiteout-dotdot",
            vec!["dir a".into(), "reg a/.wh... x".into()],
        ),
    ];
    let before = listing(&canary);
    for (name, mut spec) in cases {
        spec.insert(0, "reg first ok".into());
        let tar = tmp.path().join(format!("{name}.tar"));
        let spec_refs: Vec<&str> = spec.iter().map(String::as_str).collect();
        python_tar(&tar, &spec_refs);
        let bytes = fs::read(&tar).expect("read tar");

        let e = layer::check(&mut &bytes[..]);
        assert!(
            matches!(e, Err(LayerError::Unsafe { .. })),
            "{name}: check gave {e:?}"
        );
        // Streaming unpack stops at the bad member.
        let target = tmp.path().join(format!("t-{name}"));
        fs::create_dir(&target).expect("mkdir target");
        let e = layer::unpack(&mut &bytes[..], &target, &UnpackOptions::default());
        match &e {
            Err(err @ LayerError::Unsafe { .. }) => eprintln!("{name}: {err}"),
            other => panic!("{name}: unpack gave {other:?}"),
        }
        // unpack_file refuses before writing anything at all.
        let target2 = tmp.path().join(format!("t2-{name}"));
        let e = layer::unpack_file(&tar, &target2, &UnpackOptions::default());
        assert!(matches!(e, Err(LayerError::Unsafe { .. })), "{name}: {e:?}");
        assert!(
            !target2.exists(),
            "{name}: unpack_file wrote before refusing"
        );
        assert_eq!(listing(&canary), before, "{name}: canary dir changed");
        assert_eq!(
            lstat(&canary.join("secret")).nlink(),
            1,
            "{name}: canary linked"
        );
    }
    // Nothing named `evil` anywhere in the temp dir.
    let all = snapshot(tmp.path(), SnapOpts::basic()).paths();
    assert!(!all.iter().any(|p| p.ends_with("evil")), "{all:?}");

    // A symlink already in the target is not followed either (the fd walk,
    // not the archive model, stops this one).
    let target = tmp.path().join("t-preexisting");
    fs::create_dir(&target).expect("mkdir");
    symlink(&canary, target.join("pre")).expect("symlink");
    let tar = tmp.path().join("pre.tar");
    python_tar(&tar, &["reg pre/evil x"]);
    let bytes = fs::read(&tar).expect("read");
    assert!(layer::check(&mut &bytes[..]).is_ok());
    let e = layer::unpack(&mut &bytes[..], &target, &UnpackOptions::default());
    assert!(matches!(e, Err(LayerError::Unsafe { .. })), "{e:?}");
    assert_eq!(listing(&canary), before);

    // Members may replace an earlier symlink with a dir, and symlinks may
    // point anywhere as long as nothing goes through them.
    let ok = tmp.path().join("ok.tar");
    python_tar(
        &ok,
        &[
            "sym a /",
            "dir a",
            "reg a/f fine",
            "sym abs /etc/passwd",
            "lnk h a/f",
        ],
    );
    let target = tmp.path().join("t-ok");
    let r = layer::unpack_file(&ok, &target, &UnpackOptions::default()).expect("benign tar");
    assert_eq!(r.entries, 5);
    assert_eq!(read(&target.join("a/f")), "fine");
    assert_eq!(ino(&target.join("a/f")), ino(&target.join("h")));
    assert_eq!(
        fs::read_link(target.join("abs")).expect("readlink"),
        Path::new("/etc/passwd")
    );
}

#[test]
fn gnu_and_python_tarballs_unpack_to_kernel_format() {
    if !needs_root() {
        return;
    }
    let tmp = TempDir::new("layer-foreign");
    // An OCI-format tree (as tar x leaves it) archived by GNU tar in its
    // default format (GNU long names), with xattrs.
    let src = Layer::new(tmp.path().join("src"));
    let long = "n".repeat(180);
    src.file(&format!("deep/{long}"), b"long")
        .file("deep/.wh.hidden", b"")
        .file("opq/.wh..wh..opq", b"")
        .file("opq/f", b"f")
        .file_mode("bin/s", b"s", 0o4711)
        .xattr("bin/s", "user.k", b"v")
        .symlink(&format!("deep/l{long}"), &"t".repeat(160));
    // GNU format (long names as `L`/`K` members, no xattrs) and POSIX
    // format (PAX, with xattrs), both written by GNU tar.
    for (format, xattrs) in [("gnu", false), ("posix", true)] {
        let tar = tmp.path().join(format!("{format}.tar"));
        let mut cmd = Command::new("tar");
        if xattrs {
            cmd.args(["--xattrs", "--xattrs-include=*"]);
        }
        run_ok(
            cmd.arg(format!("--format={format}"))
                .arg("-cf")
                .arg(&tar)
                .arg("-C")
                .arg(&src.root)
                .arg("."),
        );
        let target = tmp.path().join(format!("out-{format}"));
        let r = layer::unpack_file(&tar, &target, &UnpackOptions::default())
            .unwrap_or_else(|e| panic!("unpack {format}: {e}"));
        assert_eq!((r.whiteouts, r.opaque_dirs), (1, 1), "{format}");
        assert_eq!(read(&target.join(format!("deep/{long}"))), "long");
        assert_whiteout(&target.join("deep/hidden"));
        assert!(is_opaque(&target.join("opq")));
        assert_no_wh_markers(&target);
        assert_eq!(lstat(&target.join("bin/s")).mode() & 0o7777, 0o4711);
        if xattrs {
            assert_eq!(
                sys::lgetxattr(&target.join("bin/s"), "user.k").expect("xattr"),
                b"v"
            );
        }
        assert_eq!(
            fs::read_link(target.join(format!("deep/l{long}"))).expect("readlink"),
            Path::new(&"t".repeat(160))
        );
        if xattrs {
            let want = snapshot(&src.root, SnapOpts::with_times())
                .without("deep/.wh.hidden")
                .without("opq/.wh..wh..opq");
            let got = snapshot(&target, SnapOpts::with_times()).without("deep/hidden");
            assert_same(&want, &got, "GNU tar source vs unpacked");
        }
        // Unpacking the same layer again over the result is idempotent.
        layer::unpack_file(&tar, &target, &UnpackOptions::default()).expect("unpack twice");
        assert_whiteout(&target.join("deep/hidden"));
    }

    // A POSIX/PAX tarball from Python with a literal device 0/0 is refused:
    // in a kernel-format layer it would read as a whiteout.
    let py = tmp.path().join("dev.tar");
    const PY: &str = r#"
import sys, tarfile
with tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT) as t:
    ti = tarfile.TarInfo("dev/zero0"); ti.type = tarfile.CHRTYPE; ti.devmajor = 0; ti.devminor = 0
    t.addfile(ti)
"#;
    run_ok(Command::new("python3").args(["-c", PY]).arg(&py));
    let e = layer::unpack_file(&py, &tmp.path().join("dev-out"), &UnpackOptions::default());
    assert!(matches!(e, Err(LayerError::Unsupported(_))), "{e:?}");
}

#[test]
fn paths_deeper_than_path_max_round_trip() {
    let tmp = TempDir::new("layer-deep");
    let upper = tmp.path().join("upper");
    fs::create_dir(&upper).expect("mkdir");
    let comp = "d".repeat(200);
    let depth = 30; // 30 * 201 bytes: well past PATH_MAX (4096)
    let mut fd = fs::File::open(&upper).expect("open upper");
    for _ in 0..depth {
        sys::mkdirat(fd.as_fd(), OsStr::new(&comp), 0o755).expect("mkdirat");
        let next = sys::openat(
            fd.as_fd(),
            OsStr::new(&comp),
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )
        .expect("openat");
        fd = fs::File::from(next);
    }
    let leaf = sys::openat(
        fd.as_fd(),
        OsStr::new("leaf"),
        libc::O_WRONLY | libc::O_CREAT,
        0o644,
    )
    .expect("create leaf");
    {
        use std::io::Write;
        fs::File::from(leaf).write_all(b"deep").expect("write leaf");
    }
    let (t, d) = export_bytes(&upper, &ExportOptions::default());
    let file = tmp.path().join("deep.tar");
    fs::write(&file, &t).expect("write");
    let ms = python_members(&file);
    let want = format!("{}/leaf", vec![comp.as_str(); depth].join("/"));
    assert_eq!(member(&ms, &want).size, 4);
    run_ok(Command::new("tar").arg("tf").arg(&file));

    let target = tmp.path().join("out");
    let r = layer::unpack_file(&file, &target, &UnpackOptions::default()).expect("unpack");
    assert_eq!(r.diff_id, d.diff_id);
    let mut fd = fs::File::open(&target).expect("open target");
    for _ in 0..depth {
        let next = sys::openat(
            fd.as_fd(),
            OsStr::new(&comp),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .expect("walk unpacked tree");
        fd = fs::File::from(next);
    }
    let leaf = sys::openat(fd.as_fd(), OsStr::new("leaf"), libc::O_RDONLY, 0).expect("open leaf");
    let mut s = String::new();
    {
        use std::io::Read;
        fs::File::from(leaf)
            .read_to_string(&mut s)
            .expect("read leaf");
    }
    assert_eq!(s, "deep");
    // The same tree exported from the unpacked copy gives the same bytes.
    let (t2, _) = export_bytes(&target, &ExportOptions::default());
    assert_eq!(t, t2);
}

#[test]
fn userxattr_union_round_trip() {
    let Some(fx) = Fixture::for_impl(Impl::Ours) else {
        return;
    };
    fx.lower(0)
        .file("d/a", b"a")
        .file("d/sub/b", b"b")
        .file("f", b"f")
        .file("g", b"g");
    let lowers = fx.lowers();
    let upper = fx.upper().root;
    let mut m = Mounted::mount_ours_opts(
        Impl::Ours,
        &lowers,
        Some(&upper),
        Some(&fx.work()),
        &fx.merged(),
        "userxattr",
    );
    fs::remove_dir_all(m.p("d")).expect("rm -r d");
    fs::create_dir(m.p("d")).expect("mkdir d");
    write(&m.p("d/new"), b"new");
    fs::remove_file(m.p("f")).expect("rm f");
    sys::lsetxattr(&m.p("g"), "user.overlay.mine", b"u", 0).expect("user.overlay xattr");
    sys::lsetxattr(&m.p("g"), "user.plain", b"p", 0).expect("user xattr");
    let before = view(&m.p(""));
    m.unmount();
    drop(m);
    assert_eq!(
        sys::lgetxattr(&upper.join("d"), "user.overlay.opaque").expect("opaque"),
        b"y"
    );

    let opts = ExportOptions {
        userxattr: true,
        ..ExportOptions::default()
    };
    let (t, d) = export_bytes(&upper, &opts);
    let file = fx.root().join("u.tar");
    fs::write(&file, &t).expect("write");
    let ms = python_members(&file);
    member(&ms, "d/.wh..wh..opq");
    member(&ms, ".wh.f");
    let g = member(&ms, "g");
    assert_eq!(g.pax("SCHILY.xattr.user.overlay.mine"), Some("u"));
    assert_eq!(g.pax("SCHILY.xattr.user.plain"), Some("p"));
    assert!(member(&ms, "d").xattrs().is_empty());

    let target = fx.dir("layer-u");
    let uo = UnpackOptions {
        userxattr: true,
        ..UnpackOptions::default()
    };
    let r = layer::unpack_file(&file, &target, &uo).expect("unpack");
    assert_eq!(r.diff_id, d.diff_id);
    assert_eq!(
        sys::lgetxattr(&target.join("g"), "user.overlay.overlay.mine").expect("escaped"),
        b"u"
    );
    let mut all = vec![target];
    all.extend(lowers);
    let merged2 = fx.dir("merged-u");
    let m2 = Mounted::mount_ours_opts(
        Impl::Ours,
        &all,
        Some(&fx.dir("upper-u")),
        Some(&fx.dir("work-u")),
        &merged2,
        "userxattr",
    );
    assert_same(
        &before,
        &view(&merged2),
        "userxattr union vs unpacked layer",
    );
    assert_eq!(
        sys::lgetxattr(&merged2.join("g"), "user.overlay.mine").expect("xattr"),
        b"u"
    );
    drop(m2);
}
