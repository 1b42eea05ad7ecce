//! The layer stack: upper (if any) first, then the lowers top-down, then
//! the data-only lowers (`lowerdir=L::D`, `datadir+=D`), each held as an
//! O_PATH directory fd opened once at mount time. Data-only layers never
//! take part in the merged tree: only metacopy files reach them, through
//! absolute redirects.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use crate::dir_fd::DirFd;
use crate::errno::{Errno, Result};
use crate::sys;

#[derive(Debug)]
pub struct Layer {
    pub fd: Arc<OwnedFd>,
    /// The same fd, as the root of the layer's dirs.
    pub root: Arc<DirFd>,
    /// A readable fd of the layer root: open_by_handle_at refuses O_PATH fds.
    pub mount_fd: Option<OwnedFd>,
    pub dev: u64,
    pub uuid: [u8; 16],
}

#[derive(Debug)]
pub struct Layers {
    pub list: Vec<Layer>,
    pub has_upper: bool,
    /// `WORKDIR/work`, the staging dir for atomic copy-up, if a workdir was given.
    pub work: Option<OwnedFd>,
    /// Index of the first data-only layer (`list.len()` when there is none).
    data_start: usize,
    devs: Vec<u64>,
}

/// Opens a directory given by the user as an O_PATH fd.
pub fn open_dir(path: &Path) -> Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    let cwd = sys::fs::cwd();
    sys::fs::openat(cwd, &c, libc::O_PATH | libc::O_DIRECTORY, 0)
}

impl Layers {
    /// `upper` goes first when present; `lowers` are top-down.
    pub fn new(
        upper: Option<OwnedFd>,
        lowers: Vec<OwnedFd>,
        work: Option<OwnedFd>,
    ) -> Result<Layers> {
        Self::with_data(upper, lowers, Vec::new(), work)
    }

    /// As [`Layers::new`], with data-only lower layers (top-down) below.
    pub fn with_data(
        upper: Option<OwnedFd>,
        lowers: Vec<OwnedFd>,
        data: Vec<OwnedFd>,
        work: Option<OwnedFd>,
    ) -> Result<Layers> {
        let has_upper = upper.is_some();
        let data_start = usize::from(has_upper) + lowers.len();
        let mut list = Vec::new();
        for fd in upper.into_iter().chain(lowers).chain(data) {
            let st = sys::fs::fstat(fd.as_fd())?;
            let mount_fd =
                sys::fs::openat(fd.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0).ok();
            let uuid = mount_fd
                .as_ref()
                .and_then(|d| sys::fs::fs_uuid(d.as_fd()))
                .unwrap_or([0; 16]);
            let fd = Arc::new(fd);
            list.push(Layer {
                root: DirFd::pinned(fd.clone()),
                fd,
                mount_fd,
                dev: st.st_dev,
                uuid,
            });
        }
        let mut devs: Vec<u64> = Vec::new();
        for l in &list {
            if !devs.contains(&l.dev) {
                devs.push(l.dev);
            }
        }
        Ok(Layers {
            list,
            has_upper,
            work,
            data_start,
            devs,
        })
    }

    pub fn upper(&self) -> Option<&Layer> {
        if self.has_upper {
            self.list.first()
        } else {
            None
        }
    }

    /// Index of the first lower layer.
    pub fn first_lower(&self) -> usize {
        usize::from(self.has_upper)
    }

    /// The end of the layers that make up the merged tree (upper and
    /// regular lowers); data-only layers follow.
    pub fn merged_end(&self) -> usize {
        self.data_start
    }

    /// The data-only layers, top-down.
    pub fn data_layers(&self) -> &[Layer] {
        self.list.get(self.data_start..).unwrap_or_default()
    }

    pub fn work(&self) -> Option<BorrowedFd<'_>> {
        self.work.as_ref().map(|w| w.as_fd())
    }

    /// Maps a backing (st_dev, st_ino) to the number the merged view shows.
    /// With one device it is the real inode number, like kernel overlayfs;
    /// otherwise the device index goes into the high bits, like `xino`.
    pub fn map_ino(&self, dev: u64, ino: u64) -> u64 {
        let mapped = if self.devs.len() <= 1 {
            ino
        } else {
            let idx = self.devs.iter().position(|d| *d == dev).unwrap_or(0) as u64;
            if ino >> 56 == 0 {
                (idx << 56) | ino
            } else {
                // Rare huge inode numbers: fold, accepting a tiny collision risk.
                (ino ^ (ino >> 56)) & ((1 << 56) - 1) | (idx << 56)
            }
        };
        // 1 is the FUSE root's nodeid and 0 is invalid.
        if mapped <= 1 {
            (1 << 63) | mapped
        } else {
            mapped
        }
    }
}
