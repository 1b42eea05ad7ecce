//! Metadata-only copies (overlay-semantics.md 1.10) written by the kernel
//! with `metacopy=on`: without `metacopy=on` a lookup of one fails with
//! EPERM, as the kernel's own refusal, and never shows the copy's missing
//! data as zeros (a later write would make them its data for good); with
//! it they are read byte for byte from their lower data and get their data
//! at the first write. The other way round, the metacopy uppers we write
//! are what the kernel writes and reads.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

const DATA: &[u8] = b"lower data here\n";

/// The kernel over `fx`'s layers with `metacopy=on` (and the
/// `redirect_dir=on` it needs).
fn kernel_metacopy(fx: &Fixture) -> Mounted {
    Mounted::mount_kernel_opts(
        Impl::Kernel,
        &fx.lowers(),
        Some(&fx.upper().root),
        Some(&fx.work()),
        &fx.merged(),
        "metacopy=on,redirect_dir=on",
    )
}

/// Ours over `fx`'s layers with `metacopy=on`.
fn ours_metacopy(fx: &Fixture) -> Mounted {
    Mounted::mount_ours_opts(
        Impl::Ours,
        &fx.lowers(),
        Some(&fx.upper().root),
        Some(&fx.work()),
        &fx.merged(),
        "metacopy=on",
    )
}

/// Lets the kernel (metacopy=on) write metadata-only copies of `f` (chown),
/// `g` (chmod) and `h` (setxattr); returns the fixture.
fn kernel_metacopy_upper() -> Option<Fixture> {
    let fx = Fixture::for_impl(Impl::Kernel)?;
    fx.lower(0)
        .file("d/f", DATA)
        .file("d/g", DATA)
        .file("d/h", DATA)
        .file("d/plain", DATA);
    fs::create_dir_all(fx.upper().root).unwrap();
    let m = kernel_metacopy(&fx);
    std::os::unix::fs::chown(m.p("d/f"), Some(1000), None).unwrap();
    fs::set_permissions(m.p("d/g"), fs::Permissions::from_mode(0o600)).unwrap();
    sys::lsetxattr(&m.p("d/h"), "user.tag", b"1", 0).unwrap();
    assert_eq!(fs::read(m.p("d/f")).unwrap(), DATA);
    drop(m);
    for n in ["f", "g", "h"] {
        let up = fx.upper().path(&format!("d/{n}"));
        assert!(
            sys::lgetxattr(&up, "trusted.overlay.metacopy").is_ok(),
            "the kernel wrote no metacopy for {n}"
        );
        assert_eq!(lstat(&up).size(), DATA.len() as u64);
    }
    Some(fx)
}

#[test]
fn a_kernel_metacopy_upper_gives_eperm_without_metacopy_on_never_zeros() {
    let Some(fx) = kernel_metacopy_upper() else {
        return;
    };
    let m = Mounted::mount(
        impl_under_test(),
        &fx.lowers(),
        Some(&fx.upper().root),
        Some(&fx.work()),
        &fx.merged(),
    );
    for n in ["f", "g", "h"] {
        let p = m.p(&format!("d/{n}"));
        let e = fs::read(&p).expect_err("read of a metacopy file without metacopy=on");
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "read d/{n}: {e}");
        let e = fs::symlink_metadata(&p).expect_err("stat of a metacopy file");
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "stat d/{n}: {e}");
        let e = fs::OpenOptions::new().append(true).open(&p).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "open d/{n} for write");
    }
    // The rest of the dir is served as usual.
    assert_eq!(fs::read(m.p("d/plain")).unwrap(), DATA);
    // A listing of the dir is left out: the kernel's readdir fails with
    // EPERM when it looks the entries up, ours lists what it can.
    drop(m);
    // Nothing was copied over the metadata-only copies.
    for n in ["f", "g", "h"] {
        let up = fx.upper().path(&format!("d/{n}"));
        assert!(sys::lgetxattr(&up, "trusted.overlay.metacopy").is_ok());
        assert!(has_no_data(&up), "d/{n} got data");
    }
}

/// The same upper reused as a lower layer: still EPERM, not zeros.
#[test]
fn a_metacopy_file_in_a_lower_layer_gives_eperm_too() {
    let Some(fx) = kernel_metacopy_upper() else {
        return;
    };
    let mut lowers = vec![fx.upper().root.clone()];
    lowers.extend(fx.lowers());
    let m = Mounted::mount(impl_under_test(), &lowers, None, None, &fx.merged());
    let e = fs::read(m.p("d/f")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    assert_eq!(fs::read(m.p("d/plain")).unwrap(), DATA);
}

/// Lets the kernel (metacopy=on) write metacopy files by each kind of
/// change: chown, chmod, utimes, setxattr, a rename in the same dir (a
/// relative redirect) and into another dir (an absolute one), a hard link,
/// on a sparse file too.
fn kernel_metacopy_upper_all_kinds() -> Option<Fixture> {
    let fx = Fixture::for_impl(Impl::Kernel)?;
    fx.lower(0)
        .file("d/f", DATA)
        .file("d/g", DATA)
        .file("d/t", DATA)
        .file("d/h", DATA)
        .file("d/r", DATA)
        .file("d/x", DATA)
        .file("d/l", DATA)
        .sparse("big", 3 << 20, &[(0, b"head"), (2 << 20, b"middle")])
        .dir("e");
    fs::create_dir_all(fx.upper().root).unwrap();
    let m = kernel_metacopy(&fx);
    apply_metadata_changes(&m);
    drop(m);
    Some(fx)
}

/// The changes of metadata that make metacopy files.
fn apply_metadata_changes(m: &Mounted) {
    std::os::unix::fs::chown(m.p("d/f"), Some(1000), None).unwrap();
    fs::set_permissions(m.p("d/g"), fs::Permissions::from_mode(0o600)).unwrap();
    sys::utimensat(&m.p("d/t"), Ts(1_000_000, 5), Ts(2_000_000, 7), false).unwrap();
    sys::lsetxattr(&m.p("d/h"), "user.tag", b"1", 0).unwrap();
    fs::rename(m.p("d/r"), m.p("d/r2")).unwrap();
    fs::rename(m.p("d/x"), m.p("e/x2")).unwrap();
    fs::hard_link(m.p("d/l"), m.p("e/l2")).unwrap();
    std::os::unix::fs::chown(m.p("big"), Some(7), Some(7)).unwrap();
}

/// The names the changes leave, and the lower file each one's data is.
const METACOPIES: &[(&str, &str)] = &[
    ("d/f", "d/f"),
    ("d/g", "d/g"),
    ("d/t", "d/t"),
    ("d/h", "d/h"),
    ("d/r2", "d/r"),
    ("e/x2", "d/x"),
    ("d/l", "d/l"),
    ("e/l2", "d/l"),
    ("big", "big"),
];

/// A merged view with the metadata and data of every entry (xattrs too).
fn view(m: &Mounted) -> Tree {
    snapshot(&m.merged, SnapOpts::with_times())
}

/// Data holes: whether an upper file holds no data (a metacopy's shape).
fn has_no_data(p: &std::path::Path) -> bool {
    let f = fs::File::open(p).unwrap();
    sys::lseek(std::os::fd::AsFd::as_fd(&f), 0, libc::SEEK_DATA).map_err(|e| e.raw_os_error())
        == Err(Some(libc::ENXIO))
}

/// Every name in METACOPIES is still a metadata-only copy in `fx`'s upper.
fn assert_metadata_only(fx: &Fixture, who: &str) {
    for (name, _) in METACOPIES {
        assert!(has_no_data(&fx.upper().path(name)), "{who} {name} data");
    }
}

/// Every name in METACOPIES reads as its lower data through `m`.
fn assert_lower_data(m: &Mounted, fx: &Fixture) {
    for (name, data) in METACOPIES {
        assert_eq!(
            fs::read(m.p(name)).unwrap(),
            fs::read(fx.lower(0).path(data)).unwrap(),
            "{name}"
        );
    }
}

/// Opens `p` for writing (appending or at offset 0) and writes `data`.
fn write_through(p: &std::path::Path, append: bool, data: &[u8]) {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .append(append)
        .open(p)
        .unwrap();
    std::io::Write::write_all(&mut f, data).unwrap();
}

fn overlay_xattrs(p: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = sys::llistxattr(p)
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with("trusted.overlay.") && !n.ends_with(".origin"))
        .map(|n| {
            let v = sys::lgetxattr(p, &n).unwrap();
            (n, v)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_kernel_metacopy_upper_reads_byte_for_byte_with_metacopy_on_then_writes_copy_its_data() {
    let Some(fx) = kernel_metacopy_upper_all_kinds() else {
        return;
    };
    // What the kernel shows over its own upper.
    let k = kernel_metacopy(&fx);
    let kv = view(&k);
    drop(k);
    assert_metadata_only(&fx, "the kernel gave");
    let m = ours_metacopy(&fx);
    let ov = view(&m);
    assert_eq!(
        kv.diff(&ov),
        "",
        "kernel (left) vs ours (right) over the kernel's upper"
    );
    assert_lower_data(&m, &fx);
    // A metacopy file shows its data's blocks, as the kernel's stat does.
    assert_eq!(
        lstat(&m.p("big")).blocks(),
        lstat(&fx.lower(0).path("big")).blocks()
    );
    // Reading copied nothing up.
    assert_metadata_only(&fx, "a read gave");
    // The first write, truncate, or open for writing copies the data up.
    write_through(&m.p("d/f"), true, b"more");
    sys::truncate(&m.p("d/g"), 4).unwrap();
    write_through(&m.p("e/x2"), false, b"");
    write_through(&m.p("e/l2"), false, b"L");
    let mut want_f = DATA.to_vec();
    want_f.extend_from_slice(b"more");
    assert_eq!(fs::read(m.p("d/f")).unwrap(), want_f);
    assert_eq!(fs::read(m.p("d/g")).unwrap(), &DATA[..4]);
    assert_eq!(fs::read(m.p("e/x2")).unwrap(), DATA);
    let mut want_l = DATA.to_vec();
    want_l[0] = b'L';
    assert_eq!(fs::read(m.p("e/l2")).unwrap(), want_l);
    assert_eq!(
        fs::read(m.p("d/l")).unwrap(),
        want_l,
        "the hard link's other name"
    );
    let after = view(&m);
    drop(m);
    for name in ["d/f", "d/g", "e/x2", "e/l2", "d/l"] {
        let up = fx.upper().path(name);
        assert!(
            !overlay_xattrs(&up)
                .iter()
                .any(|(n, _)| n.ends_with(".metacopy")),
            "{name} kept its metacopy mark"
        );
    }
    // The rest stayed metadata-only copies.
    for name in ["d/t", "d/h", "d/r2", "big"] {
        assert!(has_no_data(&fx.upper().path(name)), "{name} got data");
    }
    // The kernel reads what we wrote.
    let k = kernel_metacopy(&fx);
    let kafter = view(&k);
    let ignore_mtime = |t: &Tree| {
        let mut t = t.clone();
        for n in t.0.values_mut() {
            if n.kind == 'd' {
                n.mtime = None;
            }
        }
        t
    };
    assert_eq!(
        ignore_mtime(&after).diff(&ignore_mtime(&kafter)),
        "",
        "ours (left) vs the kernel (right) after the writes"
    );
}

#[test]
fn our_metacopy_upper_is_the_kernels_format_and_the_kernel_reads_it() {
    let Some(kfx) = kernel_metacopy_upper_all_kinds() else {
        return;
    };
    let Some(fx) = Fixture::for_impl(Impl::Ours) else {
        return;
    };
    // The same lower, as a fresh copy.
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(kfx.lower(0).path("."))
        .arg(fx.lower(0).path(""))
        .status()
        .unwrap();
    assert!(status.success());
    fs::create_dir_all(fx.upper().root).unwrap();
    let m = ours_metacopy(&fx);
    apply_metadata_changes(&m);
    let ov = view(&m);
    drop(m);
    for (name, _) in METACOPIES {
        let (k, o) = (kfx.upper().path(name), fx.upper().path(name));
        assert!(has_no_data(&o), "ours gave {name} data");
        assert_eq!(lstat(&o).len(), lstat(&k).len(), "{name}: size");
        assert_eq!(
            overlay_xattrs(&o),
            overlay_xattrs(&k),
            "{name}: overlay xattrs (ours, kernel)"
        );
        assert!(
            sys::lgetxattr(&o, "trusted.overlay.origin").is_ok(),
            "{name}: no origin"
        );
    }
    let k = kernel_metacopy(&fx);
    assert_eq!(
        ov.diff(&view(&k)),
        "",
        "ours (left) vs the kernel over our upper (right)"
    );
    assert_lower_data(&k, &fx);
}

/// Metacopy values with a verity digest are read as the kernel reads them
/// with verity=off (digest ignored); a value too small to hold the header
/// fails the lookup with EIO on both.
#[test]
fn metacopy_values_with_a_digest_or_malformed_read_as_the_kernel() {
    let Some(fx) = Fixture::for_impl(Impl::Kernel) else {
        return;
    };
    let mut digest = vec![0u8, 36, 0, 1];
    digest.extend([0xab; 32]);
    let cases: &[(&str, Vec<u8>)] = &[
        ("plain", Vec::new()),
        ("digest", digest),
        ("short", vec![1]),
        ("header", vec![0, 4, 0, 1]),
    ];
    for (name, _) in cases {
        fx.lower(0).file(name, DATA);
        fx.upper().file(name, b"");
        sys::truncate(&fx.upper().path(name), DATA.len() as i64).unwrap();
    }
    for (name, v) in cases {
        sys::lsetxattr(&fx.upper().path(name), "trusted.overlay.metacopy", v, 0).unwrap();
    }
    let results = |kind: Impl| {
        let m = Mounted::mount_opts(
            kind,
            &fx.lowers(),
            Some(&fx.upper().root),
            Some(&fx.work()),
            &fx.merged(),
            "metacopy=on",
        );
        cases
            .iter()
            .map(|(n, _)| (n.to_string(), fs::read(m.p(n)).map_err(|e| ename(&e))))
            .collect::<Vec<_>>()
    };
    let k = results(Impl::Kernel);
    assert_eq!(k[1].1.as_deref().ok(), Some(DATA), "kernel: {k:?}");
    assert_eq!(results(Impl::Ours), k);
}
