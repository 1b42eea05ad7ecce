//! podman with unionfs-fuse as its overlay `mount_program` (set in a
//! storage.conf), as root and rootless: as `unionfs-sub` (a subordinate id
//! range) and as `unionfs-one` (a single-id map), the two users .ci/run
//! makes. The whole list runs for each: import a small rootfs, run with
//! writes and deletes of image dirs and a hard link of an image file, build
//! a two-step Containerfile, commit (with a hard link in the change) and
//! save, and check the saved layers hold the `.wh.` entries and the link.
//!
//! Then containers/storage's options, one combined scenario (run, build,
//! commit, save) per option, as root, as `unionfs-one` and as
//! `unionfs-sub`: `xattr_permissions=2` with `force_mask`, a single-id map
//! (`--uidmap 0:0:1`: podman 4.3 sends `squash_to_uid=0,squash_to_gid=0`
//! for it in all three, with or without a subuid range), an SELinux-style
//! `context=` (shown as `security.selinux`, SELinux being off here) and
//! `fsync=0`. Container c1 shows that its root is our FUSE mount, and a
//! wrapper mount_program records what podman sent, so each test checks
//! that the option reached us in a mount of c1's upper.
//!
//! Each session has its own HOME, XDG_RUNTIME_DIR, storage.conf and
//! containers.conf in a short temp dir, runs in a pid namespace of its own
//! (so no podman, conmon, pause or FUSE process outlives it) with private
//! mounts where podman writes outside those (see `Session::run`), ends with
//! `podman system reset`, and the dir is removed. Needs podman, runc,
//! uidmap and busybox-static (.ci/run installs them).

mod common;
mod rootless_support;

use common::*;
use rootless_support::{as_user_with_fuse, user_for, FuseNode, Map};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Whether podman can run here; fails instead under CI=true.
fn ready() -> bool {
    let missing: Vec<&str> = ["podman", "runc", "newuidmap", "unshare", "setpriv"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    if !missing.is_empty() || !Path::new("/bin/busybox").exists() {
        return rootless_support::skip_or_fail(&format!(
            "podman test: missing {missing:?} or /bin/busybox (busybox-static)"
        ));
    }
    environment_ok(Impl::Ours)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Who {
    Root,
    User(Map),
}

/// One podman setup: its dir (short: podman refuses a runroot longer than
/// 50 characters), the user it runs as, and its FUSE node when rootless.
struct Session {
    dir: PathBuf,
    who: Who,
    uid: u32,
    node: Option<FuseNode>,
}

static N: AtomicU32 = AtomicU32::new(0);

/// What storage.conf adds to the overlay options.
#[derive(Default)]
struct Storage<'a> {
    mountopt: Option<&'a str>,
    force_mask: Option<&'a str>,
}

impl Session {
    fn new(who: Who, storage: Storage) -> Option<Session> {
        if !ready() {
            return None;
        }
        let uid = match who {
            Who::Root => 0,
            Who::User(map) => user_for(map)?,
        };
        let dir = PathBuf::from(format!(
            "/var/tmp/ufp-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).expect("mkdir session dir");
        let s = Session {
            dir,
            who,
            uid,
            node: (who != Who::Root).then(FuseNode::new),
        };
        s.setup(&storage);
        Some(s)
    }

    /// The binary, a wrapper that logs its arguments, a tiny rootfs tar,
    /// the two config files and a Containerfile.
    fn setup(&self, storage: &Storage) {
        let t = &self.dir;
        let td = t.display();
        fs::copy(env!("CARGO_BIN_EXE_unionfs-fuse"), t.join("unionfs-fuse")).expect("copy binary");
        fs::write(
            t.join("mp"),
            format!("#!/bin/sh\necho \"$*\" >> {td}/mount-args\nexec {td}/unionfs-fuse \"$@\"\n"),
        )
        .expect("wrapper");
        fs::set_permissions(t.join("mp"), fs::Permissions::from_mode(0o755)).expect("chmod");
        let root = t.join("rootfs");
        for d in ["bin", "etc", "tmp", "var/lib/data", "usr/share/doc"] {
            fs::create_dir_all(root.join(d)).expect("mkdir rootfs");
        }
        fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
        for c in [
            "sh", "ls", "cat", "echo", "rm", "mkdir", "ln", "stat", "chmod", "id",
        ] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(c)).expect("symlink");
        }
        fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
        fs::write(root.join("var/lib/data/file"), "data\n").expect("data");
        fs::write(root.join("usr/share/doc/readme"), "doc\n").expect("doc");
        let st = Command::new("tar")
            .args([
                "cf",
                "rootfs.tar",
                "--owner=0",
                "--group=0",
                "-C",
                "rootfs",
                ".",
            ])
            .current_dir(t)
            .status()
            .expect("tar");
        assert!(st.success());
        fs::write(
            t.join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = [\"nofile=4096:4096\", \"nproc=4096:4096\"]\n\
                 [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\ntmp_dir = \"{td}/lt\"\n\
                 [network]\nnetwork_config_dir = \"{td}/net\"\n"
            ),
        )
        .expect("containers.conf");
        let mut conf = format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{td}/g\"\nrunroot = \"{td}/rr\"\n\
             [storage.options.overlay]\nmount_program = \"{td}/mp\"\n"
        );
        if let Some(o) = storage.mountopt {
            conf += &format!("mountopt = {}\n", toml_string(o));
        }
        if let Some(m) = storage.force_mask {
            conf += &format!("force_mask = \"{m}\"\n");
        }
        fs::write(t.join("storage.conf"), conf).expect("storage.conf");
        let ctx = t.join("ctx");
        fs::create_dir_all(&ctx).expect("ctx");
        fs::write(
            ctx.join("Containerfile"),
            "FROM localhost/mini:1\n\
             RUN mkdir -p /app && echo one > /app/a && rm -r /usr/share/doc\n\
             RUN echo two > /app/b && rm /var/lib/data/file\n",
        )
        .expect("Containerfile");
        for d in ["home", "run", "tmp", "var-lib"] {
            fs::create_dir_all(t.join(d)).expect("mkdir");
        }
        fs::set_permissions(t.join("run"), fs::Permissions::from_mode(0o700)).expect("chmod");
        if self.uid != 0 {
            let st = Command::new("chown")
                .arg("-R")
                .arg(format!("{0}:{0}", self.uid))
                .arg(t)
                .status()
                .expect("chown");
            assert!(st.success());
        }
    }

    /// Runs `script` (bash, `set -e`, in the session dir) as the session's
    /// user, in a pid and mount namespace of its own, then removes what
    /// podman made (`podman system reset`, in the same namespaces): each
    /// run is a whole session.
    ///
    /// containers.conf's `network_config_dir` keeps root podman's network
    /// locks (`/etc/containers/networks/netavark.lock`,
    /// `/etc/cni/net.d/cni.lock`) in the session. What podman writes
    /// outside its configured dirs goes to private mounts: its lock segment (`/dev/shm/libpod_lock`, or
    /// `libpod_rootless_lock_UID`) to a tmpfs; as root also the blob info
    /// cache (`/var/lib/containers/cache`, whatever storage.conf says) to
    /// the session's `var-lib`, and runc's state and the network dir (`/run/runc`,
    /// `/run/containers/networks`) to a tmpfs.
    fn run(&self, script: &str) -> Output {
        let t = self.dir.display();
        let shm = "mount -t tmpfs -o mode=1777 tmpfs /dev/shm".to_string();
        let mut cmd = match &self.node {
            Some(node) => as_user_with_fuse(&node.path(), self.uid, true, &[&shm]),
            None => {
                let mut c = Command::new("unshare");
                c.args([
                    "--mount",
                    "--propagation",
                    "private",
                    "--pid",
                    "--fork",
                    "--mount-proc",
                    "sh",
                    "-c",
                ])
                .arg(format!(
                    "{shm} && mount --bind {t}/var-lib /var/lib && \
                     mount -t tmpfs -o mode=755 tmpfs /run && exec \"$@\""
                ))
                .arg("sh");
                c
            }
        };
        cmd.args(["env", "-i"])
            .arg(format!("PATH={PATH}"))
            .arg(format!("HOME={t}/home"))
            .arg(format!("XDG_RUNTIME_DIR={t}/run"))
            .arg(format!("XDG_CONFIG_HOME={t}/home/.config"))
            .arg(format!("XDG_DATA_HOME={t}/home/.local/share"))
            .arg(format!("TMPDIR={t}/tmp"))
            .arg(format!("CONTAINERS_CONF={t}/containers.conf"))
            .arg(format!("CONTAINERS_STORAGE_CONF={t}/storage.conf"))
            .args(["bash", "-c"])
            .arg(format!(
                "set -e; cd {t}\n\
                 trap 'podman rm -a -f >/dev/null 2>&1; podman system reset -f >/dev/null 2>&1' EXIT\n\
                 {script}"
            ))
            .stdin(Stdio::null());
        cmd.output().expect("run podman session")
    }

    /// The `-o` lists podman gave the mount_program.
    fn mount_args(&self) -> String {
        fs::read_to_string(self.dir.join("mount-args")).unwrap_or_default()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for m in mounts_below(&self.dir).into_iter().rev() {
            let _ = sys::umount2(&m, libc::MNT_DETACH);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_has(out: &Output, s: &Session, wants: &[&str]) {
    let (stdout, stderr) = text(out);
    let args = s.mount_args();
    eprintln!(
        "{:?}: stdout:\n{stdout}\nmount_program args:\n{args}",
        s.who
    );
    assert!(
        out.status.success(),
        "podman session ({:?}) failed ({}):\n{stdout}\n{stderr}\nmount_program args:\n{args}",
        s.who,
        out.status
    );
    for want in wants {
        assert!(
            stdout.contains(want),
            "({:?}) missing {want:?} in:\n{stdout}\n{stderr}\nmount_program args:\n{args}",
            s.who
        );
    }
}

const IMPORT: &str = "podman import -q rootfs.tar localhost/mini:1 >/dev/null\n";
const BUILD: &str = "podman build -q --network=none -t localhost/built:1 ctx >/dev/null\n";

/// In c1: the type of its root mount (ours, so podman used the
/// mount_program), changes of image files and a hard link of one, then
/// committed.
const RUN_C1: &str = "podman run --name c1 --network=none localhost/built:1 sh -c \
    'while read -r _ m t _; do [ \"$m\" = / ] && echo \"root fs $t\"; done < /proc/mounts; \
     cat /app/a /app/b; echo changed > /app/a; rm /app/b; ln /app/a /app/a.link; \
     echo new > /app/new; chmod 600 /app/new; echo plain > /app/plain; mkdir -m 750 /app/d; \
     [ $(stat -c %i /app/a) = $(stat -c %i /app/a.link) ] && stat -c \"c1 link %h\" /app/a.link'\n";
/// Where c1's upper is, to find its mounts in what podman sent.
const C1_UPPER: &str =
    "printf 'c1 upper %s\\n' \"$(podman inspect -f '{{.GraphDriver.Data.UpperDir}}' c1)\"\n";
const COMMIT_SAVE: &str = "podman commit -q c1 localhost/committed:1 >/dev/null\n\
    rm -rf save; podman save -q --format oci-dir -o save localhost/committed:1 >/dev/null\n\
    for b in save/blobs/sha256/*; do tar tvf $b 2>/dev/null | sed 's,\\./,,g' || true; done\n";

/// What every session prints.
const WANT_BASE: &[&str] = &[
    "root fs fuse.unionfs-fuse\n",
    "one\ntwo\n",
    "c1 link 2\n",
    "usr/share/.wh.doc",
    "var/lib/data/.wh.file",
    "app/.wh.b",
    "link to app/a",
];

/// The whole list.
fn whole_list(who: Who) {
    let Some(s) = Session::new(who, Storage::default()) else {
        return;
    };
    let script = [
        IMPORT,
        // Writes, deletes of image dirs, and the hard link of a lower file
        // (issue 22): both names show one inode and nlink 2.
        "podman run --rm --network=none localhost/mini:1 sh -c \
         'echo hi > /tmp/x; cat /tmp/x; rm -r /usr/share/doc; ls /usr/share; \
          echo more >> /var/lib/data/file; cat /var/lib/data/file; \
          ln /etc/passwd /etc/pw.link; \
          [ $(stat -c %i:%h /etc/passwd) = $(stat -c %i:%h /etc/pw.link) ] && stat -c \"lower link %h\" /etc/pw.link'\n",
        BUILD,
        RUN_C1,
        COMMIT_SAVE,
        "podman run --rm --network=none localhost/committed:1 sh -c \
         'cat /app/a; [ $(stat -c %i /app/a) = $(stat -c %i /app/a.link) ] && echo committed link; \
          ls /app; stat -c \"new %a\" /app/new'\n",
    ]
    .concat();
    let out = s.run(&script);
    let mut want = WANT_BASE.to_vec();
    want.extend([
        "hi\n",
        "data\nmore\n",
        "lower link 2\n",
        "changed\ncommitted link\n",
        "new 600\n",
    ]);
    assert_has(&out, &s, &want);
    let args = s.mount_args();
    assert!(args.contains("lowerdir="), "mount_program args:\n{args}");
    if who == Who::Root {
        // Written in the session, not in the host's /var/lib.
        let cache = s
            .dir
            .join("var-lib/containers/cache/blob-info-cache-v1.boltdb");
        assert!(cache.exists(), "no {}", cache.display());
    }
}

#[test]
fn podman_root_runs_builds_commits_and_saves_on_unionfs_fuse() {
    whole_list(Who::Root);
}

#[test]
fn podman_rootless_subordinate_range_runs_builds_commits_and_saves_on_unionfs_fuse() {
    whole_list(Who::User(Map::Range));
}

#[test]
fn podman_rootless_single_id_map_runs_builds_commits_and_saves_on_unionfs_fuse() {
    whole_list(Who::User(Map::Single));
}

/// One combined scenario under an option: import, build, run, commit,
/// save, plus `extra` (which prints what the option shows); `args` must be
/// in what podman sent the mount_program.
fn option_scenario(
    who: Who,
    storage: Storage,
    run_opts: &str,
    extra: &str,
    want: &[&str],
    args: &[&str],
) {
    let Some(s) = Session::new(who, storage) else {
        return;
    };
    let script = [
        IMPORT,
        BUILD,
        &RUN_C1.replace("podman run ", &format!("podman run {run_opts} ")),
        COMMIT_SAVE,
        C1_UPPER,
        extra,
    ]
    .concat();
    let out = s.run(&script);
    let mut all = WANT_BASE.to_vec();
    all.extend(want);
    assert_has(&out, &s, &all);
    // The mounts of c1's upper: the run's among them.
    let (stdout, _) = text(&out);
    let upper = stdout
        .lines()
        .find_map(|l| l.strip_prefix("c1 upper "))
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| panic!("({who:?}) no upper of c1 in:\n{stdout}"));
    let sent = s.mount_args();
    let c1: Vec<&str> = sent
        .lines()
        .filter(|l| l.contains(&format!("upperdir={upper},")))
        .collect();
    for a in args {
        assert!(
            c1.iter().any(|l| l.contains(a)),
            "({who:?}) podman did not send {a:?} to the mount_program for c1 ({upper}):\n{sent}"
        );
    }
}

/// Prints `path`'s `name` xattr in container c1's merged tree, through
/// `podman mount` (in `podman unshare` when rootless).
fn show_in_c1(who: Who, path: &str, name: &str) -> String {
    let inner = format!(
        "m=$(podman mount c1); printf 'shown %s\\n' \"$(getfattr --absolute-names --only-values -n {name} $m{path})\"; podman umount c1 >/dev/null"
    );
    match who {
        Who::Root => format!("{inner}\n"),
        Who::User(_) => format!("podman unshare sh -c '{}'\n", inner.replace('\'', "'\\''")),
    }
}

/// The upper of container c1 on disk, as stored: `path`'s override xattr.
fn stored_in_c1(who: Who, path: &str) -> String {
    let inner = format!(
        "d=$(podman inspect -f '{{{{.GraphDriver.Data.UpperDir}}}}' c1); \
         printf 'stored %s\\n' \"$(getfattr --absolute-names --only-values -n user.containers.override_stat $d{path})\""
    );
    match who {
        Who::Root => format!("{inner}\n"),
        Who::User(_) => format!("podman unshare sh -c '{}'\n", inner.replace('\'', "'\\''")),
    }
}

fn xattr_permissions(who: Who) {
    let extra = [
        "podman run --rm --network=none localhost/committed:1 sh -c \
         'stat -c \"mode %a %u:%g\" /app/new /bin/busybox /etc/passwd /'\n"
            .to_string(),
        stored_in_c1(who, ""),
        stored_in_c1(who, "/app/new"),
        stored_in_c1(who, "/app/plain"),
        stored_in_c1(who, "/app/d"),
    ]
    .concat();
    option_scenario(
        who,
        Storage {
            mountopt: Some("xattr_permissions=2"),
            force_mask: Some("shared"),
        },
        "",
        &extra,
        &[
            "mode 600 0:0\nmode 755 0:0\nmode 644 0:0\nmode 755 0:0\n",
            // The upper root has one (the mount gives it one when missing,
            // as fuse-overlayfs), then chmod, then create and mkdir under
            // umask 022 (fuse-overlayfs's format: a store moves between the
            // two).
            "stored 0:0:755\nstored 0:0:600\nstored 0:0:644\nstored 0:0:750\n",
        ],
        &["xattr_permissions=2"],
    );
}

fn single_id_map(who: Who) {
    option_scenario(
        who,
        Storage::default(),
        "--uidmap 0:0:1 --gidmap 0:0:1",
        "podman run --rm --network=none --uidmap 0:0:1 --gidmap 0:0:1 localhost/committed:1 \
         sh -c 'id -u; stat -c \"owner %u:%g\" /etc/passwd /app/new'\n",
        &["owner 0:0\nowner 0:0\n"],
        &["squash_to_uid=0", "squash_to_gid=0"],
    );
}

const CONTEXT: &str = "system_u:object_r:container_file_t:s0:c1,c2";

fn context(who: Who) {
    option_scenario(
        who,
        Storage {
            mountopt: Some(&format!("context=\"{CONTEXT}\"")),
            force_mask: None,
        },
        "",
        &show_in_c1(who, "/etc/passwd", "security.selinux"),
        &[&format!("shown {CONTEXT}\n")],
        &[&format!("context=\"{CONTEXT}\"")],
    );
}

fn fsync0(who: Who) {
    option_scenario(
        who,
        Storage {
            mountopt: Some("fsync=0"),
            force_mask: None,
        },
        "",
        "",
        &[],
        &["fsync=0"],
    );
}

macro_rules! option_tests {
    ($($name:ident: $f:ident($who:expr);)*) => {$(
        #[test]
        fn $name() {
            $f($who);
        }
    )*};
}

option_tests! {
    podman_root_with_xattr_permissions_and_force_mask: xattr_permissions(Who::Root);
    podman_rootless_single_id_map_with_xattr_permissions_and_force_mask: xattr_permissions(Who::User(Map::Single));
    podman_rootless_subordinate_range_with_xattr_permissions_and_force_mask: xattr_permissions(Who::User(Map::Range));
    podman_root_with_a_single_id_map_sends_squash: single_id_map(Who::Root);
    podman_rootless_single_id_map_with_a_single_id_map_sends_squash: single_id_map(Who::User(Map::Single));
    podman_rootless_subordinate_range_with_a_single_id_map_sends_squash: single_id_map(Who::User(Map::Range));
    podman_root_with_an_selinux_context_shows_it: context(Who::Root);
    podman_rootless_single_id_map_with_an_selinux_context_shows_it: context(Who::User(Map::Single));
    podman_rootless_subordinate_range_with_an_selinux_context_shows_it: context(Who::User(Map::Range));
    podman_root_with_fsync_0: fsync0(Who::Root);
    podman_rootless_single_id_map_with_fsync_0: fsync0(Who::User(Map::Single));
    podman_rootless_subordinate_range_with_fsync_0: fsync0(Who::User(Map::Range));
}

/// `unionfs-run --export-layer` writes a layer podman imports as it is:
/// the rootfs exported as a layer, imported, and run.
#[test]
fn podman_imports_an_exported_layer() {
    let Some(s) = Session::new(Who::Root, Storage::default()) else {
        return;
    };
    let layer = s.dir.join("layer.tar.gz");
    let run = Path::new(env!("CARGO_BIN_EXE_unionfs-fuse")).with_file_name("unionfs-run");
    let out = Command::new(&run)
        .arg("--export-layer")
        .arg(s.dir.join("rootfs"))
        .arg(&layer)
        .output()
        .expect("unionfs-run --export-layer");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.run(
        "podman import -q layer.tar.gz localhost/imported:1 >/dev/null\n\
         podman run --rm --network=none localhost/imported:1 cat /etc/passwd /var/lib/data/file /usr/share/doc/readme\n",
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout, "root:x:0:0:root:/root:/bin/sh\ndata\ndoc\n");
}
