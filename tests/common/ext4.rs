//! A small ext4 filesystem on a loop image, for tests that need what tmpfs
//! lacks (most inode flags). `mount -o loop` sets the loop device up with
//! autoclear, so unmounting in `Drop` also frees the device; the image
//! lives in its own temp dir, removed after the unmount.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{run_ok, sys, umount_when_idle, TempDir};

pub struct Ext4Image {
    mp: PathBuf,
    // Dropped after `drop` ran, so the image outlives its mount.
    _image_dir: TempDir,
}

impl Ext4Image {
    /// Makes a `size_mb` ext4 (`features`: extra mkfs `-O` list, may be
    /// empty) and mounts it on the existing dir `at`.
    pub fn mount_at(at: &Path, size_mb: u64, features: &str) -> Ext4Image {
        let image_dir = TempDir::new("ext4-image");
        let img = image_dir.path().join("fs.img");
        let f = std::fs::File::create(&img).expect("create image");
        f.set_len(size_mb << 20).expect("size image");
        drop(f);
        let mut mkfs = Command::new("mkfs.ext4");
        mkfs.args(["-q", "-F"]);
        if !features.is_empty() {
            mkfs.args(["-O", features]);
        }
        run_ok(mkfs.arg(&img));
        run_ok(Command::new("mount").args(["-o", "loop"]).arg(&img).arg(at));
        Ext4Image {
            mp: at.to_path_buf(),
            _image_dir: image_dir,
        }
    }

    pub fn path(&self) -> &Path {
        &self.mp
    }
}

impl Drop for Ext4Image {
    fn drop(&mut self) {
        if umount_when_idle(&self.mp).is_err() {
            let _ = sys::umount2(&self.mp, libc::MNT_DETACH);
        }
    }
}
