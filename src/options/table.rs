//! The one list of `-o` options: the parser looks every option up here,
//! `--help` prints it, and a test checks the README lists the same names.

/// What `unionfs-fuse` does with an option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Accepted, with the meaning given in the help text.
    Accepted,
    /// Meant for mount(8), fstab or mount.fuse3, not for the filesystem:
    /// accepted without a word.
    ForMount,
    /// Accepted, and one warning line says it has no effect here.
    Ignored,
    /// Refused with the help text as the reason.
    Refused,
}

/// One option: `key` as matched (`key=value` entries match that value only
/// and are tried first), `form` as shown, what it does.
#[derive(Clone, Copy, Debug)]
pub struct Opt {
    pub key: &'static str,
    pub form: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

const fn opt(key: &'static str, form: &'static str, kind: Kind, help: &'static str) -> Opt {
    Opt {
        key,
        form,
        kind,
        help,
    }
}

use Kind::{Accepted as A, ForMount as M, Ignored as I, Refused as R};

/// Every option, in the order `--help` shows them.
pub const OPTIONS: &[Opt] = &[
    opt("lowerdir", "lowerdir=L1:L2[::D1::D2]", A, "lower layers, top first (\\: is a colon in a path); each layer after :: is data-only: not in the merged tree, it only holds the data of metacopy files whose absolute overlay.redirect names a path in it"),
    opt("lowerdir+", "lowerdir+=L", A, "one more lower layer below the others (repeatable; not mixed with lowerdir=)"),
    opt("datadir+", "datadir+=D", A, "one more data-only lower layer, after the lowerdir+= ones (repeatable; as :: in lowerdir=)"),
    opt("upperdir", "upperdir=U", A, "writable upper layer"),
    opt("workdir", "workdir=W", A, "work dir on the upper's filesystem, for atomic copy-up (without it: O_TMPFILE + linkat for files, a short-lived temporary name in the upper dir otherwise)"),
    opt("ro", "ro", A, "read-only mount; a given upper is shown read-only, as the top layer"),
    opt("rw", "rw", A, "read-write mount (the default with an upper)"),
    opt("userxattr", "userxattr", A, "overlay xattrs as user.overlay.* (automatic in a user namespace)"),
    opt("redirect_dir=off", "redirect_dir=off", A, "renaming a lower or merged dir gives EXDEV (default); redirects are followed"),
    opt("redirect_dir=follow", "redirect_dir=follow", A, "as off: redirects are followed, never created"),
    opt("redirect_dir=on", "redirect_dir=on", A, "such a rename works: the dir is copied up and records its lower path in overlay.redirect, as the kernel does"),
    opt("redirect_dir=nofollow", "redirect_dir=nofollow", A, "redirects are neither created nor followed: a lookup that meets one gives EPERM, as the kernel"),
    opt("metacopy=off", "metacopy=off", A, "no metadata-only copy-up (the default)"),
    opt("metacopy=on", "metacopy=on", A, "chown, chmod, utimes, xattr changes, rename and link of a lower file copy up only its metadata (overlay.metacopy, no data); its data is copied up at its first open for writing or truncate; metacopy files are followed to their data (without it their lookup gives EPERM, as the kernel). Turns redirect_dir=on; refused with userxattr and redirect_dir=off|follow|nofollow"),
    opt("index=off", "index=off", A, "no index dir (the default; hard links are joined at copy-up without one)"),
    opt("index=on", "index=on", R, "refused: the index dir's guarantees (hard links joined through workdir/index, upper tied to its lowers) are not given"),
    opt("nfs_export=off", "nfs_export=off", A, "no NFS export (the default)"),
    opt("nfs_export=on", "nfs_export=on", R, "refused: file handles of the union are not stable for NFS export"),
    opt("verity=off", "verity=off", A, "fs-verity digests are not checked (the default)"),
    opt("verity", "verity=on|require", R, "refused: fs-verity digests of metacopy files are not checked (with verity=off a digest in overlay.metacopy is read and ignored, as the kernel)"),
    opt("xino", "xino=on|off|auto", I, "inode numbers follow their own rule (see the README)"),
    opt("uuid", "uuid=on|off|null|auto", I, "no overlay UUID is kept"),
    opt("volatile", "volatile", A, "no fsync of the upper, as overlayfs volatile, but once a writeback of the upper failed every later fsync fails (as the kernel); with workdir= it leaves work/incompat/volatile, and a later mount over that workdir is refused until it is removed (as the kernel)"),
    opt("fsync=0", "fsync=0", A, "no fsync of the upper, without the volatile marker (fuse-overlayfs); a failed writeback fails later fsyncs, as volatile"),
    opt("fsync=1", "fsync=1", A, "fsync as asked (the default)"),
    opt("oci_whiteouts", "oci_whiteouts=on|off", A, "honour OCI .wh.NAME / .wh..wh..opq files in lower layers (default on)"),
    opt("uidmapping", "uidmapping=I:O:N[:I:O:N...]", A, "show stored uid O as I (N ids), store ids callers set the other way (fuse-overlayfs); others show as 65534"),
    opt("gidmapping", "gidmapping=I:O:N[:I:O:N...]", A, "the same for gids"),
    opt("squash_to_root", "squash_to_root", A, "every file and dir shows as owned by 0:0; chown is accepted and its failure ignored (fuse-overlayfs)"),
    opt("squash_to_uid", "squash_to_uid=N", A, "every file and dir shows as owned by uid N (wins over squash_to_root)"),
    opt("squash_to_gid", "squash_to_gid=N", A, "every file and dir shows as owned by gid N (wins over squash_to_root)"),
    opt("xattr_permissions", "xattr_permissions=0|1|2", A, "keep owner and mode of files and dirs in an xattr, as fuse-overlayfs: 1 security.fuseoverlayfs.override_stat, 2 user.containers.override_stat (\"uid:gid:mode\", shown in place of the stored ones; chown and chmod write it)"),
    opt("context", "context=\"LABEL\"", A, "SELinux context of every object: given to the mount when SELinux is on, else shown as the security.selinux xattr"),
    opt("noacl", "noacl", A, "no POSIX ACL support: system.posix_acl_* give EOPNOTSUPP"),
    opt("noxattrs", "noxattrs=0|1", A, "1: no xattrs through the mount (EOPNOTSUPP), as fuse-overlayfs"),
    opt("static_nlink", "static_nlink", A, "directories show nlink 1"),
    opt("fast_ino", "fast_ino=N", I, "inode numbers are always the real ones"),
    opt("plugins", "plugins=PATHS", I, "fuse-overlayfs layer plugins cannot be loaded"),
    opt("threaded", "threaded=0|1", A, "0: one FUSE worker thread (threads=1), 1: the default"),
    opt("debug", "debug", A, "as -d: stay in the foreground and log debug messages"),
    opt("passthrough", "passthrough=on|off|all", A, "FUSE passthrough as root (kernel 6.9+): on (default) for upper files and read-only unions; all also for lower files (an fd opened before a copy-up then keeps reading the old data)"),
    opt("writeback", "writeback[=on|off|1|0]", A, "the kernel's writeback cache (default off): writes gather in the page cache and reach the upper at close, fsync or writeback; excludes passthrough (see the README's Deviations)"),
    opt("timeout", "timeout=SECS", A, "kernel attribute/entry cache time (default 30)"),
    opt("threads", "threads=N", A, "FUSE worker threads, 1..64 (default 16)"),
    opt("allow_other", "allow_other", A, "any user may use the mount (the default as root)"),
    opt("default_permissions", "default_permissions", A, "the kernel checks permissions (the default)"),
    opt("dev", "dev", A, "device files work (the default as root)"),
    opt("nodev", "nodev", A, "device files do not work"),
    opt("suid", "suid", A, "set-id bits work (the default as root)"),
    opt("nosuid", "nosuid", A, "set-id bits do not work"),
    opt("exec", "exec", A, "programs may run (the default)"),
    opt("noexec", "noexec", A, "programs may not run"),
    opt("atime", "atime", A, "atime updates as the upper does (the default)"),
    opt("noatime", "noatime", A, "no atime updates"),
    opt("fsname", "fsname=NAME", A, "source name shown in /proc/mounts (wins over SOURCE)"),
    opt("defaults", "defaults", M, "fstab"),
    opt("auto", "auto", M, "fstab"),
    opt("noauto", "noauto", M, "fstab"),
    opt("nofail", "nofail", M, "fstab"),
    opt("_netdev", "_netdev", M, "fstab"),
    opt("user", "user", M, "fstab"),
    opt("users", "users", M, "fstab"),
    opt("nouser", "nouser", M, "fstab"),
    opt("x-", "x-*", M, "fstab comments for other programs"),
    opt("comment", "comment=*", M, "fstab comments"),
    opt("async", "async", I, "writes are always asynchronous"),
    opt("relatime", "relatime", I, "atime follows the upper's own mount"),
    opt("strictatime", "strictatime", I, "atime follows the upper's own mount"),
    opt("lazytime", "lazytime", I, "atime follows the upper's own mount"),
    opt("nodiratime", "nodiratime", I, "atime follows the upper's own mount"),
    opt("subtype", "subtype=NAME", I, "the fstype is always fuse.unionfs-fuse"),
    opt("max_read", "max_read=N", I, "read sizes are the kernel's"),
    opt("blksize", "blksize=N", I, "block sizes are the layers'"),
    opt("fd", "fd=N", I, "the server opens /dev/fuse itself"),
    opt("rootmode", "rootmode=M", I, "the root's mode is the top layer's"),
    opt("user_id", "user_id=N", I, "the mount's owner is the server's user"),
    opt("group_id", "group_id=N", I, "the mount's group is the server's group"),
];

/// The entry an option `key[=value]` is looked up as: `key=value` first
/// (values with their own meaning), then `key`, then a prefix entry.
pub fn find(key: &str, value: Option<&str>) -> Option<&'static Opt> {
    if let Some(v) = value {
        let full = format!("{key}={v}");
        if let Some(o) = OPTIONS.iter().find(|o| o.key == full) {
            return Some(o);
        }
    }
    OPTIONS
        .iter()
        .find(|o| o.key == key)
        .or_else(|| {
            OPTIONS
                .iter()
                .find(|o| o.key == "x-" && key.starts_with("x-"))
        })
        .or_else(|| {
            OPTIONS
                .iter()
                .find(|o| o.key == "comment" && key.starts_with("comment"))
        })
}

/// The option list for `--help`, wrapped to 80 columns.
pub fn help_text() -> String {
    let mut out = String::new();
    for kind in [A, I, R, M] {
        out.push_str(match kind {
            A => "\nOPTIONS (-o, comma separated, repeatable; kernel overlayfs and fuse-overlayfs names):\n",
            I => "\nACCEPTED AND IGNORED (one warning line each):\n",
            R => "\nREFUSED:\n",
            M => "\nFOR MOUNT(8), FSTAB AND MOUNT.FUSE3 (accepted silently):\n  ",
        });
        if kind == M {
            let names: Vec<&str> = OPTIONS
                .iter()
                .filter(|o| o.kind == M)
                .map(|o| o.form)
                .collect();
            out.push_str(&wrap(&names.join(", "), 2));
            out.push('\n');
            continue;
        }
        for o in OPTIONS.iter().filter(|o| o.kind == kind) {
            out.push_str("  ");
            out.push_str(o.form);
            out.push('\n');
            out.push_str("      ");
            out.push_str(&wrap(o.help, 6));
            out.push('\n');
        }
    }
    out
}

fn wrap(text: &str, indent: usize) -> String {
    let mut out = String::new();
    let mut col = indent;
    for (i, w) in text.split(' ').enumerate() {
        if i > 0 {
            if col + 1 + w.len() > 79 {
                out.push('\n');
                out.push_str(&" ".repeat(indent));
                col = indent;
            } else {
                out.push(' ');
                col += 1;
            }
        }
        out.push_str(w);
        col += w.len();
    }
    out
}
