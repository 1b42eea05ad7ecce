//! The values of `unionfs-run`'s container options, parsed and checked
//! before anything runs. Each error is one line that names the option.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// `--bind SRC:DST[:ro]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
    /// SRC is not a dir (known once it is checked): DST is made a file.
    pub file: bool,
}

/// `--tmpfs DST[:OPTS]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tmpfs {
    pub target: PathBuf,
    /// tmpfs mount data, checked: `size=`, `mode=`, `nr_inodes=`, `uid=`, `gid=`.
    pub options: String,
}

/// A user or group: a number, or a name to look up in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    Id(u32),
    Name(String),
}

/// `-u/--user USER[:GROUP]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    pub user: Who,
    pub group: Option<Who>,
}

type Checked<T> = Result<T, String>;

/// An absolute path inside the rootfs, without `.` or `..` (a mount point).
pub fn inside_path(option: &str, value: &str, path: &str) -> Checked<PathBuf> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(format!("{option} {value}: {path} is not an absolute path"));
    }
    // By the bytes: Path::components drops `.` silently.
    let normal = path.split('/').all(|c| c != "." && c != "..");
    if !normal || p.components().count() < 2 {
        return Err(format!(
            "{option} {value}: {path} must name a dir below / without . or .."
        ));
    }
    Ok(p.to_path_buf())
}

pub fn parse_bind(value: &str) -> Checked<Bind> {
    let mut parts: Vec<&str> = value.split(':').collect();
    let mut read_only = false;
    if parts.len() == 3 {
        read_only = match parts.pop() {
            Some("ro") => true,
            Some("rw") => false,
            _ => return Err(format!("--bind {value}: the mode after DST is ro or rw")),
        };
    }
    match parts.as_slice() {
        [src, dst] if !src.is_empty() => Ok(Bind {
            source: PathBuf::from(src),
            target: inside_path("--bind", value, dst)?,
            read_only,
            file: false,
        }),
        _ => Err(format!("--bind {value}: expected SRC:DST or SRC:DST:ro")),
    }
}

pub fn parse_tmpfs(value: &str) -> Checked<Tmpfs> {
    let (dst, opts) = value.split_once(':').unwrap_or((value, ""));
    let target = inside_path("--tmpfs", value, dst)?;
    for opt in opts.split(',').filter(|o| !o.is_empty()) {
        let (key, v) = opt.split_once('=').unwrap_or((opt, ""));
        let ok = match key {
            "size" => is_size(v),
            "nr_inodes" => is_size(v),
            "mode" => {
                !v.is_empty() && v.len() <= 4 && v.bytes().all(|b| (b'0'..=b'7').contains(&b))
            }
            "uid" | "gid" => v.parse::<u32>().is_ok(),
            _ => false,
        };
        if !ok {
            return Err(format!(
                "--tmpfs {value}: bad option {opt} (size=N[k|m|g|%], mode=OCTAL, nr_inodes=N, uid=N, gid=N)"
            ));
        }
    }
    Ok(Tmpfs {
        target,
        options: opts.to_string(),
    })
}

fn is_size(v: &str) -> bool {
    let digits = v.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G', '%']);
    !digits.is_empty() && digits.len() + 1 >= v.len() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn who(s: &str) -> Option<Who> {
    if s.is_empty() {
        None
    } else if let Ok(n) = s.parse::<u32>() {
        Some(Who::Id(n))
    } else {
        Some(Who::Name(s.to_string()))
    }
}

pub fn parse_user(value: &str) -> Checked<UserSpec> {
    let (u, g) = match value.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (value, None),
    };
    let bad = || format!("--user {value}: expected UID[:GID] or NAME[:GROUP]");
    let user = who(u).ok_or_else(bad)?;
    let group = match g {
        Some(g) => Some(who(g).ok_or_else(bad)?),
        None => None,
    };
    Ok(UserSpec { user, group })
}

/// A valid environment variable name: not empty, no `=` or NUL.
fn env_name(k: &str) -> bool {
    !k.is_empty() && !k.contains(['=', '\0']) && !k.contains(char::is_whitespace)
}

/// One `-e` value: `K=V` sets, `K` copies the host's (absent there: not set).
pub fn parse_env(
    option: &str,
    value: &str,
    host: &dyn Fn(&str) -> Option<OsString>,
) -> Checked<Option<(OsString, OsString)>> {
    let (k, v) = match value.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (value, None),
    };
    if !env_name(k) {
        return Err(format!("{option} {value}: not a variable name"));
    }
    if v.is_some_and(|v| v.contains('\0')) {
        return Err(format!("{option} {k}: the value holds a NUL byte"));
    }
    Ok(match v {
        Some(v) => Some((k.into(), v.into())),
        None => host(k).map(|v| (k.into(), v)),
    })
}

/// An `--env-file`: `K=V` or `K` lines; blank lines and `#` comments skipped.
pub fn parse_env_file(
    file: &Path,
    text: &str,
    host: &dyn Fn(&str) -> Option<OsString>,
) -> Checked<Vec<(OsString, OsString)>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let option = format!("--env-file {}:{}:", file.display(), n + 1);
        if let Some(kv) = parse_env(&option, trimmed, host)? {
            out.push(kv);
        }
    }
    Ok(out)
}

/// `--add-host NAME:IP` (the IP may be IPv6, colons and all).
pub fn parse_add_host(value: &str) -> Checked<(String, IpAddr)> {
    let bad = || format!("--add-host {value}: expected NAME:IP");
    let (name, ip) = value.split_once(':').ok_or_else(bad)?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    if !is_hostname(name) {
        return Err(bad());
    }
    Ok((name.to_string(), ip))
}

pub fn parse_dns(value: &str) -> Checked<IpAddr> {
    value
        .parse()
        .map_err(|_| format!("--dns {value}: not an IP address"))
}

/// RFC 1123 labels, dots between, at most 64 bytes (the kernel's limit).
pub fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

pub fn parse_hostname(value: &str) -> Checked<String> {
    if is_hostname(value) {
        Ok(value.to_string())
    } else {
        Err(format!(
            "--hostname {value}: not a host name (letters, digits, - and ., at most 64)"
        ))
    }
}

pub fn parse_cwd(value: &Path) -> Checked<PathBuf> {
    if value.is_absolute() {
        Ok(value.to_path_buf())
    } else {
        Err(format!("--cwd {}: not an absolute path", value.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> Option<OsString> {
        None
    }

    #[test]
    fn bind_values_are_src_dst_and_an_optional_mode() {
        let b = parse_bind("/h:/data:ro").unwrap();
        assert_eq!(
            (b.source.as_path(), b.target.as_path()),
            (Path::new("/h"), Path::new("/data"))
        );
        assert!(b.read_only);
        assert!(!parse_bind("/h:/data").unwrap().read_only);
        assert!(!parse_bind("/h:/data:rw").unwrap().read_only);
        for bad in [
            "/h",
            "/h:data",
            "/h:/",
            "/h:/a/../b",
            ":/x",
            "/h:/x:rx",
            "/h:/x/./y",
        ] {
            let e = parse_bind(bad).unwrap_err();
            assert!(e.starts_with(&format!("--bind {bad}: ")), "{e}");
        }
    }

    #[test]
    fn tmpfs_options_are_checked() {
        let t = parse_tmpfs("/scratch:size=10m,mode=1777").unwrap();
        assert_eq!(t.options, "size=10m,mode=1777");
        assert_eq!(parse_tmpfs("/s").unwrap().options, "");
        for bad in ["s", "/s:size=ten", "/s:mode=999", "/s:exec", "/s:size=1mm"] {
            assert!(
                parse_tmpfs(bad).unwrap_err().starts_with("--tmpfs "),
                "{bad}"
            );
        }
    }

    #[test]
    fn users_are_ids_or_names_with_an_optional_group() {
        let u = parse_user("1000:100").unwrap();
        assert_eq!((u.user, u.group), (Who::Id(1000), Some(Who::Id(100))));
        let u = parse_user("nobody").unwrap();
        assert_eq!((u.user, u.group), (Who::Name("nobody".into()), None));
        assert!(parse_user("").is_err() && parse_user("1:").is_err());
    }

    #[test]
    fn env_values_set_or_copy_from_the_host() {
        let host = |k: &str| (k == "HOSTVAR").then(|| OsString::from("hv"));
        assert_eq!(
            parse_env("-e", "A=b=c", &host).unwrap(),
            Some(("A".into(), "b=c".into()))
        );
        assert_eq!(
            parse_env("-e", "HOSTVAR", &host).unwrap(),
            Some(("HOSTVAR".into(), "hv".into()))
        );
        assert_eq!(parse_env("-e", "UNSET", &host).unwrap(), None);
        assert!(parse_env("-e", "=x", &host).is_err());
        let text = "# c\n\nA=1\n  B=2\nHOSTVAR\n";
        let got = parse_env_file(Path::new("f"), text, &host).unwrap();
        assert_eq!(got.len(), 3);
        let e = parse_env_file(Path::new("f"), "A=1\nbad line=2\n", &none).unwrap_err();
        assert!(e.starts_with("--env-file f:2: "), "{e}");
    }

    #[test]
    fn hosts_dns_and_hostnames_are_checked() {
        let (n, ip) = parse_add_host("db:10.0.0.2").unwrap();
        assert_eq!((n.as_str(), ip.to_string().as_str()), ("db", "10.0.0.2"));
        assert_eq!(
            parse_add_host("v6:fd00::1").unwrap().1.to_string(),
            "fd00::1"
        );
        assert!(parse_add_host("db").is_err() && parse_add_host("d b:1.2.3.4").is_err());
        assert!(parse_dns("1.1.1.1").is_ok() && parse_dns("one").is_err());
        assert!(parse_hostname("box-1.lan").is_ok());
        assert!(parse_hostname("-x").is_err() && parse_hostname(&"a".repeat(65)).is_err());
        assert!(parse_cwd(Path::new("rel")).is_err());
    }
}
