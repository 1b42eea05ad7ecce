//! Errno names for messages and transcripts, and an assertion on the errno
//! of a failed call.

use std::io;

/// Asserts that `r` failed with exactly `errno`.
#[track_caller]
pub fn assert_errno<T: std::fmt::Debug>(r: io::Result<T>, errno: i32, what: &str) {
    match r {
        Ok(v) => panic!(
            "{what}: expected {} but it succeeded ({v:?})",
            errno_name(errno)
        ),
        Err(e) => assert_eq!(
            e.raw_os_error(),
            Some(errno),
            "{what}: expected {} got {e}",
            errno_name(errno)
        ),
    }
}

/// Symbolic name of an errno (covers everything these tests can see).
pub fn errno_ident(e: i32) -> Option<&'static str> {
    Some(match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ENOTCONN => "ENOTCONN",
        libc::ESTALE => "ESTALE",
        _ => return None,
    })
}

/// Symbolic errno name of an I/O error: `errnoN` for an errno without a
/// name, the error's text for an error without an errno.
pub fn ename(e: &io::Error) -> String {
    let Some(n) = e.raw_os_error() else {
        return format!("{e}");
    };
    errno_ident(n).map_or_else(|| format!("errno{n}"), str::to_string)
}

/// Symbolic name of an errno for messages (`errno N` for one without a name).
pub fn errno_name(e: i32) -> String {
    errno_ident(e).map_or_else(|| format!("errno {e}"), str::to_string)
}
