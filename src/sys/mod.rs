//! The only place that holds `unsafe`: thin, fd-based wrappers over the
//! syscalls the union needs. Every wrapper takes `BorrowedFd`/`AsFd` and a
//! single path component (`&CStr`), never a multi-component path built by the
//! server, and returns our errno-carrying [`Result`](crate::errno::Result).
#![allow(unsafe_code)]

pub mod container;
pub mod dir;
pub mod fileattr;
pub mod fs;
pub mod ns;
pub mod proc;
pub mod xattr;

use crate::errno::{Errno, Result};

/// Turns a libc return value into a `Result`, reading `errno` on -1.
fn check<T: PartialEq + From<i8>>(ret: T) -> Result<T> {
    if ret == T::from(-1) {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}
