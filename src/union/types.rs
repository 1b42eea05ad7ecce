//! The plain types the union's callers (adapter/, fuzz/) and its operation
//! families share: they sit below every family, so none imports another
//! for them.

use std::sync::Arc;

use crate::node::{Body, Node};
use crate::sys::fs::Time;

/// A hook that invalidates the kernel's cached attributes of an inode.
pub type Invalidator = Box<dyn Fn(u64) + Send + Sync>;

/// The FUSE root inode number.
pub const ROOT_INO: u64 = 1;

/// Mount-wide behaviour switches. `Default` is every switch off, which a
/// literal can build on (`..Options::default()`) so a new field does not
/// break it.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub userxattr: bool,
    pub oci_whiteouts: bool,
    pub volatile: bool,
    pub redirect_dir: bool,
    /// `redirect_dir=nofollow`: a lookup that meets a redirect gives EPERM.
    pub redirect_nofollow: bool,
    /// `metacopy=on`: metadata-only copy-up; metacopy files are followed
    /// to their data (without it their lookup gives EPERM).
    pub metacopy: bool,
    pub uid_map: crate::idmap::IdMap,
    pub gid_map: crate::idmap::IdMap,
    /// At most this many layer dir fds stay open (tests set 1 to make
    /// reopening the common case); None: a share of RLIMIT_NOFILE.
    pub dir_fds: Option<usize>,
}

/// Who is asking: the caller's fsuid/fsgid and pid as FUSE reports them
/// (pid 0: unknown).
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    /// For a create: the caller's umask, which the server applies unless
    /// the new object's upper parent has a default ACL (the filesystem then
    /// derives the mode from the ACL, as for the kernel). 0 elsewhere.
    pub umask: u32,
}

/// A node handed to the kernel: its number, generation and attributes.
#[derive(Clone, Debug)]
pub struct Entry {
    pub ino: u64,
    pub generation: u64,
    pub attr: libc::stat,
    pub node: Arc<Node>,
}

/// Attribute changes requested by setattr.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<Time>,
    pub mtime: Option<Time>,
    pub fh: Option<u64>,
}

/// What a name resolves to across the layers.
#[derive(Clone, Debug)]
pub(super) struct Resolved {
    pub kind: u32,
    pub st: libc::stat,
    pub ino: u64,
    pub body: Body,
    /// Whether the name's topmost entry in the parent's lower dirs is an
    /// object, not a whiteout (what `lower_has` answers, so deleting or
    /// moving it needs a whiteout): `None` where the resolve did not look
    /// (an opaque or redirected upper dir, a name just created).
    pub in_lower: Option<bool>,
}
