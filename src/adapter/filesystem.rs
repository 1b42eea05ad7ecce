//! `impl fuser::Filesystem` for [`Adapter`]: each handler decodes its
//! request, calls the union under the panic guard, and answers.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::SystemTime;

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno as FErrno, FileHandle, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyIoctl, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};

use crate::errno::Errno;
use crate::union::SetAttr;

use super::fileattr;
use super::passthrough::{self, Open};
use super::reply::{caller, creator, decode_rdev, ferr, file_type, guarded, to_attr, to_time};
use super::Adapter;

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
            && !self.always_opendir;
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
        ino: INodeNo,
        fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        guarded("ioctl", || {
            match fileattr::answer(&self.fs, ino.0, fh.0, cmd, in_data) {
                Ok(data) => reply.ioctl(0, &data),
                Err(e) => reply.error(ferr(e)),
            }
        });
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
