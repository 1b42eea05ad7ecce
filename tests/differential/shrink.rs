//! Shrinking: cutting a diverging op list down (delta debugging, then
//! simpler ops, then splitting rm -r into its steps) while the divergence
//! persists, re-running both sides on fresh fixtures each trial.

use super::engine::{phase_rank, run_case, Config, Outcome};
use super::ops::{self, Op};

/// Result of shrinking one divergence class.
pub struct Shrunk {
    pub class: String,
    pub ops: Vec<Op>,
    pub outcome: Outcome,
    pub trials: usize,
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
