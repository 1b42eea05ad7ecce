//! Differential tests against kernel overlayfs (overlay-semantics.md 3.8).
//!
//! The same op sequences run on kernel overlayfs (`index=on`) and on
//! unionfs-fuse (`oci_whiteouts=off`), over the same three fresh lower layers
//! (differential/fixture.rs) with separate uppers and workdirs, one mount of
//! each per case. Compared (differential/engine.rs):
//!
//! 1. every op's result, value or errno (differential/ops.rs); the first
//!    differing result ends the case;
//! 2. the final merged trees: names, types, mode, owner, size, content,
//!    symlink targets, rdev, nlink (also of dirs), all xattrs, and mtimes
//!    that the fixture or an explicit utimens set (differential/snap.rs);
//! 3. the raw upper dirs, normalised (the kernel's shared whiteout inode,
//!    `origin`/`impure`/`uuid` xattrs, link counts, and ours linking every
//!    name of a copied-up lower hard link where the kernel uses its index);
//! 4. remounts: ours over its own upper, the kernel over ours' upper, ours
//!    over the kernel's upper (each with the writer's workdir) must show the
//!    view the upper was written under; the lowers must stay unmodified.
//!
//! Not compared (deliberate deviations): st_dev, st_ino, d_ino, atime,
//! ctime, dir mtimes unless both sides report one set by utimens, the
//! kernel's workdir.
//!
//! Tests named `selfcheck_*` check the harness itself and must always pass
//! (kernel vs kernel never diverges, generation is deterministic, the
//! minimiser minimises, a known difference is detected, the fixture's
//! features are in effect). Tests named `campaign_*` are the differential
//! runs proper: they fail when unionfs-fuse diverges from the kernel and
//! print, for each distinct divergence class, the seed, a minimised op list
//! with both sides' results, the fixture entries involved and the differing
//! entries.
//!
//! Environment (campaign_random):
//! * `UNIONFS_DIFF_SEED=S`: run only seed S, verbosely, and minimise.
//! * `UNIONFS_DIFF_CASES=N` (default 240), `UNIONFS_DIFF_SEED_BASE=B`
//!   (default 1): run seeds B..B+N, with progress lines and a summary.
//! * `UNIONFS_DIFF_OPS` (ops per case, default 60; a seed's ops depend on
//!   it), `UNIONFS_DIFF_JOBS` (parallel cases, default 2),
//!   `UNIONFS_DIFF_SHRINK_CLASSES` (classes minimised, default 12),
//!   `UNIONFS_DIFF_SHRINK_TRIALS` (default 300), `UNIONFS_DIFF_REPORT=FILE`
//!   (also write the summary there), `UNIONFS_DIFF_VERBOSE=1` (every op of
//!   every case), `UNIONFS_DIFF_STRICT_RAW=1` (no hard-link layout
//!   normalisation of raw uppers), `UNIONFS_DIFF_LOUD=1` (show panics of
//!   harness threads), `UNIONFS_DIFF_DEBUG_SHRINK=1`.
//! * selfcheck_kernel_vs_kernel: `UNIONFS_DIFF_SELFCHECK_CASES` (default 24).
//!
//! Example: `UNIONFS_DIFF_SEED=1234 cargo test --test differential campaign_random -- --nocapture`

mod common;

#[path = "differential/apply.rs"]
mod apply;
#[path = "differential/campaign.rs"]
mod campaign;
#[path = "differential/creds.rs"]
mod creds;
#[path = "differential/engine.rs"]
mod engine;
#[path = "differential/fixture.rs"]
mod fixture;
#[path = "differential/generate.rs"]
mod generate;
#[path = "differential/ops.rs"]
mod ops;
#[path = "differential/shrink.rs"]
mod shrink;
#[path = "differential/snap.rs"]
mod snap;

use campaign::run_campaign;
use common::{env_num, environment_ok, Impl};
use engine::{run_case, Config};
use ops::{Data, Op, Time};

fn can_run() -> bool {
    environment_ok(Impl::Kernel) && environment_ok(Impl::Ours)
}

fn rerun_hint() -> String {
    let mut s = String::new();
    if let Ok(v) = std::env::var("UNIONFS_DIFF_OPS") {
        s += &format!("UNIONFS_DIFF_OPS={v} ");
    }
    s + "cargo test --test differential campaign_random -- --nocapture"
}

fn d(seed: u8, len: u32) -> Data {
    Data { seed, len }
}

fn s(p: &str) -> String {
    p.to_string()
}

/// A hand-written sequence touching every op kind and fixture feature.
fn fixed_scenario() -> Vec<Op> {
    let deep = fixture::deep_dir();
    let long = fixture::long_name();
    let t = |sec: i64| Time::At(1_200_000_000 + sec, 123_456_789);
    let mut v = vec![
        // A read-only fd opened before copy-up, read after it.
        Op::Open(0, s("d/a"), false),
        Op::Read(s("d/a")),
        Op::Append(s("d/a"), d(1, 10)),
        Op::FdRead(0),
        Op::FdStat(0),
        // Hard links: copy-up of one name of a 3-name lower inode.
        Op::Open(1, s("h1"), false),
        Op::Write(s("x/h1"), d(2, 30)),
        Op::Read(s("h1")),
        Op::Read(s("d/h2")),
        Op::Lstat(s("d/h2")),
        Op::FdRead(1),
        Op::Link(s("hb1"), s("x/hb3")),
        Op::Lstat(s("d/hb2")),
        // Sparse file, pwrite, truncate.
        Op::Stat(s("sp")),
        Op::Pwrite(s("sp"), 600_000, d(3, 100)),
        Op::Read(s("sp")),
        Op::Truncate(s("sp"), 4096),
        Op::Lstat(s("sp")),
        // setuid survives a metadata copy-up; other owners; caps and ACLs.
        Op::SetXattr(s("s"), s("user.a"), b"x".to_vec(), 0),
        Op::Lstat(s("s")),
        Op::Chown(s("oth"), Some(2000), Some(50), true),
        Op::Lstat(s("oth")),
        Op::ListXattr(s("acl")),
        Op::Chmod(s("acl"), 0o640),
        Op::GetXattr(s("acl"), s("system.posix_acl_access")),
        Op::Append(s("cap"), d(4, 3)),
        Op::ListXattr(s("cap")),
        // Times, also of symlinks.
        Op::Utimens(s("b"), t(1), t(2), false),
        Op::Lstat(s("b")),
        Op::Utimens(s("l"), t(3), t(4), true),
        Op::Lstat(s("l")),
        Op::Utimens(s("d"), Time::Omit, t(5), false),
        Op::Stat(s("d")),
        // Renames: lower dir (EXDEV), files, NOREPLACE, EXCHANGE, upper dir.
        Op::Rename(s("x"), s("x2"), 0),
        Op::Rename(s("d/a"), s("x/moved"), libc::RENAME_NOREPLACE),
        Op::Rename(s("b"), s("d/z"), libc::RENAME_NOREPLACE),
        Op::Rename(s("b"), s("d/z"), libc::RENAME_EXCHANGE),
        Op::Mkdir(s("nd"), 0o755),
        Op::Write(s("nd/f"), d(5, 5)),
        Op::Rename(s("nd"), s("nd2"), 0),
        Op::Rename(s("nd2"), s("d/e"), libc::RENAME_EXCHANGE),
        // Deletes, opaque recreation, xattr whiteouts.
        Op::Unlink(s("x/a")),
        Op::Rmdir(s("d/e/e")),
        Op::RmRf(s("w")),
        Op::Mkdir(s("w"), 0o755),
        Op::ListDir(s("w")),
        Op::ListDir(s("x")),
        Op::ListDir(s("m")),
        // Links and symlinks, ops through symlinks.
        Op::Link(s("d/c"), s("x/c")),
        Op::Symlink(s("d"), s("sl")),
        Op::Write(s("sl/via-link"), d(6, 6)),
        Op::Write(s("dangle"), d(7, 7)),
        Op::Read(s("nowhere")),
        Op::Read(s("l")),
        Op::ReadLink(s("d/e/up")),
        Op::Read(s("dl/c")),
        Op::Chmod(s("l"), 0o600),
        Op::Stat(s("l")),
        // xattrs on a merged dir, lower files, private names.
        Op::SetXattr(s("d"), s("user.dir2"), b"v".to_vec(), libc::XATTR_CREATE),
        Op::ListXattr(s("d")),
        Op::GetXattr(s("x/h1"), s("trusted.t")),
        Op::GetXattr(s("x2/a"), s("trusted.t")),
        Op::RemoveXattr(s("oth"), s("user.a")),
        Op::SetXattr(s("oth"), s("trusted.overlay.x"), b"p".to_vec(), 0),
        Op::ListXattr(s("oth")),
        // fifos and device nodes.
        Op::Mknod(s("fifo2"), libc::S_IFIFO, 0, 0),
        Op::Mknod(s("c00"), libc::S_IFCHR, 0, 0),
        Op::Mknod(s("blk"), libc::S_IFBLK, 7, 250),
        Op::Chmod(s("p"), 0o600),
        Op::Link(s("cdev"), s("cdev2")),
        Op::Lstat(s("cdev2")),
        // O_EXCL.
        Op::Create(s("excl"), 0o600, true),
        Op::Create(s("excl"), 0o600, true),
        Op::Create(s("a"), 0o600, true),
        // Other users.
        Op::As(1000, 1000, Box::new(Op::Append(s("u/a"), d(8, 8)))),
        Op::As(2000, 2000, Box::new(Op::Read(s("u/a")))),
        Op::As(1000, 1000, Box::new(Op::Create(s("d/e/mine"), 0o644, true))),
        Op::Chmod(s("d/e"), 0o1777),
        Op::As(1000, 1000, Box::new(Op::Create(s("d/e/mine"), 0o644, true))),
        Op::Lstat(s("d/e/mine")),
        Op::As(2000, 2000, Box::new(Op::Unlink(s("d/e/mine")))),
        // Dir streams: the listing is fixed at the first read until rewound.
        Op::DirOpen(0, s("d")),
        Op::DirRead(0),
        Op::Write(s("d/newer"), d(9, 9)),
        Op::DirRead(0),
        Op::DirRewind(0),
        Op::DirRead(0),
        // Deep paths and 255-byte names.
        Op::Write(format!("{deep}/c"), d(10, 10)),
        Op::Rename(format!("{deep}/a"), format!("{deep}/{long}"), 0),
        Op::ListDir(deep.clone()),
        Op::Rename(format!("x/{long}"), format!("d/{long}"), 0),
        Op::Write(format!("x/{}", fixture::too_long()), d(11, 1)),
        Op::Unlink(format!("{}/a", fixture::long_dir())),
        // File over dir and dir over file.
        Op::Write(s("f2d/a"), d(12, 1)),
        Op::RmRf(s("d2f")),
        Op::Write(s("d2f"), d(13, 13)),
        Op::Close(0),
        Op::Close(1),
    ];
    v.push(Op::ListDir(String::new()));
    v
}

/// Campaign: the fixed scenario must behave as on the kernel.
#[test]
fn campaign_fixed_scenario() {
    if !can_run() {
        return;
    }
    let ops = fixed_scenario();
    // Keep going after a differing result, so one divergence does not hide
    // the rest of the scenario; each class is minimised on its own.
    let cfg = Config {
        keep_going: true,
        ..Config::standard()
    };
    let Some((out, mut msg)) = engine::run_fixed(&cfg, &ops, "fixed scenario") else {
        return;
    };
    // Minimise each distinct class for the report.
    // At most 8 classes and 120 trials each, to stay within CI time.
    let mut seen: Vec<Vec<Op>> = Vec::new();
    for class in out.classes().into_iter().take(8) {
        let r = shrink::shrink(&cfg, &ops, &class, 120);
        if seen.contains(&r.ops) {
            msg += &format!("\n[{class}]: same minimised ops as above\n");
            continue;
        }
        seen.push(r.ops.clone());
        msg += &format!(
            "\nminimised [{class}] to {} op(s) (standard fixture):\n{}",
            r.ops.len(),
            engine::trace_text(&r.outcome, "ours")
        );
        for d in r.outcome.divs.iter().filter(|d| d.class == r.class) {
            msg += &format!("      {}\n", d.detail);
        }
    }
    panic!("{msg}");
}

/// Campaign: random cases (CI size by default; see the module docs).
#[test]
fn campaign_random() {
    if !can_run() {
        return;
    }
    let c = campaign::campaign_from_env(240, 1, &rerun_hint());
    let sum = run_campaign(&Config::standard(), &c);
    assert!(
        sum.diverged == 0,
        "{} of {} random case(s) diverged from kernel overlayfs ({} distinct class(es)); \
         the summary with minimised reproductions is printed above (stderr)",
        sum.diverged,
        sum.cases,
        sum.classes
    );
}

/// Campaign: random cases with `metacopy=on` on both sides (CI size by
/// default; `UNIONFS_DIFF_CASES` etc. as for campaign_random).
#[test]
fn campaign_random_metacopy() {
    if !can_run() {
        return;
    }
    let hint = format!("{} (metacopy)", rerun_hint())
        .replace("campaign_random -- ", "campaign_random_metacopy -- ");
    let c = campaign::campaign_from_env(60, 50_001, &hint);
    let sum = run_campaign(&Config::metacopy(), &c);
    assert!(
        sum.diverged == 0,
        "{} of {} random case(s) diverged from kernel overlayfs with metacopy=on ({} distinct \
         class(es)); the summary with minimised reproductions is printed above (stderr)",
        sum.diverged,
        sum.cases,
        sum.classes
    );
}

/// Campaign: the fixed scenario with `metacopy=on` on both sides.
#[test]
fn campaign_fixed_scenario_metacopy() {
    if !can_run() {
        return;
    }
    let cfg = Config {
        keep_going: true,
        ..Config::metacopy()
    };
    if let Some((_, msg)) =
        engine::run_fixed(&cfg, &fixed_scenario(), "fixed scenario (metacopy=on)")
    {
        panic!("{msg}");
    }
}

// ---------------------------------------------------------------------------
// Cases the metacopy campaign found, run on both sides
// ---------------------------------------------------------------------------

/// Runs `ops` once with `metacopy=on` on both sides; panics with the
/// divergences, if any.
fn assert_like_kernel_metacopy(ops: &[Op], what: &str) {
    let out = run_case(&Config::metacopy(), ops, None);
    assert!(
        out.divs.is_empty(),
        "{what}: diverged from kernel overlayfs (metacopy=on): {:#?}\ntrace: {:#?}",
        out.divs,
        out.trace
    );
}

/// A lower hard link's name below a dir that a rename moved (redirect) is
/// still one of its names: unlinking, truncating or replacing another name
/// shows at it as under the kernel's index.
#[test]
fn hardlink_names_below_a_renamed_dir_stay_one_object() {
    if !can_run() {
        return;
    }
    let moved_long = format!("{}/sp", fixture::long_dir());
    let cases = [
        (
            "unlink",
            vec![Op::Rename(s("d"), s("w/dangle"), 0), Op::Unlink(s("x/h1"))],
        ),
        (
            "truncate",
            vec![Op::Rename(s("d"), moved_long, 0), Op::Truncate(s("hb1"), 1)],
        ),
        (
            "replace",
            vec![
                Op::Rename(s("d"), s("x/sp"), 0),
                Op::Rename(s("sp"), s("hb1"), 0),
            ],
        ),
    ];
    for (what, ops) in cases {
        assert_like_kernel_metacopy(&ops, what);
    }
}

/// The data copy-up of a metacopy file keeps its file capability (the
/// kernel reads it before writing the data and sets it again after).
#[test]
fn metacopy_data_copy_up_keeps_the_file_capability() {
    if !can_run() {
        return;
    }
    let ops = [
        Op::Link(s("cap"), s("w/hb1")),
        Op::Pwrite(s("w/hb1"), 600_000, d(22, 0)),
    ];
    assert_like_kernel_metacopy(&ops, "link cap, then write through the link");
}

/// RENAME_EXCHANGE whose target's redirect would be too long fails with
/// EXDEV after the source got its redirect, which stays (the kernel's order).
#[test]
fn exchange_failing_with_exdev_keeps_the_source_redirect() {
    if !can_run() {
        return;
    }
    let target = format!("{}/a", fixture::deep_dir());
    let ops = [Op::Rename(s("d"), target, libc::RENAME_EXCHANGE)];
    assert_like_kernel_metacopy(&ops, "exchange d with a deep file");
}

// ---------------------------------------------------------------------------
// Harness self-checks
// ---------------------------------------------------------------------------

/// Ends the process it holds on drop (also when the test fails).
struct Holder(std::process::Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Self-check: a copy of our mount in another mount namespace (made by any
/// process while the mount existed; `/` is private here) keeps the FUSE
/// connection up after our unmount, so the server keeps serving it. That is
/// no divergence: the harness names the holder and stops the server.
#[test]
fn selfcheck_an_unmount_held_in_another_mount_namespace_is_no_divergence() {
    if !environment_ok(Impl::Ours) {
        return;
    }
    let tmp = common::TempDir::new("diff-held");
    let dir = |n: &str| {
        let p = tmp.path().join(n);
        std::fs::create_dir_all(&p).unwrap();
        p
    };
    std::fs::write(dir("lower").join("f"), b"x").unwrap();
    let m = common::Mounted::mount(
        Impl::Ours,
        &[dir("lower")],
        Some(&dir("upper")),
        Some(&dir("work")),
        &dir("m"),
    );
    let child = std::process::Command::new("unshare")
        .args(["-m", "sleep", "120"])
        .spawn()
        .expect("run unshare -m");
    let holder = Holder(child);
    let merged = m.merged.display().to_string();
    let info = format!("/proc/{}/mountinfo", holder.0.id());
    // The copy exists once unshare has made the namespace and run sleep.
    while !std::fs::read_to_string(&info).is_ok_and(|i| i.contains(&merged))
        || std::fs::read_to_string(format!("/proc/{}/comm", holder.0.id()))
            .is_ok_and(|c| c.trim() != "sleep")
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let divs = engine::unmount_outcome(m, "ours");
    drop(holder);
    assert!(divs.is_empty(), "{divs:#?}");
}

/// Self-check: kernel vs kernel must never diverge, in ops, trees, raw
/// uppers or cross-mounts (validates the normalisations and that ops and
/// fixtures are deterministic).
#[test]
fn selfcheck_kernel_vs_kernel() {
    if !environment_ok(Impl::Kernel) {
        return;
    }
    let cfg = Config {
        other: Impl::Kernel,
        ..Config::standard()
    };
    let c = campaign::Campaign {
        seeds: (9_000..9_000 + env_num("UNIONFS_DIFF_SELFCHECK_CASES", 24)).collect(),
        ops_per_case: 60,
        jobs: 2,
        shrink_classes: 4,
        shrink_budget: 100,
        verbose: false,
        report: None,
        rerun_hint: "(kernel vs kernel self-check)".into(),
    };
    let sum = run_campaign(&cfg, &c);
    assert_eq!(sum.diverged, 0, "kernel vs kernel diverged:\n{}", sum.text);
    let out = run_case(&cfg, &fixed_scenario(), None);
    assert!(
        out.divs.is_empty(),
        "kernel vs kernel diverged on the fixed scenario: {:#?}",
        out.divs
    );
}

/// Self-check: a seed always gives the same ops; seeds differ; generated
/// cases use every op kind.
#[test]
fn selfcheck_generation_is_deterministic() {
    assert_eq!(generate::generate(42, 100), generate::generate(42, 100));
    assert_ne!(generate::generate(42, 100), generate::generate(43, 100));
    let mut kinds = std::collections::BTreeSet::new();
    for seed in 0..200 {
        for op in generate::generate(seed, 60) {
            let k = match &op {
                Op::As(_, _, inner) => {
                    kinds.insert("as-user".to_string());
                    inner.kind()
                }
                _ => op.kind(),
            };
            kinds.insert(k.split('(').next().unwrap().to_string());
        }
    }
    for k in [
        "read",
        "stat",
        "lstat",
        "readlink",
        "listdir",
        "write",
        "append",
        "pwrite",
        "truncate",
        "create",
        "mkdir",
        "rmdir",
        "unlink",
        "rm-r",
        "rename",
        "link",
        "symlink",
        "chmod",
        "chown",
        "utimens",
        "setxattr",
        "getxattr",
        "removexattr",
        "listxattr",
        "mknod",
        "open",
        "fd-read",
        "fd-write",
        "fstat",
        "close",
        "opendir",
        "getdents",
        "rewinddir",
        "as-user",
    ] {
        assert!(kinds.contains(k), "op kind {k} never generated: {kinds:?}");
    }
}

/// Self-check: the minimiser finds the two ops a synthetic failure needs.
#[test]
fn selfcheck_minimiser() {
    let ops = generate::generate(7, 80);
    let (a, b) = (ops[13].clone(), ops[61].clone());
    let fails = |c: &[Op]| {
        let i = c.iter().position(|o| *o == a)?;
        c[i + 1..].contains(&b).then_some(())
    };
    let (min, (), trials) = shrink::minimise(ops.clone(), (), 1000, fails);
    // Ops equal to a or b elsewhere in the list could also satisfy it.
    assert_eq!(min.len(), 2, "minimised to {min:?}");
    assert!(min[0] == a && min[1] == b);
    assert!(trials < 200, "{trials} trials");
}

/// Self-check: the harness notices a real difference. With OCI whiteouts on
/// (our default) the `.wh.` files of the fixture hide names the kernel
/// shows; the divergence is found with no ops at all, and shrinking a random
/// list ends with no ops.
#[test]
fn selfcheck_detects_a_known_divergence() {
    if !can_run() {
        return;
    }
    let cfg = Config {
        ours_opts: "oci_whiteouts=on".into(),
        cross: false,
        ..Config::standard()
    };
    let out = run_case(&cfg, &[], None);
    let classes = out.classes();
    assert!(
        classes.contains("merged: only-kernel f"),
        "expected the kernel to show .wh. files that ours hides: {:#?}",
        out.divs
    );
    let r = shrink::shrink(
        &cfg,
        &generate::generate(3, 15),
        "merged: only-kernel f",
        60,
    );
    assert!(r.ops.is_empty(), "not minimised: {:?}", r.ops);
}

/// Self-check: the fixture's features are in effect under the kernel
/// (whiteouts, xattr whiteouts, opaque dirs, OCI names as plain files, hard
/// links, sparse file, long names, deep paths).
#[test]
fn selfcheck_fixture_features() {
    if !environment_ok(Impl::Kernel) {
        return;
    }
    let tmp = common::TempDir::new("diff-fixture");
    fixture::build(tmp.path());
    let lowers: Vec<_> = (0..3)
        .map(|i| tmp.path().join(format!("lower{i}")))
        .collect();
    for sub in ["u", "w", "m"] {
        std::fs::create_dir(tmp.path().join(sub)).unwrap();
    }
    let k = common::Mounted::mount_kernel_opts(
        Impl::Kernel,
        &lowers,
        Some(&tmp.path().join("u")),
        Some(&tmp.path().join("w")),
        &tmp.path().join("m"),
        "index=on",
    );
    let p = |r: &str| k.p(r);
    let gone = |r: &str| std::fs::symlink_metadata(p(r)).is_err();
    assert!(gone("x/c"), "char 0/0 whiteout in lower1");
    assert!(gone("d/b"), "whiteout in lower0");
    assert!(gone("w/a"), "xattr whiteout");
    assert!(!gone("w/b"));
    assert!(gone("n/b") && !gone("n/a"), "opaque n");
    assert!(gone("o/a") && !gone("o/b"), "opaque o");
    assert!(
        !gone(".wh.oci") && !gone("m/.wh.j") && !gone("m/j"),
        "OCI names"
    );
    assert!(std::fs::symlink_metadata(p("f2d")).unwrap().is_file());
    assert!(std::fs::symlink_metadata(p("d2f")).unwrap().is_dir());
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::symlink_metadata(p("d/h2")).unwrap().nlink(), 3);
    assert!(std::fs::symlink_metadata(p("sp")).unwrap().blocks() < 64);
    let deep = fixture::deep_dir();
    let long = fixture::long_name();
    assert!(!gone(&format!("{deep}/a")) && !gone(&format!("{deep}/{long}")));
    assert!(!gone(&format!("x/{long}")));
    let s = std::fs::symlink_metadata(p("s")).unwrap();
    assert_eq!(s.mode() & 0o7777, 0o4755);
    assert_eq!(std::fs::symlink_metadata(p("oth")).unwrap().uid(), 1000);
    assert!(
        s.mtime() < ops::RECENT,
        "fixture times must be old: {}",
        s.mtime()
    );
    let names = common::sys::llistxattr(&p("x/a")).unwrap();
    assert!(names.contains(&"trusted.t".to_string()), "{names:?}");
}
