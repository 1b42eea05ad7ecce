//! `--image DIR[:TAG]` and `--commit-image DIR:TAG`: the launcher's glue to
//! [`crate::oci`]. Before the run (in the launcher, single-threaded, before
//! any namespace): resolve the image, unpack its missing layers into the
//! store, record the use, and derive the lowers and the run settings from
//! the config. After the run (union unmounted): commit the upper as a new
//! image. Also the store upkeep jobs `--store-ls` and `--store-prune`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::error::Error;
use super::{spec, Config};
use crate::oci::commit::{self, CommitOptions};
use crate::oci::layout::{Image, Layout, RunConfig};
use crate::oci::store::{self, Store};
use crate::oci::Compression;

/// The image options of a command line.
#[derive(Clone, Debug, Default)]
pub struct ImageOpts {
    /// `DIR[:TAG]` to run.
    pub image: Option<String>,
    /// `DIR:TAG` to commit the run into.
    pub commit: Option<String>,
    /// Commit the layer with zstd instead of gzip.
    pub zstd: bool,
    /// The store dir (else the default for the user).
    pub store: Option<PathBuf>,
    /// The largest layer tar accepted, in bytes.
    pub max_layer_size: u64,
    /// `--entrypoint`: replaces the image's entrypoint (and drops its Cmd).
    pub entrypoint: Option<String>,
}

/// An image ready to run: its lowers (top first) and config.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub lowers: Vec<PathBuf>,
    pub run: RunConfig,
    layout: Layout,
    image: Image,
}

/// Splits `DIR[:TAG]`: at the first colon whose left side is an existing
/// dir (so both a dir with a colon in its name and a tag with colons,
/// `localhost/app:1` as podman writes it, work), else at the first colon.
pub fn split_ref(s: &str) -> (PathBuf, Option<String>) {
    let colons: Vec<usize> = s.match_indices(':').map(|(i, _)| i).collect();
    let at = colons
        .iter()
        .copied()
        .find(|&i| i > 0 && Path::new(&s[..i]).is_dir())
        .or_else(|| {
            (!Path::new(s).is_dir())
                .then(|| colons.first().copied())
                .flatten()
        });
    match at {
        Some(i) if i > 0 && i + 1 < s.len() => {
            (PathBuf::from(&s[..i]), Some(s[i + 1..].to_string()))
        }
        _ => (PathBuf::from(s), None),
    }
}

/// Parses a size: bytes, or with a K, M, G or T suffix (powers of 1024,
/// an optional `i`/`iB`/`B` after it).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .or_else(|| t.strip_suffix('i'))
        .unwrap_or(t);
    let (num, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("{s:?}: unknown size suffix {c:?} (K, M, G or T)")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (a number of bytes, or with K, M, G, T)"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// The store dir: `--store`, else the default for this user.
pub fn store_dir(
    given: Option<&Path>,
    euid: u32,
    xdg: Option<&Path>,
    home: Option<&Path>,
) -> PathBuf {
    given
        .map(Path::to_path_buf)
        .unwrap_or_else(|| store::default_dir(euid, xdg, home))
}

/// Opens the store of this run's mode: rootless runs read `user.overlay.*`.
pub fn open_store(dir: &Path, rootless: bool) -> Result<Store, String> {
    Store::open(dir, rootless).map_err(|e| format!("layer store {}: {e}", dir.display()))
}

/// Resolves `--image`, makes sure every layer is in the store, and
/// records the use.
pub fn resolve(image_ref: &str, store: &Store, max_layer_size: u64) -> Result<Resolved, String> {
    let (dir, tag) = split_ref(image_ref);
    let fail = |e: crate::oci::layout::ImageError| format!("image {image_ref}: {e}");
    let layout = Layout::open(&dir).map_err(fail)?;
    let image = layout.image(tag.as_deref()).map_err(fail)?;
    let lowers = store
        .lowers(&layout, &image, max_layer_size)
        .map_err(fail)?;
    if let Err(e) = store.record_use(&layout, tag.as_deref(), &image) {
        log::warn!("recording the use of {image_ref} in the store: {e}");
    }
    Ok(Resolved {
        lowers,
        run: image.run.clone(),
        layout,
        image,
    })
}

/// The command to run, by podman's rules: the entrypoint (`--entrypoint`
/// replaces the image's, and then the image's Cmd is dropped) followed by
/// the given command, else the image's Cmd. Empty: the launcher's default.
pub fn command(run: &RunConfig, entrypoint: Option<&str>, given: &[OsString]) -> Vec<OsString> {
    let entry: Vec<OsString> = match entrypoint {
        Some("") => Vec::new(),
        Some(e) => vec![OsString::from(e)],
        None => run.entrypoint.iter().map(OsString::from).collect(),
    };
    let args: Vec<OsString> = if !given.is_empty() {
        given.to_vec()
    } else if entrypoint.is_some() {
        Vec::new()
    } else {
        run.cmd.iter().map(OsString::from).collect()
    };
    entry.into_iter().chain(args).collect()
}

/// `created_by` of the history entry: the command, shell-quoted enough to
/// read.
fn created_by(command: &[OsString]) -> String {
    let words: Vec<String> = command
        .iter()
        .map(|w| {
            let w = w.to_string_lossy();
            if !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,".contains(&b))
            {
                w.into_owned()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect();
    format!("unionfs-run {}", words.join(" "))
}

/// Checks `--commit-image DIR:TAG` before the run, so that a commit that
/// cannot happen does not cost the run's changes: a TAG, and a DIR that is
/// a layout, an empty dir, or missing in an existing dir.
pub fn check_commit_target(target_ref: &str) -> Result<(), String> {
    let (dir, tag) = split_ref(target_ref);
    let bad = |why: String| Err(format!("--commit-image {target_ref}: {why}"));
    if tag.is_none() {
        return bad("name a tag (DIR:TAG)".into());
    }
    match std::fs::read_dir(&dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                if let Err(e) = Layout::open(&dir) {
                    return bad(format!("not an OCI image layout nor an empty dir: {e}"));
                }
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            if parent.is_dir() {
                Ok(())
            } else {
                bad(format!("{} is not a dir", parent.display()))
            }
        }
        Err(e) => bad(format!("{}: {e}", dir.display())),
    }
}

/// Commits the finished `upper` of a run of `base` into `DIR:TAG`.
/// Prints the new manifest's digest.
pub fn commit_image(
    target_ref: &str,
    base: &Resolved,
    upper: &Path,
    opts: &ImageOpts,
    userxattr: bool,
    exclude: Vec<PathBuf>,
    command: &[OsString],
) -> Result<(), String> {
    let (dir, tag) = split_ref(target_ref);
    let Some(tag) = tag else {
        return Err(format!("--commit-image {target_ref}: name a tag (DIR:TAG)"));
    };
    let fail = |e: crate::oci::layout::ImageError| format!("commit to {target_ref}: {e}");
    let target = Layout::open_or_create(&dir).map_err(fail)?;
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let copts = CommitOptions {
        compression: if opts.zstd {
            Compression::Zstd
        } else {
            Compression::Gzip
        },
        userxattr,
        exclude,
        mtime: crate::oci::MtimePolicy::Clamp(created),
        created,
        created_by: created_by(command),
    };
    let done =
        commit::commit(&base.layout, &base.image, upper, &target, &tag, &copts).map_err(fail)?;
    println!("{}", done.manifest.digest);
    Ok(())
}

/// Step `image`, before anything else: with `--image`, the config with
/// the image's layers as its lowers and the image's settings under the
/// command line's; the resolved image comes along for `--commit-image`.
pub fn apply(config: &Config) -> Result<Option<(Config, Resolved)>, Error> {
    let opts = &config.image;
    let Some(image_ref) = &opts.image else {
        return Ok(None);
    };
    if let Some(target) = &opts.commit {
        check_commit_target(target).map_err(Error::BadOption)?;
    }
    let dir = opts.store.clone().unwrap_or_default();
    let rootless = crate::sys::proc::geteuid() != 0;
    let store = open_store(&dir, rootless).map_err(Error::BadOption)?;
    log::debug!("step: image {image_ref} (store {})", store.dir.display());
    let resolved = resolve(image_ref, &store, opts.max_layer_size).map_err(Error::BadOption)?;
    let run = &resolved.run;
    let mut c = config.clone();
    c.lowers = resolved.lowers.clone();
    // The image's Env first: -e and --env-file values win over it.
    let mut env: Vec<(OsString, OsString)> = run
        .env
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.into(), v.into()),
            None => (kv.into(), OsString::new()),
        })
        .collect();
    env.append(&mut c.env);
    c.env = env;
    if c.user.is_none() {
        if let Some(u) = &run.user {
            let spec = spec::parse_user(u)
                .map_err(|e| Error::BadOption(format!("image {image_ref}: config User: {e}")))?;
            c.user = Some(spec);
        }
    }
    if c.cwd.is_none() {
        if let Some(w) = &run.working_dir {
            let cwd = spec::parse_cwd(Path::new(w)).map_err(|e| {
                Error::BadOption(format!("image {image_ref}: config WorkingDir: {e}"))
            })?;
            c.cwd = Some(cwd);
        }
    }
    c.command = command(run, opts.entrypoint.as_deref(), &config.command);
    Ok(Some((c, resolved)))
}

/// Step `commit image`, once the union is unmounted: `--commit-image` of
/// the run's upper, without what the run made only to mount on; a
/// rootless run's upper has `user.overlay.*` marks (`userxattr`). False
/// (the error printed) when it failed.
pub fn commit_after_run(
    config: &Config,
    resolved: &Resolved,
    upper: Option<&Path>,
    exclude: Vec<PathBuf>,
    userxattr: bool,
) -> bool {
    let Some(target) = &config.image.commit else {
        return true;
    };
    log::debug!("step: commit image {target}");
    let Some(upper) = upper else {
        eprintln!("unionfs-run: --commit-image: a --ro run has no changes");
        return false;
    };
    let cmd = &config.command;
    match commit_image(
        target,
        resolved,
        upper,
        &config.image,
        userxattr,
        exclude,
        cmd,
    ) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("unionfs-run: {e}");
            false
        }
    }
}

/// The run that commits `upper` as a failed `--commit-image` would have
/// (its history entry then names `true`).
pub fn retry_commit(upper: &Path, opts: &ImageOpts) -> String {
    use super::commit::shell_word;
    let word = |s: &str| shell_word(std::ffi::OsStr::new(s));
    let mut cmd = String::from("unionfs-run");
    if let Some(store) = &opts.store {
        cmd.push_str(&format!(" --store {}", shell_word(store.as_os_str())));
    }
    if let Some(image) = &opts.image {
        cmd.push_str(&format!(" --image {}", word(image)));
    }
    cmd.push_str(&format!(" {}", shell_word(upper.as_os_str())));
    if let Some(target) = &opts.commit {
        cmd.push_str(&format!(" --commit-image {}", word(target)));
    }
    if opts.zstd {
        cmd.push_str(" --zstd");
    }
    cmd + " -- true"
}

/// `--store-ls` / `--store-prune` on the store at `dir`; the exit code.
pub fn run_store_job(dir: &Path, prune: bool) -> i32 {
    match open_store(dir, crate::sys::proc::geteuid() != 0) {
        Ok(store) => store_job(&store, prune),
        Err(e) => {
            eprintln!("unionfs-run: {e}");
            super::error::EXIT_LAUNCHER
        }
    }
}

/// `--store-ls` / `--store-prune`; returns the exit code.
pub fn store_job(store: &Store, prune: bool) -> i32 {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if prune {
        return match store.prune() {
            Ok(removed) => {
                for d in removed {
                    let _ = writeln!(out, "removed {d}");
                }
                0
            }
            Err(e) => {
                eprintln!("unionfs-run: --store-prune {}: {e}", store.dir.display());
                super::error::EXIT_LAUNCHER
            }
        };
    }
    match store.list() {
        Ok(layers) => {
            let _ = writeln!(out, "{:<71} {:>12}  USED BY", "LAYER (diff_id)", "SIZE");
            for l in layers {
                let users = if l.users.is_empty() {
                    "-".to_string()
                } else {
                    l.users.join(", ")
                };
                let _ = writeln!(
                    out,
                    "{:<71} {:>12}  {users}",
                    l.diff_id.to_string(),
                    l.bytes
                );
            }
            0
        }
        Err(e) => {
            eprintln!("unionfs-run: --store-ls {}: {e}", store.dir.display());
            super::error::EXIT_LAUNCHER
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn a_ref_splits_after_an_existing_dir_else_at_the_first_colon() {
        let t = std::env::temp_dir().join(format!("ufs-ref-test.{}", std::process::id()));
        std::fs::create_dir_all(t.join("a:b")).unwrap();
        let td = t.display().to_string();
        let s = |x: &str| split_ref(&x.replace('T', &td));
        let p = |x: &str| PathBuf::from(x.replace('T', &td));
        assert_eq!(
            s("T:localhost/app:1"),
            (p("T"), Some("localhost/app:1".into()))
        );
        assert_eq!(s("T/a:b:v1"), (p("T/a:b"), Some("v1".into())));
        assert_eq!(s("T/a:b"), (p("T/a:b"), None));
        assert_eq!(s("T/new:v2"), (p("T/new"), Some("v2".into())));
        assert_eq!(split_ref("img:"), (PathBuf::from("img:"), None));
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("64G").unwrap(), 64 << 30);
        assert_eq!(parse_size("2MiB").unwrap(), 2 << 20);
        assert_eq!(parse_size("3k").unwrap(), 3 << 10);
        assert!(parse_size("1X").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn the_command_follows_podman_rules_for_entrypoint_and_cmd() {
        let run = RunConfig {
            entrypoint: vec!["/e".into()],
            cmd: vec!["c1".into(), "c2".into()],
            ..Default::default()
        };
        assert_eq!(command(&run, None, &[]), os(&["/e", "c1", "c2"]));
        assert_eq!(command(&run, None, &os(&["x"])), os(&["/e", "x"]));
        assert_eq!(command(&run, Some("/n"), &[]), os(&["/n"]));
        assert_eq!(command(&run, Some("/n"), &os(&["x"])), os(&["/n", "x"]));
        assert_eq!(command(&run, Some(""), &os(&["x"])), os(&["x"]));
        assert!(command(&RunConfig::default(), None, &[]).is_empty());
    }

    #[test]
    fn created_by_quotes_what_needs_it() {
        assert_eq!(
            created_by(&os(&["sh", "-c", "echo hi > /f"])),
            "unionfs-run sh -c 'echo hi > /f'"
        );
    }
}
