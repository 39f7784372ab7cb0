//! Manifests: OCI image manifests are recorded as they are; Docker schema2 manifests are
//! converted to OCI on the way in (media types mapped, layer blobs and digests untouched).

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::fsutil::Compression;
use crate::meta::{Image, LayerRecord, Record};
use crate::reference::normalize;
use crate::Store;

pub mod media {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const OCI_LAYER_ND_GZIP: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_FOREIGN_GZIP: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
}

/// A content descriptor (the fields yun uses; others are dropped on conversion only).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image manifest, OCI or Docker schema2 (same shape, different media types).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Descriptor {
    /// A plain descriptor: media type, digest and size, nothing else.
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            urls: None,
            annotations: None,
            platform: None,
        }
    }
}

impl Manifest {
    /// An OCI image manifest for a config and its layers.
    pub fn oci(config: Descriptor, layers: Vec<Descriptor>) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.to_string()),
            config,
            layers,
            annotations: None,
        }
    }
}

/// An OCI image index (or a Docker manifest list).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// What a JSON document with a `mediaType` (or the shape of one) is.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    OciManifest,
    DockerManifest,
    Index,
}

pub fn kind_of(data: &[u8]) -> Result<Kind> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        schema_version: Option<u32>,
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        config: Option<serde_json::Value>,
    }
    let p: Probe = serde_json::from_slice(data).context("manifest: not JSON")?;
    if p.schema_version == Some(1) {
        bail!("manifest: Docker schema1 manifests are not supported");
    }
    Ok(match p.media_type.as_deref() {
        Some(media::OCI_MANIFEST) => Kind::OciManifest,
        Some(media::DOCKER_MANIFEST) => Kind::DockerManifest,
        Some(media::OCI_INDEX | media::DOCKER_LIST) => Kind::Index,
        Some(other) => bail!("manifest: unsupported media type {other:?}"),
        None if p.manifests.is_some() => Kind::Index,
        None if p.config.is_some() => Kind::OciManifest,
        None => bail!("manifest: neither an image manifest nor an index"),
    })
}

/// From an index, the manifest for this machine (linux/amd64 or whatever this build is),
/// or the only one.
pub fn pick_platform(index: &Index) -> Option<&Descriptor> {
    let arch = go_arch();
    let images = index.manifests.iter().filter(|d| {
        matches!(
            d.media_type.as_str(),
            media::OCI_MANIFEST | media::DOCKER_MANIFEST | media::OCI_INDEX | media::DOCKER_LIST
        )
    });
    let all: Vec<&Descriptor> = images.collect();
    all.iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .or_else(|| all.iter().find(|d| d.platform.is_none()))
        .copied()
        .or(if all.len() == 1 { Some(all[0]) } else { None })
}

pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

impl Store {
    /// Record an image whose blobs (config, layers) are already stored. `manifest` is an OCI
    /// image manifest, recorded as is, or a Docker schema2 manifest, converted to OCI (the
    /// converted manifest is what gets stored and recorded). `names` are normalized and taken
    /// from any image that had them. Adding an image that exists merges the names.
    pub fn add_image(&self, manifest: &[u8], names: &[String]) -> Result<Image> {
        let kind = kind_of(manifest)?;
        if kind == Kind::Index {
            bail!("add_image: manifest is an image index, not an image manifest");
        }
        let parsed: Manifest = serde_json::from_slice(manifest).context("manifest")?;
        let names = names
            .iter()
            .map(|n| normalize(n))
            .collect::<Result<Vec<_>>>()?;
        let id = parsed.config.digest.clone();
        if !self.has_blob(&id) {
            bail!("manifest: config {id} is not in the store");
        }
        for l in &parsed.layers {
            if !self.has_blob(&l.digest) {
                bail!("manifest: layer {} is not in the store", l.digest);
            }
        }
        let config = self.parse_config(&id)?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != parsed.layers.len() {
            bail!(
                "config {id}: rootfs.diff_ids has {} entries but the manifest {} layers",
                diff_ids.len(),
                parsed.layers.len()
            );
        }
        let (stored, layers) = match kind {
            Kind::DockerManifest => {
                let oci = self.docker_to_oci(&parsed)?;
                (serde_json::to_vec_pretty(&oci)?, oci.layers)
            }
            _ => (manifest.to_vec(), parsed.layers),
        };
        let mut layer_records = Vec::new();
        for (l, diff) in layers.iter().zip(diff_ids) {
            let diff_id: Digest = diff
                .parse()
                .map_err(|e| anyhow!("config {id}: rootfs.diff_ids: {e}"))?;
            layer_records.push(LayerRecord {
                digest: l.digest.clone(),
                media_type: l.media_type.clone(),
                size: l.size,
                diff_id,
            });
        }
        // Refused here, a bad layer never gets a name (load and pull remove the blobs they
        // brought); accepted, every layer is unpacked and checked for good.
        self.verify_layers(&layer_records)?;
        let manifest_digest = self.put_blob_bytes(&stored, None)?;
        let size = parsed.config.size + layers.iter().map(|l| l.size).sum::<u64>();
        let record = Record {
            manifest_digest,
            names: Vec::new(),
            created: config.created().clone(),
            size,
            layers: layer_records,
        };
        self.update_db(|db| {
            match db.images.get_mut(&id) {
                // The same image again: keep the manifest it was recorded with, unless that
                // record lost blobs (then the new, complete one replaces it).
                Some(old) if old.blobs(&id).any(|b| !self.has_blob(b)) => {
                    let names = std::mem::take(&mut old.names);
                    *old = Record { names, ..record };
                }
                Some(_) => {}
                None => {
                    db.images.insert(id.clone(), record);
                }
            }
            for n in &names {
                db.set_name(&id, n);
            }
            db.image(&id)
        })
    }

    /// The OCI config of an image (Docker configs parse as the same JSON).
    pub fn image_config(&self, image: &Image) -> Result<ImageConfiguration> {
        self.parse_config(&image.id)
    }

    fn parse_config(&self, id: &Digest) -> Result<ImageConfiguration> {
        let data = self.read_blob(id)?;
        serde_json::from_slice(&data).with_context(|| format!("image config {id}"))
    }

    /// The recorded OCI manifest of an image.
    pub fn manifest(&self, image: &Image) -> Result<Manifest> {
        let data = self.read_blob(&image.manifest_digest)?;
        serde_json::from_slice(&data).with_context(|| format!("manifest {}", image.manifest_digest))
    }

    /// Docker schema2 → OCI: config and layer media types mapped (a layer's compression is
    /// read from its bytes, since Docker's "diff.tar.gzip" is also used for plain tars by some
    /// tools), digests and sizes kept.
    fn docker_to_oci(&self, m: &Manifest) -> Result<Manifest> {
        let mut config = m.config.clone();
        config.media_type = media::OCI_CONFIG.to_string();
        let mut layers = Vec::new();
        for l in &m.layers {
            let mut l = l.clone();
            l.media_type = if l.media_type == media::DOCKER_FOREIGN_GZIP {
                media::OCI_LAYER_ND_GZIP.to_string()
            } else {
                layer_media_type(self.sniff_blob(&l.digest)?).to_string()
            };
            layers.push(l);
        }
        Ok(Manifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.to_string()),
            config,
            layers,
            annotations: m.annotations.clone(),
        })
    }

    /// The compression of a stored blob, from its first bytes.
    pub(crate) fn sniff_blob(&self, d: &Digest) -> Result<Compression> {
        use std::io::Read;
        let mut head = [0u8; 4];
        let mut f = self.open_blob(d)?;
        let mut n = 0;
        while n < head.len() {
            match f
                .read(&mut head[n..])
                .with_context(|| format!("read blob {d}"))?
            {
                0 => break,
                k => n += k,
            }
        }
        Ok(Compression::sniff(&head[..n]))
    }
}

pub fn layer_media_type(c: Compression) -> &'static str {
    match c {
        Compression::None => media::OCI_LAYER,
        Compression::Gzip => media::OCI_LAYER_GZIP,
        Compression::Zstd => media::OCI_LAYER_ZSTD,
    }
}
