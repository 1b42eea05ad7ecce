//! Campaigns: running many seeds on worker threads, grouping the divergences
//! into classes, shrinking the most frequent ones and writing the summary;
//! campaign settings from the environment.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::common::{env_num, TempDir};
use super::engine::{install_panic_hook, run_case, trace_text, Config, Outcome};
use super::fixture;
use super::ops::{short, Op};
use super::shrink::{shrink, Shrunk};

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
    let ops_per_case = env_num("UNIONFS_DIFF_OPS", 60) as usize;
    let jobs = env_num("UNIONFS_DIFF_JOBS", 2) as usize;
    let report = std::env::var_os("UNIONFS_DIFF_REPORT").map(PathBuf::from);
    // Set to a number: that one seed, verbose; anything else: a campaign.
    if let Some(seed) = std::env::var("UNIONFS_DIFF_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return Campaign {
            seeds: vec![seed],
            ops_per_case,
            jobs: 1,
            shrink_classes: env_num("UNIONFS_DIFF_SHRINK_CLASSES", 50) as usize,
            shrink_budget: env_num("UNIONFS_DIFF_SHRINK_TRIALS", 500) as usize,
            verbose: true,
            report,
            rerun_hint: rerun_hint.into(),
        };
    }
    let cases = env_num("UNIONFS_DIFF_CASES", default_cases);
    let base = env_num("UNIONFS_DIFF_SEED_BASE", default_base);
    Campaign {
        seeds: (base..base + cases).collect(),
        ops_per_case,
        jobs,
        shrink_classes: env_num("UNIONFS_DIFF_SHRINK_CLASSES", 12) as usize,
        shrink_budget: env_num("UNIONFS_DIFF_SHRINK_TRIALS", 300) as usize,
        verbose: std::env::var_os("UNIONFS_DIFF_VERBOSE").is_some(),
        report,
        rerun_hint: rerun_hint.into(),
    }
}
