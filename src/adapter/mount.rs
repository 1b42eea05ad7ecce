//! Mounting and serving: opens the layers, daemonises once the mount is
//! ready, mounts FUSE itself (so the fstype reads `fuse.unionfs-fuse` and
//! unmount is ours to do lazily), and unmounts on SIGTERM/SIGINT/SIGHUP.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fuser::{Config, MountOption, Session, SessionACL};

use super::{Adapter, Switches};
use crate::errno::Errno;
use crate::layers::{open_dir, Layers};
use crate::options::MountConfig;
use crate::sys;
use crate::union::{Options, Union};

const SIGNALS: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// Clears debris a crash left in `WORKDIR/work` and returns its fd. As the
/// kernel, refuses a work dir that holds an incompat feature marker (left
/// by a `volatile` mount: the upper may have lost writes), and leaves one
/// for a `volatile` mount.
fn prepare_workdir(work: &Path, volatile: bool) -> Result<OwnedFd, String> {
    let wfd = open_dir(work).map_err(|e| format!("work dir {}: {e}", work.display()))?;
    match sys::fs::mkdirat(wfd.as_fd(), c"work", 0o700) {
        Ok(()) => {}
        Err(e) if e == Errno::EEXIST => {}
        Err(e) => return Err(format!("work dir {}/work: {e}", work.display())),
    }
    let inner = sys::fs::open_dir_path(wfd.as_fd(), c"work")
        .map_err(|e| format!("work dir {}/work: {e}", work.display()))?;
    if let Some(feature) = incompat_feature(inner.as_fd()) {
        return Err(format!(
            "work dir {}: overlay with incompat feature '{feature}' cannot be mounted \
             (remove {}/work/incompat if the upper is known to be intact)",
            work.display(),
            work.display()
        ));
    }
    remove_tree_contents(inner.as_fd(), 0);
    if volatile {
        mark_volatile(inner.as_fd())
            .map_err(|e| format!("work dir {}/work/incompat/volatile: {e}", work.display()))?;
    }
    Ok(inner)
}

/// The first entry of `work/incompat`, if any.
fn incompat_feature(work: std::os::fd::BorrowedFd<'_>) -> Option<String> {
    let dir = sys::fs::open_dir_path(work, INCOMPAT).ok()?;
    let rfd = sys::fs::openat(dir.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0).ok()?;
    let entries = sys::dir::read_all(rfd.as_fd()).ok()?;
    entries
        .into_iter()
        .next()
        .map(|e| e.name.to_string_lossy().into_owned())
}

const INCOMPAT: &std::ffi::CStr = c"incompat";

/// The kernel's `work/incompat/volatile/dirty`.
fn mark_volatile(work: std::os::fd::BorrowedFd<'_>) -> Result<(), Errno> {
    let mkdir = |dir: std::os::fd::BorrowedFd<'_>, name: &std::ffi::CStr| match sys::fs::mkdirat(
        dir, name, 0o700,
    ) {
        Err(e) if e != Errno::EEXIST => Err(e),
        _ => sys::fs::open_dir_path(dir, name),
    };
    let incompat = mkdir(work, INCOMPAT)?;
    let vol = mkdir(incompat.as_fd(), c"volatile")?;
    sys::fs::openat(
        vol.as_fd(),
        c"dirty",
        libc::O_WRONLY | libc::O_CREAT | libc::O_NOFOLLOW,
        0o600,
    )?;
    Ok(())
}

/// Best-effort removal of everything below a dir fd (leftover staging).
fn remove_tree_contents(dir: std::os::fd::BorrowedFd<'_>, depth: usize) {
    let Ok(rfd) = sys::fs::openat(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0) else {
        return;
    };
    let Ok(entries) = sys::dir::read_all(rfd.as_fd()) else {
        return;
    };
    for e in entries {
        let Ok(c) = CString::new(e.name.as_bytes()) else {
            continue;
        };
        if sys::fs::unlinkat(rfd.as_fd(), &c, 0).is_ok() {
            continue;
        }
        if depth < 64 {
            if let Ok(sub) = sys::fs::open_dir_path(rfd.as_fd(), &c) {
                remove_tree_contents(sub.as_fd(), depth + 1);
            }
        }
        let _ = sys::fs::unlinkat(rfd.as_fd(), &c, libc::AT_REMOVEDIR);
    }
}

fn build_union(c: &MountConfig, sw: Switches) -> Result<Union, String> {
    let mut lowers = Vec::new();
    for l in &c.lowers {
        lowers.push(open_dir(l).map_err(|e| format!("lower dir {}: {e}", l.display()))?);
    }
    let upper = match &c.upper {
        Some(u) => Some(open_dir(u).map_err(|e| format!("upper dir {}: {e}", u.display()))?),
        None => None,
    };
    let work = match &c.work {
        Some(w) => Some(prepare_workdir(w, c.volatile)?),
        None => None,
    };
    let mut data = Vec::new();
    for d in &c.datadirs {
        data.push(open_dir(d).map_err(|e| format!("data-only lower dir {}: {e}", d.display()))?);
    }
    let layers =
        Layers::with_data(upper, lowers, data, work).map_err(|e| format!("layers: {e}"))?;
    let userxattr = c.userxattr || sys::proc::needs_userxattr();
    if userxattr && c.metacopy {
        return Err("metacopy=on needs trusted.* xattrs: not available without privilege (as the kernel's userxattr,metacopy=on conflict)".into());
    }
    if userxattr && c.redirect_dir {
        return Err(
            "redirect_dir=on needs trusted.* xattrs: not available without privilege".into(),
        );
    }
    let opts = Options {
        userxattr,
        oci_whiteouts: c.oci_whiteouts,
        volatile: c.volatile || c.no_fsync,
        redirect_dir: c.redirect_dir,
        redirect_nofollow: c.redirect_nofollow,
        metacopy: c.metacopy,
        uid_map: c.uid_map.clone(),
        gid_map: c.gid_map.clone(),
        dir_fds: sw.dir_fds,
    };
    Union::new(layers, opts).map_err(|e| format!("root: {e}"))
}

/// Mounts FUSE with mount(2) on an fd of our own. Returns EPERM when only
/// fusermount3 could do it.
fn mount_fuse(c: &MountConfig, allow_other: bool, default_perms: bool) -> Result<OwnedFd, Errno> {
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(Errno::from)?;
    let fd: OwnedFd = dev.into();
    let mut data = format!(
        "fd={},rootmode=40000,user_id={},group_id={}",
        fd.as_raw_fd(),
        sys::proc::geteuid(),
        sys::proc::getegid()
    );
    if default_perms {
        data.push_str(",default_permissions");
    }
    if allow_other {
        data.push_str(",allow_other");
    }
    if let Some(label) = c.context.as_ref().filter(|_| selinux_enabled()) {
        // The LSM takes it from the mount data, quoted for its commas.
        data.push_str(&format!(",context=\"{label}\""));
    }
    let mut flags: u64 = 0;
    if c.upper.is_none() {
        flags |= libc::MS_RDONLY;
    }
    if !c.dev.unwrap_or(true) {
        flags |= libc::MS_NODEV;
    }
    if !c.suid.unwrap_or(true) {
        flags |= libc::MS_NOSUID;
    }
    if !c.exec {
        flags |= libc::MS_NOEXEC;
    }
    if c.noatime {
        flags |= libc::MS_NOATIME;
    }
    let src = CString::new(c.source.clone()).map_err(|_| Errno::EINVAL)?;
    let target = CString::new(c.merged.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    let data = CString::new(data).map_err(|_| Errno::EINVAL)?;
    sys::proc::mount(&src, &target, c"fuse.unionfs-fuse", flags, &data)?;
    Ok(fd)
}

/// Whether the kernel runs SELinux, which then takes `context=` itself.
fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

/// The readahead of the mount, in KiB: one READ request of max_write size.
const READAHEAD_KB: u64 = 1024;

/// INIT caps the mount's readahead at the kernel's offer (128 KiB), so a cold
/// sequential read through the server came as 256 KiB READs, a round trip
/// each. Root may raise it afterwards through the mount's bdi in sysfs; a
/// 1 GiB cold read then takes 1,024 READs instead of 4,096.
///
/// The bdi is named by the mount's device number, taken from mountinfo: a
/// stat or open of the mount root would need the session running, and an fd
/// on it made an `umount` right after the mount fail with EBUSY.
fn raise_readahead(merged: &Path) {
    let Some((major, minor)) = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|info| fuse_dev_at(&info, merged))
    else {
        return;
    };
    let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    let current = std::fs::read_to_string(&knob)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    if current.is_some_and(|kb| kb < READAHEAD_KB) {
        if let Err(e) = std::fs::write(&knob, READAHEAD_KB.to_string()) {
            log::info!("readahead stays at the kernel's: {knob}: {e}");
        }
    }
}

/// The device number of the topmost FUSE mount at `at` in a mountinfo text.
fn fuse_dev_at(mountinfo: &str, at: &Path) -> Option<(u32, u32)> {
    let at = at.as_os_str().as_bytes();
    mountinfo.lines().rev().find_map(|line| {
        let (mine, theirs) = line.split_once(" - ")?;
        let f: Vec<&str> = mine.split(' ').collect();
        let fstype = theirs.split(' ').next()?;
        let point = unescape_octal(f.get(4)?);
        if point != at || !(fstype == "fuse" || fstype.starts_with("fuse.")) {
            return None;
        }
        let (major, minor) = f.get(2)?.split_once(':')?;
        Some((major.parse().ok()?, minor.parse().ok()?))
    })
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo`.
fn unescape_octal(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let code = b.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match code {
            Some(c) if b[i] == b'\\' => {
                out.push(c);
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

fn fuser_config(c: &MountConfig, allow_other: bool, default_perms: bool) -> Config {
    let mut cfg = Config::default();
    cfg.n_threads = Some(c.threads);
    cfg.clone_fd = c.threads > 1;
    cfg.acl = if allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    let mut mo = vec![
        MountOption::FSName(c.source.clone()),
        MountOption::Subtype("unionfs-fuse".into()),
    ];
    if default_perms {
        mo.push(MountOption::DefaultPermissions);
    }
    if c.upper.is_none() {
        mo.push(MountOption::RO);
    }
    mo.push(if c.dev.unwrap_or(false) {
        MountOption::Dev
    } else {
        MountOption::NoDev
    });
    mo.push(if c.suid.unwrap_or(false) {
        MountOption::Suid
    } else {
        MountOption::NoSuid
    });
    if !c.exec {
        mo.push(MountOption::NoExec);
    }
    if c.noatime {
        mo.push(MountOption::NoAtime);
    }
    cfg.mount_options = mo;
    cfg
}

enum Ready {
    /// Tell the waiting parent (daemon mode) how mounting went.
    Pipe(OwnedFd),
    None,
}

impl Ready {
    fn send(&mut self, msg: &str) {
        if let Ready::Pipe(fd) = std::mem::replace(self, Ready::None) {
            let mut f = std::fs::File::from(fd);
            let _ = f.write_all(msg.as_bytes());
        }
    }
}

/// Runs `unionfs-fuse` with a parsed and validated config and the test
/// switches; returns the exit code.
pub fn run(c: MountConfig, sw: Switches) -> i32 {
    sys::proc::raise_nofile_limit();
    sys::proc::limit_malloc_arenas();
    // Callers' modes arrive already masked by the kernel; apply them exactly.
    sys::proc::set_umask(0);

    let mut ready = Ready::None;
    if !c.foreground {
        let (r, w) = match sys::proc::pipe() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("unionfs-fuse: pipe: {e}");
                return 1;
            }
        };
        // Still single-threaded here: fork is safe.
        match sys::proc::fork() {
            Err(e) => {
                eprintln!("unionfs-fuse: fork: {e}");
                return 1;
            }
            Ok(sys::proc::Fork::Parent(_)) => {
                drop(w);
                let mut msg = String::new();
                let _ = std::fs::File::from(r).read_to_string(&mut msg);
                if msg == "ok" {
                    return 0;
                }
                if msg.is_empty() {
                    msg = "the server exited before the mount was ready".into();
                }
                eprintln!("unionfs-fuse: {msg}");
                return 1;
            }
            Ok(sys::proc::Fork::Child) => {
                drop(r);
                let _ = sys::proc::setsid();
                ready = Ready::Pipe(w);
            }
        }
    }

    match serve(&c, sw, &mut ready) {
        Ok(()) => 0,
        Err(msg) => {
            ready.send(&msg);
            if c.foreground {
                eprintln!("unionfs-fuse: {msg}");
            }
            1
        }
    }
}

fn serve(c: &MountConfig, sw: Switches, ready: &mut Ready) -> Result<(), String> {
    // Signals go to one waiting thread; workers inherit the blocked mask.
    sys::proc::block_signals(&SIGNALS).map_err(|e| format!("signals: {e}"))?;
    let fs = Arc::new(build_union(c, sw)?);
    let root = sys::proc::geteuid() == 0;
    let allow_other = c.allow_other.unwrap_or(root);
    let default_perms = c.default_permissions.unwrap_or(true);
    // Backing files on a stacking filesystem need one more level.
    let stack_depth = if fs.layers_on_stacking_fs() { 2 } else { 1 };
    let union = fs.clone();
    let adapter = Adapter::new(
        fs,
        Duration::from_secs_f64(c.timeout),
        c.passthrough,
        stack_depth,
        !sys::proc::in_user_namespace(),
        c.writeback,
        super::present::Present::new(c, selinux_enabled()).on_upper_root(&union)?,
    )
    .always_opendir(sw.opendir);
    let cfg = fuser_config(c, allow_other, default_perms);

    let session = match mount_fuse(c, allow_other, default_perms) {
        Ok(fd) => {
            let acl = cfg.acl;
            let session = Session::from_fd(adapter, fd, acl, cfg).map_err(|e| {
                let target = CString::new(c.merged.as_os_str().as_bytes()).unwrap_or_default();
                let _ = sys::proc::umount2(&target, libc::MNT_DETACH);
                format!("FUSE handshake: {e}")
            })?;
            raise_readahead(&c.merged);
            session
        }
        Err(e) if e == Errno::EPERM => {
            // Not privileged for mount(2): let fusermount3 do it.
            let mut cfg = cfg;
            if !allow_other {
                cfg.acl = SessionACL::Owner;
            }
            Session::new(adapter, &c.merged, &cfg)
                .map_err(|e| format!("mount {}: {e} (fusermount3 failed)", c.merged.display()))?
        }
        Err(e) => return Err(format!("mount {}: {e}", c.merged.display())),
    };

    // Changes the kernel cannot see (a copy-up turns a dir into a merged
    // one, so its nlink changes). Offset -1 drops only the attributes: no
    // page or inode lock is taken, so this is safe from inside a handler,
    // and the next stat already sees the change.
    let notifier = session.notifier();
    union.set_invalidator(Box::new(move |ino| {
        let _ = notifier.inval_inode(fuser::INodeNo(ino), -1, 0);
    }));

    let merged = c.merged.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let sig = sys::proc::wait_signal(&SIGNALS);
            log::info!("signal {sig}: unmounting {}", merged.display());
            let target = CString::new(merged.as_os_str().as_bytes()).unwrap_or_default();
            // Lazy, so an open file cannot keep a dead mount around.
            if let Err(e) = sys::proc::umount2(&target, libc::MNT_DETACH) {
                log::warn!("unmount {}: {e}", merged.display());
                std::process::exit(0);
            }
        })
        .map_err(|e| format!("signal thread: {e}"))?;

    ready.send("ok");
    if !c.foreground {
        if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
            let _ = sys::proc::redirect_stdio(null.as_fd());
        }
    }
    match session.run() {
        // A worker that took a request just as the unmount aborted the
        // connection reads ECONNABORTED instead of ENODEV; fuser 0.18 passes
        // it on as an error, but the session is over either way.
        Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {
            log::info!("session ended: connection aborted (unmounted)");
            Ok(())
        }
        r => r.map_err(|e| format!("session: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuse_dev_at_takes_the_topmost_fuse_mount_with_escaped_path() {
        let info = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
40 22 0:51 / /m\\040n rw,nosuid - fuse.unionfs-fuse unionfs-fuse rw
41 40 0:52 / /m\\040n rw - tmpfs tmpfs rw
42 41 0:53 / /m\\040n rw,nosuid - fuse.unionfs-fuse unionfs-fuse rw
43 22 0:54 / /m rw - fuse fuse rw
";
        assert_eq!(fuse_dev_at(info, Path::new("/m n")), Some((0, 53)));
        assert_eq!(fuse_dev_at(info, Path::new("/m")), Some((0, 54)));
        assert_eq!(fuse_dev_at(info, Path::new("/")), None);
        assert_eq!(fuse_dev_at(info, Path::new("/x")), None);
    }

    #[test]
    fn unescape_octal_leaves_short_or_odd_escapes_alone() {
        assert_eq!(unescape_octal("a\\134b"), b"a\\b");
        assert_eq!(unescape_octal("a\\01"), b"a\\01");
        assert_eq!(unescape_octal("a\\x12"), b"a\\x12");
    }
}
