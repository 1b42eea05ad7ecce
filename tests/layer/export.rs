//! Export: an upper written through the union becomes a layer tar that,
//! used as a new lower, shows what the union showed (unpacked by us and by
//! GNU tar); exports are reproducible, gzip and zstd match their tools, and
//! the upper's format details (and userxattr unions) are carried over.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use unionfs::oci::{
    self as layer, Compression, ExportOptions, LayerError, MtimePolicy, UnpackOptions,
};

use crate::common::*;
use crate::support::*;

/// Mounts (ours) `layer` on top of the fixture's lowers with a fresh upper
/// and checks that it shows `before`: the same tree, the file capability and
/// the hard link. Returns the mount and its lowers.
fn mount_layer_on_top(
    fx: &Fixture,
    layer: &Path,
    tag: &str,
    before: &Tree,
    what: &str,
) -> (Mounted, Vec<PathBuf>) {
    let mut lowers = vec![layer.to_path_buf()];
    lowers.extend(fx.lowers());
    let m = Mounted::mount(
        Impl::Ours,
        &lowers,
        Some(&fx.dir(&format!("upper-{tag}"))),
        Some(&fx.dir(&format!("work-{tag}"))),
        &fx.dir(&format!("merged-{tag}")),
    );
    assert_eq!(capability(&m.p("usr/bin/capped")), CAP_NET_BIND);
    assert_same(
        before,
        &view(&m.p("")),
        &format!("union before export vs {what}"),
    );
    assert_eq!(ino(&m.p("new/file")), ino(&m.p("new/link")));
    (m, lowers)
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
    let (mk, lowers) = mount_layer_on_top(&fx, &kdir, "k", &before, "kernel-format layer");
    assert_eq!(
        sys::lgetxattr(&mk.p("new/sub"), "trusted.overlay.mine").expect("unescaped"),
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
    let (mo, _) = mount_layer_on_top(&fx, &odir, "o", &before, "OCI-format layer");
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
