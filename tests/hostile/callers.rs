//! Hostile callers: an unprivileged user (`setpriv --reuid=1000`) on an
//! `allow_other` root mount tries what the kernel refuses, and root tries to
//! forge overlay-private xattrs; every answer and the resulting trees must be
//! the kernel's.

use crate::common::*;

#[test]
fn unprivileged_callers_get_the_kernels_answers() {
    let build = |fx: &Fixture| {
        let l = fx.lower(0);
        l.file_mode("secret", b"s", 0o600)
            .dir_mode("pub", 0o755)
            .file("pub/rootfile", b"r")
            .dir_mode("tmp", 0o1777)
            .file_mode("tmp/roots", b"r", 0o666)
            .file("tmp/mine", b"m")
            .chown("tmp/mine", UID, GID)
            .dir("home")
            .chown("home", UID, GID)
            .file("home/own", b"o")
            .chown("home/own", UID, GID)
            .file("home/own_g0", b"g")
            .chown("home/own_g0", UID, 0)
            .file_mode("suid", b"#!/bin/sh\n", 0o4777)
            .file_mode("sgid", b"#!/bin/sh\n", 0o2777)
            .file_mode("suid_trunc", b"0123456789", 0o4777)
            .file_mode("suid_otrunc", b"0123456789", 0o4777)
            .file_mode("sgid_nx", b"data\n", 0o2766)
            .file("sgid_nx_own_group", b"data\n")
            .chown("sgid_nx_own_group", 0, GID)
            .chmod("sgid_nx_own_group", 0o2766)
            .file_mode("setid_both", b"data\n", 0o6777)
            .file_mode("suid_falloc", b"data\n", 0o4777)
            .file_mode("suid_cfr", b"data\n", 0o4777)
            .file("suid_own", b"#!/bin/sh\n")
            .chown("suid_own", UID, GID)
            .chmod("suid_own", 0o4755)
            .dir_mode("private", 0o700)
            .file("private/f", b"p")
            .dir_mode("wdir", 0o777)
            .file("wdir/rootfile", b"w")
            .file_mode("link_src", b"l", 0o600);
        Layout::standard(fx)
    };
    let ops = |m: &Mounted, t: &mut Transcript| {
        let c = m.p("");
        let table: &[(&str, &str, &str, Option<&str>)] = &[
            ("read 0600 root file", "cat secret", "EACCES", None),
            ("append 0600 root file", "echo x >> secret", "EACCES", None),
            ("create in root dir", "touch pub/new", "EACCES", None),
            ("mkdir in root dir", "mkdir pub/newdir", "EACCES", None),
            ("unlink in root dir", "rm -f pub/rootfile", "EACCES", None),
            (
                "rename out of root dir",
                "mv -T pub/rootfile home/stolen",
                "EACCES",
                None,
            ),
            ("create in merged root", "touch newfile", "EACCES", None),
            ("chmod root file", "chmod 777 pub/rootfile", "EPERM", None),
            ("chown root file", "chown 1000 pub/rootfile", "EPERM", None),
            ("chgrp root file", "chgrp 1000 pub/rootfile", "EPERM", None),
            (
                "set explicit times of root file",
                "touch -d @1 pub/rootfile",
                "EACCES",
                None,
            ),
            (
                "touch root file without write permission",
                "touch pub/rootfile",
                "EACCES",
                None,
            ),
            (
                "delete other's file in sticky dir",
                "rm -f tmp/roots",
                "EPERM",
                None,
            ),
            (
                "rename other's file in sticky dir",
                "mv -T tmp/roots tmp/x",
                "EPERM",
                None,
            ),
            (
                "write other's 0666 file in sticky dir",
                "echo more >> tmp/roots",
                "ok",
                None,
            ),
            ("delete own file in sticky dir", "rm tmp/mine", "ok", None),
            (
                "write world-writable setuid file",
                "echo pwn >> suid && stat -c %a suid",
                "ok",
                Some("777"),
            ),
            (
                "write world-writable setgid file",
                "echo pwn >> sgid && stat -c %a sgid",
                "ok",
                Some("777"),
            ),
            (
                "truncate world-writable setuid file",
                "truncate -s 0 suid_trunc && stat -c %a suid_trunc",
                "ok",
                Some("777"),
            ),
            (
                "open(O_TRUNC) of world-writable setuid file",
                ": > suid_otrunc && stat -c %a suid_otrunc",
                "ok",
                Some("777"),
            ),
            (
                "write setgid file without group exec of another group",
                "echo x >> sgid_nx && stat -c %a sgid_nx",
                "ok",
                Some("766"),
            ),
            (
                "write setgid file without group exec of own group",
                "echo x >> sgid_nx_own_group && stat -c %a sgid_nx_own_group",
                "ok",
                Some("2766"),
            ),
            (
                "two writes to setuid+setgid file",
                "echo 1 >> setid_both && echo 2 >> setid_both && stat -c %a setid_both",
                "ok",
                Some("777"),
            ),
            (
                "fallocate world-writable setuid file",
                "fallocate -l 64k suid_falloc && stat -c %a suid_falloc",
                "ok",
                Some("777"),
            ),
            (
                "copy_file_range into world-writable setuid file",
                "python3 -c 'import os; a = os.open(\"pub/rootfile\", os.O_RDONLY); \
                 b = os.open(\"suid_cfr\", os.O_WRONLY); os.copy_file_range(a, b, 1)' \
                 && stat -c %a suid_cfr",
                "ok",
                Some("777"),
            ),
            (
                "owner writes own setuid file",
                "echo x >> suid_own && stat -c %a suid_own",
                "ok",
                Some("755"),
            ),
            ("list 0700 root dir", "ls private", "EACCES", None),
            ("read in 0700 root dir", "cat private/f", "EACCES", None),
            (
                "set trusted.* xattr",
                "setfattr -n trusted.foo -v x home/own",
                "EPERM",
                None,
            ),
            (
                "set trusted.overlay.opaque",
                "setfattr -n trusted.overlay.opaque -v y home",
                "EPERM",
                None,
            ),
            (
                "set trusted.overlay.whiteout",
                "setfattr -n trusted.overlay.whiteout -v y home/own",
                "EPERM",
                None,
            ),
            (
                "read trusted.overlay.origin",
                "getfattr -n trusted.overlay.origin pub/rootfile",
                "ENODATA",
                None,
            ),
            (
                "set user.overlay.opaque on own dir",
                "setfattr -n user.overlay.opaque -v y home && ls home",
                "ok",
                Some("own\nown_g0"),
            ),
            (
                "set user xattr on root file",
                "setfattr -n user.foo -v x pub/rootfile",
                "EACCES",
                None,
            ),
            ("mknod char dev", "mknod home/null c 1 3", "EPERM", None),
            ("mknod block dev", "mknod home/blk b 7 250", "EPERM", None),
            ("mkfifo", "mkfifo home/fifo", "ok", None),
            (
                "hard link to unreadable root file",
                "ln link_src home/hl",
                "EPERM",
                None,
            ),
            (
                "unlink root file in world-writable dir",
                "rm -f wdir/rootfile",
                "ok",
                None,
            ),
            (
                "setgid on own file of a foreign group",
                "chmod 2755 home/own_g0 && stat -c %a home/own_g0",
                "ok",
                Some("755"),
            ),
            (
                "setuid on own file",
                "chmod 4755 home/own && stat -c %a home/own",
                "ok",
                Some("4755"),
            ),
            (
                "write own setuid file",
                "echo more >> home/own && stat -c %a home/own",
                "ok",
                Some("755"),
            ),
            ("rmdir root dir", "rmdir pub", "EACCES", None),
        ];
        for (op, script, want, out) in table {
            t.sh(&c, op, script, want, *out);
        }
    };
    differential_of(&build, &ops);
}

/// Root in a container can set any xattr through the mount; overlay-private
/// names are stored escaped (as the kernel does on 6.x), so they change
/// nothing about the union, now or after a remount.
#[test]
fn root_cannot_forge_overlay_private_xattrs() {
    let build = |fx: &Fixture| {
        fx.lower(1).file("d/inner", b"i").file("g", b"g");
        fx.lower(0).dir("d").file("f", b"f");
        Layout::standard(fx)
    };
    let ops = |m: &Mounted, t: &mut Transcript| {
        for (path, name) in [
            ("d", "trusted.overlay.opaque"),
            ("f", "trusted.overlay.whiteout"),
            ("d", "trusted.overlay.redirect"),
            ("f", "trusted.overlay.metacopy"),
            ("d", "trusted.overlay.origin"),
            ("d", "trusted.overlay.overlay.opaque"),
        ] {
            t.expect(
                &format!("set {name} on {path}"),
                res(sys::lsetxattr(&m.p(path), name, b"y", 0)),
                "ok",
            );
        }
        t.expect(
            "ls d after forged opaque",
            ls_res(&m.p("d")),
            "ok [\"inner\"]",
        );
        t.expect(
            "read f after forged whiteout",
            read_res(&m.p("f")),
            "ok \"f\"",
        );
        let mut names = sys::llistxattr(&m.p("d")).unwrap_or_default();
        names.sort();
        t.rec("listxattr d", format!("{names:?}"));
        t.expect(
            "raw upper d holds the escaped name",
            res(sys::lgetxattr(&m.up("d"), "trusted.overlay.overlay.opaque")),
            "ok",
        );
        t.expect(
            "raw upper d is not opaque",
            res(sys::lgetxattr(&m.up("d"), "trusted.overlay.opaque")),
            "ENODATA",
        );
        t.expect(
            "remove forged opaque",
            res(sys::lremovexattr(&m.p("d"), "trusted.overlay.opaque")),
            "ok",
        );
    };
    differential_of(&build, &ops);
}
