//! Which names of a merged view are one object, checked against the upper
//! dir the view shows (tests/differential_rootless.rs).
//!
//! The snapshots compare no st_ino; hard links still need one number per
//! object (`tar`, `rsync -H`, `du` and `cp -a` group names by st_ino). Rule,
//! for a fixture without lower hard links: names present in the upper dir
//! as non-dirs are one object per upper inode, every other non-dir name is
//! its own object, and all names of one object show one st_ino and one
//! nlink. The kernel's fresh mounts meet it; right after `link(2)` the
//! kernel shows the old number at the old name until its dentry goes, which
//! is why the harness does not apply it to the kernel's first view.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::ops::short;
use super::snap::DiffLine;

fn walk(root: &Path, rel: &str, out: &mut Vec<(String, fs::Metadata)>) {
    let Ok(rd) = fs::read_dir(root.join(rel)) else {
        return;
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    for n in names {
        let r = if rel.is_empty() {
            n
        } else {
            format!("{rel}/{n}")
        };
        let Ok(md) = fs::symlink_metadata(root.join(&r)) else {
            continue;
        };
        if md.is_dir() {
            walk(root, &r, out);
        } else {
            out.push((r, md));
        }
    }
}

/// The object a merged name should be, from the raw upper dir.
fn expected_object(upper: &Path, rel: &str) -> String {
    match fs::symlink_metadata(upper.join(rel)) {
        Ok(m) if !(m.is_dir() || m.file_type().is_char_device() && m.rdev() == 0) => {
            format!("upper inode {}", m.ino())
        }
        _ => format!("lower /{}", short(rel)),
    }
}

/// Differences between the merged view's objects (by st_ino) and the
/// upper's (see the module doc), and names of one st_ino with two nlinks.
pub fn check_link_groups(merged: &Path, upper: &Path) -> Vec<DiffLine> {
    let mut names = Vec::new();
    walk(merged, "", &mut names);
    let mut shown: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    let mut want: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut nlinks: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for (rel, md) in &names {
        shown.entry(md.ino()).or_default().insert(rel.clone());
        nlinks.entry(md.ino()).or_default().insert(md.nlink());
        want.entry(expected_object(upper, rel))
            .or_default()
            .insert(rel.clone());
    }
    let shown_groups: BTreeSet<&BTreeSet<String>> = shown.values().collect();
    let mut out = Vec::new();
    for (object, group) in &want {
        if shown_groups.contains(group) {
            continue;
        }
        let first = group.iter().next().cloned().unwrap_or_default();
        let numbers: Vec<String> = group
            .iter()
            .filter_map(|r| {
                let ino = shown.iter().find(|(_, g)| g.contains(r))?.0;
                Some(format!("/{} st_ino {ino}", short(r)))
            })
            .collect();
        out.push(DiffLine {
            class: "ino-groups: names of one object differ in st_ino".into(),
            text: format!("{object} is shown as: {}", numbers.join(", ")),
            path: first,
        });
    }
    for (ino, counts) in nlinks.iter().filter(|(_, c)| c.len() > 1) {
        let group = &shown[ino];
        out.push(DiffLine {
            class: "ino-groups: names of one st_ino differ in nlink".into(),
            text: format!("st_ino {ino} at {group:?} has nlink {counts:?}"),
            path: group.iter().next().cloned().unwrap_or_default(),
        });
    }
    out
}
