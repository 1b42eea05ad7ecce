//! Permission rules (overlay-semantics.md 1.11): objects created by a caller
//! belong to that caller and honour its umask; setgid dirs pass on their
//! group; DAC is checked against the union's attributes for the caller, and a
//! refused operation copies nothing up. Unprivileged callers run through
//! `setpriv --reuid=1000 --regid=1000 --clear-groups`.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;

const UID: u32 = 1000;
const GID: u32 = 1000;

#[track_caller]
fn assert_sh_ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "unprivileged command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[track_caller]
fn assert_sh_fails_with(out: &std::process::Output, msg: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(msg),
        "expected failure with {msg:?}; status {} stderr {err:?}",
        out.status
    );
}

#[test]
fn files_created_by_caller_belong_to_caller_and_honour_umask() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).dir_mode("pub", 0o777);
    let m = fx.mount();
    let out = run_as(
        UID,
        GID,
        &m.p("pub"),
        "umask 027 && echo x > f && mkdir d && mkfifo p && ln -s f s && \
         umask 077 && echo y > g",
    );
    assert_sh_ok(&out);
    for base in [m.p("pub"), m.up("pub")] {
        for (name, mode) in [("f", 0o640), ("d", 0o750), ("p", 0o640), ("g", 0o600)] {
            let md = lstat(&base.join(name));
            assert_eq!(
                (md.uid(), md.gid(), md.mode() & 0o7777),
                (UID, GID, mode),
                "{}",
                base.join(name).display()
            );
        }
        let s = lstat(&base.join("s"));
        assert_eq!((s.uid(), s.gid()), (UID, GID), "symlink owner");
    }
    // The copied-up parent keeps its lower owner and mode.
    let d = lstat(&m.up("pub"));
    assert_eq!((d.uid(), d.mode() & 0o7777), (0, 0o777));
}

/// `system.posix_acl_default` in the xattr format: user::rwx,
/// user:1000:rwx, group::r-x, mask::rwx, other::r-x.
fn default_acl() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 7u16, u32::MAX),
        (0x02, 7, UID),
        (0x04, 5, u32::MAX),
        (0x10, 7, u32::MAX),
        (0x20, 5, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// In a dir with a default ACL the umask does not apply: the new object's
/// mode and ACL come from the default ACL and the mode asked for, as on
/// the kernel, also for a name over a whiteout (staged elsewhere first).
#[test]
fn default_acl_of_the_parent_wins_over_the_umask() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0)
        .dir_mode("acl", 0o777)
        .xattr("acl", "system.posix_acl_default", &default_acl())
        .file("acl/old", b"");
    let m = fx.mount();
    let out = run_as(
        0,
        0,
        &m.p("acl"),
        "umask 022 && : > f && mkdir d && mkfifo p && rm old && : > old",
    );
    assert_sh_ok(&out);
    for base in [m.p("acl"), m.up("acl")] {
        for (name, mode) in [("f", 0o664), ("d", 0o775), ("p", 0o664), ("old", 0o664)] {
            let md = lstat(&base.join(name));
            assert_eq!(md.mode() & 0o7777, mode, "{}", base.join(name).display());
        }
    }
    let access = sys::lgetxattr(&m.p("acl/f"), "system.posix_acl_access");
    assert!(access.is_ok(), "no access ACL inherited: {access:?}");
}

#[test]
fn setgid_dir_passes_group_to_new_entries() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0)
        .dir("sg")
        .chown("sg", 0, 1234)
        .chmod("sg", 0o2777);
    let m = fx.mount();
    write(&m.p("sg/root_file"), b"");
    fs::create_dir(m.p("sg/root_dir")).unwrap();
    let out = run_as(
        UID,
        GID,
        &m.p("sg"),
        "umask 022 && touch user_file && mkdir user_dir",
    );
    assert_sh_ok(&out);
    for base in [m.p("sg"), m.up("sg")] {
        for (name, uid) in [("root_file", 0), ("user_file", UID)] {
            let md = lstat(&base.join(name));
            assert_eq!((md.uid(), md.gid()), (uid, 1234), "{name}");
            assert_eq!(md.mode() & 0o2000, 0, "{name}: file must not get setgid");
        }
        for (name, uid) in [("root_dir", 0), ("user_dir", UID)] {
            let md = lstat(&base.join(name));
            assert_eq!((md.uid(), md.gid()), (uid, 1234), "{name}");
            assert_ne!(md.mode() & 0o2000, 0, "{name}: subdir must inherit setgid");
        }
    }
}

#[test]
fn unprivileged_read_of_0600_root_file_is_eacces() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0)
        .file_mode("secret", b"s", 0o600)
        .file("open", b"o");
    let m = fx.mount();
    for script in ["cat secret", "echo x >> secret", "echo x >> open"] {
        assert_sh_fails_with(&run_as(UID, GID, &m.p(""), script), "Permission denied");
    }
    assert_sh_ok(&run_as(UID, GID, &m.p(""), "cat open"));
    assert_eq!(
        ls(&m.up("")),
        Vec::<String>::new(),
        "a refused open copied up"
    );
}

#[test]
fn unprivileged_chmod_and_chown_of_root_file_are_eperm() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("f", b"");
    let m = fx.mount();
    for script in ["chmod 777 f", "chown 1000 f", "touch -h -d @1 f"] {
        assert_sh_fails_with(
            &run_as(UID, GID, &m.p(""), script),
            "Operation not permitted",
        );
    }
    assert_eq!(
        ls(&m.up("")),
        Vec::<String>::new(),
        "a refused setattr copied up"
    );
}

#[test]
fn unprivileged_create_in_root_dir_is_eacces() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).dir_mode("d", 0o755).file("d/f", b"");
    let m = fx.mount();
    for script in ["touch new", "rm -f f", "mkdir x"] {
        assert_sh_fails_with(&run_as(UID, GID, &m.p("d"), script), "Permission denied");
    }
    assert_eq!(
        ls(&m.up("")),
        Vec::<String>::new(),
        "a refused create copied up"
    );
    assert_eq!(ls(&m.p("d")), ["f"]);
}

#[test]
fn owner_can_modify_own_lower_file() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0)
        .dir_mode("home", 0o755)
        .chown("home", UID, GID)
        .file_mode("home/mine", b"a", 0o600)
        .chown("home/mine", UID, GID);
    let m = fx.mount();
    let out = run_as(
        UID,
        GID,
        &m.p("home"),
        "echo b >> mine && chmod 640 mine && mv mine moved && rm -f moved && touch x",
    );
    assert_sh_ok(&out);
    assert!(!exists(&m.p("home/mine")));
    assert_whiteout(&m.up("home/mine"));
    let md = lstat(&m.up("home"));
    assert_eq!((md.uid(), md.gid()), (UID, GID));
    assert_eq!(lstat(&m.up("home/x")).uid(), UID);
}

#[test]
fn sticky_dir_protects_other_users_files() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0)
        .dir("tmp")
        .chmod("tmp", 0o1777)
        .file("tmp/roots", b"");
    let m = fx.mount();
    assert_sh_fails_with(
        &run_as(UID, GID, &m.p("tmp"), "rm -f roots"),
        "Operation not permitted",
    );
    assert_sh_ok(&run_as(UID, GID, &m.p("tmp"), "touch own && rm own"));
    assert_eq!(ls(&m.p("tmp")), ["roots"]);
    assert!(
        !exists(&m.up("tmp/roots")),
        "a refused unlink left a whiteout"
    );
}

/// A chmod to 0o4777 through the mount; its errno on failure.
fn chmod_res(p: &std::path::Path, mode: u32) -> Result<(), i32> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .map_err(|e| e.raw_os_error().unwrap_or(0))
}

/// Upper files pass through, and as root the server takes KILLPRIV_V2: the
/// kernel then drops no set-id bits at a passthrough write and the server
/// never sees it. So a file may not gain bits that make exec raise
/// privileges while another user without CAP_FSETID writes to it in
/// passthrough, nor such a user join those writers: both are refused with
/// ETXTBSY instead of leaving a setuid file that user wrote. (Kernel
/// overlayfs allows both and drops the bits at the user's write.)
#[test]
fn setid_bits_never_meet_passthrough_writes_by_other_users() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    if only_for_ours() {
        return;
    }
    // The writeback cache excludes passthrough: nothing to guard then.
    if std::env::var("UNIONFS_TEST_OURS_OPTS").is_ok_and(|o| o.contains("writeback")) {
        return;
    }
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).dir("l");
    fx.upper()
        .file_mode("f", b"d\n", 0o666)
        .file_mode("g", b"d\n", 0o666)
        .file_mode("own", b"d\n", 0o644)
        .chown("own", UID, GID);
    let m = fx.mount();

    // Another user writes to f in passthrough: root's chmod u+s / g+s is refused.
    let mut user = Command::new("setpriv")
        .args([
            &format!("--reuid={UID}"),
            &format!("--regid={GID}"),
            "--clear-groups",
        ])
        .args([
            "sh",
            "-c",
            "exec 3>>f; echo 1 >&3; echo open; read x; echo 2 >&3",
        ])
        .current_dir(m.p(""))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run setpriv");
    let mut line = String::new();
    BufReader::new(user.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "open\n");
    assert_eq!(chmod_res(&m.p("f"), 0o4777), Err(libc::ETXTBSY), "setuid");
    assert_eq!(
        chmod_res(&m.p("f"), 0o2777),
        Err(libc::ETXTBSY),
        "setgid+gx"
    );
    // Setgid without group exec raises nothing, and plain modes are fine.
    assert_eq!(chmod_res(&m.p("f"), 0o2766), Ok(()));
    assert_eq!(chmod_res(&m.p("f"), 0o666), Ok(()));
    user.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(user.wait().unwrap().success());
    assert_eq!(read(&m.p("f")), "d\n1\n2\n");
    // Once that user closed it, the chmod goes through.
    assert_eq!(chmod_res(&m.p("f"), 0o4777), Ok(()));

    // Root writes to g in passthrough and makes it setuid (root keeps the
    // bits on its writes); another user may then not join the writers.
    let mut root_fd = fs::OpenOptions::new().append(true).open(m.p("g")).unwrap();
    root_fd.write_all(b"r\n").unwrap();
    assert_eq!(chmod_res(&m.p("g"), 0o4777), Ok(()));
    let out = run_as(UID, GID, &m.p(""), "echo u >> g");
    assert_sh_fails_with(&out, "Text file busy");
    root_fd.write_all(b"r2\n").unwrap();
    drop(root_fd);
    assert_eq!(lstat(&m.p("g")).mode() & 0o7777, 0o4777);
    // With root's handle closed the user's write goes through the server,
    // which drops the bit as the kernel would.
    assert_sh_ok(&run_as(UID, GID, &m.p(""), "echo u >> g"));
    assert_eq!(read(&m.p("g")), "d\nr\nr2\nu\n");
    assert_eq!(lstat(&m.p("g")).mode() & 0o7777, 0o777);

    // The owner may make its own file setuid while writing it (`cp -p` and
    // `install` chmod the open copy): the bits give it nothing new.
    assert_sh_ok(&run_as(
        UID,
        GID,
        &m.p(""),
        "exec 3>>own; echo 1 >&3; chmod 4755 own; echo 2 >&3",
    ));
    assert_eq!(lstat(&m.up("own")).mode() & 0o7777, 0o4755);
}
