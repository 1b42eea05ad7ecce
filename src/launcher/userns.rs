//! The rootless identity: which uid/gid map the new user namespace gets.
//!
//! The caller always becomes uid/gid 0 inside. With a subordinate range in
//! /etc/subuid and /etc/subgid, and the setuid helpers newuidmap/newgidmap to
//! install it, ids 1..=N inside map to that range, so an image's files of
//! other owners keep their owners. Otherwise the map holds the caller alone.

use std::path::{Path, PathBuf};

/// What a single-id map means, said once when it is chosen.
pub const SINGLE_MAP_NOTE: &str = "no subordinate id range for this user in /etc/subuid and \
/etc/subgid (or no newuidmap/newgidmap): using a single-id map. Inside, only uid/gid 0 (you) \
exists: files owned by anyone else show as nobody/nogroup (65534), and chown to another id fails";

/// A run of host ids: `start..start+count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub start: u32,
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdMapping {
    /// 0 inside is the caller outside; no other id exists.
    Single { uid: u32, gid: u32 },
    /// 0 is the caller, 1..=count the subordinate range.
    Subordinate {
        uid: u32,
        gid: u32,
        uids: IdRange,
        gids: IdRange,
        newuidmap: PathBuf,
        newgidmap: PathBuf,
    },
}

impl IdMapping {
    /// Picks the map for the caller from the system's files and tools.
    pub fn probe(uid: u32, gid: u32) -> IdMapping {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let name = user_name(&read("/etc/passwd"), uid);
        let uids = find_range(&read("/etc/subuid"), name.as_deref(), uid);
        let gids = find_range(&read("/etc/subgid"), name.as_deref(), uid);
        match (uids, gids, find_tool("newuidmap"), find_tool("newgidmap")) {
            (Some(uids), Some(gids), Some(newuidmap), Some(newgidmap)) => IdMapping::Subordinate {
                uid,
                gid,
                uids,
                gids,
                newuidmap,
                newgidmap,
            },
            _ => IdMapping::Single { uid, gid },
        }
    }
}

/// The uid_map/gid_map line for a single-id map.
pub fn single_map_line(id: u32) -> String {
    format!("0 {id} 1\n")
}

/// Arguments of newuidmap/newgidmap: `PID 0 ID 1 1 START COUNT`.
pub fn helper_args(pid: i32, id: u32, range: IdRange) -> Vec<String> {
    [
        pid as i64,
        0,
        id as i64,
        1,
        1,
        range.start as i64,
        range.count as i64,
    ]
    .iter()
    .map(|n| n.to_string())
    .collect()
}

/// The login name of `uid` in passwd-format text.
pub fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        (f.next()?.parse::<u32>().ok()? == uid).then(|| name.to_string())
    })
}

/// The first range in subuid/subgid-format text (`USER:START:COUNT`, USER a
/// name or a numeric uid) that belongs to `name` or `uid`.
pub fn find_range(text: &str, name: Option<&str>, uid: u32) -> Option<IdRange> {
    text.lines().find_map(|line| {
        let line = line.trim();
        if line.starts_with('#') {
            return None;
        }
        let mut f = line.split(':');
        let who = f.next()?;
        let start = f.next()?.trim().parse().ok()?;
        let count = f.next()?.trim().parse().ok()?;
        let mine = Some(who) == name || who.parse::<u32>().ok() == Some(uid);
        (mine && count > 0).then_some(IdRange { start, count })
    })
}

/// An executable named `tool` in $PATH or the usual system dirs.
fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/sbin"].iter().map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_match_by_name_or_uid() {
        let text = "# comment\nalice:100000:65536\n1001:200000:1000\nbob:0:0\n";
        let r = |start, count| Some(IdRange { start, count });
        assert_eq!(find_range(text, Some("alice"), 1000), r(100000, 65536));
        assert_eq!(find_range(text, Some("carol"), 1001), r(200000, 1000));
        assert_eq!(find_range(text, Some("bob"), 1002), None, "empty range");
        assert_eq!(find_range(text, None, 5), None);
        assert_eq!(find_range("garbage\n::\n", Some("x"), 0), None);
    }

    #[test]
    fn user_names_come_from_passwd() {
        let passwd = "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/a:/bin/sh\nbad\n";
        assert_eq!(user_name(passwd, 1000).as_deref(), Some("alice"));
        assert_eq!(user_name(passwd, 7), None);
    }

    #[test]
    fn maps_put_the_caller_at_zero() {
        assert_eq!(single_map_line(1000), "0 1000 1\n");
        let args = helper_args(
            42,
            1000,
            IdRange {
                start: 100000,
                count: 65536,
            },
        );
        assert_eq!(args, ["42", "0", "1000", "1", "1", "100000", "65536"]);
    }
}
