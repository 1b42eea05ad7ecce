//! What is mounted where, read from /proc/self/mountinfo, and an umount that
//! waits while the mount is briefly busy.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use super::sys;

/// umount2(2), retried for half a second while the mount is busy: a child
/// that another test thread spawns holds copies of this process's fds until
/// it execs, which can pin a file under the mount that was already closed.
pub fn umount_when_idle(mp: &Path) -> io::Result<()> {
    let mut tries = 0;
    loop {
        match sys::umount2(mp, 0) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 50 => {
                tries += 1;
                thread::sleep(Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

/// Decodes the octal escapes (`\040`, `\011`, `\012`, `\134`, `\072`) of mountinfo.
fn unescape_mountinfo(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok());
            if let Some(v) = oct {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(<OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&out))
}

/// (mount point, fstype, major:minor) of every mount of this process.
pub fn mounts() -> Vec<(PathBuf, String, String)> {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    text.lines()
        .filter_map(|line| {
            let mut halves = line.splitn(2, " - ");
            let left: Vec<&str> = halves.next()?.split(' ').collect();
            let fstype = halves.next()?.split(' ').next()?.to_string();
            Some((
                unescape_mountinfo(left.get(4)?),
                fstype,
                left.get(2)?.to_string(),
            ))
        })
        .collect()
}

/// fstype of the topmost mount at exactly `path`, if any.
pub fn mount_type(path: &Path) -> Option<String> {
    mounts()
        .into_iter()
        .rev()
        .find(|(mp, _, _)| mp == path)
        .map(|(_, t, _)| t)
}

/// Mount points strictly below `dir`, deepest first.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = mounts()
        .into_iter()
        .map(|(mp, _, _)| mp)
        .filter(|mp| mp.starts_with(dir) && mp != dir)
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}
