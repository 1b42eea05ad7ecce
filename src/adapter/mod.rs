//! The only module that knows fuser: decodes requests, calls [`Union`], and
//! turns results into replies. A panic in a handler is caught, logged and
//! answered with EIO so the server keeps serving.
//!
//! - `mod.rs` (here): [`Adapter`] and its policy: what passes through, which
//!   listing a read serves, the set-id guard on chmod.
//! - `filesystem.rs`: `impl fuser::Filesystem`, one handler per request.
//! - `reply.rs`: errno, attribute, time and device-number conversion
//!   between fuser's types and ours.
//! - `mount.rs`, `passthrough.rs`, `present.rs`: mounting, backing files,
//!   containers/storage's presentation options.

use std::sync::Arc;
use std::time::Duration;

use fuser::{Generation, INodeNo, ReplyDirectoryPlus};

use crate::errno::Errno;
use crate::node::DirEntry;
use crate::union::{Caller, SetAttr, Union};

mod fileattr;
mod filesystem;
pub mod mount;
pub mod passthrough;
pub mod present;
mod reply;

use passthrough::{Open, Passthrough};
use present::Present;

/// Switches for tests, which the binary reads from the environment once
/// (`UNIONFS_DIR_FDS`, `UNIONFS_OPENDIR`); `Default` is normal serving.
#[derive(Clone, Copy, Debug, Default)]
pub struct Switches {
    /// At most this many open layer dir fds (1 makes reopening the common
    /// case); None: a share of RLIMIT_NOFILE.
    pub dir_fds: Option<usize>,
    /// Serve OPENDIR even where the kernel could skip it.
    pub opendir: bool,
}

pub struct Adapter {
    fs: Arc<Union>,
    ttl: Duration,
    pt: Passthrough,
    stack_depth: u32,
    /// The kernel lets us answer OPENDIR with ENOSYS; it then never sends
    /// OPENDIR/RELEASEDIR again (two round trips less per dir open) and
    /// caches listings by default.
    no_opendir: bool,
    /// Serve OPENDIR even so (`Switches::opendir`).
    always_opendir: bool,
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
            always_opendir: false,
            killpriv: initial_ns,
            trust_kill: initial_ns,
            writeback,
            present,
        }
    }

    /// Serves OPENDIR even where the kernel could skip it, as for older
    /// kernels (tests reach the per-handle listing path this way).
    pub fn always_opendir(mut self, always: bool) -> Adapter {
        self.always_opendir = always;
        self
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

    /// What `xattr_permissions` records of a new object.
    fn created(&self, parent: u64, r: &Result<crate::union::Entry, Errno>, c: &Caller, mode: u32) {
        if let Ok(e) = r {
            self.present.created(&self.fs, parent, e, c, mode);
        }
    }
}

/// A listing and where a read resumes in it.
struct ListingTail {
    entries: Arc<Vec<DirEntry>>,
    start: usize,
}

impl ListingTail {
    fn iter(&self) -> impl Iterator<Item = &DirEntry> {
        self.entries[self.start..].iter()
    }
}
