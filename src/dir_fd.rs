//! Directory fds of the layers, of which the server keeps a bounded number
//! open. The kernel keeps a looked-up dir cached until memory pressure, and
//! each cached dir needs an fd per layer it merges; a walk over a big tree
//! would otherwise run into RLIMIT_NOFILE, after which every request fails.
//!
//! A closed fd is opened again from the dir's parent and name, checked to
//! be the same dir: by (st_dev, st_ino) for a lower dir, which never
//! changes under a mount, and by file handle for an upper dir, whose inode
//! number a removed dir's successor may reuse. A rename of an upper dir
//! holds it open (`hold`) until its new place is recorded (`moved`), and a
//! reopen that a rename overtook starts again from the new place. A dir
//! about to be removed keeps its fd (`keep_open`). Layer roots, and upper
//! dirs on a filesystem without file handles, stay open.

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
    place: Mutex<Place>,
    ident: Ident,
    slot: Mutex<Slot>,
    /// Set by each use, cleared by the pool's clock hand: a dir in use
    /// keeps its fd.
    used: AtomicBool,
    pool: Arc<FdPool>,
}

#[derive(Debug)]
struct Place {
    from: Arc<DirFd>,
    name: CString,
    /// Counts `moved` calls: a reopen that failed while the dir moved
    /// tries again at its new place.
    moves: u64,
}

/// Why a reopen failed.
enum Failure {
    Errno(Errno),
    /// The dir moved while it was reopened.
    Moved,
}

impl From<Errno> for Failure {
    fn from(e: Errno) -> Failure {
        Failure::Errno(e)
    }
}

#[derive(Debug, Default)]
struct Slot {
    fd: Option<Arc<OwnedFd>>,
    /// Holds (`DirFd::hold`): the fd stays open while any is taken.
    holds: usize,
}

/// What a reopened fd must match.
#[derive(Debug, PartialEq)]
enum Ident {
    Ino(u64, u64),
    Handle(i32, Vec<u8>),
}

/// The open reopenable fds of a mount, closed least recently used first
/// (clock order) beyond a budget.
#[derive(Debug)]
pub struct FdPool {
    budget: usize,
    open: AtomicUsize,
    ring: Mutex<VecDeque<Weak<DirFd>>>,
}

/// Keeps a dir's fd open (see `DirFd::hold`).
pub struct Held(Arc<DirFd>);

impl DirFd {
    pub fn pinned(fd: Arc<OwnedFd>) -> Arc<DirFd> {
        Arc::new(DirFd(Kind::Pinned(fd)))
    }

    /// Opens the lower dir `name` inside `from`, which `lstat` found as `st`.
    pub fn lower(
        from: &Arc<DirFd>,
        name: &CStr,
        st: &libc::stat,
        pool: &Arc<FdPool>,
    ) -> Result<Arc<DirFd>> {
        let fd = from.open_child(name)?;
        Ok(Self::new_reopenable(
            fd,
            from,
            name,
            Ident::Ino(st.st_dev, st.st_ino),
            pool,
        ))
    }

    /// Takes `fd`, the upper dir `name` inside `from`.
    pub fn upper(fd: OwnedFd, from: &Arc<DirFd>, name: &CStr, pool: &Arc<FdPool>) -> Arc<DirFd> {
        match sys::fs::name_to_handle(fd.as_fd(), c"", libc::AT_EMPTY_PATH) {
            Ok((t, h)) => Self::new_reopenable(fd, from, name, Ident::Handle(t, h), pool),
            // Nothing would tell a successor with the same inode number.
            Err(_) => Self::pinned(Arc::new(fd)),
        }
    }

    fn new_reopenable(
        fd: OwnedFd,
        from: &Arc<DirFd>,
        name: &CStr,
        ident: Ident,
        pool: &Arc<FdPool>,
    ) -> Arc<DirFd> {
        let dir = Arc::new(DirFd(Kind::Reopenable(Reopenable {
            place: Mutex::new(Place {
                from: from.clone(),
                name: name.to_owned(),
                moves: 0,
            }),
            ident,
            slot: Mutex::new(Slot {
                fd: Some(Arc::new(fd)),
                holds: 0,
            }),
            used: AtomicBool::new(true),
            pool: pool.clone(),
        })));
        pool.admit(Arc::downgrade(&dir));
        dir
    }

    /// The fd, reopened if the pool closed it.
    pub fn get(self: &Arc<Self>) -> Result<Arc<OwnedFd>> {
        // A dir renamed again and again can keep moving under a reopen;
        // each try sees its latest place.
        for _ in 0..64 {
            match self.try_get() {
                Ok(fd) => return Ok(fd),
                Err(Failure::Errno(e)) => return Err(e),
                Err(Failure::Moved) => std::thread::yield_now(),
            }
        }
        Err(Errno::ESTALE)
    }

    fn try_get(self: &Arc<Self>) -> std::result::Result<Arc<OwnedFd>, Failure> {
        if let Some(fd) = self.open_fd() {
            return Ok(fd);
        }
        // Closed: reopen from the nearest open ancestor down, without
        // recursion (a deep tree's ancestors may all be closed).
        // (dir, the parent it had when the walk passed it)
        let mut chain: Vec<(Arc<DirFd>, Arc<DirFd>)> = Vec::new();
        let mut dir = self.clone();
        let mut fd = loop {
            let Some(r) = dir.reopenable() else {
                return Err(Errno::EIO.into());
            };
            let from = r.place.lock().from.clone();
            chain.push((dir, from.clone()));
            match from.open_fd() {
                Some(fd) => break fd,
                None => dir = from,
            }
        };
        for (dir, from) in chain.iter().rev() {
            fd = dir.reopen_in(&fd, from)?;
        }
        Ok(fd)
    }

    /// Keeps the fd open until the returned guard goes: a rename holds the
    /// dir it moves, so that nothing reopens it by its old name.
    pub fn hold(self: &Arc<Self>) -> Result<Held> {
        self.add_hold();
        let held = Held(self.clone());
        self.get()?;
        Ok(held)
    }

    /// Keeps the fd open for as long as the dir is in use: a dir about to
    /// be removed cannot be reopened afterwards, but a process inside it
    /// can still stat and list it.
    pub fn keep_open(self: &Arc<Self>) -> Result<()> {
        // A hold that is never given back; it goes with the DirFd.
        self.add_hold();
        self.get().map(drop)
    }

    /// Taken before the fd is (re)opened, so the pool cannot close it
    /// between the two.
    fn add_hold(&self) {
        if let Some(r) = self.reopenable() {
            r.slot.lock().holds += 1;
        }
    }

    /// Records that the dir now is `name` inside `to`.
    pub fn moved(&self, to: &Arc<DirFd>, name: &CStr) {
        if let Some(r) = self.reopenable() {
            let mut place = r.place.lock();
            place.from = to.clone();
            place.name = name.to_owned();
            place.moves += 1;
        }
    }

    fn reopenable(&self) -> Option<&Reopenable> {
        match &self.0 {
            Kind::Pinned(_) => None,
            Kind::Reopenable(r) => Some(r),
        }
    }

    /// The fd if it is open, marking the dir used.
    fn open_fd(&self) -> Option<Arc<OwnedFd>> {
        match &self.0 {
            Kind::Pinned(fd) => Some(fd.clone()),
            Kind::Reopenable(r) => {
                if !r.used.load(Ordering::Relaxed) {
                    r.used.store(true, Ordering::Relaxed);
                }
                r.slot.lock().fd.clone()
            }
        }
    }

    /// Opens this (closed) dir again inside `parent`, the fd of `from`,
    /// which was its parent when `get` walked up.
    fn reopen_in(
        self: &Arc<Self>,
        parent: &OwnedFd,
        from: &Arc<DirFd>,
    ) -> std::result::Result<Arc<OwnedFd>, Failure> {
        let Some(r) = self.reopenable() else {
            return self.open_fd().ok_or(Failure::Errno(Errno::EIO));
        };
        // Another thread may have opened it meanwhile (a rename's hold does
        // so before it moves the dir away from the name used here).
        let opened = || r.slot.lock().fd.clone();
        if let Some(fd) = opened() {
            return Ok(fd);
        }
        let (name, moves) = {
            let place = r.place.lock();
            if !Arc::ptr_eq(&place.from, from) {
                return Err(Failure::Moved);
            }
            (place.name.clone(), place.moves)
        };
        let fd = match Self::open_in(parent, &name, &r.pool).and_then(|fd| {
            if Self::ident_of(&fd, &r.ident)? == r.ident {
                Ok(fd)
            } else {
                // Removed (or, for a lower dir, changed under the mount).
                Err(Errno::ESTALE)
            }
        }) {
            Ok(fd) => Arc::new(fd),
            Err(e) => {
                return match opened() {
                    Some(fd) => Ok(fd),
                    // A rename took it away from that name meanwhile.
                    None if r.place.lock().moves != moves => Err(Failure::Moved),
                    None => Err(Failure::Errno(e)),
                };
            }
        };
        {
            let mut slot = r.slot.lock();
            if let Some(have) = &slot.fd {
                return Ok(have.clone());
            }
            slot.fd = Some(fd.clone());
        }
        r.pool.admit(Arc::downgrade(self));
        Ok(fd)
    }

    /// The identity of `fd` of the same kind as `like`.
    fn ident_of(fd: &OwnedFd, like: &Ident) -> Result<Ident> {
        Ok(match like {
            Ident::Ino(..) => {
                let st = sys::fs::fstat(fd.as_fd())?;
                Ident::Ino(st.st_dev, st.st_ino)
            }
            Ident::Handle(..) => {
                let (t, h) = sys::fs::name_to_handle(fd.as_fd(), c"", libc::AT_EMPTY_PATH)?;
                Ident::Handle(t, h)
            }
        })
    }

    /// Opens a dir inside this one.
    fn open_child(self: &Arc<Self>, name: &CStr) -> Result<OwnedFd> {
        let parent = self.get()?;
        let pool = self.reopenable().map(|r| &r.pool);
        match pool {
            Some(pool) => Self::open_in(&parent, name, pool),
            None => sys::fs::open_dir_path(parent.as_fd(), name),
        }
    }

    /// On EMFILE the pool closes fds it can spare and the open is tried
    /// once more.
    fn open_in(parent: &OwnedFd, name: &CStr, pool: &FdPool) -> Result<OwnedFd> {
        match sys::fs::open_dir_path(parent.as_fd(), name) {
            Err(Errno::EMFILE) => {
                pool.shrink(pool.budget / 2);
                sys::fs::open_dir_path(parent.as_fd(), name)
            }
            other => other,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(r) = self.0.reopenable() {
            r.slot.lock().holds -= 1;
        }
    }
}

impl Drop for Reopenable {
    fn drop(&mut self) {
        if self.slot.get_mut().fd.is_some() {
            self.pool.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl FdPool {
    /// At most about `budget` reopenable fds stay open.
    pub fn new(budget: usize) -> Arc<FdPool> {
        Arc::new(FdPool {
            budget: budget.max(1),
            open: AtomicUsize::new(0),
            ring: Mutex::new(VecDeque::new()),
        })
    }

    /// A budget for a process whose fd limit is `limit`: half of it, the
    /// rest being left to open files, listings and pinned dirs.
    pub fn budget_for_limit(limit: u64) -> usize {
        usize::try_from(limit / 2).unwrap_or(usize::MAX).max(16)
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

    /// Moves the clock hand: a dir used since the hand last passed, or
    /// held, keeps its fd for another round; any other closes it.
    fn close_until(ring: &mut VecDeque<Weak<DirFd>>, open: &AtomicUsize, target: usize) {
        let mut steps = 2 * ring.len();
        while open.load(Ordering::Relaxed) > target && steps > 0 {
            steps -= 1;
            let Some(weak) = ring.pop_front() else { break };
            let Some(dir) = weak.upgrade() else { continue };
            let Some(r) = dir.reopenable() else { continue };
            if r.used.swap(false, Ordering::Relaxed) {
                ring.push_back(weak);
                continue;
            }
            let mut slot = r.slot.lock();
            if slot.holds > 0 {
                drop(slot);
                ring.push_back(weak);
                continue;
            }
            // A caller still using the fd keeps it open until it is done.
            if slot.fd.take().is_some() {
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
        DirFd::lower(from, &c, &st, pool).unwrap()
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

    fn upper_child(from: &Arc<DirFd>, name: &str, pool: &Arc<FdPool>) -> Arc<DirFd> {
        let c = CString::new(name).unwrap();
        let fd = sys::fs::open_dir_path(from.get().unwrap().as_fd(), &c).unwrap();
        DirFd::upper(fd, from, &c, pool)
    }

    #[test]
    fn upper_dirs_follow_renames_and_removed_ones_are_not_reopened() {
        let t = std::env::temp_dir().join(format!("ufs-dirfd-u-{}", std::process::id()));
        tree(&t, 40);
        let ino =
            |p: &str| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(t.join(p)).unwrap());
        let root = open(&t);
        let pool = FdPool::new(16);
        let dirs: Vec<_> = (0..20)
            .map(|i| upper_child(&root, &format!("d{i}"), &pool))
            .collect();
        {
            let _held = dirs[2].hold().unwrap();
            for i in 20..40 {
                upper_child(&root, &format!("d{i}"), &pool);
            }
            std::fs::rename(t.join("d2"), t.join("e2")).unwrap();
            dirs[2].moved(&root, c"e2");
        }
        let d2 = sys::fs::fstat(dirs[2].get().unwrap().as_fd()).unwrap();
        assert_eq!(d2.st_ino, ino("e2"));
        // Moved without `moved`: not found. Removed and made again under
        // its name: another dir, even with the same inode number.
        std::fs::rename(t.join("d0"), t.join("e0")).unwrap();
        assert_eq!(dirs[0].get().unwrap_err(), Errno::ENOENT);
        std::fs::remove_dir_all(t.join("d1")).unwrap();
        std::fs::create_dir(t.join("d1")).unwrap();
        assert_eq!(dirs[1].get().unwrap_err(), Errno::ESTALE);
        // Children reopen through reopened parents.
        let sub = upper_child(&dirs[3], "sub", &pool);
        for d in &dirs[4..] {
            upper_child(d, "sub", &pool);
        }
        let s = sys::fs::fstat(sub.get().unwrap().as_fd()).unwrap();
        assert_eq!(s.st_ino, ino("d3/sub"));
        std::fs::remove_dir_all(&t).unwrap();
    }
}
