//! Command line of `unionfs-run`.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use super::spec::{self, Bind, Tmpfs, UserSpec};

const HELP: &str = "\
Runs CMD (default /bin/sh from the image) with the union of the LOWER dirs
and UPPER as its root filesystem, in a private mount namespace: nothing is
mounted on the host. Without UPPER, a throwaway upper is used and removed
afterwards.

As root: a mount namespace. Otherwise: a user namespace too, where you are
root. With a range for you in /etc/subuid and /etc/subgid (and newuidmap,
newgidmap installed), ids 1.. map to it; else only your own id is mapped and
files of other owners show as nobody. Rootless FUSE needs /dev/fuse 0666.

The rootfs gets a fresh /proc (the host's bound when a rootless run has no
--pid), a tmpfs /dev (null zero full random urandom tty from the host,
devpts, shm), and a read-only /sys. Missing /proc, /dev, /sys dirs are
created through the union (in the upper). A missing UPPER (or work dir)
whose parent exists is created.

INIT LAYER: /etc/hosts (localhost, the host name, --add-host lines),
/etc/hostname and /etc/resolv.conf (the host's; systemd-resolved's upstream
list instead of its 127.0.0.53 stub; empty with --net none; --dns
overrides) sit in a layer of their own between the image and the upper:
they reach the upper, and --commit, only when the command changes them.

ENVIRONMENT: clean: PATH (Debian's default), HOME (the user's in the image's
/etc/passwd), TERM (copied), HOSTNAME, container=unionfs-run; then
--env-file lines and -e values, which override.

LAYERS: --commit FILE.tar saves the run's upper as an OCI image layer when
the command exits (whiteouts as .wh. entries, opaque dirs as .wh..wh..opq;
FILE.tar.gz or --gzip compresses); --export-layer UPPER FILE.tar does the
same for any upper dir; --unpack-layer FILE.tar DIR unpacks an OCI layer as
a kernel-format lower (whiteouts as 0/0 devices, opaque xattrs), refusing
names that would land outside DIR. The layer's sha256 diff_id is printed.

EXIT STATUS: the command's; 128+N when it died of signal N; 125 when the
launcher failed (the failing step is printed); 126 when CMD could not be
executed; 127 when it was not found. SIGINT, SIGTERM and SIGHUP are passed
on to the command.";

#[derive(Parser, Debug)]
#[command(
    name = "unionfs-run",
    version,
    about = "Run a command in a layered rootfs mounted with unionfs-fuse",
    override_usage = "unionfs-run [OPTIONS] LOWER1[:LOWER2...] [UPPER] [-- CMD [ARGS...]]",
    after_help = HELP
)]
pub struct Cli {
    /// Switch root with chroot instead of pivot_root (pivot_root falls back
    /// to chroot by itself where it is impossible).
    #[arg(long)]
    pub chroot: bool,
    /// Run the command in a new PID namespace, as its PID 1 (which, like any
    /// init, ignores signals it has no handler for).
    #[arg(long)]
    pub pid: bool,
    /// The unionfs-fuse binary (default: next to this program, else $PATH).
    #[arg(long, value_name = "PATH")]
    pub unionfs_fuse: Option<PathBuf>,
    /// The overlay work dir for a given UPPER (same filesystem, outside
    /// it); also `-o workdir=DIR`.
    #[arg(long, value_name = "DIR")]
    pub union_workdir: Option<PathBuf>,
    /// The host name, in a new UTS namespace (default: the run's id, 12 hex
    /// digits).
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Bind-mount host path SRC at DST inside (created if missing), with
    /// the mounts below it; `:ro` read-only throughout. Repeatable.
    #[arg(long, value_name = "SRC:DST[:ro]")]
    pub bind: Vec<String>,
    /// A tmpfs at DST (created if missing); OPTS: size=N[k|m|g|%],
    /// mode=OCTAL, nr_inodes=N, uid=N, gid=N. Repeatable.
    #[arg(long, value_name = "DST[:OPTS]")]
    pub tmpfs: Vec<String>,
    /// Set K to V in the command's environment, or copy K from here.
    /// Repeatable.
    #[arg(short = 'e', long = "env", value_name = "K=V|K")]
    pub env: Vec<String>,
    /// Read K=V (or K) lines from FILE (# comments and blank lines
    /// skipped), before the -e values. Repeatable.
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Run the command as this user, a name looked up in the image's
    /// /etc/passwd (supplementary groups from its /etc/group).
    #[arg(short = 'u', long, value_name = "UID[:GID]|NAME[:GROUP]")]
    pub user: Option<String>,
    /// The command's working dir inside (default /).
    #[arg(short = 'w', long, visible_alias = "workdir", value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// host: the host's network; none: a new network namespace with only
    /// lo, up.
    #[arg(long, value_enum, default_value_t = Net::Host)]
    pub net: Net,
    /// A nameserver for /etc/resolv.conf instead of the host's. Repeatable.
    #[arg(long, value_name = "IP")]
    pub dns: Vec<String>,
    /// An /etc/hosts line for NAME. Repeatable.
    #[arg(long, value_name = "NAME:IP")]
    pub add_host: Vec<String>,
    /// No upper: the union is read-only and writes fail with EROFS (a given
    /// UPPER is shown read-only, as the top layer).
    #[arg(long, conflicts_with = "commit")]
    pub ro: bool,
    /// Remove the upper after the run (the default without UPPER).
    #[arg(long, conflicts_with = "keep")]
    pub rm: bool,
    /// Keep the upper (the default with UPPER); a throwaway one moves to
    /// $TMPDIR/unionfs-run-upper.ID, which is printed.
    #[arg(long)]
    pub keep: bool,
    /// More unionfs-fuse mount options, comma separated (repeatable).
    #[arg(short = 'o', value_name = "OPTS")]
    pub opts: Vec<String>,
    /// Log each step.
    #[arg(short, long)]
    pub verbose: bool,
    /// When the command exits, save the upper as an OCI layer tarball.
    #[arg(long, value_name = "FILE.tar")]
    pub commit: Option<PathBuf>,
    /// Export an existing upper dir as an OCI layer tarball, then exit.
    #[arg(long, num_args = 2, value_names = ["UPPER", "FILE.tar"], conflicts_with_all = ["layers", "commit", "unpack_layer"])]
    pub export_layer: Vec<PathBuf>,
    /// Unpack an OCI layer tarball into DIR in kernel overlay format, then exit.
    #[arg(long, num_args = 2, value_names = ["FILE.tar", "DIR"], conflicts_with_all = ["layers", "commit"])]
    pub unpack_layer: Vec<PathBuf>,
    /// gzip the layer written by --commit or --export-layer (also implied by
    /// a .gz/.tgz file name).
    #[arg(long)]
    pub gzip: bool,
    /// Give every exported entry this mtime (seconds since the epoch), so
    /// the same upper always gives the same bytes.
    #[arg(long, value_name = "EPOCH")]
    pub mtime: Option<i64>,
    /// The upper stores overlay xattrs as user.overlay.* (for
    /// --export-layer/--unpack-layer; runs detect it themselves).
    #[arg(long)]
    pub userxattr: bool,
    /// LOWER1[:LOWER2...] (top first, `\:` for a colon), then UPPER.
    #[arg(value_name = "LAYERS", num_args = 1..=2, required_unless_present_any = ["export_layer", "unpack_layer"])]
    pub layers: Vec<PathBuf>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// `--net`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Net {
    #[default]
    Host,
    None,
}

/// What to run, from the command line.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    /// The union's work dir (`--union-workdir`, `-o workdir=`).
    pub workdir: Option<PathBuf>,
    pub hostname: Option<String>,
    pub binds: Vec<Bind>,
    pub tmpfs: Vec<Tmpfs>,
    /// -e and --env-file values, host copies already taken.
    pub env: Vec<(OsString, OsString)>,
    pub user: Option<UserSpec>,
    pub cwd: Option<PathBuf>,
    pub net: Net,
    pub dns: Vec<IpAddr>,
    pub add_hosts: Vec<(String, IpAddr)>,
    pub read_only: bool,
    /// --rm: Some(false); --keep: Some(true); else the default.
    pub keep: Option<bool>,
    pub command: Vec<OsString>,
    pub chroot: bool,
    pub pid: bool,
    pub unionfs_fuse: Option<PathBuf>,
    pub opts: Vec<String>,
    /// Save the upper here as an OCI layer when the command exits.
    pub commit: Option<crate::launcher::LayerOut>,
}

impl Cli {
    /// The layer tool the command line asks for instead of a run, if any.
    pub fn layer_job(&self) -> Option<crate::launcher::LayerJob> {
        use crate::launcher::{LayerJob, LayerOut};
        if let [upper, file] = self.export_layer.as_slice() {
            return Some(LayerJob::Export(
                upper.clone(),
                LayerOut::new(file, self.gzip, self.mtime, self.userxattr),
            ));
        }
        if let [file, dir] = self.unpack_layer.as_slice() {
            return Some(LayerJob::Unpack(file.clone(), dir.clone(), self.userxattr));
        }
        None
    }

    /// The run's configuration; an unusable option value is a one-line
    /// error naming the option. Host environment and env files are read
    /// here, once.
    pub fn into_config(self) -> Result<Config, String> {
        let host_env = |k: &str| std::env::var_os(k);
        let mut env = Vec::new();
        for file in &self.env_file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("--env-file {}: {e}", file.display()))?;
            env.extend(spec::parse_env_file(file, &text, &host_env)?);
        }
        for value in &self.env {
            env.extend(spec::parse_env("-e", value, &host_env)?);
        }
        // -o workdir=DIR is the union's work dir, like --union-workdir.
        let mut workdir = self.union_workdir;
        let mut opts = Vec::new();
        for o in &self.opts {
            let mut rest = Vec::new();
            for item in o.split(',') {
                match item.strip_prefix("workdir=") {
                    Some(w) if workdir.is_some() => {
                        return Err(format!("-o workdir={w}: the work dir is given twice"))
                    }
                    Some(w) => workdir = Some(PathBuf::from(w)),
                    None => rest.push(item),
                }
            }
            opts.push(rest.join(","));
        }
        let mut layers = self.layers.into_iter();
        let lowers = layers.next().unwrap_or_default();
        let lowers = match lowers.to_str() {
            Some(s) => crate::options::split_lowers(s),
            None => vec![lowers],
        };
        Ok(Config {
            lowers,
            upper: layers.next(),
            workdir,
            hostname: self
                .hostname
                .as_deref()
                .map(spec::parse_hostname)
                .transpose()?,
            binds: self
                .bind
                .iter()
                .map(|b| spec::parse_bind(b))
                .collect::<Result<_, _>>()?,
            tmpfs: self
                .tmpfs
                .iter()
                .map(|t| spec::parse_tmpfs(t))
                .collect::<Result<_, _>>()?,
            env,
            user: self.user.as_deref().map(spec::parse_user).transpose()?,
            cwd: self.cwd.as_deref().map(spec::parse_cwd).transpose()?,
            net: self.net,
            dns: self
                .dns
                .iter()
                .map(|d| spec::parse_dns(d))
                .collect::<Result<_, _>>()?,
            add_hosts: self
                .add_host
                .iter()
                .map(|h| spec::parse_add_host(h))
                .collect::<Result<_, _>>()?,
            read_only: self.ro,
            keep: match (self.rm, self.keep) {
                (true, _) => Some(false),
                (_, true) => Some(true),
                _ => None,
            },
            command: self.command,
            chroot: self.chroot,
            pid: self.pid,
            unionfs_fuse: self.unionfs_fuse,
            opts,
            commit: self
                .commit
                .as_deref()
                .map(|f| crate::launcher::LayerOut::new(f, self.gzip, self.mtime, false)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        let argv = std::iter::once("unionfs-run").chain(args.iter().copied());
        Cli::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_config()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn layers_upper_and_command() {
        let c = parse(&["--pid", "a:b\\:c", "up", "--", "ls", "-l", "--", "x"]);
        assert_eq!(c.lowers, [PathBuf::from("a"), PathBuf::from("b:c")]);
        assert_eq!(c.upper, Some(PathBuf::from("up")));
        assert_eq!(c.command, ["ls", "-l", "--", "x"]);
        assert!(c.pid && !c.chroot);
    }

    #[test]
    fn upper_and_command_are_optional() {
        let c = parse(&["--chroot", "-o", "noatime", "img"]);
        assert_eq!(c.lowers, [PathBuf::from("img")]);
        assert!(c.upper.is_none() && c.command.is_empty() && c.chroot);
        assert_eq!(c.opts, ["noatime"]);
        assert!(Cli::try_parse_from(["unionfs-run"]).is_err());
        assert!(Cli::try_parse_from(["unionfs-run", "a", "b", "c"]).is_err());
    }
}

#[cfg(test)]
mod option_tests {
    use super::*;

    fn config(args: &[&str]) -> Result<Config, String> {
        let argv = std::iter::once("unionfs-run").chain(args.iter().copied());
        Cli::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_config()
    }

    #[test]
    fn workdir_is_the_cwd_inside_and_the_union_workdir_has_its_own_names() {
        let c = config(&["--workdir", "/srv", "img"]).unwrap();
        assert_eq!(c.cwd, Some(PathBuf::from("/srv")));
        assert!(c.workdir.is_none());
        let c = config(&["-o", "noatime,workdir=/w", "img", "up"]).unwrap();
        assert_eq!(c.workdir, Some(PathBuf::from("/w")));
        assert_eq!(c.opts, ["noatime"]);
        let c = config(&["--union-workdir", "/w2", "img", "up"]).unwrap();
        assert_eq!(c.workdir, Some(PathBuf::from("/w2")));
        let e = config(&["--union-workdir", "/w", "-o", "workdir=/x", "img"]).unwrap_err();
        assert!(e.starts_with("-o workdir=/x"), "{e}");
    }

    #[test]
    fn container_options_parse() {
        let c = config(&[
            "--hostname",
            "box",
            "--bind",
            "/h:/d:ro",
            "--tmpfs",
            "/t:size=1m",
            "-e",
            "A=1",
            "-u",
            "app",
            "--net",
            "none",
            "--dns",
            "9.9.9.9",
            "--add-host",
            "db:10.0.0.9",
            "--ro",
            "--keep",
            "img",
        ])
        .unwrap();
        assert_eq!(c.hostname.as_deref(), Some("box"));
        assert!(c.binds[0].read_only && c.tmpfs[0].options == "size=1m");
        assert_eq!(c.env, [(OsString::from("A"), OsString::from("1"))]);
        assert_eq!(c.net, Net::None);
        assert!(c.read_only && c.keep == Some(true));
        assert_eq!(c.dns.len() + c.add_hosts.len(), 2);
        assert_eq!(config(&["--rm", "img"]).unwrap().keep, Some(false));
    }

    #[test]
    fn bad_values_name_their_option() {
        for (args, start) in [
            (&["--bind", "/h:rel", "img"][..], "--bind /h:rel: "),
            (&["--tmpfs", "/t:bogus", "img"][..], "--tmpfs /t:bogus: "),
            (&["--hostname", "a b", "img"][..], "--hostname a b: "),
            (&["--cwd", "rel", "img"][..], "--cwd rel: "),
            (&["--dns", "x", "img"][..], "--dns x: "),
            (
                &["--env-file", "/nonexistent/env", "img"][..],
                "--env-file /nonexistent/env: ",
            ),
        ] {
            let e = config(args).unwrap_err();
            assert!(e.starts_with(start), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
