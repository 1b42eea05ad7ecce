//! Generating the op list of a seed: a deterministic PRNG and a generator
//! drawing paths from the fixture's names plus new ones.

use super::fixture;
use super::ops::{Data, Op, Time, SLOTS};

/// Small deterministic PRNG (splitmix64), so a seed always gives the same ops.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_B00C)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    pub fn pick<T: Clone>(&mut self, v: &[T]) -> T {
        v[self.below(v.len() as u64) as usize].clone()
    }
    /// Picks from (weight, value) pairs.
    pub fn weighted<T: Clone>(&mut self, v: &[(u32, T)]) -> T {
        let total: u32 = v.iter().map(|(w, _)| *w).sum();
        let mut x = self.below(total as u64) as u32;
        for (w, t) in v {
            if x < *w {
                return t.clone();
            }
            x -= w;
        }
        unreachable!()
    }
}

/// The generator: paths are drawn from the fixture's dirs and names plus new
/// ones, so ops hit lower, upper, whited-out, opaque and absent objects.
pub struct Gen {
    rng: Rng,
    dirs: Vec<(u32, String)>,
    leaves: Vec<(u32, String)>,
}

impl Gen {
    pub fn new(seed: u64) -> Gen {
        Gen {
            rng: Rng::new(seed),
            dirs: fixture::gen_dirs(),
            leaves: fixture::gen_leaves(),
        }
    }

    fn path(&mut self) -> String {
        let d: String = self.rng.weighted(&self.dirs);
        let l: String = self.rng.weighted(&self.leaves);
        if d.is_empty() {
            l
        } else {
            format!("{d}/{l}")
        }
    }

    /// A path, sometimes a dir itself.
    fn any_path(&mut self) -> String {
        if self.rng.chance(15) {
            self.rng.weighted(&self.dirs)
        } else {
            self.path()
        }
    }

    fn data(&mut self) -> Data {
        let len = match self.rng.below(4) {
            0 => 0,
            1 => 1 + self.rng.below(16) as u32,
            2 => 1 + self.rng.below(300) as u32,
            _ => 1 + self.rng.below(70_000) as u32,
        };
        Data {
            seed: self.rng.below(26) as u8,
            len,
        }
    }

    fn offset(&mut self) -> u64 {
        self.rng
            .pick(&[0, 1, 5, 100, 4096, 70_000, 600_000, 1 << 20])
    }

    fn time(&mut self) -> Time {
        match self.rng.below(6) {
            0 => Time::Now,
            1 => Time::Omit,
            _ => Time::At(
                1_100_000_000 + self.rng.below(100_000_000) as i64,
                self.rng.pick(&[0, 1, 500_000_000, 999_999_999]),
            ),
        }
    }

    fn xattr_name(&mut self) -> String {
        self.rng
            .weighted(&[
                (6, "user.a"),
                (4, "user.b"),
                (3, "trusted.t"),
                (1, "trusted.overlay.opaque"),
                (1, "trusted.overlay.x"),
                (1, "trusted.overlay.overlay.y"),
                (1, "user.overlay.z"),
                (1, "security.capability"),
            ])
            .to_string()
    }

    fn user(&mut self) -> (u32, u32) {
        self.rng.pick(&[(1000, 1000), (2000, 2000), (1000, 50)])
    }

    fn slot(&mut self) -> usize {
        self.rng.below(SLOTS as u64) as usize
    }

    /// One op without the `As` wrapper.
    fn plain(&mut self) -> Op {
        let which = self.rng.weighted(&[
            (8, "read"),
            (6, "stat"),
            (4, "lstat"),
            (2, "readlink"),
            (5, "listdir"),
            (8, "write"),
            (5, "append"),
            (4, "pwrite"),
            (4, "truncate"),
            (4, "create"),
            (6, "mkdir"),
            (4, "rmdir"),
            (6, "unlink"),
            (3, "rmrf"),
            (9, "rename"),
            (4, "link"),
            (3, "symlink"),
            (4, "chmod"),
            (3, "chown"),
            (3, "utimens"),
            (4, "setxattr"),
            (2, "getxattr"),
            (2, "removexattr"),
            (2, "listxattr"),
            (2, "mknod"),
            (4, "open"),
            (4, "fdread"),
            (2, "fdwrite"),
            (2, "fdstat"),
            (1, "close"),
            (1, "diropen"),
            (1, "dirread"),
            (1, "dirrewind"),
        ]);
        match which {
            "read" => Op::Read(self.path()),
            "stat" => Op::Stat(self.any_path()),
            "lstat" => Op::Lstat(self.any_path()),
            "readlink" => Op::ReadLink(self.path()),
            "listdir" => Op::ListDir(self.rng.weighted(&self.dirs.clone())),
            "write" => Op::Write(self.path(), self.data()),
            "append" => Op::Append(self.path(), self.data()),
            "pwrite" => {
                let off = self.offset();
                Op::Pwrite(self.path(), off, self.data())
            }
            "truncate" => {
                let n = self.offset();
                Op::Truncate(self.path(), n)
            }
            "create" => {
                let m = self.rng.pick(&[0o644, 0o600, 0o4755, 0o000]);
                Op::Create(self.path(), m, self.rng.chance(60))
            }
            "mkdir" => {
                let m = self.rng.pick(&[0o755, 0o700, 0o2775, 0o1777]);
                Op::Mkdir(self.path(), m)
            }
            "rmdir" => Op::Rmdir(self.any_path()),
            "unlink" => Op::Unlink(self.path()),
            "rmrf" => Op::RmRf(self.any_path()),
            "rename" => {
                let f = self.rng.weighted(&[
                    (6, 0),
                    (2, libc::RENAME_NOREPLACE),
                    (2, libc::RENAME_EXCHANGE),
                    (1, libc::RENAME_WHITEOUT),
                ]);
                Op::Rename(self.any_path(), self.any_path(), f)
            }
            "link" => Op::Link(self.path(), self.path()),
            "symlink" => {
                let t = self.rng.pick(fixture::SYMLINK_TARGETS).to_string();
                Op::Symlink(t, self.path())
            }
            "chmod" => {
                let m = self
                    .rng
                    .pick(&[0o600, 0o755, 0o640, 0o4755, 0o2750, 0o1777, 0o000, 0o644]);
                Op::Chmod(self.any_path(), m)
            }
            "chown" => {
                let (u, g) = self.rng.pick(&[
                    (Some(1000), Some(1000)),
                    (Some(0), Some(0)),
                    (Some(2000), Some(50)),
                    (Some(1000), None),
                    (None, Some(2000)),
                ]);
                Op::Chown(self.any_path(), u, g, self.rng.chance(50))
            }
            "utimens" => {
                let (a, m) = (self.time(), self.time());
                Op::Utimens(self.any_path(), a, m, self.rng.chance(50))
            }
            "setxattr" => {
                let n = self.xattr_name();
                let v = format!("v{}", self.rng.below(100)).into_bytes();
                let f =
                    self.rng
                        .weighted(&[(6, 0), (2, libc::XATTR_CREATE), (2, libc::XATTR_REPLACE)]);
                Op::SetXattr(self.any_path(), n, v, f)
            }
            "getxattr" => {
                let n = self.xattr_name();
                Op::GetXattr(self.any_path(), n)
            }
            "removexattr" => {
                let n = self.xattr_name();
                Op::RemoveXattr(self.any_path(), n)
            }
            "listxattr" => Op::ListXattr(self.any_path()),
            "mknod" => {
                let (t, ma, mi) = self.rng.weighted(&[
                    (4, (libc::S_IFIFO, 0, 0)),
                    (2, (libc::S_IFCHR, 1, 3)),
                    (1, (libc::S_IFCHR, 0, 0)),
                    (1, (libc::S_IFBLK, 7, 250)),
                    (1, (libc::S_IFREG, 0, 0)),
                ]);
                Op::Mknod(self.path(), t, ma, mi)
            }
            "open" => {
                let s = self.slot();
                Op::Open(s, self.path(), self.rng.chance(35))
            }
            "fdread" => Op::FdRead(self.slot()),
            "fdwrite" => {
                let (s, off) = (self.slot(), self.offset());
                Op::FdWrite(s, off, self.data())
            }
            "fdstat" => Op::FdStat(self.slot()),
            "close" => Op::Close(self.slot()),
            "diropen" => {
                let s = self.slot();
                Op::DirOpen(s, self.rng.weighted(&self.dirs.clone()))
            }
            "dirread" => Op::DirRead(self.slot()),
            "dirrewind" => Op::DirRewind(self.slot()),
            _ => unreachable!(),
        }
    }

    pub fn op(&mut self) -> Op {
        let op = self.plain();
        if self.rng.chance(7) {
            let (u, g) = self.user();
            Op::As(u, g, Box::new(op))
        } else {
            op
        }
    }
}

/// The op list of a seed.
pub fn generate(seed: u64, n: usize) -> Vec<Op> {
    let mut g = Gen::new(seed);
    (0..n).map(|_| g.op()).collect()
}
