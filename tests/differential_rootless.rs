//! The differential harness (differential.rs) in a user namespace: kernel
//! overlayfs mounted with `userxattr` and unionfs-fuse in its automatic
//! userxattr mode, both inside one namespace made by an unprivileged user.
//!
//! Each test (through tests/rootless_support) starts, as root, a private
//! mount namespace where a `0666` copy of the FUSE device node is bound
//! over /dev/fuse (so the host's /dev/fuse keeps its mode), drops to a
//! test user with setpriv, enters a new user and
//! mount namespace with unshare(1), and runs itself there
//! (`UNIONFS_ROOTLESS_INNER`), where the harness builds its fixtures and
//! makes both mounts as the namespace's root. Two users, made by .ci/run:
//! * `unionfs-one`, without a subordinate range: the single-id map `0 U 1`;
//! * `unionfs-sub`, with one in /etc/subuid: `0 U 1` plus `1 S 65535`
//!   (`unshare --map-auto`, through newuidmap), as rootless podman has.
//!
//! The comparisons are the root harness's (op results, merged trees, raw
//! uppers, each upper remounted by the other side), plus
//! [`links::check_link_groups`] on every view but the kernel's first one:
//! one st_ino and one nlink for every name of one object. Differences from
//! root runs, each for a reason:
//! * the fixture (fixture::build_rootless) has no device nodes, trusted.*
//!   xattrs or lower hard links, and with a single-id map no other owners:
//!   a user cannot make them (nor can a rootless image unpacker);
//! * with a single-id map no op runs as another user (setfsuid to an
//!   unmapped id does nothing);
//! * the raw uppers' `user.overlay.{origin,impure,uuid,nlink}` are not
//!   compared (the kernel stores an empty origin without
//!   CAP_DAC_READ_SEARCH);
//! * right after `link(2)` the kernel shows the old number at the old name
//!   and ours one number for both (README, Deviations): the link check is
//!   not applied to the kernel's first view.
//!
//! Environment: as differential.rs (`UNIONFS_DIFF_CASES`, `_SEED`, `_OPS`,
//! `_JOBS`, ...), passed into the namespace. Campaign by hand:
//! `UNIONFS_DIFF_CASES=2000 cargo test --test differential_rootless random -- --nocapture`

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
#[path = "differential/links.rs"]
mod links;
#[path = "differential/ops.rs"]
mod ops;
mod rootless_support;
#[path = "differential/shrink.rs"]
mod shrink;
#[path = "differential/snap.rs"]
mod snap;

use std::path::Path;

use campaign::run_campaign;
use engine::{run_case, Config};
use ops::{Data, Op, Time};
use rootless_support::{inside, run_inside, Map};

fn fixture_single(root: &Path) {
    fixture::build_rootless(root, fixture::Rootless { foreign_ids: false });
}

fn fixture_range(root: &Path) {
    fixture::build_rootless(root, fixture::Rootless { foreign_ids: true });
}

fn has_other_user(op: &Op) -> bool {
    matches!(op, Op::As(..))
}

/// With a single-id map no op runs as another user.
fn generate_single(seed: u64, n: usize) -> Vec<Op> {
    let mut v = generate::generate(seed, n);
    v.retain(|o| !has_other_user(o));
    v
}

const USERXATTR_BOOKKEEPING: &[&str] = &[
    "user.overlay.origin",
    "user.overlay.impure",
    "user.overlay.uuid",
    "user.overlay.nlink",
];

fn config(map: Map) -> Config {
    Config {
        kernel_opts: "userxattr".into(),
        fixture: match map {
            Map::Single => fixture_single,
            Map::Range => fixture_range,
        },
        generate: match map {
            Map::Single => generate_single,
            Map::Range => generate::generate,
        },
        raw_ignored: USERXATTR_BOOKKEEPING,
        view_check: Some(links::check_link_groups),
        ..Config::standard()
    }
}

fn d(seed: u8, len: u32) -> Data {
    Data { seed, len }
}

fn s(p: &str) -> String {
    p.to_string()
}

/// What rootless use meets: hard links made in the union (the issue's
/// case), copy-ups of the user's files and of others', ids the namespace
/// does not map, what a namespace's root may not do (devices, trusted.*),
/// whiteouts, opaque dirs and EXDEV renames under `user.overlay.*`.
fn fixed_scenario(map: Map) -> Vec<Op> {
    let t = |sec: i64| Time::At(1_200_000_000 + sec, 0);
    let mut v = vec![
        // ln of a lower file, then of an upper one, then across dirs.
        Op::Link(s("b"), s("b2")),
        Op::Lstat(s("b")),
        Op::Lstat(s("b2")),
        Op::Append(s("b2"), d(1, 5)),
        Op::Read(s("b")),
        Op::Link(s("d/c"), s("x/c2")),
        Op::Link(s("x/c2"), s("d/e/c3")),
        Op::Unlink(s("d/c")),
        Op::Lstat(s("x/c2")),
        Op::Write(s("nf"), d(2, 7)),
        Op::Link(s("nf"), s("d/nf2")),
        Op::Rename(s("d/nf2"), s("x/nf3"), 0),
        Op::Lstat(s("nf")),
        Op::Link(s("h1"), s("h1b")),
        Op::Write(s("h1"), d(3, 9)),
        Op::Read(s("h1b")),
        // Copy-ups of the user's files: data, metadata only, set-id.
        Op::Append(s("d/a"), d(4, 10)),
        Op::Chmod(s("d/z"), 0o600),
        Op::SetXattr(s("s"), s("user.a"), b"x".to_vec(), 0),
        Op::Lstat(s("s")),
        Op::Utimens(s("x/b"), t(1), t(2), false),
        Op::Lstat(s("x/b")),
        Op::Truncate(s("sp"), 4096),
        Op::Append(s("cap"), d(5, 3)),
        Op::ListXattr(s("cap")),
        // Ids: to unmapped ones (EINVAL), files of other owners.
        Op::Chown(s("b"), Some(4_000_000), None, true),
        Op::Chown(s("oth"), Some(2000), Some(50), true),
        Op::Lstat(s("oth")),
        Op::Append(s("u/a"), d(6, 4)),
        Op::Lstat(s("g")),
        Op::Chmod(s("g"), 0o2750),
        Op::Lstat(s("g")),
        // What a namespace's root may not do.
        Op::Mknod(s("cdev"), libc::S_IFCHR, 1, 3),
        Op::Mknod(s("bdev"), libc::S_IFBLK, 7, 250),
        Op::Mknod(s("c00"), libc::S_IFCHR, 0, 0),
        Op::Mknod(s("fifo2"), libc::S_IFIFO, 0, 0),
        Op::SetXattr(s("b"), s("trusted.t"), b"v".to_vec(), 0),
        Op::GetXattr(s("x/a"), s("trusted.t")),
        Op::SetXattr(s("oth"), s("user.overlay.x"), b"p".to_vec(), 0),
        Op::ListXattr(s("oth")),
        // Whiteouts, opaque dirs, renames.
        Op::Unlink(s("x/a")),
        Op::Rmdir(s("d/e/e")),
        Op::RmRf(s("w")),
        Op::Mkdir(s("w"), 0o755),
        Op::ListDir(s("w")),
        Op::ListDir(s("n")),
        Op::ListDir(s("o")),
        Op::Rename(s("x"), s("x2"), 0),
        Op::Mkdir(s("nd"), 0o755),
        Op::Write(s("nd/f"), d(7, 5)),
        Op::Link(s("nd/f"), s("nd/g")),
        Op::Rename(s("nd"), s("nd2"), 0),
        Op::Rename(s("b"), s("d/z"), libc::RENAME_EXCHANGE),
        Op::RmRf(s("d2f")),
        Op::Write(s("d2f"), d(8, 8)),
        Op::Symlink(s("d"), s("sl")),
        Op::Write(s("sl/via-link"), d(9, 6)),
        Op::Chmod(s("l"), 0o600),
        Op::Stat(s("l")),
    ];
    if map == Map::Range {
        v.extend([
            Op::As(1000, 1000, Box::new(Op::Append(s("u/a"), d(10, 8)))),
            Op::As(2000, 2000, Box::new(Op::Read(s("u/a")))),
            Op::As(1000, 1000, Box::new(Op::Link(s("a"), s("d/e/a-link")))),
            Op::Chmod(s("d/e"), 0o1777),
            Op::As(1000, 1000, Box::new(Op::Create(s("d/e/mine"), 0o644, true))),
            Op::As(
                1000,
                1000,
                Box::new(Op::Link(s("d/e/mine"), s("d/e/mine2"))),
            ),
            Op::Lstat(s("d/e/mine")),
            Op::As(2000, 2000, Box::new(Op::Unlink(s("d/e/mine")))),
            Op::As(
                65534,
                65534,
                Box::new(Op::Create(s("d/e/nobody"), 0o644, true)),
            ),
        ]);
    }
    v.push(Op::ListDir(String::new()));
    v
}

fn fixed_scenario_matches_the_kernel(map: Map) {
    let ops = fixed_scenario(map);
    let cfg = Config {
        keep_going: true,
        ..config(map)
    };
    let title = format!("rootless fixed scenario ({} map)", map.name());
    let Some((out, mut msg)) = engine::run_fixed(&cfg, &ops, &title) else {
        return;
    };
    msg += &engine::trace_text(&out, "ours");
    panic!("{msg}");
}

fn random_cases_match_the_kernel(map: Map, name: &str) {
    let hint = format!("cargo test --test differential_rootless {name} -- --nocapture");
    let c = campaign::campaign_from_env(40, 1, &hint);
    let sum = run_campaign(&config(map), &c);
    assert!(
        sum.diverged == 0,
        "{} of {} rootless random case(s) ({} map) diverged from kernel overlayfs \
         ({} distinct class(es)):\n{}",
        sum.diverged,
        sum.cases,
        map.name(),
        sum.classes,
        sum.text
    );
}

/// The case: `ln` of a lower file, both names stat'ed, then again
/// over a fresh mount of each upper.
fn hard_link_shows_one_st_ino_and_nlink(map: Map) {
    let ops = vec![
        Op::Link(s("b"), s("b2")),
        Op::Lstat(s("b")),
        Op::Lstat(s("b2")),
    ];
    let cfg = Config {
        keep_going: true,
        ..config(map)
    };
    let out = run_case(&cfg, &ops, None);
    assert!(out.divs.is_empty(), "{:#?}", out.divs);
}

macro_rules! rootless_tests {
    ($($name:ident: $map:expr => $body:expr;)*) => {$(
        #[test]
        fn $name() {
            match inside() {
                Some(map) => {
                    assert_eq!(map, $map);
                    $body(map, stringify!($name));
                }
                None => {
                    run_inside(stringify!($name), $map);
                }
            }
        }
    )*};
}

rootless_tests! {
    rootless_single_id_map_fixed_scenario_matches_the_kernel: Map::Single =>
        |m, _| fixed_scenario_matches_the_kernel(m);
    rootless_subordinate_range_fixed_scenario_matches_the_kernel: Map::Range =>
        |m, _| fixed_scenario_matches_the_kernel(m);
    rootless_single_id_map_random_cases_match_the_kernel: Map::Single =>
        random_cases_match_the_kernel;
    rootless_subordinate_range_random_cases_match_the_kernel: Map::Range =>
        random_cases_match_the_kernel;
    rootless_single_id_map_hard_link_shows_one_st_ino_and_nlink: Map::Single =>
        |m, _| hard_link_shows_one_st_ino_and_nlink(m);
    rootless_subordinate_range_hard_link_shows_one_st_ino_and_nlink: Map::Range =>
        |m, _| hard_link_shows_one_st_ino_and_nlink(m);
}
