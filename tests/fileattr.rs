//! Inode flags through the union (`lsattr`/`chattr`, the fileattr ioctls),
//! as kernel overlayfs keeps them (fs/overlayfs/inode.c, util.c
//! `ovl_set_protattr`, copy_up.c `ovl_copy_fileattr`):
//! - append-only (`a`) and immutable (`i`) are kept in the upper's
//!   `trusted.overlay.protattr` (`"a"`, `"i"`, `"ai"`), never on the upper
//!   inode; other flags (nodump `d`, noatime `A`) go to the upper inode;
//! - reading shows the real flags with the protected ones merged in;
//! - immutable/append-only objects refuse what the VFS refuses (EPERM);
//! - a copy-up keeps a lower object's `a`/`i` in protattr and its `A`/`S`.
//!
//! Every layer is on a small ext4 loop image (tmpfs holds few flags), so the
//! upper can hold every flag these tests set. Validated against the kernel
//! with `UNIONFS_TEST_IMPL=kernel`.

mod common;

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use common::ext4::Ext4Image;
use common::*;

const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;
const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;
const IMMUTABLE: u32 = 0x10;
const APPEND: u32 = 0x20;
const NODUMP: u32 = 0x40;
const NOATIME: u32 = 0x80;
const XFLAG_IMMUTABLE: u32 = 0x8;
const XFLAG_APPEND: u32 = 0x10;
const XFLAG_NODUMP: u32 = 0x80;
/// The flags these tests look at (ext4 adds `e`, extents, on its own).
const SHOWN: u32 = IMMUTABLE | APPEND | NODUMP | NOATIME;

fn open_for_ioctl(p: &Path) -> io::Result<fs::File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(p)
}

fn get_flags(p: &Path) -> io::Result<u32> {
    let f = open_for_ioctl(p)?;
    let mut v: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int into `v`.
    if unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_GETFLAGS, &mut v) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v as u32)
}

fn set_flags(p: &Path, flags: u32) -> io::Result<()> {
    let f = open_for_ioctl(p)?;
    let v = flags as libc::c_int;
    // SAFETY: FS_IOC_SETFLAGS reads one int from `v`.
    if unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_SETFLAGS, &v) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// chattr's way: read the flags, change some bits, write them back.
fn chattr(p: &Path, add: u32, remove: u32) {
    let f = get_flags(p).unwrap_or_else(|e| panic!("getflags {}: {e}", p.display()));
    set_flags(p, (f | add) & !remove).unwrap_or_else(|e| panic!("setflags {}: {e}", p.display()));
}

fn fsxattr(f: &fs::File) -> [u8; 28] {
    let mut buf = [0u8; 28];
    // SAFETY: FS_IOC_FSGETXATTR fills a 28-byte struct fsxattr.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FSGETXATTR, buf.as_mut_ptr()) };
    assert!(r >= 0, "fsgetxattr: {}", io::Error::last_os_error());
    buf
}

fn xflags(p: &Path) -> u32 {
    let buf = fsxattr(&open_for_ioctl(p).expect("open"));
    u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]])
}

/// xfs_io's `chattr`: read the fsxattr, change xflags, write it back.
fn set_xflags(p: &Path, add: u32, remove: u32) {
    let f = open_for_ioctl(p).expect("open");
    let mut buf = fsxattr(&f);
    let x = (u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) | add) & !remove;
    buf[..4].copy_from_slice(&x.to_ne_bytes());
    // SAFETY: FS_IOC_FSSETXATTR reads a 28-byte struct fsxattr.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FSSETXATTR, buf.as_ptr()) };
    assert!(r >= 0, "fssetxattr: {}", io::Error::last_os_error());
}

fn protattr(p: &Path) -> Option<Vec<u8>> {
    sys::lgetxattr(p, "trusted.overlay.protattr").ok()
}

/// A fixture whose layers are all on one fresh ext4.
fn ext4_fixture() -> Option<(Fixture, Ext4Image)> {
    let fx = Fixture::new()?;
    let disk = Ext4Image::mount_at(fx.root(), 32, "");
    Some((fx, disk))
}

fn append_to(p: &Path, data: &[u8]) -> io::Result<()> {
    OpenOptions::new().append(true).open(p)?.write_all(data)
}

#[test]
fn immutable_and_append_only_are_kept_in_protattr_not_on_the_upper() {
    let Some((fx, _disk)) = ext4_fixture() else {
        return;
    };
    fx.lower(0).file("lf", b"lower\n").dir("ld");
    let m = fx.mount();
    write(&m.p("uf"), b"upper\n");

    chattr(&m.p("uf"), IMMUTABLE, 0);
    assert_eq!(get_flags(&m.p("uf")).unwrap() & SHOWN, IMMUTABLE);
    assert_eq!(get_flags(&m.up("uf")).unwrap() & SHOWN, 0);
    assert_eq!(protattr(&m.up("uf")).as_deref(), Some(&b"i"[..]));

    // A lower file is copied up for it.
    chattr(&m.p("lf"), APPEND, 0);
    assert_eq!(get_flags(&m.p("lf")).unwrap() & SHOWN, APPEND);
    assert_eq!(get_flags(&m.up("lf")).unwrap() & SHOWN, 0);
    assert_eq!(protattr(&m.up("lf")).as_deref(), Some(&b"a"[..]));
    assert!(sys::lgetxattr(&m.up("lf"), "trusted.overlay.origin").is_ok());

    // Both on a dir: "a" before "i".
    chattr(&m.p("ld"), IMMUTABLE | APPEND, 0);
    assert_eq!(get_flags(&m.p("ld")).unwrap() & SHOWN, IMMUTABLE | APPEND);
    assert_eq!(protattr(&m.up("ld")).as_deref(), Some(&b"ai"[..]));
    assert_eq!(
        xflags(&m.p("ld")) & (XFLAG_IMMUTABLE | XFLAG_APPEND),
        XFLAG_IMMUTABLE | XFLAG_APPEND
    );

    // The private xattr is not shown through the union.
    assert_errno(
        sys::lgetxattr(&m.p("uf"), "trusted.overlay.protattr"),
        libc::ENODATA,
        "getxattr protattr through the union",
    );
    for p in ["uf", "lf", "ld"] {
        chattr(&m.p(p), 0, IMMUTABLE | APPEND);
        assert_eq!(get_flags(&m.p(p)).unwrap() & SHOWN, 0, "{p}");
        assert_eq!(protattr(&m.up(p)), None, "{p}: protattr removed");
    }
}

#[test]
fn other_flags_go_to_the_upper_inode() {
    let Some((fx, _disk)) = ext4_fixture() else {
        return;
    };
    fx.lower(0).file("lf", b"lower\n");
    let m = fx.mount();
    chattr(&m.p("lf"), NODUMP | IMMUTABLE, 0);
    assert_eq!(get_flags(&m.up("lf")).unwrap() & SHOWN, NODUMP);
    assert_eq!(get_flags(&m.p("lf")).unwrap() & SHOWN, NODUMP | IMMUTABLE);
    assert_eq!(xflags(&m.p("lf")) & XFLAG_NODUMP, XFLAG_NODUMP);
    assert_eq!(protattr(&m.up("lf")).as_deref(), Some(&b"i"[..]));
    chattr(&m.p("lf"), 0, NODUMP | IMMUTABLE);
    assert_eq!(get_flags(&m.up("lf")).unwrap() & SHOWN, 0);
}

#[test]
fn an_immutable_file_refuses_every_change_and_stays_readable() {
    let Some((fx, _disk)) = ext4_fixture() else {
        return;
    };
    fx.lower(0).file("lf", b"lower\n");
    let mut m = fx.mount();
    write(&m.p("f"), b"data\n");
    chattr(&m.p("f"), IMMUTABLE, 0);
    chattr(&m.p("lf"), IMMUTABLE, 0);
    // Survives a remount: the flags are read back from protattr.
    m.remount();
    for name in ["f", "lf"] {
        let p = m.p(name);
        let what = |op: &str| format!("{op} {name}");
        assert_errno(
            OpenOptions::new().write(true).open(&p),
            libc::EPERM,
            &what("open for write"),
        );
        assert_errno(append_to(&p, b"x"), libc::EPERM, &what("append"));
        assert_errno(sys::truncate(&p, 0), libc::EPERM, &what("truncate"));
        assert_errno(fs::remove_file(&p), libc::EPERM, &what("unlink"));
        assert_errno(fs::rename(&p, m.p("moved")), libc::EPERM, &what("rename"));
        assert_errno(fs::hard_link(&p, m.p("linked")), libc::EPERM, &what("link"));
        assert_errno(
            fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)),
            libc::EPERM,
            &what("chmod"),
        );
        assert_errno(
            sys::lsetxattr(&p, "user.x", b"1", 0),
            libc::EPERM,
            &what("setxattr"),
        );
        assert_errno(
            sys::utimensat(&p, Ts(0, libc::UTIME_NOW), Ts(0, libc::UTIME_NOW), false),
            libc::EPERM,
            &what("touch"),
        );
    }
    assert_eq!(read(&m.p("f")), "data\n");
    assert_eq!(read(&m.p("lf")), "lower\n");
    chattr(&m.p("f"), 0, IMMUTABLE);
    // A file opened for writing before the flag was set still takes
    // writes and a truncate through that fd (the VFS checks at open).
    let mut early = OpenOptions::new().write(true).open(m.p("f")).expect("open");
    chattr(&m.p("f"), IMMUTABLE, 0);
    early
        .write_all(b"DATA")
        .expect("write through an fd opened before");
    early
        .set_len(5)
        .expect("ftruncate through an fd opened before");
    drop(early);
    assert_eq!(read(&m.p("f")), "DATA\n");
    chattr(&m.p("f"), 0, IMMUTABLE);
    append_to(&m.p("f"), b"more\n").expect("append once mutable");
    assert_eq!(read(&m.p("f")), "DATA\nmore\n");
}

#[test]
fn an_append_only_file_takes_appends_only() {
    let Some((fx, _disk)) = ext4_fixture() else {
        return;
    };
    fx.lower(0).file("log", b"one\n");
    let m = fx.mount();
    let p = m.p("log");
    chattr(&p, APPEND, 0);
    append_to(&p, b"two\n").expect("append to an append-only file");
    let f = OpenOptions::new()
        .append(true)
        .open(&p)
        .expect("open O_APPEND");
    assert_errno(
        f.set_len(0),
        libc::EPERM,
        "ftruncate through an O_APPEND fd",
    );
    drop(f);
    assert_errno(
        OpenOptions::new().write(true).open(&p),
        libc::EPERM,
        "open for write",
    );
    assert_errno(
        OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_TRUNC)
            .open(&p),
        libc::EPERM,
        "open O_APPEND|O_TRUNC",
    );
    assert_errno(fs::remove_file(&p), libc::EPERM, "unlink");
    assert_errno(
        sys::utimensat(&p, Ts(1, 0), Ts(1, 0), false),
        libc::EPERM,
        "utimes",
    );
    let now = Ts(0, libc::UTIME_NOW);
    let touched = sys::utimensat(&p, now, now, false);
    // With the writeback cache the kernel sends a touch as explicit times,
    // which an append-only file refuses (a deviation the README lists).
    let writeback = m.kind == Impl::Ours
        && std::env::var("UNIONFS_TEST_OURS_OPTS").is_ok_and(|o| o.contains("writeback"));
    if writeback {
        assert_errno(touched, libc::EPERM, "touch with the writeback cache");
    } else {
        touched.expect("touch an append-only file");
    }
    assert_eq!(read(&p), "one\ntwo\n");
}

#[test]
fn an_immutable_dir_refuses_creates_and_removals_but_its_files_stay_writable() {
    let Some((fx, _disk)) = ext4_fixture() else {
        return;
    };
    fx.lower(0).file("d/f", b"x\n");
    let m = fx.mount();
    chattr(&m.p("d"), IMMUTABLE, 0);
    assert_errno(fs::write(m.p("d/new"), b""), libc::EPERM, "create in it");
    assert_errno(fs::create_dir(m.p("d/sub")), libc::EPERM, "mkdir in it");
    assert_errno(fs::remove_file(m.p("d/f")), libc::EPERM, "unlink in it");
    assert_errno(
        fs::rename(m.p("d/f"), m.p("g")),
        libc::EPERM,
        "rename out of it",
    );
    append_to(&m.p("d/f"), b"y\n").expect("a file in it stays writable");
    // EPERM comes before ENOTEMPTY, as the VFS checks the flags first.
    assert_errno(
        fs::remove_dir(m.p("d")),
        libc::EPERM,
        "rmdir of it, not empty",
    );
    assert_eq!(read(&m.p("d/f")), "x\ny\n");
}

#[test]
fn an_append_only_dir_takes_new_names_but_loses_none() {
    let Some((fx, _disk)) = ext4_fixture() else {
        return;
    };
    fx.lower(0).file("d/f", b"x\n");
    let m = fx.mount();
    chattr(&m.p("d"), APPEND, 0);
    write(&m.p("d/new"), b"n\n");
    assert_errno(fs::remove_file(m.p("d/new")), libc::EPERM, "unlink in it");
    assert_errno(
        fs::remove_file(m.p("d/f")),
        libc::EPERM,
        "unlink a lower name in it",
    );
    assert_errno(
        fs::rename(m.p("d/new"), m.p("g")),
        libc::EPERM,
        "rename out of it",
    );
    assert_eq!(protattr(&m.up("d")).as_deref(), Some(&b"a"[..]));
}

#[test]
fn a_copy_up_keeps_lower_flags_as_the_kernel_does() {
    let Some((fx, _disk)) = ext4_fixture() else {
        return;
    };
    fx.lower(0).file("f", b"x\n").file("d/g", b"y\n");
    // Flags set on the lower layer itself, before the mount.
    chattr(&fx.lower(0).path("f"), NOATIME | NODUMP, 0);
    chattr(&fx.lower(0).path("d"), APPEND, 0);
    let m = fx.mount();
    assert_eq!(get_flags(&m.p("f")).unwrap() & SHOWN, NOATIME | NODUMP);
    // A chmod copies it up: noatime is copied, nodump is not.
    fs::set_permissions(
        m.p("f"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    assert_eq!(get_flags(&m.up("f")).unwrap() & SHOWN, NOATIME);
    // A create in the lower append-only dir copies the dir up: its "a"
    // goes to protattr, not to the upper dir.
    write(&m.p("d/new"), b"n\n");
    assert_eq!(protattr(&m.up("d")).as_deref(), Some(&b"a"[..]));
    assert_eq!(get_flags(&m.up("d")).unwrap() & SHOWN, 0);
    assert_eq!(get_flags(&m.p("d")).unwrap() & SHOWN, APPEND);
    assert_errno(fs::remove_file(m.p("d/g")), libc::EPERM, "unlink in it");
    drop(m);
    chattr(&fx.lower(0).path("d"), 0, APPEND);
}

#[test]
fn protattr_written_by_one_implementation_is_honoured_by_the_other() {
    let Some((fx, _disk)) = ext4_fixture() else {
        return;
    };
    fx.lower(0).file("f", b"x\n").dir("d");
    let writer = fx.kind;
    {
        let m = fx.mount_with(writer);
        chattr(&m.p("f"), IMMUTABLE, 0);
        chattr(&m.p("d"), APPEND, 0);
    }
    let m = fx.mount_with(writer.other());
    assert_eq!(get_flags(&m.p("f")).unwrap() & SHOWN, IMMUTABLE);
    assert_eq!(get_flags(&m.p("d")).unwrap() & SHOWN, APPEND);
    assert_errno(append_to(&m.p("f"), b"y"), libc::EPERM, "append to f");
    write(&m.p("d/new"), b"n\n");
    assert_errno(fs::remove_file(m.p("d/new")), libc::EPERM, "unlink in d");
    chattr(&m.p("f"), 0, IMMUTABLE);
    assert_eq!(protattr(&m.up("f")), None);
}

#[test]
fn fssetxattr_keeps_immutable_in_protattr_and_nodump_on_the_upper() {
    let Some((fx, _disk)) = ext4_fixture() else {
        return;
    };
    fx.lower(0).file("f", b"x\n");
    let m = fx.mount();
    set_xflags(&m.p("f"), XFLAG_IMMUTABLE | XFLAG_NODUMP, 0);
    assert_eq!(protattr(&m.up("f")).as_deref(), Some(&b"i"[..]));
    assert_eq!(get_flags(&m.up("f")).unwrap() & SHOWN, NODUMP);
    assert_eq!(get_flags(&m.p("f")).unwrap() & SHOWN, NODUMP | IMMUTABLE);
    assert_errno(append_to(&m.p("f"), b"y"), libc::EPERM, "append");
    set_xflags(&m.p("f"), 0, XFLAG_IMMUTABLE | XFLAG_NODUMP);
    assert_eq!(protattr(&m.up("f")), None);
    assert_eq!(get_flags(&m.p("f")).unwrap() & SHOWN, 0);
}

/// Every change right after a chattr through the union sees the new flags
/// (the server caches them per inode): on a file and on a dir, before and
/// after the object is renamed, on a lower object whose flags come from its
/// lower inode until a chattr copies it up, through a second hard link, and
/// after a remount.
#[test]
fn a_flag_change_applies_to_the_very_next_change_across_renames_and_remounts() {
    let Some((fx, _disk)) = ext4_fixture() else {
        return;
    };
    fx.lower(0).file("lf", b"lower\n").file("ld/x", b"x\n");
    chattr(&fx.lower(0).path("lf"), APPEND, 0);
    chattr(&fx.lower(0).path("ld"), APPEND, 0);
    let mut m = fx.mount();
    let chmod =
        |p: &Path| fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o640));
    let write_open = |p: &Path| OpenOptions::new().write(true).open(p).map(drop);
    // A file and a dir, each used once before any flag is set.
    write(&m.p("f"), b"f\n");
    fs::create_dir(m.p("d")).expect("mkdir d");
    write(&m.p("d/a"), b"a\n");
    chmod(&m.p("f")).expect("chmod f");
    fs::remove_file(m.p("d/a")).expect("unlink d/a");
    write(&m.p("d/a"), b"a\n");

    let file_is_immutable = |p: &Path, what: &str| {
        assert_errno(
            write_open(p),
            libc::EPERM,
            &format!("open {what} for write"),
        );
        assert_errno(chmod(p), libc::EPERM, &format!("chmod {what}"));
        assert_errno(fs::remove_file(p), libc::EPERM, &format!("unlink {what}"));
    };
    let file_is_mutable = |p: &Path, what: &str| {
        write_open(p).unwrap_or_else(|e| panic!("open {what} for write: {e}"));
        chmod(p).unwrap_or_else(|e| panic!("chmod {what}: {e}"));
    };
    chattr(&m.p("f"), IMMUTABLE, 0);
    file_is_immutable(&m.p("f"), "f");
    chattr(&m.p("f"), 0, IMMUTABLE);
    file_is_mutable(&m.p("f"), "f");

    chattr(&m.p("d"), IMMUTABLE, 0);
    assert_errno(fs::write(m.p("d/b"), b""), libc::EPERM, "create in d");
    assert_errno(fs::remove_file(m.p("d/a")), libc::EPERM, "unlink in d");
    chattr(&m.p("d"), APPEND, IMMUTABLE);
    write(&m.p("d/b"), b"b\n");
    assert_errno(
        fs::remove_file(m.p("d/b")),
        libc::EPERM,
        "unlink in append-only d",
    );
    chattr(&m.p("d"), 0, APPEND);
    fs::remove_file(m.p("d/b")).expect("unlink in d once unflagged");

    // Renamed (the file into the dir, the dir under a new name): the flags
    // follow the object, and a change of them applies at once.
    fs::rename(m.p("f"), m.p("d/g")).expect("rename f");
    fs::rename(m.p("d"), m.p("e")).expect("rename d");
    file_is_mutable(&m.p("e/g"), "e/g");
    chattr(&m.p("e/g"), IMMUTABLE, 0);
    file_is_immutable(&m.p("e/g"), "e/g");
    chattr(&m.p("e"), IMMUTABLE, 0);
    assert_errno(fs::write(m.p("e/c"), b""), libc::EPERM, "create in e");
    chattr(&m.p("e"), 0, IMMUTABLE);
    write(&m.p("e/c"), b"c\n");

    // A second name of the same file shows the same flags.
    fs::hard_link(m.p("e/c"), m.p("e/c2")).expect("link");
    chattr(&m.p("e/c"), IMMUTABLE, 0);
    file_is_immutable(&m.p("e/c2"), "the second name");
    chattr(&m.p("e/c2"), 0, IMMUTABLE);
    file_is_mutable(&m.p("e/c"), "the first name");

    // Lower objects: flags of the lower inode, then protattr once copied up.
    assert_errno(fs::remove_file(m.p("lf")), libc::EPERM, "unlink lf");
    assert_errno(fs::remove_file(m.p("ld/x")), libc::EPERM, "unlink in ld");
    chattr(&m.p("lf"), 0, APPEND);
    chattr(&m.p("ld"), 0, APPEND);
    file_is_mutable(&m.p("lf"), "lf");
    fs::remove_file(m.p("ld/x")).expect("unlink in ld once copied up unflagged");

    // A remount reads them back; a change after it applies at once too.
    chattr(&m.p("e/g"), 0, IMMUTABLE);
    file_is_mutable(&m.p("e/g"), "e/g before the remount");
    chattr(&m.p("lf"), IMMUTABLE, 0);
    m.remount();
    file_is_immutable(&m.p("lf"), "lf after the remount");
    file_is_mutable(&m.p("e/g"), "e/g after the remount");
    chattr(&m.p("lf"), 0, IMMUTABLE);
    file_is_mutable(&m.p("lf"), "lf");
    fs::remove_file(m.p("lf")).expect("unlink lf");
    drop(m);
    chattr(&fx.lower(0).path("ld"), 0, APPEND);
    chattr(&fx.lower(0).path("lf"), 0, APPEND);
}
