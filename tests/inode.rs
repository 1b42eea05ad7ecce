//! st_ino / st_dev rules (overlay-semantics.md 1.9, all layers on one fs):
//! st_ino unique and persistent (kept across copy-up via the origin, and
//! across remounts), one st_dev for every object, d_ino == st_ino.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

fn layered_tree(fx: &Fixture) {
    fx.lower(1)
        .file("d/a", b"a")
        .file("d/shadowed", b"1")
        .file("only1", b"")
        .symlink("d/link1", "a")
        .dir("d/sub1/deeper");
    fx.lower(0)
        .file("d/b", b"b")
        .file("d/shadowed", b"0")
        .fifo("d/fifo")
        .chardev("d/null", 1, 3)
        .dir("e");
    fx.upper()
        .file("d/c", b"c")
        .dir("u/v")
        .symlink("u/l", "../d");
}

/// path -> (st_ino, st_dev) for every object below the merged root.
fn inos(m: &Mounted) -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    out.insert(String::new(), {
        let md = lstat(&m.p(""));
        (md.ino(), md.dev())
    });
    for p in snapshot(&m.p(""), SnapOpts::basic()).paths() {
        let md = lstat(&m.p(&p));
        out.insert(p, (md.ino(), md.dev()));
    }
    out
}

#[test]
fn st_ino_unique_and_st_dev_uniform() {
    let Some(fx) = Fixture::new() else { return };
    layered_tree(&fx);
    let m = fx.mount();
    write(&m.p("d/new"), b"n");
    fs::create_dir(m.p("newdir")).unwrap();
    sys::lsetxattr(&m.p("d/a"), "user.cu", b"1", 0).unwrap();
    let all = inos(&m);
    let mut seen: BTreeMap<u64, String> = BTreeMap::new();
    for (p, (ino, _)) in &all {
        if let Some(other) = seen.insert(*ino, p.clone()) {
            panic!("st_ino {ino} shared by /{other} and /{p}");
        }
    }
    let devs: BTreeSet<u64> = all.values().map(|(_, d)| *d).collect();
    assert_eq!(devs.len(), 1, "objects report several st_dev: {all:?}");
    assert_eq!(lstat(&m.p("")).dev(), *devs.iter().next().unwrap());
}

#[test]
fn st_ino_same_before_and_after_copy_up() {
    let Some(fx) = Fixture::new() else { return };
    layered_tree(&fx);
    let m = fx.mount();
    let before = inos(&m);
    append(&m.p("d/a"), b"+");
    fs::set_permissions(m.p("d/sub1"), fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::lchown(m.p("d/link1"), Some(5), None).unwrap();
    fs::set_permissions(m.p("d/fifo"), fs::Permissions::from_mode(0o600)).unwrap();
    sys::lsetxattr(&m.p("e"), "user.x", b"1", 0).unwrap();
    write(&m.p("d/sub1/deeper/new"), b"");
    for rel in ["d/a", "d/sub1", "d/link1", "d/fifo", "e", "d/sub1/deeper"] {
        assert!(exists(&m.up(rel)), "{rel} was not copied up");
        let now = lstat(&m.p(rel)).ino();
        assert_eq!(now, before[rel].0, "st_ino of {rel} changed by copy-up");
    }
    assert_eq!(
        lstat(&m.p("d")).ino(),
        before["d"].0,
        "merged dir st_ino changed"
    );
}

#[test]
fn st_ino_same_after_remount() {
    let Some(fx) = Fixture::new() else { return };
    layered_tree(&fx);
    let mut m = fx.mount();
    append(&m.p("d/b"), b"+");
    write(&m.p("d/new"), b"n");
    fs::create_dir(m.p("d/newdir")).unwrap();
    fs::rename(m.p("d/a"), m.p("d/a_renamed")).unwrap();
    let before = inos(&m);
    m.remount();
    let after = inos(&m);
    let strip = |v: &BTreeMap<String, (u64, u64)>| -> BTreeMap<String, u64> {
        v.iter().map(|(k, (i, _))| (k.clone(), *i)).collect()
    };
    assert_eq!(strip(&before), strip(&after), "st_ino not persistent");
}

#[test]
fn readdir_d_ino_matches_st_ino() {
    let Some(fx) = Fixture::new() else { return };
    layered_tree(&fx);
    let m = fx.mount();
    append(&m.p("d/b"), b"+");
    write(&m.p("d/new"), b"n");
    for dir in ["", "d", "u", "d/sub1", "e"] {
        for e in getdents_all(&m.p(dir)) {
            let name = e.name.to_string_lossy().into_owned();
            if name == ".." {
                continue;
            }
            let p = if name == "." {
                m.p(dir)
            } else {
                m.p(dir).join(&name)
            };
            assert_eq!(e.ino, lstat(&p).ino(), "d_ino != st_ino for /{dir}/{name}");
        }
    }
}

/// An upper dir that merges with a lower one but has no origin (the upper
/// was filled without an overlay mount) gets the lower dir as its origin at
/// its first lookup, and its parent is marked impure, as the kernel does:
/// its number is the lower dir's from then on.
#[test]
fn merge_dir_without_origin_gets_one_at_lookup() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("d/l", b"l");
    fx.upper().file("d/u", b"u");
    let m = fx.mount();
    assert_eq!(ls(&m.p("d")), ["l", "u"]);
    assert_eq!(lstat(&m.p("d")).ino(), lstat(&fx.lower(0).path("d")).ino());
    drop(m);
    let up = fx.upper();
    assert!(sys::lgetxattr(&up.path("d"), "trusted.overlay.origin").is_ok());
    assert_eq!(
        sys::lgetxattr(&up.root, "trusted.overlay.impure")
            .ok()
            .as_deref(),
        Some(&b"y"[..])
    );
}
