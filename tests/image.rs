//! `unionfs-run --image` and `--commit-image` end to end, on an OCI layout
//! built in the test with no network (tests/imagefix): the image's config
//! applies, a commit becomes a new tag whose change and whiteout show in
//! the next run, the old tag keeps running, `--ro` and a throwaway or given
//! upper work, the store upkeep, bad input through the command line, and a
//! SIGKILL during an unpack and during a commit. Interop with skopeo and
//! podman is in tests/image_interop.rs.

mod common;
mod imagefix;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use imagefix::RUN;

fn needs_root() -> bool {
    environment_ok(Impl::Ours)
}

/// `unionfs-run --store STORE ARGS` with TMPDIR in the test dir.
fn run(t: &Path, args: &[&str]) -> Output {
    Command::new(RUN)
        .arg("--store")
        .arg(t.join("store"))
        .args(args)
        .env("TMPDIR", t.join("tmp"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn setup(tag: &str) -> (TempDir, imagefix::Built, String) {
    let tmp = TempDir::new(tag);
    fs::create_dir_all(tmp.path().join("tmp")).unwrap();
    let built = imagefix::build(tmp.path());
    let image = built.layout.display().to_string();
    (tmp, built, image)
}

#[test]
fn an_image_runs_with_its_config_and_options_override_it() {
    if !needs_root() {
        return;
    }
    let (tmp, _built, l) = setup("image-config");
    let t = tmp.path();
    let v1 = format!("{l}:v1");
    // No command: the image's Cmd.
    assert_eq!(ok(run(t, &["--image", &v1])), "cmd-of-image\n");
    // Both layers, the app layer's whiteout, Env and WorkingDir.
    let script = "cat /etc/app /etc/hello; ls /etc/gone 2>/dev/null || echo gone-is-gone; \
                  echo $GREETING; pwd";
    let out = ok(run(t, &["--image", &v1, "--", "/bin/sh", "-c", script]));
    assert_eq!(out, "app layer\nhi\ngone-is-gone\nfrom-image\n/etc\n");
    // -e and --cwd win over the config; --entrypoint replaces it and its Cmd.
    let out = ok(run(
        t,
        &[
            "--image",
            &v1,
            "-e",
            "GREETING=cli",
            "--cwd",
            "/tmp",
            "--",
            "/bin/sh",
            "-c",
            "echo $GREETING; pwd",
        ],
    ));
    assert_eq!(out, "cli\n/tmp\n");
    let out = ok(run(
        t,
        &["--image", &v1, "--entrypoint", "/bin/cat", "--", "/etc/app"],
    ));
    assert_eq!(out, "app layer\n");
    // Without a tag, the layout's only image.
    assert_eq!(ok(run(t, &["--image", &l])), "cmd-of-image\n");
}

#[test]
fn a_committed_image_shows_the_change_and_the_whiteout_and_the_old_tag_still_runs() {
    if !needs_root() {
        return;
    }
    let (tmp, _built, l) = setup("image-commit");
    let t = tmp.path();
    let (v1, v2) = (format!("{l}:v1"), format!("{l}:v2"));
    let out = ok(run(
        t,
        &[
            "--image",
            &v1,
            "--commit-image",
            &v2,
            "--",
            "/bin/sh",
            "-c",
            "echo changed > /etc/new; rm /etc/hello",
        ],
    ));
    assert!(out.trim_end().starts_with("sha256:"), "{out}");
    let check = "cat /etc/new; cat /etc/hello 2>/dev/null || echo hello-gone; cat /etc/app";
    let out = ok(run(t, &["--image", &v2, "--", "/bin/sh", "-c", check]));
    assert_eq!(out, "changed\nhello-gone\napp layer\n");
    // The run config came along.
    assert_eq!(ok(run(t, &["--image", &v2])), "cmd-of-image\n");
    let out = ok(run(t, &["--image", &v1, "--", "/bin/sh", "-c", check]));
    assert_eq!(out, "hi\napp layer\n");
    // Without a tag the layout now has two: the error lists both.
    let o = run(t, &["--image", &l]);
    assert_eq!(o.status.code(), Some(125), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("v1, v2"), "{err}");

    // --ro with the image: writes fail; with a throwaway upper they vanish;
    // with a given upper they land there.
    let o = run(
        t,
        &[
            "--image",
            &v2,
            "--ro",
            "--",
            "/bin/sh",
            "-c",
            "echo x > /etc/x",
        ],
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Read-only"),
        "{}",
        text(&o)
    );
    ok(run(
        t,
        &["--image", &v2, "--", "/bin/sh", "-c", "echo x > /etc/x"],
    ));
    let upper = t.join("upper");
    let up = upper.display().to_string();
    ok(run(
        t,
        &[
            "--image",
            &v2,
            &up,
            "--",
            "/bin/sh",
            "-c",
            "echo kept > /etc/kept",
        ],
    ));
    assert_eq!(
        fs::read_to_string(upper.join("etc/kept")).unwrap(),
        "kept\n"
    );
    assert!(!upper.join("etc/x").exists());

    // A zstd commit into another layout, from the committed image.
    let z = t.join("zlayout").display().to_string();
    let zref = format!("{z}:z");
    ok(run(
        t,
        &[
            "--image",
            &v2,
            "--commit-image",
            &zref,
            "--zstd",
            "--",
            "/bin/sh",
            "-c",
            "echo z > /z",
        ],
    ));
    let out = ok(run(
        t,
        &["--image", &zref, "--", "/bin/sh", "-c", "cat /z /etc/new"],
    ));
    assert_eq!(out, "z\nchanged\n");
    let index = fs::read_to_string(t.join("zlayout/index.json")).unwrap();
    let manifest_digest = index.split("sha256:").nth(1).unwrap()[..64].to_string();
    let manifest =
        fs::read_to_string(t.join("zlayout/blobs/sha256").join(manifest_digest)).unwrap();
    assert!(manifest.contains("tar+zstd"), "{manifest}");

    // The store lists every layer with its images; nothing is unused.
    let ls = ok(run(t, &["--store-ls"]));
    assert_eq!(ls.lines().count(), 1 + 4, "{ls}");
    assert!(
        ls.contains(&v1) && ls.contains(&v2) && ls.contains(&zref),
        "{ls}"
    );
    assert_eq!(ok(run(t, &["--store-prune"])), "");
    fs::remove_dir_all(t.join("zlayout")).unwrap();
    let pruned = ok(run(t, &["--store-prune"]));
    assert_eq!(pruned.lines().count(), 1, "{pruned}");
}

/// Nothing but the store (and TMPDIR, emptied by the run) changed in `t`.
fn assert_only_store_changed(t: &Path, before: &[PathBuf]) {
    let now = walk(t, &["store", "tmp"]);
    assert_eq!(now, before, "files appeared outside the store");
    let tmp = t.join("store/kernel/tmp");
    let left: Vec<_> = fs::read_dir(&tmp)
        .map(|r| r.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

fn walk(dir: &Path, skip: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if d == dir && skip.iter().any(|s| e.file_name() == *s) {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn bad_images_are_one_clear_error_and_nothing_is_written_outside_the_store() {
    if !needs_root() {
        return;
    }
    let (tmp, built, l) = setup("image-bad-cli");
    let t = tmp.path();
    // A corrupted blob (first: a stored layer is not read again).
    let blob = built
        .layout
        .join("blobs/sha256")
        .join(&built.layers[0]["digest"].as_str().unwrap()[7..]);
    let mut data = fs::read(&blob).unwrap();
    let n = data.len();
    data[n / 2] ^= 0xff;
    fs::write(&blob, &data).unwrap();
    let before = walk(t, &["store", "tmp"]);
    let o = run(t, &["--image", &format!("{l}:v1"), "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(125), "{}", text(&o));
    // Named as such, also where the flipped byte breaks the stream first.
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("(corrupted blob)"),
        "{}",
        text(&o)
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).lines().count(),
        1,
        "{}",
        text(&o)
    );
    assert_only_store_changed(t, &before);
    data[n / 2] ^= 0xff;
    fs::write(&blob, &data).unwrap();

    // A bomb: the app layer's blob replaced by 256 MiB of zeros as zstd.
    let zeros = t.join("zeros");
    fs::write(&zeros, vec![0u8; 256 << 20]).unwrap();
    let z = Command::new("zstd")
        .args(["-q", "-19", "-c"])
        .arg(&zeros)
        .output()
        .unwrap();
    fs::remove_file(&zeros).unwrap();
    let mut layers = built.layers.clone();
    layers[1] = imagefix::put_blob(&built.layout, imagefix::MT_ZSTD, &z.stdout);
    imagefix::write_image(&built.layout, &layers, &built.diff_ids, "bomb");
    let before = walk(t, &["store", "tmp"]);
    let o = run(
        t,
        &[
            "--max-layer-size",
            "64M",
            "--image",
            &format!("{l}:bomb"),
            "--",
            "/bin/true",
        ],
    );
    assert_eq!(o.status.code(), Some(125), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--max-layer-size") && err.lines().count() == 1,
        "{err}"
    );
    assert_only_store_changed(t, &before);

    // An unknown media type, named.
    let mut layers = built.layers.clone();
    layers[0]["mediaType"] = "application/x-unknown".into();
    imagefix::write_image(&built.layout, &layers, &built.diff_ids, "odd");
    let o = run(t, &["--image", &format!("{l}:odd"), "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(125), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("application/x-unknown"),
        "{}",
        text(&o)
    );
    // A bad size and a missing layout are option errors.
    let o = run(t, &["--max-layer-size", "lots", "--image", &l]);
    assert_eq!(o.status.code(), Some(125), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--max-layer-size"),
        "{}",
        text(&o)
    );
    let o = run(t, &["--image", "/nonexistent/layout"]);
    assert_eq!(o.status.code(), Some(125), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("oci-layout"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_commit_that_cannot_happen_stops_the_run_before_the_command() {
    if !needs_root() {
        return;
    }
    let (tmp, _built, l) = setup("image-commit-target");
    let t = tmp.path();
    let plain = t.join("plain");
    fs::create_dir_all(&plain).unwrap();
    fs::write(plain.join("file"), "not a layout\n").unwrap();
    let targets = [
        // No tag.
        t.join("new").display().to_string(),
        // A dir with files that is not a layout.
        format!("{}:v2", plain.display()),
        // A missing dir in a missing dir.
        format!("{}:v2", t.join("no/such").display()),
    ];
    for target in &targets {
        let o = run(
            t,
            &[
                "--image",
                &format!("{l}:v1"),
                "--commit-image",
                target,
                "--",
                "/bin/sh",
                "-c",
                "echo ran",
            ],
        );
        assert_eq!(o.status.code(), Some(125), "{target}: {}", text(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "", "{target}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.starts_with("unionfs-run: --commit-image ") && err.lines().count() == 1,
            "{target}: {err}"
        );
    }
    assert!(!t.join("new").exists() && !t.join("no").exists());
    assert_eq!(fs::read_dir(&plain).unwrap().count(), 1);
}

/// The upper a failed commit kept, and the command it printed to commit it.
fn kept_upper_and_retry(o: &Output) -> (PathBuf, Vec<String>) {
    let err = String::from_utf8_lossy(&o.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("the commit failed"))
        .unwrap_or_else(|| panic!("no retry line: {}", text(o)));
    let (_, rest) = line.split_once("kept in ").unwrap();
    let (path, rest) = rest.split_once(": commit it by hand with `").unwrap();
    let cmd = rest
        .trim_end_matches('`')
        .split(' ')
        .map(String::from)
        .collect();
    (PathBuf::from(path), cmd)
}

#[test]
fn a_commit_that_fails_after_the_run_keeps_the_upper_and_its_retry_line_commits_it() {
    if !needs_root() {
        return;
    }
    let (tmp, _built, l) = setup("image-commit-fails");
    let t = tmp.path();
    // The command makes the target unwritable through a bind: a file where
    // the blobs dir goes.
    let out = t.join("out");
    fs::create_dir_all(&out).unwrap();
    let bind = format!("{}:/out", out.display());
    let target = format!("{}:v2", out.display());
    let o = run(
        t,
        &[
            "--image",
            &format!("{l}:v1"),
            "--bind",
            &bind,
            "--commit-image",
            &target,
            "--",
            "/bin/sh",
            "-c",
            "echo kept > /etc/kept; : > /out/blobs",
        ],
    );
    assert_eq!(o.status.code(), Some(125), "{}", text(&o));
    let (upper, cmd) = kept_upper_and_retry(&o);
    assert!(upper.starts_with(t.join("tmp")), "{}", upper.display());
    assert_eq!(
        fs::read_to_string(upper.join("etc/kept")).unwrap(),
        "kept\n"
    );
    assert_eq!(cmd[0], "unionfs-run");
    fs::remove_file(out.join("blobs")).unwrap();
    let retried = Command::new(RUN)
        .args(&cmd[1..])
        .env("TMPDIR", t.join("tmp"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    ok(retried);
    let shown = ok(run(t, &["--image", &target, "--", "/bin/cat", "/etc/kept"]));
    assert_eq!(shown, "kept\n");

    // --commit: the command removes the dir the layer goes to.
    let d = t.join("d");
    fs::create_dir_all(d.join("sub")).unwrap();
    let bind = format!("{}:/d", d.display());
    let file = d.join("sub/layer.tar");
    let o = run(
        t,
        &[
            "--commit",
            file.to_str().unwrap(),
            "--bind",
            &bind,
            "--image",
            &format!("{l}:v1"),
            "--",
            "/bin/sh",
            "-c",
            "echo kept2 > /etc/kept; rm -r /d/sub",
        ],
    );
    assert_eq!(o.status.code(), Some(125), "{}", text(&o));
    let (upper, cmd) = kept_upper_and_retry(&o);
    assert_eq!(
        fs::read_to_string(upper.join("etc/kept")).unwrap(),
        "kept2\n"
    );
    assert_eq!(cmd[1], "--export-layer");
    fs::create_dir(d.join("sub")).unwrap();
    let retried = Command::new(RUN).args(&cmd[1..]).output().unwrap();
    assert!(ok(retried).starts_with("sha256:"));
    assert!(file.is_file());
}

/// Polls until `found` holds (a step of a child in progress), then kills
/// the child with SIGKILL. Panics if the child ends first.
fn kill_when(child: &mut std::process::Child, found: impl Fn() -> bool) {
    loop {
        if found() {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the run ended ({st}) before the point to kill it");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn any_entry(dir: &Path, pred: impl Fn(&str) -> bool) -> bool {
    fs::read_dir(dir)
        .map(|r| r.flatten().any(|e| pred(&e.file_name().to_string_lossy())))
        .unwrap_or(false)
}

#[test]
fn a_sigkill_during_an_unpack_or_a_commit_leaves_the_store_and_the_old_tag_working() {
    if !needs_root() {
        return;
    }
    let (tmp, built, l) = setup("image-kill");
    let t = tmp.path();
    // A big layer (random), for time to kill; a plain tar, and the commit
    // below zstd, since gzip in a debug build takes minutes for 400 MB.
    let big = t.join("big");
    fs::create_dir_all(big.join("data")).unwrap();
    let st = Command::new("head")
        .args(["-c", "400M", "/dev/urandom"])
        .stdout(fs::File::create(big.join("data/blob")).unwrap())
        .status()
        .unwrap();
    assert!(st.success());
    let d3 = imagefix::export_layer(&big, &t.join("big.tar"));
    let l3 = imagefix::put_blob(
        &built.layout,
        imagefix::MT_TAR,
        &fs::read(t.join("big.tar")).unwrap(),
    );
    fs::remove_dir_all(&big).unwrap();
    fs::remove_file(t.join("big.tar")).unwrap();
    let mut layers = built.layers.clone();
    layers.push(l3);
    let mut ids = built.diff_ids.clone();
    ids.push(d3);
    imagefix::write_image(&built.layout, &layers, &ids, "big");
    let big_ref = format!("{l}:big");
    let spawn = |args: &[&str]| {
        Command::new(RUN)
            .arg("--store")
            .arg(t.join("store"))
            .args(args)
            .env("TMPDIR", t.join("tmp"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let tmp_dir = t.join("store/kernel/tmp");
    let hex3 = ids[2].trim_start_matches("sha256:").to_string();
    // Killed once its work dir holds some of the layer.
    let mut child = spawn(&["--image", &big_ref, "--", "/bin/true"]);
    kill_when(&mut child, || {
        fs::read_dir(&tmp_dir).is_ok_and(|r| {
            r.flatten().any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(&hex3) && !n.ends_with(".lock") && e.path().join("data").exists()
            })
        })
    });
    assert!(
        !t.join("store/kernel/layers").join(&hex3).exists(),
        "a killed unpack left a layer"
    );
    // The old tag runs; the big one runs and is complete; debris is gone.
    let v1 = format!("{l}:v1");
    assert_eq!(ok(run(t, &["--image", &v1])), "cmd-of-image\n");
    let out = ok(run(
        t,
        &["--image", &big_ref, "--", "/bin/ls", "-l", "/data/blob"],
    ));
    assert!(out.contains(" 419430400 "), "{out}");
    assert!(!any_entry(&tmp_dir, |_| true));

    // Killed while --commit-image writes the new layer blob (a 400 MB
    // change), into the tag it runs.
    let blobs = built.layout.join("blobs/sha256");
    let index_before = fs::read(built.layout.join("index.json")).unwrap();
    let mut child = spawn(&[
        "--image",
        &big_ref,
        "--commit-image",
        &big_ref,
        "--zstd",
        "--",
        "/bin/sh",
        "-c",
        "cat /data/blob > /data/copy",
    ]);
    kill_when(&mut child, || {
        fs::read_dir(&blobs).is_ok_and(|r| {
            r.flatten().any(|e| {
                e.file_name().to_string_lossy().starts_with(".tmp-")
                    && e.metadata().is_ok_and(|m| m.len() > 1 << 20)
            })
        })
    });
    assert_eq!(
        fs::read(built.layout.join("index.json")).unwrap(),
        index_before
    );
    assert_eq!(ok(run(t, &["--image", &v1])), "cmd-of-image\n");
    let out = ok(run(
        t,
        &["--image", &big_ref, "--", "/bin/sh", "-c", "ls /data"],
    ));
    assert_eq!(out, "blob\n");
    // The next commit works and sweeps the killed one's blob.
    ok(run(
        t,
        &[
            "--image",
            &v1,
            "--commit-image",
            &format!("{l}:v3"),
            "--",
            "/bin/sh",
            "-c",
            "echo 3 > /three",
        ],
    ));
    assert!(!any_entry(&blobs, |n| n.starts_with('.')));
    assert_eq!(
        ok(run(
            t,
            &["--image", &format!("{l}:v3"), "--", "/bin/cat", "/three"]
        )),
        "3\n"
    );
}

/// Makes /dev/fuse usable by other users while it lives (rootless FUSE).
struct FuseForAll(u32);

impl FuseForAll {
    fn new() -> FuseForAll {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata("/dev/fuse").unwrap().permissions().mode();
        fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o666)).unwrap();
        FuseForAll(mode)
    }
}

impl Drop for FuseForAll {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(self.0));
    }
}

/// As uid 1000 with a store, TMPDIR and commit target of its own: the
/// store is the rootless kind (user.overlay.* marks), the image's config
/// applies, and a commit runs.
#[test]
fn rootless_runs_and_commits_an_image() {
    if !needs_root() {
        return;
    }
    if !Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        panic!("the rootless image test needs setpriv (util-linux)");
    }
    let (tmp, _built, l) = setup("image-rootless");
    let t = tmp.path();
    let bin = t.join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy(RUN, bin.join("unionfs-run")).unwrap();
    fs::copy(env!("CARGO_BIN_EXE_unionfs-fuse"), bin.join("unionfs-fuse")).unwrap();
    for d in ["ustore", "utmp", "ulayout"] {
        fs::create_dir_all(t.join(d)).unwrap();
        std::os::unix::fs::chown(t.join(d), Some(1000), Some(1000)).unwrap();
    }
    let _fuse = FuseForAll::new();
    let user = |args: &[&str]| {
        let o = Command::new("setpriv")
            .args(["--reuid=1000", "--regid=1000", "--clear-groups"])
            .arg(bin.join("unionfs-run"))
            .arg("--store")
            .arg(t.join("ustore"))
            .args(args)
            .env("TMPDIR", t.join("utmp"))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        ok(o)
    };
    let script = "cat /etc/app /etc/hello; ls /etc/gone 2>/dev/null || echo gone-is-gone; pwd";
    let out = user(&["--image", &format!("{l}:v1"), "--", "/bin/sh", "-c", script]);
    assert_eq!(out, "app layer\nhi\ngone-is-gone\n/etc\n");
    assert!(t.join("ustore/userxattr/layers").is_dir());
    assert!(!t.join("ustore/kernel").exists());
    let target = format!("{}:mine", t.join("ulayout").display());
    user(&[
        "--image",
        &format!("{l}:v1"),
        "--commit-image",
        &target,
        "--",
        "/bin/sh",
        "-c",
        "echo rootless > /etc/mine; rm /etc/hello",
    ]);
    let check = "cat /etc/mine; cat /etc/hello 2>/dev/null || echo hello-gone";
    assert_eq!(
        user(&["--image", &target, "--", "/bin/sh", "-c", check]),
        "rootless\nhello-gone\n"
    );
    // Root reads the committed layout too (its own, kernel-kind store).
    assert_eq!(
        ok(run(t, &["--image", &target, "--", "/bin/sh", "-c", check])),
        "rootless\nhello-gone\n"
    );
}
