//! Snapshots of a directory tree, so that two views (ours vs kernel, before vs
//! after remount, merged vs raw) can be compared entry by entry.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::sys;

/// What a snapshot records besides names, types, mode, owner, size, content,
/// symlink targets, rdev and user./trusted. xattrs (always recorded).
#[derive(Clone, Copy, Debug, Default)]
pub struct SnapOpts {
    /// mtime (s, ns) of every entry.
    pub mtime: bool,
    /// mtime of directories too (only meaningful when `mtime`).
    pub dir_mtime: bool,
    /// st_ino of every entry.
    pub ino: bool,
    /// st_nlink of non-directories.
    pub nlink: bool,
    /// Keep `*.overlay.*` xattrs (for raw upper dirs).
    pub overlay_xattrs: bool,
}

impl SnapOpts {
    /// Names, types, modes, owners, sizes, contents, targets, rdev, xattrs.
    pub fn basic() -> SnapOpts {
        SnapOpts::default()
    }

    /// `basic` plus mtimes of everything and nlink.
    pub fn with_times() -> SnapOpts {
        SnapOpts {
            mtime: true,
            dir_mtime: true,
            nlink: true,
            ..SnapOpts::default()
        }
    }
}

/// One entry of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// `d`, `f`, `l`, `c`, `b`, `p`, `s`.
    pub kind: char,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// st_size for non-directories, 0 for directories.
    pub size: u64,
    /// Hash of a regular file's content.
    pub content: Option<u64>,
    pub target: Option<PathBuf>,
    /// (major, minor) of device nodes.
    pub rdev: Option<(u32, u32)>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    pub mtime: Option<(i64, i64)>,
    pub ino: Option<u64>,
    pub nlink: Option<u64>,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:04o} {}:{} size={}",
            self.kind, self.mode, self.uid, self.gid, self.size
        )?;
        if let Some(c) = self.content {
            write!(f, " hash={c:016x}")?;
        }
        if let Some(t) = &self.target {
            write!(f, " -> {}", t.display())?;
        }
        if let Some((ma, mi)) = self.rdev {
            write!(f, " rdev={ma}:{mi}")?;
        }
        for (k, v) in &self.xattrs {
            write!(f, " {k}={:?}", String::from_utf8_lossy(v))?;
        }
        if let Some((s, ns)) = self.mtime {
            write!(f, " mtime={s}.{ns:09}")?;
        }
        if let Some(i) = self.ino {
            write!(f, " ino={i}")?;
        }
        if let Some(n) = self.nlink {
            write!(f, " nlink={n}")?;
        }
        Ok(())
    }
}

/// A snapshot: relative path -> node. The root itself is recorded as "".
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Tree(pub BTreeMap<PathBuf, Node>);

/// True for xattr names a snapshot keeps: user.* and trusted.*, minus the
/// overlay-private `*.overlay.*` names unless asked for.
fn keep_xattr(name: &str, overlay: bool) -> bool {
    let ns_ok = name.starts_with("user.") || name.starts_with("trusted.");
    let private = name.starts_with("user.overlay.") || name.starts_with("trusted.overlay.");
    ns_ok && (overlay || !private)
}

fn content_hash(path: &Path) -> u64 {
    let data = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut h = DefaultHasher::new();
    data.hash(&mut h);
    h.finish()
}

/// One letter for a file type: `d`, `f`, `l`, `c`, `b`, `p`, `s` (`?` for
/// anything else).
pub fn kind_of(ft: fs::FileType) -> char {
    if ft.is_dir() {
        'd'
    } else if ft.is_file() {
        'f'
    } else if ft.is_symlink() {
        'l'
    } else if ft.is_char_device() {
        'c'
    } else if ft.is_block_device() {
        'b'
    } else if ft.is_fifo() {
        'p'
    } else if ft.is_socket() {
        's'
    } else {
        '?'
    }
}

/// Records one object (not following a final symlink).
pub fn node(path: &Path, opts: SnapOpts) -> Node {
    let md = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
    let kind = kind_of(md.file_type());
    let mut xattrs = BTreeMap::new();
    let names =
        sys::llistxattr(path).unwrap_or_else(|e| panic!("listxattr {}: {e}", path.display()));
    for name in names {
        if keep_xattr(&name, opts.overlay_xattrs) {
            let v = sys::lgetxattr(path, &name)
                .unwrap_or_else(|e| panic!("getxattr {} {name}: {e}", path.display()));
            xattrs.insert(name, v);
        }
    }
    let is_dir = kind == 'd';
    Node {
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: if is_dir { 0 } else { md.size() },
        content: (kind == 'f').then(|| content_hash(path)),
        target: (kind == 'l').then(|| fs::read_link(path).expect("readlink")),
        rdev: matches!(kind, 'c' | 'b').then(|| (libc::major(md.rdev()), libc::minor(md.rdev()))),
        xattrs,
        mtime: (opts.mtime && (!is_dir || opts.dir_mtime)).then(|| (md.mtime(), md.mtime_nsec())),
        ino: opts.ino.then(|| md.ino()),
        nlink: (opts.nlink && !is_dir).then(|| md.nlink()),
    }
}

/// Walks `root` recursively (not following symlinks).
pub fn snapshot(root: &Path, opts: SnapOpts) -> Tree {
    let mut t = Tree::default();
    walk(root, Path::new(""), opts, &mut t);
    t
}

fn walk(root: &Path, rel: &Path, opts: SnapOpts, t: &mut Tree) {
    let full = if rel.as_os_str().is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let n = node(&full, opts);
    let is_dir = n.kind == 'd';
    t.0.insert(rel.to_path_buf(), n);
    if is_dir {
        let mut names: Vec<_> = fs::read_dir(&full)
            .unwrap_or_else(|e| panic!("readdir {}: {e}", full.display()))
            .map(|e| e.expect("readdir entry").file_name())
            .collect();
        names.sort();
        for name in names {
            walk(root, &rel.join(name), opts, t);
        }
    }
}

impl Tree {
    /// Human-readable list of differences, empty when equal.
    pub fn diff(&self, other: &Tree) -> String {
        let mut out = String::new();
        for (p, a) in &self.0 {
            match other.0.get(p) {
                None => out += &format!("  only in left:  /{}  {a}\n", p.display()),
                Some(b) if a != b => {
                    out += &format!(
                        "  differs: /{}\n    left:  {a}\n    right: {b}\n",
                        p.display()
                    )
                }
                _ => {}
            }
        }
        for (p, b) in &other.0 {
            if !self.0.contains_key(p) {
                out += &format!("  only in right: /{}  {b}\n", p.display());
            }
        }
        out
    }

    /// Relative paths in the snapshot, as strings, excluding the root.
    pub fn paths(&self) -> Vec<String> {
        self.0
            .keys()
            .filter(|p| !p.as_os_str().is_empty())
            .map(|p| p.display().to_string())
            .collect()
    }

    /// Drops one entry and everything below it.
    pub fn without(mut self, rel: &str) -> Tree {
        let rel = Path::new(rel);
        self.0.retain(|p, _| !p.starts_with(rel));
        self
    }
}

impl fmt::Display for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (p, n) in &self.0 {
            writeln!(f, "  /{}  {n}", p.display())?;
        }
        Ok(())
    }
}

/// Panics with a readable diff unless the two snapshots are equal.
#[track_caller]
pub fn assert_same(left: &Tree, right: &Tree, what: &str) {
    let d = left.diff(right);
    assert!(d.is_empty(), "{what}: trees differ (left vs right):\n{d}");
}
