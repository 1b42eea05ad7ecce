//! The init layer: a plain dir in the run's scratch dir, stacked as the top
//! lower (above the image, below the upper), holding the run's
//! `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`. Being a lower, its
//! files reach the upper only when the command changes them (a copy-up), so
//! an untouched run's upper and `--commit` hold none of them, and the upper
//! still reads right over the image layers alone.
//!
//! Where the image's `/etc` is a symlink, the files go where it resolves
//! inside the image (`/etc -> usr/etc`: into `usr/etc`), found by
//! [`Sys::image_dir`] without following anything out of the layers. A plain
//! `etc` dir in the init layer would instead hide the symlink and all of
//! the image's /etc with it. Each dir the init layer holds copies the
//! attributes of the image's dir it merges with, because the topmost layer's
//! dir is the one the union shows (and copies up).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::seam::Sys;
use super::Error;

/// The init layer's file names, inside the image's /etc.
pub const FILES: [&str; 3] = ["hosts", "hostname", "resolv.conf"];

/// What the three files hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitFiles {
    pub hosts: String,
    pub hostname: String,
    pub resolv_conf: String,
}

/// `/etc/hosts`: localhost, the run's own name, then `--add-host` lines.
pub fn hosts(hostname: &str, extra: &[(String, IpAddr)]) -> String {
    let mut s = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    );
    for (name, ip) in extra {
        s.push_str(&format!("{ip}\t{name}\n"));
    }
    s
}

fn nameservers(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        .collect()
}

fn is_loopback(ip: &str) -> bool {
    ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host's resolv.conf as the run sees it: when it names only loopback
/// resolvers (systemd-resolved's 127.0.0.53 stub), the upstream list that
/// systemd-resolved keeps, if there is one (as podman does).
pub fn host_resolv_conf(etc: &str, resolved_upstream: Option<&str>) -> String {
    let ns = nameservers(etc);
    match resolved_upstream {
        Some(up) if !ns.is_empty() && ns.iter().all(|n| is_loopback(n)) => up.to_string(),
        _ => etc.to_string(),
    }
}

/// `/etc/resolv.conf`: empty without a network; with `--dns`, those
/// nameservers and the host's other lines (search, options).
pub fn resolv_conf(host: &str, dns: &[IpAddr], net_none: bool) -> String {
    if net_none {
        return String::new();
    }
    if dns.is_empty() {
        return host.to_string();
    }
    let mut s: String = dns.iter().map(|ip| format!("nameserver {ip}\n")).collect();
    for l in host.lines() {
        if l.split_whitespace().next() != Some("nameserver") {
            s.push_str(l);
            s.push('\n');
        }
    }
    s
}

/// Step `init layer`: creates `init` with the image's /etc dirs and the
/// three files. Writes only inside `init`, a dir this run just made.
pub fn write<S: Sys>(
    sys: &mut S,
    init: &Path,
    lowers: &[PathBuf],
    files: &InitFiles,
) -> Result<(), Error> {
    let fail = |p: &Path| {
        let p = p.to_path_buf();
        move |e| Error::InitLayer(p, e)
    };
    sys.mkdir(init, 0o755).map_err(fail(init))?;
    let dirs = sys
        .image_dir(lowers, "etc")
        .map_err(fail(Path::new("/etc")))?;
    let mut path = init.to_path_buf();
    let mut made = Vec::new();
    for d in &dirs {
        path.push(&d.name);
        let mode = d.attrs.map_or(0o755, |a| a.mode & 0o7777);
        sys.mkdir(&path, mode).map_err(fail(&path))?;
        made.push((path.clone(), d.attrs));
    }
    let contents = [&files.hosts, &files.hostname, &files.resolv_conf];
    for (name, data) in FILES.iter().zip(contents) {
        let file = path.join(name);
        sys.write_new_file(&file, data, 0o644)
            .map_err(fail(&file))?;
    }
    // Last, so that writing the files does not change the times copied.
    for (dir, attrs) in made.iter().rev() {
        if let Some(a) = attrs {
            sys.set_attrs(dir, a).map_err(fail(dir))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_names_localhost_the_run_and_added_hosts() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(
            hosts("abc", &[("db".into(), ip)]),
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             127.0.1.1\tabc\n10.1.2.3\tdb\n"
        );
    }

    #[test]
    fn a_stub_resolver_is_replaced_by_the_upstream_list() {
        let stub = "nameserver 127.0.0.53\noptions edns0\n";
        let up = "nameserver 192.0.2.1\n";
        assert_eq!(host_resolv_conf(stub, Some(up)), up);
        assert_eq!(host_resolv_conf(stub, None), stub);
        let real = "nameserver 10.0.0.1\nnameserver 127.0.0.53\n";
        assert_eq!(host_resolv_conf(real, Some(up)), real);
    }

    #[test]
    fn dns_overrides_and_no_network_empties_resolv_conf() {
        let host = "search lan\nnameserver 10.0.0.1\n";
        let dns: Vec<IpAddr> = vec!["1.1.1.1".parse().unwrap()];
        assert_eq!(
            resolv_conf(host, &dns, false),
            "nameserver 1.1.1.1\nsearch lan\n"
        );
        assert_eq!(resolv_conf(host, &[], false), host);
        assert_eq!(resolv_conf(host, &dns, true), "");
    }
}
