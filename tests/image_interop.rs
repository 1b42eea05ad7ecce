//! Images both ways between `unionfs-run` and the containers tools:
//! skopeo inspects and copies an image `--commit-image` wrote, podman
//! loads and runs it (the committed change shows), and an image `podman
//! build` made (FROM scratch, no network) and `podman save --format
//! oci-dir` wrote runs under `--image`.
//!
//! Needs skopeo, podman and runc (`.ci/run` installs them); without them
//! it says so and does nothing, except under CI=true, where it fails.

mod common;
mod imagefix;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use imagefix::RUN;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

fn ready() -> bool {
    let missing: Vec<&str> = ["skopeo", "podman", "runc"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    if !missing.is_empty() {
        let why = format!("image interop test needs {missing:?}");
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{why} (.ci/run installs them)");
        }
        eprintln!("{why}: not run");
        return false;
    }
    environment_ok(Impl::Ours)
}

fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: {:?}\n{}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn run(t: &Path, args: &[&str]) -> String {
    let o = Command::new(RUN)
        .arg("--store")
        .arg(t.join("store"))
        .args(args)
        .env("TMPDIR", t.join("tmp"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    ok(o, &format!("unionfs-run {args:?}"))
}

/// podman with all its state in a private dir (removed on drop), runc as
/// its runtime and ulimits this machine allows.
struct Podman {
    state: PathBuf,
    conf: PathBuf,
}

impl Podman {
    fn new(t: &Path) -> Podman {
        // podman refuses a runroot longer than 50 characters.
        let state = PathBuf::from(format!("/var/tmp/ufs-img-{}", std::process::id()));
        let conf = t.join("containers.conf");
        fs::write(
            &conf,
            "[containers]\ndefault_ulimits = [\"nofile=4096:4096\", \"nproc=4096:4096\"]\n\
             [engine]\nruntime = \"runc\"\n",
        )
        .unwrap();
        Podman { state, conf }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.state.join("R"))
            .arg("--runroot")
            .arg(self.state.join("RR"))
            .arg("--tmpdir")
            .arg(self.state.join("T"))
            .env("CONTAINERS_CONF", &self.conf)
            .stdin(Stdio::null());
        c
    }
}

impl Podman {
    /// `podman load -i DIR`; the loaded image's name or id.
    fn load(&self, dir: &str) -> String {
        let loaded = ok(
            self.cmd().args(["load", "-i", dir]).output().unwrap(),
            "podman load",
        );
        loaded
            .lines()
            .find_map(|l| l.strip_prefix("Loaded image: "))
            .or_else(|| {
                loaded
                    .lines()
                    .find_map(|l| l.strip_prefix("Loaded image(s): "))
            })
            .unwrap_or_else(|| panic!("podman load said: {loaded}"))
            .trim()
            .to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd().args(["system", "reset", "-f"]).output();
        let _ = fs::remove_dir_all(&self.state);
    }
}

#[test]
fn skopeo_and_podman_read_a_committed_image_and_podman_images_run_under_image() {
    if !ready() {
        return;
    }
    let tmp = TempDir::new("image-interop");
    let t = tmp.path();
    fs::create_dir_all(t.join("tmp")).unwrap();
    let built = imagefix::build(t);
    let l = built.layout.display().to_string();
    let out = t.join("out");
    let out_s = out.display().to_string();
    run(
        t,
        &[
            "--image",
            &format!("{l}:v1"),
            "--commit-image",
            &format!("{out_s}:v2"),
            "--",
            "/bin/sh",
            "-c",
            "echo committed > /etc/new; rm /etc/hello",
        ],
    );

    // skopeo inspect and copy.
    let inspect = ok(
        Command::new("skopeo")
            .args(["inspect", &format!("oci:{out_s}:v2")])
            .output()
            .unwrap(),
        "skopeo inspect",
    );
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Layers"].as_array().map(Vec::len), Some(3), "{inspect}");
    assert_eq!(v["Architecture"], imagefix::host_arch());
    let copy = t.join("copy").display().to_string();
    ok(
        Command::new("skopeo")
            .args([
                "copy",
                &format!("oci:{out_s}:v2"),
                &format!("oci:{copy}:v2"),
            ])
            .output()
            .unwrap(),
        "skopeo copy",
    );
    let check = "cat /etc/new /etc/app; cat /etc/hello 2>/dev/null || echo hello-gone";
    assert_eq!(
        run(
            t,
            &[
                "--image",
                &format!("{copy}:v2"),
                "--",
                "/bin/sh",
                "-c",
                check
            ]
        ),
        "committed\napp layer\nhello-gone\n"
    );

    // podman load of the layout, podman run of it.
    let podman = Podman::new(t);
    let id = podman.load(&out_s);
    let shown = ok(
        podman
            .cmd()
            .args(["run", "--rm", "--network=none", &id, "/bin/sh", "-c", check])
            .output()
            .unwrap(),
        "podman run",
    );
    assert_eq!(shown, "committed\napp layer\nhello-gone\n");

    // The other way: podman build FROM scratch, podman save --format
    // oci-dir, then --image.
    let ctx = t.join("ctx");
    imagefix::build_rootfs(&ctx.join("rootfs"));
    fs::write(ctx.join("rootfs/etc/built"), "by podman\n").unwrap();
    fs::write(
        ctx.join("Containerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENV FROM_PODMAN=yes\nWORKDIR /etc\n\
         CMD [\"/bin/sh\", \"-c\", \"echo podman-cmd $FROM_PODMAN; pwd\"]\n",
    )
    .unwrap();
    ok(
        podman
            .cmd()
            .args(["build", "-q", "--network=none", "-t", "localhost/built:1"])
            .arg(&ctx)
            .output()
            .unwrap(),
        "podman build",
    );
    let saved = t.join("saved").display().to_string();
    ok(
        podman
            .cmd()
            .args([
                "save",
                "--format",
                "oci-dir",
                "-o",
                &saved,
                "localhost/built:1",
            ])
            .output()
            .unwrap(),
        "podman save",
    );
    assert_eq!(run(t, &["--image", &saved]), "podman-cmd yes\n/etc\n");
    // The README's path: podman's image, committed, run by podman.
    let again = t.join("again").display().to_string();
    run(
        t,
        &[
            "--image",
            &format!("{saved}:localhost/built:1"),
            "--commit-image",
            &format!("{again}:v2"),
            "--",
            "/bin/sh",
            "-c",
            "echo round-trip > /etc/motd",
        ],
    );
    let id2 = podman.load(&again);
    let shown = ok(
        podman
            .cmd()
            .args(["run", "--rm", "--network=none", &id2])
            .output()
            .unwrap(),
        "podman run (round trip)",
    );
    assert_eq!(shown, "podman-cmd yes\n/etc\n", "the config survives");
    let shown = ok(
        podman
            .cmd()
            .args([
                "run",
                "--rm",
                "--network=none",
                &id2,
                "/bin/cat",
                "/etc/motd",
            ])
            .output()
            .unwrap(),
        "podman run (round trip)",
    );
    assert_eq!(shown, "round-trip\n");
    assert_eq!(
        run(
            t,
            &[
                "--image",
                &format!("{saved}:localhost/built:1"),
                "--",
                "/bin/cat",
                "built"
            ]
        ),
        "by podman\n"
    );
}
