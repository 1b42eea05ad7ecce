//! Unpack: hostile tarballs are refused without writing outside the
//! target, GNU tar's and Python's tarballs unpack to kernel format, and paths
//! deeper than PATH_MAX round-trip.

use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;
use std::process::Command;

use unionfs::oci::{self as layer, ExportOptions, LayerError, UnpackOptions};

use crate::common::*;
use crate::support::*;

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
