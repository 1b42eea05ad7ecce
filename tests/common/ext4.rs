//! A small ext4 filesystem on a loop image, for tests that need what tmpfs
//! lacks (most inode flags), or a disk that fails writes (an image on a
//! tmpfs smaller than the image: writeback past the tmpfs's size fails).
//! `mount -o loop` sets the loop device up with autoclear, so unmounting in
//! `Drop` also frees the device; the image lives in its own temp dir (or
//! tmpfs), removed after the unmount.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{run_ok, sys, umount_when_idle, TempDir, Tmpfs};

pub struct Ext4Image {
    mp: PathBuf,
    // Dropped after `drop` ran, in this order, so the image outlives its
    // mount and the tmpfs holding it outlives the image.
    _backing: Option<Tmpfs>,
    _image_dir: TempDir,
}

impl Ext4Image {
    /// Makes a `size_mb` ext4 (`features`: extra mkfs `-O` list, may be
    /// empty) and mounts it on the existing dir `at`.
    pub fn mount_at(at: &Path, size_mb: u64, features: &str) -> Ext4Image {
        Ext4Image::make(at, size_mb, features, None, "loop")
    }

    /// A `size_mb` ext4 without a journal whose image sits on a tmpfs of
    /// `backing_mb`: data written back beyond that fails (EIO on the ext4),
    /// and the ext4 goes on (errors=continue).
    pub fn failing_writes_at(at: &Path, size_mb: u64, backing_mb: u64) -> Ext4Image {
        Ext4Image::make(
            at,
            size_mb,
            "^has_journal",
            Some(backing_mb),
            "loop,errors=continue",
        )
    }

    fn make(
        at: &Path,
        size_mb: u64,
        features: &str,
        backing_mb: Option<u64>,
        opts: &str,
    ) -> Ext4Image {
        let image_dir = TempDir::new("ext4-image");
        let backing = backing_mb
            .map(|mb| Tmpfs::mount(&image_dir.path().join("tmpfs"), &format!("size={mb}M")));
        let img = match &backing {
            Some(t) => t.0.join("fs.img"),
            None => image_dir.path().join("fs.img"),
        };
        let f = std::fs::File::create(&img).expect("create image");
        f.set_len(size_mb << 20).expect("size image");
        drop(f);
        let mut mkfs = Command::new("mkfs.ext4");
        // Inode tables written now, not by a lazy-init thread later.
        mkfs.args(["-q", "-F", "-E", "lazy_itable_init=0,nodiscard"]);
        if !features.is_empty() {
            mkfs.args(["-O", features]);
        }
        run_ok(mkfs.arg(&img));
        run_ok(Command::new("mount").args(["-o", opts]).arg(&img).arg(at));
        Ext4Image {
            mp: at.to_path_buf(),
            _backing: backing,
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
