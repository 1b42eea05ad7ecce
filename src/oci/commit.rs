//! Commit: a run's upper dir becomes a new image in an OCI layout.
//!
//! Order, so that a crash at any point leaves every old tag intact: the
//! base image's layer blobs (copied when the target is another layout),
//! the new layer blob, the config, the manifest (each under a temporary
//! name, renamed to its digest), and last `index.json`, replaced by
//! rename.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::layout::{
    descriptor, io_err, layer_compression, layer_media_type, Descriptor, Image, ImageError, Layout,
    Manifest, MT_OCI_CONFIG, MT_OCI_MANIFEST,
};
use super::sha256::HashReader;
use super::{Compression, ExportOptions, LayerDigests, MtimePolicy};

/// How to write the commit.
#[derive(Clone, Debug, Default)]
pub struct CommitOptions {
    pub compression: Compression,
    /// The upper uses `user.overlay.*` xattrs.
    pub userxattr: bool,
    /// Paths of the upper left out (the run's mount points).
    pub exclude: Vec<PathBuf>,
    pub mtime: MtimePolicy,
    /// Seconds since the epoch, for the config's `created` and history.
    pub created: i64,
    /// The history entry's `created_by`.
    pub created_by: String,
}

/// What [`commit`] wrote.
#[derive(Clone, Debug)]
pub struct Committed {
    pub manifest: Descriptor,
    pub layer: LayerDigests,
}

/// Writes `upper` as a layer on top of `base` (read from `base_layout`)
/// into `target` under `tag`.
pub fn commit(
    base_layout: &Layout,
    base: &Image,
    upper: &Path,
    target: &Layout,
    tag: &str,
    opts: &CommitOptions,
) -> Result<Committed, ImageError> {
    let mut layers = Vec::new();
    for l in &base.layers {
        copy_blob(base_layout, target, &l.blob)?;
        let mut d = l.blob.clone();
        // A Docker layer type names the same bytes as its OCI twin; an OCI
        // manifest must use the OCI names.
        d.media_type = layer_media_type(layer_compression(&d.media_type)?);
        layers.push(d);
    }
    let export = ExportOptions {
        userxattr: opts.userxattr,
        mtime: opts.mtime,
        compression: opts.compression,
        exclude: opts.exclude.clone(),
    };
    let (digest, size, layer) =
        target.write_blob_with(|w| super::export(upper, w, &export).map_err(ImageError::Layer))?;
    layers.push(descriptor(
        &layer_media_type(opts.compression),
        &digest,
        size,
    ));

    let config = new_config(&base.config, &layer, opts)?;
    let config_bytes = serde_json::to_vec(&config)
        .map_err(|e| ImageError::Invalid(format!("encoding the config: {e}")))?;
    let config_desc = target.write_blob(MT_OCI_CONFIG, &config_bytes)?;

    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MT_OCI_MANIFEST.into()),
        config: config_desc,
        layers,
        extra: Default::default(),
    };
    let manifest_bytes = serde_json::to_vec(&manifest)
        .map_err(|e| ImageError::Invalid(format!("encoding the manifest: {e}")))?;
    let mut manifest_desc = target.write_blob(MT_OCI_MANIFEST, &manifest_bytes)?;
    if let Some(p) = base.manifest_desc.platform.clone() {
        manifest_desc.platform = Some(p);
    }
    target.set_tag(tag, &manifest_desc)?;
    Ok(Committed {
        manifest: manifest_desc,
        layer,
    })
}

/// The base config with the new layer: its diff_id appended to
/// `rootfs.diff_ids`, a history entry, and a new `created`.
fn new_config(
    base: &Value,
    layer: &LayerDigests,
    opts: &CommitOptions,
) -> Result<Value, ImageError> {
    let mut config = if base.is_object() {
        base.clone()
    } else {
        json!({})
    };
    let bad = || ImageError::Invalid("the base config is not a JSON object".into());
    let created = rfc3339(opts.created);
    let obj = config.as_object_mut().ok_or_else(bad)?;
    obj.insert("created".into(), json!(created));
    let rootfs = obj
        .entry("rootfs")
        .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
    let ids = rootfs
        .as_object_mut()
        .ok_or_else(bad)?
        .entry("diff_ids")
        .or_insert_with(|| json!([]));
    ids.as_array_mut()
        .ok_or_else(bad)?
        .push(json!(layer.diff_id.to_string()));
    let history = obj.entry("history").or_insert_with(|| json!([]));
    history.as_array_mut().ok_or_else(bad)?.push(json!({
        "created": created,
        "created_by": opts.created_by,
        "comment": "unionfs-run --commit-image",
    }));
    Ok(config)
}

/// Copies a blob of `from` into `to` (a hard link when they share a
/// filesystem), checking its digest; a no-op when `to` has it.
fn copy_blob(from: &Layout, to: &Layout, desc: &Descriptor) -> Result<(), ImageError> {
    let (src, digest) = from.open_blob(desc)?;
    let dst = to.blob_path(&digest);
    if dst.exists() {
        return Ok(());
    }
    if fs::hard_link(from.blob_path(&digest), &dst).is_ok() {
        return Ok(());
    }
    let (got, _, ()) = to.write_blob_with(|w| {
        let mut r = HashReader::new(io::BufReader::new(src));
        // Named after the target: writing it (disk full) is what fails.
        io::copy(&mut r, w).map_err(io_err(&dst))?;
        let (d, _, _) = r.finish();
        if d != digest {
            return Err(ImageError::Digest {
                digest: desc.digest.clone(),
                reason: format!("content has digest {d} (corrupted blob)"),
            });
        }
        Ok(())
    })?;
    debug_assert_eq!(got, digest);
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SSZ` of seconds since the epoch (UTC).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (proleptic Gregorian), after H. Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn the_new_config_appends_the_diff_id_and_history_and_keeps_the_rest() {
        let base = json!({"architecture": "amd64", "os": "linux", "config": {"Env": ["A=1"]},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:aa"]}, "history": [{}]});
        let layer = LayerDigests {
            diff_id: super::super::Digest([1; 32]),
            digest: super::super::Digest([2; 32]),
            size: 1,
            tar_size: 1,
            compression: Compression::Gzip,
        };
        let opts = CommitOptions {
            created: 0,
            created_by: "sh -c x".into(),
            ..Default::default()
        };
        let c = new_config(&base, &layer, &opts).unwrap();
        assert_eq!(c["rootfs"]["diff_ids"][1], json!(layer.diff_id.to_string()));
        assert_eq!(c["history"][1]["created_by"], json!("sh -c x"));
        assert_eq!(c["config"]["Env"][0], json!("A=1"));
        assert_eq!(c["created"], json!("1970-01-01T00:00:00Z"));
        let empty = new_config(&Value::Null, &layer, &opts).unwrap();
        assert_eq!(empty["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
    }
}
