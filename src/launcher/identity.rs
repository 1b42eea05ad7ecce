//! Who the command runs as, from the image's /etc/passwd and /etc/group,
//! and the clean environment it starts with.

use std::ffi::OsString;

use super::spec::{UserSpec, Who};

/// PATH inside, Debian's default for root (and docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// `container=` in the command's environment, as systemd reads it.
pub const CONTAINER_NAME: &str = "unionfs-run";

/// The ids the command process switches to, and the user's home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (with the primary one).
    pub groups: Vec<u32>,
    pub home: String,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

/// (name, gid, members) of each well-formed /etc/group line.
fn group_entries(group: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    group.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        let members = f[3].split(',').filter(|m| !m.is_empty()).collect();
        Some((f[0], f[2].parse().ok()?, members))
    })
}

/// `USER[:GROUP]` as given.
pub fn describe(spec: &UserSpec) -> String {
    let w = |w: &Who| match w {
        Who::Id(n) => n.to_string(),
        Who::Name(s) => s.clone(),
    };
    match &spec.group {
        Some(g) => format!("{}:{}", w(&spec.user), w(g)),
        None => w(&spec.user),
    }
}

/// Resolves `spec` (None: root) against the image's passwd and group text.
/// The error says what is unknown, naming the option.
pub fn resolve(spec: Option<&UserSpec>, passwd: &str, group: &str) -> Result<Identity, String> {
    let shown = || spec.map_or("0".into(), describe);
    let user = spec.map_or(Who::Id(0), |s| s.user.clone());
    let entry = match &user {
        Who::Id(uid) => passwd_entries(passwd).find(|e| e.uid == *uid),
        Who::Name(name) => Some(passwd_entries(passwd).find(|e| e.name == name).ok_or_else(
            || {
                format!(
                    "--user {}: no user {name} in the image's /etc/passwd",
                    shown()
                )
            },
        )?),
    };
    let uid = match (&user, &entry) {
        (Who::Id(uid), _) => *uid,
        (_, Some(e)) => e.uid,
        (Who::Name(_), None) => 0,
    };
    let gid = match spec.and_then(|s| s.group.as_ref()) {
        Some(Who::Id(gid)) => *gid,
        Some(Who::Name(name)) => group_entries(group)
            .find(|(n, _, _)| n == name)
            .map(|(_, gid, _)| gid)
            .ok_or_else(|| {
                format!(
                    "--user {}: no group {name} in the image's /etc/group",
                    shown()
                )
            })?,
        None => entry.as_ref().map_or(0, |e| e.gid),
    };
    let mut groups = vec![gid];
    if let Some(e) = &entry {
        for (_, g, members) in group_entries(group) {
            if members.contains(&e.name) && !groups.contains(&g) {
                groups.push(g);
            }
        }
    }
    let home = match &entry {
        Some(e) if !e.home.is_empty() => e.home.to_string(),
        _ if uid == 0 => "/root".into(),
        _ => "/".into(),
    };
    Ok(Identity {
        uid,
        gid,
        groups,
        home,
    })
}

/// The command's environment: PATH, HOME, TERM (when the host has one),
/// HOSTNAME and container, then `extra` (-e, --env-file), which overrides.
pub fn environment(
    home: &str,
    term: Option<&OsString>,
    hostname: &str,
    extra: &[(OsString, OsString)],
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOME".into(), home.into()),
    ];
    if let Some(t) = term {
        env.push(("TERM".into(), t.clone()));
    }
    env.push(("HOSTNAME".into(), hostname.into()));
    env.push(("container".into(), CONTAINER_NAME.into()));
    for (k, v) in extra {
        match env.iter_mut().find(|(ek, _)| ek == k) {
            Some(slot) => slot.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launcher::spec::parse_user;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        app:x:1000:1000::/home/app:/bin/sh\nbroken\n";
    const GROUP: &str = "root:x:0:\napp:x:1000:\nwheel:x:10:app,other\nstaff:x:50:app\n";

    fn user(s: &str) -> Result<Identity, String> {
        resolve(Some(&parse_user(s).unwrap()), PASSWD, GROUP)
    }

    #[test]
    fn a_name_gets_its_ids_home_and_supplementary_groups() {
        let id = user("app").unwrap();
        assert_eq!(
            (id.uid, id.gid, id.home.as_str()),
            (1000, 1000, "/home/app")
        );
        assert_eq!(id.groups, [1000, 10, 50]);
        assert_eq!(user("app:wheel").unwrap().gid, 10);
    }

    #[test]
    fn numeric_ids_need_no_passwd_entry() {
        let id = user("4242").unwrap();
        assert_eq!((id.uid, id.gid, id.home.as_str()), (4242, 0, "/"));
        assert_eq!(user("1000").unwrap().home, "/home/app");
        let root = resolve(None, "", "").unwrap();
        assert_eq!((root.uid, root.home.as_str()), (0, "/root"));
    }

    #[test]
    fn unknown_names_are_errors_naming_the_option() {
        assert_eq!(
            user("bob").unwrap_err(),
            "--user bob: no user bob in the image's /etc/passwd"
        );
        assert!(user("app:nogroup")
            .unwrap_err()
            .starts_with("--user app:nogroup: no group"));
    }

    #[test]
    fn the_environment_is_clean_and_extra_values_override() {
        let term = OsString::from("xterm");
        let env = environment("/root", Some(&term), "h1", &[("PATH".into(), "/x".into())]);
        let keys: Vec<_> = env
            .iter()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        assert_eq!(keys, ["PATH", "HOME", "TERM", "HOSTNAME", "container"]);
        assert_eq!(env[0].1, "/x");
        assert_eq!(env[4].1, "unionfs-run");
        assert_eq!(environment("/", None, "h", &[]).len(), 4);
    }
}
