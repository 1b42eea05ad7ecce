//! Mounts for a test: [`Mounted`], a union mounted by our binary (child with
//! `-f`, watched by a watchdog) or by kernel overlayfs, and [`Tmpfs`]. `Drop`
//! always unmounts (lazily if busy) and reaps our daemon.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::fixture::Impl;
use super::mountinfo::{mount_type, umount_when_idle};
use super::process::{env_num, run_ok, wait_timeout, BIN};
use super::sys;

/// A tmpfs mounted for a test; unmounted (lazily if busy) on drop.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(at: &Path, opts: &str) -> Tmpfs {
        Tmpfs::mount_type(at, "tmpfs", opts)
    }

    /// A memory filesystem of another type (`ramfs`: no xattrs at all).
    pub fn mount_type(at: &Path, fstype: &str, opts: &str) -> Tmpfs {
        fs::create_dir_all(at).expect("mkdir tmpfs mount point");
        run_ok(
            Command::new("mount")
                .args(["-t", fstype, "-o", opts, fstype])
                .arg(at),
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if sys::umount2(&self.0, 0).is_err() {
            let _ = sys::umount2(&self.0, libc::MNT_DETACH);
        }
    }
}

fn watchdog_limit() -> Duration {
    Duration::from_secs(env_num("UNIONFS_TEST_TIMEOUT", 120))
}

/// Kills a hung daemon so that a stuck syscall in the test fails (ENOTCONN)
/// instead of hanging the suite.
struct Watchdog {
    stop: mpsc::Sender<()>,
    thread: thread::JoinHandle<()>,
}

impl Watchdog {
    fn start(pid: u32, merged: PathBuf) -> Watchdog {
        let (stop, rx) = mpsc::channel::<()>();
        let limit = watchdog_limit();
        let thread = thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!(
                    "watchdog: mount {} alive for more than {limit:?}; killing unionfs-fuse pid {pid}",
                    merged.display()
                );
                let _ = sys::kill(pid, libc::SIGKILL);
            }
        });
        Watchdog { stop, thread }
    }

    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// A mounted union. Unmounts (lazily if busy) and reaps our daemon on drop.
pub struct Mounted {
    pub kind: Impl,
    pub merged: PathBuf,
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    /// Extra `-o` options for kernel mounts only (e.g. `index=on`).
    pub kernel_opts: Option<String>,
    /// Extra `-o` options for our binary (ignored for the kernel).
    pub ours_opts: Option<String>,
    child: Option<Child>,
    watchdog: Option<Watchdog>,
    log: PathBuf,
    mounted: bool,
}

fn join_lowers(lowers: &[PathBuf]) -> String {
    lowers
        .iter()
        .map(|p| p.to_str().expect("utf-8 test path").to_string())
        .collect::<Vec<_>>()
        .join(":")
}

fn read_log(log: &Path) -> String {
    let s = fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = s.lines().rev().take(40).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

impl Mounted {
    /// Mounts `lowers` (top first) plus optional upper/work at `merged`.
    /// Without upper and work the union is read-only.
    pub fn mount(
        kind: Impl,
        lowers: &[PathBuf],
        upper: Option<&Path>,
        work: Option<&Path>,
        merged: &Path,
    ) -> Mounted {
        Mounted::mount_extra(kind, lowers, upper, work, merged, None, None)
    }

    /// As [`Mounted::mount`], adding `kernel_opts` to the `-o` of a kernel
    /// mount (ignored for ours).
    pub fn mount_kernel_opts(
        kind: Impl,
        lowers: &[PathBuf],
        upper: Option<&Path>,
        work: Option<&Path>,
        merged: &Path,
        kernel_opts: &str,
    ) -> Mounted {
        Mounted::mount_extra(kind, lowers, upper, work, merged, Some(kernel_opts), None)
    }

    /// As [`Mounted::mount`], adding `ours_opts` to the `-o` of our binary
    /// (ignored for the kernel).
    pub fn mount_ours_opts(
        kind: Impl,
        lowers: &[PathBuf],
        upper: Option<&Path>,
        work: Option<&Path>,
        merged: &Path,
        ours_opts: &str,
    ) -> Mounted {
        Mounted::mount_extra(kind, lowers, upper, work, merged, None, Some(ours_opts))
    }

    /// As [`Mounted::mount`], adding `opts` to the `-o` of whichever
    /// implementation `kind` is (both understand them).
    pub fn mount_opts(
        kind: Impl,
        lowers: &[PathBuf],
        upper: Option<&Path>,
        work: Option<&Path>,
        merged: &Path,
        opts: &str,
    ) -> Mounted {
        Mounted::mount_extra(kind, lowers, upper, work, merged, Some(opts), Some(opts))
    }

    /// Mounts with extra `-o` options for the kernel and for ours (each
    /// used only by its implementation).
    pub(super) fn mount_extra(
        kind: Impl,
        lowers: &[PathBuf],
        upper: Option<&Path>,
        work: Option<&Path>,
        merged: &Path,
        kernel_opts: Option<&str>,
        ours_opts: Option<&str>,
    ) -> Mounted {
        let log = merged.with_file_name(format!(
            "{}.log",
            merged.file_name().unwrap_or_default().to_string_lossy()
        ));
        let mut m = Mounted {
            kind,
            merged: merged.to_path_buf(),
            lowers: lowers.to_vec(),
            upper: upper.map(Path::to_path_buf),
            work: work.map(Path::to_path_buf),
            kernel_opts: kernel_opts.map(str::to_string),
            ours_opts: ours_opts.map(str::to_string),
            child: None,
            watchdog: None,
            log,
            mounted: false,
        };
        m.do_mount();
        m
    }

    fn do_mount(&mut self) {
        assert!(!self.mounted, "already mounted");
        match self.kind {
            Impl::Kernel => self.mount_kernel(),
            Impl::Ours => self.mount_ours(),
        }
        self.mounted = true;
    }

    fn mount_kernel(&mut self) {
        let mut opts = format!("lowerdir={}", join_lowers(&self.lowers));
        if let (Some(u), Some(w)) = (&self.upper, &self.work) {
            opts += &format!(",upperdir={},workdir={}", u.display(), w.display());
        }
        if let Some(extra) = &self.kernel_opts {
            opts += ",";
            opts += extra;
        }
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&self.merged)
            .output()
            .expect("run mount(8)");
        assert!(
            out.status.success(),
            "kernel overlay mount failed ({opts}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(mount_type(&self.merged).as_deref(), Some("overlay"));
    }

    /// The argv for our binary (without the program name).
    pub fn our_args(&self) -> Vec<String> {
        let mut args = vec![join_lowers(&self.lowers)];
        if let Some(u) = &self.upper {
            args.push(u.display().to_string());
        }
        args.push(self.merged.display().to_string());
        args.push("-f".to_string());
        // An upper without a work dir is ours alone (the kernel needs one).
        match (&self.upper, &self.work) {
            (_, Some(w)) => args.extend(["-o".to_string(), format!("workdir={}", w.display())]),
            (None, None) => args.extend(["-o".to_string(), "ro".to_string()]),
            (Some(_), None) => {}
        }
        if let Some(extra) = &self.ours_opts {
            args.push("-o".to_string());
            args.push(extra.clone());
        }
        // For running a suite against another mode, e.g. `writeback`.
        if let Ok(extra) = std::env::var("UNIONFS_TEST_OURS_OPTS") {
            args.push("-o".to_string());
            args.push(extra);
        }
        args
    }

    fn mount_ours(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open daemon log");
        let mut child = Command::new(BIN)
            .args(self.our_args())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
        let start = Instant::now();
        loop {
            if mount_type(&self.merged).is_some_and(|t| t.starts_with("fuse")) {
                break;
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "unionfs-fuse exited ({st}) before mounting {}; args {:?}; output:\n{}",
                    self.merged.display(),
                    self.our_args(),
                    read_log(&self.log)
                );
            }
            if start.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "unionfs-fuse did not mount {} within 15s; output:\n{}",
                    self.merged.display(),
                    read_log(&self.log)
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
        self.watchdog = Some(Watchdog::start(child.id(), self.merged.clone()));
        self.child = Some(child);
    }

    /// PID of our daemon, if this is our mount.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Path below the merged dir.
    pub fn p(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.merged.clone()
        } else {
            self.merged.join(rel)
        }
    }

    /// Path below the upper dir (panics for a read-only union).
    pub fn up(&self, rel: &str) -> PathBuf {
        let u = self.upper.as_ref().expect("read-only union has no upper");
        if rel.is_empty() {
            u.clone()
        } else {
            u.join(rel)
        }
    }

    /// The daemon's output so far (empty for kernel mounts).
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// Unmounts and (for ours) waits for the daemon; Err describes what went
    /// wrong. Never panics.
    fn teardown(&mut self) -> Result<(), String> {
        let mut errors = Vec::new();
        if self.mounted {
            self.mounted = false;
            match umount_when_idle(&self.merged) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    errors.push("mount stayed busy; detached lazily".to_string());
                    let _ = sys::umount2(&self.merged, libc::MNT_DETACH);
                }
                Err(e) => errors.push(format!("umount {}: {e}", self.merged.display())),
            }
        }
        if let Some(w) = self.watchdog.take() {
            w.stop();
        }
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            match wait_timeout(&mut child, Duration::from_secs(10)) {
                Some(st) if st.success() => {}
                Some(st) => errors.push(format!("unionfs-fuse exited with {st} after unmount")),
                None => {
                    errors.push(format!(
                        "unionfs-fuse (pid {pid}) still running 10s after unmount"
                    ));
                    let _ = sys::kill(pid, libc::SIGTERM);
                    if wait_timeout(&mut child, Duration::from_secs(2)).is_none() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                }
            }
        }
        // A kernel mount of the same dir could still be stacked (should not happen).
        if mount_type(&self.merged).is_some() {
            errors.push(format!("{} is still a mount point", self.merged.display()));
            let _ = sys::umount2(&self.merged, libc::MNT_DETACH);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{}\ndaemon output:\n{}",
                errors.join("; "),
                self.log()
            ))
        }
    }

    /// Unmounts; panics if the unmount or the daemon's exit is not clean.
    pub fn unmount(&mut self) {
        if let Err(e) = self.teardown() {
            panic!("unmount of {:?} mount failed: {e}", self.kind);
        }
    }

    /// Unmounts and mounts the same layers again (persistence tests).
    pub fn remount(&mut self) {
        self.unmount();
        self.do_mount();
    }

    /// Marks the mount as gone (the test unmounted it by other means) and
    /// reaps the daemon, returning its exit status.
    pub fn forget_and_wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        self.mounted = false;
        if let Some(w) = self.watchdog.take() {
            w.stop();
        }
        let mut child = self.child.take()?;
        let st = wait_timeout(&mut child, limit);
        if st.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        st
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            if thread::panicking() {
                eprintln!("teardown of {:?} mount: {e}", self.kind);
            } else {
                panic!("teardown of {:?} mount: {e}", self.kind);
            }
        }
    }
}
