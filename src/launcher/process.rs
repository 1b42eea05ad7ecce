//! The launcher as a parent: fork the command process, learn whether its
//! setup failed, forward signals to it and turn its end into an exit status.

use std::fs::File;
use std::io::{Read, Write};

use super::real::RealSys;
use super::{rootfs, Error, Plan};
use crate::errno::Errno;
use crate::sys;

/// Signals the launcher passes on to the command.
pub const FORWARDED: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// The shell convention: the exit code, or 128+N after signal N.
pub fn exit_status(raw: i32) -> i32 {
    if libc::WIFEXITED(raw) {
        libc::WEXITSTATUS(raw)
    } else if libc::WIFSIGNALED(raw) {
        128 + libc::WTERMSIG(raw)
    } else {
        super::error::EXIT_LAUNCHER
    }
}

/// Forks the command process (inside a new PID namespace with `--pid`), which
/// runs [`rootfs::command_process`]; returns the command's exit status.
pub fn run_command(plan: &Plan) -> Result<i32, Error> {
    let waited = [FORWARDED[0], FORWARDED[1], FORWARDED[2], libc::SIGCHLD];
    // Taken synchronously below; blocked before the fork so none is missed.
    sys::ns::block_signals(&waited).map_err(Error::Fork)?;
    if plan.pid_ns {
        // Only children enter the new PID namespace: the command is its PID 1.
        sys::ns::unshare(libc::CLONE_NEWPID).map_err(Error::PidNamespace)?;
    }
    // Close-on-exec: EOF means exec succeeded, bytes are an encoded Error.
    let (report_r, report_w) = sys::proc::pipe().map_err(Error::Fork)?;
    match sys::proc::fork().map_err(Error::Fork)? {
        sys::proc::Fork::Child => {
            drop(report_r);
            // The launcher going away must not leave the command behind.
            let _ = sys::ns::set_parent_death_signal(libc::SIGKILL);
            let err = rootfs::command_process(&mut RealSys::default(), plan);
            let _ = File::from(report_w).write_all(&err.encode());
            sys::ns::exit_now(err.exit_code());
        }
        sys::proc::Fork::Parent(pid) => {
            drop(report_w);
            let mut report = Vec::new();
            let _ = File::from(report_r).read_to_end(&mut report);
            if !report.is_empty() {
                let _ = sys::proc::waitpid(pid);
                let unknown = || {
                    Error::Exec(
                        "(garbled report from the command process)".into(),
                        Errno::EIO,
                    )
                };
                return Err(Error::decode(&report).unwrap_or_else(unknown));
            }
            supervise(pid, &waited)
        }
    }
}

/// Waits for the command, forwarding signals. A signal a terminal sent
/// (SI_KERNEL) already reached the command's process group: not sent twice.
fn supervise(pid: i32, waited: &[i32]) -> Result<i32, Error> {
    loop {
        let (sig, code) = sys::ns::wait_signal_info(waited).map_err(Error::Wait)?;
        if sig == libc::SIGCHLD {
            // The server or another child may have ended instead.
            if let Some(raw) = sys::ns::try_wait(pid).map_err(Error::Wait)? {
                return Ok(exit_status(raw));
            }
            continue;
        }
        if code == libc::SI_KERNEL {
            continue;
        }
        log::debug!("forwarding signal {sig} to the command (pid {pid})");
        let _ = sys::proc::kill(pid, sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_shell_convention() {
        assert_eq!(exit_status(0), 0);
        assert_eq!(exit_status(3 << 8), 3);
        assert_eq!(exit_status(libc::SIGKILL), 128 + 9);
        assert_eq!(exit_status(libc::SIGTERM | 0x80), 128 + 15, "core dump bit");
    }
}
