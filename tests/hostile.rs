//! Hostile layers, hostile callers and bad input.
//!
//! * Hostile layers: symlinks in lowers that point outside (`/`, `/etc`,
//!   `../../..`, an absolute canary dir) on names the server walks through,
//!   lower dirs covered by a symlink in a higher layer, layers swapped for
//!   symlinks while mounted, a work dir that is (or holds) a symlink,
//!   255-byte names and 4095-byte symlink targets, paths deeper than
//!   PATH_MAX, names that look like OCI whiteouts, special files, 64 KiB
//!   xattrs and a sparse 100 GiB file. The server must act on the symlink
//!   semantics the kernel gives, never read or write outside the layer roots
//!   (a canary dir outside the layers is checked, and host `/etc` is never
//!   written), never follow a symlink inside a layer and never hang.
//! * Hostile callers: an unprivileged user (`setpriv --reuid=1000`) on an
//!   `allow_other` root mount tries what the kernel refuses; every answer and
//!   the resulting trees must be the kernel's.
//!
//! Differential scenarios run on our binary *and* on kernel overlayfs (same
//! layers, separate uppers) and compare transcripts (errno of every op),
//! merged trees, raw upper trees, and each upper as read by the other
//! implementation. With `UNIONFS_TEST_IMPL=kernel` only the kernel runs, which
//! validates the expectations written in the scenarios.

mod common;

use common::*;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const UID: u32 = 1000;
const GID: u32 = 1000;

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

fn res<T>(r: io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".to_string(),
        Err(e) => ename(&e),
    }
}

/// The errno a coreutils/attr error message stands for.
fn msg_errno(stderr: &str) -> &'static str {
    const MAP: &[(&str, &str)] = &[
        ("Permission denied", "EACCES"),
        ("Operation not permitted", "EPERM"),
        ("No such file or directory", "ENOENT"),
        ("File exists", "EEXIST"),
        ("Operation not supported", "EOPNOTSUPP"),
        ("No such attribute", "ENODATA"),
        ("No data available", "ENODATA"),
        ("Invalid argument", "EINVAL"),
        ("Input/output error", "EIO"),
        ("Transport endpoint", "ENOTCONN"),
        ("Directory not empty", "ENOTEMPTY"),
        ("Is a directory", "EISDIR"),
        ("Not a directory", "ENOTDIR"),
        ("Invalid cross-device link", "EXDEV"),
        ("Argument list too long", "E2BIG"),
        ("Read-only file system", "EROFS"),
    ];
    MAP.iter()
        .find(|(m, _)| stderr.contains(m))
        .map(|(_, e)| *e)
        .unwrap_or("FAILED")
}

/// Runs `f` in a thread and gives up after `limit` (the thread is left
/// behind: the caller then kills our daemon so that it returns).
fn with_timeout<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

/// One line per op: `op => result`; mismatches against the expectation
/// written in the scenario are collected, not panicked on, so one run shows
/// every difference.
#[derive(Default)]
struct Transcript {
    lines: Vec<String>,
    mismatches: Vec<String>,
}

impl Transcript {
    fn rec(&mut self, op: &str, got: impl Into<String>) {
        self.lines.push(format!("{op} => {}", got.into()));
    }

    /// Records `got` and checks it against `want` (`*` accepts anything).
    fn expect(&mut self, op: &str, got: impl Into<String>, want: &str) {
        let got = got.into();
        if want != "*" && got != want {
            self.mismatches
                .push(format!("{op}: expected {want}, got {got}"));
        }
        self.rec(op, got);
    }

    /// Runs `script` as uid/gid 1000 in `cwd`; records exit status, stdout
    /// and the errno its message stands for; checks that errno against
    /// `want` and the stdout against `want_out` (when given).
    fn sh(&mut self, cwd: &Path, op: &str, script: &str, want: &str, want_out: Option<&str>) {
        let out = run_as(UID, GID, cwd, script);
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let errno = if out.status.success() {
            "ok"
        } else {
            msg_errno(&stderr)
        };
        self.rec(
            op,
            format!(
                "{errno} exit={:?} out={stdout:?} err={stderr:?}",
                out.status.code()
            ),
        );
        if errno != want {
            self.mismatches.push(format!(
                "{op} (`{script}`): expected {want}, got {errno} ({stderr})"
            ));
        }
        if let Some(w) = want_out {
            if stdout != w {
                self.mismatches.push(format!(
                    "{op} (`{script}`): expected output {w:?}, got {stdout:?}"
                ));
            }
        }
    }
}

/// Raw upper tree: like a basic snapshot, keeping the overlay xattrs that
/// define the format (opaque, whiteout, redirect) but not `origin`/`impure`,
/// whose values depend on inode numbers and bookkeeping.
fn upper_tree(root: &Path) -> Tree {
    let mut t = snapshot(
        root,
        SnapOpts {
            overlay_xattrs: true,
            ..SnapOpts::basic()
        },
    );
    for n in t.0.values_mut() {
        n.xattrs.retain(|k, _| {
            !(k.ends_with("overlay.origin")
                || k.ends_with("overlay.impure")
                || k.ends_with("overlay.uuid"))
        });
    }
    t
}

/// Where a scenario's layers live.
struct Layout {
    lowers: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
    /// A fresh work dir for the cross-mount by the other implementation.
    work2: PathBuf,
    merged: PathBuf,
    _tmpfs: Option<Tmpfs>,
}

impl Layout {
    fn standard(fx: &Fixture) -> Layout {
        Layout {
            lowers: fx.lowers(),
            upper: fx.upper().root,
            work: fx.work(),
            work2: fx.dir("work2"),
            merged: fx.merged(),
            _tmpfs: None,
        }
    }
}

struct Scenario<'a> {
    /// Builds the layers (and anything else) in a fresh fixture.
    build: &'a dyn Fn(&Fixture) -> Layout,
    /// Extra `-o` for our binary (e.g. `oci_whiteouts=off`).
    ours_opts: Option<&'a str>,
    /// The operations, run as root in the test (or via `Transcript::sh`).
    ops: &'a dyn Fn(&Mounted, &mut Transcript),
    /// Drop paths (and below) from the tree comparisons.
    skip: &'a [&'a str],
}

struct RunResult {
    kind: Impl,
    lines: Vec<String>,
    merged: Tree,
    upper: Tree,
}

fn mount_layout(kind: Impl, lay: &Layout, work: &Path, ours_opts: Option<&str>) -> Mounted {
    match ours_opts {
        Some(o) => Mounted::mount_ours_opts(
            kind,
            &lay.lowers,
            Some(&lay.upper),
            Some(work),
            &lay.merged,
            o,
        ),
        None => Mounted::mount(kind, &lay.lowers, Some(&lay.upper), Some(work), &lay.merged),
    }
}

fn without(mut t: Tree, skip: &[&str]) -> Tree {
    for s in skip {
        t = t.without(s);
    }
    t
}

/// Runs a scenario on `kind`; problems (expectation mismatches, a
/// cross-mount that reads the upper differently) go to `problems`.
fn run_on(kind: Impl, sc: &Scenario<'_>, problems: &mut Vec<String>) -> Option<RunResult> {
    let fx = Fixture::for_impl(kind)?;
    let lay = (sc.build)(&fx);
    let mut m = mount_layout(kind, &lay, &lay.work, sc.ours_opts);
    let mut t = Transcript::default();
    (sc.ops)(&m, &mut t);
    let merged = without(snapshot(&m.p(""), SnapOpts::basic()), sc.skip);
    if kind == Impl::Ours && m.log().contains("panic") {
        problems.push(format!("ours: daemon log mentions a panic:\n{}", m.log()));
    }
    m.unmount();
    let upper = without(upper_tree(&lay.upper), sc.skip);
    // The other implementation must read this upper the same way.
    let other = mount_layout(kind.other(), &lay, &lay.work2, sc.ours_opts);
    let cross = without(snapshot(&other.p(""), SnapOpts::basic()), sc.skip);
    drop(other);
    let d = merged.diff(&cross);
    if !d.is_empty() {
        problems.push(format!(
            "{kind:?}: the upper it wrote reads differently through {:?} (left: {kind:?} live view, right: {:?} mount of the same upper):\n{d}",
            kind.other(),
            kind.other()
        ));
    }
    for mm in &t.mismatches {
        problems.push(format!("{kind:?}: {mm}"));
    }
    Some(RunResult {
        kind,
        lines: t.lines,
        merged,
        upper,
    })
}

/// Runs a scenario on ours and the kernel (kernel only under
/// `UNIONFS_TEST_IMPL=kernel`) and panics with every difference.
fn differential(sc: Scenario<'_>) {
    let kinds: &[Impl] = match impl_under_test() {
        Impl::Kernel => &[Impl::Kernel],
        Impl::Ours => &[Impl::Ours, Impl::Kernel],
    };
    let mut problems = Vec::new();
    let mut runs = Vec::new();
    for &k in kinds {
        match run_on(k, &sc, &mut problems) {
            Some(r) => runs.push(r),
            None => return,
        }
    }
    if let [ours, kernel] = &runs[..] {
        for (i, (a, b)) in ours.lines.iter().zip(&kernel.lines).enumerate() {
            if a != b {
                problems.push(format!(
                    "op #{i} differs:\n    ours:   {a}\n    kernel: {b}"
                ));
            }
        }
        if ours.lines.len() != kernel.lines.len() {
            problems.push("transcripts have different lengths".to_string());
        }
        let d = ours.merged.diff(&kernel.merged);
        if !d.is_empty() {
            problems.push(format!(
                "merged trees differ (left ours, right kernel):\n{d}"
            ));
        }
        let d = ours.upper.diff(&kernel.upper);
        if !d.is_empty() {
            problems.push(format!(
                "raw upper trees differ (left ours, right kernel):\n{d}"
            ));
        }
    }
    for r in &runs {
        eprintln!("--- transcript ({:?}) ---", r.kind);
        for l in &r.lines {
            eprintln!("  {l}");
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// A directory outside every layer whose contents, owners, modes, xattrs
/// and mtimes must never change.
struct Canary {
    dir: TempDir,
    before: Tree,
}

impl Canary {
    fn new() -> Canary {
        let dir = TempDir::new("canary");
        let l = Layer::new(dir.path().to_path_buf());
        l.file("f", b"CANARY-SECRET")
            .file("sub/file", b"CANARY-SECRET")
            .file("srv/hostname", b"CANARY-SECRET")
            .dir("sub/v");
        let before = snapshot(dir.path(), SnapOpts::with_times());
        Canary { dir, before }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    #[track_caller]
    fn assert_untouched(&self, what: &str) {
        let now = snapshot(self.dir.path(), SnapOpts::with_times());
        let d = self.before.diff(&now);
        assert!(
            d.is_empty(),
            "{what}: the canary dir outside the layers changed:\n{d}"
        );
    }
}

/// Fails if any regular file below `root` (not following symlinks)
/// contains the canary's secret.
#[track_caller]
fn assert_no_canary_data(root: &Path, what: &str) {
    for p in snapshot(root, SnapOpts::basic()).paths() {
        let full = root.join(&p);
        if lstat(&full).is_file() {
            let data = fs::read(&full).unwrap_or_default();
            assert!(
                !data.windows(13).any(|w| w == b"CANARY-SECRET"),
                "{what}: {p} holds data read from the canary outside the layers"
            );
        }
    }
}

/// openat2 of `rel` below `root` with RESOLVE_IN_ROOT (mode 0644 if it
/// creates).
fn openat2_in_root(root: BorrowedFd<'_>, rel: &str, flags: i32) -> io::Result<OwnedFd> {
    let mode = if flags & libc::O_CREAT != 0 { 0o644 } else { 0 };
    sys::openat2(root, Path::new(rel), flags, mode, libc::RESOLVE_IN_ROOT)
}

fn open_in_root(m: &Mounted, rel: &str, flags: i32) -> io::Result<OwnedFd> {
    let root = File::open(m.p("")).expect("open merged root");
    openat2_in_root(root.as_fd(), rel, flags)
}

/// Every entry of an open directory except `.` and `..` (getdents64 order).
fn entries(dir: BorrowedFd<'_>) -> io::Result<Vec<sys::Dirent>> {
    let mut all = Vec::new();
    loop {
        let chunk = sys::getdents64(dir, 8192)?;
        if chunk.is_empty() {
            return Ok(all);
        }
        all.extend(
            chunk
                .into_iter()
                .filter(|d| d.name != "." && d.name != ".."),
        );
    }
}

/// `ok [names]` (sorted) of an open directory, or the errno.
fn sorted_names(dir: BorrowedFd<'_>) -> String {
    match entries(dir) {
        Ok(v) => {
            let mut names: Vec<String> = v
                .into_iter()
                .map(|d| d.name.to_string_lossy().into_owned())
                .collect();
            names.sort();
            format!("ok {names:?}")
        }
        Err(e) => ename(&e),
    }
}

fn read_in_root(m: &Mounted, rel: &str) -> String {
    match open_in_root(m, rel, libc::O_RDONLY) {
        Ok(fd) => {
            let mut s = String::new();
            match File::from(fd).read_to_string(&mut s) {
                Ok(_) => format!("ok {s:?}"),
                Err(e) => ename(&e),
            }
        }
        Err(e) => ename(&e),
    }
}

fn names_in_root(m: &Mounted, rel: &str) -> String {
    match open_in_root(m, rel, libc::O_RDONLY | libc::O_DIRECTORY) {
        Ok(fd) => sorted_names(fd.as_fd()),
        Err(e) => ename(&e),
    }
}

fn ls_res(p: &Path) -> String {
    match fs::read_dir(p) {
        Ok(rd) => {
            let mut v: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            format!("ok {v:?}")
        }
        Err(e) => ename(&e),
    }
}

fn readlink_res(p: &Path) -> String {
    match fs::read_link(p) {
        Ok(t) => format!("ok {}", t.display()),
        Err(e) => ename(&e),
    }
}

fn kind_res(p: &Path) -> String {
    match fs::symlink_metadata(p) {
        Ok(md) => format!("ok mode={:o} uid={} size={}", md.mode(), md.uid(), {
            if md.is_dir() {
                0
            } else {
                md.len()
            }
        }),
        Err(e) => ename(&e),
    }
}

fn read_res(p: &Path) -> String {
    match fs::read(p) {
        Ok(d) => format!("ok {:?}", String::from_utf8_lossy(&d)),
        Err(e) => ename(&e),
    }
}

fn create_res(p: &Path, data: &[u8]) -> String {
    res(OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(p)
        .and_then(|mut f| f.write_all(data)))
}

fn append_res(p: &Path, data: &[u8]) -> String {
    res(OpenOptions::new()
        .append(true)
        .open(p)
        .and_then(|mut f| f.write_all(data)))
}

/// A unique name that must never appear in host `/etc`.
fn host_probe_name(tag: &str) -> String {
    format!("unionfs-hostile-{tag}-{}", std::process::id())
}

// ---------------------------------------------------------------------------
// Hostile layers
// ---------------------------------------------------------------------------

#[test]
fn symlinks_in_lowers_pointing_outside_keep_kernel_semantics() {
    let canary = Canary::new();
    let can = canary.path().to_path_buf();
    let new1 = host_probe_name("new1");
    let new2 = host_probe_name("new2");
    let build = |fx: &Fixture| {
        fx.lower(0)
            .symlink("d", "/etc")
            .symlink("loop", "/loop")
            .symlink("root", "/")
            .symlink("up", "../../..")
            .symlink("can", can.to_str().unwrap())
            .symlink("dd/esc", "../../../../../..");
        fx.lower(1)
            .file("can/f", b"lower1-can")
            .file("etc/hostname", b"union-etc")
            .file("dd/esc/x", b"lower1-esc");
        Layout::standard(fx)
    };
    let ops = |m: &Mounted, t: &mut Transcript| {
        for n in ["d", "loop", "root", "up", "can", "dd/esc"] {
            t.rec(&format!("readlink {n}"), readlink_res(&m.p(n)));
            t.rec(&format!("lstat {n}"), kind_res(&m.p(n)));
        }
        // Resolution as a process chrooted at the merged dir (a container)
        // sees it: d -> /etc is the union's /etc, never the host's.
        t.expect(
            "in-root read d/hostname",
            read_in_root(m, "d/hostname"),
            "ok \"union-etc\"",
        );
        t.expect(
            "in-root read up/etc/hostname",
            read_in_root(m, "up/etc/hostname"),
            "ok \"union-etc\"",
        );
        t.expect(
            "in-root read dd/esc/etc/hostname",
            read_in_root(m, "dd/esc/etc/hostname"),
            "ok \"union-etc\"",
        );
        t.expect(
            "in-root read dd/esc/x (hidden lower dir)",
            read_in_root(m, "dd/esc/x"),
            "ENOENT",
        );
        t.expect(
            "in-root read loop/x (loop -> /loop)",
            read_in_root(m, "loop/x"),
            "ELOOP",
        );
        t.expect(
            "in-root create d/new1",
            res(open_in_root(
                m,
                &format!("d/{new1}"),
                libc::O_CREAT | libc::O_WRONLY,
            )),
            "ok",
        );
        t.expect(
            "in-root create root/etc/new2",
            res(open_in_root(
                m,
                &format!("root/etc/{new2}"),
                libc::O_CREAT | libc::O_WRONLY,
            )),
            "ok",
        );
        t.expect(
            "in-root list d",
            names_in_root(m, "d"),
            &format!("ok {:?}", {
                let mut v = vec!["hostname".to_string(), new1.clone(), new2.clone()];
                v.sort();
                v
            }),
        );
        // Operations that do not follow the final symlink.
        t.expect("mkdir d", res(fs::create_dir(m.p("d"))), "EEXIST");
        t.expect(
            "create_new d",
            res(OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(m.p("d"))),
            "EEXIST",
        );
        t.expect(
            "open d O_NOFOLLOW",
            res(OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(m.p("d"))),
            "ELOOP",
        );
        t.expect(
            "mkfifo root",
            res(sys::mknod(&m.p("root"), libc::S_IFIFO | 0o644, 0, 0)),
            "EEXIST",
        );
        t.expect(
            "symlink over up",
            res(std::os::unix::fs::symlink("x", m.p("up"))),
            "EEXIST",
        );
        t.expect(
            "lchown can",
            res(std::os::unix::fs::lchown(m.p("can"), Some(UID), Some(GID))),
            "ok",
        );
        t.expect(
            "lsetxattr trusted on can",
            res(sys::lsetxattr(&m.p("can"), "trusted.hostile", b"1", 0)),
            "ok",
        );
        t.expect(
            "lutimes can",
            res(sys::utimensat(&m.p("can"), Ts(1, 0), Ts(2, 0), true)),
            "ok",
        );
        t.expect(
            "lchown d 0:0",
            res(std::os::unix::fs::lchown(m.p("d"), Some(0), Some(0))),
            "ok",
        );
        t.expect("rename d d2", res(fs::rename(m.p("d"), m.p("d2"))), "ok");
        t.expect("readlink d2", readlink_res(&m.p("d2")), "ok /etc");
        t.expect("lstat d", kind_res(&m.p("d")), "ENOENT");
        t.expect(
            "ls etc",
            ls_res(&m.p("etc")),
            &format!("ok {:?}", {
                let mut v = vec!["hostname".to_string(), new1.clone(), new2.clone()];
                v.sort();
                v
            }),
        );
        t.expect("unlink root", res(fs::remove_file(m.p("root"))), "ok");
        t.expect(
            "hard link up up2",
            res(fs::hard_link(m.p("up"), m.p("up2"))),
            "ok",
        );
        t.expect("readlink up2", readlink_res(&m.p("up2")), "ok ../../..");
        t.expect("lstat can", kind_res(&m.p("can")), "*");
    };
    differential(Scenario {
        build: &build,
        ours_opts: None,
        ops: &ops,
        skip: &[],
    });
    canary.assert_untouched("symlinks pointing outside");
    for n in [&new1, &new2] {
        assert!(
            !exists(&Path::new("/etc").join(n)),
            "a file was created on the host outside the union: {n}"
        );
    }
}

#[test]
fn lower_dir_covered_by_a_symlink_in_a_higher_layer() {
    let build = |fx: &Fixture| {
        fx.lower(1)
            .file("x/f", b"lower1-x")
            .file("x/sub/g", b"lower1-g");
        fx.lower(0)
            .symlink("x", "/t")
            .file("t/tf", b"lower0-t")
            .file("y/yf", b"lower0-y");
        fx.upper().symlink("y", "/t");
        Layout::standard(fx)
    };
    let ops = |m: &Mounted, t: &mut Transcript| {
        t.expect("ls /", ls_res(&m.p("")), "ok [\"t\", \"x\", \"y\"]");
        t.expect("readlink x", readlink_res(&m.p("x")), "ok /t");
        t.expect("readlink y", readlink_res(&m.p("y")), "ok /t");
        t.expect("in-root ls x", names_in_root(m, "x"), "ok [\"tf\"]");
        t.expect("in-root ls y", names_in_root(m, "y"), "ok [\"tf\"]");
        t.expect("in-root read x/f", read_in_root(m, "x/f"), "ENOENT");
        t.expect("in-root read x/sub/g", read_in_root(m, "x/sub/g"), "ENOENT");
        t.expect("in-root read y/yf", read_in_root(m, "y/yf"), "ENOENT");
        t.expect(
            "in-root create x/new",
            res(open_in_root(m, "x/new", libc::O_CREAT | libc::O_WRONLY)),
            "ok",
        );
        t.expect("ls t", ls_res(&m.p("t")), "ok [\"new\", \"tf\"]");
        t.expect("unlink x", res(fs::remove_file(m.p("x"))), "ok");
        t.expect("unlink y", res(fs::remove_file(m.p("y"))), "ok");
        t.expect("ls / after unlink", ls_res(&m.p("")), "ok [\"t\"]");
        t.expect("mkdir x", res(fs::create_dir(m.p("x"))), "ok");
        t.expect("mkdir y", res(fs::create_dir(m.p("y"))), "ok");
        t.expect("ls x", ls_res(&m.p("x")), "ok []");
        t.expect("ls y", ls_res(&m.p("y")), "ok []");
        t.expect(
            "rename t t2 (lower dir)",
            res(fs::rename(m.p("t"), m.p("t2"))),
            "EXDEV",
        );
    };
    differential(Scenario {
        build: &build,
        ours_opts: None,
        ops: &ops,
        skip: &[],
    });
}

/// Replacing layer dirs by symlinks while mounted is undefined behaviour for
/// overlayfs, but it must never make the server read or write outside the
/// layers, crash, or hang. The symlinks point at a canary *relative to the
/// layer* (`../../canary`), which from the merged dir leads nowhere.
#[test]
fn layers_swapped_for_symlinks_while_mounted_never_escape() {
    let kind = impl_under_test();
    let Some(fx) = Fixture::new() else { return };
    let canary = Layer::new(fx.root().join("canary"));
    canary
        .file("sub/file", b"CANARY-SECRET")
        .dir("sub/dnew")
        .file("f", b"CANARY-SECRET");
    let before = snapshot(&canary.root, SnapOpts::with_times());
    let lower = Layer::new(fx.root().join("layers/lower"));
    let upper = Layer::new(fx.root().join("layers/upper"));
    let work = fx.dir("layers/work");
    let merged = fx.dir("mnt/a/merged");
    lower
        .file("l/sub/file", b"lower-data")
        .file("l2/sub/file", b"lower2-data");
    upper.file("u/sub/file", b"upper-data");
    let m = Mounted::mount(
        kind,
        std::slice::from_ref(&lower.root),
        Some(&upper.root),
        Some(&work),
        &merged,
    );
    // Warm the caches: nodes for every dir on the way.
    assert_eq!(read(&m.p("l/sub/file")), "lower-data");
    assert_eq!(read(&m.p("u/sub/file")), "upper-data");
    assert_eq!(read(&m.p("l2/sub/file")), "lower2-data");
    // Swap the dirs for symlinks leading to the canary from inside the layer.
    fs::rename(lower.path("l"), lower.path("l.old")).unwrap();
    std::os::unix::fs::symlink("../../canary", lower.path("l")).unwrap();
    fs::rename(upper.path("u"), upper.path("u.old")).unwrap();
    std::os::unix::fs::symlink("../../canary", upper.path("u")).unwrap();
    fs::rename(lower.path("l2/sub"), lower.path("l2/sub.old")).unwrap();
    std::os::unix::fs::symlink("../../../canary/sub", lower.path("l2/sub")).unwrap();

    let mut t = Transcript::default();
    let pid = m.pid();
    let merged_root = m.p("");
    for round in ["cached", "after drop_caches"] {
        if round != "cached" {
            drop_caches();
        }
        let mr = merged_root.clone();
        let r = with_timeout(Duration::from_secs(20), move || {
            let mut lines = Vec::new();
            let root = File::open(&mr).expect("open merged");
            let at = |rel: &str, flags: i32| openat2_in_root(root.as_fd(), rel, flags);
            let append = |rel: &str| {
                res(at(rel, libc::O_WRONLY | libc::O_APPEND)
                    .and_then(|fd| File::from(fd).write_all(b"X")))
            };
            lines.push(format!("append l/sub/file: {}", append("l/sub/file")));
            lines.push(format!("append l2/sub/file: {}", append("l2/sub/file")));
            lines.push(format!("append u/sub/file: {}", append("u/sub/file")));
            for rel in ["l/sub/new", "u/sub/new", "l2/sub/new"] {
                lines.push(format!(
                    "create {rel}: {}",
                    res(at(rel, libc::O_CREAT | libc::O_WRONLY))
                ));
            }
            for rel in ["l/sub/dnew", "u/sub/dnew", "l2/sub/dnew"] {
                lines.push(format!(
                    "mkdir {rel}: {}",
                    res(fs::create_dir(mr.join(rel)))
                ));
            }
            for rel in ["l/sub", "u/sub", "l2/sub"] {
                lines.push(format!(
                    "chmod {rel}: {}",
                    res(fs::set_permissions(
                        mr.join(rel),
                        fs::Permissions::from_mode(0o700)
                    ))
                ));
                lines.push(format!(
                    "setxattr {rel}: {}",
                    res(sys::lsetxattr(&mr.join(rel), "user.hostile", b"1", 0))
                ));
            }
            for rel in ["l/sub/file", "u/sub/file", "l2/sub/file"] {
                lines.push(format!(
                    "unlink {rel}: {}",
                    res(fs::remove_file(mr.join(rel)))
                ));
            }
            lines.push(format!("ls l2/sub: {}", ls_res(&mr.join("l2/sub"))));
            lines
        });
        match r {
            Some(lines) => {
                for l in lines {
                    t.rec(round, l);
                }
            }
            None => {
                if let Some(pid) = pid {
                    let _ = sys::kill(pid, libc::SIGKILL);
                }
                panic!("{kind:?}: an operation on swapped layers hung for 20 s ({round})");
            }
        }
    }
    for l in &t.lines {
        eprintln!("  {l}");
    }
    // The server is still alive and serving.
    assert!(exists(&m.p("l2")), "{kind:?}: mount stopped answering");
    if kind == Impl::Ours {
        assert!(!m.log().contains("panic"), "daemon panicked:\n{}", m.log());
    }
    drop(m);
    let after = snapshot(&canary.root, SnapOpts::with_times());
    let d = before.diff(&after);
    assert!(
        d.is_empty(),
        "{kind:?}: the canary outside the layers changed:\n{d}"
    );
    assert_no_canary_data(&upper.root, &format!("{kind:?} upper"));
}

/// The work dir is the server's own scratch space: a symlink there (as
/// `work` itself or as debris inside it) must not lead the cleanup at mount
/// time out of the work dir.
#[test]
fn work_dir_symlinks_never_lead_cleanup_outside() {
    let kind = impl_under_test();
    let Some(fx) = Fixture::new() else { return };
    let canary = Canary::new();
    let can = canary.path().to_str().unwrap().to_string();
    fx.lower(0).file("f", b"lower");
    // Case 1: debris below work/work, including symlinks to the canary and
    // to a canary subdir, a dir holding such a symlink, and a hard link.
    let w = fx.work();
    fs::create_dir_all(w.join("work/#ufs1.0")).unwrap();
    fs::create_dir_all(w.join("work/#ufs1.2")).unwrap();
    std::os::unix::fs::symlink(&can, w.join("work/lnk")).unwrap();
    std::os::unix::fs::symlink(format!("{can}/sub"), w.join("work/#ufs1.0/esc")).unwrap();
    std::os::unix::fs::symlink(&can, w.join("work/#ufs1.2/esc")).unwrap();
    fs::write(w.join("work/#ufs1.1"), b"half copied").unwrap();
    let mut m = fx.mount();
    assert_eq!(read(&m.p("f")), "lower");
    write(&m.p("g"), b"new");
    m.unmount();
    canary.assert_untouched(&format!("{kind:?}: debris in work dir"));
    let left: Vec<String> = ls(&w.join("work"))
        .into_iter()
        .filter(|n| n.starts_with("#ufs") || n == "lnk")
        .collect();
    assert!(
        left.is_empty(),
        "{kind:?}: work-dir debris not cleaned at mount: {left:?}"
    );
    // Case 2: work/work itself is a symlink to the canary.
    let w2 = fx.dir("work-symlink");
    std::os::unix::fs::symlink(&can, w2.join("work")).unwrap();
    let outcome = match kind {
        Impl::Kernel => {
            let out = Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o"])
                .arg(format!(
                    "lowerdir={},upperdir={},workdir={}",
                    fx.lower(0).root.display(),
                    fx.upper().root.display(),
                    w2.display()
                ))
                .arg(fx.merged())
                .output()
                .unwrap();
            let ok = out.status.success();
            if ok {
                let _ = sys::umount2(&fx.merged(), 0);
            }
            format!(
                "mount ok={ok} {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
        }
        Impl::Ours => {
            let run = run_bounded(
                Command::new(BIN)
                    .arg(fx.lower(0).root)
                    .arg(fx.upper().root)
                    .arg(fx.merged())
                    .args(["-f", "-o", &format!("workdir={}", w2.display())]),
                Duration::from_secs(3),
            );
            match run.status {
                Some(st) => format!("exited {:?} {}", st.code(), run.stderr),
                None => "still running (mounted), killed".to_string(),
            }
        }
    };
    eprintln!("{kind:?} with work/work -> canary: {outcome}");
    for mp in mounts_below(fx.root()) {
        let _ = sys::umount2(&mp, libc::MNT_DETACH);
    }
    canary.assert_untouched(&format!("{kind:?}: work/work is a symlink"));
    if kind == Impl::Ours && outcome.contains("exited") {
        assert!(
            outcome.contains("work"),
            "refusal should name the work dir: {outcome}"
        );
    }
}

#[test]
fn names_of_255_bytes_and_symlink_targets_of_4095_bytes() {
    let n255 = "n".repeat(255);
    let m255 = "m".repeat(255);
    let d255 = "D".repeat(255);
    let f255 = "F".repeat(255);
    let s255 = "S".repeat(255);
    let n252 = "q".repeat(252); // ".wh." + name would exceed NAME_MAX
    let n256 = "z".repeat(256);
    let long_target = format!("{}/end", "t".repeat(4091)); // 4095 bytes
    let too_long_target = "u".repeat(4096);
    let build = |fx: &Fixture| {
        fx.lower(0)
            .file(&n255, b"lower-255")
            .file(&n252, b"lower-252")
            .file(&format!("{d255}/{f255}"), b"deep-255")
            .symlink(&s255, &long_target);
        Layout::standard(fx)
    };
    let ops = |m: &Mounted, t: &mut Transcript| {
        t.expect("read n255", read_res(&m.p(&n255)), "ok \"lower-255\"");
        t.expect("read n252", read_res(&m.p(&n252)), "ok \"lower-252\"");
        t.expect("append n255", append_res(&m.p(&n255), b"+"), "ok");
        t.expect("append n252", append_res(&m.p(&n252), b"+"), "ok");
        t.expect(
            "rename n255 m255",
            res(fs::rename(m.p(&n255), m.p(&m255))),
            "ok",
        );
        t.expect(
            "readlink s255",
            readlink_res(&m.p(&s255)),
            &format!("ok {long_target}"),
        );
        t.expect(
            "lchown s255 (copy-up of a 4095-byte target)",
            res(std::os::unix::fs::lchown(m.p(&s255), Some(UID), None)),
            "ok",
        );
        t.expect(
            "readlink s255 after copy-up",
            readlink_res(&m.p(&s255)),
            &format!("ok {long_target}"),
        );
        t.expect(
            "unlink d255/f255",
            res(fs::remove_file(m.p(&format!("{d255}/{f255}")))),
            "ok",
        );
        t.expect("rmdir d255", res(fs::remove_dir(m.p(&d255))), "ok");
        t.expect("mkdir d255", res(fs::create_dir(m.p(&d255))), "ok");
        t.expect("ls d255", ls_res(&m.p(&d255)), "ok []");
        t.expect(
            "create d255/f255",
            create_res(&m.p(&format!("{d255}/{f255}")), b"new"),
            "ok",
        );
        t.expect(
            "symlink 4095-byte target",
            res(std::os::unix::fs::symlink(&long_target, m.p("s2"))),
            "ok",
        );
        t.expect(
            "symlink 4096-byte target",
            res(std::os::unix::fs::symlink(&too_long_target, m.p("s3"))),
            "ENAMETOOLONG",
        );
        t.expect("create 256", create_res(&m.p(&n256), b""), "ENAMETOOLONG");
        t.expect("mkdir 256", res(fs::create_dir(m.p(&n256))), "ENAMETOOLONG");
        t.expect(
            "rename to 256",
            res(fs::rename(m.p(&n252), m.p(&n256))),
            "ENAMETOOLONG",
        );
        t.expect(
            "link to 256",
            res(fs::hard_link(m.p(&n252), m.p(&n256))),
            "ENAMETOOLONG",
        );
        t.expect("unlink n252", res(fs::remove_file(m.p(&n252))), "ok");
        t.expect(
            "ls /",
            ls_res(&m.p("")),
            &format!("ok {:?}", {
                let mut v = vec![d255.clone(), m255.clone(), s255.clone(), "s2".to_string()];
                v.sort();
                v
            }),
        );
    };
    differential(Scenario {
        build: &build,
        ours_opts: None,
        ops: &ops,
        skip: &[],
    });
}

/// Walks `depth` dirs named `name` below `root` through dir fds.
fn deep(root: &Path, name: &OsStr, depth: usize) -> io::Result<OwnedFd> {
    let mut fd: OwnedFd = File::open(root)?.into();
    for _ in 0..depth {
        fd = sys::openat(fd.as_fd(), name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    }
    Ok(fd)
}

fn build_deep(root: &Path, name: &OsStr, depth: usize) -> OwnedFd {
    let mut fd: OwnedFd = File::open(root).expect("open layer").into();
    for _ in 0..depth {
        match sys::mkdirat(fd.as_fd(), name, 0o755) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => panic!("mkdirat: {e}"),
        }
        fd = sys::openat(fd.as_fd(), name, libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
    }
    fd
}

fn dents(fd: &OwnedFd) -> String {
    match sys::openat(fd.as_fd(), OsStr::new("."), libc::O_RDONLY, 0) {
        Ok(dup) => sorted_names(dup.as_fd()),
        Err(e) => ename(&e),
    }
}

#[test]
fn paths_deeper_than_path_max_with_special_files_at_the_bottom() {
    const DEPTH: usize = 30; // 30 * 201 bytes: well past PATH_MAX
    let dname = "d".repeat(200);
    let name = OsStr::new(&dname);
    let build = |fx: &Fixture| {
        let bottom = build_deep(&fx.lower(0).root, name, DEPTH);
        let f = sys::openat(
            bottom.as_fd(),
            OsStr::new("f"),
            libc::O_CREAT | libc::O_WRONLY,
            0o644,
        )
        .unwrap();
        File::from(f).write_all(b"deep-lower").unwrap();
        let mid = deep(&fx.lower(0).root, name, DEPTH / 2).unwrap();
        let g = sys::openat(
            mid.as_fd(),
            OsStr::new("g"),
            libc::O_CREAT | libc::O_WRONLY,
            0o644,
        )
        .unwrap();
        drop(g);
        Layout::standard(fx)
    };
    let ops = |m: &Mounted, t: &mut Transcript| {
        let bottom = match deep(&m.p(""), name, DEPTH) {
            Ok(b) => b,
            Err(e) => {
                t.expect("walk to the bottom", ename(&e), "ok");
                return;
            }
        };
        t.expect("ls bottom", dents(&bottom), "ok [\"f\"]");
        t.expect(
            "append bottom/f (copies up 30 ancestors)",
            res(sys::openat(
                bottom.as_fd(),
                OsStr::new("f"),
                libc::O_WRONLY | libc::O_APPEND,
                0,
            )
            .and_then(|fd| File::from(fd).write_all(b"+"))),
            "ok",
        );
        t.expect(
            "read bottom/f",
            match sys::openat(bottom.as_fd(), OsStr::new("f"), libc::O_RDONLY, 0) {
                Ok(fd) => {
                    let mut s = String::new();
                    let _ = File::from(fd).read_to_string(&mut s);
                    format!("ok {s}")
                }
                Err(e) => ename(&e),
            },
            "ok deep-lower+",
        );
        t.expect(
            "mkdir bottom/new",
            res(sys::mkdirat(bottom.as_fd(), OsStr::new("new"), 0o755)),
            "ok",
        );
        t.expect(
            "create bottom/new2",
            res(sys::openat(
                bottom.as_fd(),
                OsStr::new("new2"),
                libc::O_CREAT | libc::O_WRONLY,
                0o600,
            )),
            "ok",
        );
        t.expect("ls bottom", dents(&bottom), "ok [\"f\", \"new\", \"new2\"]");
        drop(bottom);
        // Tear the chain down bottom-up: whiteouts at every lower level.
        for level in (0..DEPTH).rev() {
            let dir = match deep(&m.p(""), name, level + 1) {
                Ok(d) => d,
                Err(e) => {
                    t.expect(&format!("walk to level {level}"), ename(&e), "ok");
                    return;
                }
            };
            let mut names: Vec<_> = match entries(dir.as_fd()) {
                Ok(v) => v.into_iter().map(|d| (d.name, d.d_type)).collect(),
                Err(e) => {
                    t.expect(&format!("getdents level {level}"), ename(&e), "ok");
                    return;
                }
            };
            names.sort();
            for (n, ty) in names {
                let flags = if ty == libc::DT_DIR {
                    libc::AT_REMOVEDIR
                } else {
                    0
                };
                t.expect(
                    &format!(
                        "remove {} at level {level}",
                        n.to_string_lossy().chars().take(8).collect::<String>()
                    ),
                    res(sys::unlinkat(dir.as_fd(), &n, flags)),
                    "ok",
                );
            }
            drop(dir);
            let parent = deep(&m.p(""), name, level).unwrap();
            t.expect(
                &format!("rmdir level {level}"),
                res(sys::unlinkat(parent.as_fd(), name, libc::AT_REMOVEDIR)),
                "ok",
            );
        }
        t.expect("ls / at the end", ls_res(&m.p("")), "ok []");
    };
    differential(Scenario {
        build: &build,
        ours_opts: None,
        ops: &ops,
        skip: &[],
    });
}

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
    differential(Scenario {
        build: &build,
        ours_opts: None,
        ops: &ops,
        skip: &[],
    });
}

fn xattr_summary(r: io::Result<Vec<u8>>) -> String {
    match r {
        Ok(v) => {
            let distinct: std::collections::BTreeSet<u8> = v.iter().copied().collect();
            format!("ok len={} bytes={distinct:?}", v.len())
        }
        Err(e) => ename(&e),
    }
}

/// 64 KiB xattr values (XATTR_SIZE_MAX) and long xattr lists, on tmpfs
/// layers (ext4 without ea_inode cannot hold them).
#[test]
fn huge_xattrs_survive_lookup_copy_up_and_set() {
    let big = vec![b'A'; 65536];
    let bigt = vec![b'T'; 65536];
    let build = |fx: &Fixture| {
        let t = Tmpfs::mount(&fx.root().join("t"), "size=64m,mode=0755");
        let lower = Layer::new(t.0.join("lower"));
        lower
            .file("f", b"data")
            .xattr("f", "user.big", &big)
            .xattr("f", "trusted.big", &bigt)
            .dir("d")
            .xattr("d", "user.big", &big)
            .file("many", b"");
        for i in 0..200 {
            lower.xattr("many", &format!("user.{i:03}{}", "x".repeat(200)), b"v");
        }
        let upper = Layer::new(t.0.join("upper")).root;
        Layout {
            lowers: vec![lower.root],
            upper,
            work: t.0.join("work"),
            work2: {
                fs::create_dir_all(t.0.join("work2")).unwrap();
                fs::create_dir_all(t.0.join("work")).unwrap();
                t.0.join("work2")
            },
            merged: fx.merged(),
            _tmpfs: Some(t),
        }
    };
    let ops = |m: &Mounted, t: &mut Transcript| {
        let big = vec![b'B'; 65536];
        t.expect(
            "get user.big",
            xattr_summary(sys::lgetxattr(&m.p("f"), "user.big")),
            "ok len=65536 bytes={65}",
        );
        t.expect(
            "get trusted.big",
            xattr_summary(sys::lgetxattr(&m.p("f"), "trusted.big")),
            "ok len=65536 bytes={84}",
        );
        t.expect(
            "list many",
            match sys::llistxattr(&m.p("many")) {
                Ok(v) => format!("ok {}", v.len()),
                Err(e) => ename(&e),
            },
            "ok 200",
        );
        t.expect(
            "chmod f (copy-up with 64 KiB xattrs)",
            res(fs::set_permissions(
                m.p("f"),
                fs::Permissions::from_mode(0o600),
            )),
            "ok",
        );
        t.expect(
            "raw upper user.big",
            xattr_summary(sys::lgetxattr(&m.up("f"), "user.big")),
            "ok len=65536 bytes={65}",
        );
        t.expect(
            "raw upper trusted.big",
            xattr_summary(sys::lgetxattr(&m.up("f"), "trusted.big")),
            "ok len=65536 bytes={84}",
        );
        t.expect(
            "create d/g (copy-up of d)",
            create_res(&m.p("d/g"), b"g"),
            "ok",
        );
        t.expect(
            "raw upper d user.big",
            xattr_summary(sys::lgetxattr(&m.up("d"), "user.big")),
            "ok len=65536 bytes={65}",
        );
        t.expect(
            "set 64 KiB on new file",
            res(sys::lsetxattr(&m.p("d/g"), "user.big2", &big, 0)),
            "ok",
        );
        t.expect(
            "get it back",
            xattr_summary(sys::lgetxattr(&m.p("d/g"), "user.big2")),
            "ok len=65536 bytes={66}",
        );
        let mut too_big = big.clone();
        too_big.push(b'B');
        t.expect(
            "set 64 KiB + 1",
            res(sys::lsetxattr(&m.p("d/g"), "user.big3", &too_big, 0)),
            "E2BIG",
        );
        t.expect(
            "name of 256 bytes",
            res(sys::lsetxattr(
                &m.p("d/g"),
                &format!("user.{}", "n".repeat(251)),
                b"v",
                0,
            )),
            "ERANGE",
        );
        t.expect(
            "chmod many (copy-up with 200 xattrs)",
            res(fs::set_permissions(
                m.p("many"),
                fs::Permissions::from_mode(0o600),
            )),
            "ok",
        );
        t.expect(
            "list many after copy-up",
            match sys::llistxattr(&m.p("many")) {
                Ok(v) => format!("ok {}", v.len()),
                Err(e) => ename(&e),
            },
            "ok 200",
        );
    };
    differential(Scenario {
        build: &build,
        ours_opts: None,
        ops: &ops,
        skip: &[],
    });
}

#[test]
fn sparse_100_gib_file_copies_up_sparse_and_quickly() {
    let Some(fx) = Fixture::new() else { return };
    const GIB: u64 = 1 << 30;
    let size = 100 * GIB;
    fx.lower(0).sparse(
        "huge",
        size,
        &[(0, b"head"), (50 * GIB, b"middle"), (size - 4096, b"tail")],
    );
    let m = fx.mount();
    let start = Instant::now();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("huge"))
        .expect("open 100 GiB file for writing (copy-up)");
    let took = start.elapsed();
    f.write_all_at(b"HEAD", 0).unwrap();
    let mut buf = [0u8; 6];
    f.read_exact_at(&mut buf, 50 * GIB).unwrap();
    assert_eq!(&buf, b"middle");
    f.read_exact_at(&mut buf[..4], size - 4096).unwrap();
    assert_eq!(&buf[..4], b"tail");
    f.read_exact_at(&mut buf[..4], 0).unwrap();
    assert_eq!(&buf[..4], b"HEAD");
    let mut zero = [1u8; 4096];
    f.read_exact_at(&mut zero, 20 * GIB).unwrap();
    assert!(zero.iter().all(|b| *b == 0), "hole reads back non-zero");
    drop(f);
    let up = lstat(&m.up("huge"));
    eprintln!(
        "{:?}: copy-up of a 100 GiB sparse file took {took:?}, upper uses {} KiB",
        fx.kind,
        up.blocks() / 2
    );
    assert_eq!(up.len(), size);
    assert!(
        up.blocks() * 512 <= 64 << 20,
        "copy-up filled holes: upper uses {} bytes",
        up.blocks() * 512
    );
    assert!(
        took < Duration::from_secs(30),
        "copy-up of a sparse file took {took:?}"
    );
}

// ---------------------------------------------------------------------------
// Hostile callers
// ---------------------------------------------------------------------------

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
    differential(Scenario {
        build: &build,
        ours_opts: None,
        ops: &ops,
        skip: &[],
    });
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
    differential(Scenario {
        build: &build,
        ours_opts: None,
        ops: &ops,
        skip: &[],
    });
}
