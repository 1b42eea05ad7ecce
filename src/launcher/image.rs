//! Looking into the image without leaving it: where a path such as `etc`
//! resolves across the lower layers (for the init layer, before the mount),
//! reading a file of the mounted rootfs, and making a mount point in it.
//! Every lookup goes through dir fds with `O_NOFOLLOW` or `RESOLVE_IN_ROOT`,
//! so a symlink in the image never reaches a host path.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::seam::{DirAttrs, ImageDir};
use crate::errno::{Errno, Result};
use crate::format::Format;
use crate::sys;

/// As the kernel's limit on nested symlinks.
const MAX_SYMLINKS: usize = 40;
/// More than any passwd or group file holds.
const MAX_READ: u64 = 16 << 20;

fn cstr(b: &[u8]) -> Result<CString> {
    CString::new(b).map_err(|_| Errno::EINVAL)
}

fn open_root(p: &Path) -> Result<OwnedFd> {
    sys::ns::open_dir_handle(&cstr(p.as_os_str().as_bytes())?)
}

enum Found {
    Missing,
    Dir(DirAttrs),
    Symlink(Vec<u8>),
    Other,
}

fn attrs(st: &libc::stat) -> DirAttrs {
    DirAttrs {
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
        mtime: (st.st_mtime, st.st_mtime_nsec),
    }
}

/// Opens `dirs` below `root`, each a real dir (never a symlink).
fn walk(root: BorrowedFd<'_>, dirs: &[ImageDir]) -> Result<OwnedFd> {
    let mut fd = sys::fs::open_dir_path(root, c".")?;
    for d in dirs {
        fd = sys::fs::open_dir_path(fd.as_fd(), &cstr(d.name.as_bytes())?)?;
    }
    Ok(fd)
}

/// What the union of `roots` (top first) shows at `parents/name`: the
/// topmost layer that has the name decides, a whiteout hides it.
fn lookup(roots: &[OwnedFd], parents: &[ImageDir], name: &str) -> Result<Found> {
    let cname = cstr(name.as_bytes())?;
    let oci_whiteout = cstr(format!(".wh.{name}").as_bytes())?;
    for root in roots {
        let Ok(dir) = walk(root.as_fd(), parents) else {
            continue;
        };
        if sys::fs::lstatat(dir.as_fd(), &oci_whiteout).is_ok() {
            return Ok(Found::Missing);
        }
        let st = match sys::fs::lstatat(dir.as_fd(), &cname) {
            Ok(st) => st,
            Err(e) if e == Errno::ENOENT => continue,
            Err(e) => return Err(e),
        };
        if Format::is_whiteout_stat(&st) {
            return Ok(Found::Missing);
        }
        return Ok(match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => Found::Dir(attrs(&st)),
            libc::S_IFLNK => Found::Symlink(sys::fs::readlinkat(dir.as_fd(), &cname)?),
            _ => Found::Other,
        });
    }
    Ok(Found::Missing)
}

fn components(p: &[u8]) -> Vec<String> {
    Path::new(std::ffi::OsStr::from_bytes(p))
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// The dirs that `path` (relative to the image's `/`) resolves to in the
/// union of `lowers`, symlinks resolved inside the image; those the image
/// lacks come with no attributes. ENOTDIR where a non-dir is in the way.
pub fn image_dir(lowers: &[PathBuf], path: &str) -> Result<Vec<ImageDir>> {
    let roots = lowers
        .iter()
        .map(|l| open_root(l))
        .collect::<Result<Vec<_>>>()?;
    let mut todo = components(path.as_bytes());
    todo.reverse();
    let mut done: Vec<ImageDir> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            done.pop();
            continue;
        }
        let found = if done.last().is_some_and(|d| d.attrs.is_none()) {
            Found::Missing
        } else {
            lookup(&roots, &done, &c)?
        };
        match found {
            Found::Missing => done.push(ImageDir {
                name: c,
                attrs: None,
            }),
            Found::Dir(a) => done.push(ImageDir {
                name: c,
                attrs: Some(a),
            }),
            Found::Symlink(target) => {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return Err(Errno(libc::ELOOP));
                }
                if target.first() == Some(&b'/') {
                    done.clear();
                }
                todo.extend(components(&target).into_iter().rev());
            }
            Found::Other => return Err(Errno::ENOTDIR),
        }
    }
    Ok(done)
}

fn rel_cstr(p: &Path) -> Result<CString> {
    let rel = p.strip_prefix("/").unwrap_or(p);
    cstr(rel.as_os_str().as_bytes())
}

/// The text of `path` in the rootfs at `root` (symlinks resolved inside
/// it); None when it does not exist.
pub fn read_in_root(root: &Path, path: &Path) -> Result<Option<String>> {
    let root = open_root(root)?;
    let fd = match sys::container::open_in_root(root.as_fd(), &rel_cstr(path)?, libc::O_RDONLY, 0) {
        Ok(fd) => fd,
        Err(e) if e == Errno::ENOENT => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut text = Vec::new();
    std::fs::File::from(fd)
        .take(MAX_READ)
        .read_to_end(&mut text)?;
    Ok(Some(String::from_utf8_lossy(&text).into_owned()))
}

/// Makes `dst` in the rootfs at `root` a mount point: an existing dir (or,
/// with `file`, a non-dir), or one created with its missing parents (dirs
/// 0755, an empty file 0644). Symlinks resolve inside the root. Returns an
/// O_PATH fd on it, to mount onto through /proc/self/fd.
pub fn mount_point(root: &Path, dst: &Path, file: bool) -> Result<OwnedFd> {
    let root = open_root(root)?;
    let parts: Vec<&std::ffi::OsStr> = dst
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let mut prefix = PathBuf::new();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let parent = prefix.clone();
        prefix.push(part);
        let want_dir = !last || !file;
        let flags = libc::O_PATH | if want_dir { libc::O_DIRECTORY } else { 0 };
        let path = rel_cstr(&prefix)?;
        match sys::container::open_in_root(root.as_fd(), &path, flags, 0) {
            Ok(fd) if last => return check_kind(fd, file),
            Ok(_) => continue,
            Err(e) if e == Errno::ENOENT => {}
            Err(e) => return Err(e),
        }
        let pdir = if parent.as_os_str().is_empty() {
            sys::fs::open_dir_path(root.as_fd(), c".")?
        } else {
            sys::container::open_in_root(
                root.as_fd(),
                &rel_cstr(&parent)?,
                libc::O_PATH | libc::O_DIRECTORY,
                0,
            )?
        };
        let name = cstr(part.as_bytes())?;
        let made = if want_dir {
            sys::fs::mkdirat(pdir.as_fd(), &name, 0o755)
        } else {
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
            sys::fs::openat(pdir.as_fd(), &name, flags, 0o644).map(drop)
        };
        match made {
            Ok(()) => {}
            Err(e) if e == Errno::EEXIST => {}
            Err(e) => return Err(e),
        }
        let fd = sys::container::open_in_root(root.as_fd(), &path, flags, 0)?;
        if last {
            return check_kind(fd, file);
        }
    }
    Err(Errno::EINVAL)
}

fn check_kind(fd: OwnedFd, file: bool) -> Result<OwnedFd> {
    let st = sys::fs::fstat(fd.as_fd())?;
    let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    match (file, is_dir) {
        (true, true) => Err(Errno::EISDIR),
        _ => Ok(fd),
    }
}
