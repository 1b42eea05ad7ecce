//! The only module that knows fuser: decodes requests, calls [`Union`], and
//! turns results into replies. A panic in a handler is caught, logged and
//! answered with EIO so the server keeps serving.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno as FErrno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};

use crate::errno::Errno;
use crate::sys::fs::Time;
use crate::union::{Caller, Entry, SetAttr, Union};

pub mod mount;
pub mod passthrough;
pub mod present;

use passthrough::{Open, Passthrough};
use present::Present;

pub struct Adapter {
    fs: Arc<Union>,
    ttl: Duration,
    pt: Passthrough,
    stack_depth: u32,
    /// The kernel lets us answer OPENDIR with ENOSYS; it then never sends
    /// OPENDIR/RELEASEDIR again (two round trips less per dir open) and
    /// caches listings by default.
    no_opendir: bool,
    /// FUSE_HANDLE_KILLPRIV_V2: asked for in the initial user namespace or
    /// with the writeback cache, then whether the kernel agreed. The kernel
    /// then stops asking for `security.capability` before every write(2)
    /// (a round trip each) and leaves dropping set-id bits on write and
    /// truncate to us. fuser 0.18 passes only the write's kill flag
    /// on (not setattr's or open's), so the union decides those itself from
    /// the caller's credentials.
    killpriv: bool,
    /// Whether the kernel's FUSE_WRITE_KILL_SUIDGID can be taken as is: it
    /// means "lacks CAP_FSETID in the initial user namespace", which says
    /// nothing about a caller in a user namespace.
    trust_kill: bool,
    /// FUSE_WRITEBACK_CACHE: asked for by `new`, then whether the kernel
    /// agreed. Small writes then gather in the page cache, where each would
    /// otherwise be a round trip; it excludes passthrough.
    writeback: bool,
    /// containers/storage's options applied to what the kernel is shown.
    present: Present,
}

impl Adapter {
    /// `initial_ns`: the server runs in the initial user namespace, where
    /// the set-id handling of KILLPRIV_V2 was checked against the kernel;
    /// elsewhere it is asked for only with the writeback cache, whose
    /// per-write `security.capability` question it saves.
    pub fn new(
        fs: Arc<Union>,
        ttl: Duration,
        pt: passthrough::Mode,
        stack_depth: u32,
        initial_ns: bool,
        writeback: bool,
        present: Present,
    ) -> Adapter {
        Adapter {
            fs,
            ttl,
            pt: Passthrough::new(pt),
            stack_depth,
            no_opendir: false,
            killpriv: initial_ns,
            trust_kill: initial_ns,
            writeback,
            present,
        }
    }

    /// The entries a read at `offset` returns: from the open handle's
    /// listing, or the dir node's when the kernel skips OPENDIR (fh 0).
    fn listing_from(&self, ino: u64, fh: u64, offset: u64) -> crate::errno::Result<ListingTail> {
        let entries = if fh == 0 {
            self.fs.dir_listing(ino, offset)?
        } else {
            self.fs.dir_snapshot(fh, offset)?
        };
        let start = entries.partition_point(|e| e.cookie <= offset);
        if start == entries.len() && fh == 0 {
            // The reader is done: the node's snapshot is not needed.
            self.fs.dir_listing_done(ino);
        }
        Ok(ListingTail { entries, start })
    }

    /// Whether an open file may pass through: an upper file, any file of a
    /// read-only union, a lower one too with `passthrough=all`. With
    /// KILLPRIV_V2 not a set-id file: a passthrough write never reaches us,
    /// so nobody would drop the bits.
    fn may_pass_through(&self, fd: &std::os::fd::OwnedFd, upper: bool) -> bool {
        (upper || !self.fs.has_upper() || self.pt.mode() == passthrough::Mode::All)
            && !(self.killpriv && self.fs.file_is_setid(fd))
    }

    /// Passthrough or cached I/O for a new open file. Whether it may pass
    /// through (an fstat) is asked only when it could. `flags` are the open's;
    /// a writer may be refused (`Open::Refused`) when its passthrough writes
    /// would have to drop set-id bits.
    fn open_mode(
        &self,
        ino: u64,
        fh: u64,
        flags: i32,
        opener: Caller,
        backing: impl FnOnce(&std::os::fd::OwnedFd) -> std::io::Result<fuser::BackingId>,
    ) -> Open {
        let file = self.fs.file_backing(fh);
        let generation = file.as_ref().map_or(0, |(_, _, g)| *g);
        let writer = (flags & libc::O_ACCMODE != libc::O_RDONLY).then_some(opener);
        self.pt.open(
            (ino, generation),
            fh,
            writer,
            || {
                file.as_ref()
                    .is_some_and(|(fd, upper, _)| self.may_pass_through(fd, *upper))
            },
            || {
                !self.killpriv
                    || file
                        .as_ref()
                        .is_some_and(|(fd, _, _)| self.fs.may_write_unseen(fd, &opener))
            },
            || match &file {
                Some((fd, _, _)) => backing(fd),
                None => Err(std::io::Error::from_raw_os_error(libc::EBADF)),
            },
        )
    }

    /// A setattr that refuses (ETXTBSY) to give a file bits that make exec
    /// raise privileges while someone writes to it in passthrough whose
    /// writes would drop them: with KILLPRIV_V2 nobody would. The kernel
    /// would allow the chmod and drop the bits at that writer's next write.
    fn setattr_guarded(
        &self,
        ino: u64,
        a: SetAttr,
        caller: &Caller,
    ) -> crate::errno::Result<libc::stat> {
        let risky = self.killpriv
            && self.pt.mode() != passthrough::Mode::Off
            && a.mode.is_some_and(crate::union::raises_privileges);
        if !risky {
            return self.fs.setattr(ino, a, caller);
        }
        let (generation, owner) = self.fs.generation_and_owner_after(ino, &a)?;
        self.pt.with_writers((ino, generation), |writers| {
            if writers
                .iter()
                .any(|w| self.fs.unseen_writes_unsafe(w, owner))
            {
                log::info!("chmod of node {ino} refused: open for writing in passthrough");
                return Err(Errno::ETXTBSY);
            }
            self.fs.setattr(ino, a, caller)
        })
    }

    /// Adds the entries of `tail` with their attributes until the reply is
    /// full; each entry sent counts a kernel lookup.
    fn add_plus_entries(&self, ino: u64, tail: &ListingTail, reply: &mut ReplyDirectoryPlus) {
        for e in tail.iter() {
            let dots = e.name == "." || e.name == "..";
            let looked = if dots {
                // The kernel takes no reference for these; any attrs do.
                self.fs.getattr(ino, None).map(|mut st| {
                    st.st_ino = e.ino;
                    (st, 0u64)
                })
            } else {
                self.fs
                    .lookup_entry(ino, e)
                    .map(|en| (en.attr, en.generation))
            };
            let Ok((st, generation)) = looked else {
                continue;
            };
            let full = reply.add(
                INodeNo(st.st_ino),
                e.offset,
                &e.name,
                &self.ttl,
                &self.attr(st.st_ino, &st),
                Generation(generation),
            );
            if full {
                if !dots {
                    // Not sent: take back the lookup just counted.
                    self.fs.forget(st.st_ino, 1);
                }
                break;
            }
        }
    }
}

/// A listing and where a read resumes in it.
struct ListingTail {
    entries: Arc<Vec<crate::handles::DirEntry>>,
    start: usize,
}

impl ListingTail {
    fn iter(&self) -> impl Iterator<Item = &crate::handles::DirEntry> {
        self.entries[self.start..].iter()
    }
}

thread_local! {
    /// The request this thread is answering, for the log of unusual answers.
    static ANSWERING: std::cell::Cell<&'static str> = const { std::cell::Cell::new("") };
}

fn ferr(e: Errno) -> FErrno {
    if e == Errno::EIO || e == Errno::EINVAL || e == Errno::ESTALE {
        // Unusual answers: `RUST_LOG=unionfs::reply=debug` names them.
        log::debug!(target: "unionfs::reply", "{} answered {e}", ANSWERING.get());
    }
    FErrno::from_i32(e.raw())
}

/// Runs a handler body, turning a panic into EIO (the reply is dropped
/// unanswered, which fuser answers with EIO).
fn guarded<F: FnOnce()>(what: &'static str, f: F) {
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

fn to_time(t: TimeOrNow) -> Time {
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

fn file_type(mode: u32) -> FileType {
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

fn decode_rdev(rdev: u32) -> u64 {
    let major = (rdev & 0xfff00) >> 8;
    let minor = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
    libc::makedev(major, minor)
}

fn to_attr(st: &libc::stat) -> FileAttr {
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

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
        umask: 0,
    }
}

/// The caller of a create, with the umask the kernel left to the server
/// (FUSE_DONT_MASK).
fn creator(req: &Request, umask: u32) -> Caller {
    Caller {
        umask,
        ..caller(req)
    }
}

impl Adapter {
    /// The attributes the kernel is given for node `ino`.
    fn attr(&self, ino: u64, st: &libc::stat) -> FileAttr {
        to_attr(&self.present.attr(&self.fs, ino, *st))
    }

    fn entry(&self, reply: ReplyEntry, r: Result<Entry, Errno>) {
        match r {
            Ok(e) => reply.entry(
                &self.ttl,
                &self.attr(e.ino, &e.attr),
                Generation(e.generation),
            ),
            Err(e) => reply.error(ferr(e)),
        }
    }

    /// What `xattr_permissions` records of a new object.
    fn created(&self, parent: u64, r: &Result<Entry, Errno>, c: &Caller, mode: u32) {
        if let Ok(e) = r {
            self.present.created(&self.fs, parent, e, c, mode);
        }
    }

    fn empty(reply: ReplyEmpty, r: Result<(), Errno>) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn xattr_reply(reply: ReplyXattr, size: u32, r: Result<Vec<u8>, Errno>) {
        match r {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(FErrno::ERANGE),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(ferr(e)),
        }
    }
}

impl Filesystem for Adapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Layers never change under the mount and every change goes through
        // this server, so the kernel may cache entries, attributes and
        // listings; readdirplus saves a lookup per listed entry.
        let wanted = InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            // A symlink's target never changes, and a reused inode number
            // never stands for a new object while the kernel holds the old
            // one (`NodeTable::lookup_or_insert`), so targets can be cached.
            | InitFlags::FUSE_CACHE_SYMLINKS
            // Pages cached by an earlier open can outlive a change made
            // around the page cache (a passthrough write after a copy-up):
            // let size/mtime changes drop them.
            | InitFlags::FUSE_AUTO_INVAL_DATA
            // With ACLs the umask must not be applied where the parent has a
            // default ACL: the kernel leaves it to the server.
            | InitFlags::FUSE_DONT_MASK;
        // The kernel then checks ACLs and caches them (also their
        // absence), which saves a getxattr round trip per `ls -l` entry.
        let wanted = if self.present.noacl {
            wanted
        } else {
            wanted | InitFlags::FUSE_POSIX_ACL
        };
        for flag in wanted.iter() {
            let _ = config.add_capabilities(flag);
        }
        self.writeback = self.writeback
            && config
                .add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE)
                .is_ok();
        if self.writeback {
            self.fs.use_writeback_cache();
        }
        self.killpriv = (self.killpriv || self.writeback)
            && config
                .add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2)
                .is_ok();
        let _ = config.set_max_write(1 << 20);
        self.no_opendir = config
            .capabilities()
            .contains(InitFlags::FUSE_NO_OPENDIR_SUPPORT)
            // Tests set this to exercise the per-handle path of older kernels.
            && std::env::var_os("UNIONFS_OPENDIR").is_none();
        // The kernel refuses backing files while the writeback cache is on.
        if self.pt.mode() != passthrough::Mode::Off
            && !self.writeback
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(self.stack_depth).is_ok()
        {
            self.pt.enable();
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        guarded("lookup", || match self.fs.lookup(parent.0, name) {
            // Node 0 is a negative entry: the kernel caches the absence too.
            Err(Errno::ENOENT) => {
                let mut attr = to_attr(&self.fs.root_stat());
                attr.ino = INodeNo(0);
                reply.entry(&self.ttl, &attr, Generation(0))
            }
            r => self.entry(reply, r),
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        guarded("forget", || self.fs.forget(ino.0, nlookup));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        guarded("getattr", || {
            match self.fs.getattr(ino.0, fh.map(|f| f.0)) {
                Ok(st) => reply.attr(&self.ttl, &self.attr(ino.0, &st)),
                Err(e) => reply.error(ferr(e)),
            }
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        guarded("setattr", || {
            let a = SetAttr {
                mode,
                uid,
                gid,
                size,
                atime: atime.map(to_time),
                mtime: mtime.map(to_time),
                fh: fh.map(|f| f.0),
            };
            let r = self.present.setattr(&self.fs, ino.0, a, |a| {
                self.setattr_guarded(ino.0, a, &caller(req))
            });
            match r {
                Ok(st) => reply.attr(&self.ttl, &to_attr(&st)),
                Err(e) => reply.error(ferr(e)),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        guarded("readlink", || match self.fs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(ferr(e)),
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        guarded("mknod", || {
            let c = creator(req, umask);
            let r = self.fs.mknod(parent.0, name, mode, decode_rdev(rdev), c);
            self.created(parent.0, &r, &c, mode);
            self.entry(reply, r)
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        guarded("mkdir", || {
            let c = creator(req, umask);
            let r = self.fs.mkdir(parent.0, name, mode, c);
            self.created(parent.0, &r, &c, mode);
            self.entry(reply, r)
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("unlink", || {
            Self::empty(reply, self.fs.unlink(parent.0, name))
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("rmdir", || {
            Self::empty(reply, self.fs.rmdir(parent.0, name))
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        guarded("symlink", || {
            let c = caller(req);
            let r = self.fs.symlink(parent.0, link_name, target.as_os_str(), c);
            self.created(parent.0, &r, &c, 0o777);
            self.entry(reply, r)
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        guarded("rename", || {
            let r = self
                .fs
                .rename(parent.0, name, newparent.0, newname, flags.bits());
            Self::empty(reply, r)
        });
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        guarded("link", || {
            self.entry(reply, self.fs.link(ino.0, newparent.0, newname))
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        guarded("open", || {
            let c = caller(req);
            match self.fs.open(ino.0, flags.0, &c) {
                Ok(fh) => match self
                    .open_mode(ino.0, fh, flags.0, c, |fd| reply.open_backing(fd.as_fd()))
                {
                    Open::Passthrough(id) => {
                        reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id)
                    }
                    Open::Refused => {
                        self.fs.release(fh);
                        reply.error(FErrno::ETXTBSY)
                    }
                    // Data changes only through this mount: keep the page cache.
                    Open::Cached => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
                },
                Err(e) => reply.error(ferr(e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        guarded("read", || {
            self.fs.read_with(fh.0, offset, size, |r| match r {
                Ok(d) => reply.data(d),
                Err(e) => reply.error(ferr(e)),
            })
        });
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let c = caller(req);
        let kill = write_flags
            .contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID)
            .then_some((&c, self.trust_kill));
        guarded("write", || match self.fs.write(fh.0, offset, data, kill) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(ferr(e)),
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing to do at close: ENOSYS makes the kernel stop sending FLUSH,
        // which saves a round trip per close(2).
        reply.error(FErrno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        guarded("release", || {
            self.pt.release(fh.0);
            self.fs.release(fh.0);
            reply.ok()
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        guarded("fsync", || {
            Self::empty(reply, self.fs.fsync(fh.0, datasync))
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.no_opendir {
            // Reads then come with fh 0 and are served by node (`dir_listing`).
            return reply.error(FErrno::ENOSYS);
        }
        guarded("opendir", || match self.fs.opendir(ino.0) {
            Ok(fh) => reply.opened(
                FileHandle(fh),
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(ferr(e)),
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        guarded("readdir", || match self.listing_from(ino.0, fh.0, offset) {
            Ok(tail) => {
                for e in tail.iter() {
                    if reply.add(INodeNo(e.ino), e.offset, file_type(e.kind), &e.name) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(ferr(e)),
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        guarded("readdirplus", || {
            match self.listing_from(ino.0, fh.0, offset) {
                Ok(tail) => {
                    self.add_plus_entries(ino.0, &tail, &mut reply);
                    reply.ok()
                }
                Err(e) => reply.error(ferr(e)),
            }
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        guarded("fsyncdir", || Self::empty(reply, self.fs.fsyncdir(ino.0)));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        guarded("statfs", || match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namelen as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(ferr(e)),
        });
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        guarded("setxattr", || {
            let r = self.present.change_xattr(name);
            Self::empty(
                reply,
                r.and_then(|()| self.fs.setxattr(ino.0, name, value, flags)),
            )
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        guarded("getxattr", || {
            let r = match self.present.getxattr(name) {
                Some(r) => r,
                None => self.fs.getxattr(ino.0, name),
            };
            Self::xattr_reply(reply, size, r)
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        guarded("listxattr", || {
            let r = self
                .present
                .no_xattrs()
                .and_then(|()| self.fs.listxattr(ino.0));
            Self::xattr_reply(reply, size, r.map(|l| self.present.list(l)))
        });
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("removexattr", || {
            let r = self.present.change_xattr(name);
            Self::empty(reply, r.and_then(|()| self.fs.removexattr(ino.0, name)))
        });
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        guarded("access", || {
            Self::empty(reply, self.fs.getattr(ino.0, None).map(|_| ()))
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        guarded("create", || {
            let c = creator(req, umask);
            match self.fs.create(parent.0, name, mode, flags, c) {
                Ok((e, fh)) => {
                    self.present.created(&self.fs, parent.0, &e, &c, mode);
                    let (attr, generation) = (self.attr(e.ino, &e.attr), Generation(e.generation));
                    match self.open_mode(e.ino, fh, flags, c, |fd| reply.open_backing(fd.as_fd())) {
                        Open::Passthrough(id) => reply.created_passthrough(
                            &self.ttl,
                            &attr,
                            generation,
                            FileHandle(fh),
                            FopenFlags::empty(),
                            &id,
                        ),
                        Open::Cached => reply.created(
                            &self.ttl,
                            &attr,
                            generation,
                            FileHandle(fh),
                            FopenFlags::FOPEN_KEEP_CACHE,
                        ),
                        // An O_CREAT open of an existing set-id file in
                        // passthrough: the kernel takes no reference.
                        Open::Refused => {
                            self.fs.release(fh);
                            self.fs.forget(e.ino, 1);
                            reply.error(FErrno::ETXTBSY)
                        }
                    }
                }
                Err(e) => reply.error(ferr(e)),
            }
        });
    }

    fn fallocate(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        guarded("fallocate", || {
            Self::empty(
                reply,
                self.fs.fallocate(fh.0, offset, length, mode, &caller(req)),
            )
        });
    }

    /// No ioctl is served (the caller gets ENOTTY, as from fuser's default),
    /// but quietly: the default logs a warning for each, and every isatty()
    /// on a file in the union sends one.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(ferr(Errno::ENOTTY));
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        guarded("lseek", || match self.fs.lseek(fh.0, offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(ferr(e)),
        });
    }

    fn copy_file_range(
        &self,
        req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        guarded("copy_file_range", || {
            match self.fs.copy_file_range(
                fh_in.0,
                offset_in,
                fh_out.0,
                offset_out,
                len,
                &caller(req),
            ) {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(ferr(e)),
            }
        });
    }
}
