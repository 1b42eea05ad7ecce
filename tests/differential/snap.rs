//! Normalised snapshots of a merged view or a raw upper dir, and their diff.
//!
//! Recorded: names, types, mode, uid/gid, size, content hash, symlink target,
//! rdev, nlink (of every object in merged views), xattrs, and the mtime class
//! ([`Mt`]: exact when older than [`super::ops::RECENT`], else "recent").
//! Not recorded: st_dev, st_ino, atime, ctime. Directory mtimes are compared
//! only when both sides report an exact one (the fixture's or an explicit
//! utimens).
//!
//! Raw upper dirs are normalised for the kernel's format freedoms: a whiteout
//! is any char 0/0 (mode, owner, times and link count of the kernel's shared
//! whiteout inode ignored); `trusted.overlay.{origin,impure,uuid}` are
//! dropped; nlink is not recorded (the kernel's index dir holds extra links).
//! Snapshots never panic: an entry that cannot be read is recorded as an
//! error entry, so a broken view shows up as a divergence.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::common::sys;
use super::ops::{errno_name, kind_of, short, Mt};

/// Which kind of tree a snapshot is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// A mounted union.
    Merged,
    /// An upper dir read directly.
    RawUpper,
    /// A lower dir read directly (everything kept; checks lowers stay intact).
    RawLower,
}

/// Raw-upper xattrs that are the kernel's private bookkeeping.
const RAW_IGNORED_XATTRS: &[&str] = &[
    "trusted.overlay.origin",
    "trusted.overlay.impure",
    "trusted.overlay.uuid",
    // index=on link accounting: the kernel counts its index entry, ours has
    // none (all names of a joined hard link are in the upper).
    "trusted.overlay.nlink",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// d f l c b p s, `w` for a whiteout in a raw upper, `!` for an error.
    pub kind: char,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub content: Option<u64>,
    pub target: Option<String>,
    pub rdev: Option<(u32, u32)>,
    pub nlink: Option<u64>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    pub mtime: Option<Mt>,
    /// errno of a failed lstat/readdir/read/listxattr.
    pub error: Option<String>,
    /// Raw upper only: a copied-up regular file (has `overlay.origin`) with
    /// more than one link. Not compared; see [`drop_eager_links`].
    pub linked_copy: bool,
}

impl Entry {
    fn error(what: &str, e: std::io::Error) -> Entry {
        Entry {
            kind: '!',
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            content: None,
            target: None,
            rdev: None,
            nlink: None,
            xattrs: BTreeMap::new(),
            mtime: None,
            linked_copy: false,
            error: Some(format!(
                "{what}: {}",
                errno_name(e.raw_os_error().unwrap_or(-1))
            )),
        }
    }
}

fn xattr_str(v: &[u8]) -> String {
    if v.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(v))
    } else {
        let hex: String = v.iter().take(12).map(|b| format!("{b:02x}")).collect();
        format!("0x{hex}{}", if v.len() > 12 { ".." } else { "" })
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(e) = &self.error {
            return write!(f, "ERROR {e}");
        }
        if self.kind == 'w' {
            return write!(f, "whiteout");
        }
        write!(
            f,
            "{} {:04o} {}:{} size={}",
            self.kind, self.mode, self.uid, self.gid, self.size
        )?;
        if let Some(c) = self.content {
            write!(f, " hash={:08x}", c >> 32)?;
        }
        if let Some(t) = &self.target {
            write!(f, " -> {}", short(t))?;
        }
        if let Some((a, b)) = self.rdev {
            write!(f, " rdev={a}:{b}")?;
        }
        if let Some(n) = self.nlink {
            write!(f, " nlink={n}")?;
        }
        for (k, v) in &self.xattrs {
            write!(f, " {k}={}", xattr_str(v))?;
        }
        if let Some(m) = self.mtime {
            write!(f, " mtime={m}")?;
        }
        Ok(())
    }
}

/// A snapshot: relative path ("" = root) -> entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snap(pub BTreeMap<String, Entry>);

fn hash_file(p: &Path) -> std::io::Result<u64> {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags_nonblock()
        .open(p)?;
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    let mut h = DefaultHasher::new();
    data.hash(&mut h);
    Ok(h.finish())
}

trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlock for fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
    }
}

fn entry(p: &Path, view: View) -> Entry {
    let md = match fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) => return Entry::error("lstat", e),
    };
    let ft = md.file_type();
    let mut kind = kind_of(ft);
    if view == View::RawUpper && ft.is_char_device() && md.rdev() == 0 {
        kind = 'w';
    }
    let mut e = Entry {
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: if kind == 'd' { 0 } else { md.size() },
        content: None,
        target: None,
        rdev: matches!(kind, 'c' | 'b').then(|| (libc::major(md.rdev()), libc::minor(md.rdev()))),
        nlink: (view != View::RawUpper).then(|| md.nlink()),
        xattrs: BTreeMap::new(),
        mtime: Some(Mt::of(&md)),
        error: None,
        linked_copy: false,
    };
    if kind == 'f' {
        match hash_file(p) {
            Ok(h) => e.content = Some(h),
            Err(err) => return Entry::error("read", err),
        }
    }
    if kind == 'l' {
        match fs::read_link(p) {
            Ok(t) => e.target = Some(String::from_utf8_lossy(t.as_os_str().as_bytes()).into()),
            Err(err) => return Entry::error("readlink", err),
        }
    }
    match sys::llistxattr(p) {
        Ok(names) => {
            for n in names {
                if view == View::RawUpper && RAW_IGNORED_XATTRS.contains(&n.as_str()) {
                    // ours marks joined hard-link copies with overlay.nlink
                    if (n == "trusted.overlay.origin" && kind == 'f' && md.nlink() > 1)
                        || (n == "trusted.overlay.nlink" && kind == 'f')
                    {
                        e.linked_copy = true;
                    }
                    continue;
                }
                match sys::lgetxattr(p, &n) {
                    Ok(v) => {
                        e.xattrs.insert(n, v);
                    }
                    Err(err) => {
                        e.xattrs
                            .insert(n, format!("<getxattr failed: {err}>").into_bytes());
                    }
                }
            }
        }
        Err(err) => return Entry::error("listxattr", err),
    }
    if kind == 'w' {
        // The kernel's whiteouts are hard links of one shared inode: only
        // the type matters.
        e.mode = 0;
        e.uid = 0;
        e.gid = 0;
        e.rdev = None;
        e.mtime = None;
        e.xattrs.clear();
    }
    e
}

/// Snapshots the tree at `root` (not following symlinks).
pub fn snapshot(root: &Path, view: View) -> Snap {
    let mut s = Snap::default();
    walk(root, "", view, &mut s);
    s
}

fn walk(root: &Path, rel: &str, view: View, s: &mut Snap) {
    let full = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let e = entry(&full, view);
    let is_dir = e.kind == 'd';
    s.0.insert(rel.to_string(), e);
    if !is_dir {
        return;
    }
    let names: Result<Vec<_>, _> = fs::read_dir(&full).and_then(|rd| {
        rd.map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<Vec<_>>>()
    });
    match names {
        Ok(mut names) => {
            names.sort();
            for n in names {
                let n = n.to_string_lossy();
                let r = if rel.is_empty() {
                    n.into_owned()
                } else {
                    format!("{rel}/{n}")
                };
                walk(root, &r, view, s);
            }
        }
        Err(err) => {
            s.0.insert(format!("{rel}/<readdir>"), Entry::error("readdir", err));
        }
    }
}

/// One difference between two snapshots.
#[derive(Clone, Debug)]
pub struct DiffLine {
    /// `only-kernel`, `only-ours` or `differs[fields]`, plus the entry kind.
    pub class: String,
    pub text: String,
    /// The entry's path (relative, not abbreviated).
    pub path: String,
}

fn fields(a: &Entry, b: &Entry) -> Vec<String> {
    let mut f: Vec<String> = Vec::new();
    if a.error != b.error {
        f.push("error".to_string());
    }
    if a.kind != b.kind {
        f.push("kind".to_string());
    }
    if a.mode != b.mode {
        f.push("mode".to_string());
    }
    if (a.uid, a.gid) != (b.uid, b.gid) {
        f.push("owner".to_string());
    }
    if a.size != b.size {
        f.push("size".to_string());
    }
    if a.content != b.content {
        f.push("content".to_string());
    }
    if a.target != b.target {
        f.push("target".to_string());
    }
    if a.rdev != b.rdev {
        f.push("rdev".to_string());
    }
    if a.nlink != b.nlink {
        f.push(if a.kind == 'd' { "dir-nlink" } else { "nlink" }.to_string());
    }
    if a.xattrs != b.xattrs {
        // Name the xattrs that differ: different names are different bugs.
        let mut names: Vec<&str> = a
            .xattrs
            .keys()
            .chain(b.xattrs.keys())
            .filter(|k| a.xattrs.get(*k) != b.xattrs.get(*k))
            .map(String::as_str)
            .collect();
        names.sort();
        names.dedup();
        f.push(format!("xattrs({})", names.join(" ")));
    }
    let dir = a.kind == 'd' && b.kind == 'd';
    let both_old = matches!((a.mtime, b.mtime), (Some(Mt::Old(..)), Some(Mt::Old(..))));
    if a.mtime != b.mtime && (!dir || both_old) {
        f.push("mtime".to_string());
    }
    f
}

/// Differences between the reference snapshot `k` and `o`; `kl`/`ol` name
/// the two sides in messages.
pub fn diff(k: &Snap, o: &Snap, kl: &str, ol: &str) -> Vec<DiffLine> {
    let mut out = Vec::new();
    for (p, a) in &k.0 {
        match o.0.get(p) {
            None => out.push(DiffLine {
                class: format!("only-{kl} {}", a.kind),
                text: format!("only in {kl}: /{}  {a}", short(p)),
                path: p.clone(),
            }),
            Some(b) => {
                let f = fields(a, b);
                if !f.is_empty() {
                    out.push(DiffLine {
                        class: format!("differs[{}] {}", f.join(","), a.kind),
                        text: format!(
                            "differs: /{}\n        {kl:>6}: {a}\n        {ol:>6}: {b}",
                            short(p)
                        ),
                        path: p.clone(),
                    });
                }
            }
        }
    }
    for (p, b) in &o.0 {
        if !k.0.contains_key(p) {
            out.push(DiffLine {
                class: format!("only-{ol} {}", b.kind),
                text: format!("only in {ol}: /{}  {b}", short(p)),
                path: p.clone(),
            });
        }
    }
    out
}

/// Normalises the one layout difference of hard links between the kernel's
/// `index=on` and ours: the kernel puts only the names that were written to
/// (or linked) in the upper dir and finds the other names of a copied-up
/// lower inode through its index dir, while ours links every visible name
/// into the upper dir at copy-up (so no index is needed). Drops, from ours'
/// raw upper, the entries only ours has that are such extra links, and dirs
/// only ours has that hold nothing else. The merged views and cross-mounts
/// still show whether the links behave alike. `UNIONFS_DIFF_STRICT_RAW=1`
/// turns this off.
pub fn drop_eager_links(kernel: &Snap, ours: &mut Snap) {
    if std::env::var_os("UNIONFS_DIFF_STRICT_RAW").is_some() {
        return;
    }
    let only: Vec<String> = ours
        .0
        .keys()
        .filter(|p| !kernel.0.contains_key(*p))
        .cloned()
        .collect();
    let extra_link = |p: &str, ours: &Snap| ours.0.get(p).is_some_and(|e| e.linked_copy);
    let mut drop: Vec<String> = only
        .iter()
        .filter(|p| extra_link(p, ours))
        .cloned()
        .collect();
    // Dirs only ours has whose every entry below is dropped (deepest first).
    let mut dirs: Vec<&String> = only
        .iter()
        .filter(|p| ours.0.get(*p).is_some_and(|e| e.kind == 'd'))
        .collect();
    dirs.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for dir in dirs {
        let prefix = format!("{dir}/");
        let below: Vec<&String> = ours.0.keys().filter(|k| k.starts_with(&prefix)).collect();
        if !below.is_empty() && below.iter().all(|k| drop.contains(k)) {
            drop.push(dir.clone());
        }
    }
    for p in drop {
        ours.0.remove(&p);
    }
}

/// Documented deviation: a hard link made through FUSE names only the
/// source inode, not the name used, so the absolute redirect ours gives a
/// metacopy file whose lower is multiply linked may name another name of
/// that same lower inode than the kernel's. Such pairs are made equal.
pub fn same_lower_redirects(kernel: &Snap, ours: &mut Snap, lowers: &[std::path::PathBuf]) {
    use std::os::unix::fs::MetadataExt;
    const KEY: &str = "trusted.overlay.redirect";
    let ident = |v: &[u8]| -> Option<(u64, u64)> {
        let rel = std::str::from_utf8(v).ok()?.strip_prefix('/')?;
        lowers.iter().find_map(|l| {
            fs::symlink_metadata(l.join(rel))
                .ok()
                .filter(|m| m.is_file() && m.nlink() > 1)
                .map(|m| (m.dev(), m.ino()))
        })
    };
    for (path, k) in &kernel.0 {
        let Some(o) = ours.0.get_mut(path) else {
            continue;
        };
        let (Some(kv), Some(ov)) = (k.xattrs.get(KEY), o.xattrs.get(KEY)) else {
            continue;
        };
        if kv != ov && ident(kv).is_some() && ident(kv) == ident(ov) {
            o.xattrs.insert(KEY.to_string(), kv.clone());
        }
    }
}
