//! Data-only lower layers (`lowerdir=L1:L2::D1::D2`, overlay-semantics.md
//! 1.10): they are not in the merged tree, and only metacopy files reach
//! them, through an absolute `overlay.redirect`. Each case is compared with
//! the kernel on the same layers, as the kernel of this machine (6.18)
//! answers: without `metacopy=on` only a metacopy file of the last regular
//! layer reaches them; a missing data file shows at open (ENOENT).

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A metacopy file of `size` bytes with the given redirect (or none).
fn metacopy(path: &Path, size: u64, redirect: Option<&str>) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::File::create(path).unwrap().set_len(size).unwrap();
    sys::lsetxattr(path, "trusted.overlay.metacopy", b"", 0).unwrap();
    if let Some(r) = redirect {
        sys::lsetxattr(path, "trusted.overlay.redirect", r.as_bytes(), 0).unwrap();
    }
}

struct Layers {
    l1: PathBuf,
    l2: PathBuf,
    d1: PathBuf,
    d2: PathBuf,
}

/// The names every case looks up.
const NAMES: &[&str] = &[
    "r", "deep", "miss", "plain", "rel", "r2", "f", "blob", "only_d", "dir/r3", "dir/x",
];

fn build(fx: &Fixture) -> Layers {
    let l = Layers {
        l1: fx.dir("l1"),
        l2: fx.dir("l2"),
        d1: fx.dir("d1"),
        d2: fx.dir("d2"),
    };
    let w = |p: PathBuf, data: &[u8]| {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    };
    // Data: the first data layer with the path wins.
    w(l.d2.join("blob"), b"blob in d2\n");
    w(l.d1.join("sub/deep"), b"deep in d1\n");
    w(l.d2.join("sub/deep"), b"deep in d2\n");
    w(l.d1.join("only_d"), b"never visible\n");
    w(l.d1.join("f"), b"f in d1\n");
    // Regular layers.
    w(l.l2.join("f"), b"f in l2\n");
    w(l.l2.join("blob"), b"blob in l2\n");
    w(l.l1.join("plain"), b"plain\n");
    metacopy(&l.l1.join("r"), 11, Some("/blob"));
    metacopy(&l.l1.join("deep"), 11, Some("/sub/deep"));
    metacopy(&l.l1.join("miss"), 4, Some("/nothere"));
    metacopy(&l.l1.join("f"), 8, None);
    metacopy(&l.l1.join("rel"), 8, Some("f"));
    metacopy(&l.l2.join("r2"), 11, Some("/blob"));
    metacopy(&l.l1.join("dir/r3"), 11, Some("/blob"));
    w(l.l2.join("dir/x"), b"x\n");
    l
}

/// What a mount shows: the root's names, then per name its stat and data
/// (or errno).
fn observe(m: &Mounted) -> Vec<String> {
    // Names whose lookup fails are left out: the kernel lists them, ours
    // (readdirplus) leaves them out (README, Deviations); the lookups are
    // compared below.
    let mut names: Vec<String> = fs::read_dir(&m.merged)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| fs::symlink_metadata(m.p(n)).is_ok())
        .collect();
    names.sort();
    let mut out = vec![format!("ls: {names:?}")];
    for n in NAMES {
        let st = fs::symlink_metadata(m.p(n))
            .map(|md| format!("{:o} {}", md.mode(), md.size()))
            .map_err(|e| ename(&e));
        let data = fs::read(m.p(n))
            .map(|d| String::from_utf8_lossy(&d).into_owned())
            .map_err(|e| ename(&e));
        out.push(format!("{n}: stat {st:?} read {data:?}"));
    }
    out
}

fn compare(fx: &Fixture, lowers: &[PathBuf], upper: bool, opts: &str) {
    let run = |kind: Impl| {
        let (u, w) = (
            fx.dir(&format!("u-{kind:?}")),
            fx.dir(&format!("w-{kind:?}")),
        );
        let m = Mounted::mount_opts(
            kind,
            lowers,
            upper.then_some(u.as_path()),
            upper.then_some(w.as_path()),
            &fx.dir(&format!("m-{kind:?}")),
            opts,
        );
        let mut seen = observe(&m);
        if upper {
            // A write copies the data up from the data-only layer.
            let w = fs::OpenOptions::new()
                .append(true)
                .open(m.p("r"))
                .and_then(|mut f| std::io::Write::write_all(&mut f, b"+"));
            seen.push(format!("append r: {:?}", w.map_err(|e| ename(&e))));
            seen.push(format!(
                "after: {:?}",
                fs::read(m.p("r")).map_err(|e| ename(&e))
            ));
        }
        seen
    };
    let k = run(Impl::Kernel);
    let o = run(Impl::Ours);
    let diff: Vec<String> = k
        .iter()
        .zip(&o)
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("kernel {a}\n  ours {b}"))
        .collect();
    assert!(
        diff.is_empty(),
        "lowers {lowers:?} upper {upper} opts {opts:?}:\n{}\nkernel saw:\n{}",
        diff.join("\n"),
        k.join("\n")
    );
}

fn stacks(l: &Layers) -> Vec<Vec<PathBuf>> {
    let gap = PathBuf::new();
    vec![
        vec![
            l.l1.clone(),
            l.l2.clone(),
            gap.clone(),
            l.d1.clone(),
            gap.clone(),
            l.d2.clone(),
        ],
        vec![l.l1.clone(), gap.clone(), l.d1.clone(), gap, l.d2.clone()],
    ]
}

/// Compares the kernel and ours on each stack of `build`'s layers, with
/// each of `opts`, with or without an upper.
fn compare_every_stack(upper: bool, opts: &[&str]) {
    let Some(fx) = Fixture::for_impl(Impl::Kernel) else {
        return;
    };
    if !environment_ok(Impl::Ours) {
        return;
    }
    let l = build(&fx);
    for lowers in stacks(&l) {
        for o in opts {
            compare(&fx, &lowers, upper, o);
        }
    }
}

#[test]
fn data_only_layers_serve_metacopy_redirects_as_the_kernel_read_only() {
    compare_every_stack(false, &["redirect_dir=follow", "metacopy=on"]);
}

#[test]
fn data_only_layers_serve_metacopy_redirects_as_the_kernel_with_an_upper() {
    compare_every_stack(true, &["metacopy=off", "metacopy=on"]);
}

/// The mount-API forms: `lowerdir+=` and `datadir+=`, repeatable.
#[test]
fn datadir_plus_adds_data_only_layers() {
    let Some(fx) = Fixture::for_impl(Impl::Ours) else {
        return;
    };
    let l = build(&fx);
    let opts = format!(
        "lowerdir+={},lowerdir+={},datadir+={},datadir+={},metacopy=on",
        l.l1.display(),
        l.l2.display(),
        l.d1.display(),
        l.d2.display()
    );
    // SOURCE MERGED -o lowerdir+=...: the mount.fuse3 form.
    let m = Mounted::mount_ours_opts(
        Impl::Ours,
        &[PathBuf::from("unionfs")],
        None,
        None,
        &fx.dir("m"),
        &opts,
    );
    assert_eq!(fs::read(m.p("deep")).unwrap(), b"deep in d1\n");
    // With metacopy=on the regular layers come first: l2 has /blob.
    assert_eq!(fs::read(m.p("r")).unwrap(), b"blob in l2\n");
    assert!(!exists(&m.p("only_d")));
}
