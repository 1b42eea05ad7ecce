//! Names that look like OCI whiteouts (with OCI whiteouts off, and created
//! by a caller with them on), and special files that copy-up must not open.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::time::Duration;

use crate::common::*;
use crate::support::*;

#[test]
fn whiteout_lookalike_names_are_plain_files_with_oci_whiteouts_off() {
    let build = |fx: &Fixture| {
        fx.lower(1)
            .file("foo", b"lower1-foo")
            .file("d/g", b"lower1-g")
            .file("e/h", b"lower1-h");
        fx.lower(0)
            .file(".wh.foo", b"wh-file")
            .file("d/.wh..wh..opq", b"")
            .file(".wh.e", b"")
            .file(".wh.", b"bare");
        Layout::standard(fx)
    };
    let ops = |m: &Mounted, t: &mut Transcript| {
        t.expect(
            "ls /",
            ls_res(&m.p("")),
            "ok [\".wh.\", \".wh.e\", \".wh.foo\", \"d\", \"e\", \"foo\"]",
        );
        t.expect("ls d", ls_res(&m.p("d")), "ok [\".wh..wh..opq\", \"g\"]");
        t.expect("ls e", ls_res(&m.p("e")), "ok [\"h\"]");
        t.expect("read .wh.foo", read_res(&m.p(".wh.foo")), "ok \"wh-file\"");
        t.expect("read foo", read_res(&m.p("foo")), "ok \"lower1-foo\"");
        t.expect("unlink .wh.foo", res(fs::remove_file(m.p(".wh.foo"))), "ok");
        t.expect("create .wh.bar", create_res(&m.p(".wh.bar"), b"bar"), "ok");
        t.expect(
            "rename foo .wh.baz",
            res(fs::rename(m.p("foo"), m.p(".wh.baz"))),
            "ok",
        );
        t.expect("mkdir .wh.dir", res(fs::create_dir(m.p(".wh.dir"))), "ok");
        t.expect("create d/.wh.x", create_res(&m.p("d/.wh.x"), b"x"), "ok");
        t.expect(
            "unlink d/.wh..wh..opq",
            res(fs::remove_file(m.p("d/.wh..wh..opq"))),
            "ok",
        );
        t.expect(
            "setxattr .wh.e",
            res(sys::lsetxattr(&m.p(".wh.e"), "user.x", b"1", 0)),
            "ok",
        );
        t.expect(
            "ls / after",
            ls_res(&m.p("")),
            "ok [\".wh.\", \".wh.bar\", \".wh.baz\", \".wh.dir\", \".wh.e\", \"d\", \"e\"]",
        );
        t.expect("ls d after", ls_res(&m.p("d")), "ok [\".wh.x\", \"g\"]");
    };
    differential(Scenario {
        build: &build,
        ours_opts: Some("oci_whiteouts=off"),
        ops: &ops,
        skip: &[],
    });
}

/// With OCI whiteouts honoured (our default), a caller who creates
/// `.wh.NAME` objects through the mount must not leave anything in the
/// upper that the merged view does not show (the kernel, which ignores OCI
/// names, would show it), and must not hide NAME.
#[test]
fn caller_created_whiteout_names_leave_no_hidden_debris_with_oci_on() {
    if only_for_ours() {
        return;
    }
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("x", b"lower-x").file("d/y", b"lower-y");
    let mut m = fx.mount();
    let mut t = Transcript::default();
    t.rec("create .wh.x", create_res(&m.p(".wh.x"), b"hi"));
    t.rec("mkdir .wh.dd", res(fs::create_dir(m.p(".wh.dd"))));
    t.rec(
        "symlink .wh.s",
        res(std::os::unix::fs::symlink("x", m.p(".wh.s"))),
    );
    t.rec(
        "mkfifo .wh.p",
        res(sys::mknod(&m.p(".wh.p"), libc::S_IFIFO | 0o644, 0, 0)),
    );
    t.rec("link x .wh.l", res(fs::hard_link(m.p("x"), m.p(".wh.l"))));
    t.rec(
        "create d/.wh..wh..opq",
        create_res(&m.p("d/.wh..wh..opq"), b""),
    );
    t.rec("read x", read_res(&m.p("x")));
    t.rec("ls d", ls_res(&m.p("d")));
    for l in &t.lines {
        eprintln!("  {l}");
    }
    let live = snapshot(&m.p(""), SnapOpts::basic());
    assert_eq!(read(&m.p("x")), "lower-x", "x was hidden");
    assert_eq!(ls(&m.p("d")), ["y"], "d/y was hidden");
    m.unmount();
    let raw: Vec<String> = snapshot(&m.up(""), SnapOpts::basic())
        .paths()
        .into_iter()
        .filter(|p| p.contains(".wh."))
        .collect();
    let k = Mounted::mount(
        Impl::Kernel,
        &fx.lowers(),
        Some(&fx.upper().root),
        Some(&fx.dir("kwork")),
        &fx.merged(),
    );
    let kernel_view = snapshot(&k.p(""), SnapOpts::basic());
    drop(k);
    let d = live.diff(&kernel_view);
    assert!(
        d.is_empty(),
        "the upper holds objects our merged view hides (raw upper .wh. entries: {raw:?}); \
         left ours, right kernel reading the same upper:\n{d}"
    );
}

#[test]
fn special_files_are_copied_up_without_being_opened() {
    let build = |fx: &Fixture| {
        fx.lower(0)
            .fifo("p")
            .chardev("c", 1, 3)
            .blockdev("b", 7, 250)
            .fifo("p2");
        let s = fx.lower(0).path("s");
        drop(std::os::unix::net::UnixListener::bind(&s).expect("bind socket"));
        Layout::standard(fx)
    };
    let ops = |m: &Mounted, t: &mut Transcript| {
        let pid = m.pid();
        let mr = m.p("");
        let r = with_timeout(Duration::from_secs(20), move || {
            let mut t = Transcript::default();
            let p = |n: &str| mr.join(n);
            for n in ["p", "c", "b", "s", "p2"] {
                t.rec(&format!("lstat {n}"), kind_res(&p(n)));
            }
            t.expect(
                "chmod p (copy-up of a fifo)",
                res(fs::set_permissions(
                    p("p"),
                    fs::Permissions::from_mode(0o600),
                )),
                "ok",
            );
            t.expect(
                "chown c",
                res(std::os::unix::fs::lchown(p("c"), Some(UID), Some(GID))),
                "ok",
            );
            t.expect(
                "trusted xattr on b",
                res(sys::lsetxattr(&p("b"), "trusted.t", b"1", 0)),
                "ok",
            );
            t.expect(
                "lutimes s",
                res(sys::utimensat(&p("s"), Ts(5, 0), Ts(6, 0), true)),
                "ok",
            );
            t.expect(
                "user xattr on fifo",
                res(sys::lsetxattr(&p("p2"), "user.x", b"1", 0)),
                "EPERM",
            );
            t.expect(
                "get user xattr on fifo",
                res(sys::lgetxattr(&p("p2"), "user.x")),
                "ENODATA",
            );
            t.expect(
                "open fifo O_RDONLY|O_NONBLOCK",
                res(OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(p("p"))),
                "ok",
            );
            t.expect(
                "open fifo O_WRONLY|O_NONBLOCK without reader",
                res(OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(p("p2"))),
                "ENXIO",
            );
            t.expect(
                "read char dev 1:3",
                match File::open(p("c")) {
                    Ok(mut f) => {
                        let mut v = Vec::new();
                        res(f.read_to_end(&mut v)).replace("ok", &format!("ok {}", v.len()))
                    }
                    Err(e) => ename(&e),
                },
                "ok 0",
            );
            t.expect(
                "write char dev 1:3",
                res(OpenOptions::new()
                    .write(true)
                    .open(p("c"))
                    .and_then(|mut f| f.write_all(b"abc"))),
                "ok",
            );
            t.expect("open block dev 7:250", res(File::open(p("b"))), "*");
            t.expect("rename p", res(fs::rename(p("p"), p("p.moved"))), "ok");
            t.expect("link c c2", res(fs::hard_link(p("c"), p("c2"))), "ok");
            t.expect("unlink s", res(fs::remove_file(p("s"))), "ok");
            t.expect(
                "mknod c 1 5",
                res(sys::mknod(&p("zero"), libc::S_IFCHR | 0o640, 1, 5)),
                "ok",
            );
            t.expect(
                "mknod b 7 251",
                res(sys::mknod(&p("blk"), libc::S_IFBLK | 0o600, 7, 251)),
                "ok",
            );
            t.expect(
                "mkfifo",
                res(sys::mknod(&p("fifo2"), libc::S_IFIFO | 0o600, 0, 0)),
                "ok",
            );
            for n in ["p.moved", "c", "c2", "b", "zero", "blk", "p2"] {
                t.rec(&format!("lstat {n}"), kind_res(&p(n)));
            }
            t
        });
        match r {
            Some(inner) => {
                t.lines.extend(inner.lines);
                t.mismatches.extend(inner.mismatches);
            }
            None => {
                if let Some(pid) = pid {
                    let _ = sys::kill(pid, libc::SIGKILL);
                }
                panic!("an operation on special files hung for 20 s");
            }
        }
    };
    differential_of(&build, &ops);
}
