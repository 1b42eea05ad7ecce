//! mount(8) and fstab through Debian's `/sbin/mount.fuse3`: the
//! `SOURCE MERGED -o OPTS` form.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::Command;

/// mount.fuse3 takes the program from the type `fuse.PROGRAM`; a path there
/// must not contain a dot, so the binary is linked from a dot-free dir.
fn program(dir: &Path) -> String {
    let link = dir.join("unionfs-fuse");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_unionfs-fuse"), &link).expect("symlink");
    let p = link.display().to_string();
    assert!(!p.contains('.'), "{p} must not contain a dot");
    p
}

fn ready() -> bool {
    if !Path::new("/sbin/mount.fuse3").exists() && !Path::new("/usr/sbin/mount.fuse3").exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "mount.fuse3 is missing (apt-get install fuse3)"
        );
        eprintln!("mount.fuse3 missing: not run");
        return false;
    }
    environment_ok(Impl::Ours)
}

struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        if mount_type(self.0).is_some() {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
}

/// umount(8), retried while the mount is busy: a child that the other test
/// is spawning holds copies of this process's fds until it execs, which can
/// pin a file under `merged` that this test has already closed.
fn umount(merged: &Path) {
    let mut last = String::new();
    for _ in 0..50 {
        let out = Command::new("umount").arg(merged).output().expect("umount");
        if out.status.success() {
            return;
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        if !last.contains("busy") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("umount {}: {last}", merged.display());
}

fn layers(fx: &Fixture) -> String {
    fx.lower(1).file("a", b"bottom").file("d/x", b"x");
    fx.lower(0).file("a", b"top").whiteout("d");
    format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        fx.lower(0).root.display(),
        fx.lower(1).root.display(),
        fx.upper().root.display(),
        fx.work().display()
    )
}

/// The fixture, the dot-free program path and the `-o` with its layers;
/// None when mount.fuse3 or mounting is not available.
fn setup() -> Option<(Fixture, String, String)> {
    if !ready() {
        return None;
    }
    let fx = Fixture::for_impl(Impl::Ours)?;
    let bin = program(&fx.dir("bin"));
    let opts = layers(&fx);
    Some((fx, bin, opts))
}

#[test]
fn mount_t_fuse_unionfs_fuse_works_through_mount_fuse3() {
    let Some((fx, bin, opts)) = setup() else {
        return;
    };
    let merged = fx.merged();
    let _guard = Unmount(&merged);
    let out = Command::new("mount")
        .args(["-t", &format!("fuse.{bin}"), "unionfs-fuse"])
        .arg(&merged)
        .args(["-o", &opts])
        .output()
        .expect("mount");
    assert!(
        out.status.success(),
        "mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(mount_type(&merged).is_some_and(|t| t.starts_with("fuse")));
    assert_eq!(read(&merged.join("a")), "top");
    assert!(!merged.join("d").exists());
    write(&merged.join("new"), b"n");
    assert_eq!(read(&fx.upper().root.join("new")), "n");
    umount(&merged);
    assert!(mount_type(&merged).is_none());
}

#[test]
fn fstab_line_mounts_with_mount_dir() {
    let Some((fx, bin, opts)) = setup() else {
        return;
    };
    let merged = fx.merged();
    let _guard = Unmount(&merged);
    let fstab = fx.root().join("fstab");
    fs::write(
        &fstab,
        format!(
            "unionfs-fuse {} fuse.{bin} {opts},noauto 0 0\n",
            merged.display()
        ),
    )
    .expect("fstab");
    let out = Command::new("mount")
        .arg("-T")
        .arg(&fstab)
        .arg(&merged)
        .output()
        .expect("mount -T");
    assert!(
        out.status.success(),
        "mount -T: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read(&merged.join("a")), "top");
    umount(&merged);
}
