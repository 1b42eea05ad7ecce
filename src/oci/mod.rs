//! OCI image layers: export an upper dir as a layer tarball, and unpack a
//! layer tarball as a kernel-format lower dir.
//!
//! - [`export`]: walks an (unmounted) upper dir and writes an OCI layer
//!   (image-spec `layer.md`): whiteouts (char 0/0, or xattr whiteouts in an
//!   `opaque=x` dir) become `.wh.NAME`, opaque dirs get `.wh..wh..opq`;
//!   owners, modes, ns mtimes, xattrs (minus the overlay-private ones),
//!   symlinks, hard links, devices and fifos are kept. Output is
//!   reproducible; returns the diff_id (sha256 of the tar) and the blob
//!   digest (of the bytes written, gzip or not).
//! - [`unpack`]: the reverse, writing kernel-format whiteouts and opaque
//!   xattrs, and refusing members that would land outside the target.
//! - [`check`]: a dry run of [`unpack`] (parse, digest, containment checks).
//! - [`export_file`], [`unpack_file`]: the same on files, for command lines
//!   (`unpack_file` checks the whole archive before writing anything).
//!
//! Submodules: `tar` (format), `compress` (gzip and zstd over flate2 and
//! zstd, with a size cap), `sha256` (over sha2), `export`, `unpack`.
//! Nothing here needs a mount.

pub mod commit;
pub mod compress;
mod export;
pub mod layout;
mod sha256;
pub mod store;
mod tar;
mod unpack;

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub use compress::Compression;
pub use sha256::Digest;

use crate::errno::Errno;

/// How exported entries get their mtime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MtimePolicy {
    /// The upper's own mtimes, with nanoseconds.
    #[default]
    Keep,
    /// `SOURCE_DATE_EPOCH` style: mtimes later than this (seconds since
    /// the epoch) become exactly this.
    Clamp(i64),
    /// Every entry gets this mtime.
    Fixed(i64),
}

/// Options of [`export`].
#[derive(Clone, Debug, Default)]
pub struct ExportOptions {
    /// The upper uses `user.overlay.*` xattrs (overlayfs `userxattr`).
    pub userxattr: bool,
    pub mtime: MtimePolicy,
    /// How the tar is compressed (the diff_id stays the digest of the
    /// plain tar).
    pub compression: Compression,
    /// Relative paths in the upper to leave out, each with its subtree
    /// (`tmp`, `var/cache/apt`); exact paths, no globs.
    pub exclude: Vec<PathBuf>,
}

/// Options of [`unpack`].
#[derive(Clone, Debug)]
pub struct UnpackOptions {
    /// Write `user.overlay.opaque` (and escape `user.overlay.*` xattrs)
    /// instead of the `trusted.` names.
    pub userxattr: bool,
    /// Restore owners (default: when running as root).
    pub same_owner: bool,
    /// Restore xattrs (default on).
    pub xattrs: bool,
    /// Refuse a layer whose tar is larger than this many bytes (default
    /// [`DEFAULT_MAX_LAYER_SIZE`]): a small blob must not expand without
    /// bound.
    pub max_size: u64,
}

/// 64 GiB: larger than any real layer, small enough to stop a bomb before
/// it fills a disk.
pub const DEFAULT_MAX_LAYER_SIZE: u64 = 64 << 30;

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            userxattr: false,
            same_owner: crate::sys::proc::geteuid() == 0,
            xattrs: true,
            max_size: DEFAULT_MAX_LAYER_SIZE,
        }
    }
}

/// What [`export`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerDigests {
    /// sha256 of the uncompressed tar: the OCI `diff_id`.
    pub diff_id: Digest,
    /// sha256 of the bytes written (the blob digest of a manifest); equal
    /// to `diff_id` without gzip.
    pub digest: Digest,
    /// Bytes written.
    pub size: u64,
    /// Bytes of the uncompressed tar.
    pub tar_size: u64,
    pub compression: Compression,
}

/// What [`unpack`] or [`check`] read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnpackReport {
    /// sha256 of the uncompressed tar stream (to the end of input).
    pub diff_id: Digest,
    /// sha256 of the input as given.
    pub digest: Digest,
    /// The input was compressed (gzip or zstd).
    pub compressed: bool,
    pub compression: Compression,
    /// Tar members (PAX and GNU meta headers not counted).
    pub entries: u64,
    pub whiteouts: u64,
    pub opaque_dirs: u64,
}

/// Why an export or unpack failed.
#[derive(Debug)]
pub enum LayerError {
    /// A filesystem call failed on `path` (relative to the upper or target).
    Fs {
        op: &'static str,
        path: String,
        errno: Errno,
    },
    /// Writing the layer stream failed.
    Write(io::Error),
    /// Reading the layer stream failed (also a corrupt gzip or zstd stream).
    Read(io::Error),
    /// The tar grew past the cap ([`UnpackOptions::max_size`]), in bytes.
    TooLarge(u64),
    /// The input is not a valid tar archive.
    Malformed(String),
    /// The archive tries to write outside the target; it was refused at
    /// this member and nothing was written outside the target.
    Unsafe { member: String, reason: String },
    /// Valid input or upper content a layer cannot carry here.
    Unsupported(String),
}

impl fmt::Display for LayerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerError::Fs { op, path, errno } => write!(f, "{op} {path}: {errno}"),
            LayerError::Write(e) => write!(f, "writing the layer: {e}"),
            LayerError::Read(e) => write!(f, "reading the layer: {e}"),
            LayerError::TooLarge(cap) => write!(
                f,
                "the layer expands past {cap} bytes (--max-layer-size); refused as a \
                 decompression bomb"
            ),
            LayerError::Malformed(m) => write!(f, "malformed layer tar: {m}"),
            LayerError::Unsafe { member, reason } => {
                write!(f, "refusing layer: member {member:?}: {reason}")
            }
            LayerError::Unsupported(m) => write!(f, "unsupported: {m}"),
        }
    }
}

impl std::error::Error for LayerError {}

/// Lossy text of a path as bytes, for messages.
fn display(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// Maps an errno from `op` on `path` to a [`LayerError::Fs`].
fn fs_err<'a>(op: &'static str, path: &'a [u8]) -> impl FnOnce(Errno) -> LayerError + 'a {
    move |errno| LayerError::Fs {
        op,
        path: display(path),
        errno,
    }
}

/// Writes the upper dir `upper` (which must not be mounted or in use) as an
/// OCI layer tar to `out`.
pub fn export(
    upper: &Path,
    out: &mut dyn Write,
    opts: &ExportOptions,
) -> Result<LayerDigests, LayerError> {
    export::export(upper, out, opts)
}

/// Whether `upper`/`name` is a dir made in that upper (not copied up, not
/// opaque): one with no overlay xattrs of either mode.
pub fn is_plain_upper_dir(upper: &Path, name: &str) -> bool {
    upper_overlay_keys(upper, Path::new(name)).is_some_and(|keys| keys.is_empty())
}

/// The overlay keys (`origin`, `opaque`, ...) among the xattrs of
/// `upper`/`name`, of either mode; None if they cannot be read.
pub fn upper_overlay_keys(upper: &Path, name: &Path) -> Option<Vec<String>> {
    use std::os::fd::AsFd;
    use std::os::unix::ffi::OsStrExt;
    let up = std::ffi::CString::new(upper.as_os_str().as_bytes()).ok()?;
    let cn = std::ffi::CString::new(name.as_os_str().as_bytes()).ok()?;
    let dir = crate::sys::fs::openat(
        crate::sys::fs::cwd(),
        &up,
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    )
    .ok()?;
    let keys = crate::sys::xattr::list(dir.as_fd(), &cn).ok()?;
    Some(
        keys.iter()
            .filter_map(|k| crate::format::overlay_key(k).map(|(_, key)| key.to_owned()))
            .collect(),
    )
}

/// [`export`] to a file, written under a temporary name in the same dir
/// and renamed into place once complete.
pub fn export_file(
    upper: &Path,
    file: &Path,
    opts: &ExportOptions,
) -> Result<LayerDigests, LayerError> {
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    let tmp = file.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(LayerError::Write)?;
        let d = export(upper, &mut f, opts)?;
        f.sync_all().map_err(LayerError::Write)?;
        fs::rename(&tmp, file).map_err(LayerError::Write)?;
        Ok(d)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Unpacks an OCI layer tar (plain, gzip or zstd) into `target` (an existing
/// dir) as a kernel-format lower layer. Stops at the first bad member; the
/// members before it stay in `target` (use [`unpack_file`] or [`check`]
/// first to refuse a bad archive before writing anything).
pub fn unpack(
    tar: &mut dyn Read,
    target: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackReport, LayerError> {
    unpack::unpack(tar, unpack::Into::Path(target), opts)
}

/// [`unpack`] into an open dir (any fd on it, `O_PATH` is enough).
pub fn unpack_at(
    tar: &mut dyn Read,
    target: OwnedFd,
    opts: &UnpackOptions,
) -> Result<UnpackReport, LayerError> {
    unpack::unpack(tar, unpack::Into::Fd(target), opts)
}

/// Reads a layer without writing anything: digests, counts, and every
/// check of [`unpack`] that does not need the target (absolute and `..`
/// paths, paths through the archive's own symlinks, hard links leaving
/// the archive root, malformed tar, gzip or zstd, the size cap).
pub fn check(tar: &mut dyn Read) -> Result<UnpackReport, LayerError> {
    check_with(tar, &UnpackOptions::default())
}

/// [`check`] with the size cap of `opts`.
pub fn check_with(tar: &mut dyn Read, opts: &UnpackOptions) -> Result<UnpackReport, LayerError> {
    unpack::unpack(tar, unpack::Into::Nowhere, opts)
}

/// [`check`]s the file, then unpacks it into `target` (created if
/// missing): a refused archive writes nothing.
pub fn unpack_file(
    file: &Path,
    target: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackReport, LayerError> {
    let open = || {
        fs::File::open(file)
            .map(io::BufReader::new)
            .map_err(LayerError::Read)
    };
    let checked = check_with(&mut open()?, opts)?;
    match fs::create_dir(target) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(LayerError::Write(e)),
        _ => {}
    }
    let report = unpack(&mut open()?, target, opts)?;
    if report.digest != checked.digest {
        return Err(LayerError::Malformed(format!(
            "{} changed while it was unpacked",
            file.display()
        )));
    }
    Ok(report)
}
