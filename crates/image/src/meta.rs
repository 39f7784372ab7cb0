//! Image records: one JSON file, `images/images.json`, mapping image ids to their manifest,
//! names and layers. Written atomically under an flock, so concurrent yun commands never lose
//! each other's updates and readers never see half a file.

use std::collections::BTreeMap;
use std::fs;
use std::io;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::fsutil::{atomic_write, lock};
use crate::reference::{normalize, Reference};
use crate::Store;

/// An image as the engine sees it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Image {
    /// The digest of the image config (what `podman images` calls the IMAGE ID).
    pub id: Digest,
    /// The digest of the OCI manifest recorded for it.
    pub manifest_digest: Digest,
    /// Normalized names (`repo:tag`), possibly none (a dangling image).
    pub names: Vec<String>,
    /// The config's `created` (RFC 3339), when it has one.
    pub created: Option<String>,
    /// Config plus layer blob sizes, in bytes.
    pub size: u64,
}

/// One layer of a recorded image.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct LayerRecord {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// The digest of the uncompressed tar (the config's rootfs.diff_ids entry).
    pub diff_id: Digest,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Record {
    pub manifest_digest: Digest,
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub created: Option<String>,
    pub size: u64,
    pub layers: Vec<LayerRecord>,
}

impl Record {
    pub fn image(&self, id: &Digest) -> Image {
        Image {
            id: id.clone(),
            manifest_digest: self.manifest_digest.clone(),
            names: self.names.clone(),
            created: self.created.clone(),
            size: self.size,
        }
    }

    /// Every blob this image needs: manifest, config (`id`) and layers.
    pub fn blobs<'a>(&'a self, id: &'a Digest) -> impl Iterator<Item = &'a Digest> {
        [&self.manifest_digest, id]
            .into_iter()
            .chain(self.layers.iter().map(|l| &l.digest))
    }
}

#[derive(Default, Debug, Serialize, Deserialize)]
pub(crate) struct Db {
    #[serde(default)]
    pub images: BTreeMap<Digest, Record>,
}

/// What a reference resolved to: the image id, and the name it matched (None for an id).
pub(crate) struct Found {
    pub id: Digest,
    pub name: Option<String>,
}

impl Db {
    pub fn find(&self, reference: &str) -> Result<Found> {
        let not_found = || anyhow!("image {reference:?} not found");
        if let Some(hex) = reference.strip_prefix("sha256:") {
            return self.find_id_prefix(reference, hex)?.ok_or_else(not_found);
        }
        match Reference::parse(reference) {
            Ok(r) => {
                for cand in r.candidates() {
                    if let Some(id) = self.id_of_name(&cand) {
                        return Ok(Found {
                            id,
                            name: Some(cand),
                        });
                    }
                }
                // `repo@sha256:…`: the manifest digest, whatever the image's names.
                if let (Some(d), None) = (&r.digest, &r.tag) {
                    for (id, rec) in &self.images {
                        if rec.manifest_digest.as_str() == d {
                            return Ok(Found {
                                id: id.clone(),
                                name: None,
                            });
                        }
                    }
                }
            }
            Err(e) if !is_hex(reference) => return Err(e),
            Err(_) => {}
        }
        // A bare id prefix, as `podman rmi 3f57d9401f8d` accepts.
        if is_hex(reference) && reference.len() >= 12 {
            if let Some(f) = self.find_id_prefix(reference, reference)? {
                return Ok(f);
            }
        }
        Err(not_found())
    }

    fn find_id_prefix(&self, reference: &str, hex: &str) -> Result<Option<Found>> {
        if !is_hex(hex) || hex.len() < 12 {
            bail!("image id {reference:?}: expected at least 12 lowercase hex digits");
        }
        let mut hits = self.images.keys().filter(|id| id.hex().starts_with(hex));
        let Some(first) = hits.next() else {
            return Ok(None);
        };
        if hits.next().is_some() {
            bail!("image id {reference:?} is ambiguous: more than one image id starts with it");
        }
        Ok(Some(Found {
            id: first.clone(),
            name: None,
        }))
    }

    fn id_of_name(&self, name: &str) -> Option<Digest> {
        self.images
            .iter()
            .find(|(_, r)| r.names.iter().any(|n| n == name))
            .map(|(id, _)| id.clone())
    }

    /// Give `name` to `id` alone (a name names one image; the previous holder loses it, as
    /// with `podman tag`).
    pub fn set_name(&mut self, id: &Digest, name: &str) {
        for (other, rec) in self.images.iter_mut() {
            if other != id {
                rec.names.retain(|n| n != name);
            }
        }
        if let Some(rec) = self.images.get_mut(id) {
            if !rec.names.iter().any(|n| n == name) {
                rec.names.push(name.to_string());
            }
        }
    }

    pub fn image(&self, id: &Digest) -> Result<Image> {
        self.images
            .get(id)
            .map(|r| r.image(id))
            .ok_or_else(|| anyhow!("image {id} not found"))
    }
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Store {
    pub(crate) fn read_db(&self) -> Result<Db> {
        let path = self.images_dir.join("images.json");
        match fs::read(&path) {
            Ok(data) => {
                serde_json::from_slice(&data).with_context(|| format!("{}", path.display()))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Db::default()),
            Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
        }
    }

    /// Read-modify-write of the records under the exclusive lock; `f`'s error leaves the file
    /// as it was.
    pub(crate) fn update_db<T>(&self, f: impl FnOnce(&mut Db) -> Result<T>) -> Result<T> {
        let _lock = lock(&self.images_dir.join("images.lock"), true)?;
        let mut db = self.read_db()?;
        let out = f(&mut db)?;
        let data = serde_json::to_vec_pretty(&db)?;
        atomic_write(&self.images_dir.join("images.json"), &data)?;
        Ok(out)
    }

    pub(crate) fn record(&self, id: &Digest) -> Result<Record> {
        self.read_db()?
            .images
            .get(id)
            .cloned()
            .ok_or_else(|| anyhow!("image {id} not found"))
    }

    /// The image for a name (`name`, `name:tag`, `host:port/repo:tag`, `repo@sha256:…`) or an
    /// id (`sha256:` + 12 to 64 hex digits, or 12+ bare hex digits).
    pub fn resolve(&self, reference: &str) -> Result<Image> {
        let db = self.read_db()?;
        let found = db.find(reference)?;
        db.image(&found.id)
    }

    /// All images, newest first.
    pub fn images(&self) -> Result<Vec<Image>> {
        let db = self.read_db()?;
        let mut out: Vec<Image> = db.images.iter().map(|(id, r)| r.image(id)).collect();
        out.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// `yun tag SRC NEW`: give the image `src` resolves to the name `new_name` as well.
    pub fn tag(&self, src: &str, new_name: &str) -> Result<()> {
        let name = normalize(new_name)?;
        if name.contains('@') {
            bail!("tag {new_name:?}: a name with a digest cannot be a tag");
        }
        self.update_db(|db| {
            let id = db.find(src)?.id;
            db.set_name(&id, &name);
            Ok(())
        })
    }

    /// `yun rmi REF`. A name of an image that has other names is only untagged (allowed even
    /// while containers use the image, as podman does). Otherwise the image is deleted with
    /// every name, and with its blobs and unpacked layers no other image or prepared rootfs
    /// needs; that is refused while `in_use(image)`. Returns `Untagged: NAME` and
    /// `Deleted: ID` lines.
    pub fn untag_or_remove(
        &self,
        reference: &str,
        in_use: &dyn Fn(&Image) -> bool,
    ) -> Result<Vec<String>> {
        // Holding the gc lock keeps a concurrent load from adding a blob we are about to drop.
        let _gc = self.gc_lock(true)?;
        let removed = self.update_db(|db| {
            let found = db.find(reference)?;
            let rec = db.images.get_mut(&found.id).expect("found");
            if let Some(name) = &found.name {
                if rec.names.len() > 1 {
                    rec.names.retain(|n| n != name);
                    return Ok((vec![format!("Untagged: {name}")], None));
                }
            }
            let image = rec.image(&found.id);
            if in_use(&image) {
                bail!(
                    "image {reference:?} ({}) is in use by a container",
                    image.id.short()
                );
            }
            let rec = db.images.remove(&found.id).expect("found");
            let mut lines: Vec<String> =
                rec.names.iter().map(|n| format!("Untagged: {n}")).collect();
            lines.push(format!("Deleted: {}", found.id));
            Ok((lines, Some((found.id, rec))))
        })?;
        let (lines, gone) = removed;
        if let Some((id, rec)) = gone {
            self.drop_unreferenced(&id, &rec)?;
        }
        Ok(lines)
    }
}
