//! Running one case (both unions over a fresh fixture, ops in lockstep, the
//! comparisons), classifying divergences, shrinking an op list while a
//! divergence persists, and running campaigns of many seeds.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

#[path = "teardown.rs"]
mod teardown;

use super::common::{Impl, Mounted, TempDir};
use super::fixture;
use super::ops::{self, apply, compare, fmt_res, res_class, short, Op, Res, State};
use super::snap::{self, diff, snapshot, Snap, View};

/// How the two sides are mounted.
#[derive(Clone, Debug)]
pub struct Config {
    /// The implementation compared with the kernel: `Impl::Ours`, or
    /// `Impl::Kernel` for the harness's kernel-vs-kernel self-check.
    pub other: Impl,
    /// Extra options for our binary.
    pub ours_opts: String,
    /// Extra options for every kernel overlay mount.
    pub kernel_opts: String,
    /// Run the cross-mounts (each upper remounted by the other implementation).
    pub cross: bool,
    /// Keep applying ops after an op result diverged (later differences may
    /// be consequences); otherwise the case ends there.
    pub keep_going: bool,
    /// Builds each case's lowers below the dir given.
    pub fixture: fn(&Path),
    /// Raw-upper xattrs dropped on both sides before comparing, beyond
    /// snap's (the `user.overlay.*` bookkeeping of a `userxattr` mount).
    pub raw_ignored: &'static [&'static str],
    /// A further check of every merged view but the kernel's first one:
    /// (merged dir, the upper dir it shows) -> differing entries.
    pub view_check: Option<fn(&Path, &Path) -> Vec<snap::DiffLine>>,
    /// The ops of a random case: (seed, count) -> ops.
    pub generate: fn(u64, usize) -> Vec<Op>,
}

impl Config {
    /// The standard comparison: ours with `oci_whiteouts=off` (the kernel does
    /// not know OCI whiteouts) vs the kernel with `index=on` (ours keeps the
    /// names of a copied-up lower hard link joined, as `index=on` does).
    pub fn standard() -> Config {
        Config {
            other: Impl::Ours,
            ours_opts: "oci_whiteouts=off".into(),
            kernel_opts: "index=on".into(),
            cross: true,
            keep_going: false,
            fixture: fixture::build,
            raw_ignored: &[],
            view_check: None,
            generate: ops::generate,
        }
    }

    /// The standard comparison with `metacopy=on` on both sides (which
    /// turns `redirect_dir=on`): changes of metadata copy up metadata only,
    /// renamed and linked metacopy files get redirects, the first write
    /// brings the data up; the raw uppers compare the metacopy marks.
    // differential_rootless.rs shares this file: userxattr refuses metacopy=on.
    #[allow(dead_code)]
    pub fn metacopy() -> Config {
        Config {
            ours_opts: "oci_whiteouts=off,metacopy=on".into(),
            kernel_opts: "index=on,metacopy=on,redirect_dir=on".into(),
            ..Config::standard()
        }
    }

    fn other_name(&self) -> &'static str {
        match self.other {
            Impl::Ours => "ours",
            Impl::Kernel => "kernel2",
        }
    }
}

/// One divergence: a class (the signature used to group and to shrink) and
/// the details.
#[derive(Clone, Debug)]
pub struct Div {
    pub class: String,
    pub detail: String,
}

/// What a case did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub divs: Vec<Div>,
    /// Every op run, with the kernel's and the other side's result.
    pub trace: Vec<(Op, Res, Res)>,
    /// For each rm -r (by op index), the single steps it took on the kernel.
    pub rm_steps: BTreeMap<usize, Vec<Op>>,
}

impl Outcome {
    pub fn classes(&self) -> BTreeSet<String> {
        self.divs.iter().map(|d| d.class.clone()).collect()
    }
    pub fn has(&self, class: &str) -> bool {
        self.divs.iter().any(|d| d.class == class)
    }
}

/// Phases in the order a case runs them; a class's phase is its prefix.
/// Other classes (`harness:` panics) rank after all, so shrinking one runs
/// every phase.
const PHASES: &[&str] = &[
    "op",
    "merged",
    "unmount",
    "raw-upper",
    "lowers-modified",
    "ours-remount",
    "kernel-over-ours-upper",
    "ours-over-kernel-upper",
];

fn phase_rank(class: &str) -> usize {
    PHASES
        .iter()
        .position(|p| class.starts_with(&format!("{p}:")))
        .unwrap_or(PHASES.len())
}

/// Replaces paths and numbers in a panic message so that the same failure
/// in different cases gets the same class.
fn normalise_msg(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or("");
    let words: Vec<String> = first
        .split_whitespace()
        .map(|w| {
            if w.contains('/') {
                "<path>".to_string()
            } else {
                w.chars()
                    .map(|c| if c.is_ascii_digit() { 'N' } else { c })
                    .collect()
            }
        })
        .collect();
    let s = words.join(" ");
    s.chars().take(140).collect()
}

fn panic_msg(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else {
        "panic".into()
    }
}

static HOOK: Once = Once::new();

/// Silences the default panic message in harness threads (`diff-*`): their
/// panics are caught and reported as divergences.
fn install_panic_hook() {
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let quiet = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("diff-"));
            if !quiet || std::env::var_os("UNIONFS_DIFF_LOUD").is_some() {
                default(info);
            }
        }));
    });
}

fn mount(
    kind: Impl,
    cfg: &Config,
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    merged: &Path,
) -> Mounted {
    std::fs::create_dir_all(upper).expect("mkdir upper");
    std::fs::create_dir_all(work).expect("mkdir work");
    std::fs::create_dir_all(merged).expect("mkdir merged");
    match kind {
        Impl::Kernel if cfg.kernel_opts.is_empty() => {
            Mounted::mount(kind, lowers, Some(upper), Some(work), merged)
        }
        Impl::Kernel => Mounted::mount_kernel_opts(
            kind,
            lowers,
            Some(upper),
            Some(work),
            merged,
            &cfg.kernel_opts,
        ),
        Impl::Ours if cfg.ours_opts.is_empty() => {
            Mounted::mount(kind, lowers, Some(upper), Some(work), merged)
        }
        Impl::Ours => Mounted::mount_ours_opts(
            kind,
            lowers,
            Some(upper),
            Some(work),
            merged,
            &cfg.ours_opts,
        ),
    }
}

/// Unmounts; a failure (e.g. our daemon exiting uncleanly) is a divergence.
/// Unmounts `m` as a case does; the divergences it gave, if any (for a
/// self-check; differential_rootless.rs has no use for it).
#[allow(dead_code)]
pub fn unmount_outcome(m: Mounted, what: &str) -> Vec<Div> {
    let mut out = Outcome::default();
    unmount(m, what, &mut out);
    out.divs
}

fn unmount(m: Mounted, what: &str, out: &mut Outcome) {
    let mut m = m;
    let probe = m
        .pid()
        .map(|pid| teardown::ExitProbe::watch(pid, &m.merged));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.unmount()));
    let threads = probe.and_then(teardown::ExitProbe::finish);
    if let Err(p) = r {
        let mut msg = panic_msg(p.as_ref());
        if let Some(t) = threads {
            msg += "\nserver threads 5s after the unmount began:\n";
            msg += &t;
            // Rare and not reproducible on demand: shown at once.
            eprintln!("[differential] unmount of {what}: {msg}");
        }
        out.divs.push(Div {
            class: format!("unmount: {what}: {}", normalise_msg(&msg)),
            detail: msg,
        });
    }
}

fn add_diffs(out: &mut Outcome, phase: &str, lines: Vec<snap::DiffLine>) {
    for l in lines {
        out.divs.push(Div {
            class: format!("{phase}: {}", l.class),
            detail: l.text,
        });
    }
}

/// Runs `ops` on fresh mounts of a fresh fixture and compares. With
/// `target`, phases after the target class's phase are skipped (shrinking).
pub fn run_case(cfg: &Config, ops: &[Op], target: Option<&str>) -> Outcome {
    install_panic_hook();
    let mut out = Outcome::default();
    let r = std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("diff-case".into())
            .spawn_scoped(s, || case_body(cfg, ops, target, &mut out))
            .expect("spawn case thread")
            .join()
    });
    if let Err(p) = r {
        let msg = panic_msg(p.as_ref());
        out.divs.push(Div {
            class: format!("harness: panic: {}", normalise_msg(&msg)),
            detail: msg,
        });
    }
    out
}

fn case_body(cfg: &Config, ops: &[Op], target: Option<&str>, out: &mut Outcome) {
    let upto = target.map_or(usize::MAX, phase_rank);
    let tmp = TempDir::new("diff");
    let root = tmp.path();
    (cfg.fixture)(root);
    let lowers: Vec<PathBuf> = (0..3).map(|i| root.join(format!("lower{i}"))).collect();
    let lowers_before: Vec<Snap> = lowers.iter().map(|l| snapshot(l, View::RawLower)).collect();
    let d = |s: &str| root.join(s);
    let other = cfg.other_name();

    let k = mount(
        Impl::Kernel,
        cfg,
        &lowers,
        &d("k/upper"),
        &d("k/work"),
        &d("k/m"),
    );
    let o = mount(
        cfg.other,
        cfg,
        &lowers,
        &d("o/upper"),
        &d("o/work"),
        &d("o/m"),
    );
    let (mut ks, mut os) = (State::default(), State::default());
    let mut op_diverged = false;
    for op in ops {
        let rk = apply(op, &k.merged, &mut ks);
        let ro = apply(op, &o.merged, &mut os);
        if matches!(op, Op::RmRf(_)) {
            out.rm_steps
                .insert(out.trace.len(), std::mem::take(&mut ks.rm_log));
        }
        let cmp = compare(&rk, &ro);
        out.trace.push((op.clone(), rk.clone(), ro.clone()));
        if let Some(fields) = cmp {
            let what =
                if fields == "result" || (fields == "value" && res_class(&rk) != res_class(&ro)) {
                    format!("kernel {} vs {other} {}", res_class(&rk), res_class(&ro))
                } else {
                    format!("{fields} differ")
                };
            out.divs.push(Div {
                class: format!("op: {}: {what}", op.kind()),
                detail: format!(
                    "op #{}: {op}\n        kernel: {}\n        {other:>6}: {}",
                    out.trace.len(),
                    fmt_res(&rk),
                    fmt_res(&ro)
                ),
            });
            op_diverged = true;
            if !cfg.keep_going {
                break;
            }
        }
    }
    ks.close_all();
    os.close_all();
    if (op_diverged && !cfg.keep_going) || upto < phase_rank("merged:") {
        unmount(k, "kernel", out);
        unmount(o, other, out);
        return;
    }

    let kv = snapshot(&k.merged, View::Merged);
    let ov = snapshot(&o.merged, View::Merged);
    add_diffs(out, "merged", diff(&kv, &ov, "kernel", other));
    if let Some(check) = cfg.view_check {
        add_diffs(out, "merged", check(&o.merged, &d("o/upper")));
    }
    unmount(k, "kernel", out);
    unmount(o, other, out);
    if upto < phase_rank("raw-upper:") {
        return;
    }

    let mut ku = snapshot(&d("k/upper"), View::RawUpper);
    let mut ou = snapshot(&d("o/upper"), View::RawUpper);
    for e in ku.0.values_mut().chain(ou.0.values_mut()) {
        e.xattrs
            .retain(|n, _| !cfg.raw_ignored.contains(&n.as_str()));
    }
    if cfg.other == Impl::Ours {
        snap::drop_eager_links(&ku, &mut ou);
        snap::same_lower_redirects(&ku, &mut ou, &lowers);
    }
    let mut raw = diff(&ku, &ou, "kernel", other);
    // Documented deviation: the kernel with index=on also marks a new dir in
    // a merged parent (or over a lower whiteout) opaque; ours does so only
    // with redirect_dir=on, as the kernel's default (index=off) does. The
    // merged views and the kernel-over-ours remount still show any visible
    // effect of a missing mark.
    raw.retain(|l| {
        let opaque_only = l.class == "differs[xattrs(trusted.overlay.opaque)] d";
        let mut sides = l.text.lines().skip(1);
        let kernel_y = sides
            .next()
            .is_some_and(|k| k.contains("trusted.overlay.opaque=\"y\""));
        let ours_none = sides
            .next()
            .is_some_and(|o| !o.contains("trusted.overlay.opaque"));
        !(opaque_only && kernel_y && ours_none)
    });
    add_diffs(out, "raw-upper", raw);
    for (i, (l, before)) in lowers.iter().zip(&lowers_before).enumerate() {
        let lines = diff(before, &snapshot(l, View::RawLower), "before", "after");
        for line in lines {
            out.divs.push(Div {
                class: format!("lowers-modified: lower{i} {}", line.class),
                detail: line.text,
            });
        }
    }
    if !cfg.cross || upto < phase_rank("ours-remount:") {
        return;
    }

    // Each upper remounted by the other implementation, with the writer's
    // workdir (the kernel's holds its index), shows the view it was written
    // under.
    let cross = |kind: Impl, side: &str, phase: &str, reference: &Snap, out: &mut Outcome| {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            mount(
                kind,
                cfg,
                &lowers,
                &d(&format!("{side}/upper")),
                &d(&format!("{side}/work")),
                &d(&format!("{phase}/m")),
            )
        }));
        match r {
            Ok(m) => {
                let v = snapshot(&m.merged, View::Merged);
                let mut lines = diff(reference, &v, "written", "remount");
                if phase == "ours-over-kernel-upper"
                    && std::env::var_os("UNIONFS_DIFF_STRICT_INDEX").is_none()
                {
                    // Documented deviation: unionfs-fuse does not read the
                    // kernel's index dir, so names of a lower hard link that
                    // the kernel left in the lower show the lower data.
                    use std::os::unix::fs::MetadataExt;
                    lines.retain(|l| {
                        let path = l.path.trim_start_matches('/');
                        let linked_in_lower = lowers.iter().any(|low| {
                            std::fs::symlink_metadata(low.join(path))
                                .is_ok_and(|m| m.is_file() && m.nlink() > 1)
                        });
                        let linked_written = reference
                            .0
                            .get(path)
                            .is_some_and(|e| e.kind == 'f' && e.nlink.unwrap_or(1) > 1);
                        // A name the kernel copied up through its index (also
                        // after a rename) is linked to the index entry.
                        let linked_in_upper =
                            std::fs::symlink_metadata(d(&format!("{side}/upper")).join(path))
                                .is_ok_and(|m| m.is_file() && m.nlink() > 1);
                        // A name the kernel left in the lower below a dir a
                        // rename moved (redirect_dir) is not at its lower
                        // path: ours shows it from the lower, multiply linked.
                        let shown_from_lower_link = v
                            .0
                            .get(path)
                            .is_some_and(|e| e.kind == 'f' && e.nlink.unwrap_or(1) > 1)
                            && !std::fs::symlink_metadata(d(&format!("{side}/upper")).join(path))
                                .is_ok_and(|m| m.is_file());
                        !(linked_in_lower
                            || linked_written
                            || linked_in_upper
                            || shown_from_lower_link)
                    });
                }
                if let Some(check) = cfg.view_check {
                    lines.extend(check(&m.merged, &d(&format!("{side}/upper"))));
                }
                add_diffs(out, phase, lines);
                unmount(m, phase, out);
            }
            Err(p) => {
                let msg = panic_msg(p.as_ref());
                out.divs.push(Div {
                    class: format!("{phase}: mount failed: {}", normalise_msg(&msg)),
                    detail: msg,
                });
            }
        }
    };
    // Ours remounting its own upper (persistence), then the kernel over it.
    cross(cfg.other, "o", "ours-remount", &ov, out);
    if upto < phase_rank("kernel-over-ours-upper:") {
        return;
    }
    cross(Impl::Kernel, "o", "kernel-over-ours-upper", &ov, out);
    if upto < phase_rank("ours-over-kernel-upper:") {
        return;
    }
    cross(cfg.other, "k", "ours-over-kernel-upper", &kv, out);
}

// ---------------------------------------------------------------------------
// Shrinking
// ---------------------------------------------------------------------------

/// Result of shrinking one divergence class.
pub struct Shrunk {
    pub class: String,
    pub ops: Vec<Op>,
    pub outcome: Outcome,
    pub trials: usize,
}

/// Runs a fixed scenario (trace on stderr with `UNIONFS_DIFF_VERBOSE`). On
/// a divergence: the outcome and a report that starts with `title` and
/// lists every divergence, for the caller to extend and panic with.
pub fn run_fixed(cfg: &Config, ops: &[Op], title: &str) -> Option<(Outcome, String)> {
    let out = run_case(cfg, ops, None);
    if std::env::var_os("UNIONFS_DIFF_VERBOSE").is_some() {
        eprintln!("{}", trace_text(&out, "ours"));
    }
    if out.divs.is_empty() {
        return None;
    }
    let mut msg = format!(
        "{title}: {} divergence(s) from kernel overlayfs\n",
        out.divs.len()
    );
    for d in &out.divs {
        msg += &format!("  [{}]\n      {}\n", d.class, d.detail);
    }
    Some((out, msg))
}

/// Removes ops (chunks, then single ops) and simplifies the rest while the
/// case still shows `class`, re-running both sides on fresh fixtures each
/// time; at most `budget` trials.
pub fn shrink(cfg: &Config, ops: &[Op], class: &str, budget: usize) -> Shrunk {
    let first = run_case(cfg, ops, Some(class));
    if !first.has(class) {
        // Not reproducible (should not happen): report the original.
        return Shrunk {
            class: class.into(),
            ops: ops.to_vec(),
            outcome: first,
            trials: 1,
        };
    }
    let mut class = class.to_string();
    let mut cur = ops.to_vec();
    let mut best = first;
    let mut trials = 1;
    loop {
        // Ops after an op divergence never ran.
        if phase_rank(&class) == phase_rank("op:") {
            cur.truncate(best.trace.len());
        }
        let cl = class.clone();
        let (ops, outcome, t) = minimise(cur, best, budget.saturating_sub(trials), |cand| {
            let o = run_case(cfg, cand, Some(&cl));
            o.has(&cl).then_some(o)
        });
        cur = ops;
        best = outcome;
        trials += t;
        // Replace an rm -r by its single steps (listdir, unlink, rmdir as the
        // kernel took them); if the divergence then shows up at one of those
        // steps, follow it (its class changes) and minimise again.
        let mut expanded = false;
        for (i, steps) in best.rm_steps.clone() {
            if trials >= budget || i >= cur.len() || steps.is_empty() {
                continue;
            }
            let cand: Vec<Op> = cur[..i]
                .iter()
                .chain(&steps)
                .chain(&cur[i + 1..])
                .cloned()
                .collect();
            trials += 1;
            let o = run_case(cfg, &cand, Some(&class));
            if std::env::var_os("UNIONFS_DIFF_DEBUG_SHRINK").is_some() {
                eprintln!(
                    "[shrink] split rm -r #{i} into {} steps: {} ops ran, {:?}",
                    steps.len(),
                    o.trace.len(),
                    o.classes()
                );
            }
            if o.has(&class) {
                (cur, best, expanded) = (cand, o, true);
                break;
            }
            let in_steps = o.divs.iter().find(|d| {
                d.class.starts_with("op:") && o.trace.len() > i && o.trace.len() <= i + steps.len()
            });
            if let Some(d) = in_steps {
                class = d.class.clone();
                (cur, best, expanded) = (cand, o, true);
                break;
            }
        }
        if !expanded {
            break;
        }
    }
    Shrunk {
        class,
        ops: cur,
        outcome: best,
        trials,
    }
}

/// Delta debugging over an op list: `test` returns Some(evidence) while a
/// candidate still fails. Removes chunks of halving size down to single ops
/// until no single removal keeps the failure, then tries simpler variants
/// of each remaining op. Returns the list, its evidence and the trials used.
pub fn minimise<T>(
    ops: Vec<Op>,
    evidence: T,
    budget: usize,
    mut test: impl FnMut(&[Op]) -> Option<T>,
) -> (Vec<Op>, T, usize) {
    let mut trials = 0;
    let mut cur = ops;
    let mut best = evidence;
    let mut chunk = cur.len().div_ceil(2).max(1);
    loop {
        let mut removed = false;
        let mut i = 0;
        while i < cur.len() && trials < budget {
            let end = (i + chunk).min(cur.len());
            let cand: Vec<Op> = cur[..i].iter().chain(&cur[end..]).cloned().collect();
            trials += 1;
            if let Some(o) = test(&cand) {
                cur = cand;
                best = o;
                removed = true;
                if cur.is_empty() {
                    break;
                }
            } else {
                i += chunk;
            }
        }
        if trials >= budget || (chunk == 1 && !removed) {
            break;
        }
        if chunk > 1 {
            chunk /= 2;
        }
    }
    // Simplify what is left: run as root, write less data.
    for i in 0..cur.len() {
        for cand_op in simpler(&cur[i]) {
            if trials >= budget {
                break;
            }
            let mut cand = cur.clone();
            cand[i] = cand_op;
            trials += 1;
            if let Some(o) = test(&cand) {
                cur = cand;
                best = o;
                break;
            }
        }
    }
    (cur, best, trials)
}

fn simpler(op: &Op) -> Vec<Op> {
    let mut v = Vec::new();
    if let Op::As(_, _, inner) = op {
        v.push((**inner).clone());
    }
    let small = |d: ops::Data| ops::Data {
        seed: d.seed,
        len: d.len.min(4),
    };
    match op {
        Op::Write(p, d) if d.len > 4 => v.push(Op::Write(p.clone(), small(*d))),
        Op::Append(p, d) if d.len > 4 => v.push(Op::Append(p.clone(), small(*d))),
        Op::Pwrite(p, o, d) if d.len > 4 || *o > 0 => {
            v.push(Op::Pwrite(p.clone(), *o, small(*d)));
        }
        Op::FdWrite(s, o, d) if d.len > 4 => v.push(Op::FdWrite(*s, *o, small(*d))),
        _ => {}
    }
    v
}

// ---------------------------------------------------------------------------
// Campaigns
// ---------------------------------------------------------------------------

/// Settings of a campaign, from the environment (see differential.rs).
#[derive(Clone, Debug)]
pub struct Campaign {
    pub seeds: Vec<u64>,
    pub ops_per_case: usize,
    pub jobs: usize,
    /// How many divergence classes to shrink and report in full.
    pub shrink_classes: usize,
    /// Trials per shrink.
    pub shrink_budget: usize,
    /// Print every op and result of every case.
    pub verbose: bool,
    /// Also write the summary to this file.
    pub report: Option<PathBuf>,
    /// Command that re-runs one seed (for messages).
    pub rerun_hint: String,
}

struct ClassInfo {
    count: usize,
    seeds: Vec<u64>,
}

/// What a campaign found.
pub struct Summary {
    pub cases: usize,
    pub diverged: usize,
    pub classes: usize,
    pub text: String,
}

fn env_num(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The ops of a case with both sides' results, divergences marked.
pub fn trace_text(out: &Outcome, other: &str) -> String {
    let mut s = String::new();
    for (i, (op, rk, ro)) in out.trace.iter().enumerate() {
        let _ = write!(s, "  {:3}. {op}\n         kernel: {}", i + 1, fmt_res(rk));
        if compare(rk, ro).is_some() {
            let _ = write!(s, "\n         {other:>6}: {}   <-- DIVERGES", fmt_res(ro));
        } else if rk != ro {
            let _ = write!(s, "\n         {other:>6}: {}", fmt_res(ro));
        } else {
            let _ = write!(s, "   ({other} same)");
        }
        s.push('\n');
    }
    s
}

fn fixture_text(cfg: &Config, ops: &[Op]) -> String {
    let tmp = TempDir::new("diff-describe");
    (cfg.fixture)(tmp.path());
    let mut paths = BTreeSet::new();
    for op in ops {
        for p in op.paths() {
            // The path and its ancestors.
            let mut acc = String::new();
            for c in p.split('/').filter(|c| !c.is_empty()) {
                if !acc.is_empty() {
                    acc.push('/');
                }
                acc.push_str(c);
                paths.insert(acc.clone());
            }
        }
    }
    let mut s = String::new();
    for p in paths {
        let _ = writeln!(s, "  /{}:{}", short(&p), fixture::describe(tmp.path(), &p));
    }
    s
}

/// Runs the campaign and returns its summary (also printed).
pub fn run_campaign(cfg: &Config, c: &Campaign) -> Summary {
    install_panic_hook();
    let start = Instant::now();
    let total = c.seeds.len();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<(u64, Outcome)>> = Mutex::new(Vec::new());
    let last_progress = Mutex::new(Instant::now());
    let other = cfg.other_name();
    eprintln!(
        "[differential] {total} case(s), {} ops each, seeds {}..={}, {} job(s), kernel opts {:?}, {other} opts {:?}",
        c.ops_per_case,
        c.seeds.first().copied().unwrap_or(0),
        c.seeds.last().copied().unwrap_or(0),
        c.jobs,
        cfg.kernel_opts,
        cfg.ours_opts
    );
    let running: Mutex<Vec<Option<(u64, Instant)>>> = Mutex::new(vec![None; c.jobs.max(1)]);
    let finished = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        // Reports cases that take suspiciously long (a hung op blocks its
        // worker; our daemon's watchdog kills it after UNIONFS_TEST_TIMEOUT).
        let (running_ref, finished_ref) = (&running, &finished);
        s.spawn(move || {
            let mut waited = 0u64;
            while !finished_ref.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
                waited += 1;
                if waited % 150 != 0 {
                    continue;
                }
                for (seed, t) in running_ref.lock().unwrap().iter().flatten() {
                    if t.elapsed() > Duration::from_secs(30) {
                        eprintln!(
                            "[differential] WARNING: seed {seed} running for {:.0}s (hung op?)",
                            t.elapsed().as_secs_f64()
                        );
                    }
                }
            }
        });
        let workers: Vec<_> = (0..c.jobs.max(1)).map(|j| {
            let (next, done, results, last_progress) = (&next, &done, &results, &last_progress);
            let running = &running;
            std::thread::Builder::new()
                .name(format!("diff-worker-{j}"))
                .spawn_scoped(s, move || loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= total {
                        return;
                    }
                    let seed = c.seeds[i];
                    running.lock().unwrap()[j] = Some((seed, Instant::now()));
                    let ops = (cfg.generate)(seed, c.ops_per_case);
                    let out = run_case(cfg, &ops, None);
                    running.lock().unwrap()[j] = None;
                    if c.verbose {
                        eprintln!(
                            "[differential] seed {seed}: {} op(s) run\n{}",
                            out.trace.len(),
                            trace_text(&out, other)
                        );
                        for d in &out.divs {
                            eprintln!("  DIVERGENCE [{}]\n    {}", d.class, d.detail);
                        }
                    }
                    let mut r = results.lock().unwrap();
                    r.push((seed, out));
                    let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                    let diverged = r.iter().filter(|(_, o)| !o.divs.is_empty()).count();
                    let classes: BTreeSet<String> =
                        r.iter().flat_map(|(_, o)| o.classes()).collect();
                    drop(r);
                    let mut lp = last_progress.lock().unwrap();
                    if n == total || lp.elapsed() > Duration::from_secs(10) {
                        *lp = Instant::now();
                        eprintln!(
                            "[differential] progress: {n}/{total} cases, {diverged} diverged, {} distinct class(es), {:.0}s",
                            classes.len(),
                            start.elapsed().as_secs_f64()
                        );
                    }
                })
                .expect("spawn worker")
        }).collect();
        for w in workers {
            let _ = w.join();
        }
        finished.store(true, Ordering::SeqCst);
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(s, _)| *s);
    let run_time = start.elapsed();

    let mut classes: BTreeMap<String, ClassInfo> = BTreeMap::new();
    let mut diverged = 0;
    for (seed, out) in &results {
        if !out.divs.is_empty() {
            diverged += 1;
        }
        for cl in out.classes() {
            let e = classes.entry(cl).or_insert(ClassInfo {
                count: 0,
                seeds: Vec::new(),
            });
            e.count += 1;
            if e.seeds.len() < 5 {
                e.seeds.push(*seed);
            }
        }
    }

    let mut text = String::new();
    let _ = writeln!(
        text,
        "===== differential summary: {} case(s) run ({} ops each), {diverged} diverged, {} distinct divergence class(es), {:.1}s =====",
        results.len(),
        c.ops_per_case,
        classes.len(),
        run_time.as_secs_f64()
    );
    let mut by_count: Vec<(&String, &ClassInfo)> = classes.iter().collect();
    by_count.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
    for (cl, info) in &by_count {
        let _ = writeln!(
            text,
            "  {:5} case(s)  [{cl}]  seeds {:?}",
            info.count, info.seeds
        );
    }

    // Shrink the most frequent classes (in parallel) and report them.
    let to_shrink: Vec<(String, u64)> = by_count
        .iter()
        .take(c.shrink_classes)
        .map(|(cl, info)| ((*cl).clone(), info.seeds[0]))
        .collect();
    let shrunk: Mutex<Vec<(usize, Shrunk)>> = Mutex::new(Vec::new());
    if !to_shrink.is_empty() {
        eprintln!(
            "[differential] minimising {} divergence class(es)...",
            to_shrink.len()
        );
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for j in 0..c.jobs.max(1) {
                let (next, shrunk, to_shrink) = (&next, &shrunk, &to_shrink);
                std::thread::Builder::new()
                    .name(format!("diff-shrink-{j}"))
                    .spawn_scoped(s, move || loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some((cl, seed)) = to_shrink.get(i) else {
                            return;
                        };
                        let ops = (cfg.generate)(*seed, c.ops_per_case);
                        let r = shrink(cfg, &ops, cl, c.shrink_budget);
                        eprintln!(
                            "[differential] minimised [{cl}]: {} -> {} op(s) in {} trial(s)",
                            ops.len(),
                            r.ops.len(),
                            r.trials
                        );
                        shrunk.lock().unwrap().push((i, r));
                    })
                    .expect("spawn shrinker");
            }
        });
    }
    let mut shrunk = shrunk.into_inner().unwrap();
    shrunk.sort_by_key(|(i, _)| *i);
    // Classes whose minimised op lists are identical are one finding.
    let mut seen: Vec<(Vec<Op>, usize)> = Vec::new();
    let mut n = 0;
    for (i, r) in &shrunk {
        let (cl, seed) = &to_shrink[*i];
        if let Some((_, first)) = seen.iter().find(|(o, _)| *o == r.ops) {
            let _ = writeln!(
                text,
                "\n--- [{cl}] (first seed {seed}): same minimised ops as finding #{first}"
            );
            continue;
        }
        n += 1;
        seen.push((r.ops.clone(), n));
        let _ = writeln!(
            text,
            "\n--- finding #{n}: [{cl}]\n  {} case(s); first seed {seed}; re-run: UNIONFS_DIFF_SEED={seed} {}",
            classes[cl].count, c.rerun_hint
        );
        let _ = writeln!(
            text,
            "  minimised to {} op(s) (from {}, {} trial(s)), on the standard fixture:",
            r.ops.len(),
            c.ops_per_case,
            r.trials
        );
        if r.class != *cl {
            let _ = writeln!(
                text,
                "  (an rm -r was split into its steps; the divergence shows at a step as [{}])",
                r.class
            );
        }
        text += &trace_text(&r.outcome, other);
        let _ = writeln!(
            text,
            "  fixture entries named by these ops (per lower layer):"
        );
        text += &fixture_text(cfg, &r.ops);
        let _ = writeln!(
            text,
            "  divergences of the minimised case (kernel = expected):"
        );
        for d in &r.outcome.divs {
            let mark = if d.class == r.class { "*" } else { " " };
            let _ = writeln!(text, "   {mark}[{}]\n      {}", d.class, d.detail);
        }
    }
    if by_count.len() > to_shrink.len() {
        let _ = writeln!(
            text,
            "\n({} more class(es) not minimised; raise UNIONFS_DIFF_SHRINK_CLASSES)",
            by_count.len() - to_shrink.len()
        );
    }
    // Unminimised details of the first diverging case of each remaining class.
    for (cl, info) in by_count.iter().skip(to_shrink.len()).take(20) {
        if let Some((_, out)) = results.iter().find(|(s, _)| *s == info.seeds[0]) {
            if let Some(d) = out.divs.iter().find(|d| d.class == **cl) {
                let _ = writeln!(text, "  [{cl}] seed {}:\n      {}", info.seeds[0], d.detail);
            }
        }
    }
    if diverged > 0 {
        let tmp = TempDir::new("diff-listing");
        fixture::build(tmp.path());
        let _ = writeln!(
            text,
            "\nThe standard fixture (differential/fixture.rs; every case starts from it):\n{}",
            fixture::listing(tmp.path())
        );
    }
    let _ = writeln!(
        text,
        "===== end of differential summary ({:.1}s in all) =====",
        start.elapsed().as_secs_f64()
    );
    eprintln!("{text}");
    if let Some(p) = &c.report {
        if let Err(e) = std::fs::write(p, &text) {
            eprintln!("cannot write report {}: {e}", p.display());
        }
    }
    Summary {
        cases: results.len(),
        diverged,
        classes: classes.len(),
        text,
    }
}

/// Campaign settings from the environment.
pub fn campaign_from_env(default_cases: u64, default_base: u64, rerun_hint: &str) -> Campaign {
    let ops_per_case = env_num("UNIONFS_DIFF_OPS").unwrap_or(60) as usize;
    let jobs = env_num("UNIONFS_DIFF_JOBS").unwrap_or(2) as usize;
    let report = std::env::var_os("UNIONFS_DIFF_REPORT").map(PathBuf::from);
    if let Some(seed) = env_num("UNIONFS_DIFF_SEED") {
        return Campaign {
            seeds: vec![seed],
            ops_per_case,
            jobs: 1,
            shrink_classes: env_num("UNIONFS_DIFF_SHRINK_CLASSES").unwrap_or(50) as usize,
            shrink_budget: env_num("UNIONFS_DIFF_SHRINK_TRIALS").unwrap_or(500) as usize,
            verbose: true,
            report,
            rerun_hint: rerun_hint.into(),
        };
    }
    let cases = env_num("UNIONFS_DIFF_CASES").unwrap_or(default_cases);
    let base = env_num("UNIONFS_DIFF_SEED_BASE").unwrap_or(default_base);
    Campaign {
        seeds: (base..base + cases).collect(),
        ops_per_case,
        jobs,
        shrink_classes: env_num("UNIONFS_DIFF_SHRINK_CLASSES").unwrap_or(12) as usize,
        shrink_budget: env_num("UNIONFS_DIFF_SHRINK_TRIALS").unwrap_or(300) as usize,
        verbose: std::env::var_os("UNIONFS_DIFF_VERBOSE").is_some(),
        report,
        rerun_hint: rerun_hint.into(),
    }
}
