//! Open regular files: what a FUSE file handle stands for, and open, read,
//! write, fsync, fallocate, lseek and copy_file_range on them.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use super::{Caller, Union};
use crate::errno::{Errno, Result};
use crate::node::Node;
use crate::sys;
use crate::sys::fs::{bfd, Time};

/// An open regular file.
#[derive(Debug)]
pub struct FileHandle {
    pub node: Arc<Node>,
    fd: RwLock<Arc<OwnedFd>>,
    /// The fd refers to the upper copy (or the object never had another).
    upper: AtomicBool,
    flags: i32,
}

impl FileHandle {
    pub fn fd(&self) -> Arc<OwnedFd> {
        self.fd.read().clone()
    }

    pub fn writable(&self) -> bool {
        self.flags & libc::O_ACCMODE != libc::O_RDONLY
    }

    pub(super) fn is_upper(&self) -> bool {
        self.upper.load(Ordering::Acquire)
    }
}

impl Union {
    pub(super) fn add_file_handle(
        &self,
        node: &Arc<Node>,
        fd: OwnedFd,
        flags: i32,
        upper: bool,
    ) -> u64 {
        let fh = self.next_fh();
        self.files.insert(
            fh,
            Arc::new(FileHandle {
                node: node.clone(),
                fd: RwLock::new(Arc::new(fd)),
                upper: AtomicBool::new(upper),
                flags,
            }),
        );
        fh
    }

    /// An open file's fd, whether it is in the upper layer, and its node's
    /// generation (an inode number can stand for a new object later).
    pub fn file_backing(&self, fh: u64) -> Option<(Arc<OwnedFd>, bool, u64)> {
        let h = self.files.get(&fh).map(|h| h.clone())?;
        Some((h.fd(), h.upper.load(Ordering::Acquire), h.node.generation))
    }

    fn file(&self, fh: u64) -> Result<Arc<FileHandle>> {
        self.files.get(&fh).map(|h| h.clone()).ok_or(Errno::EBADF)
    }

    /// Opens `ino` for `caller`; an O_TRUNC open drops the set-id bits a
    /// truncate by the caller removes (the kernel sends no SETATTR for it).
    pub fn open(&self, ino: u64, flags: i32, caller: &Caller) -> Result<u64> {
        let node = self.node(ino)?;
        if node.is_dir() {
            return Err(Errno::EISDIR);
        }
        self.guard_open(&node, flags)?;
        let flags = if node.kind == libc::S_IFREG {
            self.real_file_flags(flags)
        } else {
            flags
        };
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
        if write {
            if !self.has_upper() {
                return Err(Errno::EROFS);
            }
            self.copy_up_data(&node)?;
        }
        // A metacopy file is read from its data, until a write brings it up.
        let from_data = !write && self.data_loc(&node).is_some();
        let fd = self.open_object(&node, flags)?;
        if flags & libc::O_TRUNC != 0
            && write
            && node.kind == libc::S_IFREG
            && self.drop_setid(fd.as_fd(), caller, false)?
        {
            self.attributes_changed(node.ino);
        }
        let upper = node.in_upper() && !from_data;
        Ok(self.add_file_handle(&node, fd, flags, upper))
    }

    /// Opens the object `node` stands for. It is opened by name, without
    /// O_TRUNC and never blocking, then checked to be that object: a racing
    /// unlink, rename or create may have given the name to another one (a
    /// whiteout, a fifo, a new file). Then it can only be reached through
    /// an open file of the node, as on the kernel.
    fn open_object(&self, node: &Arc<Node>, flags: i32) -> Result<OwnedFd> {
        let base = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_TRUNC);
        if base & libc::O_ACCMODE == libc::O_RDONLY && flags & libc::O_TRUNC == 0 {
            if let Some(fd) = self.open_data(node, base | libc::O_NONBLOCK) {
                let fd = fd?;
                if flags & libc::O_NONBLOCK == 0 {
                    sys::fs::set_nonblock(fd.as_fd(), false)?;
                }
                return Ok(fd);
            }
        }
        let (dir, name) = self.leaf_loc(node)?;
        let by_flags = base | libc::O_NOFOLLOW | libc::O_NONBLOCK;
        let by_name = if self.leaf_is_lower(node) {
            sys::fs::openat_noatime(bfd(&*dir), &name, by_flags)
        } else {
            sys::fs::openat(bfd(&*dir), &name, by_flags, 0)
        }
        .and_then(|fd| {
            let st = sys::fs::fstat(fd.as_fd())?;
            let same = (st.st_dev, st.st_ino) == self.leaf_real(node)
                && st.st_mode & libc::S_IFMT == node.kind;
            if same {
                Ok(fd)
            } else {
                Err(Errno::ENOENT)
            }
        });
        let fd = match by_name {
            Ok(fd) => fd,
            Err(e) if e == Errno::ENOENT || e.raw() == libc::ENXIO || e == Errno::ELOOP => {
                let h = self
                    .files
                    .iter()
                    .find(|h| Arc::ptr_eq(&h.node, node))
                    .map(|h| h.clone())
                    .ok_or(Errno::ENOENT)?;
                sys::fs::reopen(h.fd().as_fd(), base | libc::O_NONBLOCK)?
            }
            Err(e) => return Err(e),
        };
        if flags & libc::O_NONBLOCK == 0 && node.kind == libc::S_IFREG {
            sys::fs::set_nonblock(fd.as_fd(), false)?;
        }
        if flags & libc::O_TRUNC != 0 && node.kind == libc::S_IFREG {
            if flags & libc::O_ACCMODE != libc::O_RDONLY {
                sys::fs::ftruncate(fd.as_fd(), 0)?;
            } else {
                // Linux truncates on O_RDONLY|O_TRUNC too (the caller needed
                // write permission for it).
                let w = sys::fs::reopen(fd.as_fd(), libc::O_WRONLY | libc::O_NONBLOCK)?;
                sys::fs::ftruncate(w.as_fd(), 0)?;
            }
        }
        Ok(fd)
    }

    /// Moves the read-only files open on `node` to its new upper copy right
    /// away, so they read the new data even if the name goes away before
    /// their next read (the kernel switches them at copy-up too).
    pub(super) fn retarget_readers(&self, node: &Arc<Node>) {
        let readers: Vec<Arc<FileHandle>> = self
            .files
            .iter()
            .filter(|h| Arc::ptr_eq(&h.node, node) && !h.upper.load(Ordering::Acquire))
            .map(|h| h.clone())
            .collect();
        for h in readers {
            let _ = self.current_fd(&h);
        }
    }

    /// The handle's fd, moved to the upper copy if one appeared since it was
    /// opened, so readers see writes made after a copy-up (as the kernel does).
    fn current_fd(&self, h: &FileHandle) -> Result<Arc<OwnedFd>> {
        if !h.upper.load(Ordering::Acquire) && h.node.copied_up.load(Ordering::Acquire) {
            let fd = self.open_object(&h.node, libc::O_RDONLY)?;
            *h.fd.write() = Arc::new(fd);
            h.upper.store(true, Ordering::Release);
        }
        Ok(h.fd())
    }

    /// An open file of `node`: `fh` if it is one, else any.
    fn open_file_of(&self, node: &Arc<Node>, fh: Option<u64>) -> Result<Arc<FileHandle>> {
        fh.and_then(|f| self.files.get(&f).map(|h| h.clone()))
            .filter(|h| Arc::ptr_eq(&h.node, node))
            .or_else(|| {
                self.files
                    .iter()
                    .find(|h| Arc::ptr_eq(&h.node, node))
                    .map(|h| h.clone())
            })
            .ok_or(Errno::ENOENT)
    }

    /// fstat through an open file of `node`: `fh` if it is one, else any.
    pub(super) fn open_file_stat(&self, node: &Arc<Node>, fh: Option<u64>) -> Result<libc::stat> {
        let fd = self.current_fd(&*self.open_file_of(node, fh)?)?;
        sys::fs::fstat(fd.as_fd())
    }

    /// The object of a file whose last name is gone, through an open file
    /// of it (`fh` if it is one, else any): the kernel still sends fchmod,
    /// fchown, futimens, ftruncate and f*xattr of such a file, and flushes
    /// its times through setattr with the writeback cache. `upper`: only an
    /// fd of its upper object will do (the change must never reach a
    /// lower). ENOENT when there is none.
    pub(super) fn unlinked_object(
        &self,
        node: &Arc<Node>,
        fh: Option<u64>,
        upper: bool,
    ) -> Result<Arc<OwnedFd>> {
        let h = self.open_file_of(node, fh)?;
        let fd = self.current_fd(&h)?;
        if upper && !h.upper.load(Ordering::Acquire) {
            return Err(Errno::ENOENT);
        }
        Ok(fd)
    }

    /// Reads up to `size` bytes of open file `fh` at `offset` and hands them,
    /// or the error, to `reply`. The bytes sit in a buffer this thread keeps:
    /// a fresh zeroed 1 MiB per READ cost a memset and page faults on every
    /// request of a sequential read.
    pub fn read_with<R>(
        &self,
        fh: u64,
        offset: u64,
        size: u32,
        reply: impl FnOnce(Result<&[u8]>) -> R,
    ) -> R {
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let fd = match self.file(fh).and_then(|h| self.current_fd(&h)) {
            Ok(fd) => fd,
            Err(e) => return reply(Err(e)),
        };
        BUF.with_borrow_mut(|buf| {
            let size = size as usize;
            if buf.len() < size {
                buf.resize(size, 0);
            }
            let mut got = 0;
            while got < size {
                match sys::fs::pread(fd.as_fd(), &mut buf[got..size], offset as i64 + got as i64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) => return reply(Err(e)),
                }
            }
            reply(Ok(&buf[..got]))
        })
    }

    /// Writes to open file `fh`. `kill_setid`: the kernel asks to drop the
    /// set-id bits first (FUSE_WRITE_KILL_SUIDGID) for this caller, and
    /// whether its finding that the caller lacks CAP_FSETID holds (it checks
    /// the initial user namespace only).
    pub fn write(
        &self,
        fh: u64,
        offset: u64,
        data: &[u8],
        kill_setid: Option<(&Caller, bool)>,
    ) -> Result<u32> {
        let h = self.file(fh)?;
        let fd = h.fd();
        if let Some((c, incapable)) = kill_setid {
            self.drop_setid_of(&h, c, incapable)?;
        }
        // With the writeback cache the kernel stamped the write's mtime when
        // it took the data and sends it with a SETATTR, maybe before this
        // write: the file keeps its mtime.
        let keep_mtime = if self.writeback() {
            let turn = h.node.times_lock.lock();
            Some((turn, sys::fs::fstat(fd.as_fd())?))
        } else {
            None
        };
        let n = if h.flags & libc::O_APPEND != 0 {
            sys::fs::write(fd.as_fd(), data)?
        } else {
            sys::fs::pwrite(fd.as_fd(), data, offset as i64)?
        };
        if let Some((_turn, before)) = keep_mtime {
            sys::fs::futimens_any(
                fd.as_fd(),
                Time::Omit,
                Time::At(before.st_mtime, before.st_mtime_nsec),
            )?;
        }
        Ok(n as u32)
    }

    pub fn release(&self, fh: u64) {
        if let Some((_, h)) = self.files.remove(&fh) {
            self.watch_released(&h);
        }
    }

    pub fn fsync(&self, fh: u64, datasync: bool) -> Result<()> {
        if self.opts.volatile {
            return self.volatile_sync_status();
        }
        let h = self.file(fh)?;
        sys::fs::fsync(h.fd().as_fd(), datasync)
    }

    /// fallocate(2) for `caller`, who may drop set-id bits as by a write
    /// (with KILLPRIV_V2 the kernel leaves that to us).
    pub fn fallocate(
        &self,
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
        caller: &Caller,
    ) -> Result<()> {
        let h = self.file(fh)?;
        self.drop_setid_of(&h, caller, false)?;
        sys::fs::fallocate(h.fd().as_fd(), mode, offset as i64, length as i64)
    }

    pub fn lseek(&self, fh: u64, offset: i64, whence: i32) -> Result<i64> {
        let h = self.file(fh)?;
        let fd = self.current_fd(&h)?;
        sys::fs::lseek(fd.as_fd(), offset, whence)
    }

    /// copy_file_range(2) for `caller`, who may drop the target's set-id
    /// bits as by a write.
    pub fn copy_file_range(
        &self,
        fh_in: u64,
        off_in: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
        caller: &Caller,
    ) -> Result<u32> {
        let hi = self.file(fh_in)?;
        let ho = self.file(fh_out)?;
        self.drop_setid_of(&ho, caller, false)?;
        let fi = self.current_fd(&hi)?;
        let fo = ho.fd();
        let (mut a, mut b) = (off_in as i64, off_out as i64);
        let len = (len as usize).min(1 << 30);
        let n = sys::fs::copy_file_range(fi.as_fd(), &mut a, fo.as_fd(), &mut b, len)?;
        Ok(n as u32)
    }

    /// Called once the kernel agreed to cache writes (FUSE_WRITEBACK_CACHE).
    pub fn use_writeback_cache(&self) {
        self.writeback.store(true, Ordering::Relaxed);
    }

    pub(super) fn writeback(&self) -> bool {
        self.writeback.load(Ordering::Relaxed)
    }

    /// The flags a regular file is really opened with for an open with
    /// `flags`. With the writeback cache the kernel reads around a partial
    /// page write through whatever file is open (also a write-only one),
    /// and it places appends itself: its writes carry their offsets.
    pub(super) fn real_file_flags(&self, flags: i32) -> i32 {
        if !self.writeback() {
            return flags;
        }
        let f = flags & !libc::O_APPEND;
        if f & libc::O_ACCMODE == libc::O_WRONLY {
            (f & !libc::O_ACCMODE) | libc::O_RDWR
        } else {
            f
        }
    }
}
