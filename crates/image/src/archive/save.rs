//! `yun save`: one image as a docker-archive, an OCI archive or an OCI layout dir. The
//! output is written beside its final path and renamed, so a failed save leaves nothing.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Seek, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::{ArchiveFormat, OCI_LAYOUT, REF_NAME};
use crate::digest::{Digest, HashingWriter};
use crate::fsutil::{decompress, temp_sibling, Compression};
use crate::manifest::{media, Manifest};
use crate::Store;

impl Store {
    /// Write `image` to `path` in `format`. Names: the one `image` was given by, or all the
    /// image's names when it was given by id. OCI formats keep the manifest and blobs
    /// byte for byte; docker-archive holds uncompressed layers, as podman writes it.
    pub fn save(&self, image: &str, path: &Path, format: ArchiveFormat) -> Result<()> {
        let db = self.read_db()?;
        let found = db.find(image)?;
        let img = db.image(&found.id)?;
        let names = match found.name {
            Some(n) => vec![n],
            None => img.names.clone(),
        };
        let manifest_bytes = self.read_blob(&img.manifest_digest)?;
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)?;
        let what = || format!("save {}", path.display());
        if fs::symlink_metadata(path).is_ok_and(|m| !(m.is_dir() && is_empty_dir(path))) {
            bail!("{}: already exists", what());
        }
        let tmp = temp_sibling(path);
        let result = match format {
            ArchiveFormat::OciDir => {
                self.write_oci_dir(&tmp, &img.manifest_digest, &manifest, &names)
            }
            ArchiveFormat::OciArchive => self.write_archive(&tmp, |b| {
                self.oci_entries(b, &img.manifest_digest, &manifest, &names)
            }),
            ArchiveFormat::DockerArchive => {
                self.write_archive(&tmp, |b| self.docker_entries(b, &manifest, &names))
            }
        };
        let result = result.and_then(|()| {
            if path.is_dir() {
                fs::remove_dir(path)?;
            }
            fs::rename(&tmp, path)?;
            Ok(())
        });
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp).or_else(|_| fs::remove_file(&tmp));
        }
        result.with_context(what)
    }

    fn write_archive(
        &self,
        tmp: &Path,
        entries: impl FnOnce(&mut tar::Builder<BufWriter<File>>) -> Result<()>,
    ) -> Result<()> {
        let f = File::create(tmp).with_context(|| format!("create {}", tmp.display()))?;
        let mut b = tar::Builder::new(BufWriter::with_capacity(1 << 20, f));
        entries(&mut b)?;
        let f = b.into_inner()?.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok(())
    }

    fn index_json(
        &self,
        manifest_digest: &Digest,
        manifest_size: u64,
        names: &[String],
    ) -> Vec<u8> {
        let desc = |name: Option<&String>| {
            let mut d = json!({
                "mediaType": media::OCI_MANIFEST,
                "digest": manifest_digest,
                "size": manifest_size,
            });
            if let Some(n) = name {
                d["annotations"] = json!({ REF_NAME: n });
            }
            d
        };
        let manifests: Vec<_> = if names.is_empty() {
            vec![desc(None)]
        } else {
            names.iter().map(|n| desc(Some(n))).collect()
        };
        let index = json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": manifests,
        });
        serde_json::to_vec(&index).expect("json")
    }

    /// Manifest, config and layers: each blob once.
    fn image_blobs(&self, manifest_digest: &Digest, m: &Manifest) -> Vec<Digest> {
        let mut seen = HashSet::new();
        [manifest_digest, &m.config.digest]
            .into_iter()
            .chain(m.layers.iter().map(|l| &l.digest))
            .filter(|d| seen.insert((*d).clone()))
            .cloned()
            .collect()
    }

    fn write_oci_dir(&self, tmp: &Path, md: &Digest, m: &Manifest, names: &[String]) -> Result<()> {
        let blobs = tmp.join("blobs/sha256");
        fs::create_dir_all(&blobs)?;
        fs::write(tmp.join("oci-layout"), OCI_LAYOUT)?;
        for d in self.image_blobs(md, m) {
            fs::copy(self.blob_path(&d), blobs.join(d.hex()))
                .with_context(|| format!("copy blob {d}"))?;
        }
        let size = self.blob_size(md)?;
        fs::write(tmp.join("index.json"), self.index_json(md, size, names))?;
        Ok(())
    }

    fn oci_entries<W: Write>(
        &self,
        b: &mut tar::Builder<W>,
        md: &Digest,
        m: &Manifest,
        names: &[String],
    ) -> Result<()> {
        append_bytes(b, "oci-layout", OCI_LAYOUT)?;
        append_dir(b, "blobs/")?;
        append_dir(b, "blobs/sha256/")?;
        for d in self.image_blobs(md, m) {
            let f = self.open_blob(&d)?;
            let size = f.metadata()?.len();
            append_reader(b, &format!("blobs/sha256/{}", d.hex()), size, f)?;
        }
        let size = self.blob_size(md)?;
        append_bytes(b, "index.json", &self.index_json(md, size, names))?;
        Ok(())
    }

    fn docker_entries<W: Write>(
        &self,
        b: &mut tar::Builder<W>,
        m: &Manifest,
        names: &[String],
    ) -> Result<()> {
        let config = self.read_blob(&m.config.digest)?;
        let rec = self.record(&m.config.digest)?;
        let mut layer_names = Vec::new();
        let mut written = HashSet::new();
        for l in &rec.layers {
            let name = format!("{}.tar", l.diff_id.hex());
            layer_names.push(name.clone());
            if !written.insert(name.clone()) {
                continue;
            }
            let f = self.open_blob(&l.digest)?;
            if self.sniff_blob(&l.digest)? == Compression::None {
                let size = f.metadata()?.len();
                append_reader(b, &name, size, f)?;
                continue;
            }
            // The tar header needs the size first: inflate to an unnamed temp file, checking
            // the diff id on the way.
            let mut tmp = HashingWriter::new(tempfile::tempfile_in(&self.images_dir)?);
            let (_, mut r) = decompress(f)?;
            crate::content::copy_large(&mut r, &mut tmp)?;
            if tmp.digest() != l.diff_id {
                bail!(
                    "layer {}: uncompressed content does not match diff id {}",
                    l.digest,
                    l.diff_id
                );
            }
            let size = tmp.written;
            let mut f = tmp.inner;
            f.rewind()?;
            append_reader(b, &name, size, f)?;
        }
        let config_name = format!("{}.json", m.config.digest.hex());
        append_bytes(b, &config_name, &config)?;
        let manifest = json!([{
            "Config": config_name,
            "RepoTags": names,
            "Layers": layer_names,
        }]);
        append_bytes(b, "manifest.json", &serde_json::to_vec(&manifest)?)?;
        Ok(())
    }
}

fn is_empty_dir(p: &Path) -> bool {
    fs::read_dir(p).is_ok_and(|mut d| d.next().is_none())
}

fn file_header(size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h
}

fn append_reader<W: Write>(
    b: &mut tar::Builder<W>,
    name: &str,
    size: u64,
    r: impl io::Read,
) -> Result<()> {
    let mut h = file_header(size, 0o444);
    b.append_data(&mut h, name, r)
        .with_context(|| format!("write {name}"))
}

fn append_bytes<W: Write>(b: &mut tar::Builder<W>, name: &str, data: &[u8]) -> Result<()> {
    append_reader(b, name, data.len() as u64, data)
}

fn append_dir<W: Write>(b: &mut tar::Builder<W>, name: &str) -> Result<()> {
    let mut h = file_header(0, 0o755);
    h.set_entry_type(tar::EntryType::Directory);
    b.append_data(&mut h, name, io::empty())
        .with_context(|| format!("write {name}"))
}
