//! Saving an upper as an OCI layer (`--commit`, `--export-layer`) and
//! unpacking one (`--unpack-layer`). What a run made only to mount on (the
//! empty /proc, /dev, /sys dirs, and `--bind`/`--tmpfs` mount points with
//! the dirs made for them) is left out of the layer.

use std::path::{Path, PathBuf};

use super::error;
use super::seam::Sys;
use super::Plan;

/// Where and how to write a layer tarball.
#[derive(Clone, Debug)]
pub struct LayerOut {
    pub file: PathBuf,
    pub compression: crate::oci::Compression,
    pub mtime: Option<i64>,
    pub userxattr: bool,
}

impl LayerOut {
    /// `--gzip`, `--zstd`, or a `.gz`/`.tgz`/`.zst` name compress.
    pub fn new(
        file: &Path,
        (gzip, zstd): (bool, bool),
        mtime: Option<i64>,
        userxattr: bool,
    ) -> LayerOut {
        use crate::oci::Compression;
        let name = file.to_string_lossy();
        LayerOut {
            file: file.to_path_buf(),
            compression: if zstd || name.ends_with(".zst") {
                Compression::Zstd
            } else if gzip || name.ends_with(".gz") || name.ends_with(".tgz") {
                Compression::Gzip
            } else {
                Compression::None
            },
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
            commit_layer(upper, &out, None, &[])
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
/// diff_id, without what the run made only to mount on ([`run_excludes`]).
pub(super) fn commit_layer(
    upper: &Path,
    out: &LayerOut,
    lowers: Option<&[PathBuf]>,
    mount_points: &[PathBuf],
) -> Result<(), ()> {
    let exclude = run_excludes(upper, lowers, mount_points);
    let opts = crate::oci::ExportOptions {
        userxattr: out.userxattr,
        mtime: out
            .mtime
            .map(crate::oci::MtimePolicy::Fixed)
            .unwrap_or_default(),
        compression: out.compression,
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

/// What a run made only to mount on, relative to the upper: the empty
/// /proc, /dev and /sys dirs (after a run, `lowers` given: those no lower
/// has; for an upper alone: those made in it, with no overlay xattrs), and
/// the run's `mount_points` (absolute, inside) with the dirs made for them.
pub(super) fn run_excludes(
    upper: &Path,
    lowers: Option<&[PathBuf]>,
    mount_points: &[PathBuf],
) -> Vec<PathBuf> {
    let mut exclude = Vec::new();
    if let Some(lowers) = lowers {
        exclude.extend(
            mount_points
                .iter()
                .filter_map(|m| made_for_mount(upper, lowers, m)),
        );
    }
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
    exclude
}

/// After a failed `--commit` or `--commit-image`: the upper holds the only
/// copy of what the command did, so it is not removed. A throwaway one (or
/// one `--keep` would move) goes to `kept`, out of the scratch dir that a
/// later run sweeps. Prints one line: where it is, and `retry(path)`, the
/// command that commits it by hand.
pub(super) fn keep_upper_for_retry<S: Sys>(
    sys: &mut S,
    plan: &mut Plan,
    kept: &Path,
    retry: impl Fn(&Path) -> String,
) {
    let Some(upper) = plan.upper.clone() else {
        return;
    };
    plan.remove_upper = false;
    let dest = plan
        .kept_upper
        .take()
        .or_else(|| plan.throwaway.then(|| kept.to_path_buf()));
    let place = match dest {
        Some(dest) => match sys.rename(&upper, &dest) {
            Ok(()) => dest,
            // Left in the scratch dir, which then stays: its lock file goes,
            // so no later run sweeps it.
            Err(e) => {
                log::warn!("moving the upper to {}: {e}", dest.display());
                upper
            }
        },
        None => upper,
    };
    eprintln!(
        "unionfs-run: the commit failed; the run's upper is kept in {}: commit it by hand with `{}`",
        place.display(),
        retry(&place)
    );
    plan.upper = Some(place);
}

/// `s` as one shell word, quoted only if it needs to be.
pub(super) fn shell_word(s: &std::ffi::OsStr) -> String {
    let s = s.to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./:@%+=,-".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
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

/// The topmost dir of `mount_point`'s path that the run made only to mount
/// on: the upper holds it and nothing but the path down to the mount point,
/// which is empty (a dir, or an empty file for a file bind), and no lower
/// has any of that path.
fn made_for_mount(upper: &Path, lowers: &[PathBuf], mount_point: &Path) -> Option<PathBuf> {
    let rel = mount_point.strip_prefix("/").ok()?;
    let parts: Vec<_> = rel.components().collect();
    let in_lower = |p: &Path| lowers.iter().any(|l| l.join(p).symlink_metadata().is_ok());
    let mut prefixes: Vec<PathBuf> = Vec::new();
    let mut p = PathBuf::new();
    for c in &parts {
        p.push(c);
        prefixes.push(p.clone());
    }
    let leaf = prefixes.last()?;
    let leaf_meta = upper.join(leaf).symlink_metadata().ok()?;
    let empty_leaf = if leaf_meta.is_dir() {
        std::fs::read_dir(upper.join(leaf)).ok()?.next().is_none()
    } else {
        leaf_meta.is_file() && leaf_meta.len() == 0
    };
    if !empty_leaf || in_lower(leaf) {
        return None;
    }
    let mut top = leaf.clone();
    // Walk up while the parent holds only the path down and is the run's:
    // made for the mount, or an image dir copied up only to make it.
    for i in (0..prefixes.len() - 1).rev() {
        let dir = &prefixes[i];
        if !upper.join(dir).symlink_metadata().is_ok_and(|m| m.is_dir())
            || (in_lower(dir) && !copied_up_unchanged(upper, lowers, dir))
        {
            break;
        }
        let names: Vec<_> = match std::fs::read_dir(upper.join(dir)) {
            Ok(r) => r.flatten().map(|e| e.file_name()).collect(),
            Err(_) => break,
        };
        if names.len() != 1 || Some(names[0].as_os_str()) != top.file_name() {
            break;
        }
        top = dir.clone();
    }
    Some(top)
}

/// Whether the upper's dir `rel` is a lower's copied up and left as it was:
/// the mode and owner of the topmost lower entry there (unprivileged, a
/// copy-up can only give it ours), and no overlay xattr but `origin` and
/// `impure` (an opaque or redirected dir is a change). Its mtime is not
/// compared: making the mount point changed it.
fn copied_up_unchanged(upper: &Path, lowers: &[PathBuf], rel: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(lower) = lowers
        .iter()
        .find_map(|l| l.join(rel).symlink_metadata().ok())
    else {
        return false;
    };
    let Ok(up) = upper.join(rel).symlink_metadata() else {
        return false;
    };
    let ours = (crate::sys::proc::geteuid(), crate::sys::proc::getegid());
    let owner_kept = (up.uid(), up.gid()) == (lower.uid(), lower.gid())
        || (crate::sys::proc::needs_userxattr() && (up.uid(), up.gid()) == ours);
    up.mode() == lower.mode()
        && owner_kept
        && crate::oci::upper_overlay_keys(upper, rel).is_some_and(|keys| {
            keys.iter()
                .all(|k| matches!(k.as_str(), "origin" | "impure"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_made_by_the_run_are_left_out_with_their_parents() {
        let t = std::env::temp_dir().join(format!("unionfs-commit-test.{}", std::process::id()));
        let (upper, lower) = (t.join("upper"), t.join("lower"));
        for d in [
            "upper/a/b/c",
            "upper/mnt/data",
            "lower/mnt",
            "upper/kept/m",
            "upper/full/m",
            "upper/srv/data",
            "lower/srv",
        ] {
            std::fs::create_dir_all(t.join(d)).unwrap();
        }
        let mode = |d: &str, m| {
            std::fs::set_permissions(t.join(d), std::os::unix::fs::PermissionsExt::from_mode(m))
                .unwrap()
        };
        mode("lower/srv", 0o755);
        mode("upper/srv", 0o700);
        mode("lower/mnt", 0o755);
        mode("upper/mnt", 0o755);
        std::fs::write(upper.join("kept/other"), "x").unwrap();
        std::fs::write(upper.join("full/m/f"), "x").unwrap();
        let lowers = [lower];
        let got = |m: &str| made_for_mount(&upper, &lowers, Path::new(m));
        assert_eq!(got("/a/b/c"), Some(PathBuf::from("a")));
        // The image's /mnt, copied up only to make the mount point in it.
        assert_eq!(got("/mnt/data"), Some(PathBuf::from("mnt")));
        // The image's /srv, but its mode changed: a change, kept.
        assert_eq!(got("/srv/data"), Some(PathBuf::from("srv/data")));
        assert_eq!(got("/kept/m"), Some(PathBuf::from("kept/m")));
        assert_eq!(got("/full/m"), None, "written to: a change");
        assert_eq!(got("/mnt"), None, "the image has it");
        std::fs::remove_dir_all(&t).unwrap();
    }
}
