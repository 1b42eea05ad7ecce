//! The layer store: each image layer unpacked once, in kernel format, into
//! a dir named by its diff_id, to be used as a lower by any later run.
//!
//! ```text
//! STORE/kernel/      trusted.overlay.* marks (root)
//! STORE/userxattr/   user.overlay.* marks (rootless): kept apart, since a
//!                    run reads only one kind
//!     layers/<hex>/  a complete layer (diff_id sha256:<hex>)
//!     tmp/<hex>.<pid>.<n>/, tmp/<hex>.<pid>.<n>.lock
//!                    an unpack in progress and its flock
//!     images/<hex>.json
//!                    an image a run used: layout, tag, its diff_ids
//! ```
//!
//! An unpack writes into its own dir under `tmp/` while holding the flock
//! of its `.lock` file, checks the blob's digest and the tar's diff_id,
//! and only then renames the dir to `layers/<hex>` (`RENAME_NOREPLACE`:
//! when two runs unpack the same layer, the first rename wins and the
//! other drops its copy). A killed unpack leaves only `tmp/` entries whose
//! lock nobody holds; the next unpack removes them. All of it goes through
//! dir fds and `*at()` calls that never follow a symlink.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs;
use std::io::{self, BufReader};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::layout::{io_err, Image, ImageError, LayerRef, Layout};
use super::sha256::Digest;
use super::unpack::remove_tree;
use super::{LayerError, UnpackOptions};
use crate::errno::Errno;
use crate::sys;

const SUBDIRS: [&str; 3] = ["layers", "tmp", "images"];

/// The default store dir: `/var/lib/unionfs/layers` for root, else
/// `$XDG_DATA_HOME/unionfs/layers` (default `~/.local/share`). The caller
/// reads the environment once and passes it in.
pub fn default_dir(euid: u32, xdg_data_home: Option<&Path>, home: Option<&Path>) -> PathBuf {
    if euid == 0 {
        return PathBuf::from("/var/lib/unionfs/layers");
    }
    let data = match (xdg_data_home, home) {
        // The spec ignores a relative XDG_DATA_HOME.
        (Some(x), _) if x.is_absolute() => x.to_path_buf(),
        (_, Some(h)) => h.join(".local/share"),
        _ => PathBuf::from(".local/share"),
    };
    data.join("unionfs/layers")
}

/// A layer store of one mode (kernel or userxattr marks).
#[derive(Debug)]
pub struct Store {
    /// `STORE/kernel` or `STORE/userxattr`.
    pub dir: PathBuf,
    pub userxattr: bool,
    fd: OwnedFd,
}

/// One stored layer, for `--store-ls`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredLayer {
    pub diff_id: Digest,
    /// Disk use of its files (st_blocks), in bytes.
    pub bytes: u64,
    /// `LAYOUT:TAG` of the recorded images that use it.
    pub users: Vec<String>,
}

/// What a run records about an image it used.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ImageRecord {
    layout: PathBuf,
    tag: Option<String>,
    manifest: String,
    diff_ids: Vec<String>,
}

impl ImageRecord {
    fn name(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}:{t}", self.layout.display()),
            None => self.layout.display().to_string(),
        }
    }
}

fn cstr(s: &str) -> Result<CString, ImageError> {
    CString::new(s).map_err(|_| ImageError::Invalid(format!("NUL in {s:?}")))
}

fn fs_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> ImageError + 'a {
    move |errno| {
        ImageError::Layer(LayerError::Fs {
            op,
            path: path.display().to_string(),
            errno,
        })
    }
}

/// Opens (creating if missing) the dir `name` below `dir`, never through a
/// symlink.
fn subdir(dir: BorrowedFd<'_>, name: &str, shown: &Path) -> Result<OwnedFd, ImageError> {
    let c = cstr(name)?;
    match sys::fs::mkdirat(dir, &c, 0o755) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(fs_err("mkdir", shown)(e)),
    }
    sys::fs::openat(
        dir,
        &c,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
    .map_err(fs_err("open", shown))
}

/// The digest error for `l`'s blob if its content does not match its
/// descriptor (read again in full, as a failed unpack stops midway).
fn corrupted(layout: &Layout, l: &LayerRef) -> Option<ImageError> {
    let (blob, _) = layout.open_blob(&l.blob).ok()?;
    let mut hashed = super::sha256::HashWriter::new(std::io::sink());
    std::io::copy(&mut BufReader::new(blob), &mut hashed).ok()?;
    let (digest, _, _) = hashed.finish();
    (digest != l.digest).then(|| ImageError::Digest {
        digest: l.blob.digest.clone(),
        reason: format!("content has digest {digest} (corrupted blob)"),
    })
}

impl Store {
    /// Opens the store at `dir` (created if missing) for one mode.
    pub fn open(dir: &Path, userxattr: bool) -> Result<Store, ImageError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let top = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| ImageError::Invalid("NUL in the store path".into()))?;
        // The path the user gave may go through symlinks; nothing below it will.
        let top = sys::fs::openat(sys::fs::cwd(), &top, libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .map_err(fs_err("open", dir))?;
        let mode = if userxattr { "userxattr" } else { "kernel" };
        let fd = subdir(top.as_fd(), mode, dir)?;
        let mdir = dir.join(mode);
        for s in SUBDIRS {
            subdir(fd.as_fd(), s, &mdir.join(s))?;
        }
        Ok(Store {
            dir: mdir,
            userxattr,
            fd,
        })
    }

    fn sub(&self, name: &str) -> Result<OwnedFd, ImageError> {
        subdir(self.fd.as_fd(), name, &self.dir.join(name))
    }

    /// The dir of a stored layer (whether or not it is there).
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.dir.join("layers").join(diff_id.hex())
    }

    /// The image's layers as lower dirs, top first (the order of a
    /// `lowerdir=` list), unpacking those not yet in the store.
    pub fn lowers(
        &self,
        layout: &Layout,
        image: &Image,
        max_size: u64,
    ) -> Result<Vec<PathBuf>, ImageError> {
        let mut dirs = Vec::new();
        for l in &image.layers {
            dirs.push(self.layer(layout, l, max_size)?);
        }
        dirs.reverse();
        Ok(dirs)
    }

    /// The stored dir of one layer, unpacked first if missing.
    pub fn layer(
        &self,
        layout: &Layout,
        l: &LayerRef,
        max_size: u64,
    ) -> Result<PathBuf, ImageError> {
        let hex = l.diff_id.hex();
        let layers = self.sub("layers")?;
        let name = cstr(&hex)?;
        if let Ok(st) = sys::fs::lstatat(layers.as_fd(), &name) {
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                return Ok(self.layer_dir(&l.diff_id));
            }
        }
        let tmp = self.sub("tmp")?;
        self.sweep(tmp.as_fd());
        let work = format!("{hex}.{}.{}", std::process::id(), super::layout::unique());
        let lock_name = cstr(&format!("{work}.lock"))?;
        let lock = sys::fs::openat(
            tmp.as_fd(),
            &lock_name,
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            0o600,
        )
        .map_err(fs_err("create", &self.dir.join("tmp")))?;
        let _ = sys::fs::try_lock_exclusive(lock.as_fd());
        let work_c = cstr(&work)?;
        let result = self.unpack_into(layout, l, max_size, tmp.as_fd(), &work_c);
        let result = result.and_then(|()| {
            match sys::fs::renameat2(
                tmp.as_fd(),
                &work_c,
                layers.as_fd(),
                &name,
                libc::RENAME_NOREPLACE,
            ) {
                // Another run stored the same layer first: same content.
                Ok(()) | Err(Errno::EEXIST) | Err(Errno::ENOTEMPTY) => Ok(()),
                Err(e) => Err(fs_err("rename", &self.layer_dir(&l.diff_id))(e)),
            }
        });
        if sys::fs::lstatat(tmp.as_fd(), &work_c).is_ok() {
            let _ = remove_tree(tmp.as_fd(), &work_c, work.as_bytes());
        }
        let _ = sys::fs::unlinkat(tmp.as_fd(), &lock_name, 0);
        drop(lock);
        result.map(|()| self.layer_dir(&l.diff_id))
    }

    fn unpack_into(
        &self,
        layout: &Layout,
        l: &LayerRef,
        max_size: u64,
        tmp: BorrowedFd<'_>,
        work: &CString,
    ) -> Result<(), ImageError> {
        let (blob, _) = layout.open_blob(&l.blob)?;
        sys::fs::mkdirat(tmp, work, 0o755).map_err(fs_err("mkdir", &self.dir.join("tmp")))?;
        let target = sys::fs::open_dir_path(tmp, work).map_err(fs_err("open", &self.dir))?;
        let opts = UnpackOptions {
            userxattr: self.userxattr,
            same_owner: !self.userxattr && sys::proc::geteuid() == 0,
            xattrs: true,
            max_size,
        };
        let mut input = BufReader::with_capacity(256 * 1024, blob);
        let report = match super::unpack_at(&mut input, target, &opts) {
            Ok(report) => report,
            // A corrupted blob shows first as a broken stream or tar: name
            // the cause, not the symptom.
            Err(err) => {
                return Err(corrupted(layout, l).unwrap_or(ImageError::InLayer {
                    digest: l.blob.digest.clone(),
                    err,
                }))
            }
        };
        if report.digest != l.digest {
            return Err(ImageError::Digest {
                digest: l.blob.digest.clone(),
                reason: format!("content has digest {} (corrupted blob)", report.digest),
            });
        }
        if report.compression != l.compression {
            return Err(ImageError::MediaType(format!(
                "layer {}: media type {} but the blob is {:?}",
                l.blob.digest, l.blob.media_type, report.compression
            )));
        }
        if report.diff_id != l.diff_id {
            return Err(ImageError::Digest {
                digest: l.blob.digest.clone(),
                reason: format!(
                    "its tar has diff_id {}, the config says {}",
                    report.diff_id, l.diff_id
                ),
            });
        }
        Ok(())
    }

    /// Removes what killed unpacks left: `tmp/` entries whose lock file
    /// nobody holds (a live unpack holds its own).
    fn sweep(&self, tmp: BorrowedFd<'_>) {
        let Ok(dir) = sys::fs::openat(tmp, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0) else {
            return;
        };
        let Ok(entries) = sys::dir::read_all(dir.as_fd()) else {
            return;
        };
        for e in entries {
            let name = e.name.as_bytes();
            let Some(work) = name.strip_suffix(b".lock") else {
                continue;
            };
            let (Ok(lock_c), Ok(work_c)) = (CString::new(name), CString::new(work)) else {
                continue;
            };
            let Ok(lock) = sys::fs::openat(tmp, &lock_c, libc::O_RDWR | libc::O_NOFOLLOW, 0) else {
                continue;
            };
            if sys::fs::try_lock_exclusive(lock.as_fd()) != Ok(true) {
                continue;
            }
            if sys::fs::lstatat(tmp, &work_c).is_ok() {
                let _ = remove_tree(tmp, &work_c, work);
            }
            let _ = sys::fs::unlinkat(tmp, &lock_c, 0);
        }
        // A killed run can also leave a work dir whose lock file was
        // never made or already removed: only one without a lock file,
        // named after a dead process, is taken as debris.
        let Ok(entries) = sys::dir::read_all(dir.as_fd()) else {
            return;
        };
        let names: BTreeSet<Vec<u8>> = entries.iter().map(|e| e.name.as_bytes().to_vec()).collect();
        for n in &names {
            if n.ends_with(b".lock") || names.contains(&[n.as_slice(), b".lock"].concat()) {
                continue;
            }
            let pid = n
                .split(|c| *c == b'.')
                .nth(1)
                .and_then(|p| std::str::from_utf8(p).ok())
                .and_then(|p| p.parse::<i32>().ok());
            let dead =
                pid.is_some_and(|p| p > 0 && sys::proc::kill(p, 0) == Err(Errno(libc::ESRCH)));
            if let (true, Ok(c)) = (dead, CString::new(n.clone())) {
                let _ = remove_tree(tmp, &c, n);
            }
        }
    }

    /// Records that a run used `image` from `layout` (under `tag`), so
    /// `--store-ls` names it and `--store-prune` keeps its layers.
    pub fn record_use(
        &self,
        layout: &Layout,
        tag: Option<&str>,
        image: &Image,
    ) -> Result<(), ImageError> {
        let abs = fs::canonicalize(&layout.dir).map_err(io_err(&layout.dir))?;
        let rec = ImageRecord {
            layout: abs,
            tag: tag.map(String::from),
            manifest: image.manifest_desc.digest.clone(),
            diff_ids: image.layers.iter().map(|l| l.diff_id.to_string()).collect(),
        };
        self.write_record(&rec)
    }

    fn record_name(rec: &ImageRecord) -> String {
        let key = format!(
            "{}\0{}",
            rec.layout.display(),
            rec.tag.as_deref().unwrap_or("")
        );
        format!("{}.json", Digest::of(key.as_bytes()).hex())
    }

    fn write_record(&self, rec: &ImageRecord) -> Result<(), ImageError> {
        let data = serde_json::to_vec(rec)
            .map_err(|e| ImageError::Invalid(format!("encoding a record: {e}")))?;
        let dir = self.sub("images")?;
        let name = cstr(&Self::record_name(rec))?;
        let tmp = cstr(&format!(
            ".tmp-{}-{}",
            std::process::id(),
            super::layout::unique()
        ))?;
        let shown = self.dir.join("images");
        let fd = sys::fs::openat(
            dir.as_fd(),
            &tmp,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            0o644,
        )
        .map_err(fs_err("create", &shown))?;
        let written = super::unpack::write_all(fd.as_fd(), &data)
            .and_then(|()| sys::fs::renameat2(dir.as_fd(), &tmp, dir.as_fd(), &name, 0));
        if let Err(e) = written {
            let _ = sys::fs::unlinkat(dir.as_fd(), &tmp, 0);
            return Err(fs_err("write", &shown)(e));
        }
        Ok(())
    }

    fn records(&self) -> Result<Vec<(CString, ImageRecord)>, ImageError> {
        let dir = self.sub("images")?;
        let entries = sys::dir::read_all(dir.as_fd()).map_err(fs_err("read", &self.dir))?;
        let mut out = Vec::new();
        for e in entries {
            let n = e.name.as_bytes();
            if !n.ends_with(b".json") || n.starts_with(b".") {
                continue;
            }
            let Ok(c) = CString::new(n) else { continue };
            let Ok(fd) = sys::fs::openat(dir.as_fd(), &c, libc::O_RDONLY | libc::O_NOFOLLOW, 0)
            else {
                continue;
            };
            let mut text = Vec::new();
            if io::Read::read_to_end(&mut fs::File::from(fd), &mut text).is_err() {
                continue;
            }
            if let Ok(rec) = serde_json::from_slice::<ImageRecord>(&text) {
                out.push((c, rec));
            }
        }
        out.sort_by_key(|(_, r)| r.name());
        Ok(out)
    }

    /// The stored layers with their disk use and the recorded images
    /// that use them, sorted by diff_id.
    pub fn list(&self) -> Result<Vec<StoredLayer>, ImageError> {
        let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (_, rec) in self.records()? {
            for d in &rec.diff_ids {
                users.entry(d.clone()).or_default().push(rec.name());
            }
        }
        let layers = self.sub("layers")?;
        let entries = sys::dir::read_all(layers.as_fd()).map_err(fs_err("read", &self.dir))?;
        let mut out = Vec::new();
        for e in entries {
            let Some(diff_id) = e
                .name
                .to_str()
                .and_then(|h| Digest::parse(&format!("sha256:{h}")))
            else {
                continue;
            };
            let Ok(c) = CString::new(e.name.as_bytes()) else {
                continue;
            };
            out.push(StoredLayer {
                bytes: disk_use(layers.as_fd(), &c).unwrap_or(0),
                users: users.remove(&diff_id.to_string()).unwrap_or_default(),
                diff_id,
            });
        }
        out.sort_by_key(|l| l.diff_id);
        Ok(out)
    }

    /// Removes the layers no recorded image uses. Each record is checked
    /// against its layout first: one whose layout or tag is gone is
    /// dropped, one whose tag moved is updated. Returns the removed
    /// layers. Not to be run while a run of this store is starting.
    pub fn prune(&self) -> Result<Vec<Digest>, ImageError> {
        let images = self.sub("images")?;
        let mut used = BTreeSet::new();
        for (file, mut rec) in self.records()? {
            let current = Layout::open(&rec.layout).and_then(|l| l.image(rec.tag.as_deref()));
            match current {
                Ok(img) => {
                    rec.diff_ids = img.layers.iter().map(|l| l.diff_id.to_string()).collect();
                    rec.manifest = img.manifest_desc.digest.clone();
                    self.write_record(&rec)?;
                    used.extend(rec.diff_ids);
                }
                Err(_) => {
                    let _ = sys::fs::unlinkat(images.as_fd(), &file, 0);
                }
            }
        }
        let layers = self.sub("layers")?;
        let mut removed = Vec::new();
        for l in self.list()? {
            if used.contains(&l.diff_id.to_string()) {
                continue;
            }
            let hex = l.diff_id.hex();
            let c = cstr(&hex)?;
            remove_tree(layers.as_fd(), &c, hex.as_bytes()).map_err(ImageError::Layer)?;
            removed.push(l.diff_id);
        }
        Ok(removed)
    }
}

/// Bytes of disk used below `name` (a dir), through dir fds only.
fn disk_use(dir: BorrowedFd<'_>, name: &CString) -> Result<u64, Errno> {
    let fd = sys::fs::openat(
        dir,
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )?;
    let mut total = 0u64;
    for e in sys::dir::read_all(fd.as_fd())? {
        let Ok(c) = CString::new(e.name.as_bytes()) else {
            continue;
        };
        let st = sys::fs::lstatat(fd.as_fd(), &c)?;
        total += st.st_blocks as u64 * 512;
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            total += disk_use(fd.as_fd(), &c)?;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_dirs_for_root_and_users() {
        let h = Path::new("/home/u");
        assert_eq!(
            default_dir(0, None, Some(h)),
            Path::new("/var/lib/unionfs/layers")
        );
        assert_eq!(
            default_dir(1000, None, Some(h)),
            Path::new("/home/u/.local/share/unionfs/layers")
        );
        assert_eq!(
            default_dir(1000, Some(Path::new("/x")), Some(h)),
            Path::new("/x/unionfs/layers")
        );
        assert_eq!(
            default_dir(1000, Some(Path::new("rel")), Some(h)),
            Path::new("/home/u/.local/share/unionfs/layers")
        );
    }
}
