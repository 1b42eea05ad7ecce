//! Conversions between fuser's types and ours: errno to reply, `stat` to
//! `FileAttr`, times, device numbers, the caller of a request; and the guard
//! that answers EIO when a handler panics.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno as FErrno, FileAttr, FileType, Generation, INodeNo, ReplyEmpty, ReplyEntry, ReplyXattr,
    Request, TimeOrNow,
};

use crate::errno::Errno;
use crate::sys::fs::Time;
use crate::union::{Caller, Entry};

use super::Adapter;

thread_local! {
    /// The request this thread is answering, for the log of unusual answers.
    static ANSWERING: std::cell::Cell<&'static str> = const { std::cell::Cell::new("") };
}

pub(super) fn ferr(e: Errno) -> FErrno {
    if e == Errno::EIO || e == Errno::EINVAL || e == Errno::ESTALE {
        // Unusual answers: `RUST_LOG=unionfs::reply=debug` names them.
        log::debug!(target: "unionfs::reply", "{} answered {e}", ANSWERING.get());
    }
    FErrno::from_i32(e.raw())
}

/// Runs a handler body, turning a panic into EIO (the reply is dropped
/// unanswered, which fuser answers with EIO).
pub(super) fn guarded<F: FnOnce()>(what: &'static str, f: F) {
    ANSWERING.set(what);
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        log::error!("panic in {what} handler; answered EIO");
    }
}

fn systime(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

pub(super) fn to_time(t: TimeOrNow) -> Time {
    match t {
        TimeOrNow::Now => Time::Now,
        TimeOrNow::SpecificTime(st) => match st.duration_since(UNIX_EPOCH) {
            Ok(d) => Time::At(d.as_secs() as i64, d.subsec_nanos() as i64),
            // fuser 0.18 turns the kernel's (sec < 0, nsec) into EPOCH -
            // (|sec| + nsec) instead of EPOCH - |sec| + nsec, so the
            // duration before the epoch holds the kernel's two fields as they
            // were: 1969-12-31 23:59:59.25 is (-1, 250000000).
            Err(e) => Time::At(
                -(e.duration().as_secs() as i64),
                e.duration().subsec_nanos() as i64,
            ),
        },
    }
}

pub(super) fn file_type(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

/// dev_t as glibc encodes it -> the kernel's 32-bit "new" encoding FUSE uses.
fn encode_rdev(dev: u64) -> u32 {
    let major = libc::major(dev);
    let minor = libc::minor(dev);
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

pub(super) fn decode_rdev(rdev: u32) -> u64 {
    let major = (rdev & 0xfff00) >> 8;
    let minor = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
    libc::makedev(major, minor)
}

pub(super) fn to_attr(st: &libc::stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(st.st_ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: systime(st.st_atime, st.st_atime_nsec),
        mtime: systime(st.st_mtime, st.st_mtime_nsec),
        ctime: systime(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: file_type(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: encode_rdev(st.st_rdev),
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

pub(super) fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
        umask: 0,
    }
}

/// The caller of a create, with the umask the kernel left to the server
/// (FUSE_DONT_MASK).
pub(super) fn creator(req: &Request, umask: u32) -> Caller {
    Caller {
        umask,
        ..caller(req)
    }
}

impl Adapter {
    /// The attributes the kernel is given for node `ino`.
    pub(super) fn attr(&self, ino: u64, st: &libc::stat) -> FileAttr {
        to_attr(&self.present.attr(&self.fs, ino, *st))
    }

    pub(super) fn entry(&self, reply: ReplyEntry, r: Result<Entry, Errno>) {
        match r {
            Ok(e) => reply.entry(
                &self.ttl,
                &self.attr(e.ino, &e.attr),
                Generation(e.generation),
            ),
            Err(e) => reply.error(ferr(e)),
        }
    }

    pub(super) fn empty(reply: ReplyEmpty, r: Result<(), Errno>) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(ferr(e)),
        }
    }

    pub(super) fn xattr_reply(reply: ReplyXattr, size: u32, r: Result<Vec<u8>, Errno>) {
        match r {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(FErrno::ERANGE),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(ferr(e)),
        }
    }
}
