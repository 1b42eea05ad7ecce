//! containers/storage's and fuse-overlayfs's mount options, through a real
//! mount of our binary: squash_to_*, xattr_permissions, context= without
//! SELinux, static_nlink, noacl, fsync=0/volatile and its marker, warnings
//! for ignored options, refusals; and lowers without xattr support.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const OVERRIDE: &str = "user.containers.override_stat";

/// Runs our binary in the foreground with `opts`, expecting it to refuse;
/// returns its stderr.
fn refused(fx: &Fixture, opts: &str) -> String {
    let (l, u, m) = (fx.lower(0).root, fx.upper().root, fx.merged());
    fs::create_dir_all(&l).unwrap();
    fs::create_dir_all(&u).unwrap();
    let run = run_bounded(
        Command::new(BIN)
            .arg(&l)
            .arg(&u)
            .arg(&m)
            .args(["-f", "-o", opts]),
        Duration::from_secs(20),
    );
    detach_fuse_mounts_below(fx.root());
    let Some(status) = run.status else {
        panic!("-o {opts}: mounted instead of refusing");
    };
    assert!(!status.success(), "-o {opts}: exited 0");
    run.stderr
}

#[test]
fn squash_to_uid_and_gid_show_every_object_owned_by_them() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    fx.lower(0).file("f", b"x").dir("d").chown("f", 1, 2);
    let m = fx.mount_ours_opts("squash_to_uid=1234,squash_to_gid=99");
    for p in [m.p("f"), m.p("d"), m.p("")] {
        let md = lstat(&p);
        assert_eq!((md.uid(), md.gid()), (1234, 99), "{}", p.display());
    }
    write(&m.p("new"), b"y");
    assert_eq!(lstat(&m.p("new")).uid(), 1234);
    // A chown is accepted and shows nothing new, as fuse-overlayfs.
    std::os::unix::fs::lchown(m.p("f"), Some(5), Some(6)).expect("chown under squash");
    assert_eq!(lstat(&m.p("f")).uid(), 1234);
}

#[test]
fn squash_to_root_shows_root_ownership() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    fx.lower(0).file("f", b"x").chown("f", 7, 8);
    let m = fx.mount_ours_opts("squash_to_root");
    assert_eq!((lstat(&m.p("f")).uid(), lstat(&m.p("f")).gid()), (0, 0));
}

#[test]
fn xattr_permissions_2_shows_and_writes_override_stat() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    fx.lower(0)
        .file_mode("f", b"data", 0o600)
        .xattr("f", OVERRIDE, b"1000:1001:4755")
        .dir("d")
        .xattr("d", OVERRIDE, b"5:6:0700");
    let m = fx.mount_ours_opts("xattr_permissions=2");
    let f = lstat(&m.p("f"));
    assert_eq!((f.uid(), f.gid(), f.mode() & 0o7777), (1000, 1001, 0o4755));
    let d = lstat(&m.p("d"));
    assert_eq!((d.uid(), d.gid(), d.mode() & 0o7777), (5, 6, 0o700));
    assert!(d.is_dir());
    // Hidden from the merged view while it stands for owner and mode.
    assert!(!sys::llistxattr(&m.p("f"))
        .unwrap()
        .iter()
        .any(|n| n == OVERRIDE));
    assert!(sys::lgetxattr(&m.p("f"), OVERRIDE).is_err());

    fs::set_permissions(m.p("f"), fs::Permissions::from_mode(0o640)).expect("chmod");
    std::os::unix::fs::lchown(m.p("f"), Some(33), None).expect("chown");
    let f = lstat(&m.p("f"));
    assert_eq!((f.uid(), f.gid(), f.mode() & 0o7777), (33, 1001, 0o640));
    assert_eq!(read(&m.p("f")), "data");
    drop(m);
    // The copy-up keeps the real owner and mode; the xattr has the new ones,
    // in fuse-overlayfs's format.
    let up = fx.upper().path("f");
    assert_eq!(sys::lgetxattr(&up, OVERRIDE).unwrap(), b"33:1001:640");
    let real = lstat(&up);
    assert_eq!((real.uid(), real.mode() & 0o7777), (0, 0o600));
}

#[test]
fn context_without_selinux_is_shown_as_the_security_selinux_label() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    if Path::new("/sys/fs/selinux/enforce").exists() {
        // With SELinux the kernel takes the label; that is not this test.
        panic!("this test expects a kernel without SELinux");
    }
    fx.lower(0).file("f", b"x");
    let label = "system_u:object_r:container_file_t:s0:c1,c2";
    let m = fx.mount_ours_opts(&format!("context=\"{label}\""));
    for p in [m.p("f"), m.p("")] {
        let v = sys::lgetxattr(&p, "security.selinux").expect("getxattr security.selinux");
        assert_eq!(v, format!("{label}\0").as_bytes());
        assert!(sys::llistxattr(&p)
            .unwrap()
            .iter()
            .any(|n| n == "security.selinux"));
    }
    let e = sys::lsetxattr(&m.p("f"), "security.selinux", b"other", 0).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM));
}

#[test]
fn static_nlink_shows_directories_with_one_link() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    fx.lower(0).dir("d/a").dir("d/b").file("f", b"x");
    let m = fx.mount_ours_opts("static_nlink");
    assert_eq!(lstat(&m.p("d")).nlink(), 1);
    assert_eq!(lstat(&m.p("f")).nlink(), 1);
}

#[test]
fn noacl_refuses_posix_acls() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    fx.lower(0).file("f", b"x");
    let m = fx.mount_ours_opts("noacl");
    // A valid access ACL (u::rw-, g::r--, o::r--) in the kernel's xattr form.
    let acl: &[u8] = &[
        2, 0, 0, 0, 1, 0, 6, 0, 255, 255, 255, 255, 4, 0, 4, 0, 255, 255, 255, 255, 32, 0, 4, 0,
        255, 255, 255, 255,
    ];
    let e = sys::lsetxattr(&m.p("f"), "system.posix_acl_access", acl, 0).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP));
    sys::lsetxattr(&m.p("f"), "user.ok", b"1", 0).expect("other xattrs still work");
}

#[test]
fn volatile_leaves_the_kernels_marker_and_the_next_mount_is_refused() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    fx.lower(0).file("f", b"x");
    let m = fx.mount_ours_opts("volatile");
    write(&m.p("g"), b"y");
    drop(m);
    let marker = fx.work().join("work/incompat/volatile/dirty");
    assert!(marker.is_file(), "no {}", marker.display());
    let msg = refused(&fx, &format!("workdir={}", fx.work().display()));
    assert!(msg.contains("incompat feature 'volatile'"), "{msg}");
    // The kernel refuses that workdir too: the marker is its own.
    let kernel = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={},upperdir={},workdir={}",
            fx.lower(0).root.display(),
            fx.upper().root.display(),
            fx.work().display()
        ))
        .arg(fx.merged())
        .output()
        .unwrap();
    if kernel.status.success() {
        let _ = sys::umount2(&fx.merged(), libc::MNT_DETACH);
    }
    assert!(
        !kernel.status.success(),
        "the kernel mounted over the marker"
    );
    fs::remove_dir_all(fx.work().join("work/incompat")).unwrap();
    let m = fx.mount();
    assert_eq!(read(&m.p("g")), "y");
}

#[test]
fn fsync_0_leaves_no_volatile_marker() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    fx.lower(0).file("f", b"x");
    let m = fx.mount_ours_opts("fsync=0");
    let f = fs::OpenOptions::new().append(true).open(m.p("f")).unwrap();
    f.sync_all().expect("fsync");
    drop(f);
    drop(m);
    assert!(!fx.work().join("work/incompat").exists());
}

#[test]
fn index_on_and_nfs_export_on_are_refused_with_the_reason() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    for opt in ["index=on", "nfs_export=on"] {
        let msg = refused(&fx, opt);
        assert!(msg.contains(opt) && msg.contains("refused"), "{msg}");
    }
    let msg = refused(&fx, "no_such_option");
    assert!(msg.contains("unknown option"), "{msg}");
}

#[test]
fn an_ignored_option_mounts_with_one_warning_line() {
    let Some(fx) = Fixture::new() else { return };
    if only_for_ours() {
        return;
    }
    fx.lower(0).file("f", b"x");
    fs::create_dir_all(fx.upper().root).unwrap();
    let out = bin_piped()
        .arg(fx.lower(0).root)
        .arg(fx.upper().root)
        .arg(fx.merged())
        .args(["-o", "fast_ino=1,plugins=/nonexistent.so,noxattrs=0"])
        .output()
        .expect("run unionfs-fuse");
    let mounted = mounts_below(fx.root());
    let merged_f = fx.merged().join("f");
    let content = fs::read(&merged_f);
    for mp in &mounted {
        let _ = umount_when_idle(mp);
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("ignored")).collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert_eq!(content.unwrap(), b"x");
}

/// A lower on a filesystem without xattrs (ramfs answers EOPNOTSUPP to
/// every xattr call): it mounts, lists, reads and copies up.
#[test]
fn a_lower_without_xattr_support_mounts_lists_reads_and_copies_up() {
    let Some(fx) = Fixture::new() else { return };
    let ram = Tmpfs::mount_type(&fx.dir("ram"), "ramfs", "mode=0755");
    let lower = Layer::new(ram.0.join("lower"));
    lower
        .file("d/f", b"data\n")
        .dir("d/sub")
        .symlink("d/l", "f");
    fs::create_dir_all(fx.upper().root).unwrap();
    let m = Mounted::mount(
        fx.kind,
        std::slice::from_ref(&lower.root),
        Some(&fx.upper().root),
        Some(&fx.work()),
        &fx.merged(),
    );
    let mut names: Vec<String> = fs::read_dir(m.p("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["f", "l", "sub"]);
    assert_eq!(read(&m.p("d/l")), "data\n");
    assert!(sys::llistxattr(&m.p("d/f"))
        .unwrap()
        .iter()
        .all(|n| n.starts_with("security.")));
    append(&m.p("d/f"), b"more\n");
    fs::set_permissions(m.p("d/sub"), fs::Permissions::from_mode(0o700)).unwrap();
    write(&m.p("d/sub/new"), b"n");
    fs::remove_file(m.p("d/l")).unwrap();
    assert_eq!(read(&m.p("d/f")), "data\nmore\n");
    drop(m);
    assert_eq!(fs::read(fx.upper().path("d/f")).unwrap(), b"data\nmore\n");
    assert_eq!(fs::read(fx.upper().path("d/sub/new")).unwrap(), b"n");
    assert_eq!(fs::read(lower.path("d/f")).unwrap(), b"data\n");
}

/// A dir the kernel renamed with `redirect_dir=on` carries a redirect:
/// `follow` (as `off`) finds its lower dir, `nofollow` gives EPERM, on the
/// kernel and ours alike.
#[test]
fn redirect_dir_nofollow_refuses_a_redirect_follow_uses_it() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0).file("a/f", b"x");
    fs::create_dir_all(fx.upper().root).unwrap();
    let k = Mounted::mount_kernel_opts(
        Impl::Kernel,
        &fx.lowers(),
        Some(&fx.upper().root),
        Some(&fx.work()),
        &fx.merged(),
        "redirect_dir=on",
    );
    fs::rename(k.p("a"), k.p("b")).unwrap();
    drop(k);
    let m = fx.mount_opts("redirect_dir=nofollow");
    let e = fs::read(m.p("b/f")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    drop(m);
    let m = fx.mount_opts("redirect_dir=follow");
    assert_eq!(read(&m.p("b/f")), "x");
}
