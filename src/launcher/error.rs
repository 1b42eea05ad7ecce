//! One error variant per launcher step (virtiofsd `sandbox.rs` style). Each
//! carries the errno of the failing call; `main` prints it once. Errors of the
//! command process cross back to the launcher over a pipe ([`Error::encode`]).

use std::fmt;
use std::path::PathBuf;

use crate::errno::Errno;

/// Exit status for a failure of the launcher itself (as podman and docker).
pub const EXIT_LAUNCHER: i32 = 125;
/// The command exists but could not be executed.
pub const EXIT_CANNOT_EXEC: i32 = 126;
/// The command was not found in the rootfs.
pub const EXIT_NOT_FOUND: i32 = 127;

#[derive(Debug)]
pub enum Error {
    /// A lower, upper or work directory is missing or not a directory.
    Layers(PathBuf, Errno),
    /// Creating the scratch dir (mount point; throwaway upper and workdir).
    Scratch(PathBuf, Errno),
    /// Rootless FUSE opens /dev/fuse as the caller, so it must be 0666.
    FuseDevice(Errno),
    /// Forking the newuidmap/newgidmap helper, which has to stay outside the
    /// new user namespace to write its maps.
    IdMapHelper(Errno),
    /// unshare(CLONE_NEWNS), plus CLONE_NEWUSER when not root.
    Unshare(String, Errno),
    /// Writing setgroups/uid_map/gid_map, or running newuidmap/newgidmap.
    IdMaps(String, Errno),
    /// Making `/` rslave, so that no mount propagates back to the host.
    Propagation(Errno),
    /// Starting the unionfs-fuse server.
    StartUnion(PathBuf, Errno),
    /// Waiting for the union to be mounted.
    UnionReady(String, Errno),
    /// unshare(CLONE_NEWPID) for `--pid`.
    PidNamespace(Errno),
    /// Forking the command process.
    Fork(Errno),
    /// The command process's own mount namespace, so that switching root
    /// leaves the launcher and the server where they are.
    CommandNamespace(Errno),
    /// A fresh procfs (or the host's, bound) on the rootfs's /proc.
    MountProc(PathBuf, Errno),
    /// The tmpfs /dev with its device binds, devpts, shm and symlinks.
    MountDev(PathBuf, Errno),
    /// A read-only /sys.
    MountSys(PathBuf, Errno),
    /// pivot_root into the union, old root detached.
    PivotRoot(Errno),
    /// chroot into the union (`--chroot`, or where pivot_root is impossible).
    Chroot(Errno),
    /// Executing the command.
    Exec(String, Errno),
    /// Waiting for the command.
    Wait(Errno),
    /// An option value that cannot be used (a missing SRC, an unknown
    /// user): the message names the option.
    BadOption(String),
    /// Writing the init layer (/etc/hosts, hostname, resolv.conf).
    InitLayer(PathBuf, Errno),
    /// Setting the new UTS namespace's host name.
    Hostname(Errno),
    /// Bringing up `lo` in the new network namespace (`--net none`).
    Loopback(Errno),
    /// A `--bind` or `--tmpfs` mount, or its mount point.
    MountBind(PathBuf, Errno),
    /// Switching to the `--user` ids.
    SetUser(String, Errno),
    /// Changing into the `--cwd` dir.
    Cwd(PathBuf, Errno),
}

impl Error {
    /// The step's name, as printed.
    pub fn step(&self) -> &'static str {
        match self {
            Error::Layers(..) => "check layers",
            Error::Scratch(..) => "scratch dir",
            Error::FuseDevice(..) => "open /dev/fuse",
            Error::IdMapHelper(..) => "id-map helper",
            Error::Unshare(..) => "unshare",
            Error::IdMaps(..) => "id maps",
            Error::Propagation(..) => "make / rslave",
            Error::StartUnion(..) => "start unionfs-fuse",
            Error::UnionReady(..) => "wait for union mount",
            Error::PidNamespace(..) => "pid namespace",
            Error::Fork(..) => "fork command",
            Error::CommandNamespace(..) => "command mount namespace",
            Error::MountProc(..) => "mount /proc",
            Error::MountDev(..) => "mount /dev",
            Error::MountSys(..) => "mount /sys",
            Error::PivotRoot(..) => "pivot_root",
            Error::Chroot(..) => "chroot",
            Error::Exec(..) => "exec",
            Error::Wait(..) => "wait for command",
            Error::BadOption(..) => "option",
            Error::InitLayer(..) => "init layer",
            Error::Hostname(..) => "hostname",
            Error::Loopback(..) => "loopback",
            Error::MountBind(..) => "mount binds",
            Error::SetUser(..) => "set user",
            Error::Cwd(..) => "cwd",
        }
    }

    pub fn errno(&self) -> Errno {
        match self {
            Error::Layers(_, e)
            | Error::Scratch(_, e)
            | Error::StartUnion(_, e)
            | Error::MountProc(_, e)
            | Error::MountDev(_, e)
            | Error::MountSys(_, e)
            | Error::InitLayer(_, e)
            | Error::MountBind(_, e)
            | Error::Cwd(_, e) => *e,
            Error::BadOption(_) => Errno(0),
            Error::SetUser(_, e) => *e,
            Error::Hostname(e) | Error::Loopback(e) => *e,
            Error::Unshare(_, e)
            | Error::IdMaps(_, e)
            | Error::UnionReady(_, e)
            | Error::Exec(_, e) => *e,
            Error::FuseDevice(e)
            | Error::IdMapHelper(e)
            | Error::Propagation(e)
            | Error::PidNamespace(e)
            | Error::Fork(e)
            | Error::CommandNamespace(e)
            | Error::PivotRoot(e)
            | Error::Chroot(e)
            | Error::Wait(e) => *e,
        }
    }

    /// The path or note that goes with the errno, if any.
    pub fn detail(&self) -> String {
        match self {
            Error::Layers(p, _)
            | Error::Scratch(p, _)
            | Error::StartUnion(p, _)
            | Error::MountProc(p, _)
            | Error::MountDev(p, _)
            | Error::MountSys(p, _)
            | Error::InitLayer(p, _)
            | Error::MountBind(p, _)
            | Error::Cwd(p, _) => p.display().to_string(),
            Error::BadOption(s) | Error::SetUser(s, _) => s.clone(),
            Error::Unshare(s, _) | Error::IdMaps(s, _) | Error::UnionReady(s, _) => s.clone(),
            Error::Exec(s, _) => s.clone(),
            Error::FuseDevice(_) => {
                "rootless FUSE needs /dev/fuse to be read-write for everyone (mode 0666)".into()
            }
            _ => String::new(),
        }
    }

    /// The launcher's exit status for this error: 127 when the command is
    /// not found, 126 when it cannot be executed, else 125.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Exec(_, e) if *e == Errno::ENOENT => EXIT_NOT_FOUND,
            Error::Exec(..) => EXIT_CANNOT_EXEC,
            _ => EXIT_LAUNCHER,
        }
    }

    /// Serialises the error for the pipe from the command process.
    pub fn encode(&self) -> Vec<u8> {
        format!("{}\n{}\n{}", self.step(), self.errno().raw(), self.detail()).into_bytes()
    }

    /// The inverse of [`Error::encode`]; `None` on anything malformed.
    pub fn decode(bytes: &[u8]) -> Option<Error> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.splitn(3, '\n');
        let step = parts.next()?;
        let errno = Errno::from_raw(parts.next()?.parse().ok()?);
        let detail = parts.next()?.to_string();
        let path = PathBuf::from(&detail);
        Some(match step {
            "check layers" => Error::Layers(path, errno),
            "scratch dir" => Error::Scratch(path, errno),
            "open /dev/fuse" => Error::FuseDevice(errno),
            "id-map helper" => Error::IdMapHelper(errno),
            "unshare" => Error::Unshare(detail, errno),
            "id maps" => Error::IdMaps(detail, errno),
            "make / rslave" => Error::Propagation(errno),
            "start unionfs-fuse" => Error::StartUnion(path, errno),
            "wait for union mount" => Error::UnionReady(detail, errno),
            "pid namespace" => Error::PidNamespace(errno),
            "fork command" => Error::Fork(errno),
            "command mount namespace" => Error::CommandNamespace(errno),
            "mount /proc" => Error::MountProc(path, errno),
            "mount /dev" => Error::MountDev(path, errno),
            "mount /sys" => Error::MountSys(path, errno),
            "pivot_root" => Error::PivotRoot(errno),
            "chroot" => Error::Chroot(errno),
            "exec" => Error::Exec(detail, errno),
            "wait for command" => Error::Wait(errno),
            "option" => Error::BadOption(detail),
            "init layer" => Error::InitLayer(path, errno),
            "hostname" => Error::Hostname(errno),
            "loopback" => Error::Loopback(errno),
            "mount binds" => Error::MountBind(path, errno),
            "set user" => Error::SetUser(detail, errno),
            "cwd" => Error::Cwd(path, errno),
            _ => return None,
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let detail = self.detail();
        if let Error::BadOption(msg) = self {
            // Already one line naming the option.
            return write!(f, "{msg}");
        }
        if detail.is_empty() {
            write!(f, "step `{}` failed: {}", self.step(), self.errno())
        } else if self.errno() == Errno(0) {
            write!(f, "step `{}` failed: {detail}", self.step())
        } else {
            write!(
                f,
                "step `{}` failed: {detail}: {}",
                self.step(),
                self.errno()
            )
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Error> {
        let p = || PathBuf::from("/x/y");
        let e = Errno::EPERM;
        vec![
            Error::Layers(p(), e),
            Error::Scratch(p(), e),
            Error::FuseDevice(e),
            Error::IdMapHelper(e),
            Error::Unshare("note".into(), e),
            Error::IdMaps("uid_map".into(), e),
            Error::Propagation(e),
            Error::StartUnion(p(), e),
            Error::UnionReady("exited".into(), e),
            Error::PidNamespace(e),
            Error::Fork(e),
            Error::CommandNamespace(e),
            Error::MountProc(p(), e),
            Error::MountDev(p(), e),
            Error::MountSys(p(), e),
            Error::PivotRoot(e),
            Error::Chroot(e),
            Error::Exec("ls".into(), e),
            Error::Wait(e),
            Error::BadOption("--user x: no user x".into()),
            Error::InitLayer(p(), e),
            Error::Hostname(e),
            Error::Loopback(e),
            Error::MountBind(p(), e),
            Error::SetUser("1000:1000".into(), e),
            Error::Cwd(p(), e),
        ]
    }

    #[test]
    fn every_step_survives_the_pipe() {
        for err in all() {
            let back = Error::decode(&err.encode()).unwrap_or_else(|| panic!("{err}"));
            assert_eq!(back.to_string(), err.to_string());
        }
    }

    #[test]
    fn step_names_are_unique() {
        let mut names: Vec<_> = all().iter().map(Error::step).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all().len());
    }

    #[test]
    fn message_names_step_and_errno() {
        let e = Error::MountProc(PathBuf::from("/m/proc"), Errno::EPERM);
        assert_eq!(
            e.to_string(),
            "step `mount /proc` failed: /m/proc: Operation not permitted (os error 1)"
        );
        assert_eq!(e.exit_code(), 125);
        assert_eq!(Error::Exec("x".into(), Errno::ENOENT).exit_code(), 127);
        assert_eq!(Error::Exec("x".into(), Errno::EACCES).exit_code(), 126);
        assert!(Error::decode(b"no such step\n1\n").is_none());
        assert!(Error::decode(b"").is_none());
    }
}
