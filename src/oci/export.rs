//! Upper dir -> OCI layer tar. The walk goes through dir fds only: each
//! entry is reached with one `*at()` call on its parent's fd and
//! `O_NOFOLLOW`, so a symlink inside the upper is never followed and depth
//! is not limited by PATH_MAX (only by open fds: one per level).
//!
//! Output order is deterministic: in each dir, whiteouts (`.wh.NAME`) come
//! first, then the other entries, each group sorted by name bytes; a dir's
//! opaque marker (`.wh..wh..opq`) follows the dir's own entry.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::{BufWriter, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::compress::{Compression, Encoder};
use super::sha256::{HashWriter, Sha256};
use super::tar::{self, Header, Kind};
use super::{display, fs_err, ExportOptions, LayerDigests, LayerError, MtimePolicy};
use crate::errno::Errno;
use crate::format::{EntryKind, Format, Opacity};
use crate::sys;

const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const WH_PREFIX: &[u8] = b".wh.";

type Out<'a> = BufWriter<&'a mut dyn Write>;

/// Where tar bytes go: hashed (diff_id), then compressed and hashed again
/// (blob digest). A plain tar is hashed once: its digest is its diff_id.
struct Sink<'a> {
    /// `None` for a plain tar.
    tar_hash: Option<Sha256>,
    tar_len: u64,
    compression: Compression,
    out: Encoder<HashWriter<Out<'a>>>,
}

impl<'a> Sink<'a> {
    fn new(out: &'a mut dyn Write, compression: Compression) -> Result<Sink<'a>, LayerError> {
        let buf = BufWriter::with_capacity(256 * 1024, out);
        Ok(Sink {
            tar_hash: (compression != Compression::None).then(Sha256::new),
            tar_len: 0,
            compression,
            out: Encoder::new(HashWriter::new(buf), compression).map_err(LayerError::Write)?,
        })
    }

    fn put(&mut self, data: &[u8]) -> Result<(), LayerError> {
        if let Some(h) = &mut self.tar_hash {
            h.update(data);
        }
        self.tar_len += data.len() as u64;
        self.out.write_all(data).map_err(LayerError::Write)
    }

    fn finish(self) -> Result<LayerDigests, LayerError> {
        let (digest, size, mut buf) = self.out.finish().map_err(LayerError::Write)?.finish();
        buf.flush().map_err(LayerError::Write)?;
        Ok(LayerDigests {
            diff_id: self.tar_hash.map_or(digest, Sha256::finish),
            digest,
            size,
            tar_size: self.tar_len,
            compression: self.compression,
        })
    }
}

struct Exporter<'a> {
    fmt: Format,
    mtime: MtimePolicy,
    excludes: Vec<Vec<u8>>,
    /// (st_dev, st_ino) of multiply linked non-dirs -> first tar path.
    links: HashMap<(u64, u64), Vec<u8>>,
    sink: Sink<'a>,
}

/// An exclude pattern as a relative path without `./`, `/` ends or `//`.
fn normalize(p: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for c in p.as_os_str().as_bytes().split(|c| *c == b'/') {
        if c.is_empty() || c == b"." {
            continue;
        }
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(c);
    }
    out
}

fn file_type(st: &libc::stat) -> u32 {
    st.st_mode & libc::S_IFMT
}

pub(super) fn export(
    upper: &Path,
    out: &mut dyn Write,
    opts: &ExportOptions,
) -> Result<LayerDigests, LayerError> {
    let up = CString::new(upper.as_os_str().as_bytes()).map_err(|_| LayerError::Fs {
        op: "open upper",
        path: upper.display().to_string(),
        errno: Errno::EINVAL,
    })?;
    // The caller's path may go through symlinks; nothing below it will.
    let root = sys::fs::openat(sys::fs::cwd(), &up, libc::O_RDONLY | libc::O_DIRECTORY, 0)
        .map_err(|errno| LayerError::Fs {
            op: "open upper",
            path: upper.display().to_string(),
            errno,
        })?;
    let mut ex = Exporter {
        fmt: Format::new(opts.userxattr, false),
        mtime: opts.mtime,
        excludes: opts.exclude.iter().map(|p| normalize(p)).collect(),
        links: HashMap::new(),
        sink: Sink::new(out, opts.compression)?,
    };
    // The root of an upper is never opaque for the merge; only its
    // `opaque=x` (xattr whiteouts inside) matters.
    let xw = ex.fmt.opacity(root.as_fd(), c"", false) == Opacity::XattrWhiteouts;
    ex.dir(root.as_fd(), &[], xw, false)?;
    ex.sink.put(&[0u8; 2 * tar::BLOCK])?;
    ex.sink.finish()
}

impl Exporter<'_> {
    fn excluded(&self, rel: &[u8]) -> bool {
        self.excludes.iter().any(|e| e == rel)
    }

    fn time(&self, st: &libc::stat) -> (i64, u32) {
        let t = (st.st_mtime, st.st_mtime_nsec.clamp(0, 999_999_999) as u32);
        match self.mtime {
            MtimePolicy::Keep => t,
            MtimePolicy::Fixed(s) => (s, 0),
            MtimePolicy::Clamp(s) => {
                if t.0 > s || (t.0 == s && t.1 > 0) {
                    (s, 0)
                } else {
                    t
                }
            }
        }
    }

    fn header(&self, path: Vec<u8>, kind: Kind, st: &libc::stat) -> Header {
        let mut h = Header::new(path, kind);
        h.mode = st.st_mode & 0o7777;
        h.uid = st.st_uid as u64;
        h.gid = st.st_gid as u64;
        h.mtime = self.time(st);
        h
    }

    /// Visible user/trusted/security xattrs of `dir`/`name`. Refuses what a
    /// layer cannot carry: renamed dirs (`overlay.redirect`) and metadata-only
    /// copy-ups (`overlay.metacopy`), whose content lives in the lowers.
    fn xattrs(
        &self,
        dir: BorrowedFd<'_>,
        name: &CString,
        path: &[u8],
        h: &mut Header,
    ) -> Result<(), LayerError> {
        let names = match sys::xattr::list(dir, name) {
            Ok(n) => n,
            Err(e) if e == Errno::ENOTSUP => return Ok(()),
            Err(e) => return Err(fs_err("listxattr", path)(e)),
        };
        for real in names {
            if self.fmt.is_other_mode_xattr(&real) {
                return Err(LayerError::Unsupported(format!(
                    "{}: has {}, so the upper was written with{} userxattr; export \
                     it {} --userxattr",
                    display(path),
                    String::from_utf8_lossy(&real),
                    if real.starts_with(b"user.") {
                        ""
                    } else {
                        "out"
                    },
                    if real.starts_with(b"user.") {
                        "with"
                    } else {
                        "without"
                    },
                )));
            }
            if self.fmt.is_private_xattr(&real) {
                if real.ends_with(b".redirect") || real.ends_with(b".metacopy") {
                    return Err(LayerError::Unsupported(format!(
                        "{}: has {} (a renamed dir or a metadata-only copy-up); its \
                         content lives in the lower layers and cannot be exported from \
                         the upper alone (mount with redirect_dir=off, metacopy=off)",
                        display(path),
                        String::from_utf8_lossy(&real)
                    )));
                }
                continue;
            }
            let Some(visible) = self.fmt.visible_xattr(&real) else {
                continue;
            };
            let ns_ok = [&b"user."[..], b"trusted.", b"security."]
                .iter()
                .any(|ns| visible.starts_with(ns));
            if !ns_ok {
                continue;
            }
            let Ok(key) = CString::new(real) else {
                continue;
            };
            match sys::xattr::get(dir, name, &key) {
                Ok(v) => {
                    h.xattrs.insert(visible, v);
                }
                Err(e) if e == Errno::ENODATA => {}
                Err(e) => return Err(fs_err("getxattr", path)(e)),
            }
        }
        Ok(())
    }

    /// Exports the entries of dir `fd` whose tar path is `rel` ("" or
    /// "a/b/"). `xw`: the dir is `opaque=x`; `opaque`: it is `opaque=y`.
    fn dir(
        &mut self,
        fd: BorrowedFd<'_>,
        rel: &[u8],
        xw: bool,
        opaque: bool,
    ) -> Result<(), LayerError> {
        let shown = if rel.is_empty() { &b"."[..] } else { rel };
        let mut entries: Vec<Vec<u8>> = sys::dir::read_all(fd)
            .map_err(fs_err("getdents", shown))?
            .into_iter()
            .map(|e| e.name.as_bytes().to_vec())
            .collect();
        entries.sort();
        let mut objects = Vec::new();
        for name in entries {
            let path = [rel, &name].concat();
            if self.excluded(&path) {
                continue;
            }
            let cname = CString::new(name.clone()).map_err(|_| LayerError::Fs {
                op: "name",
                path: display(&path),
                errno: Errno::EINVAL,
            })?;
            let st = match sys::fs::lstatat(fd, &cname) {
                Ok(st) => st,
                // Removed while we read the dir: not part of the layer.
                Err(e) if e == Errno::ENOENT => continue,
                Err(e) => return Err(fs_err("lstat", &path)(e)),
            };
            if self.fmt.classify(fd, &cname, &st, xw) == EntryKind::Whiteout {
                // In an opaque dir there is nothing below left to hide.
                if !opaque {
                    let wh = [rel, WH_PREFIX, &name].concat();
                    let mut h = self.header(wh, Kind::Regular, &st);
                    h.mode = 0o600;
                    self.sink.put(&h.encode())?;
                }
                continue;
            }
            if name.starts_with(WH_PREFIX) {
                return Err(LayerError::Unsupported(format!(
                    "{}: a file named .wh.* cannot be stored in an OCI layer (it would \
                     read as a whiteout)",
                    display(&path)
                )));
            }
            objects.push((cname, st, path));
        }
        for (cname, st, path) in objects {
            self.object(fd, &cname, &st, path)?;
        }
        Ok(())
    }

    fn object(
        &mut self,
        dir: BorrowedFd<'_>,
        cname: &CString,
        st: &libc::stat,
        path: Vec<u8>,
    ) -> Result<(), LayerError> {
        let ft = file_type(st);
        if ft == libc::S_IFDIR {
            return self.subdir(dir, cname, st, path);
        }
        let kind = match ft {
            libc::S_IFREG => Kind::Regular,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFCHR => Kind::Char,
            libc::S_IFBLK => Kind::Block,
            libc::S_IFIFO => Kind::Fifo,
            _ => {
                // Sockets have no tar form; GNU tar skips them too.
                log::warn!("layer export: skipping socket {}", display(&path));
                return Ok(());
            }
        };
        if st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key) {
                let mut h = self.header(path, Kind::HardLink, st);
                h.link = first.clone();
                return self.sink.put(&h.encode());
            }
            self.links.insert(key, path.clone());
        }
        let mut h = self.header(path.clone(), kind, st);
        self.xattrs(dir, cname, &path, &mut h)?;
        match kind {
            Kind::Symlink => {
                h.link = sys::fs::readlinkat(dir, cname).map_err(fs_err("readlink", &path))?;
            }
            Kind::Char | Kind::Block => {
                h.dev = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
            }
            Kind::Regular => {
                h.size = st.st_size.max(0) as u64;
                let fd = self.open_file(dir, cname, st, &path)?;
                self.sink.put(&h.encode())?;
                return self.content(fd.as_fd(), h.size, &path);
            }
            _ => {}
        }
        self.sink.put(&h.encode())
    }

    fn open_file(
        &self,
        dir: BorrowedFd<'_>,
        cname: &CString,
        st: &libc::stat,
        path: &[u8],
    ) -> Result<OwnedFd, LayerError> {
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NOCTTY;
        let fd = match sys::fs::openat(dir, cname, flags | libc::O_NOATIME, 0) {
            Err(e) if e == Errno::EPERM => sys::fs::openat(dir, cname, flags, 0),
            r => r,
        }
        .map_err(fs_err("open", path))?;
        let now = sys::fs::fstat(fd.as_fd()).map_err(fs_err("fstat", path))?;
        if now.st_ino != st.st_ino || now.st_dev != st.st_dev {
            return Err(changed(path));
        }
        Ok(fd)
    }

    fn content(&mut self, fd: BorrowedFd<'_>, size: u64, path: &[u8]) -> Result<(), LayerError> {
        let mut buf = vec![0u8; 256 * 1024];
        let mut off: u64 = 0;
        while off < size {
            let want = (size - off).min(buf.len() as u64) as usize;
            let n =
                sys::fs::pread(fd, &mut buf[..want], off as i64).map_err(fs_err("read", path))?;
            if n == 0 {
                return Err(changed(path));
            }
            self.sink.put(&buf[..n])?;
            off += n as u64;
        }
        self.sink.put(&[0u8; tar::BLOCK][..tar::padding(size)])
    }

    fn subdir(
        &mut self,
        dir: BorrowedFd<'_>,
        cname: &CString,
        st: &libc::stat,
        path: Vec<u8>,
    ) -> Result<(), LayerError> {
        let fd = sys::fs::openat(
            dir,
            cname,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .map_err(fs_err("open dir", &path))?;
        let now = sys::fs::fstat(fd.as_fd()).map_err(fs_err("fstat", &path))?;
        if now.st_ino != st.st_ino || now.st_dev != st.st_dev {
            return Err(changed(&path));
        }
        let mut rel = path;
        rel.push(b'/');
        let mut h = self.header(rel.clone(), Kind::Dir, st);
        self.xattrs(dir, cname, &rel, &mut h)?;
        self.sink.put(&h.encode())?;
        let opacity = self.fmt.opacity(dir, cname, false);
        let opaque = opacity == Opacity::Opaque;
        if opaque {
            let mut m = self.header([&rel[..], OPAQUE_MARKER].concat(), Kind::Regular, st);
            m.mode = st.st_mode & 0o777;
            self.sink.put(&m.encode())?;
        }
        self.dir(fd.as_fd(), &rel, opacity == Opacity::XattrWhiteouts, opaque)
    }
}

fn changed(path: &[u8]) -> LayerError {
    LayerError::Fs {
        op: "export (entry changed while it was read; export an unmounted upper)",
        path: display(path),
        errno: Errno::ESTALE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclude_patterns_normalize() {
        assert_eq!(normalize(Path::new("/tmp/")), b"tmp");
        assert_eq!(normalize(Path::new("./var//cache")), b"var/cache");
    }
}
