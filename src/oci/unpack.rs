//! OCI layer tar -> a lower dir in kernel overlay format: `.wh.NAME` becomes
//! a char 0/0 whiteout, `.wh..wh..opq` the opaque xattr on its dir, and a
//! user's `*.overlay.*` xattrs are stored escaped.
//!
//! Containment: member and hard link paths are split into components;
//! absolute paths and `..` are refused. Every component is opened with
//! `openat(O_PATH | O_NOFOLLOW | O_DIRECTORY)` from the target's fd, so a
//! path through a symlink (from this archive or already in the target)
//! fails instead of being followed, and the final object is always created
//! or changed with `*at()` calls that do not follow it. A model of the
//! archive's own symlinks also catches the trick in a dry run.

use std::collections::HashSet;
use std::ffi::CString;
use std::io::{self, BufReader, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::compress::{Compression, Decoder, TooLarge};
use super::sha256::HashReader;
use super::tar::{Header, Kind, Reader};
use super::{display, fs_err, LayerError, UnpackOptions, UnpackReport};
use crate::errno::Errno;
use crate::format::Format;
use crate::sys;
use crate::sys::fs::Time;

const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const WH_PREFIX: &[u8] = b".wh.";

/// A reader with its first bytes already taken (to sniff compression).
struct Peeked<'a> {
    head: Vec<u8>,
    pos: usize,
    inner: &'a mut dyn Read,
}

impl<'a> Peeked<'a> {
    fn new(inner: &'a mut dyn Read) -> Result<Peeked<'a>, LayerError> {
        let mut head = vec![0u8; 6];
        let mut got = 0;
        while got < head.len() {
            match inner.read(&mut head[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LayerError::Read(e)),
            }
        }
        head.truncate(got);
        Ok(Peeked {
            head,
            pos: 0,
            inner,
        })
    }
}

impl Read for Peeked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.head.len() {
            let n = buf.len().min(self.head.len() - self.pos);
            buf[..n].copy_from_slice(&self.head[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        self.inner.read(buf)
    }
}

/// Where [`unpack`] writes: a dir by path, an open dir, or nowhere (check).
pub(super) enum Into<'a> {
    Path(&'a Path),
    Fd(OwnedFd),
    Nowhere,
}

pub(super) fn unpack(
    input: &mut dyn Read,
    target: Into<'_>,
    opts: &UnpackOptions,
) -> Result<UnpackReport, LayerError> {
    let mut ctx = match target {
        Into::Path(t) => Some(Target::open(t, opts)?),
        Into::Fd(root) => Some(Target::new(root, opts)),
        Into::Nowhere => None,
    };
    let peeked = Peeked::new(input)?;
    let compression = Compression::sniff(&peeked.head)?;
    let raw = HashReader::new(peeked);
    let mut tar = HashReader::new(
        Decoder::new(
            BufReader::with_capacity(256 * 1024, raw),
            compression,
            opts.max_size,
        )
        .map_err(LayerError::Read)?,
    );
    let mut report = UnpackReport {
        diff_id: super::Digest([0; 32]),
        digest: super::Digest([0; 32]),
        compressed: compression != Compression::None,
        compression,
        entries: 0,
        whiteouts: 0,
        opaque_dirs: 0,
    };
    extract(&mut tar, ctx.as_mut(), &mut report)
        .and_then(|()| tar.drain().map_err(LayerError::Read))
        .map_err(too_large)?;
    let (diff_id, _, decoder) = tar.finish();
    // What the BufReader held unread was hashed when it was read.
    let mut raw = decoder.into_inner().into_inner();
    raw.drain().map_err(LayerError::Read)?;
    report.diff_id = diff_id;
    report.digest = raw.finish().0;
    if let Some(t) = ctx {
        t.finish_dirs()?;
    }
    Ok(report)
}

/// A read error that is the decoder's size cap becomes [`LayerError::TooLarge`].
fn too_large(e: LayerError) -> LayerError {
    match e {
        LayerError::Read(io) => match io.get_ref().and_then(|i| i.downcast_ref::<TooLarge>()) {
            Some(t) => LayerError::TooLarge(t.0),
            None => LayerError::Read(io),
        },
        e => e,
    }
}

/// Splits a member path (or hard link target, `what`) into components.
/// `./` and empty components are dropped; an absolute path or a `..`
/// component is refused.
fn components(path: &[u8], member: &[u8], what: &str) -> Result<Vec<Vec<u8>>, LayerError> {
    if path.starts_with(b"/") {
        return Err(refuse(member, &format!("{what} is absolute")));
    }
    let mut out = Vec::new();
    for c in path.split(|c| *c == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(refuse(member, &format!("{what} has a `..` component"))),
            _ if c.contains(&0) => return Err(refuse(member, &format!("NUL in {what}"))),
            _ => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

fn refuse(member: &[u8], reason: &str) -> LayerError {
    LayerError::Unsafe {
        member: display(member),
        reason: reason.to_string(),
    }
}

fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    comps.join(&b'/')
}

/// The archive's own symlinks (by joined path), to refuse a later member
/// that goes through one even when not writing anything.
#[derive(Default)]
struct Model {
    symlinks: HashSet<Vec<u8>>,
}

impl Model {
    fn check_prefixes(&self, comps: &[Vec<u8>], member: &[u8]) -> Result<(), LayerError> {
        for i in 1..comps.len() {
            let p = join(&comps[..i]);
            if self.symlinks.contains(&p) {
                return Err(refuse(
                    member,
                    &format!(
                        "path goes through `{}`, a symlink created earlier in the archive",
                        display(&p)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn created(&mut self, comps: &[Vec<u8>], kind: Kind) {
        let p = join(comps);
        if kind == Kind::Symlink {
            self.symlinks.insert(p);
        } else {
            self.symlinks.remove(&p);
        }
    }
}

fn extract<R: Read>(
    src: &mut R,
    mut target: Option<&mut Target>,
    report: &mut UnpackReport,
) -> Result<(), LayerError> {
    let mut reader = Reader::new(src);
    let mut model = Model::default();
    let mut buf = vec![0u8; 256 * 1024];
    while let Some(h) = reader.next_header()? {
        report.entries += 1;
        let comps = components(&h.path, &h.path, "path")?;
        model.check_prefixes(&comps, &h.path)?;
        let Some((name, parent)) = comps.split_last() else {
            if h.kind != Kind::Dir {
                return Err(refuse(&h.path, "names the target dir as a non-dir"));
            }
            if let Some(t) = target.as_deref_mut() {
                t.root_entry(&h)?;
            }
            continue;
        };
        if name.as_slice() == OPAQUE_MARKER {
            report.opaque_dirs += 1;
            if let Some(t) = target.as_deref_mut() {
                t.opaque(parent, &h)?;
            }
            model.created(parent, Kind::Dir);
            continue;
        }
        if name.starts_with(b".wh..wh.") {
            // Other AUFS metadata (`.wh..wh.plnk`, ...): not content.
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WH_PREFIX) {
            if hidden == b"." || hidden == b".." {
                return Err(refuse(&h.path, "whiteout of `.` or `..`"));
            }
            report.whiteouts += 1;
            if let Some(t) = target.as_deref_mut() {
                t.whiteout(parent, hidden, &h)?;
            }
            let mut c = parent.to_vec();
            c.push(hidden.to_vec());
            model.created(&c, Kind::Regular);
            continue;
        }
        if h.kind == Kind::HardLink {
            let lcomps = components(&h.link, &h.path, "hard link target")?;
            if lcomps.is_empty() {
                return Err(refuse(&h.path, "hard link to the target dir"));
            }
            model.check_prefixes(&lcomps, &h.path)?;
            if let Some(t) = target.as_deref_mut() {
                t.hard_link(parent, name, &lcomps, &h)?;
            }
            // A hard link to a symlink is a symlink too.
            let kind = if model.symlinks.contains(&join(&lcomps)) {
                Kind::Symlink
            } else {
                Kind::Regular
            };
            model.created(&comps, kind);
            continue;
        }
        if h.kind == Kind::Char && h.dev == (0, 0) {
            return Err(LayerError::Unsupported(format!(
                "{}: a char device 0/0 reads as a whiteout in a kernel-format layer",
                display(&h.path)
            )));
        }
        if let Some(t) = target.as_deref_mut() {
            t.object(parent, name, &h, &mut reader, &mut buf)?;
        }
        model.created(&comps, h.kind);
    }
    Ok(())
}

/// A dir's mode and mtime, applied after its contents are written.
struct DeferredDir {
    comps: Vec<Vec<u8>>,
    path: Vec<u8>,
    mode: u32,
    mtime: (i64, u32),
}

impl DeferredDir {
    fn new(comps: Vec<Vec<u8>>, h: &Header) -> DeferredDir {
        DeferredDir {
            comps,
            path: h.path.clone(),
            mode: h.mode & 0o7777,
            mtime: h.mtime,
        }
    }
}

/// The dir being written, and what is left to do at the end.
struct Target {
    root: OwnedFd,
    fmt: Format,
    same_owner: bool,
    xattrs: bool,
    /// Dirs whose mode and times are set last (children change mtimes, and
    /// a read-only mode would block writing them).
    dirs: Vec<DeferredDir>,
}

fn cstr(c: &[u8], member: &[u8]) -> Result<CString, LayerError> {
    CString::new(c).map_err(|_| refuse(member, "NUL in path"))
}

fn time(t: (i64, u32)) -> Time {
    Time::At(t.0, t.1 as i64)
}

impl Target {
    fn open(path: &Path, opts: &UnpackOptions) -> Result<Target, LayerError> {
        let p = CString::new(path.as_os_str().as_bytes()).map_err(|_| LayerError::Fs {
            op: "open target",
            path: path.display().to_string(),
            errno: Errno::EINVAL,
        })?;
        let root = sys::fs::openat(sys::fs::cwd(), &p, libc::O_PATH | libc::O_DIRECTORY, 0)
            .map_err(|errno| LayerError::Fs {
                op: "open target",
                path: path.display().to_string(),
                errno,
            })?;
        Ok(Target::new(root, opts))
    }

    fn new(root: OwnedFd, opts: &UnpackOptions) -> Target {
        Target {
            root,
            fmt: Format::new(opts.userxattr, false),
            same_owner: opts.same_owner,
            xattrs: opts.xattrs,
            dirs: Vec::new(),
        }
    }

    /// Opens the dir `comps` below the root, one component at a time and
    /// never through a symlink; missing dirs are created when `create`.
    fn walk(&self, comps: &[Vec<u8>], create: bool, member: &[u8]) -> Result<OwnedFd, LayerError> {
        let mut cur = sys::fs::openat(self.root.as_fd(), c".", libc::O_PATH | libc::O_DIRECTORY, 0)
            .map_err(fs_err("open", b"."))?;
        for (i, c) in comps.iter().enumerate() {
            let cn = cstr(c, member)?;
            let here = join(&comps[..=i]);
            let next = match sys::fs::open_dir_path(cur.as_fd(), &cn) {
                Err(e) if e == Errno::ENOENT && create => {
                    match sys::fs::mkdirat(cur.as_fd(), &cn, 0o755) {
                        Err(e) if e != Errno::EEXIST => return Err(fs_err("mkdir", &here)(e)),
                        _ => {}
                    }
                    sys::fs::open_dir_path(cur.as_fd(), &cn)
                }
                r => r,
            };
            cur = match next {
                Ok(fd) => fd,
                Err(e) if e == Errno::ENOTDIR || e == Errno::ELOOP => {
                    let st = sys::fs::lstatat(cur.as_fd(), &cn).map_err(fs_err("lstat", &here))?;
                    if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                        return Err(refuse(
                            member,
                            &format!("path goes through symlink `{}`", display(&here)),
                        ));
                    }
                    return Err(fs_err("open dir", &here)(Errno::ENOTDIR));
                }
                Err(e) => return Err(fs_err("open dir", &here)(e)),
            };
        }
        Ok(cur)
    }

    /// Makes room for a new object at `name`: removes what is there
    /// (recursively for a dir). Returns true when a dir is there and
    /// `keep_dir` asked to merge into it.
    fn clear(
        &self,
        dir: BorrowedFd<'_>,
        name: &CString,
        path: &[u8],
        keep_dir: bool,
    ) -> Result<bool, LayerError> {
        let st = match sys::fs::lstatat(dir, name) {
            Ok(st) => st,
            Err(e) if e == Errno::ENOENT => return Ok(false),
            Err(e) => return Err(fs_err("lstat", path)(e)),
        };
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            if keep_dir {
                return Ok(true);
            }
            remove_tree(dir, name, path)?;
        } else {
            sys::fs::unlinkat(dir, name, 0).map_err(fs_err("unlink", path))?;
        }
        Ok(false)
    }

    fn chown(&self, dir: BorrowedFd<'_>, name: &CString, h: &Header) -> Result<(), LayerError> {
        if !self.same_owner {
            return Ok(());
        }
        let (Ok(uid), Ok(gid)) = (u32::try_from(h.uid), u32::try_from(h.gid)) else {
            return Err(LayerError::Unsupported(format!(
                "{}: uid/gid beyond 32 bits",
                display(&h.path)
            )));
        };
        let flags = if name.to_bytes().is_empty() {
            libc::AT_EMPTY_PATH
        } else {
            libc::AT_SYMLINK_NOFOLLOW
        };
        sys::fs::fchownat(dir, name, uid, gid, flags).map_err(fs_err("chown", &h.path))
    }

    fn set_xattrs(
        &self,
        dir: BorrowedFd<'_>,
        name: &CString,
        h: &Header,
    ) -> Result<(), LayerError> {
        if !self.xattrs {
            return Ok(());
        }
        for (k, v) in &h.xattrs {
            // A user's `overlay.*` names are stored escaped in a layer.
            let real = self.fmt.real_xattr(k);
            let key = CString::new(real)
                .map_err(|_| LayerError::Malformed("NUL in xattr name".into()))?;
            sys::xattr::set(dir, name, &key, v, 0).map_err(|errno| LayerError::Fs {
                op: "setxattr",
                path: format!("{} ({})", display(&h.path), String::from_utf8_lossy(k)),
                errno,
            })?;
        }
        Ok(())
    }

    fn root_entry(&mut self, h: &Header) -> Result<(), LayerError> {
        self.chown(self.root.as_fd(), &CString::default(), h)?;
        self.set_xattrs(self.root.as_fd(), &CString::default(), h)?;
        self.dirs.push(DeferredDir::new(Vec::new(), h));
        Ok(())
    }

    fn opaque(&mut self, dir: &[Vec<u8>], h: &Header) -> Result<(), LayerError> {
        let fd = self.walk(dir, true, &h.path)?;
        self.fmt
            .set_opaque(fd.as_fd(), c"")
            .map_err(fs_err("set opaque xattr", &h.path))
    }

    fn whiteout(
        &mut self,
        parent: &[Vec<u8>],
        hidden: &[u8],
        h: &Header,
    ) -> Result<(), LayerError> {
        if hidden.is_empty() {
            return Err(LayerError::Malformed(format!(
                "{}: whiteout without a name",
                display(&h.path)
            )));
        }
        let fd = self.walk(parent, true, &h.path)?;
        let name = cstr(hidden, &h.path)?;
        if let Ok(st) = sys::fs::lstatat(fd.as_fd(), &name) {
            if Format::is_whiteout_stat(&st) {
                return Ok(());
            }
        }
        self.clear(fd.as_fd(), &name, &h.path, false)?;
        Format::make_whiteout(fd.as_fd(), &name).map_err(fs_err("mknod whiteout", &h.path))
    }

    fn hard_link(
        &mut self,
        parent: &[Vec<u8>],
        name: &[u8],
        link: &[Vec<u8>],
        h: &Header,
    ) -> Result<(), LayerError> {
        let (tname, tparent) = link
            .split_last()
            .ok_or_else(|| refuse(&h.path, "hard link to the target dir"))?;
        let tfd = self.walk(tparent, false, &h.path)?;
        let tn = cstr(tname, &h.path)?;
        let fd = self.walk(parent, true, &h.path)?;
        let n = cstr(name, &h.path)?;
        if join(link) == join(&[parent, &[name.to_vec()]].concat()) {
            return Ok(());
        }
        self.clear(fd.as_fd(), &n, &h.path, false)?;
        sys::fs::linkat(tfd.as_fd(), &tn, fd.as_fd(), &n, 0).map_err(|errno| LayerError::Fs {
            op: "link",
            path: format!("{} -> {}", display(&h.path), display(&h.link)),
            errno,
        })
    }

    fn object<R: Read>(
        &mut self,
        parent: &[Vec<u8>],
        name: &[u8],
        h: &Header,
        reader: &mut Reader<R>,
        buf: &mut [u8],
    ) -> Result<(), LayerError> {
        let dir = self.walk(parent, true, &h.path)?;
        let d = dir.as_fd();
        let n = cstr(name, &h.path)?;
        let merge = self.clear(d, &n, &h.path, h.kind == Kind::Dir)?;
        let path = &h.path;
        let perm = h.mode & 0o7777;
        match h.kind {
            Kind::Dir => {
                if !merge {
                    sys::fs::mkdirat(d, &n, 0o700).map_err(fs_err("mkdir", path))?;
                }
                self.chown(d, &n, h)?;
                self.set_xattrs(d, &n, h)?;
                let mut comps = parent.to_vec();
                comps.push(name.to_vec());
                self.dirs.push(DeferredDir::new(comps, h));
                return Ok(());
            }
            Kind::Regular => {
                let fd = sys::fs::openat(
                    d,
                    &n,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                    0o600,
                )
                .map_err(fs_err("create", path))?;
                loop {
                    let k = reader.read_data(buf)?;
                    if k == 0 {
                        break;
                    }
                    write_all(fd.as_fd(), &buf[..k]).map_err(fs_err("write", path))?;
                }
                self.chown(d, &n, h)?;
                sys::fs::fchmod(fd.as_fd(), perm).map_err(fs_err("chmod", path))?;
            }
            Kind::Symlink => {
                let target = CString::new(h.link.clone())
                    .map_err(|_| LayerError::Malformed("NUL in symlink target".into()))?;
                sys::fs::symlinkat(&target, d, &n).map_err(fs_err("symlink", path))?;
                self.chown(d, &n, h)?;
            }
            Kind::Char | Kind::Block | Kind::Fifo => {
                let (ft, rdev) = match h.kind {
                    Kind::Char => (libc::S_IFCHR, libc::makedev(h.dev.0, h.dev.1)),
                    Kind::Block => (libc::S_IFBLK, libc::makedev(h.dev.0, h.dev.1)),
                    _ => (libc::S_IFIFO, 0),
                };
                sys::fs::mknodat(d, &n, ft | 0o600, rdev).map_err(fs_err("mknod", path))?;
                self.chown(d, &n, h)?;
                let pfd = sys::fs::open_path(d, &n).map_err(fs_err("open", path))?;
                sys::fs::fchmodat(pfd.as_fd(), c"", perm).map_err(fs_err("chmod", path))?;
            }
            Kind::HardLink => return Ok(()),
        }
        self.set_xattrs(d, &n, h)?;
        sys::fs::utimensat(
            d,
            &n,
            time(h.mtime),
            time(h.mtime),
            libc::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(fs_err("set times", path))
    }

    /// Sets dir modes and times, children before parents.
    fn finish_dirs(self) -> Result<(), LayerError> {
        for d in self.dirs.iter().rev() {
            // A dir later replaced (or moved under a symlink) is skipped.
            let Ok(fd) = self.walk(&d.comps, false, &d.path) else {
                continue;
            };
            sys::fs::fchmodat(fd.as_fd(), c"", d.mode).map_err(fs_err("chmod", &d.path))?;
            sys::fs::futimens_any(fd.as_fd(), time(d.mtime), time(d.mtime))
                .map_err(fs_err("set times", &d.path))?;
        }
        Ok(())
    }
}

pub(super) fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> Result<(), Errno> {
    while !data.is_empty() {
        let n = sys::fs::write(fd, data)?;
        if n == 0 {
            return Err(Errno::EIO);
        }
        data = &data[n..];
    }
    Ok(())
}

/// Removes `name` (a dir) and everything below it, through dir fds only.
/// Each dir is made 0700 first, so that an unprivileged owner can empty a
/// dir the layer made read-only.
pub(super) fn remove_tree(
    dir: BorrowedFd<'_>,
    name: &CString,
    path: &[u8],
) -> Result<(), LayerError> {
    let handle = sys::fs::open_dir_path(dir, name).map_err(fs_err("open dir", path))?;
    let _ = sys::fs::fchmodat(handle.as_fd(), c"", 0o700);
    let fd = sys::fs::reopen(handle.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY)
        .map_err(fs_err("open dir", path))?;
    let entries = sys::dir::read_all(fd.as_fd()).map_err(fs_err("getdents", path))?;
    for e in entries {
        let child = [path, b"/", e.name.as_bytes()].concat();
        let cn =
            CString::new(e.name.as_bytes()).map_err(|_| LayerError::Malformed("NUL".into()))?;
        let st = sys::fs::lstatat(fd.as_fd(), &cn).map_err(fs_err("lstat", &child))?;
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            remove_tree(fd.as_fd(), &cn, &child)?;
        } else {
            sys::fs::unlinkat(fd.as_fd(), &cn, 0).map_err(fs_err("unlink", &child))?;
        }
    }
    sys::fs::unlinkat(dir, name, libc::AT_REMOVEDIR).map_err(fs_err("rmdir", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_components() {
        let c = components(b"./a//b/./c/", b"m", "path").unwrap();
        assert_eq!(c, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert!(components(b"/etc/x", b"m", "path").is_err());
        assert!(components(b"a/../../x", b"m", "path").is_err());
        assert!(components(b"..", b"m", "path").is_err());
        assert!(components(b"./", b"m", "path").unwrap().is_empty());
    }

    #[test]
    fn model_refuses_paths_through_archive_symlinks() {
        let mut m = Model::default();
        m.created(&[b"a".to_vec()], Kind::Symlink);
        let through = vec![b"a".to_vec(), b"etc".to_vec(), b"x".to_vec()];
        assert!(m.check_prefixes(&through, b"a/etc/x").is_err());
        assert!(m.check_prefixes(&[b"a".to_vec()], b"a").is_ok());
        m.created(&[b"a".to_vec()], Kind::Dir);
        assert!(m.check_prefixes(&through, b"a/etc/x").is_ok());
    }
}
