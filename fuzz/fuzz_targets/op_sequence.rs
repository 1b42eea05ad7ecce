//! Any sequence of operations on a Union over temp dirs never panics, and
//! every error is a real errno.
//!
//! Each run builds two small lower layers, an upper layer and (optionally) a
//! work dir in a fresh directory under /tmp, builds a `Union` the way
//! `adapter::mount::build_union` does, and applies an arbitrary sequence of
//! operations over a small name alphabet, addressing nodes by the inode
//! numbers that earlier operations returned. It keeps to what the kernel
//! promises a FUSE filesystem: names are never empty, `.`, `..` or contain
//! `/`, and only inodes with an outstanding lookup are used or forgotten.
//!
//! Checked: no panic; every `Err` is an errno in 1..=133; a successful
//! setxattr reads back with getxattr; a directory listing names each entry
//! once.
#![no_main]

use std::collections::HashMap;
use std::ffi::{CString, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Once, OnceLock};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use unionfs::errno::Errno;
use unionfs::idmap::IdMap;
use unionfs::layers::{open_dir, Layers};
use unionfs::sys::fs::Time;
use unionfs::union::{Caller, Entry, Options, SetAttr, Union, ROOT_INO};

const MAX_OPS: usize = 48;
const MAX_DATA: usize = 64;

/// Names the operations use. The long ones test the 255-byte limit.
const SHORT: &[&str] = &[
    "a",
    "b",
    "c",
    "d",
    "e",
    "f",
    "h",
    "o",
    "s",
    "w",
    "x",
    "y",
    "z",
    "n",
    "up",
    ".wh.b",
    ".wh.n",
    ".wh..wh..opq",
    "#ufs0.0",
];

/// How many distinct names `name` gives.
const NAME_COUNT: usize = SHORT.len() + 2;

fn name(i: u8) -> OsString {
    let i = i as usize % NAME_COUNT;
    match i.checked_sub(SHORT.len()) {
        None => OsString::from(SHORT[i]),
        Some(0) => OsString::from("L".repeat(255)),
        Some(_) => OsString::from("L".repeat(256)),
    }
}

fn xattr_key(i: u8) -> OsString {
    const KEYS: &[&str] = &[
        "user.k",
        "user.j",
        "trusted.k",
        "trusted.overlay.opaque",
        "trusted.overlay.origin",
        "trusted.overlay.overlay.opaque",
        "trusted.overlay.whiteout",
        "user.overlay.opaque",
        "user.overlay.overlay.x",
        "user.overlay.whiteout",
        "security.k",
        "bogus.k",
        "",
    ];
    OsString::from(KEYS[i as usize % KEYS.len()])
}

fn open_flags(i: u8) -> i32 {
    const FLAGS: &[i32] = &[
        libc::O_RDONLY,
        libc::O_WRONLY,
        libc::O_RDWR,
        libc::O_RDWR | libc::O_TRUNC,
        libc::O_WRONLY | libc::O_APPEND,
        libc::O_RDONLY | libc::O_TRUNC,
        libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
        libc::O_RDONLY | libc::O_DIRECTORY,
        libc::O_RDWR | libc::O_NONBLOCK,
    ];
    FLAGS[i as usize % FLAGS.len()]
}

fn rename_flags(i: u8) -> u32 {
    const FLAGS: &[u32] = &[
        0,
        0,
        libc::RENAME_NOREPLACE,
        libc::RENAME_EXCHANGE,
        libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE,
        libc::RENAME_WHITEOUT,
    ];
    FLAGS[i as usize % FLAGS.len()]
}

fn caller(i: u8) -> Caller {
    match i % 4 {
        0 | 1 => Caller {
            uid: 0,
            gid: 0,
            pid: 0,
            umask: if i & 4 != 0 { 0o022 } else { 0 },
        },
        2 => Caller {
            uid: 1000,
            gid: 1000,
            pid: 0,
            umask: if i & 4 != 0 { 0o022 } else { 0 },
        },
        _ => Caller {
            uid: 0,
            gid: 1000,
            pid: 0,
            umask: if i & 4 != 0 { 0o022 } else { 0 },
        },
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum TimeArg {
    Omit,
    Now,
    At(i64, i64),
    Small(u16, u16),
}

impl TimeArg {
    fn get(self) -> Time {
        match self {
            TimeArg::Omit => Time::Omit,
            TimeArg::Now => Time::Now,
            TimeArg::At(s, ns) => Time::At(s, ns),
            TimeArg::Small(s, ns) => Time::At(s as i64, ns as i64),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Setup {
    userxattr: bool,
    oci_whiteouts: bool,
    volatile: bool,
    workdir: bool,
    /// No upper: a read-only union.
    read_only: bool,
    /// Picks `uidmapping=` / `gidmapping=` among a few (identity first).
    uid_map: u8,
    gid_map: u8,
    /// The server keeps one reopenable dir fd open: nearly every access to
    /// a dir then reopens it.
    few_dir_fds: bool,
}

fn id_map(i: u8) -> IdMap {
    const MAPS: &[&str] = &[
        "",
        "",
        "0:0:65536",
        "0:1000:1:1:100000:65536",
        ":0:1000:1:1:100000:65536:1000:0:1",
    ];
    let m = MAPS[i as usize % MAPS.len()];
    if m.is_empty() {
        return IdMap::default();
    }
    match IdMap::parse(m) {
        Ok(m) => m,
        Err(e) => panic!("IdMap::parse({m:?}): {e}"),
    }
}

/// `node`, `dir` and `fh` pick among the inodes / handles known so far.
#[derive(Arbitrary, Debug)]
enum Op {
    Lookup {
        dir: u8,
        name: u8,
    },
    Getattr {
        node: u8,
        fh: Option<u8>,
    },
    Mkdir {
        dir: u8,
        name: u8,
        mode: u16,
        who: u8,
    },
    Create {
        dir: u8,
        name: u8,
        mode: u16,
        flags: u8,
        who: u8,
    },
    Mknod {
        dir: u8,
        name: u8,
        mode: u16,
        rdev: u8,
        who: u8,
    },
    Symlink {
        dir: u8,
        name: u8,
        target: u8,
        who: u8,
    },
    Readlink {
        node: u8,
    },
    Link {
        node: u8,
        dir: u8,
        name: u8,
    },
    Unlink {
        dir: u8,
        name: u8,
    },
    Rmdir {
        dir: u8,
        name: u8,
    },
    Rename {
        dir: u8,
        name: u8,
        newdir: u8,
        newname: u8,
        flags: u8,
    },
    Open {
        node: u8,
        flags: u8,
    },
    Write {
        fh: u8,
        offset: u16,
        data: Vec<u8>,
    },
    Read {
        fh: u8,
        offset: u16,
        size: u16,
    },
    Fsync {
        fh: u8,
        datasync: bool,
    },
    Release {
        fh: u8,
    },
    Setattr {
        node: u8,
        mode: Option<u16>,
        uid: Option<u16>,
        gid: Option<u16>,
        size: Option<u32>,
        atime: Option<TimeArg>,
        mtime: Option<TimeArg>,
        fh: Option<u8>,
    },
    Setxattr {
        node: u8,
        key: u8,
        value: Vec<u8>,
        flags: u8,
    },
    Getxattr {
        node: u8,
        key: u8,
    },
    Listxattr {
        node: u8,
    },
    Removexattr {
        node: u8,
        key: u8,
    },
    Opendir {
        node: u8,
    },
    Readdir {
        dh: u8,
        offset: u8,
    },
    LookupEntry {
        dh: u8,
        index: u8,
    },
    Releasedir {
        dh: u8,
    },
    Forget {
        node: u8,
        n: u8,
    },
}

impl Op {
    /// The name an operation may bring into existence.
    fn created_name(&self) -> Option<u8> {
        match *self {
            Op::Mkdir { name, .. }
            | Op::Create { name, .. }
            | Op::Mknod { name, .. }
            | Op::Symlink { name, .. }
            | Op::Link { name, .. } => Some(name),
            Op::Rename { newname, .. } => Some(newname),
            _ => None,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    setup: Setup,
    ops: Vec<Op>,
}

/// `UNIONFS_FUZZ_TRACE=1` prints each operation and its result to stderr
/// (for reproducing a crash, or for seeing which operations succeed).
fn trace() -> bool {
    static T: OnceLock<bool> = OnceLock::new();
    *T.get_or_init(|| std::env::var_os("UNIONFS_FUZZ_TRACE").is_some_and(|v| v != "0"))
}

/// A real errno: Linux numbers them 1..=133 (EHWPOISON).
#[track_caller]
fn check<T>(what: &str, r: unionfs::errno::Result<T>) -> Option<T> {
    if trace() {
        match &r {
            Ok(_) => eprintln!("op_sequence: {what}: ok"),
            Err(e) => eprintln!("op_sequence: {what}: err {} ({e:?})", e.raw()),
        }
    }
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            assert!(
                (1..=133).contains(&e.raw()),
                "{what}: not a real errno: {}",
                e.raw()
            );
            None
        }
    }
}

// ----- fixture -------------------------------------------------------------

static COUNTER: AtomicU64 = AtomicU64::new(0);
static CLEAN_STALE: Once = Once::new();
const TMP_PREFIX: &str = "unionfs-fuzz-";

/// Removes fixtures left by fuzzer processes that died (a crash aborts
/// before the per-run cleanup).
fn clean_stale() {
    let Ok(rd) = std::fs::read_dir("/tmp") else {
        return;
    };
    for e in rd.flatten() {
        let n = e.file_name();
        let Some(rest) = n.to_str().and_then(|s| s.strip_prefix(TMP_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next() else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

fn mknod_whiteout(p: &Path) {
    let c = cpath(p);
    // SAFETY: a valid NUL-terminated path; mknod does not keep the pointer.
    unsafe {
        libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o644, 0);
    }
}

fn set_xattr(p: &Path, key: &str, value: &[u8]) {
    let c = cpath(p);
    let k = CString::new(key).unwrap_or_default();
    // SAFETY: valid NUL-terminated strings and a valid buffer.
    unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            k.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        );
    }
}

struct Fixture {
    root: PathBuf,
}

impl Fixture {
    fn new(s: &Setup) -> std::io::Result<Fixture> {
        CLEAN_STALE.call_once(clean_stale);
        let root = std::env::temp_dir().join(format!(
            "{TMP_PREFIX}{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        let f = Fixture { root };
        let r = &f.root;
        let ns = if s.userxattr { "user" } else { "trusted" };
        for d in ["l1/d", "l1/o", "l2/d", "l2/o", "l2/e", "u/d", "w/work"] {
            std::fs::create_dir_all(r.join(d))?;
        }
        // Top lower.
        std::fs::write(r.join("l1/a"), b"lower1 a")?;
        std::fs::write(r.join("l1/d/x"), b"x")?;
        std::fs::write(r.join("l1/.wh.b"), b"")?;
        std::os::unix::fs::symlink("a", r.join("l1/s"))?;
        mknod_whiteout(&r.join("l1/w"));
        set_xattr(&r.join("l1/o"), &format!("{ns}.overlay.opaque"), b"y");
        // Bottom lower.
        std::fs::write(r.join("l2/b"), b"lower2 b")?;
        std::fs::write(r.join("l2/w"), b"hidden")?;
        std::fs::write(r.join("l2/d/y"), b"y")?;
        std::fs::write(r.join("l2/o/z"), b"hidden")?;
        std::fs::write(r.join("l2/e/f"), b"f")?;
        std::fs::hard_link(r.join("l2/e/f"), r.join("l2/h"))?;
        // Upper: a merged dir with a whiteout, and a file of its own.
        std::fs::write(r.join("u/up"), b"upper")?;
        mknod_whiteout(&r.join("u/d/x"));
        Ok(f)
    }

    fn union(&self, s: &Setup) -> unionfs::errno::Result<Union> {
        let r = &self.root;
        let lowers = vec![open_dir(&r.join("l1"))?, open_dir(&r.join("l2"))?];
        let upper: Option<OwnedFd> = if s.read_only {
            None
        } else {
            Some(open_dir(&r.join("u"))?)
        };
        let work = if s.workdir && !s.read_only {
            Some(open_dir(&r.join("w/work"))?)
        } else {
            None
        };
        let layers = Layers::new(upper, lowers, work)?;
        // Read by Union::new; runs are sequential within the process.
        std::env::set_var("UNIONFS_DIR_FDS", if s.few_dir_fds { "1" } else { "" });
        Union::new(
            layers,
            Options {
                userxattr: s.userxattr,
                oci_whiteouts: s.oci_whiteouts,
                volatile: s.volatile,
                redirect_dir: false,
                redirect_nofollow: false,
                metacopy: false,
                uid_map: id_map(s.uid_map),
                gid_map: id_map(s.gid_map),
            },
        )
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

// ----- driver --------------------------------------------------------------

/// What the "kernel" holds: inodes with their lookup counts, open handles.
struct Kernel {
    inos: Vec<u64>,
    nlookup: HashMap<u64, u64>,
    /// S_IFMT of each inode, as last reported.
    kinds: HashMap<u64, u32>,
    files: Vec<(u64, u64)>,
    dirs: Vec<(u64, u64)>,
}

impl Kernel {
    fn pick(v: &[u64], i: u8) -> u64 {
        v[i as usize % v.len()]
    }

    fn node(&self, i: u8) -> u64 {
        Self::pick(&self.inos, i)
    }

    fn entry(&mut self, e: Option<Entry>) {
        if let Some(e) = e {
            assert!(e.ino != 0, "inode number 0 handed out");
            self.kinds.insert(e.ino, e.attr.st_mode & libc::S_IFMT);
            if e.ino != ROOT_INO {
                let n = self.nlookup.entry(e.ino).or_insert(0);
                if *n == 0 && !self.inos.contains(&e.ino) {
                    self.inos.push(e.ino);
                }
                *n += 1;
            }
        }
    }

    fn kind(&self, ino: u64) -> u32 {
        if ino == ROOT_INO {
            return libc::S_IFDIR;
        }
        self.kinds.get(&ino).copied().unwrap_or(0)
    }

    fn file(&self, i: u8) -> u64 {
        if self.files.is_empty() {
            return 1 << 40;
        }
        self.files[i as usize % self.files.len()].0
    }

    fn dir(&self, i: u8) -> Option<(u64, u64)> {
        if self.dirs.is_empty() {
            return None;
        }
        Some(self.dirs[i as usize % self.dirs.len()])
    }

    fn has_handle(&self, ino: u64) -> bool {
        self.files
            .iter()
            .chain(self.dirs.iter())
            .any(|h| h.1 == ino)
    }
}

fn run(u: &Union, setup: &Setup, ops: &[Op]) {
    let mut k = Kernel {
        inos: vec![ROOT_INO],
        nlookup: HashMap::new(),
        kinds: HashMap::new(),
        files: Vec::new(),
        dirs: Vec::new(),
    };
    for op in ops.iter().take(MAX_OPS) {
        if trace() {
            eprintln!("op_sequence: {op:?} (inos {:?})", k.inos);
        }
        if strict() && setup.oci_whiteouts {
            // Known issue, kept out of the strict view check: with OCI
            // whiteouts on, a `.wh.*` name can be created in the upper layer
            // (the call then fails with ENOENT); it is listed but lookup hides
            // it, and an upper `.wh.X` stops a lower `.wh.X` from hiding X in
            // readdir.
            if let Some(n) = op.created_name() {
                if name(n).as_bytes().starts_with(b".wh.") {
                    continue;
                }
            }
        }
        match *op {
            Op::Lookup { dir, name: n } => {
                let e = check("lookup", u.lookup(k.node(dir), &name(n)));
                k.entry(e);
            }
            Op::Getattr { node, fh } => {
                let ino = k.node(node);
                if let Some(st) = check("getattr", u.getattr(ino, fh.map(|f| k.file(f)))) {
                    // Any node but the root (which shows its real dir's
                    // number, like the kernel) reports its FUSE number.
                    if ino != ROOT_INO {
                        assert_eq!(st.st_ino, ino, "getattr reports another inode number");
                    }
                }
            }
            Op::Mkdir {
                dir,
                name: n,
                mode,
                who,
            } => {
                let e = check(
                    "mkdir",
                    u.mkdir(k.node(dir), &name(n), mode as u32, caller(who)),
                );
                k.entry(e);
            }
            Op::Create {
                dir,
                name: n,
                mode,
                flags,
                who,
            } => {
                let r = u.create(
                    k.node(dir),
                    &name(n),
                    mode as u32,
                    open_flags(flags),
                    caller(who),
                );
                if let Some((e, fh)) = check("create", r) {
                    k.files.push((fh, e.ino));
                    k.entry(Some(e));
                }
            }
            Op::Mknod {
                dir,
                name: n,
                mode,
                rdev,
                who,
            } => {
                // A u16 mode covers every S_IFMT; a u8 rdev has major 0, so
                // no device node made here reaches a real device.
                let e = check(
                    "mknod",
                    u.mknod(k.node(dir), &name(n), mode as u32, rdev as u64, caller(who)),
                );
                k.entry(e);
            }
            Op::Symlink {
                dir,
                name: n,
                target,
                who,
            } => {
                let e = check(
                    "symlink",
                    u.symlink(k.node(dir), &name(n), &name(target), caller(who)),
                );
                k.entry(e);
            }
            Op::Readlink { node } => {
                check("readlink", u.readlink(k.node(node)));
            }
            Op::Link { node, dir, name: n } => {
                let e = check("link", u.link(k.node(node), k.node(dir), &name(n)));
                k.entry(e);
            }
            Op::Unlink { dir, name: n } => {
                check("unlink", u.unlink(k.node(dir), &name(n)));
            }
            Op::Rmdir { dir, name: n } => {
                check("rmdir", u.rmdir(k.node(dir), &name(n)));
            }
            Op::Rename {
                dir,
                name: n,
                newdir,
                newname,
                flags,
            } => {
                check(
                    "rename",
                    u.rename(
                        k.node(dir),
                        &name(n),
                        k.node(newdir),
                        &name(newname),
                        rename_flags(flags),
                    ),
                );
            }
            Op::Open { node, flags } => {
                let ino = k.node(node);
                // The kernel opens fifos, sockets and devices itself: FUSE
                // never sees their open (and opening a fifo here would block).
                if matches!(
                    k.kind(ino),
                    libc::S_IFIFO | libc::S_IFSOCK | libc::S_IFCHR | libc::S_IFBLK
                ) {
                    continue;
                }
                if let Some(fh) = check("open", u.open(ino, open_flags(flags), &caller(0))) {
                    k.files.push((fh, ino));
                }
            }
            Op::Write {
                fh,
                offset,
                ref data,
            } => {
                let data = &data[..data.len().min(MAX_DATA)];
                if let Some(n) = check("write", u.write(k.file(fh), offset as u64, data, None)) {
                    assert!(n as usize <= data.len(), "wrote more than given");
                }
            }
            Op::Read { fh, offset, size } => {
                let size = (size as u32) % 4096;
                let got = u.read_with(k.file(fh), offset as u64, size, |r| r.map(|d| d.len()));
                if let Some(n) = check("read", got) {
                    assert!(n <= size as usize, "read more than asked");
                }
            }
            Op::Fsync { fh, datasync } => {
                check("fsync", u.fsync(k.file(fh), datasync));
            }
            Op::Release { fh } => {
                if !k.files.is_empty() {
                    let i = fh as usize % k.files.len();
                    u.release(k.files.swap_remove(i).0);
                }
            }
            Op::Setattr {
                node,
                mode,
                uid,
                gid,
                size,
                atime,
                mtime,
                fh,
            } => {
                let ino = k.node(node);
                // The kernel truncates regular files only (EISDIR / EINVAL
                // otherwise, without asking FUSE).
                let size = size.filter(|_| k.kind(ino) == libc::S_IFREG);
                let a = SetAttr {
                    mode: mode.map(u32::from),
                    uid: uid.map(u32::from),
                    gid: gid.map(u32::from),
                    size: size.map(|s| u64::from(s % (1 << 20))),
                    atime: atime.map(TimeArg::get),
                    mtime: mtime.map(TimeArg::get),
                    fh: fh.map(|f| k.file(f)),
                };
                if let Some(st) = check("setattr", u.setattr(ino, a, &caller(0))) {
                    // Any node but the root (which shows its real dir's
                    // number, like the kernel) reports its FUSE number.
                    if ino != ROOT_INO {
                        assert_eq!(st.st_ino, ino, "setattr reports another inode number");
                    }
                }
            }
            Op::Setxattr {
                node,
                key,
                ref value,
                flags,
            } => {
                let ino = k.node(node);
                let key = xattr_key(key);
                let flags = match flags % 3 {
                    0 => 0,
                    1 => libc::XATTR_CREATE,
                    _ => libc::XATTR_REPLACE,
                };
                let value = &value[..value.len().min(MAX_DATA)];
                if check("setxattr", u.setxattr(ino, &key, value, flags)).is_some()
                    && !key.as_bytes().starts_with(b"security.")
                {
                    let got = check("getxattr after setxattr", u.getxattr(ino, &key));
                    assert_eq!(
                        got.as_deref(),
                        Some(value),
                        "getxattr({key:?}) after a successful setxattr"
                    );
                }
            }
            Op::Getxattr { node, key } => {
                check("getxattr", u.getxattr(k.node(node), &xattr_key(key)));
            }
            Op::Listxattr { node } => {
                check("listxattr", u.listxattr(k.node(node)));
            }
            Op::Removexattr { node, key } => {
                check("removexattr", u.removexattr(k.node(node), &xattr_key(key)));
            }
            Op::Opendir { node } => {
                let ino = k.node(node);
                if let Some(fh) = check("opendir", u.opendir(ino)) {
                    k.dirs.push((fh, ino));
                }
            }
            Op::Readdir { dh, offset } => {
                let fh = k.dir(dh).map(|d| d.0).unwrap_or(1 << 40);
                if let Some(v) = check("readdir", u.dir_snapshot(fh, offset as u64 % 4)) {
                    let mut seen = std::collections::HashSet::new();
                    for e in v.iter() {
                        assert!(
                            seen.insert(e.name.clone()),
                            "readdir lists {:?} twice: {:?}",
                            e.name,
                            v.iter().map(|e| &e.name).collect::<Vec<_>>()
                        );
                    }
                }
            }
            Op::LookupEntry { dh, index } => {
                if let Some((fh, ino)) = k.dir(dh) {
                    if let Some(v) = check("readdir", u.dir_snapshot(fh, 1)) {
                        let listed = v.get(2..).unwrap_or_default();
                        if !listed.is_empty() {
                            let e = &listed[index as usize % listed.len()];
                            let r = check("lookup_entry", u.lookup_entry(ino, e));
                            k.entry(r);
                        }
                    }
                }
            }
            Op::Releasedir { dh } => {
                if !k.dirs.is_empty() {
                    let i = dh as usize % k.dirs.len();
                    u.releasedir(k.dirs.swap_remove(i).0);
                }
            }
            Op::Forget { node, n } => {
                // The kernel forgets only what it looked up, and never an
                // inode it has open.
                let ino = k.node(node);
                if ino == ROOT_INO || k.has_handle(ino) {
                    continue;
                }
                let held = k.nlookup.get(&ino).copied().unwrap_or(0);
                let n = (n as u64 % 3 + 1).min(held);
                if n == 0 {
                    continue;
                }
                u.forget(ino, n);
                if held == n {
                    k.nlookup.remove(&ino);
                    k.inos.retain(|i| *i != ino);
                } else {
                    k.nlookup.insert(ino, held - n);
                }
            }
        }
    }
    for (fh, _) in k.files.drain(..) {
        u.release(fh);
    }
    for (fh, _) in k.dirs.drain(..) {
        u.releasedir(fh);
    }
    if strict() {
        check_view(u, ROOT_INO, 0);
    }
}

/// `UNIONFS_FUZZ_STRICT=1` adds a check of the merged view at the end of
/// each run: in every directory reachable from the root, readdir lists a name
/// exactly when lookup finds it. Off by default: a failure there is a
/// semantic inconsistency, not a crash.
fn strict() -> bool {
    static T: OnceLock<bool> = OnceLock::new();
    *T.get_or_init(|| std::env::var_os("UNIONFS_FUZZ_STRICT").is_some_and(|v| v != "0"))
}

fn check_view(u: &Union, dir: u64, depth: usize) {
    let Some(fh) = check("strict opendir", u.opendir(dir)) else {
        return;
    };
    let listing = check("strict readdir", u.dir_snapshot(fh, 0));
    u.releasedir(fh);
    let Some(listing) = listing else {
        return;
    };
    let listed: Vec<&OsString> = listing.iter().skip(2).map(|e| &e.name).collect();
    let mut subdirs = Vec::new();
    for n in &listed {
        let Some(e) = check("strict lookup of a listed name", u.lookup(dir, n)) else {
            panic!("dir {dir}: readdir lists {n:?} but lookup fails; listing {listed:?}");
        };
        if e.attr.st_mode & libc::S_IFMT == libc::S_IFDIR {
            subdirs.push(e.ino);
        } else {
            u.forget(e.ino, 1);
        }
    }
    for i in 0..NAME_COUNT {
        let n = name(i as u8);
        if let Some(e) = check("strict lookup", u.lookup(dir, &n)) {
            u.forget(e.ino, 1);
            assert!(
                listed.contains(&&n),
                "dir {dir}: lookup finds {n:?} but readdir does not list it; listing {listed:?}"
            );
        }
    }
    for ino in subdirs {
        if depth < 4 {
            check_view(u, ino, depth + 1);
        }
        u.forget(ino, 1);
    }
}

fuzz_target!(|inp: Input| {
    let fixture = match Fixture::new(&inp.setup) {
        Ok(f) => f,
        Err(e) => panic!("cannot build the fixture under /tmp: {e}"),
    };
    let u = match fixture.union(&inp.setup) {
        Ok(u) => u,
        Err(e) => {
            // Building the union over a fresh fixture must work.
            let e: Errno = e;
            panic!("cannot build the union: {e:?}");
        }
    };
    if trace() {
        eprintln!("op_sequence: {:?}", inp.setup);
    }
    run(&u, &inp.setup, &inp.ops);
    drop(u);
    drop(fixture);
});
