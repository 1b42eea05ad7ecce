//! What the fault tests share: self-checking file contents and blocks,
//! ENOTCONN detection, entry and temp-name counts, and a bounded join.

use std::fs::{self};
use std::io;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// Self-describing file content: `UFS:<id>:<len>\n` then a pattern; any
/// prefix, truncation or mix of two contents fails [`check_content`].
pub(crate) fn content(id: u32, len: usize) -> Vec<u8> {
    let mut v = format!("UFS:{id}:{len}\n").into_bytes();
    let mut i = v.len();
    while v.len() < len {
        v.push((i as u32).wrapping_mul(31).wrapping_add(id) as u8);
        i += 1;
    }
    v.truncate(len);
    v
}

pub(crate) fn check_content(data: &[u8]) -> Result<(), String> {
    let nl = data
        .iter()
        .take(40)
        .position(|b| *b == b'\n')
        .ok_or_else(|| format!("no header ({} bytes)", data.len()))?;
    let head = String::from_utf8_lossy(&data[..nl]).into_owned();
    let mut parts = head.split(':');
    let (Some("UFS"), Some(id), Some(len)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("bad header {head:?}"));
    };
    let (id, len): (u32, usize) = (
        id.parse().map_err(|_| format!("bad id in {head:?}"))?,
        len.parse().map_err(|_| format!("bad len in {head:?}"))?,
    );
    if data.len() != len {
        return Err(format!("{head:?}: size {} instead of {len}", data.len()));
    }
    if data != content(id, len).as_slice() {
        return Err(format!("{head:?}: content differs"));
    }
    Ok(())
}

pub(crate) const BLK: usize = 4096;

/// Block `j` appended by the fsync writer to file `fid`.
pub(crate) fn block(fid: u32, j: usize) -> Vec<u8> {
    let mut v = format!("BLK:{fid}:{j}:").into_bytes();
    while v.len() < BLK {
        v.push((j as u32).wrapping_mul(7).wrapping_add(fid) as u8 | 1);
    }
    v
}

pub(crate) fn is_enotconn(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOTCONN)
}

pub(crate) fn count_entries(dir: &Path) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// All paths below `root` (not following symlinks) whose last component
/// starts with `#` (our `#ufs<pid>.<n>` staging names, or the kernel's).
pub(crate) fn temp_names(root: &Path) -> Vec<String> {
    snapshot(root, SnapOpts::basic())
        .paths()
        .into_iter()
        .filter(|p| {
            Path::new(p)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('#'))
        })
        .collect()
}

/// Joins a worker thread, failing if it does not finish within `limit`
/// (a caller hung on a dead server).
pub(crate) fn join_within<T>(h: thread::JoinHandle<T>, limit: Duration, what: &str) -> T {
    let start = Instant::now();
    while !h.is_finished() {
        assert!(
            start.elapsed() < limit,
            "{what}: a caller did not return within {limit:?} after the server died"
        );
        thread::sleep(Duration::from_millis(5));
    }
    h.join()
        .unwrap_or_else(|_| panic!("{what}: worker panicked"))
}
