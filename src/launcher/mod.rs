//! `unionfs-run`: runs a command inside a layered rootfs that unionfs-fuse
//! mounts, in a private mount namespace, as a list of named steps (each with
//! its own [`Error`] variant), in bubblewrap's order:
//!
//! Launcher process (single-threaded until the server is a child):
//! 1. `check layers`, `scratch dir`: absolute layer paths; a scratch dir in
//!    $TMPDIR holds the mount point and, without UPPER, a throwaway upper
//!    and workdir, and a lock file this process holds while it lives.
//! 2. `unshare`: a mount namespace, plus a user namespace when not root
//!    (`open /dev/fuse` first, `id maps` after: the caller becomes uid 0),
//!    then `make / rslave` before anything is mounted, so nothing leaks out.
//! 3. `start unionfs-fuse` (`-f`, a child tied to us) and `wait for union
//!    mount`.
//! 4. `fork command` (in a new PID namespace with `--pid`).
//!
//! Command process ([`rootfs`]): `command mount namespace` (its own, so
//! switching root moves nobody else), `mount /proc`, `mount /dev`, `mount
//! /sys`, `pivot_root` (or `chroot`), `exec`.
//!
//! Back in the launcher: forward SIGINT/SIGTERM/SIGHUP, wait, then stop the
//! server, unmount the union lazily, remove the scratch dir (and with it a
//! throwaway upper), then those that killed runs left (their locks are
//! free). Exit status: the command's, 128+N after signal N, 125 for a
//! launcher failure, 126/127 when the command cannot run / is missing.
//!
//! Every kernel call of these steps goes through the [`seam::Sys`] trait, so
//! unit tests check the exact order with a recording fake.

pub mod cli;
pub mod error;
#[cfg(test)]
mod fake;
pub mod oci_image;
pub mod process;
pub mod rootfs;
pub mod seam;
pub mod userns;

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use cli::{Cli, Config};
pub use error::Error;
use seam::{Mount, RealSys, Sys};
use userns::IdMapping;

use crate::errno::Errno;

/// How long the union may take to appear.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server gets to exit after SIGTERM before SIGKILL.
const SERVER_GRACE: Duration = Duration::from_secs(3);

/// Who the launcher is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Real root: a mount namespace is enough.
    Root,
    /// Anyone else: a user namespace too, with this map.
    Rootless(IdMapping),
}

/// Facts about the host the plan depends on.
#[derive(Debug, Clone)]
pub struct Host {
    pub mode: Mode,
    pub pid: i32,
    pub tmpdir: PathBuf,
    /// The unionfs-fuse binary to run.
    pub server: PathBuf,
}

impl Host {
    pub fn probe(config: &Config) -> Host {
        let mode = if crate::sys::proc::geteuid() == 0 {
            Mode::Root
        } else {
            let (uid, gid) = crate::sys::ns::real_ids();
            Mode::Rootless(IdMapping::probe(uid, gid))
        };
        let beside_us = std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.join("unionfs-fuse")))
            .filter(|p| p.is_file());
        Host {
            mode,
            pid: crate::sys::proc::getpid(),
            tmpdir: std::env::temp_dir(),
            server: config
                .unionfs_fuse
                .clone()
                .or(beside_us)
                .unwrap_or_else(|| PathBuf::from("unionfs-fuse")),
        }
    }
}

/// Everything the steps need, decided before the first one runs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub mode: Mode,
    pub scratch: PathBuf,
    /// The mount point, inside `scratch`.
    pub merged: PathBuf,
    pub upper: PathBuf,
    /// True when `upper` is ours, to remove afterwards.
    pub throwaway: bool,
    pub work: Option<PathBuf>,
    pub server_argv: Vec<OsString>,
    pub command: Vec<OsString>,
    pub chroot: bool,
    pub pid_ns: bool,
}

/// Joins lower dirs into unionfs-fuse's `L1:L2` form, escaping `:` and `\`.
pub fn join_lowers(lowers: &[PathBuf]) -> OsString {
    let mut out = Vec::new();
    for (i, l) in lowers.iter().enumerate() {
        if i > 0 {
            out.push(b':');
        }
        for &b in l.as_os_str().as_bytes() {
            if b == b':' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
    }
    OsString::from_vec(out)
}

fn server_argv(server: &Path, lowers: &[PathBuf], plan: &Plan, opts: &[String]) -> Vec<OsString> {
    let mut o: Vec<String> = Vec::new();
    if let Some(w) = plan.work.as_ref().and_then(|p| p.to_str()) {
        // A comma would split the option; without workdir= unionfs-fuse
        // stages copy-ups in the upper itself.
        if w.contains(',') {
            log::warn!("work dir {w} contains a comma; not passing it to unionfs-fuse");
        } else {
            o.push(format!("workdir={w}"));
        }
    }
    o.extend(opts.iter().filter(|s| !s.is_empty()).cloned());
    let mut argv = vec![server.as_os_str().to_owned(), "-f".into()];
    if !o.is_empty() {
        argv.push("-o".into());
        argv.push(o.join(",").into());
    }
    argv.push(join_lowers(lowers));
    argv.push(plan.upper.clone().into_os_string());
    argv.push(plan.merged.clone().into_os_string());
    argv
}

/// Steps `check layers` and `scratch dir`.
pub fn prepare<S: Sys>(sys: &mut S, config: &Config, host: &Host) -> Result<Plan, Error> {
    // The error names the path with its role: "upper dir /x".
    let mut canon = |role: &str, p: &PathBuf| {
        sys.canonical_dir(p)
            .map_err(|e| Error::Layers(PathBuf::from(format!("{role} {}", p.display())), e))
    };
    let lowers = config
        .lowers
        .iter()
        .map(|l| canon("lower dir", l))
        .collect::<Result<Vec<_>, _>>()?;
    let upper = config
        .upper
        .as_ref()
        .map(|u| canon("upper dir", u))
        .transpose()?;
    let work = config
        .workdir
        .as_ref()
        .map(|w| canon("work dir", w))
        .transpose()?;
    if lowers.is_empty() {
        return Err(Error::Layers(PathBuf::new(), Errno::EINVAL));
    }
    if work.is_some() && upper.is_none() {
        return Err(Error::Layers(
            PathBuf::from("--workdir needs an UPPER after the lower dirs"),
            Errno::EINVAL,
        ));
    }

    let scratch = make_scratch(sys, host)?;
    let result = fill_scratch(sys, &scratch, upper, work);
    let (upper, work, throwaway) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = sys.remove_tree(&scratch);
            return Err(e);
        }
    };
    let mut plan = Plan {
        mode: host.mode.clone(),
        merged: scratch.join("merged"),
        scratch,
        upper,
        throwaway,
        work,
        server_argv: Vec::new(),
        command: if config.command.is_empty() {
            vec!["/bin/sh".into()]
        } else {
            config.command.clone()
        },
        chroot: config.chroot,
        pid_ns: config.pid,
    };
    plan.server_argv = server_argv(&host.server, &lowers, &plan, &config.opts);
    Ok(plan)
}

/// Scratch dirs are `$TMPDIR/unionfs-run.PID[.N]`.
const SCRATCH_PREFIX: &str = "unionfs-run.";
/// The file in a scratch dir that its run keeps locked while it lives.
const SCRATCH_LOCK: &str = "lock";

/// A fresh scratch dir, private to the caller.
fn make_scratch<S: Sys>(sys: &mut S, host: &Host) -> Result<PathBuf, Error> {
    let mut last = Errno::EEXIST;
    for n in 0..100 {
        let name = match n {
            0 => format!("{SCRATCH_PREFIX}{}", host.pid),
            n => format!("{SCRATCH_PREFIX}{}.{n}", host.pid),
        };
        let path = host.tmpdir.join(name);
        match sys.mkdir(&path, 0o700) {
            Ok(()) => return Ok(path),
            Err(e) if e == Errno::EEXIST => last = e,
            Err(e) => return Err(Error::Scratch(path, e)),
        }
    }
    Err(Error::Scratch(host.tmpdir.clone(), last))
}

/// Whether `name` is one that `make_scratch` gives.
fn is_scratch_name(name: &std::ffi::OsStr) -> bool {
    let Some(rest) = name.as_bytes().strip_prefix(SCRATCH_PREFIX.as_bytes()) else {
        return false;
    };
    let parts: Vec<&[u8]> = rest.split(|&b| b == b'.').collect();
    parts.len() <= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit))
}

type Layout = (PathBuf, Option<PathBuf>, bool);

/// The mount point, and a throwaway upper and workdir when no UPPER is given.
fn fill_scratch<S: Sys>(
    sys: &mut S,
    scratch: &Path,
    upper: Option<PathBuf>,
    work: Option<PathBuf>,
) -> Result<Layout, Error> {
    // Locked before `merged` exists: a sweep leaves a dir without it alone.
    let lock = scratch.join(SCRATCH_LOCK);
    match sys.create_lock(&lock) {
        Ok(true) => {}
        Ok(false) => log::info!(
            "no file locks in {}: if this run is killed, no later run removes its dir",
            scratch.display()
        ),
        Err(e) => return Err(Error::Scratch(lock, e)),
    }
    let mut mkdir = |name: &str, mode| {
        let p = scratch.join(name);
        sys.mkdir(&p, mode)
            .map_err(|e| Error::Scratch(p.clone(), e))?;
        Ok::<_, Error>(p)
    };
    mkdir("merged", 0o755)?;
    Ok(match upper {
        Some(u) => (u, work, false),
        None => (mkdir("upper", 0o755)?, Some(mkdir("work", 0o700)?), true),
    })
}

/// Steps `open /dev/fuse`, `unshare`, `id maps`, `make / rslave`.
pub fn enter_namespaces<S: Sys>(sys: &mut S, plan: &Plan) -> Result<(), Error> {
    match &plan.mode {
        Mode::Root => sys
            .unshare(libc::CLONE_NEWNS)
            .map_err(|e| Error::Unshare("CLONE_NEWNS".into(), e))?,
        Mode::Rootless(mapping) => {
            // The server opens /dev/fuse as the caller: say so before anything.
            sys.access_rw(Path::new("/dev/fuse"))
                .map_err(Error::FuseDevice)?;
            if let IdMapping::Subordinate { .. } = mapping {
                sys.start_id_helper(mapping).map_err(Error::IdMapHelper)?;
            }
            sys.unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS)
                .map_err(|e| {
                    let note = if e == Errno::EINVAL {
                        "CLONE_NEWUSER|CLONE_NEWNS (needs a single-threaded process)"
                    } else {
                        "CLONE_NEWUSER|CLONE_NEWNS"
                    };
                    Error::Unshare(note.into(), e)
                })?;
            write_id_maps(sys, mapping)?;
        }
    }
    // Before anything is mounted: mounts made from here on stay in here.
    sys.mount(&Mount {
        source: None,
        target: Path::new("/"),
        fstype: None,
        flags: libc::MS_REC | libc::MS_SLAVE,
        data: None,
    })
    .map_err(Error::Propagation)
}

fn write_id_maps<S: Sys>(sys: &mut S, mapping: &IdMapping) -> Result<(), Error> {
    match mapping {
        IdMapping::Single { uid, gid } => {
            // Unprivileged gid_map writes need setgroups denied first.
            let writes = [
                ("/proc/self/setgroups", "deny\n".to_string()),
                ("/proc/self/uid_map", userns::single_map_line(*uid)),
                ("/proc/self/gid_map", userns::single_map_line(*gid)),
            ];
            for (path, data) in writes {
                sys.write_file(Path::new(path), &data)
                    .map_err(|e| Error::IdMaps(path.into(), e))?;
            }
            Ok(())
        }
        IdMapping::Subordinate { .. } => sys
            .finish_id_helper()
            .map_err(|e| Error::IdMaps("newuidmap/newgidmap".into(), e)),
    }
}

/// Steps `start unionfs-fuse` and `wait for union mount`.
pub fn start_union<S: Sys>(sys: &mut S, plan: &Plan) -> Result<(), Error> {
    let bin = PathBuf::from(plan.server_argv.first().cloned().unwrap_or_default());
    let pid = sys
        .spawn_server(&plan.server_argv)
        .map_err(|e| Error::StartUnion(bin, e))?;
    log::debug!("unionfs-fuse is pid {pid}");
    let start = Instant::now();
    loop {
        if sys.is_mount_point(&plan.merged) {
            return Ok(());
        }
        if let Some(raw) = sys.server_exited() {
            let msg = format!(
                "unionfs-fuse exited with status {} before mounting (its message is above)",
                process::exit_status(raw)
            );
            // No errno of ours to add: the server printed the reason.
            return Err(Error::UnionReady(msg, Errno(0)));
        }
        if start.elapsed() > MOUNT_TIMEOUT {
            let msg = format!(
                "no mount on {} after {MOUNT_TIMEOUT:?}",
                plan.merged.display()
            );
            return Err(Error::UnionReady(msg, Errno(libc::ETIMEDOUT)));
        }
        sys.sleep(Duration::from_millis(2));
    }
}

/// Stops the server and unmounts the union lazily. Problems are logged: the
/// command's status matters more.
pub fn stop_union<S: Sys>(sys: &mut S, plan: &Plan) {
    sys.stop_server(SERVER_GRACE);
    // The server detaches its mount on SIGTERM; this covers a server that
    // was killed instead. EINVAL: nothing mounted there any more.
    match sys.umount(&plan.merged, libc::MNT_DETACH) {
        Ok(()) => {}
        Err(e) if e == Errno::EINVAL || e == Errno::ENOENT => {}
        Err(e) => log::warn!("unmount {}: {e}", plan.merged.display()),
    }
}

/// Removes the scratch dir, with a throwaway upper and workdir.
pub fn remove_scratch<S: Sys>(sys: &mut S, plan: &Plan) {
    // rmdir first: it fails on a mount point, so removal never walks into one.
    match sys.remove_dir(&plan.merged) {
        Ok(()) => {}
        Err(e) if e == Errno::ENOENT => {}
        Err(e) => {
            let (scratch, merged) = (plan.scratch.display(), plan.merged.display());
            log::warn!("leaving {scratch} in place: {merged}: {e}");
            return;
        }
    }
    if plan.throwaway {
        for dir in std::iter::once(&plan.upper).chain(plan.work.iter()) {
            if let Err(e) = sys.remove_tree(dir) {
                log::warn!("removing {}: {e}", dir.display());
            }
        }
    }
    let _ = sys.remove_file(&plan.scratch.join(SCRATCH_LOCK));
    if let Err(e) = sys.remove_dir(&plan.scratch) {
        log::warn!("removing {}: {e}", plan.scratch.display());
    }
}

/// Removes the scratch dirs of runs that were killed before they could
/// (SIGKILL, OOM): those whose lock no process holds. A live run holds its
/// lock from before its `merged` dir exists to its exit, so a dir without
/// `merged` may be a run still setting up, and one without a lock file may
/// be a live run of an older unionfs-run: both are left alone.
pub fn sweep_stale_scratch<S: Sys>(sys: &mut S, tmpdir: &Path) {
    for dir in sys.scratch_dirs(tmpdir) {
        let lock = dir.join(SCRATCH_LOCK);
        if !matches!(sys.try_lock(&lock), Ok(true)) {
            continue;
        }
        // rmdir first, as in remove_scratch: never walk into a mount.
        let merged = dir.join("merged");
        if sys.entry(&merged) == seam::Entry::Dir && sys.remove_dir(&merged).is_ok() {
            let mut result = Ok(());
            for name in ["upper", "work"] {
                let p = dir.join(name);
                if sys.entry(&p) == seam::Entry::Dir {
                    result = result.and(sys.remove_tree(&p));
                }
            }
            let result = result.and(sys.remove_file(&lock)).and(sys.remove_dir(&dir));
            match result {
                Ok(()) => log::info!("removed {}, left by a killed run", dir.display()),
                Err(e) => log::warn!("removing {}, left by a killed run: {e}", dir.display()),
            }
        }
        sys.unlock(&lock);
    }
}

/// Runs `config` to the end; the command's exit status, or the failing step.
pub fn run(config: &Config) -> Result<i32, Error> {
    let host = Host::probe(config);
    if let Mode::Rootless(IdMapping::Single { .. }) = host.mode {
        log::warn!("{}", userns::SINGLE_MAP_NOTE);
    }
    let mut sys = RealSys::default();
    log::debug!("step: check layers, scratch dir");
    let plan = prepare(&mut sys, config, &host)?;
    let mut result = launch(&mut sys, &plan);
    if let (Ok(_), Some(out)) = (&result, &config.commit) {
        // The union is unmounted by now: the upper is a finished layer.
        log::debug!("step: commit");
        let mut out = out.clone();
        out.userxattr = !matches!(host.mode, Mode::Root);
        if commit_layer(&plan.upper, &out, Some(&config.lowers)).is_err() {
            result = Ok(error::EXIT_LAUNCHER);
        }
    }
    remove_scratch(&mut sys, &plan);
    sweep_stale_scratch(&mut sys, &host.tmpdir);
    result
}

/// Where and how to write a layer tarball.
#[derive(Clone, Debug)]
pub struct LayerOut {
    pub file: PathBuf,
    pub gzip: bool,
    pub mtime: Option<i64>,
    pub userxattr: bool,
}

impl LayerOut {
    pub fn new(file: &Path, gzip: bool, mtime: Option<i64>, userxattr: bool) -> LayerOut {
        let name = file.to_string_lossy();
        LayerOut {
            file: file.to_path_buf(),
            gzip: gzip || name.ends_with(".gz") || name.ends_with(".tgz"),
            mtime,
            userxattr,
        }
    }
}

/// A layer tool run instead of a command.
#[derive(Clone, Debug)]
pub enum LayerJob {
    Export(PathBuf, LayerOut),
    /// (tarball, target dir, userxattr)
    Unpack(PathBuf, PathBuf, bool),
}

/// Runs a layer job; prints the diff_id, or the error. Returns the exit code.
pub fn run_layer_job(job: &LayerJob) -> i32 {
    let r = match job {
        LayerJob::Export(upper, out) => {
            // Unprivileged, only user.overlay.* can be what the upper uses.
            let out = LayerOut {
                userxattr: out.userxattr || crate::sys::proc::needs_userxattr(),
                ..out.clone()
            };
            commit_layer(upper, &out, None)
        }
        LayerJob::Unpack(file, dir, userxattr) => {
            let opts = crate::oci::UnpackOptions {
                userxattr: *userxattr,
                ..Default::default()
            };
            match crate::oci::unpack_file(file, dir, &opts) {
                Ok(rep) => print_digest(&rep.diff_id.to_string(), false),
                Err(e) => {
                    eprintln!("unionfs-run: unpack {}: {e}", file.display());
                    Err(())
                }
            }
        }
    };
    if r.is_ok() {
        0
    } else {
        error::EXIT_LAUNCHER
    }
}

/// Exports `upper` as a layer tarball (`-`: to stdout) and prints its
/// diff_id. The empty /proc, /dev and /sys dirs a run creates for its
/// mounts are not part of the layer: after a run (`lowers` given) those no
/// lower has; for an upper alone, those made in it (no overlay xattrs).
fn commit_layer(upper: &Path, out: &LayerOut, lowers: Option<&[PathBuf]>) -> Result<(), ()> {
    let mut exclude = Vec::new();
    for d in ["proc", "dev", "sys"] {
        let empty = std::fs::read_dir(upper.join(d)).is_ok_and(|mut r| r.next().is_none());
        let made_by_run = match lowers {
            Some(lowers) => !lowers.iter().any(|l| l.join(d).exists()),
            None => crate::oci::is_plain_upper_dir(upper, d),
        };
        if empty && made_by_run {
            exclude.push(PathBuf::from(d));
        }
    }
    let opts = crate::oci::ExportOptions {
        userxattr: out.userxattr,
        mtime: out
            .mtime
            .map(crate::oci::MtimePolicy::Fixed)
            .unwrap_or_default(),
        compression: if out.gzip {
            crate::oci::Compression::Gzip
        } else {
            crate::oci::Compression::None
        },
        exclude,
    };
    let to_stdout = out.file.as_os_str() == "-";
    let r = if to_stdout {
        let mut w = std::io::BufWriter::new(std::io::stdout().lock());
        crate::oci::export(upper, &mut w, &opts).and_then(|d| {
            std::io::Write::flush(&mut w).map_err(crate::oci::LayerError::Write)?;
            Ok(d)
        })
    } else {
        crate::oci::export_file(upper, &out.file, &opts)
    };
    match r {
        // With the layer on stdout, the digest goes to stderr.
        Ok(d) => print_digest(&d.diff_id.to_string(), to_stdout),
        Err(e) => {
            eprintln!("unionfs-run: export {}: {e}", upper.display());
            Err(())
        }
    }
}

/// Prints a digest line; a closed stdout (`| head`) is an error, not a panic.
fn print_digest(digest: &str, to_stderr: bool) -> Result<(), ()> {
    use std::io::Write;
    let r = if to_stderr {
        writeln!(std::io::stderr(), "{digest}")
    } else {
        writeln!(std::io::stdout(), "{digest}")
    };
    r.map_err(|e| eprintln!("unionfs-run: printing the digest: {e}"))
}

/// The steps between `scratch dir` and the cleanup.
fn launch(sys: &mut RealSys, plan: &Plan) -> Result<i32, Error> {
    log::debug!("step: enter namespaces");
    enter_namespaces(sys, plan)?;
    log::debug!("step: start unionfs-fuse");
    let result = start_union(sys, plan).and_then(|()| {
        log::debug!("step: fork command");
        process::run_command(plan)
    });
    stop_union(sys, plan);
    result
}

#[cfg(test)]
mod tests;
