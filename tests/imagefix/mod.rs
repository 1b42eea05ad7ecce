//! An OCI image layout built inside a test, with no network: a tiny
//! rootfs (the host's sh, cat, ls, rm, true, id and their libraries)
//! exported as a gzip layer with `unionfs-run --export-layer`, an app
//! layer (a file, and a
//! whiteout of `etc/gone`) exported as a plain tar and compressed with
//! zstd(1), and config, manifest and index JSON written here.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use unionfs::oci::Digest;

pub const RUN: &str = env!("CARGO_BIN_EXE_unionfs-run");

pub const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MT_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// The base rootfs: sh, cat, ls, rm, true, id, their libraries, /etc files, and
/// the dirs an image has.
pub fn build_rootfs(root: &Path) {
    fs::create_dir_all(root).unwrap();
    // Each program with the libraries ldd names, at their host paths.
    let script = r#"for b in /bin/sh /bin/cat /bin/ls /bin/rm /bin/true /usr/bin/id; do
        cp -L --parents "$b" $(ldd "$b" | grep -o '/[^ ]*') "$0" || exit 1; done"#;
    let st = Command::new("sh")
        .args(["-c", script])
        .arg(root)
        .status()
        .unwrap();
    assert!(st.success(), "copying programs into {}", root.display());
    for dir in ["etc", "proc", "dev", "sys", "tmp", "root", "home/user"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(root.join("etc/hello"), "hi\n").unwrap();
    fs::write(root.join("etc/gone"), "gone\n").unwrap();
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
    )
    .unwrap();
    fs::write(root.join("etc/group"), "root:x:0:\nuser:x:1000:\n").unwrap();
}

/// Runs `unionfs-run --export-layer DIR FILE` and returns the diff_id.
pub fn export_layer(dir: &Path, file: &Path) -> String {
    let out = Command::new(RUN)
        .arg("--export-layer")
        .arg(dir)
        .arg(file)
        .args(["--mtime", "0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An image layout in `dir` with tag `v1`.
pub struct Built {
    pub layout: PathBuf,
    pub diff_ids: Vec<String>,
    /// The descriptors of the two layers, as in the manifest.
    pub layers: Vec<Value>,
}

/// Stores `data` as a blob; returns its descriptor.
pub fn put_blob(layout: &Path, media_type: &str, data: &[u8]) -> Value {
    let d = Digest::of(data);
    fs::write(layout.join("blobs/sha256").join(d.hex()), data).unwrap();
    json!({"mediaType": media_type, "digest": d.to_string(), "size": data.len()})
}

pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

/// Writes config and manifest for `layers` (descriptors) with `diff_ids`,
/// and tags it `tag` in index.json (the other tags stay).
pub fn write_image(layout: &Path, layers: &[Value], diff_ids: &[String], tag: &str) -> Value {
    let config = json!({
        "architecture": host_arch(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/bin:/bin", "GREETING=from-image"],
            "Cmd": ["/bin/sh", "-c", "echo cmd-of-image"],
            "WorkingDir": "/etc",
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": diff_ids.iter().map(|_| json!({"created_by": "test"})).collect::<Vec<_>>(),
    });
    let config = put_blob(layout, MT_CONFIG, &serde_json::to_vec(&config).unwrap());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": config,
        "layers": layers,
    });
    let mut desc = put_blob(layout, MT_MANIFEST, &serde_json::to_vec(&manifest).unwrap());
    desc["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    let mut manifests: Vec<Value> = fs::read(layout.join("index.json"))
        .ok()
        .and_then(|t| serde_json::from_slice::<Value>(&t).ok())
        .and_then(|v| v["manifests"].as_array().cloned())
        .unwrap_or_default();
    manifests.retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != tag);
    manifests.push(desc.clone());
    let index = json!({"schemaVersion": 2, "manifests": manifests});
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    desc
}

/// Builds the two-layer layout `work/layout` (scratch dirs under `work`).
pub fn build(work: &Path) -> Built {
    let base = work.join("base");
    build_rootfs(&base);
    let app = work.join("app");
    fs::create_dir_all(app.join("etc")).unwrap();
    fs::write(app.join("etc/app"), "app layer\n").unwrap();
    let st = Command::new("mknod")
        .arg(app.join("etc/gone"))
        .args(["c", "0", "0"])
        .status()
        .unwrap();
    assert!(st.success());
    let layout = work.join("layout");
    fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let d1 = export_layer(&base, &work.join("base.tar.gz"));
    let d2 = export_layer(&app, &work.join("app.tar"));
    let zst = Command::new("zstd")
        .args(["-3", "-q", "-c"])
        .arg(work.join("app.tar"))
        .output()
        .expect("zstd(1)");
    assert!(zst.status.success());
    let l1 = put_blob(
        &layout,
        MT_GZIP,
        &fs::read(work.join("base.tar.gz")).unwrap(),
    );
    let l2 = put_blob(&layout, MT_ZSTD, &zst.stdout);
    let layers = vec![l1, l2];
    let diff_ids = vec![d1, d2];
    write_image(&layout, &layers, &diff_ids, "v1");
    Built {
        layout,
        diff_ids,
        layers,
    }
}
