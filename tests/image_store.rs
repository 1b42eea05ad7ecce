//! The image library (`unionfs::oci::{layout, store, commit}`) on a layout
//! built in the test: resolving tags, unpacking into the layer store,
//! refusing bad input with nothing kept, committing a new tag, store
//! upkeep. The launcher's `--image` is tested in tests/image.rs.

mod common;
mod imagefix;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::*;
use serde_json::json;
use unionfs::oci::commit::{commit, CommitOptions};
use unionfs::oci::layout::{ImageError, Layout};
use unionfs::oci::store::Store;
use unionfs::oci::{Compression, LayerError};

fn needs_root() -> bool {
    environment_ok(Impl::Kernel)
}

/// Names in `dir`, sorted (empty if it does not exist).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn is_whiteout(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

#[test]
fn a_tagged_image_resolves_and_its_layers_are_unpacked_once_in_kernel_format() {
    if !needs_root() {
        return;
    }
    let tmp = TempDir::new("image-store");
    let built = imagefix::build(tmp.path());
    let layout = Layout::open(&built.layout).unwrap();
    let image = layout.image(Some("v1")).unwrap();
    assert_eq!(image.layers.len(), 2);
    assert_eq!(image.layers[0].compression, Compression::Gzip);
    assert_eq!(image.layers[1].compression, Compression::Zstd);
    assert_eq!(image.run.working_dir.as_deref(), Some("/etc"));
    // The only image also resolves without a tag; a wrong tag names v1.
    assert_eq!(
        layout.image(None).unwrap().manifest_desc,
        image.manifest_desc
    );
    let e = layout.image(Some("nope")).unwrap_err().to_string();
    assert!(e.contains("\"nope\"") && e.contains("v1"), "{e}");

    let store = Store::open(&tmp.path().join("store"), false).unwrap();
    let lowers = store.lowers(&layout, &image, u64::MAX).unwrap();
    assert_eq!(lowers.len(), 2);
    // Top first: the app layer, with its whiteout as a char 0/0.
    assert!(lowers[0].ends_with(image.layers[1].diff_id.hex()));
    assert_eq!(
        fs::read_to_string(lowers[0].join("etc/app")).unwrap(),
        "app layer\n"
    );
    assert!(is_whiteout(&lowers[0].join("etc/gone")));
    assert_eq!(
        fs::read_to_string(lowers[1].join("etc/hello")).unwrap(),
        "hi\n"
    );
    assert!(
        names(&store.dir.join("tmp")).is_empty(),
        "{:?}",
        names(&store.dir.join("tmp"))
    );
    // A second run reuses them (same inode).
    let ino = fs::metadata(&lowers[0]).unwrap().ino();
    let again = store.lowers(&layout, &image, u64::MAX).unwrap();
    assert_eq!(fs::metadata(&again[0]).unwrap().ino(), ino);
}

#[test]
fn two_unpacks_of_the_same_layer_at_once_leave_one_complete_copy() {
    if !needs_root() {
        return;
    }
    let tmp = TempDir::new("image-race");
    let built = imagefix::build(tmp.path());
    let dir = tmp.path().join("store");
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let layout = Layout::open(&built.layout).unwrap();
                    let image = layout.image(Some("v1")).unwrap();
                    let store = Store::open(&dir, false).unwrap();
                    store.lowers(&layout, &image, u64::MAX)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &results {
        let lowers = r.as_ref().unwrap();
        assert_eq!(
            fs::read_to_string(lowers[0].join("etc/app")).unwrap(),
            "app layer\n"
        );
    }
    let store = Store::open(&dir, false).unwrap();
    assert_eq!(names(&store.dir.join("layers")).len(), 2);
    assert!(names(&store.dir.join("tmp")).is_empty());
}

#[test]
fn debris_of_a_killed_unpack_is_never_taken_for_a_layer_and_is_swept() {
    if !needs_root() {
        return;
    }
    let tmp = TempDir::new("image-debris");
    let built = imagefix::build(tmp.path());
    let layout = Layout::open(&built.layout).unwrap();
    let image = layout.image(Some("v1")).unwrap();
    let store = Store::open(&tmp.path().join("store"), false).unwrap();
    // What a SIGKILL in the middle leaves: a half-filled work dir and its
    // lock file, locked by nobody.
    let hex = image.layers[0].diff_id.hex();
    let work = store.dir.join("tmp").join(format!("{hex}.999999.0"));
    fs::create_dir_all(work.join("etc")).unwrap();
    fs::write(work.join("etc/half"), "x").unwrap();
    fs::write(
        store.dir.join("tmp").join(format!("{hex}.999999.0.lock")),
        "",
    )
    .unwrap();
    let lowers = store.lowers(&layout, &image, u64::MAX).unwrap();
    assert!(!lowers[1].join("etc/half").exists());
    assert!(lowers[1].join("etc/hello").exists());
    assert!(
        names(&store.dir.join("tmp")).is_empty(),
        "{:?}",
        names(&store.dir.join("tmp"))
    );
}

/// Writes a variant of the image whose layer `i` is `blob` (with media
/// type `mt`), tagged `bad`, and returns the error of storing its layers.
fn store_error(tmp: &Path, built: &imagefix::Built, i: usize, mt: &str, blob: &[u8]) -> ImageError {
    let mut layers = built.layers.clone();
    layers[i] = imagefix::put_blob(&built.layout, mt, blob);
    imagefix::write_image(&built.layout, &layers, &built.diff_ids, "bad");
    let store_dir = tmp.join("store");
    let before = names(tmp);
    let layers_dir = Store::open(&store_dir, false).unwrap().dir.join("layers");
    let mut allowed = names(&layers_dir);
    for (j, d) in built.diff_ids.iter().enumerate() {
        if j != i {
            allowed.push(d.trim_start_matches("sha256:").to_string());
        }
    }
    let e = Layout::open(&built.layout)
        .and_then(|l| {
            let image = l.image(Some("bad"))?;
            Store::open(&store_dir, false)?.lowers(&l, &image, 64 << 20)
        })
        .unwrap_err();
    // Nothing kept: no new layer but the good ones of the image, no temp
    // dir, and nothing new beside the store.
    let store = Store::open(&store_dir, false).unwrap();
    let kept = names(&layers_dir);
    assert!(kept.iter().all(|k| allowed.contains(k)), "{kept:?}");
    assert!(names(&store.dir.join("tmp")).is_empty());
    let mut after = names(tmp);
    after.retain(|n| n != "store");
    let mut before = before;
    before.retain(|n| n != "store");
    assert_eq!(before, after);
    e
}

#[test]
fn bad_blobs_are_clear_errors_and_nothing_is_kept() {
    if !needs_root() {
        return;
    }
    let tmp = TempDir::new("image-bad");
    let built = imagefix::build(tmp.path());
    let gz = fs::read(tmp.path().join("base.tar.gz")).unwrap();

    // A corrupted blob: right size, one byte changed, same descriptor digest.
    let mut layers = built.layers.clone();
    let desc = layers[0].clone();
    let path = built
        .layout
        .join("blobs/sha256")
        .join(&desc["digest"].as_str().unwrap()[7..]);
    let mut bytes = gz.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&path, &bytes).unwrap();
    let image = Layout::open(&built.layout)
        .unwrap()
        .image(Some("v1"))
        .unwrap();
    let store = Store::open(&tmp.path().join("store"), false).unwrap();
    let e = store
        .lowers(&Layout::open(&built.layout).unwrap(), &image, u64::MAX)
        .unwrap_err();
    assert!(
        matches!(
            &e,
            ImageError::Digest { .. }
                | ImageError::InLayer {
                    err: LayerError::Read(_),
                    ..
                }
        ),
        "{e}"
    );
    assert!(names(&store.dir.join("tmp")).is_empty());
    assert!(!store.layer_dir(&image.layers[0].diff_id).exists());
    fs::write(&path, &gz).unwrap();

    // A truncated gzip.
    let e = store_error(
        tmp.path(),
        &built,
        0,
        imagefix::MT_GZIP,
        &gz[..gz.len() - 100],
    );
    assert!(e.to_string().contains("reading the layer"), "{e}");

    // A zstd bomb: 256 MiB of zeros in a few kB, past a 64 MiB cap.
    let mut z = zstd_of(&vec![0u8; 256 << 20]);
    assert!(z.len() < 64 << 10);
    let e = store_error(tmp.path(), &built, 1, imagefix::MT_ZSTD, &z);
    assert!(
        matches!(
            e,
            ImageError::InLayer {
                err: LayerError::TooLarge(_),
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("--max-layer-size"), "{e}");
    z.clear();

    // A media type it does not know, and a foreign layer.
    let e = store_error(tmp.path(), &built, 0, "application/x-rar", &gz);
    assert!(e.to_string().contains("application/x-rar"), "{e}");
    let foreign = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    let e = store_error(tmp.path(), &built, 0, foreign, &gz);
    assert!(
        e.to_string().contains(foreign) && e.to_string().contains("foreign"),
        "{e}"
    );

    // A tar with `..` entries (python's tarfile writes what GNU tar won't).
    let evil = tmp.path().join("evil.tar");
    let py = format!(
        "import tarfile, io\nt = tarfile.open('{}', 'w')\nfor n in ['ok', '../escaped', 'a/../../x']:\n    i = tarfile.TarInfo(n); d = b'x'; i.size = 1\n    t.addfile(i, io.BytesIO(d))\nt.close()\n",
        evil.display()
    );
    let st = std::process::Command::new("python3")
        .args(["-c", &py])
        .status()
        .unwrap();
    assert!(st.success());
    let e = store_error(
        tmp.path(),
        &built,
        1,
        "application/vnd.oci.image.layer.v1.tar",
        &fs::read(&evil).unwrap(),
    );
    assert!(e.to_string().contains("`..`"), "{e}");
    assert!(!tmp.path().join("escaped").exists() && !tmp.path().join("x").exists());

    // A manifest naming a missing blob.
    let mut gone = built.layers[1].clone();
    gone["digest"] = json!(format!("sha256:{}", "0".repeat(64)));
    layers[1] = gone;
    imagefix::write_image(&built.layout, &layers, &built.diff_ids, "missing");
    let l = Layout::open(&built.layout).unwrap();
    let image = l.image(Some("missing")).unwrap();
    let e = store.lowers(&l, &image, u64::MAX).unwrap_err().to_string();
    assert!(e.contains("missing from the layout"), "{e}");
}

fn zstd_of(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = unionfs::oci::compress::Encoder::new(Vec::new(), Compression::Zstd).unwrap();
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn commit_adds_a_tag_with_one_more_layer_and_keeps_the_old_tag() {
    if !needs_root() {
        return;
    }
    let tmp = TempDir::new("image-commit");
    let built = imagefix::build(tmp.path());
    let layout = Layout::open(&built.layout).unwrap();
    let base = layout.image(Some("v1")).unwrap();
    let upper = tmp.path().join("upper");
    fs::create_dir_all(upper.join("etc")).unwrap();
    fs::write(upper.join("etc/committed"), "yes\n").unwrap();
    let st = std::process::Command::new("mknod")
        .arg(upper.join("etc/hello"))
        .args(["c", "0", "0"])
        .status()
        .unwrap();
    assert!(st.success());
    for (target, compression) in [
        (built.layout.clone(), Compression::Gzip),
        (tmp.path().join("other"), Compression::Zstd),
    ] {
        let opts = CommitOptions {
            compression,
            created: 1_700_000_000,
            created_by: "test commit".into(),
            ..Default::default()
        };
        let out = Layout::open_or_create(&target).unwrap();
        commit(&layout, &base, &upper, &out, "v2", &opts).unwrap();
        let v2 = out.image(Some("v2")).unwrap();
        assert_eq!(v2.layers.len(), 3);
        assert_eq!(v2.layers[2].compression, compression);
        assert_eq!(v2.run, base.run, "the run config is kept");
        let history = v2.config["history"].as_array().unwrap();
        assert_eq!(history.last().unwrap()["created_by"], json!("test commit"));
        let store = Store::open(&tmp.path().join("store"), false).unwrap();
        let lowers = store.lowers(&out, &v2, u64::MAX).unwrap();
        assert_eq!(
            fs::read_to_string(lowers[0].join("etc/committed")).unwrap(),
            "yes\n"
        );
        assert!(is_whiteout(&lowers[0].join("etc/hello")));
        // No temporary files are left in the layout.
        let blobs = names(&target.join("blobs/sha256"));
        assert!(blobs.iter().all(|b| !b.starts_with('.')), "{blobs:?}");
        assert!(names(&target).iter().all(|n| !n.starts_with('.')));
    }
    // The old tag is untouched; the same layout now lists both.
    let again = Layout::open(&built.layout).unwrap();
    assert_eq!(
        again.image(Some("v1")).unwrap().manifest_desc.digest,
        base.manifest_desc.digest
    );
    let tags: Vec<String> = again.tags().unwrap().into_iter().map(|(t, _)| t).collect();
    assert_eq!(tags, ["v1", "v2"]);
    let e = again.image(None).unwrap_err().to_string();
    assert!(e.contains("v1, v2"), "{e}");
}

#[test]
fn store_ls_names_the_images_and_prune_removes_only_unused_layers() {
    if !needs_root() {
        return;
    }
    let tmp = TempDir::new("image-prune");
    let built = imagefix::build(tmp.path());
    let layout = Layout::open(&built.layout).unwrap();
    let image = layout.image(Some("v1")).unwrap();
    let store = Store::open(&tmp.path().join("store"), false).unwrap();
    store.lowers(&layout, &image, u64::MAX).unwrap();
    store.record_use(&layout, Some("v1"), &image).unwrap();
    // A stray layer no image uses.
    let stray = "ab".repeat(32);
    fs::create_dir_all(store.dir.join("layers").join(&stray).join("x")).unwrap();
    let ls = store.list().unwrap();
    assert_eq!(ls.len(), 3);
    for l in &ls {
        if l.diff_id.hex() == stray {
            assert!(l.users.is_empty());
        } else {
            assert!(l.bytes > 0);
            assert_eq!(l.users.len(), 1);
            assert!(l.users[0].ends_with("layout:v1"), "{:?}", l.users);
        }
    }
    let removed = store.prune().unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].hex(), stray);
    assert_eq!(store.list().unwrap().len(), 2);
    // Once the layout is gone, its layers go too.
    fs::remove_dir_all(&built.layout).unwrap();
    assert_eq!(store.prune().unwrap().len(), 2);
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn root_and_rootless_stores_are_kept_apart() {
    if !needs_root() {
        return;
    }
    let tmp = TempDir::new("image-modes");
    let built = imagefix::build(tmp.path());
    let layout = Layout::open(&built.layout).unwrap();
    let image = layout.image(Some("v1")).unwrap();
    let dir = tmp.path().join("store");
    let kernel = Store::open(&dir, false)
        .unwrap()
        .lowers(&layout, &image, u64::MAX)
        .unwrap();
    let user = Store::open(&dir, true)
        .unwrap()
        .lowers(&layout, &image, u64::MAX)
        .unwrap();
    assert_ne!(kernel[0], user[0]);
    assert!(kernel[0].starts_with(dir.join("kernel")));
    assert!(user[0].starts_with(dir.join("userxattr")));
}
