//! End-to-end tests of `unionfs-run` against a tiny image made from the
//! host's own /bin/sh, cat and ls plus the shared libraries `ldd` names (a
//! few MB, copied per test, no network).
//!
//! They need root and /dev/fuse (and setpriv for the rootless one). Without
//! them a test returns early with the reason, except under `CI=true`, where
//! it fails.

mod launcher_support;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use launcher_support::*;

/// Lines of the host's mount table that mention `dir` (as mount point,
/// root or source). Every mount of a run would be below the test's dir,
/// since its scratch dir lives in the test's TMPDIR; other mounts may come
/// and go while other suites run and are not ours to judge.
fn host_mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(dir.as_ref()))
        .map(str::to_string)
        .collect()
}

#[test]
fn exit_status_is_the_commands() {
    if !environment_ok() {
        return;
    }
    let s = Setup::new();
    let o = s.sh("exit 7");
    assert_eq!(o.status.code(), Some(7), "{}", describe(&o));
    let o = s.sh("cat /etc/hello");
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert_eq!(stdout(&o), "hi\n");
    s.assert_tmp_empty();
}

#[test]
fn death_by_signal_gives_128_plus_n() {
    if !environment_ok() {
        return;
    }
    let s = Setup::new();
    let o = s.sh("kill -USR1 $$");
    assert_eq!(o.status.code(), Some(128 + 10), "{}", describe(&o));
}

#[test]
fn the_command_starts_with_sigpipe_at_its_default() {
    if !environment_ok() {
        return;
    }
    let s = Setup::new();
    // ls dies of SIGPIPE once the reader is gone, instead of reporting EPIPE.
    let o = s.sh("ls -R / | read first_line; exit 0");
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("Broken pipe"),
        "{}",
        describe(&o)
    );
}

#[test]
fn sigterm_is_forwarded_to_the_command() {
    if !environment_ok() {
        return;
    }
    let s = Setup::new();
    let script = "echo ready; read line; echo not killed";
    let (mut child, lines) = start_ready(&mut s.command(&sh_args(
        &[s.image.as_os_str(), s.upper.as_os_str()],
        script,
    )));
    // The shell's kill builtin: no dependency on procps.
    let kill = Command::new("/bin/sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status()
        .unwrap();
    assert!(kill.success());
    // Child::wait closes the child's stdin first: keep it open until the
    // command is gone, or the command may see EOF before the signal.
    let stdin = child.stdin.take();
    let status = child.wait().unwrap();
    drop(stdin);
    assert_eq!(status.code(), Some(128 + 15));
    let after: Vec<_> = lines.collect();
    assert!(
        after.is_empty(),
        "the command went on after SIGTERM: {after:?}"
    );
    s.assert_tmp_empty();
}

#[test]
fn writes_land_in_the_upper_not_the_lowers() {
    if !environment_ok() {
        return;
    }
    let s = Setup::new();
    let top = s.dir.mkdir("top/etc");
    fs::write(top.join("top"), "from the top layer\n").unwrap();
    let lowers = format!("{}:{}", s.dir.0.join("top").display(), s.image.display());
    let script = "echo new > /newfile; echo changed > /etc/hello; cat /etc/hello /etc/top";
    let o = s.run(&sh_args(&[lowers.as_ref(), s.upper.as_os_str()], script));
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert_eq!(stdout(&o), "changed\nfrom the top layer\n");
    assert_eq!(
        fs::read_to_string(s.upper.join("newfile")).unwrap(),
        "new\n"
    );
    assert_eq!(
        fs::read_to_string(s.upper.join("etc/hello")).unwrap(),
        "changed\n"
    );
    assert_eq!(
        fs::read_to_string(s.image.join("etc/hello")).unwrap(),
        "hi\n"
    );
    assert!(!s.image.join("newfile").exists());
    assert!(!s.dir.0.join("top/newfile").exists());
    // The special filesystems were mounted on top, not written through.
    for special in ["proc", "dev", "sys"] {
        assert!(
            !s.upper.join(special).exists(),
            "{special} reached the upper"
        );
    }
}

#[test]
fn a_missing_sys_dir_is_created_in_the_upper() {
    if !environment_ok() {
        return;
    }
    let s = Setup::new();
    fs::remove_dir(s.image.join("sys")).unwrap();
    let o = s.sh("test -d /sys/kernel");
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(s.upper.join("sys").is_dir());
    assert_eq!(fs::read_dir(s.upper.join("sys")).unwrap().count(), 0);
}

#[test]
fn a_throwaway_upper_is_removed() {
    if !environment_ok() {
        return;
    }
    let s = Setup::new();
    let o = s.run(&sh_args(
        &[s.image.as_os_str()],
        "echo x > /scribble && cat /scribble",
    ));
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert_eq!(stdout(&o), "x\n");
    assert!(!s.image.join("scribble").exists());
    s.assert_tmp_empty();
}

/// A launcher killed with SIGKILL cannot clean up. The next run removes
/// what it left (its throwaway upper too), but not the dir of a live run.
#[test]
fn the_next_run_removes_what_a_killed_run_left() {
    if !environment_ok() {
        return;
    }
    let s = Setup::new();
    let image = s.image.as_os_str();
    let (mut live, mut live_out) = start_ready(&mut s.command(&sh_args(
        &[image],
        "echo ready; read x; echo alive > /f; cat /f",
    )));
    let (mut killed, _) = start_ready(&mut s.command(&sh_args(
        &[image],
        "echo data > /scribble; echo ready; read x",
    )));
    let left = s.tmp.join(format!("unionfs-run.{}", killed.id()));
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert_eq!(fs::read(left.join("upper/scribble")).unwrap(), b"data\n");

    let o = s.sh("true");
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(!left.exists(), "{} was left", left.display());

    // The live run's dir was kept: its union still works.
    let live_scratch = s.tmp.join(format!("unionfs-run.{}", live.id()));
    assert!(live_scratch.join("upper").is_dir());
    live.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let line = live_out.next().and_then(Result::ok);
    assert_eq!(line.as_deref(), Some("alive"));
    assert!(live.wait().unwrap().success());
    s.assert_tmp_empty();
}

#[test]
fn the_default_command_is_the_images_sh() {
    if !environment_ok() {
        return;
    }
    let s = Setup::new();
    let mut child = s
        .command(&[s.image.as_os_str(), s.upper.as_os_str()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"cat /etc/hello; exit 4\n").unwrap();
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", describe(&o));
    assert_eq!(stdout(&o), "hi\n");
}

/// A shared bind mount of a dir onto itself, lazily unmounted on drop.
struct SharedMount(PathBuf);

impl SharedMount {
    fn new(dir: &Path) -> SharedMount {
        let mount = |args: &[&OsStr]| {
            let st = Command::new("mount").args(args).status().unwrap();
            assert!(st.success(), "mount {args:?}");
        };
        mount(&["--bind".as_ref(), dir.as_os_str(), dir.as_os_str()]);
        let guard = SharedMount(dir.to_path_buf());
        mount(&["--make-shared".as_ref(), dir.as_os_str()]);
        guard
    }
}

impl Drop for SharedMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn nothing_leaks_to_the_host_mount_table() {
    if !environment_ok() {
        return;
    }
    let s = Setup::new();
    // Make the test's dir a shared mount, as / is on most hosts: anything
    // mounted below it in a namespace that did not cut propagation would
    // show up on the host.
    let shared = SharedMount::new(&s.dir.0);
    let before = host_mounts_under(&s.dir.0);
    assert_eq!(before.len(), 1, "{before:?}");
    let (mut child, _lines) = start_ready(&mut s.command(&sh_args(
        &[s.image.as_os_str()],
        "echo ready; read line; exit 0",
    )));
    // While the command runs, the union and its /proc, /dev, /sys exist only
    // in the launcher's namespaces.
    let during = host_mounts_under(&s.dir.0);
    assert_eq!(during, before, "the host sees more");
    drop(child.stdin.take());
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(host_mounts_under(&s.dir.0), before);
    drop(shared);
    s.assert_tmp_empty();
}

/// Inside: a fresh /proc of our own, /dev with devices and a devpts, a
/// read-only /sys, and no trace of the host's mounts (old root detached).
const INSIDE_CHECKS: &str = "\
test -r /proc/self/stat || exit 10
test -d /proc/$$ || exit 11
test -c /dev/null && echo discarded > /dev/null || exit 12
test -c /dev/zero && test -c /dev/urandom || exit 13
test -d /dev/pts && test -c /dev/pts/ptmx && test -L /dev/ptmx || exit 14
test -d /dev/shm && test -L /dev/fd && test -L /dev/stdin || exit 15
test -d /sys/kernel || exit 16
(echo x > /sys/kernel/unionfs-run-test) 2>/dev/null && exit 17
test -d /tmp || exit 18
cat /proc/self/mountinfo";

fn mount_points(mountinfo: &str) -> BTreeSet<String> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .collect()
}

#[test]
fn proc_dev_and_sys_are_there_inside() {
    if !environment_ok() {
        return;
    }
    let s = Setup::new();
    let o = s.sh(INSIDE_CHECKS);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let mut want: BTreeSet<String> = ["/", "/proc", "/dev", "/dev/pts", "/dev/shm", "/sys"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for d in ["null", "zero", "full", "random", "urandom", "tty"] {
        if Path::new("/dev").join(d).exists() {
            want.insert(format!("/dev/{d}"));
        }
    }
    assert_eq!(mount_points(&stdout(&o)), want, "{}", describe(&o));
    let root_line = stdout(&o)
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .map(str::to_string);
    assert!(root_line.is_some_and(|l| l.contains("fuse.unionfs-fuse")));
}

#[test]
fn chroot_option_works() {
    if !environment_ok() {
        return;
    }
    let s = Setup::new();
    let o = s.run(&sh_args(
        &[
            "--chroot".as_ref(),
            s.image.as_os_str(),
            s.upper.as_os_str(),
        ],
        "test -r /proc/self/stat && test -c /dev/null && cat /etc/hello && exit 3",
    ));
    assert_eq!(o.status.code(), Some(3), "{}", describe(&o));
    assert_eq!(stdout(&o), "hi\n");
    s.assert_tmp_empty();
}

#[test]
fn pid_option_makes_the_command_pid_1() {
    if !environment_ok() {
        return;
    }
    let s = Setup::new();
    let o = s.run(&sh_args(
        &["--pid".as_ref(), s.image.as_os_str()],
        "echo $$; ls /proc | while read p; do case $p in [0-9]*) echo proc $p;; esac; done",
    ));
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert_eq!(stdout(&o).lines().next(), Some("1"));
    // Only the shell and ls (which lists itself) are in the new namespace.
    let pids = stdout(&o)
        .lines()
        .filter(|l| l.starts_with("proc "))
        .count();
    assert!(pids <= 3, "{}", describe(&o));
}

#[test]
fn failures_name_the_step_and_errno() {
    if !environment_ok() {
        return;
    }
    let s = Setup::new();
    let missing = s.dir.0.join("no-such-layer");
    let o = s.run(&[missing.as_os_str(), "--".as_ref(), "/bin/sh".as_ref()]);
    assert_eq!(o.status.code(), Some(125), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("step `check layers` failed"), "{err}");
    assert!(
        err.contains("No such file or directory (os error 2)"),
        "{err}"
    );

    let o = s.run(&[]);
    assert_eq!(o.status.code(), Some(125), "usage error: {}", describe(&o));

    let o = s.run(&[s.image.as_os_str(), "--".as_ref(), "/bin/nope".as_ref()]);
    assert_eq!(o.status.code(), Some(127), "{}", describe(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("step `exec` failed: /bin/nope"));
    s.assert_tmp_empty();
}

/// As uid 1000. This VM has no subordinate range for it, so the map is the
/// single-uid one; with a range, its first line is the same.
#[test]
fn rootless_run_with_a_single_uid_map() {
    let Some((s, bin)) = rootless_setup() else {
        return;
    };
    // unionfs-fuse beside unionfs-run, where the launcher looks first.
    fs::copy(FUSE, bin.join("unionfs-fuse")).unwrap();
    for dir in [&s.upper, &s.tmp] {
        chown(dir, Some(USER), Some(USER)).unwrap();
    }
    let mine = s.image.join("mine");
    fs::write(&mine, "mine\n").unwrap();
    chown(&mine, Some(USER), Some(USER)).unwrap();
    let _fuse = FuseDeviceOpen::new();
    let rootless = |args: &[&OsStr]| {
        rootless_run(&bin, &s.tmp)
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let script = "\
read inner outer count < /proc/self/uid_map; echo map $inner $outer $count
echo written > /wfile
ls -ln /etc/hello
echo more >> /mine
cat /mine
echo discarded > /dev/null || exit 20
test -c /dev/pts/ptmx || exit 21
exit 5";
    // With the writeback cache, meant for rootless small writes.
    let o = rootless(&sh_args(
        &[
            "-o".as_ref(),
            "writeback".as_ref(),
            s.image.as_os_str(),
            s.upper.as_os_str(),
        ],
        script,
    ));
    assert_eq!(o.status.code(), Some(5), "{}", describe(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with(&format!("map 0 {USER} 1\n")),
        "{}",
        describe(&o)
    );
    // The image's root-owned files: unmapped, so nobody (65534).
    assert!(out.contains(" 65534 65534 "), "{}", describe(&o));
    // Appended through the writeback cache: the kernel reads the last page
    // through the write-only file first.
    assert!(out.ends_with("mine\nmore\n"), "{}", describe(&o));
    assert_eq!(
        fs::read_to_string(s.upper.join("mine")).unwrap(),
        "mine\nmore\n"
    );
    let written = s.upper.join("wfile");
    assert_eq!(fs::read_to_string(&written).unwrap(), "written\n");
    assert_eq!(fs::metadata(&written).unwrap().uid(), USER);
    let note = String::from_utf8_lossy(&o.stderr).contains("single-id map");
    assert_eq!(note, !has_subordinate_range(USER), "{}", describe(&o));

    // A throwaway upper, removed afterwards, and --pid for a fresh /proc.
    let o = rootless(&sh_args(
        &["--pid".as_ref(), s.image.as_os_str()],
        "echo $$ > /scratch; cat /scratch",
    ));
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert_eq!(stdout(&o), "1\n");
    s.assert_tmp_empty();
}

#[test]
fn rootless_needs_a_usable_dev_fuse() {
    let Some((s, bin)) = rootless_setup() else {
        return;
    };
    chown(&s.tmp, Some(USER), Some(USER)).unwrap();
    // Hold the same lock as the other rootless test, but with /dev/fuse 0600.
    let fuse = FuseDeviceOpen::new();
    fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o600)).unwrap();
    let o = rootless_run(&bin, &s.tmp).arg(&s.image).output().unwrap();
    drop(fuse);
    assert_eq!(o.status.code(), Some(125), "{}", describe(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("step `open /dev/fuse` failed"));
    s.assert_tmp_empty();
}

#[test]
fn commit_saves_the_run_as_an_oci_layer_that_unpacks_as_a_lower() {
    if !environment_ok() {
        return;
    }
    let s = Setup::new();
    for bin in ["/bin/rm", "/bin/mkdir"] {
        copy_program(&s.image, bin);
    }
    let layer = s.dir.0.join("layer.tar");
    let script = "rm /etc/hello; mkdir /app; echo one > /app/a";
    let o = s.run(&sh_args(
        &["--commit".as_ref(), layer.as_os_str(), s.image.as_os_str()],
        script,
    ));
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(stdout(&o).starts_with("sha256:"), "diff_id printed");
    let names = Command::new("tar").arg("tf").arg(&layer).output().unwrap();
    let names = String::from_utf8_lossy(&names.stdout).into_owned();
    assert!(names.lines().any(|l| l == "etc/.wh.hello"), "{names}");
    assert!(names.lines().any(|l| l == "app/a"), "{names}");
    // Unpacked in kernel format, the layer stacks on the image as a lower.
    let lower = s.dir.0.join("lower2");
    let o = s.run(&[
        "--unpack-layer".as_ref(),
        layer.as_os_str(),
        lower.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let lowers = format!("{}:{}", lower.display(), s.image.display());
    let o = s.run(&sh_args(&[lowers.as_ref()], "cat /app/a; ls /etc"));
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    // etc/hello stays deleted; the init layer's files are there.
    assert_eq!(stdout(&o), "one\nhostname\nhosts\nresolv.conf\n");
}

#[test]
fn export_layer_is_reproducible_with_a_fixed_mtime() {
    if !environment_ok() {
        return;
    }
    let s = Setup::new();
    fs::write(s.upper.join("f"), "x").unwrap();
    let (a, b) = (s.dir.0.join("a.tar.gz"), s.dir.0.join("b.tar.gz"));
    for out in [&a, &b] {
        let o = s.run(&[
            "--export-layer".as_ref(),
            s.upper.as_os_str(),
            out.as_os_str(),
            "--mtime".as_ref(),
            "0".as_ref(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    }
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
}

/// `--export-layer UPPER -` writes the layer to stdout (the digest to
/// stderr), leaves out the empty /proc, /dev and /sys a run made in the
/// upper but keeps an opaque one, and a reader that closes the pipe early
/// gets no panic from the launcher.
#[test]
fn export_layer_to_stdout_without_run_made_mount_dirs() {
    if !environment_ok() {
        return;
    }
    let s = Setup::new();
    fs::write(s.upper.join("f"), "x").unwrap();
    for d in ["proc", "dev", "sys"] {
        fs::create_dir(s.upper.join(d)).unwrap();
    }
    let set = Command::new("setfattr")
        .args(["-n", "trusted.overlay.opaque", "-v", "y"])
        .arg(s.upper.join("sys"))
        .status()
        .unwrap();
    assert!(set.success());
    let tar = s.dir.0.join("out.tar");
    let o = Command::new(RUN)
        .args(["--export-layer".as_ref(), s.upper.as_os_str(), "-".as_ref()])
        .stdout(fs::File::create(&tar).unwrap())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("sha256:"));
    assert!(!s.upper.parent().unwrap().join("-").exists());
    let names = Command::new("tar").arg("tf").arg(&tar).output().unwrap();
    let names = String::from_utf8_lossy(&names.stdout).into_owned();
    let names: Vec<&str> = names.lines().collect();
    assert_eq!(names, ["f", "sys/", "sys/.wh..wh..opq"]);

    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{RUN}' --export-layer '{}' - | head -c 0",
            s.upper.display()
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
}
