//! Applying one op of the differential harness to a mounted union (paths
//! below its root, fds and dir streams kept in slots) and recording its
//! observable result.

use std::collections::hash_map::DefaultHasher;
use std::fs::{self, File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::common::sys;
use super::creds;
use super::ops::{Op, Res, StatV, Val, SLOTS};

/// Bytes cap for whole-file reads.
const READ_CAP: usize = 4 << 20;

/// Open fds of one side.
#[derive(Default)]
pub struct State {
    files: [Option<File>; SLOTS],
    dirs: [Option<OwnedFd>; SLOTS],
    /// The single steps (listdir, unlink, rmdir) of the last rm -r, so the
    /// minimiser can replace an rm -r by the steps that matter.
    pub rm_log: Vec<Op>,
}

impl State {
    /// Closes every fd (before unmounting).
    pub fn close_all(&mut self) {
        *self = State::default();
    }
}

fn err(e: io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn unit<T>(r: io::Result<T>) -> Res {
    r.map(|_| Val::Unit).map_err(err)
}

fn data_val(buf: &[u8]) -> Val {
    let mut h = DefaultHasher::new();
    buf.hash(&mut h);
    let head: String = String::from_utf8_lossy(&buf[..buf.len().min(12)]).into_owned();
    Val::Data {
        len: buf.len() as u64,
        hash: h.finish(),
        head,
    }
}

fn read_all(f: &mut File) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    f.take(READ_CAP as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

fn pread_all(f: &File) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 64 << 10];
    let mut out = Vec::new();
    loop {
        let n = f.read_at(&mut buf, out.len() as u64)?;
        if n == 0 || out.len() >= READ_CAP {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

fn list_dir(p: &Path) -> Res {
    let f = open_dir(p).map_err(err)?;
    let mut v = Vec::new();
    loop {
        let chunk = sys::getdents64(f.as_fd(), 8192).map_err(err)?;
        if chunk.is_empty() {
            break;
        }
        v.extend(chunk);
    }
    Ok(names(v))
}

fn names(v: Vec<sys::Dirent>) -> Val {
    let mut out: Vec<(String, u8)> = v
        .into_iter()
        .filter(|d| d.name != "." && d.name != "..")
        .map(|d| {
            (
                String::from_utf8_lossy(d.name.as_bytes()).into_owned(),
                d.d_type,
            )
        })
        .collect();
    out.sort();
    Val::Names(out)
}

/// rm -r below `p`, logging each step; on an error, the path (relative to
/// `root`) that failed.
fn rm_rf(root: &Path, p: &Path, count: &mut u64, log: &mut Vec<Op>) -> Result<(), (String, i32)> {
    let rel = p
        .strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned();
    let at = |e: io::Error| (rel.clone(), err(e));
    log.push(Op::Quiet(Box::new(Op::Lstat(rel.clone()))));
    let md = fs::symlink_metadata(p).map_err(at)?;
    if md.is_dir() {
        log.push(Op::Quiet(Box::new(Op::ListDir(rel.clone()))));
        let mut entries: Vec<_> = fs::read_dir(p)
            .map_err(at)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(at)?;
        entries.sort();
        for e in entries {
            rm_rf(root, &p.join(e), count, log)?;
        }
        log.push(Op::Rmdir(rel.clone()));
        fs::remove_dir(p).map_err(at)?;
    } else {
        log.push(Op::Unlink(rel.clone()));
        fs::remove_file(p).map_err(at)?;
    }
    *count += 1;
    Ok(())
}

fn slot<T>(v: &mut [Option<T>; SLOTS], s: usize) -> Result<&mut T, i32> {
    v.get_mut(s).and_then(Option::as_mut).ok_or(libc::EBADF)
}

/// opendir: never blocks (a fifo at a dir path gives ENOTDIR).
fn open_dir(p: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NONBLOCK)
        .open(p)
}

fn open_opts(write: bool, read: bool) -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(read)
        .write(write)
        // Never block on a fifo (ENXIO for a writer without readers).
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    o
}

/// Applies `op` below `root`, using and updating `st`.
pub fn apply(op: &Op, root: &Path, st: &mut State) -> Res {
    let p = |s: &str| -> PathBuf {
        if s.is_empty() {
            root.to_path_buf()
        } else {
            root.join(s)
        }
    };
    match op {
        Op::Read(a) => {
            let mut f = open_opts(false, true).open(p(a)).map_err(err)?;
            read_all(&mut f).map(|b| data_val(&b)).map_err(err)
        }
        Op::Stat(a) => fs::metadata(p(a))
            .map(|m| Val::Stat(StatV::of(&m)))
            .map_err(err),
        Op::Lstat(a) => fs::symlink_metadata(p(a))
            .map(|m| Val::Stat(StatV::of(&m)))
            .map_err(err),
        Op::ReadLink(a) => fs::read_link(p(a))
            .map(|t| Val::Bytes(t.as_os_str().as_bytes().to_vec()))
            .map_err(err),
        Op::ListDir(a) => list_dir(&p(a)),
        Op::Write(a, d) => unit(
            open_opts(true, false)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .open(p(a))
                .and_then(|mut f| io::Write::write_all(&mut f, &d.bytes())),
        ),
        Op::Append(a, d) => unit(
            open_opts(true, false)
                .append(true)
                .open(p(a))
                .and_then(|mut f| io::Write::write_all(&mut f, &d.bytes())),
        ),
        Op::Pwrite(a, off, d) => unit(
            open_opts(true, false)
                .open(p(a))
                .and_then(|f| f.write_all_at(&d.bytes(), *off)),
        ),
        Op::Truncate(a, n) => unit(sys::truncate(&p(a), *n as i64)),
        Op::Create(a, mode, excl) => {
            let mut o = open_opts(true, false);
            if *excl {
                o.create_new(true);
            } else {
                o.create(true);
            }
            unit(o.mode(*mode).open(p(a)))
        }
        Op::Mkdir(a, mode) => unit(fs::DirBuilder::new().mode(*mode).create(p(a))),
        Op::Rmdir(a) => unit(fs::remove_dir(p(a))),
        Op::Unlink(a) => unit(fs::remove_file(p(a))),
        Op::RmRf(a) => {
            let top = p(a);
            fs::symlink_metadata(&top).map_err(err)?;
            let mut n = 0;
            st.rm_log.clear();
            match rm_rf(root, &top, &mut n, &mut st.rm_log) {
                Ok(()) => Ok(Val::Count(n)),
                Err((at, errno)) => Ok(Val::RmStopped {
                    removed: n,
                    at,
                    errno,
                }),
            }
        }
        Op::Rename(a, b, f) => unit(sys::renameat2(&p(a), &p(b), *f)),
        Op::Link(a, b) => unit(fs::hard_link(p(a), p(b))),
        Op::Symlink(t, a) => unit(std::os::unix::fs::symlink(t, p(a))),
        Op::Chmod(a, m) => unit(fs::set_permissions(p(a), fs::Permissions::from_mode(*m))),
        Op::Chown(a, u, g, follow) => unit(if *follow {
            std::os::unix::fs::chown(p(a), *u, *g)
        } else {
            std::os::unix::fs::lchown(p(a), *u, *g)
        }),
        Op::Utimens(a, at, mt, nofollow) => {
            unit(sys::utimensat(&p(a), at.ts(), mt.ts(), *nofollow))
        }
        Op::SetXattr(a, n, v, f) => unit(sys::lsetxattr(&p(a), n, v, *f)),
        Op::GetXattr(a, n) => sys::lgetxattr(&p(a), n).map(Val::Bytes).map_err(err),
        Op::RemoveXattr(a, n) => unit(sys::lremovexattr(&p(a), n)),
        Op::ListXattr(a) => sys::llistxattr(&p(a))
            .map(|mut v| {
                v.sort();
                Val::List(v)
            })
            .map_err(err),
        Op::Mknod(a, t, ma, mi) => unit(sys::mknod(&p(a), *t | 0o644, *ma, *mi)),
        Op::Open(s, a, rw) => {
            let f = open_opts(*rw, true).open(p(a)).map_err(err)?;
            if *s >= SLOTS {
                return Err(libc::EBADF);
            }
            st.files[*s] = Some(f);
            Ok(Val::Unit)
        }
        Op::FdRead(s) => pread_all(slot(&mut st.files, *s)?)
            .map(|b| data_val(&b))
            .map_err(err),
        Op::FdWrite(s, off, d) => unit(slot(&mut st.files, *s)?.write_all_at(&d.bytes(), *off)),
        Op::FdStat(s) => slot(&mut st.files, *s)?
            .metadata()
            .map(|m| Val::Stat(StatV::of(&m)))
            .map_err(err),
        Op::Close(s) => {
            slot(&mut st.files, *s)?;
            st.files[*s] = None;
            Ok(Val::Unit)
        }
        Op::DirOpen(s, a) => {
            let f = open_dir(&p(a)).map_err(err)?;
            if *s >= SLOTS {
                return Err(libc::EBADF);
            }
            st.dirs[*s] = Some(f.into());
            Ok(Val::Unit)
        }
        Op::DirRead(s) => {
            let fd = slot(&mut st.dirs, *s)?;
            let mut v = Vec::new();
            loop {
                let chunk = sys::getdents64(fd.as_fd(), 8192).map_err(err)?;
                if chunk.is_empty() {
                    break;
                }
                v.extend(chunk);
            }
            Ok(names(v))
        }
        Op::DirRewind(s) => unit(sys::lseek(
            slot(&mut st.dirs, *s)?.as_fd(),
            0,
            libc::SEEK_SET,
        )),
        Op::As(uid, gid, inner) => {
            let inner = inner.as_ref();
            creds::with_creds(*uid, *gid, || apply(inner, root, st))
        }
        Op::Quiet(inner) => apply(inner, root, st).map(|_| Val::Unit),
    }
}
