//! What containers/storage's options change in the attributes and xattrs
//! the mount shows, as fuse-overlayfs defines them: `squash_to_*`,
//! `xattr_permissions`, `static_nlink`, `context=` without SELinux, `noacl`
//! and `noxattrs`. The union below stores and reports the real objects; this
//! edge rewrites what the kernel is told.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;

use crate::errno::{Errno, Result};
use crate::idmap::IdMap;
use crate::options::MountConfig;
use crate::sys;
use crate::union::{Caller, Entry, SetAttr, Union};

/// fuse-overlayfs's override xattrs, in the order it reads them.
const OVERRIDE_PRIVILEGED: &str = "security.fuseoverlayfs.override_stat";
const OVERRIDE_CONTAINERS: &str = "user.containers.override_stat";
const OVERRIDE_USER: &str = "user.fuseoverlayfs.override_stat";

const SELINUX_XATTR: &str = "security.selinux";

#[derive(Debug, Default)]
pub struct Present {
    squash_uid: Option<u32>,
    squash_gid: Option<u32>,
    static_nlink: bool,
    /// With `xattr_permissions`: the xattr that chown and chmod write.
    override_key: Option<&'static str>,
    uid_map: IdMap,
    gid_map: IdMap,
    /// `context=` shown as `security.selinux` (NUL-terminated, as SELinux
    /// reports it), when the kernel has no SELinux to take it.
    label: Option<Vec<u8>>,
    pub noacl: bool,
    noxattrs: bool,
}

impl Present {
    pub fn new(c: &MountConfig, selinux: bool) -> Present {
        Present {
            squash_uid: c.squash_uid,
            squash_gid: c.squash_gid,
            static_nlink: c.static_nlink,
            override_key: match c.xattr_permissions {
                1 => Some(OVERRIDE_PRIVILEGED),
                2 => Some(OVERRIDE_CONTAINERS),
                _ => None,
            },
            uid_map: c.uid_map.clone(),
            gid_map: c.gid_map.clone(),
            label: c
                .context
                .as_ref()
                .filter(|_| !selinux)
                .map(|l| [l.as_bytes(), b"\0"].concat()),
            noacl: c.noacl,
            noxattrs: c.noxattrs,
        }
    }

    /// fuse-overlayfs's mount-time step for `xattr_permissions`, so that
    /// the merged root has an owner and mode of its own: an upper root
    /// without the override xattr gets the first one a lower root has,
    /// else `0:0:555`. With `=2`, an upper root holding only the older
    /// `user.fuseoverlayfs.override_stat` keeps that name for every later
    /// write, as there. Failing to read or write the upper root's xattr
    /// fails the mount, as there.
    pub fn on_upper_root(mut self, fs: &Union) -> std::result::Result<Present, String> {
        let Some(key) = self.override_key else {
            return Ok(self);
        };
        let mut roots = fs.layer_roots();
        let upper = match fs.has_upper().then(|| roots.next()).flatten() {
            Some(u) => u,
            None => return Ok(self),
        };
        let get = |dir, k: &str| {
            let k = CString::new(k).map_err(|_| Errno::EINVAL)?;
            sys::xattr::get(dir, c"", &k)
        };
        let err = |e: Errno| format!("upper root's {key}: {e}");
        match get(upper, key) {
            Ok(_) => return Ok(self),
            Err(e) if e != Errno::ENODATA => return Err(err(e)),
            Err(_) => {}
        }
        if key == OVERRIDE_CONTAINERS && get(upper, OVERRIDE_USER).is_ok() {
            self.override_key = Some(OVERRIDE_USER);
            return Ok(self);
        }
        // A lower root's own names: with `=2` the older one as well.
        let names: &[&str] = match key {
            OVERRIDE_CONTAINERS => &[OVERRIDE_CONTAINERS, OVERRIDE_USER],
            _ => &[key],
        };
        let value = roots
            .find_map(|l| {
                names
                    .iter()
                    .find_map(|n| get(l, n).ok().filter(|v| !v.is_empty()))
            })
            .unwrap_or_else(|| b"0:0:555".to_vec());
        let k = CString::new(key).map_err(|_| err(Errno::EINVAL))?;
        sys::xattr::set(upper, c"", &k, &value, 0).map_err(err)?;
        Ok(self)
    }

    fn squashes(&self) -> bool {
        self.squash_uid.is_some() || self.squash_gid.is_some()
    }

    /// The attributes shown for node `ino` whose union attributes are `st`.
    pub fn attr(&self, fs: &Union, ino: u64, mut st: libc::stat) -> libc::stat {
        if self.override_key.is_some() {
            if let Some((uid, gid, mode)) = self.stored_override(fs, ino, st.st_mode) {
                st.st_uid = self.uid_map.to_inside(uid);
                st.st_gid = self.gid_map.to_inside(gid);
                st.st_mode = (st.st_mode & libc::S_IFMT) | (mode & 0o7777);
            }
        }
        if let Some(u) = self.squash_uid {
            st.st_uid = u;
        }
        if let Some(g) = self.squash_gid {
            st.st_gid = g;
        }
        if self.static_nlink && st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            st.st_nlink = 1;
        }
        st
    }

    /// The stored (uid, gid, mode) of a file or dir, from the first override
    /// xattr it has; fuse-overlayfs reads them only on those two types.
    fn stored_override(&self, fs: &Union, ino: u64, fmt: u32) -> Option<(u32, u32, u32)> {
        let kind = fmt & libc::S_IFMT;
        if kind != libc::S_IFDIR && kind != libc::S_IFREG {
            return None;
        }
        [OVERRIDE_PRIVILEGED, OVERRIDE_CONTAINERS, OVERRIDE_USER]
            .into_iter()
            .find_map(|k| fs.getxattr(ino, OsStr::new(k)).ok())
            .and_then(|v| parse_override(&v))
    }

    /// A setattr under these options. With `xattr_permissions` a chown or
    /// chmod writes the override xattr instead of the real owner and mode;
    /// with `squash_to_*` a failing chown is ignored (fuse-overlayfs).
    pub fn setattr(
        &self,
        fs: &Union,
        ino: u64,
        mut a: SetAttr,
        apply: impl Fn(SetAttr) -> Result<libc::stat>,
    ) -> Result<libc::stat> {
        let ids = a.uid.is_some() || a.gid.is_some();
        if let Some(key) = self.override_key {
            if ids || a.mode.is_some() {
                let st = fs.getattr(ino, a.fh)?;
                let shown = self.attr(fs, ino, st);
                let uid = self.uid_map.to_outside(a.uid.unwrap_or(shown.st_uid));
                let gid = self.gid_map.to_outside(a.gid.unwrap_or(shown.st_gid));
                let mode = a.mode.unwrap_or(shown.st_mode) & 0o7777;
                let value = format!("{uid}:{gid}:{mode:o}");
                fs.setxattr(ino, OsStr::new(key), value.as_bytes(), 0)?;
                (a.uid, a.gid, a.mode) = (None, None, None);
            }
        }
        let rest = a.size.is_some() || a.atime.is_some() || a.mtime.is_some();
        let st = if self.squashes() && (a.uid.is_some() || a.gid.is_some()) {
            let fh = a.fh;
            match apply(a) {
                Ok(st) => st,
                Err(_) if rest || a.mode.is_some() => apply(SetAttr {
                    uid: None,
                    gid: None,
                    ..a
                })?,
                Err(_) => fs.getattr(ino, fh)?,
            }
        } else if a.uid.is_none() && a.gid.is_none() && a.mode.is_none() && !rest {
            fs.getattr(ino, a.fh)?
        } else {
            apply(a)?
        };
        Ok(self.attr(fs, ino, st))
    }

    /// After a create, mkdir, mknod or symlink made `e` in `parent`: with
    /// `xattr_permissions`, the creator's ids and the mode asked for go in
    /// the override xattr, as fuse-overlayfs writes them ("uid:gid:mode",
    /// octal mode), so that a store moves between the two. The group is
    /// the parent's when it is set-gid, as the kernel gives it. `user.*`
    /// xattrs cannot be set on symlinks and special files: EPERM there is
    /// ignored, as in fuse-overlayfs, and so is any other failure (the
    /// object then shows its stored owner and mode).
    pub fn created(&self, fs: &Union, parent: u64, e: &Entry, c: &Caller, mode: u32) {
        let Some(key) = self.override_key else {
            return;
        };
        let gid = match fs.getattr(parent, None) {
            Ok(p) if p.st_mode & libc::S_ISGID != 0 => self.attr(fs, parent, p).st_gid,
            _ => c.gid,
        };
        let value = format!(
            "{}:{}:{:o}",
            self.uid_map.to_outside(c.uid),
            self.gid_map.to_outside(gid),
            mode & !c.umask & 0o7777
        );
        if let Err(err) = fs.setxattr(e.ino, OsStr::new(key), value.as_bytes(), 0) {
            log::debug!("{key} not written on a new object ({value}): {err:?}");
        }
    }

    /// Whether xattr requests are refused as a whole (`noxattrs=1`).
    pub fn no_xattrs(&self) -> Result<()> {
        if self.noxattrs {
            Err(Errno::ENOTSUP)
        } else {
            Ok(())
        }
    }

    /// A getxattr answered here, or None to ask the union.
    pub fn getxattr(&self, name: &OsStr) -> Option<Result<Vec<u8>>> {
        if let Err(e) = self.no_xattrs() {
            return Some(Err(e));
        }
        if self.noacl && is_acl(name) {
            return Some(Err(Errno::ENOTSUP));
        }
        if self.hides(name) {
            return Some(Err(Errno::ENODATA));
        }
        match &self.label {
            Some(l) if name.as_bytes() == SELINUX_XATTR.as_bytes() => Some(Ok(l.clone())),
            _ => None,
        }
    }

    /// A setxattr or removexattr refused here, or Ok to pass it on.
    pub fn change_xattr(&self, name: &OsStr) -> Result<()> {
        self.no_xattrs()?;
        if self.noacl && is_acl(name) {
            return Err(Errno::ENOTSUP);
        }
        if self.hides(name) || (self.label.is_some() && name.as_bytes() == SELINUX_XATTR.as_bytes())
        {
            return Err(Errno::EPERM);
        }
        Ok(())
    }

    /// The name list shown, from the union's NUL-separated one.
    pub fn list(&self, names: Vec<u8>) -> Vec<u8> {
        if self.override_key.is_none() && self.label.is_none() && !self.noacl {
            return names;
        }
        let mut out = Vec::with_capacity(names.len());
        for n in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
            let name = OsStr::from_bytes(n);
            let label = self.label.is_some() && n == SELINUX_XATTR.as_bytes();
            if self.hides(name) || (self.noacl && is_acl(name)) || label {
                continue;
            }
            out.extend_from_slice(n);
            out.push(0);
        }
        if self.label.is_some() {
            out.extend_from_slice(SELINUX_XATTR.as_bytes());
            out.push(0);
        }
        out
    }

    /// The override xattrs stand for owner and mode while they are in use.
    fn hides(&self, name: &OsStr) -> bool {
        self.override_key.is_some()
            && [OVERRIDE_PRIVILEGED, OVERRIDE_CONTAINERS, OVERRIDE_USER]
                .iter()
                .any(|k| k.as_bytes() == name.as_bytes())
    }
}

fn is_acl(name: &OsStr) -> bool {
    let n = name.as_bytes();
    n == b"system.posix_acl_access" || n == b"system.posix_acl_default"
}

/// Parses fuse-overlayfs's "uid:gid:mode" (mode in octal; later fields,
/// such as a device's type, are not ours to read).
pub fn parse_override(v: &[u8]) -> Option<(u32, u32, u32)> {
    let s = std::str::from_utf8(v).ok()?.trim_end_matches('\0');
    let mut it = s.split(':');
    let uid = it.next()?.parse().ok()?;
    let gid = it.next()?.parse().ok()?;
    let mode = u32::from_str_radix(it.next()?, 8).ok()?;
    Some((uid, gid, mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_stat_reads_fuse_overlayfs_values() {
        assert_eq!(parse_override(b"0:0:755"), Some((0, 0, 0o755)));
        assert_eq!(parse_override(b"1000:100:0644"), Some((1000, 100, 0o644)));
        assert_eq!(parse_override(b"1:2:4755:file"), Some((1, 2, 0o4755)));
        assert_eq!(parse_override(b"1:2"), None);
        assert_eq!(parse_override(b"a:2:755"), None);
    }
}
