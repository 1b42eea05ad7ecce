//! The command process's container steps around [`super::rootfs`]: the
//! host name of its UTS namespace, `lo` of its network namespace, the
//! `--bind` and `--tmpfs` mounts, and the `--user` and `--cwd` it runs with.

use super::seam::{Mount, Sys};
use super::{Error, Plan};

type Done = std::result::Result<(), Error>;

/// The namespaces the command process unshares with its mount namespace.
pub fn namespace_flags(plan: &Plan) -> i32 {
    let net = if plan.net_none { libc::CLONE_NEWNET } else { 0 };
    libc::CLONE_NEWNS | libc::CLONE_NEWUTS | net
}

/// Names the new UTS namespace.
pub fn set_hostname<S: Sys>(sys: &mut S, plan: &Plan) -> Done {
    sys.sethostname(&plan.hostname).map_err(Error::Hostname)
}

/// A new network namespace starts with `lo` down.
pub fn loopback<S: Sys>(sys: &mut S, plan: &Plan) -> Done {
    if !plan.net_none {
        return Ok(());
    }
    sys.loopback_up().map_err(Error::Loopback)
}

/// `--bind` then `--tmpfs` mounts, in the order given, on mount points made
/// inside the union without following a symlink out of it.
pub fn mount_binds<S: Sys>(sys: &mut S, plan: &Plan) -> Done {
    for b in &plan.binds {
        let fail = |e| Error::MountBind(b.target.clone(), e);
        let target = sys
            .mount_point(&plan.merged, &b.target, b.file)
            .map_err(fail)?;
        sys.bind(&b.source, &target, b.read_only).map_err(fail)?;
    }
    for t in &plan.tmpfs {
        let fail = |e| Error::MountBind(t.target.clone(), e);
        let target = sys
            .mount_point(&plan.merged, &t.target, false)
            .map_err(fail)?;
        let data = (!t.options.is_empty()).then_some(t.options.as_str());
        sys.mount(&Mount {
            source: Some("tmpfs"),
            target: &target,
            fstype: Some("tmpfs"),
            flags: libc::MS_NOSUID | libc::MS_NODEV,
            data,
        })
        .map_err(fail)?;
    }
    Ok(())
}

/// Switches to the `--user` ids. Supplementary groups only where the user
/// namespace allows setgroups (root, or a subordinate id map).
pub fn set_user<S: Sys>(sys: &mut S, plan: &Plan) -> Done {
    let Some(id) = &plan.identity else {
        return Ok(());
    };
    let groups = match plan.mode {
        super::Mode::Rootless(super::IdMapping::Single { .. }) => None,
        _ => Some(id.groups.as_slice()),
    };
    sys.set_identity(id.uid, id.gid, groups)
        .map_err(|e| Error::SetUser(format!("uid {} gid {}", id.uid, id.gid), e))
}

/// Into the `--cwd` dir, as the command's user.
pub fn change_dir<S: Sys>(sys: &mut S, plan: &Plan) -> Done {
    let Some(dir) = &plan.cwd else {
        return Ok(());
    };
    sys.chdir(dir).map_err(|e| Error::Cwd(dir.clone(), e))
}
