//! Differential test (overlay-semantics.md 3.8): the same pseudo-random op
//! sequences run on kernel overlayfs and on the implementation under test,
//! over the same lower layers with separate uppers. Every op must give the
//! same result (errno included); afterwards the merged views and the
//! normalised raw upper dirs must match, and the kernel must show the same
//! view over the tested implementation's upper.

mod common;

use common::*;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

const DIRS: &[&str] = &["", "d", "d/e", "x", "n"];
const LEAVES: &[&str] = &["a", "b", "c", "e", "n"];

#[derive(Clone, Debug)]
enum Op {
    Write(String, u8),
    Append(String, u8),
    Truncate(String, i64),
    Unlink(String),
    Mkdir(String),
    Rmdir(String),
    Rename(String, String, u32),
    Chmod(String, u32),
    Symlink(String, String),
    Link(String, String),
    SetXattr(String, u8),
    RemoveXattr(String),
    Mkfifo(String),
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Small deterministic PRNG (xorshift64*), so failures are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[(self.next() % v.len() as u64) as usize]
    }
    fn path(&mut self) -> String {
        let d = self.pick(DIRS);
        let l = self.pick(LEAVES);
        if d.is_empty() {
            l.to_string()
        } else {
            format!("{d}/{l}")
        }
    }
    fn op(&mut self) -> Op {
        let p = self.path();
        let b = (self.next() % 26) as u8;
        match self.next() % 16 {
            0 | 1 => Op::Write(p, b),
            2 => Op::Append(p, b),
            3 => Op::Truncate(p, (b % 4) as i64),
            4 | 5 => Op::Unlink(p),
            6 | 7 => Op::Mkdir(p),
            8 => Op::Rmdir(p),
            9 | 10 => {
                let q = self.path();
                let flags = [0, 0, libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE];
                Op::Rename(p, q, flags[(self.next() % 4) as usize])
            }
            11 => Op::Chmod(p, [0o600, 0o755, 0o640, 0o4755][(b % 4) as usize]),
            12 => Op::Symlink(self.path(), p),
            13 => Op::Link(p, self.path()),
            14 => {
                if b % 3 == 0 {
                    Op::RemoveXattr(p)
                } else {
                    Op::SetXattr(p, b)
                }
            }
            _ => Op::Mkfifo(p),
        }
    }
}

fn errno<T>(r: io::Result<T>) -> Result<(), i32> {
    r.map(drop).map_err(|e| e.raw_os_error().unwrap_or(-1))
}

fn apply(op: &Op, root: &Path) -> Result<(), i32> {
    let p = |s: &str| root.join(s);
    match op {
        // O_NONBLOCK everywhere: opening a fifo must not block (ENXIO instead).
        Op::Write(a, b) => errno(
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(p(a))
                .and_then(|mut f| {
                    io::Write::write_all(&mut f, &[b'a' + b].repeat(*b as usize + 1))
                }),
        ),
        Op::Append(a, b) => errno(
            fs::OpenOptions::new()
                .append(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(p(a))
                .and_then(|mut f| io::Write::write_all(&mut f, &[b'A' + b])),
        ),
        Op::Truncate(a, n) => errno(sys::truncate(&p(a), *n)),
        Op::Unlink(a) => errno(fs::remove_file(p(a))),
        Op::Mkdir(a) => errno(fs::create_dir(p(a))),
        Op::Rmdir(a) => errno(fs::remove_dir(p(a))),
        Op::Rename(a, b, f) => errno(sys::renameat2(&p(a), &p(b), *f)),
        Op::Chmod(a, m) => errno(fs::set_permissions(p(a), fs::Permissions::from_mode(*m))),
        Op::Symlink(t, a) => errno(std::os::unix::fs::symlink(t, p(a))),
        Op::Link(a, b) => errno(fs::hard_link(p(a), p(b))),
        Op::SetXattr(a, b) => errno(sys::lsetxattr(&p(a), "user.v", &[b'0' + b], 0)),
        Op::RemoveXattr(a) => errno(sys::lremovexattr(&p(a), "user.v")),
        Op::Mkfifo(a) => errno(sys::mknod(&p(a), libc::S_IFIFO | 0o644, 0, 0)),
    }
}

fn lowers(fx: &Fixture) {
    fx.lower(1)
        .file("a", b"lower1 a")
        .file("d/a", b"d/a")
        .file("d/b", b"d/b")
        .file("d/e/a", b"d/e/a")
        .file("x/a", b"x/a")
        .file("x/c", b"x/c")
        // No multiply-linked lower files here: their copy-up depends on
        // index=on/off (covered by hardlink.rs).
        .file("x/b", b"x/b")
        .symlink("d/c", "a");
    fx.lower(0)
        .file("b", b"lower0 b")
        .file("d/e/b", b"d/e/b")
        .dir("d/e/e")
        .whiteout("x/c")
        .fifo("d/n")
        .opaque("n")
        .file("n/a", b"n/a");
    fx.lower(1).file("n/b", b"hidden by opaque");
}

/// The raw upper with whiteouts normalised (kernel whiteouts are mode 0000
/// and share one inode) and the opaque flag kept; dir mtimes ignored.
fn raw_upper(root: &Path) -> Tree {
    let mut t = snapshot(
        root,
        SnapOpts {
            nlink: false,
            ..SnapOpts::basic()
        },
    );
    for (rel, n) in t.0.iter_mut() {
        let full = root.join(rel);
        let md = lstat(&full);
        if md.file_type().is_char_device() && md.rdev() == 0 {
            n.kind = 'w';
            n.mode = 0;
            n.uid = 0;
            n.gid = 0;
        }
        if n.kind == 'd' {
            if let Some(v) = opaque_value(&full) {
                n.xattrs.insert("trusted.overlay.opaque".into(), v);
            }
        }
    }
    t
}

fn run_seed(seed: u64, steps: usize) {
    let ours = impl_under_test();
    let Some(fx) = Fixture::for_impl(ours) else {
        return;
    };
    if !environment_ok(Impl::Kernel) {
        return;
    }
    lowers(&fx);
    let k = Mounted::mount(
        Impl::Kernel,
        &fx.lowers(),
        Some(&fx.dir("k_upper")),
        Some(&fx.dir("k_work")),
        &fx.dir("k_merged"),
    );
    let mut o = fx.mount_with(ours);
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut history = Vec::new();
    let mut n_ok = 0;
    for step in 0..steps {
        let op = rng.op();
        let rk = apply(&op, &k.p(""));
        let ro = apply(&op, &o.p(""));
        history.push(format!("{step:3}: {op} -> kernel {rk:?}"));
        n_ok += usize::from(rk.is_ok());
        assert_eq!(
            ro,
            rk,
            "seed {seed} step {step}: {op} gave {} on {ours:?} but {} on kernel\nops so far:\n{}",
            fmt_res(ro),
            fmt_res(rk),
            history.join("\n")
        );
    }
    eprintln!("seed {seed}: {n_ok} of {steps} ops succeeded on the kernel");
    let opts = SnapOpts {
        nlink: true,
        ..SnapOpts::basic()
    };
    let kv = snapshot(&k.p(""), opts);
    let ov = snapshot(&o.p(""), opts);
    assert_same(
        &kv,
        &ov,
        &format!(
            "seed {seed}: merged view kernel (left) vs {ours:?} (right)\nops:\n{}",
            history.join("\n")
        ),
    );
    assert_same(
        &raw_upper(&k.up("")),
        &raw_upper(&o.up("")),
        &format!(
            "seed {seed}: raw upper kernel (left) vs {ours:?} (right)\nops:\n{}",
            history.join("\n")
        ),
    );
    assert_no_wh_markers(&o.up(""));
    // The kernel over the tested implementation's upper shows the same view.
    o.unmount();
    let cross = Mounted::mount(
        Impl::Kernel,
        &fx.lowers(),
        Some(&fx.upper().root),
        Some(&fx.dir("work2")),
        &fx.dir("merged2"),
    );
    assert_same(
        &ov,
        &snapshot(&cross.p(""), opts),
        &format!("seed {seed}: {ours:?} view (left) vs kernel over its upper (right)"),
    );
}

fn fmt_res(r: Result<(), i32>) -> String {
    match r {
        Ok(()) => "Ok".into(),
        Err(e) => errno_name(e),
    }
}

#[test]
fn random_ops_match_kernel_seed_1() {
    run_seed(1, 300);
}

#[test]
fn random_ops_match_kernel_seed_2() {
    run_seed(2, 300);
}

#[test]
fn random_ops_match_kernel_seed_3() {
    run_seed(3, 300);
}

#[test]
fn random_ops_match_kernel_seed_4() {
    run_seed(4, 300);
}

#[test]
fn random_ops_match_kernel_seed_5() {
    run_seed(5, 300);
}

#[test]
fn random_ops_match_kernel_seed_6() {
    run_seed(6, 300);
}

#[test]
fn random_ops_match_kernel_seed_7() {
    run_seed(7, 300);
}

#[test]
fn random_ops_match_kernel_seed_8() {
    run_seed(8, 300);
}
