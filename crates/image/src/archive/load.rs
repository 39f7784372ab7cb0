//! `yun load`: OCI layout dirs, OCI archives and docker-archives, detected by content.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{Cursor, Read};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use super::{CONTAINERD_NAME, REF_NAME};
use crate::digest::Digest;
use crate::fsutil::decompress;
use crate::manifest::{
    kind_of, layer_media_type, media, pick_platform, Descriptor, Index, Kind, Manifest,
};
use crate::meta::Image;
use crate::reference::Reference;
use crate::Store;

/// One image of a docker-archive's manifest.json.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn not_an_archive(path: &Path) -> anyhow::Error {
    anyhow!(
        "load {}: not an OCI layout, OCI archive or docker-archive",
        path.display()
    )
}

impl Store {
    /// Load every image of an OCI layout dir, an OCI archive, or a docker-archive (plain,
    /// gzip or zstd), detected from the content. Names come from the archive
    /// (`org.opencontainers.image.ref.name` / `io.containerd.image.name`, or `RepoTags`).
    /// Blobs are verified against their digests as they are stored; blobs the archive
    /// brought that end up unreferenced (including after a failure) are removed again.
    pub fn load(&self, path: &Path) -> Result<Vec<Image>> {
        let md = fs::metadata(path).with_context(|| format!("load {}", path.display()))?;
        let touched = RefCell::new(Vec::new());
        let result = {
            let _ingest = self.ingest_lock()?;
            if md.is_dir() {
                if !path.join("oci-layout").is_file() || !path.join("index.json").is_file() {
                    return Err(not_an_archive(path));
                }
                self.load_oci_dir(path, &touched)
            } else {
                self.load_tar(path, &touched)
            }
        };
        self.forget_unreferenced(&touched.into_inner());
        result.map_err(|e| {
            if e.to_string().starts_with("load ") {
                e
            } else {
                e.context(format!("load {}", path.display()))
            }
        })
    }

    /// Remove blobs an ingest (load, pull) stored that no image references (archive
    /// bookkeeping files, or everything after a refused image). Under the exclusive gc lock,
    /// so a concurrent ingest that needs the same blob has recorded its image by then; call
    /// it after dropping the [`crate::IngestGuard`].
    pub fn forget_unreferenced(&self, touched: &[Digest]) {
        if touched.is_empty() {
            return;
        }
        let Ok(_gc) = self.gc_lock(true) else { return };
        let Ok(db) = self.read_db() else { return };
        let referenced: HashSet<&Digest> =
            db.images.iter().flat_map(|(id, r)| r.blobs(id)).collect();
        for d in touched {
            if !referenced.contains(d) {
                let _ = fs::remove_file(self.blob_path(d));
            }
        }
    }

    fn load_oci_dir(&self, dir: &Path, touched: &RefCell<Vec<Digest>>) -> Result<Vec<Image>> {
        let index = fs::read(dir.join("index.json")).context("index.json")?;
        self.add_from_layout(&index, &|d: &Digest| {
            if self.has_blob(d) {
                return Ok(());
            }
            let p = dir.join("blobs/sha256").join(d.hex());
            let f = File::open(&p).with_context(|| format!("blob {d}: {}", p.display()))?;
            self.put_blob(f, Some(d))?;
            touched.borrow_mut().push(d.clone());
            Ok(())
        })
    }

    fn load_tar(&self, path: &Path, touched: &RefCell<Vec<Digest>>) -> Result<Vec<Image>> {
        let f = File::open(path).with_context(|| format!("load {}", path.display()))?;
        let (_, mut r) = decompress(f).with_context(|| format!("load {}", path.display()))?;
        // A tar has "ustar" at offset 257; anything else is not one of ours.
        let mut head = vec![0u8; 512];
        let mut n = 0;
        while n < head.len() {
            match r.read(&mut head[n..])? {
                0 => break,
                k => n += k,
            }
        }
        if n < 512 || &head[257..262] != b"ustar" {
            return Err(not_an_archive(path));
        }
        let mut ar = tar::Archive::new(Cursor::new(head).chain(r));
        let mut files: HashMap<String, Digest> = HashMap::new();
        let mut links: HashMap<String, String> = HashMap::new();
        let (mut layout, mut index, mut docker) = (false, None, None);
        for entry in ar.entries().context("read archive")? {
            let mut entry = entry.context("read archive")?;
            let name = clean(&String::from_utf8_lossy(&entry.path_bytes()));
            let kind = entry.header().entry_type();
            if kind.is_symlink() {
                if let Some(t) = entry.link_name_bytes() {
                    links.insert(name.clone(), join_rel(&name, &String::from_utf8_lossy(&t)));
                }
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let small = |e: &mut tar::Entry<_>| -> Result<Vec<u8>> {
                let mut v = Vec::new();
                e.take(64 << 20).read_to_end(&mut v)?;
                Ok(v)
            };
            match name.as_str() {
                "oci-layout" => layout = true,
                "index.json" => index = Some(small(&mut entry)?),
                "manifest.json" => docker = Some(small(&mut entry)?),
                "repositories" => {}
                _ => {
                    let expected = match name.strip_prefix("blobs/sha256/") {
                        Some(hex) => Some(
                            Digest::from_hex(hex)
                                .with_context(|| format!("archive entry {name}"))?,
                        ),
                        None => None,
                    };
                    let had = expected.as_ref().is_some_and(|d| self.has_blob(d));
                    let d = self
                        .put_blob(&mut entry, expected.as_ref())
                        .with_context(|| format!("archive entry {name}"))?;
                    if !had {
                        touched.borrow_mut().push(d.clone());
                    }
                    files.insert(name, d);
                }
            }
        }
        if let (true, Some(index)) = (layout, &index) {
            return self.add_from_layout(index, &|d: &Digest| {
                if self.has_blob(d) {
                    Ok(())
                } else {
                    bail!("blob {d} is not in the archive")
                }
            });
        }
        let Some(docker) = docker else {
            return Err(not_an_archive(path));
        };
        let lookup = |name: &str| -> Result<Digest> {
            let mut n = clean(name);
            for _ in 0..8 {
                if let Some(d) = files.get(&n) {
                    return Ok(d.clone());
                }
                match links.get(&n) {
                    Some(t) => n = t.clone(),
                    None => break,
                }
            }
            bail!("manifest.json: {name:?} is not in the archive")
        };
        let entries: Vec<DockerEntry> = serde_json::from_slice(&docker).context("manifest.json")?;
        let mut out = Vec::new();
        for e in entries {
            let config = lookup(&e.config)?;
            let mut layers = Vec::new();
            for l in &e.layers {
                let d = lookup(l)?;
                layers.push(Descriptor::new(
                    layer_media_type(self.sniff_blob(&d)?),
                    d.clone(),
                    self.blob_size(&d)?,
                ));
            }
            let config_size = self.blob_size(&config)?;
            let manifest = Manifest::oci(
                Descriptor::new(media::OCI_CONFIG, config, config_size),
                layers,
            );
            let names = e.repo_tags.unwrap_or_default();
            out.push(self.add_image(&serde_json::to_vec_pretty(&manifest)?, &names)?);
        }
        Ok(out)
    }

    /// Record the images an OCI `index.json` lists; `fetch` makes sure a blob is stored.
    fn add_from_layout(
        &self,
        index: &[u8],
        fetch: &dyn Fn(&Digest) -> Result<()>,
    ) -> Result<Vec<Image>> {
        let index: Index = serde_json::from_slice(index).context("index.json")?;
        let mut by_manifest: Vec<(Descriptor, Vec<String>)> = Vec::new();
        for d in &index.manifests {
            let names = ref_names(d);
            match by_manifest.iter_mut().find(|(m, _)| m.digest == d.digest) {
                Some((_, n)) => n.extend(names),
                None => by_manifest.push((d.clone(), names)),
            }
        }
        let mut out = Vec::new();
        for (desc, names) in by_manifest {
            out.push(self.add_descriptor(&desc, &names, fetch, 0)?);
        }
        Ok(out)
    }

    fn add_descriptor(
        &self,
        desc: &Descriptor,
        names: &[String],
        fetch: &dyn Fn(&Digest) -> Result<()>,
        depth: u32,
    ) -> Result<Image> {
        if depth > 4 {
            bail!("index.json: image indexes nested too deep");
        }
        fetch(&desc.digest)?;
        let data = self.read_blob(&desc.digest)?;
        if kind_of(&data)? == Kind::Index {
            let idx: Index =
                serde_json::from_slice(&data).with_context(|| format!("index {}", desc.digest))?;
            let pick = pick_platform(&idx).ok_or_else(|| {
                anyhow!(
                    "index {}: no manifest for linux/{}",
                    desc.digest,
                    crate::manifest::go_arch()
                )
            })?;
            return self.add_descriptor(pick, names, fetch, depth + 1);
        }
        let m: Manifest =
            serde_json::from_slice(&data).with_context(|| format!("manifest {}", desc.digest))?;
        fetch(&m.config.digest)?;
        for l in &m.layers {
            fetch(&l.digest)?;
        }
        self.add_image(&data, names)
    }
}

/// The image names an index entry carries: containerd's full-name annotation, else the OCI
/// ref name when it is a valid reference (podman writes full names there).
fn ref_names(d: &Descriptor) -> Vec<String> {
    let Some(a) = &d.annotations else {
        return Vec::new();
    };
    let name = a.get(CONTAINERD_NAME).or_else(|| a.get(REF_NAME));
    name.filter(|n| Reference::parse(n).is_ok())
        .cloned()
        .into_iter()
        .collect()
}

/// An archive member name without "./" and trailing "/".
fn clean(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in name.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// A symlink target inside the archive, relative to the link's directory.
fn join_rel(link: &str, target: &str) -> String {
    if target.starts_with('/') {
        return clean(target);
    }
    match link.rsplit_once('/') {
        Some((dir, _)) => clean(&format!("{dir}/{target}")),
        None => clean(target),
    }
}
