//! The ours-vs-kernel scenario runner: a scenario builds layers and runs
//! ops on our binary *and* on kernel overlayfs (same layers, separate
//! uppers), and the runs' transcripts (the result or errno of every op),
//! merged trees, raw upper trees, and each upper as read by the other
//! implementation must match. With `UNIONFS_TEST_IMPL=kernel` only the
//! kernel runs, which validates the expectations written in the scenarios.
//! Also the `*_res` formatters that turn an op's outcome into a transcript
//! line.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::errno::ename;
use super::fixture::{impl_under_test, Fixture, Impl};
use super::mount::{Mounted, Tmpfs};
use super::process::run_as;
use super::tree::{snapshot, SnapOpts, Tree};

pub const UID: u32 = 1000;
pub const GID: u32 = 1000;

pub fn res<T>(r: io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".to_string(),
        Err(e) => ename(&e),
    }
}

/// The errno a coreutils/attr error message stands for.
pub fn msg_errno(stderr: &str) -> &'static str {
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

/// One line per op: `op => result`; mismatches against the expectation
/// written in the scenario are collected, not panicked on, so one run shows
/// every difference.
#[derive(Default)]
pub struct Transcript {
    pub lines: Vec<String>,
    pub mismatches: Vec<String>,
}

impl Transcript {
    pub fn rec(&mut self, op: &str, got: impl Into<String>) {
        self.lines.push(format!("{op} => {}", got.into()));
    }

    /// Records `got` and checks it against `want` (`*` accepts anything).
    pub fn expect(&mut self, op: &str, got: impl Into<String>, want: &str) {
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
    pub fn sh(&mut self, cwd: &Path, op: &str, script: &str, want: &str, want_out: Option<&str>) {
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
pub fn upper_tree(root: &Path) -> Tree {
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
pub struct Layout {
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// A fresh work dir for the cross-mount by the other implementation.
    pub work2: PathBuf,
    pub merged: PathBuf,
    pub _tmpfs: Option<Tmpfs>,
}

impl Layout {
    pub fn standard(fx: &Fixture) -> Layout {
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

pub struct Scenario<'a> {
    /// Builds the layers (and anything else) in a fresh fixture.
    pub build: &'a dyn Fn(&Fixture) -> Layout,
    /// Extra `-o` for our binary (e.g. `oci_whiteouts=off`).
    pub ours_opts: Option<&'a str>,
    /// The operations, run as root in the test (or via `Transcript::sh`).
    pub ops: &'a dyn Fn(&Mounted, &mut Transcript),
    /// Drop paths (and below) from the tree comparisons.
    pub skip: &'a [&'a str],
}

pub struct RunResult {
    pub kind: Impl,
    pub lines: Vec<String>,
    pub merged: Tree,
    pub upper: Tree,
}

pub fn mount_layout(kind: Impl, lay: &Layout, work: &Path, ours_opts: Option<&str>) -> Mounted {
    Mounted::mount_extra(
        kind,
        &lay.lowers,
        Some(&lay.upper),
        Some(work),
        &lay.merged,
        None,
        ours_opts,
    )
}

pub fn without(mut t: Tree, skip: &[&str]) -> Tree {
    for s in skip {
        t = t.without(s);
    }
    t
}

/// Runs a scenario on `kind`; problems (expectation mismatches, a
/// cross-mount that reads the upper differently) go to `problems`.
pub fn run_on(kind: Impl, sc: &Scenario<'_>, problems: &mut Vec<String>) -> Option<RunResult> {
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
pub fn differential(sc: Scenario<'_>) {
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

/// [`differential`] with no extra options and nothing skipped.
pub fn differential_of(
    build: &dyn Fn(&Fixture) -> Layout,
    ops: &dyn Fn(&Mounted, &mut Transcript),
) {
    differential(Scenario {
        build,
        ours_opts: None,
        ops,
        skip: &[],
    });
}

pub fn ls_res(p: &Path) -> String {
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

pub fn readlink_res(p: &Path) -> String {
    match fs::read_link(p) {
        Ok(t) => format!("ok {}", t.display()),
        Err(e) => ename(&e),
    }
}

pub fn kind_res(p: &Path) -> String {
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

pub fn read_res(p: &Path) -> String {
    match fs::read(p) {
        Ok(d) => format!("ok {:?}", String::from_utf8_lossy(&d)),
        Err(e) => ename(&e),
    }
}

pub fn create_res(p: &Path, data: &[u8]) -> String {
    res(OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(p)
        .and_then(|mut f| f.write_all(data)))
}

pub fn append_res(p: &Path, data: &[u8]) -> String {
    res(OpenOptions::new()
        .append(true)
        .open(p)
        .and_then(|mut f| f.write_all(data)))
}
