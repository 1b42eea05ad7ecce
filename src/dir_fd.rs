//! Directory fds of the layers, of which the server keeps a bounded number
//! open. The kernel keeps a looked-up dir cached until memory pressure, and
//! each cached dir needs an fd per layer it merges; a walk over a big image
//! would otherwise run into RLIMIT_NOFILE, after which every request fails.
//!
//! A lower dir never changes under a mount, so its fd can be closed and
//! opened again from the dir it was found in and its name, checked to be
//! the same dir. Layer roots and upper dirs stay open: renames move the
//! latter, so their names would not find them again.

use std::collections::VecDeque;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::errno::{Errno, Result};
use crate::sys;

/// A layer dir's fd, open now or reopened on demand.
#[derive(Debug)]
pub struct DirFd(Kind);

#[derive(Debug)]
enum Kind {
    /// Held for as long as the dir is in use.
    Pinned(Arc<OwnedFd>),
    Reopenable(Reopenable),
}

#[derive(Debug)]
struct Reopenable {
    from: Arc<DirFd>,
    name: CString,
    /// (st_dev, st_ino): a reopen must find the same dir.
    id: (u64, u64),
    slot: Mutex<Option<Arc<OwnedFd>>>,
    /// Set by each use, cleared by the pool's clock hand: a dir in use
    /// keeps its fd.
    used: AtomicBool,
    pool: Arc<FdPool>,
}

/// The open reopenable fds of a mount, closed least recently used first
/// (clock order) beyond a budget.
#[derive(Debug)]
pub struct FdPool {
    budget: usize,
    open: AtomicUsize,
    ring: Mutex<VecDeque<Weak<DirFd>>>,
}

impl DirFd {
    pub fn pinned(fd: Arc<OwnedFd>) -> Arc<DirFd> {
        Arc::new(DirFd(Kind::Pinned(fd)))
    }

    /// Opens the lower dir `name` inside `from`, which `lstat` found as `st`.
    pub fn open_lower(
        from: &Arc<DirFd>,
        name: &CStr,
        st: &libc::stat,
        pool: &Arc<FdPool>,
    ) -> Result<Arc<DirFd>> {
        let fd = Arc::new(from.open_child(name)?);
        let dir = Arc::new(DirFd(Kind::Reopenable(Reopenable {
            from: from.clone(),
            name: name.to_owned(),
            id: (st.st_dev, st.st_ino),
            slot: Mutex::new(Some(fd)),
            used: AtomicBool::new(true),
            pool: pool.clone(),
        })));
        pool.admit(Arc::downgrade(&dir));
        Ok(dir)
    }

    /// The fd, reopened if the pool closed it.
    pub fn get(self: &Arc<Self>) -> Result<Arc<OwnedFd>> {
        let r = match &self.0 {
            Kind::Pinned(fd) => return Ok(fd.clone()),
            Kind::Reopenable(r) => r,
        };
        if !r.used.load(Ordering::Relaxed) {
            r.used.store(true, Ordering::Relaxed);
        }
        if let Some(fd) = &*r.slot.lock() {
            return Ok(fd.clone());
        }
        let fd = r.from.open_child(&r.name)?;
        let st = sys::fs::fstat(fd.as_fd())?;
        if (st.st_dev, st.st_ino) != r.id {
            log::warn!("a lower dir changed under the mount: {:?}", r.name);
            return Err(Errno::ESTALE);
        }
        let fd = Arc::new(fd);
        {
            let mut slot = r.slot.lock();
            if let Some(have) = &*slot {
                return Ok(have.clone());
            }
            *slot = Some(fd.clone());
        }
        r.pool.admit(Arc::downgrade(self));
        Ok(fd)
    }

    /// Opens a dir inside this one; on EMFILE the pool closes fds it can
    /// spare and the open is tried once more.
    fn open_child(self: &Arc<Self>, name: &CStr) -> Result<OwnedFd> {
        let parent = self.get()?;
        match sys::fs::open_dir_path(parent.as_fd(), name) {
            Err(Errno::EMFILE) => {
                if let Kind::Reopenable(r) = &self.0 {
                    r.pool.shrink(r.pool.budget / 2);
                }
                sys::fs::open_dir_path(parent.as_fd(), name)
            }
            other => other,
        }
    }
}

impl Drop for Reopenable {
    fn drop(&mut self) {
        if self.slot.get_mut().is_some() {
            self.pool.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl FdPool {
    /// At most about `budget` reopenable fds stay open.
    pub fn new(budget: usize) -> Arc<FdPool> {
        Arc::new(FdPool {
            budget: budget.max(16),
            open: AtomicUsize::new(0),
            ring: Mutex::new(VecDeque::new()),
        })
    }

    /// A budget for a process whose fd limit is `limit`: half of it, the
    /// rest being left to upper dirs, open files and listings.
    pub fn budget_for_limit(limit: u64) -> usize {
        usize::try_from(limit / 2).unwrap_or(usize::MAX)
    }

    /// How many reopenable fds are open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn admit(&self, dir: Weak<DirFd>) {
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        let mut ring = self.ring.lock();
        ring.push_back(dir);
        if open > self.budget {
            // Closing an eighth at a time keeps the hand off most admits.
            Self::close_until(&mut ring, &self.open, self.budget - self.budget / 8);
        }
        // Dirs the kernel forgot leave dead entries behind.
        if ring.len() > 2 * self.open() + 64 {
            ring.retain(|w| w.strong_count() > 0);
        }
    }

    /// Closes fds until at most `target` are open (after EMFILE).
    fn shrink(&self, target: usize) {
        Self::close_until(&mut self.ring.lock(), &self.open, target);
    }

    /// Moves the clock hand: a dir used since the hand last passed keeps its
    /// fd for another round, any other closes it.
    fn close_until(ring: &mut VecDeque<Weak<DirFd>>, open: &AtomicUsize, target: usize) {
        let mut steps = 2 * ring.len();
        while open.load(Ordering::Relaxed) > target && steps > 0 {
            steps -= 1;
            let Some(weak) = ring.pop_front() else { break };
            let Some(dir) = weak.upgrade() else { continue };
            let Kind::Reopenable(r) = &dir.0 else {
                continue;
            };
            if r.used.swap(false, Ordering::Relaxed) {
                ring.push_back(weak);
                continue;
            }
            // A caller still using the fd keeps it open until it is done.
            if r.slot.lock().take().is_some() {
                open.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &std::path::Path, n: usize) {
        for i in 0..n {
            std::fs::create_dir_all(root.join(format!("d{i}/sub"))).unwrap();
        }
    }

    fn open(root: &std::path::Path) -> Arc<DirFd> {
        let c = CString::new(root.as_os_str().as_encoded_bytes()).unwrap();
        DirFd::pinned(Arc::new(
            sys::fs::open_dir_path(sys::fs::cwd(), &c).unwrap(),
        ))
    }

    fn child(from: &Arc<DirFd>, name: &str, pool: &Arc<FdPool>) -> Arc<DirFd> {
        let c = CString::new(name).unwrap();
        let st = sys::fs::lstatat(from.get().unwrap().as_fd(), &c).unwrap();
        DirFd::open_lower(from, &c, &st, pool).unwrap()
    }

    #[test]
    fn fds_beyond_the_budget_close_and_reopen_as_the_same_dir() {
        let t = std::env::temp_dir().join(format!("ufs-dirfd-{}", std::process::id()));
        tree(&t, 100);
        let root = open(&t);
        let pool = FdPool::new(16);
        let dirs: Vec<_> = (0..100)
            .map(|i| child(&root, &format!("d{i}"), &pool))
            .collect();
        let subs: Vec<_> = dirs.iter().map(|d| child(d, "sub", &pool)).collect();
        assert!(pool.open() <= 16, "{} open", pool.open());
        for (i, s) in subs.iter().enumerate() {
            let st = sys::fs::fstat(s.get().unwrap().as_fd()).unwrap();
            let want = std::fs::metadata(t.join(format!("d{i}/sub"))).unwrap();
            assert_eq!(st.st_ino, std::os::unix::fs::MetadataExt::ino(&want));
        }
        assert!(pool.open() <= 17, "{} open", pool.open());
        drop(subs);
        drop(dirs);
        assert_eq!(pool.open(), 0);
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn a_replaced_dir_is_not_reopened() {
        let t = std::env::temp_dir().join(format!("ufs-dirfd-r-{}", std::process::id()));
        tree(&t, 20);
        let root = open(&t);
        let pool = FdPool::new(16);
        let dirs: Vec<_> = (0..20)
            .map(|i| child(&root, &format!("d{i}"), &pool))
            .collect();
        std::fs::rename(t.join("d0"), t.join("gone")).unwrap();
        std::fs::create_dir(t.join("d0")).unwrap();
        // d0 was the least recently used, so its fd was closed.
        assert_eq!(dirs[0].get().unwrap_err(), Errno::ESTALE);
        std::fs::remove_dir_all(&t).unwrap();
    }
}
