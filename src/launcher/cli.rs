//! Command line of `unionfs-run`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;

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
created through the union (in the upper).

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
    /// Work dir for a given UPPER (same filesystem, outside it).
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
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

/// What to run, from the command line.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub workdir: Option<PathBuf>,
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

    pub fn into_config(self) -> Config {
        let mut layers = self.layers.into_iter();
        let lowers = layers.next().unwrap_or_default();
        let lowers = match lowers.to_str() {
            Some(s) => crate::options::split_lowers(s),
            None => vec![lowers],
        };
        Config {
            lowers,
            upper: layers.next(),
            workdir: self.workdir,
            command: self.command,
            chroot: self.chroot,
            pid: self.pid,
            unionfs_fuse: self.unionfs_fuse,
            opts: self.opts,
            commit: self
                .commit
                .as_deref()
                .map(|f| crate::launcher::LayerOut::new(f, self.gzip, self.mtime, false)),
        }
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
