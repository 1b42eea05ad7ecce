//! OCI image layouts (image-spec `image-layout.md`): `oci-layout`,
//! `index.json`, and content-addressed `blobs/sha256/<hex>`.
//!
//! Reading resolves `DIR[:TAG]` to one image: TAG is matched against the
//! `org.opencontainers.image.ref.name` annotation of `index.json`'s
//! entries; without TAG the index must hold exactly one. An image index
//! (multi-platform) picks the host's platform. Every blob is checked
//! against its descriptor's size and digest while it is read; a JSON blob
//! is refused before it is parsed if it does not match.
//!
//! Writing puts each blob under a temporary name in `blobs/sha256/` and
//! renames it to its digest once complete; `index.json` is replaced last,
//! also by rename, so a crash leaves the old index (and every old tag).
//!
//! The JSON types are our own small serde structs (not `oci-spec`): we need
//! a handful of fields, and unknown fields of a manifest, index or config
//! must survive a commit unchanged, which `#[serde(flatten)]` maps and a
//! raw `serde_json::Value` for the config give us directly.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::compress::Compression;
use super::sha256::{Digest, HashReader, HashWriter};

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The largest JSON blob read (manifests, indexes, configs are kilobytes).
const MAX_JSON: u64 = 16 << 20;

/// Why an image could not be read or written.
#[derive(Debug)]
pub enum ImageError {
    /// A file of the layout could not be read or written.
    Io { path: PathBuf, err: io::Error },
    /// The layout is not a valid OCI layout, or a blob is malformed.
    Invalid(String),
    /// A tag (or the lack of one) does not name exactly one image.
    NoImage(String),
    /// A blob's bytes do not match its descriptor.
    Digest { digest: String, reason: String },
    /// A media type this tool does not read.
    MediaType(String),
    /// A layer could not be exported or unpacked.
    Layer(super::LayerError),
    /// A layer blob of the image could not be unpacked (its digest, so
    /// the message says which of the layers).
    InLayer {
        digest: String,
        err: super::LayerError,
    },
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::Io { path, err } => write!(f, "{}: {err}", path.display()),
            ImageError::Invalid(m) => write!(f, "invalid image: {m}"),
            ImageError::NoImage(m) => write!(f, "{m}"),
            ImageError::Digest { digest, reason } => write!(f, "blob {digest}: {reason}"),
            ImageError::MediaType(m) => write!(f, "{m}"),
            ImageError::Layer(e) => write!(f, "{e}"),
            ImageError::InLayer { digest, err } => write!(f, "layer {digest}: {err}"),
        }
    }
}

impl std::error::Error for ImageError {}

pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |err| ImageError::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// A content descriptor; fields we do not use are kept in `extra`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `index.json`, or an image index blob.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An image manifest (OCI, or Docker schema 2, which has the same shape).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The parts of an image config a run uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunConfig {
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// One layer of an image, in order from the bottom.
#[derive(Clone, Debug)]
pub struct LayerRef {
    pub blob: Descriptor,
    pub digest: Digest,
    pub diff_id: Digest,
    pub compression: Compression,
}

/// An image resolved from a layout.
#[derive(Clone, Debug)]
pub struct Image {
    /// The manifest's descriptor (from `index.json` or an image index).
    pub manifest_desc: Descriptor,
    pub manifest: Manifest,
    /// The config as read, so a commit keeps every field it does not know.
    pub config: Value,
    pub run: RunConfig,
    /// Bottom layer first, as in the manifest.
    pub layers: Vec<LayerRef>,
}

/// The compression of a layer media type; foreign (non-distributable)
/// layers and unknown types are errors naming the type.
pub fn layer_compression(media_type: &str) -> Result<Compression, ImageError> {
    let c = match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Compression::Gzip,
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Compression::Zstd,
        t if t.contains("nondistributable") || t.contains("foreign") => {
            return Err(ImageError::MediaType(format!(
                "layer media type {t}: foreign (non-distributable) layers are not supported; \
                 their content is not in the layout"
            )))
        }
        t => {
            return Err(ImageError::MediaType(format!(
                "unknown layer media type {t:?} (known: OCI tar, tar+gzip, tar+zstd and the \
                 Docker equivalents)"
            )))
        }
    };
    Ok(c)
}

/// The OCI media type of a layer blob with this compression.
pub fn layer_media_type(c: Compression) -> String {
    format!("application/vnd.oci.image.layer.v1.{}", c.media_suffix())
}

/// The host's platform in OCI terms (GOARCH names).
pub fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    };
    ("linux", arch)
}

/// An OCI image layout on disk.
#[derive(Clone, Debug)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    /// Opens an existing layout (checks `oci-layout`).
    pub fn open(dir: &Path) -> Result<Layout, ImageError> {
        let marker = dir.join("oci-layout");
        let text = fs::read(&marker).map_err(io_err(&marker))?;
        let v: Value = serde_json::from_slice(&text)
            .map_err(|e| ImageError::Invalid(format!("{}: {e}", marker.display())))?;
        if v.get("imageLayoutVersion").and_then(Value::as_str) != Some("1.0.0") {
            return Err(ImageError::Invalid(format!(
                "{}: imageLayoutVersion is not \"1.0.0\"",
                marker.display()
            )));
        }
        Ok(Layout {
            dir: dir.to_path_buf(),
        })
    }

    /// Opens a layout, creating an empty one if `dir` does not exist or
    /// is an empty dir.
    pub fn open_or_create(dir: &Path) -> Result<Layout, ImageError> {
        let empty = match fs::read_dir(dir) {
            Ok(mut r) => r.next().is_none(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(dir).map_err(io_err(dir))?;
                true
            }
            Err(e) => return Err(io_err(dir)(e)),
        };
        if !empty {
            return Layout::open(dir);
        }
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
        let layout = Layout {
            dir: dir.to_path_buf(),
        };
        layout.replace_file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let index = Index {
            schema_version: 2,
            media_type: Some(MT_OCI_INDEX.into()),
            manifests: Vec::new(),
            extra: Map::new(),
        };
        layout.write_index(&index)?;
        Ok(layout)
    }

    /// Where a blob lives (the digest's hex is checked by parsing).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.hex())
    }

    /// Opens the blob of `desc`, refusing a digest in another form or a
    /// file of another size.
    pub fn open_blob(&self, desc: &Descriptor) -> Result<(fs::File, Digest), ImageError> {
        let digest = Digest::parse(&desc.digest).ok_or_else(|| ImageError::Digest {
            digest: desc.digest.clone(),
            reason: "not a sha256:<64 lowercase hex> digest".into(),
        })?;
        let path = self.blob_path(&digest);
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|err| match err.kind() {
                io::ErrorKind::NotFound => ImageError::Digest {
                    digest: desc.digest.clone(),
                    reason: format!(
                        "missing from the layout ({} does not exist)",
                        path.display()
                    ),
                },
                _ => io_err(&path)(err),
            })?;
        let len = file.metadata().map_err(io_err(&path))?.len();
        if len != desc.size {
            return Err(ImageError::Digest {
                digest: desc.digest.clone(),
                reason: format!("is {len} bytes, the descriptor says {}", desc.size),
            });
        }
        Ok((file, digest))
    }

    /// Reads a small blob whole and checks its digest.
    pub fn read_blob(&self, desc: &Descriptor) -> Result<Vec<u8>, ImageError> {
        if desc.size > MAX_JSON {
            return Err(ImageError::Invalid(format!(
                "blob {} is {} bytes, too large for a manifest or config",
                desc.digest, desc.size
            )));
        }
        let (file, digest) = self.open_blob(desc)?;
        let mut r = HashReader::new(file.take(MAX_JSON));
        let mut data = Vec::new();
        r.read_to_end(&mut data)
            .map_err(io_err(&self.blob_path(&digest)))?;
        let (got, _, _) = r.finish();
        if got != digest {
            return Err(ImageError::Digest {
                digest: desc.digest.clone(),
                reason: format!("content has digest {got} (corrupted blob)"),
            });
        }
        Ok(data)
    }

    fn read_json<T: for<'de> Deserialize<'de>>(&self, desc: &Descriptor) -> Result<T, ImageError> {
        let data = self.read_blob(desc)?;
        serde_json::from_slice(&data)
            .map_err(|e| ImageError::Invalid(format!("blob {}: {e}", desc.digest)))
    }

    pub fn read_index(&self) -> Result<Index, ImageError> {
        let path = self.dir.join("index.json");
        let data = fs::read(&path).map_err(io_err(&path))?;
        serde_json::from_slice(&data)
            .map_err(|e| ImageError::Invalid(format!("{}: {e}", path.display())))
    }

    /// Resolves `tag` (or the only image) to an image.
    pub fn image(&self, tag: Option<&str>) -> Result<Image, ImageError> {
        let index = self.read_index()?;
        let desc = pick_tagged(&index, tag, &self.dir)?;
        self.image_from(desc)
    }

    /// Every tagged entry of `index.json`: (ref name, descriptor).
    pub fn tags(&self) -> Result<Vec<(String, Descriptor)>, ImageError> {
        Ok(self
            .read_index()?
            .manifests
            .into_iter()
            .filter_map(|d| d.annotations.get(REF_NAME).cloned().map(|t| (t, d)))
            .collect())
    }

    fn image_from(&self, mut desc: Descriptor) -> Result<Image, ImageError> {
        // Nested indexes are followed a few levels, never in a loop.
        for _ in 0..4 {
            match desc.media_type.as_str() {
                MT_OCI_INDEX | MT_DOCKER_LIST => {
                    let index: Index = self.read_json(&desc)?;
                    desc = pick_platform(&index, &desc.digest)?;
                }
                MT_OCI_MANIFEST | MT_DOCKER_MANIFEST => return self.manifest_image(desc),
                t => {
                    return Err(ImageError::MediaType(format!(
                        "manifest {}: unknown media type {t:?}",
                        desc.digest
                    )))
                }
            }
        }
        Err(ImageError::Invalid("image indexes nested too deep".into()))
    }

    fn manifest_image(&self, desc: Descriptor) -> Result<Image, ImageError> {
        let manifest: Manifest = self.read_json(&desc)?;
        let config: Value = self.read_json(&manifest.config)?;
        let diff_ids: Vec<&str> = config
            .pointer("/rootfs/diff_ids")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::Invalid(format!(
                "config {} lists {} diff_ids for {} layers",
                manifest.config.digest,
                diff_ids.len(),
                manifest.layers.len()
            )));
        }
        let mut layers = Vec::new();
        for (blob, diff_id) in manifest.layers.iter().zip(diff_ids) {
            let compression = layer_compression(&blob.media_type)?;
            let bad = |what: &str, d: &str| ImageError::Digest {
                digest: d.to_string(),
                reason: format!("not a sha256 {what}"),
            };
            layers.push(LayerRef {
                digest: Digest::parse(&blob.digest).ok_or_else(|| bad("digest", &blob.digest))?,
                diff_id: Digest::parse(diff_id).ok_or_else(|| bad("diff_id", diff_id))?,
                blob: blob.clone(),
                compression,
            });
        }
        Ok(Image {
            manifest_desc: desc,
            run: run_config(&config),
            manifest,
            config,
            layers,
        })
    }

    /// Writes `data` as a blob; returns its descriptor.
    pub fn write_blob(&self, media_type: &str, data: &[u8]) -> Result<Descriptor, ImageError> {
        let (digest, size, ()) = self.write_blob_with(|w| {
            w.write_all(data)
                .map_err(io_err(&self.dir.join("blobs/sha256")))
        })?;
        Ok(descriptor(media_type, &digest, size))
    }

    /// Writes a blob through `fill` under a temporary name, then renames
    /// it to its digest. Returns (digest, size, what `fill` returned).
    pub fn write_blob_with<T>(
        &self,
        fill: impl FnOnce(&mut dyn Write) -> Result<T, ImageError>,
    ) -> Result<(Digest, u64, T), ImageError> {
        let dir = self.dir.join("blobs/sha256");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        sweep_tmp(&dir);
        let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), unique()));
        let result = (|| {
            let file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&tmp)
                .map_err(io_err(&tmp))?;
            let mut w = HashWriter::new(io::BufWriter::with_capacity(256 * 1024, file));
            let t = fill(&mut w)?;
            let (digest, size, buf) = w.finish();
            let file = buf.into_inner().map_err(|e| io_err(&tmp)(e.into_error()))?;
            file.sync_all().map_err(io_err(&tmp))?;
            let path = self.blob_path(&digest);
            fs::rename(&tmp, &path).map_err(io_err(&path))?;
            Ok((digest, size, t))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Writes `index.json` atomically (temp + fsync + rename).
    pub fn write_index(&self, index: &Index) -> Result<(), ImageError> {
        let data = serde_json::to_vec(index)
            .map_err(|e| ImageError::Invalid(format!("encoding index.json: {e}")))?;
        self.replace_file("index.json", &data)
    }

    /// Points `tag` at `manifest` in `index.json`, dropping the tag from
    /// any other entry (and entries left with no tag that it had).
    pub fn set_tag(&self, tag: &str, manifest: &Descriptor) -> Result<(), ImageError> {
        let mut index = self.read_index()?;
        index
            .manifests
            .retain(|d| d.annotations.get(REF_NAME).map(String::as_str) != Some(tag));
        let mut desc = manifest.clone();
        desc.annotations.insert(REF_NAME.into(), tag.into());
        index.manifests.push(desc);
        self.write_index(&index)
    }

    fn replace_file(&self, name: &str, data: &[u8]) -> Result<(), ImageError> {
        let path = self.dir.join(name);
        let tmp = self
            .dir
            .join(format!(".{name}.tmp-{}-{}", std::process::id(), unique()));
        let result = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&tmp)
                .map_err(io_err(&tmp))?;
            f.write_all(data).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
            fs::rename(&tmp, &path).map_err(io_err(&path))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

/// Removes `.tmp-PID-N` files of processes that no longer exist (blobs
/// of a killed commit).
fn sweep_tmp(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix(".tmp-"))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| {
            p > 0 && crate::sys::proc::kill(p, 0).is_err_and(|e| e.0 == libc::ESRCH)
        }) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// A process-wide counter for temporary names.
pub(super) fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

pub fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest: digest.to_string(),
        size,
        annotations: BTreeMap::new(),
        platform: None,
        extra: Map::new(),
    }
}

/// The entry of `index.json` that `tag` names, or the only one.
fn pick_tagged(index: &Index, tag: Option<&str>, dir: &Path) -> Result<Descriptor, ImageError> {
    let name = |d: &Descriptor| {
        d.annotations
            .get(REF_NAME)
            .cloned()
            .unwrap_or_else(|| format!("(untagged {})", d.digest))
    };
    let listing = || {
        let names: Vec<String> = index.manifests.iter().map(name).collect();
        if names.is_empty() {
            "it holds no image".to_string()
        } else {
            format!("it holds: {}", names.join(", "))
        }
    };
    match tag {
        Some(t) => {
            let hits: Vec<&Descriptor> = index
                .manifests
                .iter()
                .filter(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(t))
                .collect();
            match hits.as_slice() {
                [one] => Ok((*one).clone()),
                [] => Err(ImageError::NoImage(format!(
                    "{}: no image tagged {t:?}; {}",
                    dir.display(),
                    listing()
                ))),
                _ => Err(ImageError::NoImage(format!(
                    "{}: {} images are tagged {t:?}",
                    dir.display(),
                    hits.len()
                ))),
            }
        }
        None => match index.manifests.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(ImageError::NoImage(format!(
                "{}: name a tag (DIR:TAG); {}",
                dir.display(),
                listing()
            ))),
        },
    }
}

/// The manifest of an image index for the host's platform.
fn pick_platform(index: &Index, digest: &str) -> Result<Descriptor, ImageError> {
    let (os, arch) = host_platform();
    let matches = |d: &&Descriptor| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == os && p.architecture == arch)
    };
    // Prefer the plain variant (arm64 "v8" and no variant are the same).
    let mut hits: Vec<&Descriptor> = index.manifests.iter().filter(matches).collect();
    hits.sort_by_key(|d| d.platform.as_ref().and_then(|p| p.variant.clone()));
    hits.first().map(|d| (*d).clone()).ok_or_else(|| {
        let have: Vec<String> = index
            .manifests
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .map(|p| format!("{}/{}", p.os, p.architecture))
            .collect();
        ImageError::NoImage(format!(
            "image index {digest} has no manifest for {os}/{arch} (it has: {})",
            have.join(", ")
        ))
    })
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// The run settings of a config's `config` object (absent fields empty).
pub fn run_config(config: &Value) -> RunConfig {
    let c = config.get("config");
    let field = |k: &str| c.and_then(|c| c.get(k));
    let text = |k: &str| {
        field(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    RunConfig {
        env: strings(field("Env")),
        entrypoint: strings(field("Entrypoint")),
        cmd: strings(field("Cmd")),
        working_dir: text("WorkingDir"),
        user: text("User"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(tag: Option<&str>, n: u8) -> Descriptor {
        let mut d = descriptor(MT_OCI_MANIFEST, &Digest([n; 32]), 1);
        if let Some(t) = tag {
            d.annotations.insert(REF_NAME.into(), t.into());
        }
        d
    }

    fn index(ds: Vec<Descriptor>) -> Index {
        Index {
            schema_version: 2,
            media_type: None,
            manifests: ds,
            extra: Map::new(),
        }
    }

    #[test]
    fn a_tag_picks_its_entry_and_no_tag_needs_exactly_one() {
        let i = index(vec![desc(Some("a"), 1), desc(Some("b"), 2)]);
        let dir = Path::new("/l");
        assert_eq!(
            pick_tagged(&i, Some("b"), dir).unwrap().digest,
            desc(None, 2).digest
        );
        let e = pick_tagged(&i, None, dir).unwrap_err().to_string();
        assert!(e.contains("a, b"), "{e}");
        let e = pick_tagged(&i, Some("c"), dir).unwrap_err().to_string();
        assert!(e.contains("no image tagged \"c\""), "{e}");
        let one = index(vec![desc(None, 3)]);
        assert!(pick_tagged(&one, None, dir).is_ok());
    }

    #[test]
    fn an_index_picks_the_host_platform() {
        let (os, arch) = host_platform();
        let mut other = desc(None, 1);
        other.platform = Some(Platform {
            architecture: "mips64".into(),
            os: "linux".into(),
            variant: None,
            extra: Map::new(),
        });
        let mut host = desc(None, 2);
        host.platform = Some(Platform {
            architecture: arch.into(),
            os: os.into(),
            variant: None,
            extra: Map::new(),
        });
        let i = index(vec![other.clone(), host.clone()]);
        assert_eq!(pick_platform(&i, "x").unwrap(), host);
        let e = pick_platform(&index(vec![other]), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("linux/mips64"), "{e}");
    }

    #[test]
    fn layer_media_types_are_known_or_named_in_the_error() {
        use Compression::*;
        for (t, c) in [
            ("application/vnd.oci.image.layer.v1.tar", None),
            ("application/vnd.oci.image.layer.v1.tar+gzip", Gzip),
            ("application/vnd.oci.image.layer.v1.tar+zstd", Zstd),
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", Gzip),
        ] {
            assert_eq!(layer_compression(t).unwrap(), c);
            assert_eq!(layer_compression(&layer_media_type(c)).unwrap(), c);
        }
        for t in [
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "application/x-bzip2-layer",
        ] {
            let e = layer_compression(t).unwrap_err().to_string();
            assert!(e.contains(t), "{e}");
        }
    }

    #[test]
    fn run_config_reads_the_config_object() {
        let v: Value = serde_json::from_str(
            r#"{"config":{"Env":["A=1"],"Entrypoint":["/e"],"Cmd":["c","d"],
                "WorkingDir":"/w","User":""}}"#,
        )
        .unwrap();
        let r = run_config(&v);
        assert_eq!(r.env, ["A=1"]);
        assert_eq!((r.entrypoint.len(), r.cmd.len()), (1, 2));
        assert_eq!(r.working_dir.as_deref(), Some("/w"));
        assert_eq!(r.user, None);
        assert_eq!(run_config(&Value::Null), RunConfig::default());
    }

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let text = r#"{"schemaVersion":2,"manifests":[{"mediaType":"m","digest":"d","size":1,
            "urls":["u"],"annotations":{"k":"v"}}],"annotations":{"x":"y"}}"#;
        let i: Index = serde_json::from_str(text).unwrap();
        let back: Value = serde_json::to_value(&i).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(text).unwrap());
    }
}
