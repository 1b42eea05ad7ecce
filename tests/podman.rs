//! podman with unionfs-fuse as its overlay `mount_program`, as root and
//! rootless: import a small rootfs, run with writes and deletes of image
//! dirs, build a two-step Containerfile, commit and save, and check the
//! saved layers hold the expected `.wh.` entries.
//!
//! A long test: it runs when podman, runc and busybox-static are installed
//! (`apt-get install podman runc uidmap busybox-static`) and otherwise says
//! why it did nothing.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const USER: &str = "unionfs-podman";

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn ready() -> bool {
    let missing: Vec<&str> = ["podman", "runc", "newuidmap"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    if !missing.is_empty() || !Path::new("/bin/busybox").exists() {
        eprintln!("podman test: not run (missing {missing:?} or /bin/busybox)");
        return false;
    }
    environment_ok(Impl::Ours)
}

/// A world-readable work dir with the binary, a tiny rootfs tar and a
/// containers.conf that fits this machine's limits.
fn setup(tmp: &Path) -> PathBuf {
    fs::set_permissions(tmp, fs::Permissions::from_mode(0o755)).expect("chmod tmp");
    let bin = tmp.join("unionfs-fuse");
    fs::copy(env!("CARGO_BIN_EXE_unionfs-fuse"), &bin).expect("copy binary");
    let root = tmp.join("rootfs");
    for d in ["bin", "etc", "tmp", "var/lib/data", "usr/share/doc"] {
        fs::create_dir_all(root.join(d)).expect("mkdir rootfs");
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
    for c in ["sh", "ls", "cat", "echo", "rm", "mkdir"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(c)).expect("symlink");
    }
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    fs::write(root.join("var/lib/data/file"), "data\n").expect("data");
    fs::write(root.join("usr/share/doc/readme"), "doc\n").expect("doc");
    let st = Command::new("tar")
        .arg("cf")
        .arg(tmp.join("rootfs.tar"))
        .arg("-C")
        .arg(&root)
        .arg(".")
        .status()
        .expect("tar");
    assert!(st.success());
    fs::write(
        tmp.join("containers.conf"),
        "[containers]\ndefault_ulimits = [\"nofile=4096:4096\", \"nproc=4096:4096\"]\n[engine]\nruntime = \"runc\"\n",
    )
    .expect("containers.conf");
    let ctx = tmp.join("ctx");
    fs::create_dir_all(&ctx).expect("ctx");
    fs::write(
        ctx.join("Containerfile"),
        "FROM localhost/mini:1\n\
         RUN mkdir -p /app && echo one > /app/a && rm -r /usr/share/doc\n\
         RUN echo two > /app/b && rm /var/lib/data/file\n",
    )
    .expect("Containerfile");
    Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(tmp)
        .status()
        .expect("chmod");
    bin
}

/// The podman session script: every step must succeed; prints the saved
/// layers' listings.
fn script(tmp: &Path, storage: &str) -> String {
    let t = tmp.display();
    format!(
        "set -e; cd {t}; export CONTAINERS_CONF={t}/containers.conf
P=\"podman {storage} --storage-driver overlay --storage-opt overlay.mount_program={t}/unionfs-fuse\"
$P import rootfs.tar localhost/mini:1 >/dev/null
$P run --rm --network=none localhost/mini:1 sh -c 'echo hi > /tmp/x; cat /tmp/x; rm -r /usr/share/doc; ls /usr/share; echo more >> /var/lib/data/file; cat /var/lib/data/file'
$P build -q --network=none -t localhost/built:1 ctx >/dev/null
$P run --name c1 --network=none localhost/built:1 sh -c 'cat /app/a /app/b; echo changed > /app/a; rm /app/b'
$P commit -q c1 localhost/committed:1 >/dev/null
rm -rf save; $P save --format oci-dir -o save localhost/committed:1 >/dev/null
$P rm -a -f >/dev/null
for b in save/blobs/sha256/*; do tar tf $b 2>/dev/null | sed 's,^\\./,,' || true; done
"
    )
}

fn check(out: &std::process::Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "podman session failed:\n{stdout}\n{stderr}"
    );
    for want in [
        "hi\n",
        "data\nmore\n",
        "one\ntwo\n",
        "usr/share/.wh.doc",
        "var/lib/data/.wh.file",
        "app/.wh.b",
    ] {
        assert!(
            stdout.contains(want),
            "missing {want:?} in:\n{stdout}\n{stderr}"
        );
    }
}

/// podman's global options for a session with all its state under `dir`.
/// The tmpdir matters as much as the storage: root podman's default one is
/// `/run/libpod`, which `system reset` removes, and the tests run in
/// parallel, so one test's clean-up would pull it from under another's run
/// ("creating runtime status file: open /run/libpod/alive").
fn private_storage(dir: &Path) -> String {
    format!(
        "--root {0}/R --runroot {0}/RR --tmpdir {0}/T",
        dir.display()
    )
}

#[test]
fn podman_root_uses_unionfs_fuse_as_mount_program() {
    if !ready() {
        return;
    }
    let tmp = TempDir::new("podman-root");
    setup(tmp.path());
    // podman refuses a runroot longer than 50 characters: keep it short.
    let short = PathBuf::from(format!("/var/tmp/ufsp-{}", std::process::id()));
    let storage = private_storage(&short);
    let out = Command::new("bash")
        .args(["-c", &script(tmp.path(), &storage)])
        .output()
        .expect("run podman");
    let _ = Command::new("bash")
        .args([
            "-c",
            &format!("podman {storage} system reset -f >/dev/null 2>&1"),
        ])
        .output();
    let _ = fs::remove_dir_all(&short);
    check(&out);
}

/// Makes /dev/fuse usable by an unprivileged user for the test only.
struct FuseDevOpen(u32);

impl FuseDevOpen {
    fn new() -> FuseDevOpen {
        let mode = fs::metadata("/dev/fuse")
            .expect("stat /dev/fuse")
            .permissions()
            .mode();
        fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o666)).expect("chmod");
        FuseDevOpen(mode & 0o7777)
    }
}

impl Drop for FuseDevOpen {
    fn drop(&mut self) {
        let _ = fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(self.0));
    }
}

#[test]
fn podman_rootless_uses_unionfs_fuse_as_mount_program() {
    if !ready() {
        return;
    }
    // A user with a subordinate id range, as rootless podman needs.
    if Command::new("id")
        .arg(USER)
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        let st = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", USER])
            .status()
            .expect("useradd");
        assert!(st.success(), "useradd {USER}");
    }
    for f in ["/etc/subuid", "/etc/subgid"] {
        let cur = fs::read_to_string(f).unwrap_or_default();
        if !cur.lines().any(|l| l.starts_with(&format!("{USER}:"))) {
            fs::write(f, format!("{cur}{USER}:300000:65536\n")).expect("subid range");
        }
    }
    let _dev = FuseDevOpen::new();
    let tmp = TempDir::new("podman-rootless");
    setup(tmp.path());
    Command::new("chown")
        .args(["-R", USER])
        .arg(tmp.path())
        .status()
        .expect("chown");
    let home = format!("/home/{USER}");
    // Rootless podman ignores a mount_program that is only in storage.conf;
    // the --storage-opt form is what works.
    let storage = private_storage(Path::new(&format!("{home}/.ufs-test")));
    let body = script(tmp.path(), &storage);
    let out = Command::new("su")
        .args([USER, "-s", "/bin/bash", "-c", &body])
        .output()
        .expect("run podman rootless");
    let _ = Command::new("su")
        .args([USER, "-s", "/bin/bash", "-c"])
        .arg(format!(
            "podman {storage} system reset -f >/dev/null 2>&1; rm -rf {home}/.ufs-test"
        ))
        .output();
    check(&out);
}

/// `unionfs-run --export-layer` writes a layer podman imports as it is:
/// the rootfs exported as a layer, imported, and run.
#[test]
fn podman_imports_an_exported_layer() {
    if !ready() {
        return;
    }
    let tmp = TempDir::new("podman-import");
    setup(tmp.path());
    let layer = tmp.path().join("layer.tar.gz");
    let run = Path::new(env!("CARGO_BIN_EXE_unionfs-fuse")).with_file_name("unionfs-run");
    let out = Command::new(&run)
        .arg("--export-layer")
        .arg(tmp.path().join("rootfs"))
        .arg(&layer)
        .output()
        .expect("unionfs-run --export-layer");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let short = PathBuf::from(format!("/var/tmp/ufsi-{}", std::process::id()));
    let storage = private_storage(&short);
    let t = tmp.path().display();
    let body = format!(
        "set -e; export CONTAINERS_CONF={t}/containers.conf
P=\"podman {storage} --storage-driver overlay --storage-opt overlay.mount_program={t}/unionfs-fuse\"
$P import -q {layer} localhost/imported:1 >/dev/null
$P run --rm --network=none localhost/imported:1 cat /etc/passwd /var/lib/data/file /usr/share/doc/readme",
        layer = layer.display()
    );
    let out = Command::new("bash")
        .args(["-c", &body])
        .output()
        .expect("podman");
    let _ = Command::new("bash")
        .args([
            "-c",
            &format!("podman {storage} system reset -f >/dev/null 2>&1"),
        ])
        .output();
    let _ = fs::remove_dir_all(&short);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "root:x:0:0:root:/root:/bin/sh\ndata\ndoc\n");
}
