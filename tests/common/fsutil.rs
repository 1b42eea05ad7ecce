//! File-system helpers that panic with the path on failure (lstat, read,
//! write, ls, getdents), and raw upper-dir inspection (whiteouts, opaque dirs,
//! `.wh.` markers).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::sys;
use super::tree::{snapshot, SnapOpts};

/// lstat that panics with the path on failure.
#[track_caller]
pub fn lstat(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
}

/// True when `p` exists (without following a final symlink).
pub fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

/// Reads a file to a String, panicking with the path on failure.
#[track_caller]
pub fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Writes a file (create/truncate), panicking with the path on failure.
#[track_caller]
pub fn write(p: &Path, data: &[u8]) {
    fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()))
}

/// Appends to an existing file.
#[track_caller]
pub fn append(p: &Path, data: &[u8]) {
    let mut f = OpenOptions::new()
        .append(true)
        .open(p)
        .unwrap_or_else(|e| panic!("open {} for append: {e}", p.display()));
    f.write_all(data).expect("append");
}

/// Sorted names in a directory (via std readdir; no `.`/`..`).
#[track_caller]
pub fn ls(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", p.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

/// Raw upper inspection: is `p` a classic whiteout (char device 0/0)?
pub fn is_whiteout(p: &Path) -> bool {
    fs::symlink_metadata(p)
        .map(|m| m.file_type().is_char_device() && m.rdev() == 0)
        .unwrap_or(false)
}

/// Raw upper inspection: value of trusted.overlay.opaque, if set.
pub fn opaque_value(p: &Path) -> Option<Vec<u8>> {
    sys::lgetxattr(p, "trusted.overlay.opaque").ok()
}

/// Raw upper inspection: is `p` a dir with trusted.overlay.opaque=y?
pub fn is_opaque(p: &Path) -> bool {
    lstat(p).is_dir() && opaque_value(p).as_deref() == Some(b"y")
}

#[track_caller]
pub fn assert_whiteout(p: &Path) {
    let md = fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("expected a whiteout at {}, lstat: {e}", p.display()));
    assert!(
        md.file_type().is_char_device() && md.rdev() == 0,
        "expected a char 0/0 whiteout at {}, found mode {:o} rdev {:x}",
        p.display(),
        md.mode(),
        md.rdev()
    );
}

/// Asserts that no `.wh.*` marker file exists anywhere below `root`.
#[track_caller]
pub fn assert_no_wh_markers(root: &Path) {
    for p in snapshot(root, SnapOpts::basic()).paths() {
        let name = Path::new(&p)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        assert!(
            !name.starts_with(".wh."),
            "found a .wh. marker {p} in {}",
            root.display()
        );
    }
}

/// Entries of a directory read with getdents64 (including `.` and `..`).
pub fn getdents_all(p: &Path) -> Vec<sys::Dirent> {
    use std::os::fd::AsFd;
    let f = File::open(p).unwrap_or_else(|e| panic!("open dir {}: {e}", p.display()));
    let mut all = Vec::new();
    loop {
        let chunk = sys::getdents64(f.as_fd(), 4096).expect("getdents64");
        if chunk.is_empty() {
            return all;
        }
        all.extend(chunk);
    }
}
