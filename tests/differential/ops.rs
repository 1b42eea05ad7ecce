//! The operations of the differential harness: what they are and what their
//! observable result is (a value or an errno), and how two results compare.
//! Applying an op is in apply.rs, turning a seed into ops in generate.rs.

use std::fmt;
use std::fs;
use std::hash::Hash;
use std::os::unix::fs::MetadataExt;

pub use super::common::tree::kind_of;
use super::common::{errno_ident, sys};

/// Number of file-descriptor slots (and, separately, dir-stream slots).
pub const SLOTS: usize = 3;

/// mtimes at or after this (2017-07) come from "now": the fixture and every
/// explicit utimens use older times.
pub const RECENT: i64 = 1_500_000_000;

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
    pub fn ts(self) -> sys::Ts {
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
