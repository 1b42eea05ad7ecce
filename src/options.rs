//! Command line and `-o` option parsing for `unionfs-fuse`, shared by every
//! invocation form, plus the checks on the directories before mounting.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use clap::Parser;

mod table;
pub use table::{help_text, Kind, Opt, OPTIONS};

const USAGE_HELP: &str = "\
USAGE FORMS:
  unionfs-fuse LOWER1[:LOWER2...] UPPER MERGED [-o OPTS]   read-write union
  unionfs-fuse LOWER1[:LOWER2...] MERGED [-o ro]           read-only union (no upper)
  unionfs-fuse -o lowerdir=L1:L2,upperdir=U,workdir=W MERGED
  unionfs-fuse SOURCE MERGED -o lowerdir=..,upperdir=..   (mount.fuse3 / fstab form)

LOWER1 is the top lower layer, as in overlayfs lowerdir=. Write \\: for a
colon inside a path. In -o, \\, is a comma inside a value, and a comma
between double quotes does not split either (context=\"a,b\").";

const SIGNALS_HELP: &str = "
SIGNALS: SIGTERM, SIGINT and SIGHUP unmount (lazily) and exit 0; so does an
external umount or fusermount3 -u.";

fn full_help() -> String {
    format!("{USAGE_HELP}\n{}{SIGNALS_HELP}", help_text())
}

#[derive(Parser, Debug)]
#[command(
    name = "unionfs-fuse",
    version,
    about = "A union filesystem in userspace that reads and writes kernel overlayfs's on-disk format",
    after_help = full_help()
)]
struct Cli {
    /// Stay in the foreground.
    #[arg(short = 'f')]
    foreground: bool,
    /// Foreground plus debug logging (RUST_LOG also works).
    #[arg(short = 'd')]
    debug: bool,
    /// Mount options, comma separated (see below).
    #[arg(short = 'o', value_name = "OPTS")]
    opts: Vec<String>,
    /// LOWERS [UPPER] MERGED, or SOURCE MERGED with -o lowerdir=...
    #[arg(value_name = "ARGS", num_args = 1..=3, required = true)]
    args: Vec<PathBuf>,
}

/// Which files use FUSE passthrough (reads and writes bypass the server).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassthroughMode {
    Off,
    /// Upper files, and files of a read-only union: no copy-up can follow.
    Safe,
    /// Lower files too (an fd opened before a copy-up keeps the old data).
    All,
}

/// Not for parallelism: with many readers waiting on /dev/fuse, the woken
/// one more often runs on the caller's CPU. On a 2-CPU VM a getxattr round
/// trip took 20 µs with 16 threads against 30 µs with 2.
const DEFAULT_THREADS: usize = 16;

/// Everything a mount needs, from any of the invocation forms.
#[derive(Debug, Clone)]
pub struct MountConfig {
    pub lowers: Vec<PathBuf>,
    /// Data-only lower layers, top-down (`lowerdir=L::D1::D2`, `datadir+=`).
    pub datadirs: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    pub merged: PathBuf,
    pub source: String,
    pub foreground: bool,
    pub debug: bool,
    pub ro: bool,
    pub userxattr: bool,
    pub redirect_dir: bool,
    /// `redirect_dir=nofollow`: redirects are neither made nor followed.
    pub redirect_nofollow: bool,
    /// `metacopy=on`: metadata-only copy-up, and metacopy files are followed.
    pub metacopy: bool,
    pub volatile: bool,
    pub oci_whiteouts: bool,
    pub timeout: f64,
    pub threads: usize,
    pub allow_other: Option<bool>,
    pub default_permissions: Option<bool>,
    pub dev: Option<bool>,
    pub suid: Option<bool>,
    pub exec: bool,
    pub noatime: bool,
    pub uid_map: crate::idmap::IdMap,
    pub gid_map: crate::idmap::IdMap,
    pub passthrough: PassthroughMode,
    pub writeback: bool,
    /// `fsync=0`: no fsync of the upper, without the volatile marker.
    pub no_fsync: bool,
    pub squash_uid: Option<u32>,
    pub squash_gid: Option<u32>,
    /// fuse-overlayfs's `xattr_permissions`: 0 off, 1 security., 2 user.
    pub xattr_permissions: u8,
    /// `context=`, without its quotes.
    pub context: Option<String>,
    pub noacl: bool,
    pub noxattrs: bool,
    pub static_nlink: bool,
    /// One line each for accepted options that have no effect here.
    pub warnings: Vec<String>,
}

/// Splits a lowerdir list on unescaped colons (`\:` is a literal colon).
pub fn split_lowers(s: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => cur.push(n),
                None => cur.push('\\'),
            },
            ':' => out.push(PathBuf::from(std::mem::take(&mut cur))),
            c => cur.push(c),
        }
    }
    out.push(PathBuf::from(cur));
    out
}

/// Splits `-o` text on commas. A `\\,` stays a comma, and so does a comma
/// between double quotes, which are removed (`context="a:b,c"`, as
/// containers/storage sends it); other backslashes stay for the values
/// (`\\:` in lowerdir=).
fn split_opts(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut esc = false;
    let mut quoted = false;
    for c in s.chars() {
        if esc {
            if c != ',' && c != '"' {
                cur.push('\\');
            }
            cur.push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == ',' && !quoted {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if quoted {
        return Err(format!("unbalanced double quote in -o {s}"));
    }
    if esc {
        cur.push('\\');
    }
    out.push(cur);
    Ok(out)
}

/// Splits a lower list into the regular lowers and the data-only ones: each
/// data-only layer follows an empty entry (`L1:L2::D1::D2`), as the kernel
/// reads it.
fn split_data_layers(list: Vec<PathBuf>) -> Result<(Vec<PathBuf>, Vec<PathBuf>), String> {
    let Some(first_empty) = list.iter().position(|p| p.as_os_str().is_empty()) else {
        return Ok((list, Vec::new()));
    };
    if list.len() == 1 {
        // An empty lowerdir=: reported with the other empty names.
        return Ok((list, Vec::new()));
    }
    let (lowers, rest) = list.split_at(first_empty);
    if lowers.is_empty() {
        return Err("lowerdir=::D: data-only layers need a regular lower layer before them".into());
    }
    let mut data = Vec::new();
    let mut it = rest.iter();
    while let Some(sep) = it.next() {
        if !sep.as_os_str().is_empty() {
            return Err(format!(
                "lower layer {} follows a data-only layer: write :: before each data-only layer (as in overlayfs)",
                sep.display()
            ));
        }
        match it.next() {
            Some(d) if !d.as_os_str().is_empty() => data.push(d.clone()),
            _ => {
                return Err("empty data-only layer name (a trailing :: or :::) in lowerdir=".into())
            }
        }
    }
    Ok((lowers.to_vec(), data))
}

fn number<T: std::str::FromStr>(k: &str, v: &str) -> Result<T, String> {
    v.parse::<T>()
        .map_err(|_| format!("option {k}={v}: expected a number"))
}

fn on_off(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "on" | "yes" | "true" | "1" => Ok(true),
        "off" | "no" | "false" | "0" => Ok(false),
        _ => Err(format!("option {key}={v}: expected on or off")),
    }
}

/// Parses the command line (without argv[0] handling: pass the full argv).
pub fn parse(argv: Vec<OsString>) -> Result<MountConfig, clap::Error> {
    let cli = Cli::try_parse_from(argv)?;
    from_cli(cli).map_err(|m| clap::Error::raw(clap::error::ErrorKind::InvalidValue, m + "\n"))
}

/// The longest `timeout=` in seconds (about 31 years): longer ones would
/// overflow the kernel's and fuser's time fields.
const MAX_TIMEOUT: f64 = 1e9;

fn from_cli(cli: Cli) -> Result<MountConfig, String> {
    let mut c = MountConfig {
        lowers: Vec::new(),
        datadirs: Vec::new(),
        upper: None,
        work: None,
        merged: PathBuf::new(),
        source: "unionfs-fuse".into(),
        foreground: cli.foreground || cli.debug,
        debug: cli.debug,
        ro: false,
        userxattr: false,
        redirect_dir: false,
        redirect_nofollow: false,
        metacopy: false,
        volatile: false,
        oci_whiteouts: true,
        timeout: 30.0,
        threads: DEFAULT_THREADS,
        allow_other: None,
        default_permissions: None,
        dev: None,
        suid: None,
        exec: true,
        noatime: false,
        uid_map: Default::default(),
        gid_map: Default::default(),
        passthrough: PassthroughMode::Safe,
        writeback: false,
        no_fsync: false,
        squash_uid: None,
        squash_gid: None,
        xattr_permissions: 0,
        context: None,
        noacl: false,
        noxattrs: false,
        static_nlink: false,
        warnings: Vec::new(),
    };
    let mut squash_root = false;
    let mut lower_appends: Vec<PathBuf> = Vec::new();
    let mut data_appends: Vec<PathBuf> = Vec::new();
    let mut redirect_given: Option<String> = None;
    let mut lowerdir_opt: Option<Vec<PathBuf>> = None;
    let mut fsname: Option<String> = None;
    let mut passthrough_given = false;
    let mut items = Vec::new();
    for o in &cli.opts {
        items.extend(split_opts(o)?);
    }
    for item in items {
        let (k, v) = match item.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (item.clone(), None),
        };
        if k.is_empty() && v.is_none() {
            continue;
        }
        let Some(spec) = table::find(&k, v.as_deref()) else {
            return Err(format!("unknown option '{item}' (see --help)"));
        };
        match spec.kind {
            Kind::Refused => return Err(format!("option {item}: {}", spec.help)),
            Kind::ForMount => continue,
            Kind::Ignored => {
                c.warnings
                    .push(format!("option {item} is ignored: {}", spec.help));
                continue;
            }
            Kind::Accepted => {}
        }
        let need = |v: &Option<String>| v.clone().ok_or(format!("option {k} needs a value"));
        match k.as_str() {
            "lowerdir" => lowerdir_opt = Some(split_lowers(&need(&v)?)),
            "lowerdir+" => {
                if !data_appends.is_empty() {
                    return Err("regular lower layers cannot follow data layers (lowerdir+= after datadir+=), as in overlayfs".into());
                }
                lower_appends.push(PathBuf::from(need(&v)?))
            }
            "datadir+" => data_appends.push(PathBuf::from(need(&v)?)),
            "upperdir" => c.upper = Some(PathBuf::from(need(&v)?)),
            "workdir" => c.work = Some(PathBuf::from(need(&v)?)),
            "ro" => c.ro = true,
            "rw" => c.ro = false,
            // The table let only the values with a meaning here through.
            "metacopy" => c.metacopy = v.as_deref() == Some("on"),
            "index" | "nfs_export" | "verity" => {}
            "userxattr" => c.userxattr = true,
            "redirect_dir" => {
                redirect_given = v.clone();
                c.redirect_dir = v.as_deref() == Some("on");
                c.redirect_nofollow = v.as_deref() == Some("nofollow");
            }
            "volatile" => c.volatile = true,
            "fsync" => c.no_fsync = v.as_deref() == Some("0"),
            "passthrough" => {
                passthrough_given = true;
                c.passthrough = match v.as_deref() {
                    None | Some("on") => PassthroughMode::Safe,
                    Some("off") => PassthroughMode::Off,
                    Some("all") => PassthroughMode::All,
                    Some(x) => {
                        return Err(format!("option passthrough={x}: expected on, off or all"))
                    }
                }
            }
            "writeback" => c.writeback = on_off(&k, v.as_deref().unwrap_or("on"))?,
            "uidmapping" => c.uid_map = crate::idmap::IdMap::parse(&need(&v)?)?,
            "gidmapping" => c.gid_map = crate::idmap::IdMap::parse(&need(&v)?)?,
            "oci_whiteouts" => c.oci_whiteouts = on_off(&k, &need(&v)?)?,
            "squash_to_root" => squash_root = true,
            "squash_to_uid" => c.squash_uid = Some(number(&k, &need(&v)?)?),
            "squash_to_gid" => c.squash_gid = Some(number(&k, &need(&v)?)?),
            "xattr_permissions" => {
                c.xattr_permissions = match need(&v)?.as_str() {
                    "0" => 0,
                    "1" => 1,
                    "2" => 2,
                    x => return Err(format!("option xattr_permissions={x}: expected 0, 1 or 2")),
                }
            }
            "context" => {
                let label = need(&v)?;
                if label.is_empty() {
                    return Err("option context= needs a label".into());
                }
                c.context = Some(label);
            }
            "noacl" => c.noacl = true,
            "noxattrs" => c.noxattrs = on_off(&k, &need(&v)?)?,
            "static_nlink" => c.static_nlink = true,
            "threaded" => {
                if !on_off(&k, &need(&v)?)? {
                    c.threads = 1;
                }
            }
            "debug" => {
                c.debug = true;
                c.foreground = true;
            }
            "timeout" => {
                c.timeout = need(&v)?
                    .parse::<f64>()
                    .ok()
                    .filter(|t| (0.0..=MAX_TIMEOUT).contains(t))
                    .ok_or(format!(
                        "option timeout={}: expected seconds, 0 to {MAX_TIMEOUT}",
                        v.unwrap_or_default()
                    ))?
            }
            "threads" => {
                c.threads = need(&v)?
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or(format!(
                        "option threads={}: expected 1..64",
                        v.unwrap_or_default()
                    ))?
            }
            "allow_other" => c.allow_other = Some(true),
            "default_permissions" => c.default_permissions = Some(true),
            "dev" => c.dev = Some(true),
            "nodev" => c.dev = Some(false),
            "suid" => c.suid = Some(true),
            "nosuid" => c.suid = Some(false),
            "exec" => c.exec = true,
            "noexec" => c.exec = false,
            "atime" => c.noatime = false,
            "noatime" => c.noatime = true,
            "fsname" => {
                fsname = Some(need(&v)?).filter(|n| !n.is_empty());
                if fsname.is_none() {
                    return Err("option fsname= needs a non-empty name".into());
                }
            }
            // A table entry without a handler: a bug, but not a mount.
            _ => return Err(format!("option '{item}' is listed but not handled")),
        }
    }
    if squash_root {
        c.squash_uid = c.squash_uid.or(Some(0));
        c.squash_gid = c.squash_gid.or(Some(0));
    }
    if !lower_appends.is_empty() || !data_appends.is_empty() {
        if lowerdir_opt.is_some() {
            // As the kernel: the two forms do not mix.
            return Err("lowerdir+= and datadir+= cannot be mixed with lowerdir=".into());
        }
        if lower_appends.is_empty() {
            return Err("datadir+= needs at least one lowerdir+= before it".into());
        }
        lowerdir_opt = Some(lower_appends);
        c.datadirs = data_appends;
    }
    if let Some(l) = lowerdir_opt.take() {
        let (lowers, data) = split_data_layers(l)?;
        lowerdir_opt = Some(lowers);
        if !data.is_empty() {
            c.datadirs = data;
        }
    }

    let args = cli.args;
    match (lowerdir_opt, args.len()) {
        (Some(l), 1) => {
            c.lowers = l;
            c.merged = args[0].clone();
        }
        (Some(l), 2) => {
            // mount.fuse3 form: SOURCE MERGED.
            c.lowers = l;
            c.source = args[0].to_string_lossy().into_owned();
            c.merged = args[1].clone();
        }
        (Some(_), _) => return Err("with -o lowerdir=, give only [SOURCE] MERGED".into()),
        (None, 1) => {
            return Err("missing lower directories (LOWERS [UPPER] MERGED or -o lowerdir=)".into())
        }
        (None, 2) => {
            (c.lowers, c.datadirs) = split_data_layers(split_lowers(&args[0].to_string_lossy()))?;
            c.merged = args[1].clone();
        }
        (None, _) => {
            if c.upper.is_some() {
                return Err("upper given twice (positional and upperdir=)".into());
            }
            (c.lowers, c.datadirs) = split_data_layers(split_lowers(&args[0].to_string_lossy()))?;
            c.upper = Some(args[1].clone());
            c.merged = args[2].clone();
        }
    }
    if c.ro {
        // As a read-only overlayfs mount: the upper's content stays visible,
        // its whiteouts and opaque dirs included, which a lower layer honours
        // the same way.
        if let Some(u) = c.upper.take() {
            c.lowers.insert(0, u);
        }
        c.work = None;
    }
    if c.lowers.is_empty() || c.lowers.iter().any(|l| l.as_os_str().is_empty()) {
        return Err("empty directory name in the lower list (or upperdir= with ro)".into());
    }
    if let Some(name) = fsname {
        c.source = name;
    }
    if c.writeback && passthrough_given && c.passthrough != PassthroughMode::Off {
        return Err(
            "options writeback and passthrough exclude each other: pass one of them".into(),
        );
    }
    if c.metacopy {
        // As the kernel: metacopy files are found through redirects, so
        // metacopy=on turns redirect_dir=on and refuses a mode without them.
        if c.userxattr {
            return Err("conflicting options: userxattr,metacopy=on (as in overlayfs)".into());
        }
        match redirect_given.as_deref() {
            None => c.redirect_dir = c.upper.is_some(),
            Some("nofollow") => {
                return Err("conflicting options: metacopy=on,redirect_dir=nofollow (as in overlayfs)".into())
            }
            Some(r) if r != "on" && c.upper.is_some() => {
                return Err(format!(
                    "conflicting options: metacopy=on,redirect_dir={r} (with an upper, as in overlayfs)"
                ))
            }
            Some(_) => {}
        }
    }
    if c.redirect_dir && c.userxattr {
        return Err("redirect_dir=on cannot be used with userxattr (as in overlayfs)".into());
    }
    if c.upper.is_none() && c.work.is_some() {
        return Err("workdir= needs upperdir=".into());
    }
    Ok(c)
}

fn canon(what: &str, p: &Path) -> Result<PathBuf, String> {
    let md = std::fs::metadata(p).map_err(|e| format!("{what} {}: {e}", p.display()))?;
    if !md.is_dir() {
        return Err(format!("{what} {}: not a directory", p.display()));
    }
    std::fs::canonicalize(p).map_err(|e| format!("{what} {}: {e}", p.display()))
}

fn inside(a: &Path, b: &Path) -> bool {
    a != b && a.starts_with(b)
}

/// Checks the directories and makes every path absolute. Returns the
/// config with canonical paths.
pub fn validate(mut c: MountConfig) -> Result<MountConfig, String> {
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse does not exist: load the fuse module (modprobe fuse) or give the container the device".into());
    }
    let mut lowers = Vec::new();
    for l in &c.lowers {
        lowers.push(canon("lower dir", l)?);
    }
    let mut datadirs = Vec::new();
    for d in &c.datadirs {
        datadirs.push(canon("data-only lower dir", d)?);
    }
    let upper = c
        .upper
        .as_deref()
        .map(|u| canon("upper dir", u))
        .transpose()?;
    let work = c
        .work
        .as_deref()
        .map(|w| canon("work dir", w))
        .transpose()?;
    let merged = canon("mount point", &c.merged)?;

    let mut all: Vec<(&str, &PathBuf)> = lowers.iter().map(|l| ("lower dir", l)).collect();
    all.extend(datadirs.iter().map(|d| ("data-only lower dir", d)));
    if let Some(u) = &upper {
        all.push(("upper dir", u));
    }
    if let Some(w) = &work {
        all.push(("work dir", w));
    }
    for (i, (na, a)) in all.iter().enumerate() {
        for (nb, b) in all.iter().skip(i + 1) {
            if a == b {
                return Err(format!("{} is given twice (as {na} and {nb})", a.display()));
            }
        }
    }
    if let Some(u) = &upper {
        for l in &lowers {
            if inside(u, l) {
                return Err(format!(
                    "upper dir {} is inside lower dir {}",
                    u.display(),
                    l.display()
                ));
            }
            if inside(l, u) {
                return Err(format!(
                    "lower dir {} is inside upper dir {}",
                    l.display(),
                    u.display()
                ));
            }
        }
        if inside(&merged, u) || merged == *u {
            return Err(format!(
                "mount point {} is inside the upper dir",
                merged.display()
            ));
        }
        if let Some(w) = &work {
            if inside(w, u) || inside(u, w) {
                return Err("workdir and upperdir must not contain each other".into());
            }
            let (du, dw) = (
                std::fs::metadata(u)
                    .map(|m| m.dev())
                    .map_err(|e| e.to_string())?,
                std::fs::metadata(w)
                    .map(|m| m.dev())
                    .map_err(|e| e.to_string())?,
            );
            if du != dw {
                return Err(format!(
                    "work dir {} is on another filesystem than upper dir {}",
                    w.display(),
                    u.display()
                ));
            }
        }
    }
    for l in &lowers {
        if let Some(w) = &work {
            // As the kernel's overlap check: the work dir's churn would
            // show up in a layer, or the lower under the work dir.
            if inside(w, l) || inside(l, w) {
                return Err(format!(
                    "work dir {} and lower dir {} must not contain each other",
                    w.display(),
                    l.display()
                ));
            }
        }
        if inside(&merged, l) {
            return Err(format!(
                "mount point {} is inside lower dir {}",
                merged.display(),
                l.display()
            ));
        }
    }
    c.lowers = lowers;
    c.datadirs = datadirs;
    c.upper = upper;
    c.work = work;
    c.merged = merged;
    Ok(c)
}

#[cfg(test)]
mod tests;
