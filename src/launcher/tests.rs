//! Step order, checked on the recording fake (no root needed).

use std::ffi::OsStr;

use super::fake::FakeSys;
use super::userns::IdRange;
use super::*;

fn host(mode: Mode) -> Host {
    Host {
        mode,
        pid: 7,
        tmpdir: PathBuf::from("/t"),
        server: PathBuf::from("/bin/unionfs-fuse"),
        run_id: "0123456789ab".into(),
        resolv_conf: "nameserver 192.0.2.53\n".into(),
        term: None,
    }
}

fn config(upper: Option<&str>) -> Config {
    Config {
        lowers: vec![PathBuf::from("/img/a"), PathBuf::from("/img/b")],
        upper: upper.map(PathBuf::from),
        ..Config::default()
    }
}

fn plan_for(sys: &mut FakeSys, mode: Mode, upper: Option<&str>) -> Plan {
    let plan = prepare(sys, &config(upper), &host(mode)).unwrap_or_else(|e| panic!("{e}"));
    sys.calls.clear();
    plan
}

fn single() -> Mode {
    Mode::Rootless(IdMapping::Single {
        uid: 1000,
        gid: 1001,
    })
}

/// What the command process does on a root run with an image that has
/// /proc, /dev and /sys.
const ROOTFS_CALLS: [&str; 29] = [
    "unshare(NEWNS|NEWUTS)",
    "mount(-, /, -, REC|PRIVATE, -)",
    "sethostname(0123456789ab)",
    "mount(proc, /t/unionfs-run.7/merged/proc, proc, NOSUID|NODEV|NOEXEC, -)",
    "mount(tmpfs, /t/unionfs-run.7/merged/dev, tmpfs, NOSUID|STRICTATIME, mode=0755)",
    "create(/t/unionfs-run.7/merged/dev/null)",
    "mount(/dev/null, /t/unionfs-run.7/merged/dev/null, -, BIND, -)",
    "create(/t/unionfs-run.7/merged/dev/zero)",
    "mount(/dev/zero, /t/unionfs-run.7/merged/dev/zero, -, BIND, -)",
    "create(/t/unionfs-run.7/merged/dev/full)",
    "mount(/dev/full, /t/unionfs-run.7/merged/dev/full, -, BIND, -)",
    "create(/t/unionfs-run.7/merged/dev/random)",
    "mount(/dev/random, /t/unionfs-run.7/merged/dev/random, -, BIND, -)",
    "create(/t/unionfs-run.7/merged/dev/urandom)",
    "mount(/dev/urandom, /t/unionfs-run.7/merged/dev/urandom, -, BIND, -)",
    "create(/t/unionfs-run.7/merged/dev/tty)",
    "mount(/dev/tty, /t/unionfs-run.7/merged/dev/tty, -, BIND, -)",
    "mkdir(/t/unionfs-run.7/merged/dev/pts, 755)",
    "mount(devpts, /t/unionfs-run.7/merged/dev/pts, devpts, NOSUID|NOEXEC, newinstance,ptmxmode=0666,mode=0620,gid=5)",
    "mkdir(/t/unionfs-run.7/merged/dev/shm, 755)",
    "mount(shm, /t/unionfs-run.7/merged/dev/shm, tmpfs, NOSUID|NODEV|NOEXEC, mode=1777)",
    "symlink(pts/ptmx, /t/unionfs-run.7/merged/dev/ptmx)",
    "symlink(/proc/self/fd, /t/unionfs-run.7/merged/dev/fd)",
    "symlink(/proc/self/fd/0, /t/unionfs-run.7/merged/dev/stdin)",
    "symlink(/proc/self/fd/1, /t/unionfs-run.7/merged/dev/stdout)",
    "symlink(/proc/self/fd/2, /t/unionfs-run.7/merged/dev/stderr)",
    "mount(sysfs, /t/unionfs-run.7/merged/sys, sysfs, RDONLY|NOSUID|NODEV|NOEXEC, -)",
    "pivot_root(/t/unionfs-run.7/merged)",
    "no_new_privs",
];

/// The init layer of a run whose image has a plain /etc.
const INIT_CALLS: [&str; 6] = [
    "mkdir(/t/unionfs-run.7/init, 755)",
    "mkdir(/t/unionfs-run.7/init/etc, 755)",
    "write_new(/t/unionfs-run.7/init/etc/hosts, 644, 127.0.0.1\tlocalhost)",
    "write_new(/t/unionfs-run.7/init/etc/hostname, 644, 0123456789ab)",
    "write_new(/t/unionfs-run.7/init/etc/resolv.conf, 644, nameserver 192.0.2.53)",
    "set_attrs(/t/unionfs-run.7/init/etc, 40755)",
];

#[test]
fn root_run_follows_the_steps_in_order() {
    let mut sys = FakeSys::default();
    let plan =
        prepare(&mut sys, &config(None), &host(Mode::Root)).unwrap_or_else(|e| panic!("{e}"));
    enter_namespaces(&mut sys, &plan).unwrap_or_else(|e| panic!("{e}"));
    start_union(&mut sys, &plan).unwrap_or_else(|e| panic!("{e}"));
    let err = rootfs::command_process(&mut sys, &plan);
    assert_eq!(
        err.to_string(),
        Error::Exec("/bin/sh".into(), Errno(libc::ENOEXEC)).to_string()
    );
    stop_union(&mut sys, &plan);
    remove_scratch(&mut sys, &plan);

    let mut want = vec![
        "mkdir(/t/unionfs-run.7, 700)",
        "create_lock(/t/unionfs-run.7/lock)",
        "mkdir(/t/unionfs-run.7/merged, 755)",
        "mkdir(/t/unionfs-run.7/upper, 755)",
        "mkdir(/t/unionfs-run.7/work, 700)",
    ];
    want.extend(INIT_CALLS);
    want.extend([
        "unshare(NEWNS)",
        "mount(-, /, -, REC|SLAVE, -)",
        "spawn(/bin/unionfs-fuse -f -o workdir=/t/unionfs-run.7/work \
         /t/unionfs-run.7/init:/img/a:/img/b /t/unionfs-run.7/upper /t/unionfs-run.7/merged)",
    ]);
    want.extend(ROOTFS_CALLS);
    want.extend([
        "exec(/bin/sh)",
        "stop_server",
        "umount(/t/unionfs-run.7/merged, DETACH)",
        "rmdir(/t/unionfs-run.7/merged)",
        "rm -r(/t/unionfs-run.7/init)",
        "rm -r(/t/unionfs-run.7/upper)",
        "rm -r(/t/unionfs-run.7/work)",
        "rm(/t/unionfs-run.7/lock)",
        "rmdir(/t/unionfs-run.7)",
    ]);
    assert_eq!(sys.calls, want);
}

#[test]
fn a_given_upper_is_kept() {
    let mut sys = FakeSys::default();
    let plan =
        prepare(&mut sys, &config(Some("/u")), &host(Mode::Root)).unwrap_or_else(|e| panic!("{e}"));
    let mut want = vec![
        "mkdir(/t/unionfs-run.7, 700)",
        "create_lock(/t/unionfs-run.7/lock)",
        "mkdir(/t/unionfs-run.7/merged, 755)",
    ];
    want.extend(INIT_CALLS);
    assert_eq!(sys.calls, want);
    assert!(!plan.throwaway);
    assert_eq!(
        plan.server_argv,
        [
            "/bin/unionfs-fuse",
            "-f",
            "/t/unionfs-run.7/init:/img/a:/img/b",
            "/u",
            "/t/unionfs-run.7/merged"
        ]
    );
    sys.calls.clear();
    stop_union(&mut sys, &plan);
    remove_scratch(&mut sys, &plan);
    assert_eq!(
        sys.calls,
        [
            "stop_server",
            "umount(/t/unionfs-run.7/merged, DETACH)",
            "rmdir(/t/unionfs-run.7/merged)",
            "rm -r(/t/unionfs-run.7/init)",
            "rm(/t/unionfs-run.7/lock)",
            "rmdir(/t/unionfs-run.7)",
        ]
    );
}

#[test]
fn a_scratch_dir_that_still_is_a_mount_point_is_left_alone() {
    let mut sys = FakeSys::default().fail("rmdir(/t/unionfs-run.7/merged)", Errno(libc::EBUSY));
    let plan = plan_for(&mut sys, Mode::Root, None);
    stop_union(&mut sys, &plan);
    remove_scratch(&mut sys, &plan);
    assert_eq!(
        sys.calls.last().map(String::as_str),
        Some("rmdir(/t/unionfs-run.7/merged)")
    );
}

#[test]
fn a_taken_scratch_name_gets_a_suffix() {
    let mut sys = FakeSys::default().fail("mkdir(/t/unionfs-run.7,", Errno::EEXIST);
    let plan =
        prepare(&mut sys, &config(Some("/u")), &host(Mode::Root)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.scratch, PathBuf::from("/t/unionfs-run.7.1"));
}

/// Only dirs whose lock is free and whose run got as far as `merged` go;
/// a live run's (lock held), one still setting up (no `merged`) and one of
/// an older launcher (no lock file) stay.
#[test]
fn a_sweep_removes_only_scratch_dirs_of_dead_runs() {
    let dir = |n: u32| PathBuf::from(format!("/t/unionfs-run.{n}"));
    let mut sys = FakeSys {
        scratch_dirs: vec![dir(5), dir(6), dir(8), dir(9)],
        busy_locks: vec![dir(6).join("lock")],
        missing: vec![dir(8).join("merged")],
        ..FakeSys::default()
    }
    .fail("try_lock(/t/unionfs-run.9/", Errno::ENOENT);
    sweep_stale_scratch(&mut sys, Path::new("/t"));
    assert_eq!(
        sys.calls,
        [
            "try_lock(/t/unionfs-run.5/lock)",
            "rmdir(/t/unionfs-run.5/merged)",
            "rm -r(/t/unionfs-run.5/init)",
            "rm -r(/t/unionfs-run.5/upper)",
            "rm -r(/t/unionfs-run.5/work)",
            "rm(/t/unionfs-run.5/lock)",
            "rmdir(/t/unionfs-run.5)",
            "unlock(/t/unionfs-run.5/lock)",
            "try_lock(/t/unionfs-run.6/lock)",
            "try_lock(/t/unionfs-run.8/lock)",
            "unlock(/t/unionfs-run.8/lock)",
            "try_lock(/t/unionfs-run.9/lock)",
        ]
    );
}

/// A dead run's `merged` that is still a mount point somewhere stops the
/// sweep of that dir before anything in it is removed.
#[test]
fn a_sweep_leaves_a_dir_whose_merged_is_busy() {
    let mut sys = FakeSys {
        scratch_dirs: vec![PathBuf::from("/t/unionfs-run.5")],
        ..FakeSys::default()
    }
    .fail("rmdir(/t/unionfs-run.5/merged)", Errno(libc::EBUSY));
    sweep_stale_scratch(&mut sys, Path::new("/t"));
    assert_eq!(
        sys.calls,
        [
            "try_lock(/t/unionfs-run.5/lock)",
            "rmdir(/t/unionfs-run.5/merged)",
            "unlock(/t/unionfs-run.5/lock)",
        ]
    );
}

#[test]
fn scratch_names_are_the_ones_make_scratch_gives() {
    for good in ["unionfs-run.7", "unionfs-run.7.1", "unionfs-run.123.99"] {
        assert!(is_scratch_name(OsStr::new(good)), "{good}");
    }
    for bad in [
        "unionfs-run.",
        "unionfs-run.7.",
        "unionfs-run.7.1.2",
        "unionfs-run.x",
        "unionfs-run.7.tmp",
        "unionfs-run7",
        "other.7",
    ] {
        assert!(!is_scratch_name(OsStr::new(bad)), "{bad}");
    }
}

#[test]
fn a_missing_layer_fails_before_anything_is_created() {
    let mut sys = FakeSys {
        missing: vec![PathBuf::from("/img/b")],
        ..FakeSys::default()
    };
    let err = prepare(&mut sys, &config(None), &host(Mode::Root)).err();
    assert_eq!(err.map(|e| e.step()), Some("check layers"));
    assert!(sys.calls.is_empty());
}

#[test]
fn rootless_single_map_writes_setgroups_before_gid_map() {
    let mut sys = FakeSys::default();
    let plan = plan_for(&mut sys, single(), None);
    enter_namespaces(&mut sys, &plan).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        sys.calls,
        [
            "access_rw(/dev/fuse)",
            "unshare(NEWUSER|NEWNS)",
            "write(/proc/self/setgroups, deny)",
            "write(/proc/self/uid_map, 0 1000 1)",
            "write(/proc/self/gid_map, 0 1001 1)",
            "mount(-, /, -, REC|SLAVE, -)",
        ]
    );
}

#[test]
fn rootless_subordinate_map_forks_the_helper_before_unshare() {
    let range = IdRange {
        start: 100000,
        count: 65536,
    };
    let mode = Mode::Rootless(IdMapping::Subordinate {
        uid: 1000,
        gid: 1000,
        uids: range,
        gids: range,
        newuidmap: PathBuf::from("/usr/bin/newuidmap"),
        newgidmap: PathBuf::from("/usr/bin/newgidmap"),
    });
    let mut sys = FakeSys::default();
    let plan = plan_for(&mut sys, mode, None);
    enter_namespaces(&mut sys, &plan).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        sys.calls,
        [
            "access_rw(/dev/fuse)",
            "start_id_helper",
            "unshare(NEWUSER|NEWNS)",
            "finish_id_helper",
            "mount(-, /, -, REC|SLAVE, -)",
        ]
    );
}

#[test]
fn an_unusable_dev_fuse_stops_a_rootless_run_first() {
    let mut sys = FakeSys::default().fail("access_rw", Errno::EACCES);
    let plan = plan_for(&mut sys, single(), None);
    let err = enter_namespaces(&mut sys, &plan).err();
    assert_eq!(err.map(|e| e.step()), Some("open /dev/fuse"));
    assert_eq!(sys.calls, ["access_rw(/dev/fuse)"]);
}

#[test]
fn rootless_rootfs_binds_proc_and_sys_when_it_may_not_mount_them() {
    let mut sys = FakeSys {
        flags_of_mounts: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RELATIME,
        ..FakeSys::default()
    }
    .fail("mount(proc,", Errno::EPERM)
    .fail("mount(sysfs,", Errno::EPERM);
    let plan = plan_for(&mut sys, single(), None);
    let err = rootfs::command_process(&mut sys, &plan);
    assert_eq!(err.step(), "exec");
    let m = "/t/unionfs-run.7/merged";
    let wanted = [
        format!("mount(proc, {m}/proc, proc, NOSUID|NODEV|NOEXEC, -)"),
        format!("mount(/proc, {m}/proc, -, BIND|REC, -)"),
        format!("mount(devpts, {m}/dev/pts, devpts, NOSUID|NOEXEC, newinstance,ptmxmode=0666,mode=0620)"),
        format!("mount(sysfs, {m}/sys, sysfs, RDONLY|NOSUID|NODEV|NOEXEC, -)"),
        format!("mount(/sys, {m}/sys, -, BIND|REC, -)"),
        format!("mount(-, {m}/sys, -, RDONLY|NOSUID|NODEV|NOEXEC|REMOUNT|BIND|RELATIME, -)"),
        format!("pivot_root({m})"),
    ];
    let seen: Vec<&String> = sys.calls.iter().filter(|c| wanted.contains(c)).collect();
    assert_eq!(seen, wanted.iter().collect::<Vec<_>>());
}

#[test]
fn missing_special_dirs_are_created_through_the_union() {
    let m = PathBuf::from("/t/unionfs-run.7/merged");
    let mut sys = FakeSys {
        missing: vec![m.join("proc"), m.join("sys")],
        ..FakeSys::default()
    };
    let plan = plan_for(&mut sys, Mode::Root, None);
    let _ = rootfs::command_process(&mut sys, &plan);
    assert_eq!(sys.calls[3], "mkdir(/t/unionfs-run.7/merged/proc, 555)");
    assert!(sys
        .calls
        .contains(&"mkdir(/t/unionfs-run.7/merged/sys, 555)".to_string()));
    assert!(!sys
        .calls
        .iter()
        .any(|c| c.starts_with("mkdir(/t/unionfs-run.7/merged/dev,")));
}

#[test]
fn pivot_root_falls_back_to_chroot_only_on_einval() {
    let mut sys = FakeSys::default().fail("pivot_root", Errno::EINVAL);
    let plan = plan_for(&mut sys, Mode::Root, None);
    assert_eq!(rootfs::command_process(&mut sys, &plan).step(), "exec");
    let tail: Vec<&str> = sys
        .calls
        .iter()
        .rev()
        .take(4)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        [
            "pivot_root(/t/unionfs-run.7/merged)",
            "chroot(/t/unionfs-run.7/merged)",
            "no_new_privs",
            "exec(/bin/sh)"
        ]
    );

    let mut sys = FakeSys::default().fail("pivot_root", Errno::EPERM);
    let plan = plan_for(&mut sys, Mode::Root, None);
    assert_eq!(
        rootfs::command_process(&mut sys, &plan).step(),
        "pivot_root"
    );
    assert!(!sys.calls.iter().any(|c| c.starts_with("chroot")));
}

#[test]
fn chroot_option_skips_pivot_root() {
    let mut sys = FakeSys::default();
    let mut plan = plan_for(&mut sys, Mode::Root, None);
    plan.chroot = true;
    let _ = rootfs::command_process(&mut sys, &plan);
    assert!(sys
        .calls
        .contains(&"chroot(/t/unionfs-run.7/merged)".to_string()));
    assert!(!sys.calls.iter().any(|c| c.starts_with("pivot_root")));
}

#[test]
fn a_failing_step_stops_the_command_process_there() {
    let mut sys = FakeSys::default().fail("mount(tmpfs,", Errno(libc::ENOSPC));
    let plan = plan_for(&mut sys, Mode::Root, None);
    let err = rootfs::command_process(&mut sys, &plan);
    assert_eq!(err.step(), "mount /dev");
    assert_eq!(err.errno(), Errno(libc::ENOSPC));
    assert!(sys
        .calls
        .last()
        .is_some_and(|c| c.starts_with("mount(tmpfs,")));
}

#[test]
fn a_server_that_dies_before_mounting_is_reported() {
    let mut sys = FakeSys {
        not_mounted_polls: 3,
        server_status: Some(1 << 8),
        ..FakeSys::default()
    };
    let plan = plan_for(&mut sys, Mode::Root, None);
    let err = start_union(&mut sys, &plan).err();
    assert_eq!(err.as_ref().map(|e| e.step()), Some("wait for union mount"));
    assert!(err.is_some_and(|e| e.detail().contains("status 1")));
}

#[test]
fn lowers_are_escaped_for_unionfs_fuse() {
    let joined = join_lowers(&[
        PathBuf::from("/a:b"),
        PathBuf::from("/c\\d"),
        PathBuf::from("/e"),
    ]);
    assert_eq!(joined, "/a\\:b:/c\\\\d:/e");
    let back = crate::options::split_lowers(&joined.to_string_lossy());
    assert_eq!(
        back,
        [
            PathBuf::from("/a:b"),
            PathBuf::from("/c\\d"),
            PathBuf::from("/e")
        ]
    );
}

fn position(calls: &[String], prefix: &str) -> usize {
    calls
        .iter()
        .position(|c| c.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {calls:#?}"))
}

#[test]
fn the_init_layer_is_written_before_the_mount() {
    let mut sys = FakeSys::default();
    let plan =
        prepare(&mut sys, &config(None), &host(Mode::Root)).unwrap_or_else(|e| panic!("{e}"));
    enter_namespaces(&mut sys, &plan).unwrap_or_else(|e| panic!("{e}"));
    start_union(&mut sys, &plan).unwrap_or_else(|e| panic!("{e}"));
    let last_init = sys
        .calls
        .iter()
        .rposition(|c| c.contains("/init/"))
        .unwrap_or_else(|| panic!("{:#?}", sys.calls));
    assert!(last_init < position(&sys.calls, "spawn("));
    assert!(plan.server_argv[4]
        .to_string_lossy()
        .starts_with("/t/unionfs-run.7/init:"));
}

/// The container options, through the command process.
fn container_plan(sys: &mut FakeSys) -> Plan {
    let mut c = config(None);
    c.binds = vec![spec::parse_bind("/host/data:/data:ro").unwrap_or_else(|e| panic!("{e}"))];
    c.tmpfs = vec![spec::parse_tmpfs("/scratch:size=1m").unwrap_or_else(|e| panic!("{e}"))];
    c.net = Net::None;
    c.hostname = Some("box".into());
    c.cwd = Some(PathBuf::from("/srv"));
    c.user = Some(spec::parse_user("app").unwrap_or_else(|e| panic!("{e}")));
    let plan = prepare(sys, &c, &host(Mode::Root)).unwrap_or_else(|e| panic!("{e}"));
    sys.root_files = vec![
        (
            PathBuf::from("/etc/passwd"),
            "app:x:1000:100::/home/app:/bin/sh\n".into(),
        ),
        (
            PathBuf::from("/etc/group"),
            "users:x:100:\nwheel:x:10:app\n".into(),
        ),
    ];
    let plan = resolve_identity(sys, &plan).unwrap_or_else(|e| panic!("{e}"));
    sys.calls.clear();
    plan
}

#[test]
fn binds_come_after_proc_dev_and_sys_and_before_the_switch_of_root() {
    let mut sys = FakeSys::default();
    let plan = container_plan(&mut sys);
    let _ = rootfs::command_process(&mut sys, &plan);
    let c = &sys.calls;
    let bind = position(c, "bind(/host/data, /t/unionfs-run.7/merged/data, ro)");
    let tmpfs = position(
        c,
        "mount(tmpfs, /t/unionfs-run.7/merged/scratch, tmpfs, NOSUID|NODEV, size=1m)",
    );
    assert!(position(c, "mount(proc,") < bind);
    assert!(position(c, "mount(tmpfs, /t/unionfs-run.7/merged/dev,") < bind);
    assert!(position(c, "mount(sysfs,") < bind);
    assert_eq!(
        position(c, "mount_point(/t/unionfs-run.7/merged/data, dir)") + 1,
        bind
    );
    assert!(bind < tmpfs && tmpfs < position(c, "pivot_root("));
}

#[test]
fn uts_and_net_namespaces_are_entered_before_the_command() {
    let mut sys = FakeSys::default();
    let plan = container_plan(&mut sys);
    let _ = rootfs::command_process(&mut sys, &plan);
    let c = &sys.calls;
    assert_eq!(c[0], "unshare(NEWNS|NEWUTS|NEWNET)");
    let exec = position(c, "exec(");
    let host = position(c, "sethostname(box)");
    let lo = position(c, "loopback_up");
    assert!(
        host < lo && lo < position(c, "mount(sysfs,"),
        "sysfs of the new net ns"
    );
    let user = position(c, "set_identity(1000, 100, [100, 10])");
    let cwd = position(c, "chdir(/srv)");
    assert!(position(c, "pivot_root(") < user && user < cwd && cwd < exec);
    let keys: Vec<String> = plan
        .env
        .iter()
        .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
        .collect();
    assert_eq!(
        keys,
        [
            format!("PATH={}", identity::DEFAULT_PATH),
            "HOME=/home/app".into(),
            "HOSTNAME=box".into(),
            "container=unionfs-run".into()
        ]
    );
}

#[test]
fn an_image_etc_symlink_puts_the_init_files_where_it_resolves() {
    use super::seam::ImageDir;
    let attrs = Some(super::fake::IMAGE_DIR);
    let mut sys = FakeSys {
        image_etc: Some(vec![
            ImageDir {
                name: "usr".into(),
                attrs,
            },
            ImageDir {
                name: "etc".into(),
                attrs,
            },
        ]),
        ..FakeSys::default()
    };
    prepare(&mut sys, &config(Some("/u")), &host(Mode::Root)).unwrap_or_else(|e| panic!("{e}"));
    let init: Vec<&String> = sys.calls.iter().filter(|c| c.contains("/init")).collect();
    assert_eq!(
        init,
        [
            "mkdir(/t/unionfs-run.7/init, 755)",
            "mkdir(/t/unionfs-run.7/init/usr, 755)",
            "mkdir(/t/unionfs-run.7/init/usr/etc, 755)",
            "write_new(/t/unionfs-run.7/init/usr/etc/hosts, 644, 127.0.0.1\tlocalhost)",
            "write_new(/t/unionfs-run.7/init/usr/etc/hostname, 644, 0123456789ab)",
            "write_new(/t/unionfs-run.7/init/usr/etc/resolv.conf, 644, nameserver 192.0.2.53)",
            "set_attrs(/t/unionfs-run.7/init/usr/etc, 40755)",
            "set_attrs(/t/unionfs-run.7/init/usr, 40755)",
        ]
    );
}

#[test]
fn a_missing_upper_is_created_and_a_missing_bind_source_is_an_option_error() {
    let mut sys = FakeSys {
        missing: vec![PathBuf::from("/new-upper")],
        ..FakeSys::default()
    };
    // The fake's canonical_dir keeps failing for a missing path: the error
    // after the mkdir shows that the mkdir came first.
    let err = prepare(&mut sys, &config(Some("/new-upper")), &host(Mode::Root)).err();
    assert_eq!(
        sys.calls,
        ["mkdir(/new-upper, 755)", "chmod(/new-upper, 755)"]
    );
    assert_eq!(err.map(|e| e.step()), Some("check layers"));

    let mut sys = FakeSys {
        missing: vec![PathBuf::from("/nope")],
        ..FakeSys::default()
    };
    let mut c = config(None);
    c.binds = vec![spec::parse_bind("/nope:/data").unwrap_or_else(|e| panic!("{e}"))];
    let err = prepare(&mut sys, &c, &host(Mode::Root)).err();
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.starts_with("--bind /nope:/data: /nope: "), "{msg}");
    assert!(sys.calls.is_empty(), "nothing made: {:?}", sys.calls);
}

#[test]
fn keep_moves_a_throwaway_upper_out_and_rm_removes_a_given_one() {
    let mut sys = FakeSys::default();
    let mut c = config(None);
    c.keep = Some(true);
    let plan = prepare(&mut sys, &c, &host(Mode::Root)).unwrap_or_else(|e| panic!("{e}"));
    sys.calls.clear();
    remove_scratch(&mut sys, &plan);
    assert!(sys.calls.contains(
        &"rename(/t/unionfs-run.7/upper, /t/unionfs-run-upper.0123456789ab)".to_string()
    ));
    assert!(!sys
        .calls
        .iter()
        .any(|c| c.starts_with("rm -r(/t/unionfs-run.7/upper")));

    let mut sys = FakeSys::default();
    let mut c = config(Some("/u"));
    c.keep = Some(false);
    let plan = prepare(&mut sys, &c, &host(Mode::Root)).unwrap_or_else(|e| panic!("{e}"));
    sys.calls.clear();
    remove_scratch(&mut sys, &plan);
    assert!(sys.calls.contains(&"rm -r(/u)".to_string()));
}

#[test]
fn a_read_only_run_has_no_upper() {
    let mut sys = FakeSys::default();
    let mut c = config(None);
    c.read_only = true;
    let plan = prepare(&mut sys, &c, &host(Mode::Root)).unwrap_or_else(|e| panic!("{e}"));
    assert!(plan.upper.is_none());
    assert_eq!(
        plan.server_argv,
        [
            "/bin/unionfs-fuse",
            "-f",
            "-o",
            "ro",
            "/t/unionfs-run.7/init:/img/a:/img/b",
            "/t/unionfs-run.7/merged"
        ]
    );
}

#[test]
fn a_failed_commit_keeps_the_upper_and_says_how_to_commit_it() {
    let kept = Path::new("/t/unionfs-run-upper.0123456789ab");
    let retry = |u: &Path| format!("retry {}", u.display());
    let mut sys = FakeSys::default();
    let mut plan =
        prepare(&mut sys, &config(None), &host(Mode::Root)).unwrap_or_else(|e| panic!("{e}"));
    assert!(plan.remove_upper);
    sys.calls.clear();
    commit::keep_upper_for_retry(&mut sys, &mut plan, kept, retry);
    remove_scratch(&mut sys, &plan);
    assert_eq!(
        sys.calls[0],
        "rename(/t/unionfs-run.7/upper, /t/unionfs-run-upper.0123456789ab)"
    );
    assert_eq!(plan.upper.as_deref(), Some(kept));
    assert!(
        !sys.calls
            .iter()
            .any(|c| c.contains("upper") && c.starts_with("rm -r")),
        "{:?}",
        sys.calls
    );

    let mut sys = FakeSys::default();
    let mut c = config(Some("/u"));
    c.keep = Some(false);
    let mut plan = prepare(&mut sys, &c, &host(Mode::Root)).unwrap_or_else(|e| panic!("{e}"));
    sys.calls.clear();
    commit::keep_upper_for_retry(&mut sys, &mut plan, kept, retry);
    remove_scratch(&mut sys, &plan);
    assert!(!sys
        .calls
        .iter()
        .any(|c| c == "rm -r(/u)" || c.starts_with("rename(/u")));
    assert_eq!(plan.upper.as_deref(), Some(Path::new("/u")));
}

#[test]
fn a_retry_command_quotes_what_the_shell_would_split() {
    assert_eq!(commit::shell_word(OsStr::new("/t/a-b.1")), "/t/a-b.1");
    assert_eq!(commit::shell_word(OsStr::new("/t/a b")), "'/t/a b'");
    assert_eq!(commit::shell_word(OsStr::new("it's")), "'it'\\''s'");
    let opts = oci_image::ImageOpts {
        image: Some("app:v 1".into()),
        commit: Some("app2:v2".into()),
        zstd: true,
        ..oci_image::ImageOpts::default()
    };
    assert_eq!(
        oci_image::retry_commit(Path::new("/t/u"), &opts),
        "unionfs-run --image 'app:v 1' /t/u --commit-image app2:v2 --zstd -- true"
    );
}
