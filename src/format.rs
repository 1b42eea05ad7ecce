//! The on-disk overlay format, and the only module that knows it.
//!
//! Follows the kernel's `Documentation/filesystems/overlayfs.rst`:
//! - a whiteout is a character device 0/0 (any mode, any nlink);
//! - an xattr whiteout is a zero-size regular file with `overlay.whiteout`,
//!   honoured only inside a directory whose `overlay.opaque` is `x`;
//! - an opaque directory has `overlay.opaque` = `y`;
//! - private xattrs live under `trusted.overlay.` (or `user.overlay.` in
//!   `userxattr` mode); a user's own `overlay.*` xattrs are stored escaped as
//!   `overlay.overlay.*`, one level per nesting.
//! - OCI layer whiteouts (`.wh.NAME`, `.wh..wh..opq`) in lower layers are read
//!   when enabled; they are never written.

use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;

use crate::errno::{Errno, Result};
use crate::node::LayerNames;
use crate::sys;

const OCI_PREFIX: &[u8] = b".wh.";
const OCI_OPAQUE: &CStr = c".wh..wh..opq";

/// How a layer directory affects the merge below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opacity {
    /// Lower dirs of the same path merge in.
    Transparent,
    /// `opaque=y` (or OCI `.wh..wh..opq`): lower dirs are hidden.
    Opaque,
    /// `opaque=x`: lower dirs merge, and this dir may hold xattr whiteouts.
    XattrWhiteouts,
}

/// What a directory entry is, as far as the overlay format is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Whiteout,
    Object,
}

/// Where a renamed dir's lower dirs are (`overlay.redirect`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redirect {
    /// The same parent's lower dirs, under this name.
    Relative(OsString),
    /// This path from each lower layer's root.
    Absolute(Vec<OsString>),
}

impl Redirect {
    /// Parses an `overlay.redirect` value, failing as a kernel lookup that
    /// meets it fails: EINVAL for an empty value, an empty component (`//`,
    /// a trailing `/`) or a `/` in a relative one, EACCES for a `.` or `..`
    /// component.
    pub fn check(v: &[u8]) -> Result<Redirect> {
        if v.is_empty() || v.contains(&0) {
            return Err(Errno::EINVAL);
        }
        let dots = |c: &[u8]| c == b"." || c == b"..";
        match v.strip_prefix(b"/") {
            Some(path) => {
                let comps: Vec<&[u8]> = path.split(|c| *c == b'/').collect();
                if comps.iter().any(|c| c.is_empty()) {
                    return Err(Errno::EINVAL);
                }
                if comps.iter().any(|c| dots(c)) {
                    return Err(Errno::EACCES);
                }
                Ok(Redirect::Absolute(
                    comps
                        .into_iter()
                        .map(|c| OsStr::from_bytes(c).to_os_string())
                        .collect(),
                ))
            }
            None if v.contains(&b'/') => Err(Errno::EINVAL),
            None if dots(v) => Err(Errno::EACCES),
            None => Ok(Redirect::Relative(OsStr::from_bytes(v).to_os_string())),
        }
    }

    /// The value as the kernel writes it.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Redirect::Relative(n) => n.as_bytes().to_vec(),
            Redirect::Absolute(comps) => {
                let mut v = Vec::new();
                for c in comps {
                    v.push(b'/');
                    v.extend_from_slice(c.as_bytes());
                }
                if v.is_empty() {
                    v.push(b'/');
                }
                v
            }
        }
    }
}

/// The overlay xattr namespace in use plus the OCI switch.
#[derive(Clone, Debug)]
pub struct Format {
    prefix: &'static str,
    oci: bool,
}

impl Format {
    pub fn new(userxattr: bool, oci: bool) -> Format {
        Format {
            prefix: if userxattr {
                USER_PREFIX
            } else {
                TRUSTED_PREFIX
            },
            oci,
        }
    }

    pub fn userxattr(&self) -> bool {
        self.prefix.starts_with("user.")
    }

    fn key(&self, suffix: &str) -> CString {
        // The prefix and suffixes are static ASCII without NUL.
        CString::new(format!("{}{}", self.prefix, suffix)).unwrap_or_default()
    }

    /// Whether a stat result is a classic whiteout (char device 0/0).
    pub fn is_whiteout_stat(st: &libc::stat) -> bool {
        st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
    }

    /// Classifies the entry `name` of layer dir `dir` whose lstat is `st`.
    /// `xwhiteouts` says whether `dir` is marked `opaque=x`.
    pub fn classify(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        st: &libc::stat,
        xwhiteouts: bool,
    ) -> EntryKind {
        if Self::is_whiteout_stat(st) {
            return EntryKind::Whiteout;
        }
        if xwhiteouts
            && st.st_mode & libc::S_IFMT == libc::S_IFREG
            && st.st_size == 0
            && self.has_xattr(dir, name, "whiteout")
        {
            return EntryKind::Whiteout;
        }
        EntryKind::Object
    }

    fn has_xattr(&self, dir: BorrowedFd<'_>, name: &CStr, suffix: &str) -> bool {
        let key = self.key(suffix);
        sys::xattr::get(dir, name, &key).is_ok()
            || (!self.userxattr() && sys::xattr::get(dir, name, c"user.overlay.whiteout").is_ok())
    }

    /// Opacity of directory `name` in layer dir `dir`. `lower` enables OCI markers.
    pub fn opacity(&self, dir: BorrowedFd<'_>, name: &CStr, lower: bool) -> Opacity {
        let key = self.key("opaque");
        match sys::xattr::get(dir, name, &key) {
            Ok(v) if v.as_slice() == b"y" => return Opacity::Opaque,
            Ok(v) if v.as_slice() == b"x" => return Opacity::XattrWhiteouts,
            _ => {}
        }
        if lower && self.oci {
            if let Ok(fd) = sys::fs::open_dir_path(dir, name) {
                if sys::fs::lstatat(sys::fs::bfd(&fd), OCI_OPAQUE).is_ok() {
                    return Opacity::Opaque;
                }
            }
        }
        Opacity::Transparent
    }

    /// Marks upper dir `name` opaque.
    pub fn set_opaque(&self, dir: BorrowedFd<'_>, name: &CStr) -> Result<()> {
        sys::xattr::set(dir, name, &self.key("opaque"), b"y", 0)
    }

    /// Creates a whiteout at `name` (which must not exist).
    pub fn make_whiteout(dir: BorrowedFd<'_>, name: &CStr) -> Result<()> {
        sys::fs::mknodat(dir, name, libc::S_IFCHR, 0)
    }

    /// Whether OCI whiteout names are honoured.
    pub fn oci(&self) -> bool {
        self.oci
    }

    /// Whether a name is an OCI marker (`.wh.*`) that the merged view hides.
    pub fn is_oci_name(&self, name: &OsStr) -> bool {
        self.oci && name.as_bytes().starts_with(OCI_PREFIX)
    }

    /// For an OCI `.wh.NAME` entry, the NAME it hides.
    pub fn oci_target<'a>(&self, name: &'a OsStr) -> Option<&'a OsStr> {
        if !self.oci {
            return None;
        }
        let b = name.as_bytes();
        let rest = b.strip_prefix(OCI_PREFIX)?;
        if rest.starts_with(OCI_PREFIX) || rest.is_empty() {
            return None;
        }
        Some(OsStr::from_bytes(rest))
    }

    /// Reads lower layer dir `dir` once: the names its OCI `.wh.NAME`
    /// entries hide, and with `keep` (up to `max` entries) every name in it.
    pub fn scan_layer_dir(&self, dir: BorrowedFd<'_>, keep: bool, max: usize) -> LayerNames {
        let mut out = LayerNames::default();
        if !self.oci && !keep {
            return out;
        }
        let Ok(rfd) = sys::fs::openat_noatime(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY) else {
            return out;
        };
        let Ok(entries) = sys::dir::read_all(std::os::fd::AsFd::as_fd(&rfd)) else {
            return out;
        };
        let mut present = (keep && entries.len() <= max).then(HashSet::new);
        for e in entries {
            if self.oci {
                if let Some(t) = self.oci_target(&e.name) {
                    out.hidden.insert(t.to_os_string());
                }
            }
            if let Some(p) = present.as_mut() {
                p.insert(e.name);
            }
        }
        out.present = present;
        out
    }

    /// The redirect of dir `name`, if it has a valid one.
    pub fn redirect(&self, dir: BorrowedFd<'_>, name: &CStr) -> Option<Redirect> {
        self.checked_redirect(dir, name).ok().flatten()
    }

    /// The redirect of dir `name` for a lookup: none, one, or the error a
    /// kernel lookup gives for a malformed one.
    pub fn checked_redirect(&self, dir: BorrowedFd<'_>, name: &CStr) -> Result<Option<Redirect>> {
        match sys::xattr::get(dir, name, &self.key("redirect")) {
            Ok(v) => Redirect::check(&v).map(Some),
            Err(_) => Ok(None),
        }
    }

    pub fn set_redirect(&self, dir: BorrowedFd<'_>, name: &CStr, r: &Redirect) -> Result<()> {
        sys::xattr::set(dir, name, &self.key("redirect"), &r.encode(), 0)
    }

    /// Marks a copied-up hard link whose names are all in the upper: the
    /// kernel's `overlay.nlink` with the upper's own count ("U+0").
    pub fn set_index_nlink(&self, dir: BorrowedFd<'_>, name: &CStr) -> Result<()> {
        sys::xattr::set(dir, name, &self.key("nlink"), b"U+0", 0)
    }

    /// Whether an upper hard link was copied up with index semantics (all
    /// names joined), so it may keep its lower origin's number.
    pub fn has_index_nlink(&self, dir: BorrowedFd<'_>, name: &CStr) -> bool {
        sys::xattr::get(dir, name, &self.key("nlink")).is_ok()
    }

    /// Whether a regular file is a metadata-only copy (`overlay.metacopy`):
    /// its data is in a lower layer. The value is empty, or the kernel's
    /// `struct ovl_metacopy` (version, len, flags, digest algorithm, an
    /// fs-verity digest of up to 64 bytes); a digest is not checked here
    /// (verity=off reads it so too). A value the kernel finds too small
    /// (1 to 3 bytes) or too big fails the lookup with EIO, as there.
    pub fn metacopy(&self, dir: BorrowedFd<'_>, name: &CStr, st: &libc::stat) -> Result<bool> {
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Ok(false);
        }
        match sys::xattr::get(dir, name, &self.key("metacopy")) {
            Ok(v) if v.is_empty() || (METACOPY_MIN..=METACOPY_MAX).contains(&v.len()) => Ok(true),
            Ok(_) => Err(Errno::EIO),
            Err(_) => Ok(false),
        }
    }

    /// Marks a regular file (an empty `dname`: `dir` itself) a metadata-only
    /// copy, as the kernel's copy-up does: an empty value.
    pub fn set_metacopy(&self, dir: BorrowedFd<'_>, name: &CStr) -> Result<()> {
        sys::xattr::set(dir, name, &self.key("metacopy"), b"", 0)
    }

    /// Drops the metacopy mark once the file holds its data.
    pub fn clear_metacopy(&self, dir: BorrowedFd<'_>, name: &CStr) -> Result<()> {
        match sys::xattr::remove(dir, name, &self.key("metacopy")) {
            Err(e) if e != Errno::ENODATA => Err(e),
            _ => Ok(()),
        }
    }

    /// Whether an upper object carries an origin (it is a copy-up).
    pub fn has_origin(&self, dir: BorrowedFd<'_>, name: &CStr) -> bool {
        sys::xattr::get(dir, name, &self.key("origin")).is_ok()
    }

    /// Whether upper dir `name` is marked impure: it holds copied-up or
    /// moved entries whose inode numbers come from their origin.
    pub fn is_impure(&self, dir: BorrowedFd<'_>, name: &CStr) -> bool {
        matches!(sys::xattr::get(dir, name, &self.key("impure")), Ok(v) if v.as_slice() == b"y")
    }

    /// Marks upper dir `name` impure (as the kernel does after a copy-up or
    /// a move into it).
    pub fn set_impure(&self, dir: BorrowedFd<'_>, name: &CStr) -> Result<()> {
        if self.is_impure(dir, name) {
            return Ok(());
        }
        sys::xattr::set(dir, name, &self.key("impure"), b"y", 0)
    }

    /// The key of the origin xattr.
    pub fn origin_key(&self) -> CString {
        self.key("origin")
    }

    /// Encodes a lower object's file handle the way the kernel stores
    /// `overlay.origin` (struct ovl_fb: version 0, magic 0xfb, len, flags,
    /// type, fs uuid, fid).
    pub fn encode_origin(handle_type: i32, fid: &[u8], uuid: &[u8; 16]) -> Option<Vec<u8>> {
        let len = 21 + fid.len();
        if len > 255 || !(0..=255).contains(&handle_type) {
            return None;
        }
        let mut v = Vec::with_capacity(len);
        let flags: u8 = if cfg!(target_endian = "big") { 1 } else { 0 };
        v.extend_from_slice(&[0, 0xfb, len as u8, flags, handle_type as u8]);
        v.extend_from_slice(uuid);
        v.extend_from_slice(fid);
        Some(v)
    }

    /// Splits a stored origin value into (handle type, fid).
    pub fn decode_origin(stored: &[u8]) -> Option<(i32, &[u8])> {
        if stored.len() > 21
            && stored[0] == 0
            && stored[1] == 0xfb
            && stored[2] as usize == stored.len()
        {
            Some((stored[4] as i32, &stored[21..]))
        } else {
            None
        }
    }

    /// Whether a stored origin value names this (type, fid), ignoring the uuid.
    pub fn origin_matches(stored: &[u8], handle_type: i32, fid: &[u8]) -> bool {
        stored.len() == 21 + fid.len()
            && stored[0] == 0
            && stored[1] == 0xfb
            && stored[4] as i32 == handle_type
            && &stored[21..] == fid
    }

    /// Maps a real xattr name to what the merged view shows: private names
    /// are hidden (None), escaped ones lose one `overlay.` level.
    pub fn visible_xattr(&self, real: &[u8]) -> Option<Vec<u8>> {
        let p = self.prefix.as_bytes();
        match real.strip_prefix(p) {
            None => Some(real.to_vec()),
            Some(rest) => {
                if rest.starts_with(b"overlay.") {
                    let mut v = p.to_vec();
                    v.extend_from_slice(&rest[b"overlay.".len()..]);
                    Some(v)
                } else {
                    None
                }
            }
        }
    }

    /// Maps a name given by a caller to the real name to store (escaping
    /// `overlay.*` names one level).
    pub fn real_xattr(&self, visible: &[u8]) -> Vec<u8> {
        let p = self.prefix.as_bytes();
        match visible.strip_prefix(p) {
            None => visible.to_vec(),
            Some(rest) => {
                let mut v = p.to_vec();
                v.extend_from_slice(b"overlay.");
                v.extend_from_slice(rest);
                v
            }
        }
    }

    /// Whether a real xattr is one the kernel keeps under the *other*
    /// prefix (`user.overlay.origin` when this format uses `trusted.`):
    /// the sign of an upper written in the other mode.
    /// The append-only/immutable flags (`FS_APPEND_FL`/`FS_IMMUTABLE_FL`)
    /// kept in an upper object's `overlay.protattr`: one letter per flag,
    /// `a` then `i`. A value with any other byte (or an empty one) is
    /// ignored, as the kernel warns about and ignores it. No xattr (or no
    /// xattrs on the layer) is no flag; another error is not an answer.
    pub fn protattr(&self, dir: BorrowedFd<'_>, name: &CStr) -> Result<u32> {
        match sys::xattr::get(dir, name, &self.key("protattr")) {
            Ok(v) => Ok(parse_protattr(&v)),
            Err(e) if e == Errno::ENODATA || e == Errno::ENOTSUP => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Stores the append-only/immutable bits of `flags` as the kernel's
    /// `overlay.protattr` (they are never set on the upper inode: it could
    /// then not be linked or given private xattrs); removes it when none is
    /// set. An upper without xattrs refuses them with EPERM, as the kernel.
    pub fn set_protattr(&self, dir: BorrowedFd<'_>, name: &CStr, flags: u32) -> Result<()> {
        let v = encode_protattr(flags);
        let key = self.key("protattr");
        if v.is_empty() {
            return match sys::xattr::remove(dir, name, &key) {
                Err(e) if e == Errno::ENODATA || e == Errno::ENOTSUP => Ok(()),
                r => r,
            };
        }
        sys::xattr::set(dir, name, &key, &v, 0).map_err(|e| {
            if e == Errno::ENOTSUP {
                Errno::EPERM
            } else {
                e
            }
        })
    }

    pub fn is_other_mode_xattr(&self, real: &[u8]) -> bool {
        overlay_key(real).is_some_and(|(prefix, _)| prefix != self.prefix)
    }

    /// Whether a real xattr must not be copied up (private to this overlay).
    pub fn is_private_xattr(&self, real: &[u8]) -> bool {
        match real.strip_prefix(self.prefix.as_bytes()) {
            Some(rest) => !rest.starts_with(b"overlay."),
            None => false,
        }
    }
}

/// The sizes of a metacopy value with a digest the kernel accepts:
/// a 4-byte header, up to a 64-byte digest.
const METACOPY_MIN: usize = 4;
const METACOPY_MAX: usize = 4 + 64;

/// The two places the kernel keeps its overlay xattrs (`userxattr`: user.).
const TRUSTED_PREFIX: &str = "trusted.overlay.";
const USER_PREFIX: &str = "user.overlay.";

/// The keys the kernel stores under its overlay prefix.
const OVERLAY_KEYS: &[&str] = &[
    "opaque", "whiteout", "redirect", "origin", "impure", "nlink", "upper", "uuid", "metacopy",
    "protattr",
];

/// Splits a real xattr name into one of the two overlay prefixes and a key
/// the kernel uses, if it is such a name.
pub fn overlay_key(real: &[u8]) -> Option<(&'static str, &str)> {
    [TRUSTED_PREFIX, USER_PREFIX]
        .into_iter()
        .find_map(|prefix| {
            let key = real.strip_prefix(prefix.as_bytes())?;
            OVERLAY_KEYS
                .iter()
                .find(|k| k.as_bytes() == key)
                .map(|k| (prefix, *k))
        })
}

/// `overlay.protattr`'s value: `a` for append-only, then `i` for immutable.
fn encode_protattr(flags: u32) -> Vec<u8> {
    let mut v = Vec::new();
    if flags & sys::fileattr::FS_APPEND_FL != 0 {
        v.push(b'a');
    }
    if flags & sys::fileattr::FS_IMMUTABLE_FL != 0 {
        v.push(b'i');
    }
    v
}

fn parse_protattr(v: &[u8]) -> u32 {
    let mut flags = 0;
    for c in v {
        flags |= match c {
            b'a' => sys::fileattr::FS_APPEND_FL,
            b'i' => sys::fileattr::FS_IMMUTABLE_FL,
            _ => return 0,
        };
    }
    flags
}

/// Converts a name from the kernel into a C string (NUL is impossible there).
pub fn cname(name: &OsStr) -> Result<CString> {
    if name.len() > 255 {
        return Err(Errno::ENAMETOOLONG);
    }
    CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattr_escaping_round_trips() {
        let f = Format::new(false, true);
        assert_eq!(f.visible_xattr(b"trusted.overlay.opaque"), None);
        assert_eq!(
            f.visible_xattr(b"trusted.overlay.overlay.opaque")
                .as_deref(),
            Some(&b"trusted.overlay.opaque"[..])
        );
        assert_eq!(
            f.real_xattr(b"trusted.overlay.x"),
            b"trusted.overlay.overlay.x"
        );
        assert_eq!(f.real_xattr(b"user.foo"), b"user.foo");
        assert!(f.is_private_xattr(b"trusted.overlay.origin"));
        assert!(!f.is_private_xattr(b"trusted.overlay.overlay.origin"));
    }

    #[test]
    fn redirect_values() {
        assert_eq!(Redirect::check(b"g"), Ok(Redirect::Relative("g".into())));
        let abs = Redirect::check(b"/a/b").unwrap_or(Redirect::Relative("x".into()));
        assert_eq!(abs, Redirect::Absolute(vec!["a".into(), "b".into()]));
        assert_eq!(abs.encode(), b"/a/b");
        assert_eq!(Redirect::check(b"a/b"), Err(Errno::EINVAL));
        assert_eq!(Redirect::check(b"/a/../b"), Err(Errno::EACCES));
        // The errnos of a kernel lookup that meets them (measured on 6.18).
        for (v, e) in [
            (&b"//real"[..], Errno::EINVAL),
            (b"/real/", Errno::EINVAL),
            (b"/", Errno::EINVAL),
            (b"", Errno::EINVAL),
            (b"a/b", Errno::EINVAL),
            (b"..", Errno::EACCES),
            (b".", Errno::EACCES),
            (b"/../real", Errno::EACCES),
            (b"/./real", Errno::EACCES),
        ] {
            assert_eq!(Redirect::check(v), Err(e), "{}", String::from_utf8_lossy(v));
        }
    }

    #[test]
    fn protattr_values_are_the_kernels() {
        use crate::sys::fileattr::{FS_APPEND_FL as A, FS_IMMUTABLE_FL as I};
        assert_eq!(encode_protattr(A | I | 0x80), b"ai");
        assert_eq!(encode_protattr(I), b"i");
        assert_eq!(encode_protattr(0), b"");
        assert_eq!(parse_protattr(b"ai"), A | I);
        assert_eq!(parse_protattr(b"ia"), A | I);
        assert_eq!(parse_protattr(b"a"), A);
        // An unknown letter: the kernel ignores the whole value.
        assert_eq!(parse_protattr(b"ax"), 0);
    }

    #[test]
    fn oci_names() {
        let f = Format::new(false, true);
        assert_eq!(f.oci_target(OsStr::new(".wh.foo")), Some(OsStr::new("foo")));
        assert_eq!(f.oci_target(OsStr::new(".wh..wh..opq")), None);
        assert!(f.is_oci_name(OsStr::new(".wh.x")));
        assert!(!Format::new(false, false).is_oci_name(OsStr::new(".wh.x")));
    }

    #[test]
    fn origin_encoding() {
        let v = Format::encode_origin(1, &[1, 2, 3, 4, 5, 6, 7, 8], &[9; 16]).unwrap_or_default();
        assert_eq!(v.len(), 29);
        assert!(Format::origin_matches(&v, 1, &[1, 2, 3, 4, 5, 6, 7, 8]));
        assert!(!Format::origin_matches(&v, 2, &[1, 2, 3, 4, 5, 6, 7, 8]));
    }
}
