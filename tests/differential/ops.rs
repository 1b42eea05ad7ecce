//! The operations of the differential harness: what they are, how a seed
//! turns into a list of them, how one is applied to a mounted union, and what
//! its observable result is (a value or an errno).

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use super::common::tree::kind_of;
use super::common::{errno_ident, sys};
use super::creds;
use super::fixture;

/// Number of file-descriptor slots (and, separately, dir-stream slots).
pub const SLOTS: usize = 3;

/// mtimes at or after this (2017-07) come from "now": the fixture and every
/// explicit utimens use older times.
pub const RECENT: i64 = 1_500_000_000;

/// Bytes cap for whole-file reads.
const READ_CAP: usize = 4 << 20;

/// File content written by an op: `len` bytes of a pattern derived from `seed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Data {
    pub seed: u8,
    pub len: u32,
}

impl Data {
    pub fn bytes(&self) -> Vec<u8> {
        (0..self.len)
            .map(|i| b'a' + ((self.seed as u32 + i / 7) % 26) as u8)
            .collect()
    }
}

impl fmt::Display for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "data({}x{})", self.seed, self.len)
    }
}

/// A time argument of utimensat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Time {
    At(i64, i64),
    Now,
    Omit,
}

impl Time {
    fn ts(self) -> sys::Ts {
        match self {
            Time::At(s, ns) => sys::Ts(s, ns),
            Time::Now => sys::Ts(0, libc::UTIME_NOW),
            Time::Omit => sys::Ts(0, libc::UTIME_OMIT),
        }
    }
}

/// One operation. Paths are relative to the union's root.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// open(O_RDONLY) + read the whole file.
    Read(String),
    /// stat (follows symlinks).
    Stat(String),
    /// lstat.
    Lstat(String),
    ReadLink(String),
    /// opendir + readdir: sorted (name, d_type).
    ListDir(String),
    /// open(O_WRONLY|O_CREAT|O_TRUNC, 0644) + write.
    Write(String, Data),
    /// open(O_WRONLY|O_APPEND) + write.
    Append(String, Data),
    /// open(O_WRONLY) + pwrite at an offset.
    Pwrite(String, u64, Data),
    /// truncate(2) by path.
    Truncate(String, u64),
    /// open(O_WRONLY|O_CREAT[|O_EXCL], mode).
    Create(String, u32, bool),
    Mkdir(String, u32),
    Rmdir(String),
    Unlink(String),
    /// rm -r, depth first in name order; stops at the first error.
    RmRf(String),
    /// renameat2 with flags.
    Rename(String, String, u32),
    Link(String, String),
    /// symlink(target, path).
    Symlink(String, String),
    /// chmod (follows symlinks).
    Chmod(String, u32),
    /// chown (follow = true) or lchown; None keeps the id.
    Chown(String, Option<u32>, Option<u32>, bool),
    /// utimensat(atime, mtime, nofollow).
    Utimens(String, Time, Time, bool),
    /// lsetxattr(name, value, flags).
    SetXattr(String, String, Vec<u8>, i32),
    GetXattr(String, String),
    RemoveXattr(String, String),
    ListXattr(String),
    /// mknod(path, type | 0644, major, minor).
    Mknod(String, u32, u32, u32),
    /// open into slot; `true` = O_RDWR, else O_RDONLY.
    Open(usize, String, bool),
    /// pread of the whole file through the slot's fd.
    FdRead(usize),
    FdWrite(usize, u64, Data),
    FdStat(usize),
    Close(usize),
    /// opendir into a dir-stream slot.
    DirOpen(usize, String),
    /// getdents64 from the current position to the end: sorted names.
    DirRead(usize),
    /// lseek(0) of a dir stream (rebuilds the kernel's merged-dir cache).
    DirRewind(usize),
    /// The inner op with fsuid/fsgid uid:gid and no supplementary groups.
    As(u32, u32, Box<Op>),
    /// The inner op with only success/errno compared (the steps of a split
    /// rm -r, which compared no values either).
    Quiet(Box<Op>),
}

/// Shortens long runs of one character (255-byte names, deep paths).
pub fn short(s: &str) -> String {
    let c: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < c.len() {
        let mut j = i;
        while j < c.len() && c[j] == c[i] {
            j += 1;
        }
        if j - i > 12 {
            out += &format!("{}{{x{}}}", c[i], j - i);
        } else {
            out.extend(&c[i..j]);
        }
        i = j;
    }
    out
}

fn q(s: &str) -> String {
    format!("{:?}", short(s))
}

fn rename_flags(f: u32) -> String {
    match f {
        0 => "0".into(),
        libc::RENAME_NOREPLACE => "NOREPLACE".into(),
        libc::RENAME_EXCHANGE => "EXCHANGE".into(),
        libc::RENAME_WHITEOUT => "WHITEOUT".into(),
        f => format!("{f:#x}"),
    }
}

fn xattr_flags(f: i32) -> &'static str {
    match f {
        0 => "0",
        libc::XATTR_CREATE => "CREATE",
        libc::XATTR_REPLACE => "REPLACE",
        _ => "?",
    }
}

fn node_type(t: u32) -> &'static str {
    match t {
        libc::S_IFIFO => "fifo",
        libc::S_IFCHR => "chr",
        libc::S_IFBLK => "blk",
        libc::S_IFREG => "reg",
        libc::S_IFSOCK => "sock",
        _ => "?",
    }
}

fn id(o: Option<u32>) -> String {
    o.map(|v| v.to_string()).unwrap_or_else(|| "-1".into())
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Time::At(s, ns) => write!(f, "{s}.{ns:09}"),
            Time::Now => write!(f, "NOW"),
            Time::Omit => write!(f, "OMIT"),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Read(p) => write!(f, "read {}", q(p)),
            Op::Stat(p) => write!(f, "stat {}", q(p)),
            Op::Lstat(p) => write!(f, "lstat {}", q(p)),
            Op::ReadLink(p) => write!(f, "readlink {}", q(p)),
            Op::ListDir(p) => write!(f, "listdir {}", q(p)),
            Op::Write(p, d) => write!(f, "write {} {d} (O_CREAT|O_TRUNC)", q(p)),
            Op::Append(p, d) => write!(f, "append {} {d}", q(p)),
            Op::Pwrite(p, o, d) => write!(f, "pwrite {} @{o} {d}", q(p)),
            Op::Truncate(p, n) => write!(f, "truncate {} {n}", q(p)),
            Op::Create(p, m, x) => write!(
                f,
                "create {} {m:04o}{}",
                q(p),
                if *x { " O_EXCL" } else { "" }
            ),
            Op::Mkdir(p, m) => write!(f, "mkdir {} {m:04o}", q(p)),
            Op::Rmdir(p) => write!(f, "rmdir {}", q(p)),
            Op::Unlink(p) => write!(f, "unlink {}", q(p)),
            Op::RmRf(p) => write!(f, "rm -r {}", q(p)),
            Op::Rename(a, b, fl) => {
                write!(f, "rename {} {} {}", q(a), q(b), rename_flags(*fl))
            }
            Op::Link(a, b) => write!(f, "link {} {}", q(a), q(b)),
            Op::Symlink(t, p) => write!(f, "symlink {} -> {}", q(p), q(t)),
            Op::Chmod(p, m) => write!(f, "chmod {} {m:04o}", q(p)),
            Op::Chown(p, u, g, follow) => write!(
                f,
                "{} {} {}:{}",
                if *follow { "chown" } else { "lchown" },
                q(p),
                id(*u),
                id(*g)
            ),
            Op::Utimens(p, a, m, nofollow) => write!(
                f,
                "utimens {} atime={a} mtime={m}{}",
                q(p),
                if *nofollow { " NOFOLLOW" } else { "" }
            ),
            Op::SetXattr(p, n, v, fl) => write!(
                f,
                "setxattr {} {n}={:?} {}",
                q(p),
                String::from_utf8_lossy(v),
                xattr_flags(*fl)
            ),
            Op::GetXattr(p, n) => write!(f, "getxattr {} {n}", q(p)),
            Op::RemoveXattr(p, n) => write!(f, "removexattr {} {n}", q(p)),
            Op::ListXattr(p) => write!(f, "listxattr {}", q(p)),
            Op::Mknod(p, t, ma, mi) => write!(f, "mknod {} {} {ma}:{mi}", q(p), node_type(*t)),
            Op::Open(s, p, rw) => write!(
                f,
                "fd{s} = open {} {}",
                q(p),
                if *rw { "O_RDWR" } else { "O_RDONLY" }
            ),
            Op::FdRead(s) => write!(f, "pread fd{s} (whole file)"),
            Op::FdWrite(s, o, d) => write!(f, "pwrite fd{s} @{o} {d}"),
            Op::FdStat(s) => write!(f, "fstat fd{s}"),
            Op::Close(s) => write!(f, "close fd{s}"),
            Op::DirOpen(s, p) => write!(f, "dir{s} = opendir {}", q(p)),
            Op::DirRead(s) => write!(f, "getdents dir{s} (to end)"),
            Op::DirRewind(s) => write!(f, "rewinddir dir{s}"),
            Op::As(u, g, op) => write!(f, "as {u}:{g}: {op}"),
            Op::Quiet(op) => write!(f, "{op} (result only)"),
        }
    }
}

impl Op {
    /// Short name of the op kind (for divergence classes).
    pub fn kind(&self) -> String {
        let s = match self {
            Op::Read(_) => "read",
            Op::Stat(_) => "stat",
            Op::Lstat(_) => "lstat",
            Op::ReadLink(_) => "readlink",
            Op::ListDir(_) => "listdir",
            Op::Write(..) => "write",
            Op::Append(..) => "append",
            Op::Pwrite(..) => "pwrite",
            Op::Truncate(..) => "truncate",
            Op::Create(..) => "create",
            Op::Mkdir(..) => "mkdir",
            Op::Rmdir(_) => "rmdir",
            Op::Unlink(_) => "unlink",
            Op::RmRf(_) => "rm-r",
            Op::Rename(_, _, f) => return format!("rename({})", rename_flags(*f)),
            Op::Link(..) => "link",
            Op::Symlink(..) => "symlink",
            Op::Chmod(..) => "chmod",
            Op::Chown(..) => "chown",
            Op::Utimens(..) => "utimens",
            Op::SetXattr(..) => "setxattr",
            Op::GetXattr(..) => "getxattr",
            Op::RemoveXattr(..) => "removexattr",
            Op::ListXattr(_) => "listxattr",
            Op::Mknod(_, t, _, _) => return format!("mknod({})", node_type(*t)),
            Op::Open(..) => "open",
            Op::FdRead(_) => "fd-read",
            Op::FdWrite(..) => "fd-write",
            Op::FdStat(_) => "fstat",
            Op::Close(_) => "close",
            Op::DirOpen(..) => "opendir",
            Op::DirRead(_) => "getdents",
            Op::DirRewind(_) => "rewinddir",
            Op::As(_, _, op) => return format!("as-user {}", op.kind()),
            Op::Quiet(op) => return op.kind(),
        };
        s.to_string()
    }

    /// The union paths this op names (for describing the fixture).
    pub fn paths(&self) -> Vec<&str> {
        match self {
            Op::Read(p)
            | Op::Stat(p)
            | Op::Lstat(p)
            | Op::ReadLink(p)
            | Op::ListDir(p)
            | Op::Write(p, _)
            | Op::Append(p, _)
            | Op::Pwrite(p, _, _)
            | Op::Truncate(p, _)
            | Op::Create(p, _, _)
            | Op::Mkdir(p, _)
            | Op::Rmdir(p)
            | Op::Unlink(p)
            | Op::RmRf(p)
            | Op::Symlink(_, p)
            | Op::Chmod(p, _)
            | Op::Chown(p, _, _, _)
            | Op::Utimens(p, _, _, _)
            | Op::SetXattr(p, _, _, _)
            | Op::GetXattr(p, _)
            | Op::RemoveXattr(p, _)
            | Op::ListXattr(p)
            | Op::Mknod(p, _, _, _)
            | Op::Open(_, p, _)
            | Op::DirOpen(_, p) => vec![p],
            Op::Rename(a, b, _) | Op::Link(a, b) => vec![a, b],
            Op::As(_, _, op) | Op::Quiet(op) => op.paths(),
            Op::FdRead(_)
            | Op::FdWrite(..)
            | Op::FdStat(_)
            | Op::Close(_)
            | Op::DirRead(_)
            | Op::DirRewind(_) => vec![],
        }
    }
}

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

/// An mtime as compared: exact when it came from the fixture or an explicit
/// utimens (before [`RECENT`]), else just "recent" (set by the clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mt {
    Old(i64, i64),
    Recent,
}

impl Mt {
    pub fn of(md: &fs::Metadata) -> Mt {
        if md.mtime() < RECENT {
            Mt::Old(md.mtime(), md.mtime_nsec())
        } else {
            Mt::Recent
        }
    }
}

impl fmt::Display for Mt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mt::Old(s, ns) => write!(f, "{s}.{ns:09}"),
            Mt::Recent => write!(f, "recent"),
        }
    }
}

/// Normalised stat: no st_dev, st_ino, atime, ctime; dir sizes are 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatV {
    pub kind: char,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u64,
    pub rdev: (u32, u32),
    pub mtime: Mt,
}

impl StatV {
    pub fn of(md: &fs::Metadata) -> StatV {
        let kind = kind_of(md.file_type());
        StatV {
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size: if kind == 'd' { 0 } else { md.size() },
            nlink: md.nlink(),
            rdev: if matches!(kind, 'c' | 'b') {
                (libc::major(md.rdev()), libc::minor(md.rdev()))
            } else {
                (0, 0)
            },
            mtime: Mt::of(md),
        }
    }
}

impl fmt::Display for StatV {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:04o} {}:{} size={} nlink={} mtime={}",
            self.kind, self.mode, self.uid, self.gid, self.size, self.nlink, self.mtime
        )?;
        if matches!(self.kind, 'c' | 'b') {
            write!(f, " rdev={}:{}", self.rdev.0, self.rdev.1)?;
        }
        Ok(())
    }
}

/// The value of a successful op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Val {
    Unit,
    /// File content: length and hash (plus a short prefix for messages).
    Data {
        len: u64,
        hash: u64,
        head: String,
    },
    Stat(StatV),
    /// Directory entries: name and d_type.
    Names(Vec<(String, u8)>),
    /// xattr value or symlink target.
    Bytes(Vec<u8>),
    /// xattr names.
    List(Vec<String>),
    /// Entries removed by rm -r.
    Count(u64),
    /// rm -r that stopped at an error below the top: what failed where.
    RmStopped {
        removed: u64,
        at: String,
        errno: i32,
    },
}

impl fmt::Display for Val {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Val::Unit => write!(f, "ok"),
            Val::Data { len, hash, head } => {
                write!(f, "{len} bytes {:?}.. hash={:08x}", head, hash >> 32)
            }
            Val::Stat(s) => write!(f, "{s}"),
            Val::Names(v) => {
                let names: Vec<String> = v
                    .iter()
                    .map(|(n, t)| format!("{}/{}", short(n), dtype(*t)))
                    .collect();
                write!(f, "[{}]", names.join(" "))
            }
            Val::Bytes(b) => write!(f, "{:?}", short(&String::from_utf8_lossy(b))),
            Val::List(v) => write!(f, "{v:?}"),
            Val::Count(n) => write!(f, "{n} removed"),
            Val::RmStopped { removed, at, errno } => write!(
                f,
                "{removed} removed, then {} at {:?}",
                errno_name(*errno),
                short(at)
            ),
        }
    }
}

fn dtype(t: u8) -> char {
    match t {
        libc::DT_DIR => 'd',
        libc::DT_REG => 'f',
        libc::DT_LNK => 'l',
        libc::DT_CHR => 'c',
        libc::DT_BLK => 'b',
        libc::DT_FIFO => 'p',
        libc::DT_SOCK => 's',
        _ => '?',
    }
}

/// An op's outcome: a value or an errno.
pub type Res = Result<Val, i32>;

pub fn errno_name(e: i32) -> String {
    match e {
        -1 => "no-errno".to_string(),
        _ => errno_ident(e).map_or_else(|| format!("errno{e}"), str::to_string),
    }
}

pub fn fmt_res(r: &Res) -> String {
    match r {
        Ok(v) => format!("Ok({v})"),
        Err(e) => errno_name(*e),
    }
}

/// Short class of a result for divergence signatures: `Ok` or the errno.
pub fn res_class(r: &Res) -> String {
    match r {
        Ok(Val::RmStopped { errno, .. }) => format!("Ok-but-{}", errno_name(*errno)),
        Ok(_) => "Ok".into(),
        Err(e) => errno_name(*e),
    }
}

/// Compares two results; dir mtimes count only when both are exact (an
/// explicit utimens), as directory mtimes are otherwise not compared.
/// Returns None when equal, else the differing fields.
pub fn compare(k: &Res, o: &Res) -> Option<String> {
    match (k, o) {
        (Ok(Val::Stat(a)), Ok(Val::Stat(b))) => {
            let mut f = Vec::new();
            if a.kind != b.kind {
                f.push("kind");
            }
            if a.mode != b.mode {
                f.push("mode");
            }
            if (a.uid, a.gid) != (b.uid, b.gid) {
                f.push("owner");
            }
            if a.size != b.size {
                f.push("size");
            }
            if a.nlink != b.nlink {
                f.push("nlink");
            }
            if a.rdev != b.rdev {
                f.push("rdev");
            }
            let dir = a.kind == 'd' && b.kind == 'd';
            let both_old = matches!((a.mtime, b.mtime), (Mt::Old(..), Mt::Old(..)));
            if a.mtime != b.mtime && (!dir || both_old) {
                f.push("mtime");
            }
            (!f.is_empty()).then(|| f.join(","))
        }
        (Ok(a), Ok(b)) if a == b => None,
        (Ok(_), Ok(_)) => Some("value".into()),
        (Err(a), Err(b)) if a == b => None,
        _ => Some("result".into()),
    }
}

// ---------------------------------------------------------------------------
// Applying ops
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------

/// Small deterministic PRNG (splitmix64), so a seed always gives the same ops.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_B00C)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    pub fn pick<T: Clone>(&mut self, v: &[T]) -> T {
        v[self.below(v.len() as u64) as usize].clone()
    }
    /// Picks from (weight, value) pairs.
    pub fn weighted<T: Clone>(&mut self, v: &[(u32, T)]) -> T {
        let total: u32 = v.iter().map(|(w, _)| *w).sum();
        let mut x = self.below(total as u64) as u32;
        for (w, t) in v {
            if x < *w {
                return t.clone();
            }
            x -= w;
        }
        unreachable!()
    }
}

/// The generator: paths are drawn from the fixture's dirs and names plus new
/// ones, so ops hit lower, upper, whited-out, opaque and absent objects.
pub struct Gen {
    rng: Rng,
    dirs: Vec<(u32, String)>,
    leaves: Vec<(u32, String)>,
}

impl Gen {
    pub fn new(seed: u64) -> Gen {
        Gen {
            rng: Rng::new(seed),
            dirs: fixture::gen_dirs(),
            leaves: fixture::gen_leaves(),
        }
    }

    fn path(&mut self) -> String {
        let d: String = self.rng.weighted(&self.dirs);
        let l: String = self.rng.weighted(&self.leaves);
        if d.is_empty() {
            l
        } else {
            format!("{d}/{l}")
        }
    }

    /// A path, sometimes a dir itself.
    fn any_path(&mut self) -> String {
        if self.rng.chance(15) {
            self.rng.weighted(&self.dirs)
        } else {
            self.path()
        }
    }

    fn data(&mut self) -> Data {
        let len = match self.rng.below(4) {
            0 => 0,
            1 => 1 + self.rng.below(16) as u32,
            2 => 1 + self.rng.below(300) as u32,
            _ => 1 + self.rng.below(70_000) as u32,
        };
        Data {
            seed: self.rng.below(26) as u8,
            len,
        }
    }

    fn offset(&mut self) -> u64 {
        self.rng
            .pick(&[0, 1, 5, 100, 4096, 70_000, 600_000, 1 << 20])
    }

    fn time(&mut self) -> Time {
        match self.rng.below(6) {
            0 => Time::Now,
            1 => Time::Omit,
            _ => Time::At(
                1_100_000_000 + self.rng.below(100_000_000) as i64,
                self.rng.pick(&[0, 1, 500_000_000, 999_999_999]),
            ),
        }
    }

    fn xattr_name(&mut self) -> String {
        self.rng
            .weighted(&[
                (6, "user.a"),
                (4, "user.b"),
                (3, "trusted.t"),
                (1, "trusted.overlay.opaque"),
                (1, "trusted.overlay.x"),
                (1, "trusted.overlay.overlay.y"),
                (1, "user.overlay.z"),
                (1, "security.capability"),
            ])
            .to_string()
    }

    fn user(&mut self) -> (u32, u32) {
        self.rng.pick(&[(1000, 1000), (2000, 2000), (1000, 50)])
    }

    fn slot(&mut self) -> usize {
        self.rng.below(SLOTS as u64) as usize
    }

    /// One op without the `As` wrapper.
    fn plain(&mut self) -> Op {
        let which = self.rng.weighted(&[
            (8, "read"),
            (6, "stat"),
            (4, "lstat"),
            (2, "readlink"),
            (5, "listdir"),
            (8, "write"),
            (5, "append"),
            (4, "pwrite"),
            (4, "truncate"),
            (4, "create"),
            (6, "mkdir"),
            (4, "rmdir"),
            (6, "unlink"),
            (3, "rmrf"),
            (9, "rename"),
            (4, "link"),
            (3, "symlink"),
            (4, "chmod"),
            (3, "chown"),
            (3, "utimens"),
            (4, "setxattr"),
            (2, "getxattr"),
            (2, "removexattr"),
            (2, "listxattr"),
            (2, "mknod"),
            (4, "open"),
            (4, "fdread"),
            (2, "fdwrite"),
            (2, "fdstat"),
            (1, "close"),
            (1, "diropen"),
            (1, "dirread"),
            (1, "dirrewind"),
        ]);
        match which {
            "read" => Op::Read(self.path()),
            "stat" => Op::Stat(self.any_path()),
            "lstat" => Op::Lstat(self.any_path()),
            "readlink" => Op::ReadLink(self.path()),
            "listdir" => Op::ListDir(self.rng.weighted(&self.dirs.clone())),
            "write" => Op::Write(self.path(), self.data()),
            "append" => Op::Append(self.path(), self.data()),
            "pwrite" => {
                let off = self.offset();
                Op::Pwrite(self.path(), off, self.data())
            }
            "truncate" => {
                let n = self.offset();
                Op::Truncate(self.path(), n)
            }
            "create" => {
                let m = self.rng.pick(&[0o644, 0o600, 0o4755, 0o000]);
                Op::Create(self.path(), m, self.rng.chance(60))
            }
            "mkdir" => {
                let m = self.rng.pick(&[0o755, 0o700, 0o2775, 0o1777]);
                Op::Mkdir(self.path(), m)
            }
            "rmdir" => Op::Rmdir(self.any_path()),
            "unlink" => Op::Unlink(self.path()),
            "rmrf" => Op::RmRf(self.any_path()),
            "rename" => {
                let f = self.rng.weighted(&[
                    (6, 0),
                    (2, libc::RENAME_NOREPLACE),
                    (2, libc::RENAME_EXCHANGE),
                    (1, libc::RENAME_WHITEOUT),
                ]);
                Op::Rename(self.any_path(), self.any_path(), f)
            }
            "link" => Op::Link(self.path(), self.path()),
            "symlink" => {
                let t = self.rng.pick(fixture::SYMLINK_TARGETS).to_string();
                Op::Symlink(t, self.path())
            }
            "chmod" => {
                let m = self
                    .rng
                    .pick(&[0o600, 0o755, 0o640, 0o4755, 0o2750, 0o1777, 0o000, 0o644]);
                Op::Chmod(self.any_path(), m)
            }
            "chown" => {
                let (u, g) = self.rng.pick(&[
                    (Some(1000), Some(1000)),
                    (Some(0), Some(0)),
                    (Some(2000), Some(50)),
                    (Some(1000), None),
                    (None, Some(2000)),
                ]);
                Op::Chown(self.any_path(), u, g, self.rng.chance(50))
            }
            "utimens" => {
                let (a, m) = (self.time(), self.time());
                Op::Utimens(self.any_path(), a, m, self.rng.chance(50))
            }
            "setxattr" => {
                let n = self.xattr_name();
                let v = format!("v{}", self.rng.below(100)).into_bytes();
                let f =
                    self.rng
                        .weighted(&[(6, 0), (2, libc::XATTR_CREATE), (2, libc::XATTR_REPLACE)]);
                Op::SetXattr(self.any_path(), n, v, f)
            }
            "getxattr" => {
                let n = self.xattr_name();
                Op::GetXattr(self.any_path(), n)
            }
            "removexattr" => {
                let n = self.xattr_name();
                Op::RemoveXattr(self.any_path(), n)
            }
            "listxattr" => Op::ListXattr(self.any_path()),
            "mknod" => {
                let (t, ma, mi) = self.rng.weighted(&[
                    (4, (libc::S_IFIFO, 0, 0)),
                    (2, (libc::S_IFCHR, 1, 3)),
                    (1, (libc::S_IFCHR, 0, 0)),
                    (1, (libc::S_IFBLK, 7, 250)),
                    (1, (libc::S_IFREG, 0, 0)),
                ]);
                Op::Mknod(self.path(), t, ma, mi)
            }
            "open" => {
                let s = self.slot();
                Op::Open(s, self.path(), self.rng.chance(35))
            }
            "fdread" => Op::FdRead(self.slot()),
            "fdwrite" => {
                let (s, off) = (self.slot(), self.offset());
                Op::FdWrite(s, off, self.data())
            }
            "fdstat" => Op::FdStat(self.slot()),
            "close" => Op::Close(self.slot()),
            "diropen" => {
                let s = self.slot();
                Op::DirOpen(s, self.rng.weighted(&self.dirs.clone()))
            }
            "dirread" => Op::DirRead(self.slot()),
            "dirrewind" => Op::DirRewind(self.slot()),
            _ => unreachable!(),
        }
    }

    pub fn op(&mut self) -> Op {
        let op = self.plain();
        if self.rng.chance(7) {
            let (u, g) = self.user();
            Op::As(u, g, Box::new(op))
        } else {
            op
        }
    }
}

/// The op list of a seed.
pub fn generate(seed: u64, n: usize) -> Vec<Op> {
    let mut g = Gen::new(seed);
    (0..n).map(|_| g.op()).collect()
}
