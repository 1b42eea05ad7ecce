//! End-to-end tests of `unionfs-run`'s init layer and container options,
//! each run as root and as uid 1000 (rootless, single-id map), on the tiny
//! image of tests/launcher_support (plus env, id, hostname, mkdir and an
//! /etc/passwd and /etc/group).
//!
//! Like tests/launcher.rs they need root, /dev/fuse and setpriv; without
//! them a test returns early with the reason, except under `CI=true`.

mod launcher_support;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use launcher_support::*;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
const GROUP: &str = "root:x:0:\napp:x:1000:\nwheel:x:10:app\n";
const DEBIAN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A setup, run as root or (with `bin`) as [`USER`].
struct Runner {
    s: Setup,
    bin: Option<PathBuf>,
    _fuse: Option<FuseDeviceOpen>,
}

fn extend_image(image: &Path) {
    for bin in ["/usr/bin/env", "/usr/bin/id", "/bin/hostname", "/bin/mkdir"] {
        copy_program(image, bin);
    }
    fs::write(image.join("etc/passwd"), PASSWD).unwrap();
    fs::write(image.join("etc/group"), GROUP).unwrap();
}

impl Runner {
    fn root() -> Option<Runner> {
        if !environment_ok() {
            return None;
        }
        let s = Setup::new();
        extend_image(&s.image);
        Some(Runner {
            s,
            bin: None,
            _fuse: None,
        })
    }

    fn rootless() -> Option<Runner> {
        let (s, bin) = rootless_setup()?;
        fs::copy(env!("CARGO_BIN_EXE_unionfs-fuse"), bin.join("unionfs-fuse")).unwrap();
        extend_image(&s.image);
        for dir in [&s.upper, &s.tmp] {
            chown(dir, Some(USER), Some(USER)).unwrap();
        }
        Some(Runner {
            s,
            bin: Some(bin),
            _fuse: Some(FuseDeviceOpen::new()),
        })
    }

    fn rootless_run(&self) -> bool {
        self.bin.is_some()
    }

    /// A dir of the test's that the running user owns.
    fn own_dir(&self, name: &str) -> PathBuf {
        let d = self.s.dir.mkdir(name);
        if self.rootless_run() {
            chown(&d, Some(USER), Some(USER)).unwrap();
        }
        d
    }

    fn command(&self, args: &[&OsStr]) -> Command {
        let mut cmd = match &self.bin {
            None => self.s.command(args),
            Some(bin) => {
                let mut c = launcher_support::rootless_run(bin, &self.s.tmp);
                c.args(args).env_remove("RUST_LOG");
                c
            }
        };
        cmd.stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        self.command(&args).output().unwrap()
    }

    /// `unionfs-run OPTS IMAGE [UPPER] -- /bin/sh -c SCRIPT`.
    fn sh(&self, opts: &[&str], upper: bool, script: &str) -> Output {
        let mut args: Vec<&str> = opts.to_vec();
        args.push(self.s.image.to_str().unwrap());
        if upper {
            args.push(self.s.upper.to_str().unwrap());
        }
        args.extend(["--", "/bin/sh", "-c", script]);
        self.run(&args)
    }
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(0), "{}", describe(o));
    stdout(o)
}

/// Both ways: `NAME_as_root` and `NAME_rootless`.
macro_rules! both {
    ($name:ident, $root:ident, $rootless:ident) => {
        #[test]
        fn $root() {
            if let Some(r) = Runner::root() {
                $name(&r);
            }
        }
        #[test]
        fn $rootless() {
            if let Some(r) = Runner::rootless() {
                $name(&r);
            }
        }
    };
}

fn host_resolv_conf() -> String {
    // This machine has no systemd-resolved stub; where it has, the
    // upstream list is what the run gets.
    fs::read_to_string("/run/systemd/resolve/resolv.conf")
        .or_else(|_| fs::read_to_string("/etc/resolv.conf"))
        .unwrap_or_default()
}

fn init_files_name_the_run_and_the_hosts_resolver(r: &Runner) {
    let script = "cat /etc/hosts; echo --; cat /etc/hostname; echo --; cat /etc/resolv.conf; echo --; hostname";
    let out = ok(&r.sh(&[], true, script));
    let parts: Vec<&str> = out.split("--\n").collect();
    let name = parts[3].trim();
    assert_eq!(name.len(), 12, "a 12-hex run id: {out}");
    assert!(name.bytes().all(|b| b.is_ascii_hexdigit()), "{out}");
    assert_eq!(
        parts[0],
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{name}\n"
        )
    );
    assert_eq!(parts[1], format!("{name}\n"));
    assert_eq!(parts[2], host_resolv_conf());

    let opts = [
        "--hostname",
        "box",
        "--add-host",
        "db:10.0.0.9",
        "--dns",
        "192.0.2.7",
    ];
    let out = ok(&r.sh(&opts, true, script));
    let parts: Vec<&str> = out.split("--\n").collect();
    assert!(
        parts[0].ends_with("127.0.1.1\tbox\n10.0.0.9\tdb\n"),
        "{out}"
    );
    assert_eq!(parts[1], "box\n");
    assert!(parts[2].starts_with("nameserver 192.0.2.7\n"), "{out}");
    let servers = parts[2].lines().filter(|l| l.starts_with("nameserver "));
    assert_eq!(servers.count(), 1, "--dns replaces the host's: {out}");
    assert_eq!(parts[3], "box\n");
    r.s.assert_tmp_empty();
}
both!(
    init_files_name_the_run_and_the_hosts_resolver,
    init_files_name_the_run_and_the_hosts_resolver_as_root,
    init_files_name_the_run_and_the_hosts_resolver_rootless
);

const INIT_PATHS: [&str; 3] = ["etc/hosts", "etc/hostname", "etc/resolv.conf"];

fn tar_names(tar: &Path) -> Vec<String> {
    let o = Command::new("tar").arg("tf").arg(tar).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn untouched_init_files_never_reach_the_upper_or_the_commit(r: &Runner) {
    // A given upper.
    ok(&r.sh(
        &[],
        true,
        "cat /etc/hosts /etc/resolv.conf > /dev/null; echo x > /f",
    ));
    for p in INIT_PATHS {
        assert!(!r.s.upper.join(p).exists(), "{p} reached the upper");
    }
    // A throwaway upper: kept with --keep to look at, and committed.
    let out = r.own_dir("out");
    let tar = out.join("c.tar");
    let o = r.sh(
        &["--keep", "--commit", tar.to_str().unwrap()],
        false,
        "cat /etc/hosts >/dev/null; echo y > /g",
    );
    ok(&o);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let kept = err
        .lines()
        .find_map(|l| l.strip_prefix("unionfs-run: the upper is kept in "))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{}", describe(&o)));
    assert!(kept.join("g").is_file());
    for p in INIT_PATHS {
        assert!(!kept.join(p).exists(), "{p} reached the throwaway upper");
    }
    fs::remove_dir_all(&kept).unwrap();
    let names = tar_names(&tar);
    assert!(names.iter().any(|n| n == "g"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("etc")), "{names:?}");
    r.s.assert_tmp_empty();
}
both!(
    untouched_init_files_never_reach_the_upper_or_the_commit,
    untouched_init_files_never_reach_the_upper_or_the_commit_as_root,
    untouched_init_files_never_reach_the_upper_or_the_commit_rootless
);

fn a_changed_hosts_file_lands_in_the_upper_and_the_commit(r: &Runner) {
    let out = r.own_dir("out");
    let tar = out.join("c.tar");
    ok(&r.sh(&["--hostname", "h1"], true, "echo x >> /etc/hosts"));
    let hosts = fs::read_to_string(r.s.upper.join("etc/hosts")).unwrap();
    assert!(hosts.ends_with("127.0.1.1\th1\nx\n"), "{hosts}");
    assert!(!r.s.upper.join("etc/hostname").exists());
    ok(&r.sh(
        &["--commit", tar.to_str().unwrap()],
        false,
        "echo x >> /etc/hosts",
    ));
    let names = tar_names(&tar);
    assert!(names.iter().any(|n| n == "etc/hosts"), "{names:?}");
    assert!(!names
        .iter()
        .any(|n| n == "etc/hostname" || n == "etc/resolv.conf"));
    if !r.rootless_run() {
        // The upper reads right over the image alone: no init layer needed.
        let (work, merged) = (r.s.dir.mkdir("kwork"), r.s.dir.mkdir("kmerged"));
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            r.s.image.display(),
            r.s.upper.display(),
            work.display()
        );
        let m = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&merged)
            .status()
            .unwrap();
        assert!(m.success(), "kernel overlay mount");
        let seen = fs::read_to_string(merged.join("etc/hosts"));
        let hello = fs::read_to_string(merged.join("etc/hello"));
        let _ = Command::new("umount").arg("-l").arg(&merged).status();
        assert_eq!(seen.unwrap(), hosts);
        assert_eq!(hello.unwrap(), "hi\n");
    }
}
both!(
    a_changed_hosts_file_lands_in_the_upper_and_the_commit,
    a_changed_hosts_file_lands_in_the_upper_and_the_commit_as_root,
    a_changed_hosts_file_lands_in_the_upper_and_the_commit_rootless
);

fn binds_show_on_the_host_and_read_only_ones_give_erofs(r: &Runner) {
    let shared = r.own_dir("shared");
    let ro = r.own_dir("ro");
    fs::write(ro.join("keep"), "k\n").unwrap();
    let out = r.own_dir("out");
    let tar = out.join("c.tar");
    let b1 = format!("{}:/mnt/deep/rw", shared.display());
    let b2 = format!("{}:/ro:ro", ro.display());
    // In an image dir: /etc is copied up only to make the mount point.
    let b3 = format!("{}:/etc/bound", shared.display());
    let script = "echo written > /mnt/deep/rw/f; cat /ro/keep; \
                  { echo no > /ro/x; } 2>/err; cat /err; mkdir /ro/d 2>/dev/null || echo mkdir-refused";
    let o = r.sh(
        &[
            "--bind",
            &b1,
            "--bind",
            &b2,
            "--bind",
            &b3,
            "--commit",
            tar.to_str().unwrap(),
        ],
        true,
        script,
    );
    let text = ok(&o);
    assert!(text.starts_with("k\n"), "{text}");
    assert!(text.contains("Read-only file system"), "{text}");
    assert!(text.contains("mkdir-refused\n"), "{text}");
    assert_eq!(fs::read_to_string(shared.join("f")).unwrap(), "written\n");
    assert!(!ro.join("x").exists());
    let names = tar_names(&tar);
    assert!(names.iter().any(|n| n == "err"), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("mnt") || n.starts_with("ro") || n.starts_with("etc")),
        "mount points reached the commit: {names:?}"
    );
    // A missing SRC or a relative DST: one line naming the option, 125.
    for (bind, says) in [
        (format!("{}/nope:/x", r.s.dir.0.display()), "--bind "),
        (format!("{}:rel", shared.display()), "--bind "),
    ] {
        let o = r.sh(&["--bind", &bind], false, "true");
        assert_eq!(o.status.code(), Some(125), "{}", describe(&o));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        let lines: Vec<&str> = err.lines().filter(|l| !l.contains(": warn: ")).collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(
            lines[0].starts_with(&format!("unionfs-run: {says}")),
            "{err}"
        );
    }
    r.s.assert_tmp_empty();
}
both!(
    binds_show_on_the_host_and_read_only_ones_give_erofs,
    binds_show_on_the_host_and_read_only_ones_give_erofs_as_root,
    binds_show_on_the_host_and_read_only_ones_give_erofs_rootless
);

/// The fstype and options of the mount at `dir`, from /proc/mounts.
const MOUNT_OF: &str =
    "while read d m t o r; do [ \"$m\" = \"$1\" ] && echo $t $o; done < /proc/mounts";

fn tmpfs_option_mounts_a_tmpfs(r: &Runner) {
    let script = format!("set -- /scratch; {MOUNT_OF}; echo x > /scratch/f && cat /scratch/f");
    let out = ok(&r.sh(&["--tmpfs", "/scratch:size=1m,mode=700"], true, &script));
    let mut lines = out.lines();
    let mount = lines.next().unwrap_or("");
    assert!(mount.starts_with("tmpfs "), "{out}");
    assert!(
        mount.contains("size=1024k") && mount.contains("mode=700"),
        "{out}"
    );
    assert_eq!(lines.next(), Some("x"));
    assert!(!r.s.upper.join("scratch/f").exists());
}
both!(
    tmpfs_option_mounts_a_tmpfs,
    tmpfs_option_mounts_a_tmpfs_as_root,
    tmpfs_option_mounts_a_tmpfs_rootless
);

fn user_option_takes_ids_from_the_image(r: &Runner) {
    let script = "id -u; id -g; id -G; echo $HOME";
    if r.rootless_run() {
        // A single-id map holds only uid 0: root by name works, app does not.
        assert_eq!(ok(&r.sh(&["-u", "root"], true, script)), "0\n0\n0\n/root\n");
        if !has_subordinate_range(USER) {
            let o = r.sh(&["-u", "app"], true, script);
            assert_eq!(o.status.code(), Some(125), "{}", describe(&o));
            assert!(String::from_utf8_lossy(&o.stderr).contains("single-id map"));
        }
    } else {
        assert_eq!(
            ok(&r.sh(&["-u", "app"], true, script)),
            "1000\n1000\n1000 10\n/home/app\n"
        );
        assert_eq!(
            ok(&r.sh(&["--user", "4242:10"], true, script)),
            "4242\n10\n10\n/\n"
        );
    }
    let o = r.sh(&["-u", "nobody-here"], true, script);
    assert_eq!(o.status.code(), Some(125), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        err.lines().last(),
        Some("unionfs-run: --user nobody-here: no user nobody-here in the image's /etc/passwd")
    );
    r.s.assert_tmp_empty();
}
both!(
    user_option_takes_ids_from_the_image,
    user_option_takes_ids_from_the_image_as_root,
    user_option_takes_ids_from_the_image_rootless
);

fn net_none_leaves_only_lo_up(r: &Runner) {
    let out = ok(&r.sh(
        &["--net", "none"],
        true,
        "ls /sys/class/net; cat /sys/class/net/lo/flags; cat /etc/resolv.conf",
    ));
    // 0x9: IFF_UP | IFF_LOOPBACK; resolv.conf empty.
    assert_eq!(out, "lo\n0x9\n");
    let out = ok(&r.sh(&[], true, "ls /sys/class/net"));
    assert!(
        out.lines().count() > 1,
        "the host's network by default: {out}"
    );
}
both!(
    net_none_leaves_only_lo_up,
    net_none_leaves_only_lo_up_as_root,
    net_none_leaves_only_lo_up_rootless
);

fn ro_option_makes_writes_fail_with_erofs(r: &Runner) {
    let script = "cat /etc/hello; { echo x > /new; } 2>&1; { echo x >> /etc/hello; } 2>&1; true";
    let out = ok(&r.sh(&["--ro"], false, script));
    assert_eq!(out.lines().next(), Some("hi"));
    assert_eq!(out.matches("Read-only file system").count(), 2, "{out}");
    let out = ok(&r.sh(&["--ro"], true, script));
    assert_eq!(out.matches("Read-only file system").count(), 2, "{out}");
    assert_eq!(fs::read_dir(&r.s.upper).unwrap().count(), 0);
    r.s.assert_tmp_empty();
}
both!(
    ro_option_makes_writes_fail_with_erofs,
    ro_option_makes_writes_fail_with_erofs_as_root,
    ro_option_makes_writes_fail_with_erofs_rootless
);

fn env_holds_exactly_the_expected_variables(r: &Runner) {
    let file = r.s.dir.0.join("env.list");
    fs::write(&file, "# comment\n\nFROMFILE=f\nA=from-file\n").unwrap();
    let args = [
        "--hostname",
        "envbox",
        "-e",
        "A=1",
        "--env",
        "HOSTVAR",
        "-e",
        "UNSET_HERE",
        "--env-file",
        file.to_str().unwrap(),
        r.s.image.to_str().unwrap(),
        "--",
        "/usr/bin/env",
    ];
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let o = r
        .command(&args)
        .env("TERM", "xterm-test")
        .env("HOSTVAR", "from-host")
        .env_remove("UNSET_HERE")
        .output()
        .unwrap();
    let mut got: Vec<String> = ok(&o).lines().map(str::to_string).collect();
    got.sort();
    let mut want = vec![
        format!("PATH={DEBIAN_PATH}"),
        "HOME=/root".into(),
        "TERM=xterm-test".into(),
        "HOSTNAME=envbox".into(),
        "container=unionfs-run".into(),
        "FROMFILE=f".into(),
        "A=1".into(),
        "HOSTVAR=from-host".into(),
    ];
    want.sort();
    assert_eq!(got, want);
    fs::write(&file, "GOOD=1\nbad name=2\n").unwrap();
    let o = r.run(&[
        "--env-file",
        file.to_str().unwrap(),
        r.s.image.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(125), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let want = format!("unionfs-run: --env-file {}:2: ", file.display());
    assert!(err.lines().any(|l| l.starts_with(&want)), "{err}");
}
both!(
    env_holds_exactly_the_expected_variables,
    env_holds_exactly_the_expected_variables_as_root,
    env_holds_exactly_the_expected_variables_rootless
);

fn cwd_option_and_its_workdir_alias(r: &Runner) {
    assert_eq!(ok(&r.sh(&["-w", "/etc"], true, "pwd")), "/etc\n");
    assert_eq!(ok(&r.sh(&["--workdir", "/tmp"], true, "pwd")), "/tmp\n");
    assert_eq!(ok(&r.sh(&[], true, "pwd")), "/\n");
    let o = r.sh(&["--cwd", "/no/such"], true, "pwd");
    assert_eq!(o.status.code(), Some(125), "{}", describe(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("step `cwd` failed: /no/such"));
}
both!(
    cwd_option_and_its_workdir_alias,
    cwd_option_and_its_workdir_alias_as_root,
    cwd_option_and_its_workdir_alias_rootless
);

fn a_missing_upper_is_created_for_the_caller(r: &Runner) {
    let parent = r.own_dir("fresh");
    let upper = parent.join("new-upper");
    let work = parent.join("new-work");
    let args = [
        "--union-workdir",
        work.to_str().unwrap(),
        r.s.image.to_str().unwrap(),
        upper.to_str().unwrap(),
        "--",
        "/bin/sh",
        "-c",
        "echo x > /made",
    ];
    ok(&r.run(&args));
    let uid = if r.rootless_run() { USER } else { 0 };
    for d in [&upper, &work] {
        let m = fs::metadata(d).unwrap();
        assert!(m.is_dir() && m.uid() == uid, "{}", d.display());
        assert_eq!(m.permissions().mode() & 0o7777, 0o755);
    }
    assert_eq!(fs::read_to_string(upper.join("made")).unwrap(), "x\n");
    let o = r.run(&[
        r.s.image.to_str().unwrap(),
        parent.join("no/parent").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(125), "{}", describe(&o));
    // --rm removes a given upper after the run.
    ok(&r.run(&[
        "--rm",
        r.s.image.to_str().unwrap(),
        upper.to_str().unwrap(),
        "--",
        "/bin/sh",
        "-c",
        "true",
    ]));
    assert!(!upper.exists());
}
both!(
    a_missing_upper_is_created_for_the_caller,
    a_missing_upper_is_created_for_the_caller_as_root,
    a_missing_upper_is_created_for_the_caller_rootless
);

/// An image whose /etc is a symlink (usr-merged style, relative and
/// absolute), or that has no /etc: the init files show at /etc, the image's
/// own /etc files too, and nothing is written outside the test's dirs.
#[test]
fn an_image_etc_symlink_is_resolved_inside_the_image() {
    let Some(r) = Runner::root() else {
        return;
    };
    let img = &r.s.image;
    fs::create_dir_all(img.join("usr")).unwrap();
    fs::rename(img.join("etc"), img.join("usr/etc")).unwrap();
    for target in ["usr/etc", "/usr/etc"] {
        let _ = fs::remove_file(img.join("etc"));
        std::os::unix::fs::symlink(target, img.join("etc")).unwrap();
        let out = ok(&r.sh(
            &["--hostname", "linked"],
            false,
            "cat /etc/hello /etc/hostname; ls /usr/etc",
        ));
        assert_eq!(
            out,
            "hi\nlinked\ngroup\nhello\nhostname\nhosts\npasswd\nresolv.conf\n"
        );
    }
    assert!(
        !img.join("usr/etc/hostname").exists(),
        "the image is not written"
    );
    fs::remove_file(img.join("etc")).unwrap();
    let out = ok(&r.sh(&["--hostname", "noetc"], true, "cat /etc/hostname; ls /etc"));
    assert_eq!(out, "noetc\nhostname\nhosts\nresolv.conf\n");
    assert!(
        !r.s.upper.join("etc").exists(),
        "the init layer's /etc is no change"
    );
}

/// A bind whose DST passes through an absolute symlink in the image
/// resolves it inside the rootfs, never on the host path the link names:
/// `/inside -> /etc` mounts on the image's /etc/point; `/escape -> HOST`
/// (missing inside) is refused, and nothing is made on the host.
#[test]
fn a_bind_target_through_an_image_symlink_stays_inside() {
    let Some(r) = Runner::root() else {
        return;
    };
    let src = r.s.dir.mkdir("src");
    fs::write(src.join("f"), "from src\n").unwrap();
    std::os::unix::fs::symlink("/etc", r.s.image.join("inside")).unwrap();
    let bind = format!("{}:/inside/point", src.display());
    let out = ok(&r.sh(&["--bind", &bind], true, "cat /etc/point/f"));
    assert_eq!(out, "from src\n");
    assert!(r.s.upper.join("etc/point").is_dir());
    assert!(!Path::new("/etc/point").exists(), "made on the host");

    let host_dir = r.s.dir.mkdir("hostside");
    std::os::unix::fs::symlink(&host_dir, r.s.image.join("escape")).unwrap();
    let bind = format!("{}:/escape/point", src.display());
    let o = r.sh(&["--bind", &bind], true, "true");
    assert_eq!(o.status.code(), Some(125), "{}", describe(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("step `mount binds` failed: /escape/point"));
    assert_eq!(
        fs::read_dir(&host_dir).unwrap().count(),
        0,
        "made on the host"
    );
}
