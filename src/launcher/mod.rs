//! `unionfs-run`: runs a command inside a layered rootfs that unionfs-fuse
//! mounts, in a private mount namespace, as a list of named steps (each with
//! its own [`Error`] variant), in bubblewrap's order:
//!
//! Launcher process (single-threaded until the server is a child):
//! 1. `check layers`, `option`, `scratch dir`, `init layer`: absolute layer
//!    paths (a missing UPPER is created), bind sources; a scratch dir in
//!    $TMPDIR holds the mount point, the init layer ([`initlayer`]: the
//!    top lower, holding /etc/hosts, hostname, resolv.conf), without UPPER
//!    a throwaway upper and workdir, and a lock file this process holds
//!    while it lives.
//! 2. `unshare`: a mount namespace, plus a user namespace when not root
//!    (`open /dev/fuse` first, `id maps` after: the caller becomes uid 0),
//!    then `make / rslave` before anything is mounted, so nothing leaks out.
//! 3. `start unionfs-fuse` (`-f`, a child tied to us) and `wait for union
//!    mount`.
//! 4. `option` (the `--user` from the image's passwd, and with it HOME),
//!    `fork command` (in a new PID namespace with `--pid`).
//!
//! Command process ([`rootfs`], [`container`]): `command mount namespace`
//! (its own mount namespace, so switching root moves nobody else, with a
//! UTS namespace and with `--net none` a network namespace), `hostname`,
//! `loopback`, `mount /proc`, `mount /dev`, `mount /sys` (after the network
//! namespace: its sysfs shows that namespace's devices), `mount binds`
//! (`--bind`, `--tmpfs`), `pivot_root` (or `chroot`), `set user`, `cwd`,
//! `exec` with the clean environment.
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
pub mod commit;
pub mod container;
pub mod error;
#[cfg(test)]
mod fake;
pub mod identity;
pub mod image;
pub mod initlayer;
pub mod oci_image;
pub mod process;
pub mod real;
pub mod rootfs;
pub mod seam;
pub mod spec;
pub mod userns;

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use cli::{Cli, Config, Net};
pub use commit::{run_layer_job, LayerJob, LayerOut};
pub use error::Error;
use identity::Identity;
use real::RealSys;
use seam::{Mount, Sys};
use spec::{Bind, Tmpfs, UserSpec};
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
    /// This run's id, 12 hex digits: the default host name.
    pub run_id: String,
    /// The host's resolv.conf as the run sees it
    /// ([`initlayer::host_resolv_conf`]).
    pub resolv_conf: String,
    /// The host's TERM, passed on.
    pub term: Option<OsString>,
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
            run_id: format!("{:012x}", crate::sys::proc::random_u64() & 0xffff_ffff_ffff),
            resolv_conf: initlayer::host_resolv_conf(
                &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
                std::fs::read_to_string("/run/systemd/resolve/resolv.conf")
                    .ok()
                    .as_deref(),
            ),
            term: std::env::var_os("TERM"),
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
    /// The init layer, inside `scratch`: the top lower.
    pub init: PathBuf,
    /// None with `--ro` and no UPPER.
    pub upper: Option<PathBuf>,
    /// True when `upper` is ours, in the scratch dir.
    pub throwaway: bool,
    /// Remove the upper afterwards (`--rm`, or a throwaway one).
    pub remove_upper: bool,
    /// Where a throwaway upper goes with `--keep`.
    pub kept_upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    pub server_argv: Vec<OsString>,
    pub command: Vec<OsString>,
    pub chroot: bool,
    pub pid_ns: bool,
    pub hostname: String,
    pub net_none: bool,
    /// `--ro`: the union is mounted read-only.
    pub read_only: bool,
    /// With canonical sources.
    pub binds: Vec<Bind>,
    pub tmpfs: Vec<Tmpfs>,
    pub user: Option<UserSpec>,
    /// Who the command runs as: set once the union is mounted (the image's
    /// passwd decides); None keeps the launcher's ids (root inside).
    pub identity: Option<Identity>,
    pub cwd: Option<PathBuf>,
    /// The command's whole environment, complete once `identity` is known.
    pub env: Vec<(OsString, OsString)>,
    /// -e and --env-file values, and the host's TERM, for `env`.
    pub extra_env: Vec<(OsString, OsString)>,
    pub term: Option<OsString>,
}

impl Plan {
    /// The mount points `--bind` and `--tmpfs` make inside.
    pub fn mount_points(&self) -> Vec<PathBuf> {
        let binds = self.binds.iter().map(|b| b.target.clone());
        binds
            .chain(self.tmpfs.iter().map(|t| t.target.clone()))
            .collect()
    }
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
    if plan.read_only {
        o.push("ro".into());
    }
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
    let mut all = vec![plan.init.clone()];
    all.extend(lowers.iter().cloned());
    argv.push(join_lowers(&all));
    if let Some(u) = &plan.upper {
        argv.push(u.clone().into_os_string());
    }
    argv.push(plan.merged.clone().into_os_string());
    argv
}

/// A given UPPER or work dir: missing with an existing parent, it is made
/// (by the caller, mode 0755).
fn given_dir<S: Sys>(sys: &mut S, role: &str, p: &Path) -> Result<PathBuf, Error> {
    let fail = |e| Error::Layers(PathBuf::from(format!("{role} {}", p.display())), e);
    match sys.canonical_dir(p) {
        Err(e) if e == Errno::ENOENT => {
            let parent = p.parent().filter(|q| !q.as_os_str().is_empty());
            sys.canonical_dir(parent.unwrap_or(Path::new(".")))
                .map_err(fail)?;
            sys.mkdir(p, 0o755).map_err(fail)?;
            // 0755 whatever the umask: the server and the command reach it.
            sys.chmod(p, 0o755).map_err(fail)?;
            log::info!("created {role} {}", p.display());
            sys.canonical_dir(p).map_err(fail)
        }
        r => r.map_err(fail),
    }
}

/// Steps `check layers`, `option`, `scratch dir` and `init layer`.
pub fn prepare<S: Sys>(sys: &mut S, config: &Config, host: &Host) -> Result<Plan, Error> {
    let lowers = config
        .lowers
        .iter()
        .map(|l| {
            sys.canonical_dir(l)
                .map_err(|e| Error::Layers(PathBuf::from(format!("lower dir {}", l.display())), e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if lowers.is_empty() {
        return Err(Error::Layers(PathBuf::new(), Errno::EINVAL));
    }
    if config.workdir.is_some() && config.upper.is_none() {
        return Err(Error::Layers(
            PathBuf::from("--union-workdir needs an UPPER after the lower dirs"),
            Errno::EINVAL,
        ));
    }
    if config.read_only && config.commit.is_some() {
        return Err(Error::BadOption(
            "--commit: a --ro run has no changes".into(),
        ));
    }
    let binds = check_binds(sys, &config.binds)?;
    let upper = match &config.upper {
        Some(u) => Some(given_dir(sys, "upper dir", u)?),
        None => None,
    };
    let work = match &config.workdir {
        Some(w) => Some(given_dir(sys, "work dir", w)?),
        None => None,
    };

    let scratch = make_scratch(sys, host)?;
    let throwaway = upper.is_none() && !config.read_only;
    let result = fill_scratch(sys, &scratch, throwaway).and_then(|layout| {
        let files = initlayer::InitFiles {
            hosts: initlayer::hosts(&hostname(config, host), &config.add_hosts),
            hostname: format!("{}\n", hostname(config, host)),
            resolv_conf: initlayer::resolv_conf(
                &host.resolv_conf,
                &config.dns,
                config.net == Net::None,
            ),
        };
        initlayer::write(sys, &scratch.join(INIT), &lowers, &files)?;
        Ok(layout)
    });
    let (upper, work) = match result {
        Ok(Some((u, w))) => (Some(u), Some(w)),
        Ok(None) => (upper, work),
        Err(e) => {
            let _ = sys.remove_tree(&scratch);
            return Err(e);
        }
    };
    let keep = config.keep.unwrap_or(!throwaway);
    let mut plan = Plan {
        mode: host.mode.clone(),
        merged: scratch.join("merged"),
        init: scratch.join(INIT),
        scratch,
        upper,
        throwaway,
        remove_upper: !keep && !config.read_only,
        kept_upper: (throwaway && keep).then(|| {
            host.tmpdir
                .join(format!("unionfs-run-upper.{}", host.run_id))
        }),
        work,
        server_argv: Vec::new(),
        command: if config.command.is_empty() {
            vec!["/bin/sh".into()]
        } else {
            config.command.clone()
        },
        chroot: config.chroot,
        pid_ns: config.pid,
        hostname: hostname(config, host),
        net_none: config.net == Net::None,
        read_only: config.read_only,
        binds,
        tmpfs: config.tmpfs.clone(),
        user: config.user.clone(),
        identity: None,
        cwd: config.cwd.clone(),
        env: Vec::new(),
        extra_env: config.env.clone(),
        term: host.term.clone(),
    };
    plan.server_argv = server_argv(&host.server, &lowers, &plan, &config.opts);
    Ok(plan)
}

fn hostname(config: &Config, host: &Host) -> String {
    config
        .hostname
        .clone()
        .unwrap_or_else(|| host.run_id.clone())
}

/// Bind sources exist: made canonical, and known as dir or file.
fn check_binds<S: Sys>(sys: &mut S, binds: &[Bind]) -> Result<Vec<Bind>, Error> {
    binds
        .iter()
        .map(|b| {
            let (source, dir) = sys.canonical(&b.source).map_err(|e| {
                Error::BadOption(format!(
                    "--bind {}:{}: {}: {e}",
                    b.source.display(),
                    b.target.display(),
                    b.source.display()
                ))
            })?;
            Ok(Bind {
                source,
                file: !dir,
                ..b.clone()
            })
        })
        .collect()
}

/// The init layer's dir in the scratch dir.
const INIT: &str = "init";

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

/// The mount point, and a throwaway upper and workdir (returned) when
/// `throwaway`.
fn fill_scratch<S: Sys>(
    sys: &mut S,
    scratch: &Path,
    throwaway: bool,
) -> Result<Option<(PathBuf, PathBuf)>, Error> {
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
    if !throwaway {
        return Ok(None);
    }
    Ok(Some((mkdir("upper", 0o755)?, mkdir("work", 0o700)?)))
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
    let mut trees = vec![plan.init.clone()];
    if let (Some(upper), Some(kept)) = (&plan.upper, &plan.kept_upper) {
        match sys.rename(upper, kept) {
            Ok(()) => eprintln!("unionfs-run: the upper is kept in {}", kept.display()),
            Err(e) => log::warn!("keeping the upper in {}: {e}", kept.display()),
        }
    }
    if plan.remove_upper {
        trees.extend(plan.upper.iter().cloned());
    }
    if plan.throwaway {
        trees.extend(plan.work.iter().cloned());
    }
    for dir in &trees {
        match sys.remove_tree(dir) {
            Ok(()) => {}
            Err(e) if e == Errno::ENOENT => {}
            Err(e) => log::warn!("removing {}: {e}", dir.display()),
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
            for name in [INIT, "upper", "work"] {
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
    let image = oci_image::apply(config)?;
    let config = image.as_ref().map_or(config, |(c, _)| c);
    let host = Host::probe(config);
    if let Mode::Rootless(IdMapping::Single { .. }) = host.mode {
        log::warn!("{}", userns::SINGLE_MAP_NOTE);
    }
    let mut sys = RealSys::default();
    log::debug!("step: check layers, scratch dir, init layer");
    let mut plan = prepare(&mut sys, config, &host)?;
    let mut result = launch(&mut sys, &plan);
    let kept = host
        .tmpdir
        .join(format!("unionfs-run-upper.{}", host.run_id));
    if let (Ok(_), Some(out)) = (&result, &config.commit) {
        // The union is unmounted by now: the upper is a finished layer.
        log::debug!("step: commit");
        let mut out = out.clone();
        out.userxattr = !matches!(host.mode, Mode::Root);
        let mount_points = plan.mount_points();
        let committed = plan
            .upper
            .as_ref()
            .map(|upper| commit::commit_layer(upper, &out, Some(&config.lowers), &mount_points));
        if !matches!(committed, Some(Ok(()))) {
            result = Ok(error::EXIT_LAUNCHER);
            commit::keep_upper_for_retry(&mut sys, &mut plan, &kept, |u| retry_commit(u, &out));
        }
    }
    if let (Ok(_), Some((_, image))) = (&result, &image) {
        let upper = plan.upper.as_deref();
        let exclude = upper.map_or_else(Vec::new, |u| {
            commit::run_excludes(u, Some(&config.lowers), &plan.mount_points())
        });
        let userxattr = !matches!(host.mode, Mode::Root);
        if !oci_image::commit_after_run(config, image, upper, exclude, userxattr) {
            result = Ok(error::EXIT_LAUNCHER);
            commit::keep_upper_for_retry(&mut sys, &mut plan, &kept, |u| {
                oci_image::retry_commit(u, &config.image)
            });
        }
    }
    remove_scratch(&mut sys, &plan);
    sweep_stale_scratch(&mut sys, &host.tmpdir);
    result
}

/// The `--export-layer` command that writes what a failed `--commit out`
/// would have from `upper`.
fn retry_commit(upper: &Path, out: &LayerOut) -> String {
    let word = |p: &Path| commit::shell_word(p.as_os_str());
    let mut cmd = format!(
        "unionfs-run --export-layer {} {}",
        word(upper),
        word(&out.file)
    );
    match out.compression {
        crate::oci::Compression::Gzip => cmd.push_str(" --gzip"),
        crate::oci::Compression::Zstd => cmd.push_str(" --zstd"),
        crate::oci::Compression::None => {}
    }
    if let Some(t) = out.mtime {
        cmd.push_str(&format!(" --mtime {t}"));
    }
    cmd
}

/// Step `option` once the union is mounted: the `--user` (default root)
/// from the image's /etc/passwd and /etc/group, and with it HOME and the
/// command's whole environment.
pub fn resolve_identity<S: Sys>(sys: &mut S, plan: &Plan) -> Result<Plan, Error> {
    let mut read = |name: &str| {
        sys.read_in_root(&plan.merged, Path::new(name))
            .map(Option::unwrap_or_default)
            .map_err(|e| Error::BadOption(format!("reading the image's {name}: {e}")))
    };
    let (passwd, group) = (read("/etc/passwd")?, read("/etc/group")?);
    let id = identity::resolve(plan.user.as_ref(), &passwd, &group).map_err(Error::BadOption)?;
    if let (Some(spec), Mode::Rootless(IdMapping::Single { .. })) = (&plan.user, &plan.mode) {
        if id.uid != 0 || id.gid != 0 {
            return Err(Error::BadOption(format!(
                "--user {}: uid {} gid {} do not exist in this rootless run: \
                 its single-id map holds only 0 (see /etc/subuid)",
                identity::describe(spec),
                id.uid,
                id.gid
            )));
        }
    }
    let mut plan = plan.clone();
    plan.env = identity::environment(
        &id.home,
        plan.term.as_ref(),
        &plan.hostname,
        &plan.extra_env,
    );
    plan.identity = plan.user.is_some().then_some(id);
    Ok(plan)
}

/// The steps between `scratch dir` and the cleanup.
fn launch(sys: &mut RealSys, plan: &Plan) -> Result<i32, Error> {
    log::debug!("step: enter namespaces");
    enter_namespaces(sys, plan)?;
    log::debug!("step: start unionfs-fuse");
    let result = start_union(sys, plan).and_then(|()| {
        let plan = resolve_identity(sys, plan)?;
        log::debug!("step: fork command");
        process::run_command(&plan)
    });
    stop_union(sys, plan);
    result
}

#[cfg(test)]
mod tests;
