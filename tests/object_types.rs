//! Non-regular objects through the union: fifos, sockets, char/block devices
//! and symlinks (dangling too) are created in the upper with the right type,
//! are visible from lowers, and copy up like regular files.

mod common;

use common::*;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};

#[test]
fn mkfifo_creates_fifo_in_upper() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).dir("d");
    let m = fx.mount();
    sys::mknod(&m.p("d/p"), libc::S_IFIFO | 0o640, 0, 0).expect("mkfifo");
    assert!(lstat(&m.p("d/p")).file_type().is_fifo());
    let md = lstat(&m.up("d/p"));
    assert!(md.file_type().is_fifo());
    assert_eq!(md.mode() & 0o777, 0o640);
    // Data passes through the fifo opened via the union.
    let mut r = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(m.p("d/p"))
        .expect("open fifo for read");
    let mut w = OpenOptions::new()
        .write(true)
        .open(m.p("d/p"))
        .expect("open fifo for write");
    w.write_all(b"through the fifo").unwrap();
    drop(w);
    let mut s = String::new();
    r.read_to_string(&mut s).unwrap();
    assert_eq!(s, "through the fifo");
}

#[test]
fn lower_fifo_is_visible_and_chmod_copies_it_up() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).fifo("p").chown("p", 4, 5);
    let m = fx.mount();
    assert!(lstat(&m.p("p")).file_type().is_fifo());
    fs::set_permissions(m.p("p"), fs::Permissions::from_mode(0o600)).expect("chmod fifo");
    let md = lstat(&m.up("p"));
    assert!(
        md.file_type().is_fifo(),
        "copied-up fifo has the wrong type"
    );
    assert_eq!((md.mode() & 0o7777, md.uid(), md.gid()), (0o600, 4, 5));
    assert_eq!(lstat(&m.p("p")).mode() & 0o7777, 0o600);
}

#[test]
fn socket_bind_creates_socket_in_upper() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).dir("run");
    let m = fx.mount();
    let listener = UnixListener::bind(m.p("run/sock")).expect("bind in union");
    assert!(lstat(&m.p("run/sock")).file_type().is_socket());
    assert!(lstat(&m.up("run/sock")).file_type().is_socket());
    let mut c = UnixStream::connect(m.p("run/sock")).expect("connect via union path");
    let (mut s, _) = listener.accept().expect("accept");
    c.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    drop((c, s, listener));
    fs::remove_file(m.p("run/sock")).expect("unlink socket");
    assert_eq!(ls(&m.up("run")), Vec::<String>::new());
}

#[test]
fn lower_socket_chmod_copies_it_up() {
    let Some(fx) = Fixture::new() else { return };
    let l = fx.lower(0);
    l.dir("run");
    drop(UnixListener::bind(l.path("run/sock")).expect("bind in lower"));
    let m = fx.mount();
    assert!(lstat(&m.p("run/sock")).file_type().is_socket());
    fs::set_permissions(m.p("run/sock"), fs::Permissions::from_mode(0o700)).expect("chmod");
    let md = lstat(&m.up("run/sock"));
    assert!(md.file_type().is_socket());
    assert_eq!(md.mode() & 0o7777, 0o700);
}

#[test]
fn mknod_char_and_block_devices() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).dir("dev");
    let m = fx.mount();
    sys::mknod(&m.p("dev/null"), libc::S_IFCHR | 0o666, 1, 3).expect("mknod c 1 3");
    sys::mknod(&m.p("dev/loop0"), libc::S_IFBLK | 0o660, 7, 0).expect("mknod b 7 0");
    for base in [m.p(""), m.up("")] {
        let c = lstat(&base.join("dev/null"));
        assert!(c.file_type().is_char_device());
        assert_eq!((libc::major(c.rdev()), libc::minor(c.rdev())), (1, 3));
        let b = lstat(&base.join("dev/loop0"));
        assert!(b.file_type().is_block_device());
        assert_eq!((libc::major(b.rdev()), libc::minor(b.rdev())), (7, 0));
    }
    // The mount allows device nodes (`dev`): writing to the null device works.
    let mut f = OpenOptions::new()
        .write(true)
        .open(m.p("dev/null"))
        .expect("open char device through the union");
    f.write_all(b"discarded").unwrap();
    assert_eq!(lstat(&m.up("dev/null")).len(), 0);
}

#[test]
fn lower_device_nodes_keep_rdev_and_copy_up_on_chown() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0)
        .chardev("dev/zero", 1, 5)
        .blockdev("dev/sda", 8, 0);
    let m = fx.mount();
    let z = lstat(&m.p("dev/zero"));
    assert!(z.file_type().is_char_device());
    assert_eq!((libc::major(z.rdev()), libc::minor(z.rdev())), (1, 5));
    let mut buf = [1u8; 8];
    fs::File::open(m.p("dev/zero"))
        .expect("open lower char device")
        .read_exact(&mut buf)
        .unwrap();
    assert_eq!(buf, [0u8; 8]);
    std::os::unix::fs::chown(m.p("dev/sda"), Some(0), Some(6)).expect("chown block dev");
    let b = lstat(&m.up("dev/sda"));
    assert!(b.file_type().is_block_device());
    assert_eq!(
        (libc::major(b.rdev()), libc::minor(b.rdev()), b.gid()),
        (8, 0, 6)
    );
    assert!(!exists(&m.up("dev/zero")));
}

#[test]
fn symlinks_including_dangling_ones() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0)
        .file("d/target", b"t")
        .symlink("d/rel", "target")
        .symlink("d/abs", "/nonexistent/path")
        .symlink("d/todir", ".");
    let m = fx.mount();
    assert_eq!(read(&m.p("d/rel")), "t");
    assert_eq!(
        fs::read_link(m.p("d/abs")).unwrap().to_str(),
        Some("/nonexistent/path")
    );
    assert_errno(fs::metadata(m.p("d/abs")), libc::ENOENT, "stat dangling");
    assert_eq!(ls(&m.p("d/todir")), ["abs", "rel", "target", "todir"]);
    std::os::unix::fs::symlink("../missing", m.p("d/new_dangling")).expect("symlink");
    std::os::unix::fs::symlink("target", m.p("d/new_rel")).expect("symlink");
    let long_target = "x/".repeat(1000) + "end";
    std::os::unix::fs::symlink(&long_target, m.p("d/long")).expect("long symlink");
    assert_eq!(read(&m.p("d/new_rel")), "t");
    for base in [m.p(""), m.up("")] {
        assert!(lstat(&base.join("d/new_dangling")).file_type().is_symlink());
        assert_eq!(
            fs::read_link(base.join("d/new_dangling")).unwrap().to_str(),
            Some("../missing")
        );
        assert_eq!(
            fs::read_link(base.join("d/long")).unwrap().to_str(),
            Some(long_target.as_str())
        );
    }
    assert_eq!(ls(&m.up("d")), ["long", "new_dangling", "new_rel"]);
    // Writing through a symlink copies up the target, not the link.
    append(&m.p("d/rel"), b"+");
    assert!(lstat(&m.up("d/target")).is_file());
    assert!(!exists(&m.up("d/rel")));
    assert_eq!(read(&m.p("d/target")), "t+");
}
