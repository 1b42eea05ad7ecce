//! The long test of `unionfs-run`: a Debian minbase rootfs made with
//! debootstrap from the archive this machine's apt uses, cached under the
//! target dir (`CARGO_TARGET_TMPDIR/minbase-SUITE`; about 45 s to make,
//! then reused, never written: it is only ever a lower). Inside it the init
//! layer gives /etc/hosts, /etc/hostname and /etc/resolv.conf, and
//! `apt-get update` reaches the archive. That may fail only where the host
//! itself cannot resolve the archive's name, and then the test says so.
//!
//! Needs root, /dev/fuse, debootstrap (.ci/run installs it) and the
//! network; without them it returns early with the reason, except under
//! `CI=true`, where it fails.

mod launcher_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use launcher_support::*;

/// The first archive and suite in apt's sources (deb822 or one-line form).
fn apt_archive() -> (String, String) {
    let mut texts = Vec::new();
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut files: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        files.sort();
        texts.extend(files.iter().filter_map(|f| fs::read_to_string(f).ok()));
    }
    texts.extend(fs::read_to_string("/etc/apt/sources.list").ok());
    for text in &texts {
        let field = |name: &str| {
            text.lines().find_map(|l| {
                let v = l.strip_prefix(name)?.split_whitespace().next()?;
                Some(v.to_string())
            })
        };
        if let (Some(uri), Some(suite)) = (field("URIs:"), field("Suites:")) {
            return (uri, suite);
        }
        for l in text.lines() {
            let w: Vec<&str> = l.split_whitespace().collect();
            if w.len() >= 3 && w[0] == "deb" && !w[1].starts_with('[') {
                return (w[1].to_string(), w[2].to_string());
            }
        }
    }
    ("http://deb.debian.org/debian".into(), "bookworm".into())
}

fn host_of(uri: &str) -> &str {
    let rest = uri.split("://").nth(1).unwrap_or(uri);
    rest.split(['/', ':']).next().unwrap_or(rest)
}

/// The cached minbase rootfs, made on first use. None (with the reason
/// given) when debootstrap is missing or fails.
fn minbase() -> Option<PathBuf> {
    let (uri, suite) = apt_archive();
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("minbase-{suite}"));
    let done = cache.join(".unionfs-test-complete");
    if done.exists() {
        return Some(cache);
    }
    if Command::new("debootstrap")
        .arg("--version")
        .output()
        .is_err()
    {
        skip_or_fail("no debootstrap (apt-get install debootstrap)");
        return None;
    }
    let partial = cache.with_extension("partial");
    let _ = fs::remove_dir_all(&partial);
    let _ = fs::remove_dir_all(&cache);
    let o = Command::new("debootstrap")
        .args(["--variant=minbase", &suite])
        .arg(&partial)
        .arg(&uri)
        .output()
        .unwrap();
    if !o.status.success() {
        let _ = fs::remove_dir_all(&partial);
        skip_or_fail(&format!(
            "debootstrap {suite} {uri} failed: {}",
            describe(&o)
        ));
        return None;
    }
    fs::write(partial.join(".unionfs-test-complete"), "").unwrap();
    fs::rename(&partial, &cache).unwrap();
    Some(cache)
}

fn run(tmp: &Path, args: &[&str]) -> Output {
    Command::new(RUN)
        .args(args)
        .env("TMPDIR", tmp)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_debian_minbase_rootfs_gets_hosts_and_dns_and_apt_get_update_works() {
    if !environment_ok() {
        return;
    }
    let Some(rootfs) = minbase() else {
        return;
    };
    assert!(
        !rootfs.join("etc/hosts").exists() || !rootfs.join("etc/hostname").exists(),
        "the issue's premise: minbase lacks them"
    );
    let dir = TestDir::new();
    let tmp = dir.mkdir("tmp");
    let image = rootfs.to_str().unwrap();
    let script = "cat /etc/hosts; echo --; cat /etc/hostname; echo --; \
                  cat /etc/resolv.conf; echo --; hostname";
    let o = run(
        &tmp,
        &[
            "--hostname",
            "minbase",
            image,
            "--",
            "/bin/sh",
            "-c",
            script,
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let out = stdout(&o);
    let parts: Vec<&str> = out.split("--\n").collect();
    assert!(parts[0].starts_with("127.0.0.1\tlocalhost\n"), "{out}");
    assert!(parts[0].contains("127.0.1.1\tminbase\n"), "{out}");
    assert_eq!(parts[1], "minbase\n");
    assert!(parts[2].contains("nameserver "), "{out}");
    assert_eq!(parts[3], "minbase\n");

    let archive = apt_archive().0;
    let name = host_of(&archive);
    let host_dns = Command::new("getent")
        .args(["hosts", name])
        .output()
        .is_ok_and(|o| o.status.success());
    if !host_dns {
        skip_or_fail(&format!(
            "the host itself cannot resolve {name}: apt-get update cannot work inside"
        ));
        return;
    }
    let upper = dir.mkdir("upper");
    let o = run(
        &tmp,
        &[image, upper.to_str().unwrap(), "--", "apt-get", "update"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let out = stdout(&o);
    assert!(out.contains(name), "apt-get reached {name}: {out}");
    assert!(!out.contains("Temporary failure resolving"), "{out}");
    let lists = upper.join("var/lib/apt/lists");
    assert!(
        fs::read_dir(&lists).is_ok_and(|r| r.count() > 2),
        "the lists landed in the upper"
    );
    for p in ["etc/hosts", "etc/hostname", "etc/resolv.conf"] {
        assert!(!upper.join(p).exists(), "{p} reached the upper");
    }
    let left: Vec<_> = fs::read_dir(&tmp).unwrap().flatten().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
