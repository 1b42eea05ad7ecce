//! Open directories and the merged listing: dir handles and their
//! snapshots, the merge of a dir's layers (also what rmdir and rename ask
//! for emptiness).

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::errno::{Errno, Result};
use crate::format::{cname, EntryKind};
use crate::node::{DirBody, DirEntry, Node};
use crate::sys;
use crate::sys::fs::bfd;

use super::{Entry, Union};

/// An open directory: its merged listing, taken once per rewind.
#[derive(Debug)]
pub struct DirHandle {
    pub node: Arc<Node>,
    pub entries: Mutex<Option<Arc<Vec<DirEntry>>>>,
}

fn dtype_kind(t: u8) -> u32 {
    match t {
        libc::DT_DIR => libc::S_IFDIR,
        libc::DT_REG => libc::S_IFREG,
        libc::DT_LNK => libc::S_IFLNK,
        libc::DT_FIFO => libc::S_IFIFO,
        libc::DT_SOCK => libc::S_IFSOCK,
        libc::DT_CHR => libc::S_IFCHR,
        libc::DT_BLK => libc::S_IFBLK,
        _ => 0,
    }
}

/// A readdir cookie for `name`: above 2 (`.` and `..`), below 2^63 (offsets
/// are signed in user space), the same in every run.
fn name_cookie(name: &std::ffi::OsStr) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    (h.finish() >> 2) + 3
}

impl Union {
    pub fn opendir(&self, ino: u64) -> Result<u64> {
        let node = self.node(ino)?;
        if !node.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let fh = self.next_fh();
        self.dirs.insert(
            fh,
            Arc::new(DirHandle {
                node,
                entries: Mutex::new(None),
            }),
        );
        Ok(fh)
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs.remove(&fh);
    }

    pub fn fsyncdir(&self, ino: u64) -> Result<()> {
        if self.opts.volatile {
            return self.volatile_sync_status();
        }
        let node = self.node(ino)?;
        let body = node.dir_body().ok_or(Errno::ENOTDIR)?;
        if let Some(u) = body.upper {
            let fd = sys::fs::openat(bfd(&u.fd()?), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
            sys::fs::fsync(fd.as_fd(), false)?;
        }
        Ok(())
    }

    /// The listing of an open dir: `.`, `..`, then the merged entries. A read
    /// at offset 0 takes a fresh snapshot (rewinddir); later offsets index it.
    pub fn dir_snapshot(&self, fh: u64, offset: u64) -> Result<Arc<Vec<DirEntry>>> {
        let h = self.dirs.get(&fh).map(|h| h.clone()).ok_or(Errno::EBADF)?;
        let mut cur = h.entries.lock();
        if offset == 0 || cur.is_none() {
            let mut v = self.listing_of(&h.node)?;
            for (i, e) in v.iter_mut().enumerate() {
                e.cookie = i as u64 + 1;
                e.offset = e.cookie;
            }
            *cur = Some(Arc::new(v));
        }
        cur.clone().ok_or(Errno::EIO)
    }

    /// The listing of dir `ino` for a read without an open handle (the
    /// kernel skips OPENDIR when we answer ENOSYS), in cookie order. A
    /// cookie is derived from the name, so a read that resumes after the
    /// dir changed, or after another reader took a fresh snapshot, goes on
    /// at the right entry: names still there are listed exactly once.
    pub fn dir_listing(&self, ino: u64, offset: u64) -> Result<Arc<Vec<DirEntry>>> {
        let node = self.node(ino)?;
        if offset != 0 {
            if let Some(v) = node.listing.lock().clone() {
                return Ok(v);
            }
        }
        let mut v = self.listing_of(&node)?;
        for (i, e) in v.iter_mut().enumerate() {
            e.cookie = match i {
                0 | 1 => i as u64 + 1,
                _ => name_cookie(&e.name),
            };
        }
        v.sort_by_key(|e| e.cookie);
        // Equal hashes (practically never): keep cookies unique.
        for i in 1..v.len() {
            if v[i].cookie <= v[i - 1].cookie {
                v[i].cookie = v[i - 1].cookie + 1;
            }
        }
        for e in v.iter_mut() {
            e.offset = e.cookie;
        }
        // A reader that got to the end stays there, as on the kernel: names
        // created later must not show up after the last entry it read. Only
        // the offset says so; the cookie stays the name's, or a reader that
        // stopped just before the end would meet that entry again after
        // another reader's snapshot made it the last one.
        if let Some(last) = v.last_mut() {
            last.offset = i64::MAX as u64;
        }
        let v = Arc::new(v);
        *node.listing.lock() = Some(v.clone());
        Ok(v)
    }

    /// A read reached the end of dir `ino`: its snapshot is not needed.
    pub fn dir_listing_done(&self, ino: u64) {
        if let Ok(node) = self.node(ino) {
            node.listing.lock().take();
        }
    }

    /// `.`, `..` and the merged entries of a dir node.
    fn listing_of(&self, node: &Arc<Node>) -> Result<Vec<DirEntry>> {
        let body = node.dir_body().ok_or(Errno::ENOTDIR)?;
        let parent_ino = node.parent().map(|p| p.ino).unwrap_or(node.ino);
        let mut v = vec![
            DirEntry {
                name: ".".into(),
                kind: libc::S_IFDIR,
                ino: self.shown_ino(node.ino),
                cookie: 0,
                offset: 0,
            },
            DirEntry {
                name: "..".into(),
                kind: libc::S_IFDIR,
                ino: self.shown_ino(parent_ino),
                cookie: 0,
                offset: 0,
            },
        ];
        v.extend(self.merged_entries(&body, false)?);
        Ok(v)
    }

    /// Looks up one listed entry for readdirplus (counts a kernel lookup).
    pub fn lookup_entry(&self, dir_ino: u64, e: &DirEntry) -> Result<Entry> {
        self.lookup(dir_ino, &e.name)
    }

    /// Merges the name lists of a dir's layers: upper first, each name once,
    /// whiteouts and OCI markers hidden. With `first_only`, stops at the first
    /// visible entry (an emptiness test).
    pub(super) fn merged_entries(&self, d: &DirBody, first_only: bool) -> Result<Vec<DirEntry>> {
        let first_lower = self.layers.first_lower();
        // Upper entries of merged or impure dirs may be copy-ups whose number
        // comes from their origin: look those up so d_ino == st_ino.
        let fix_upper_ino = !first_only
            && d.upper.as_ref().is_some_and(|u| {
                !d.lowers.is_empty() || u.fd().is_ok_and(|fd| self.fmt.is_impure(bfd(&fd), c""))
            });
        let mut seen: HashSet<OsString> = HashSet::new();
        let mut out = Vec::new();
        for ld in d.upper.iter().chain(d.lowers.iter()) {
            let is_lower = ld.layer >= first_lower;
            let rfd = if is_lower {
                sys::fs::openat_noatime(bfd(&ld.fd()?), c".", libc::O_RDONLY | libc::O_DIRECTORY)?
            } else {
                sys::fs::openat(bfd(&ld.fd()?), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?
            };
            let dev = self.layers.list.get(ld.layer).map(|l| l.dev).unwrap_or(0);
            // The kernel's emptiness check (rmdir, rename over a dir) does
            // not recognise xattr whiteouts: such a dir is not empty.
            let xwh = ld.xwh && !first_only;
            let mut hidden_below: Vec<OsString> = Vec::new();
            for e in sys::dir::read_all(rfd.as_fd())? {
                if seen.contains(&e.name) {
                    continue;
                }
                if is_lower && self.fmt.oci() {
                    if e.name.as_encoded_bytes() == b".wh..wh..opq" {
                        continue;
                    }
                    if let Some(t) = self.fmt.oci_target(&e.name) {
                        hidden_below.push(t.to_os_string());
                        continue;
                    }
                }
                let mut kind = dtype_kind(e.d_type);
                let need_stat =
                    kind == 0 || kind == libc::S_IFCHR || (xwh && kind == libc::S_IFREG);
                if need_stat {
                    let Ok(cn) = cname(&e.name) else { continue };
                    let st = match sys::fs::lstatat(rfd.as_fd(), &cn) {
                        Ok(st) => st,
                        Err(_) => continue,
                    };
                    if self.fmt.classify(rfd.as_fd(), &cn, &st, xwh) == EntryKind::Whiteout {
                        seen.insert(e.name);
                        continue;
                    }
                    kind = st.st_mode & libc::S_IFMT;
                }
                seen.insert(e.name.clone());
                let mut ino = self.layers.map_ino(dev, e.ino);
                if fix_upper_ino && !is_lower {
                    if let Ok(Some(r)) = self.resolve(d, &e.name) {
                        ino = r.ino;
                    }
                }
                out.push(DirEntry {
                    name: e.name,
                    kind,
                    ino: self.nodes.shown_id(ino),
                    cookie: 0,
                    offset: 0,
                });
                if first_only {
                    return Ok(out);
                }
            }
            seen.extend(hidden_below);
        }
        Ok(out)
    }

    /// Whether a merged directory shows no entries.
    pub(super) fn merged_is_empty(&self, d: &DirBody) -> Result<bool> {
        Ok(self.merged_entries(d, true)?.is_empty())
    }
}
