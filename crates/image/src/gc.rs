//! Garbage collection of blobs and unpacked layers no image references.
//!
//! Blobs arrive before the image that references them is recorded (load, pull), so an
//! ingest holds `gc.lock` shared ([`Store::ingest_lock`]) and gc takes it exclusively: gc
//! never runs between a blob's arrival and its image's record.

use std::collections::HashSet;
use std::fs;

use anyhow::{Context, Result};

use crate::digest::Digest;
use crate::fsutil::{lock, LockGuard};
use crate::meta::{Db, Record};
use crate::snapshot::chain_ids;
use crate::Store;

/// What [`Store::gc`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub blobs: Vec<Digest>,
    /// Chain ids of the unpacked layers removed.
    pub layers: Vec<Digest>,
    /// Bytes freed (blob sizes plus allocated blocks of layer dirs).
    pub bytes: u64,
}

/// Held while blobs are stored for an image not recorded yet; see the module doc.
pub struct IngestGuard(#[allow(dead_code)] LockGuard);

fn image_chains(rec: &Record) -> Vec<Digest> {
    let diff_ids: Vec<Digest> = rec.layers.iter().map(|l| l.diff_id.clone()).collect();
    chain_ids(&diff_ids)
}

fn referenced(db: &Db) -> (HashSet<Digest>, HashSet<Digest>) {
    let mut blobs = HashSet::new();
    let mut chains = HashSet::new();
    for (id, rec) in &db.images {
        blobs.extend(rec.blobs(id).cloned());
        chains.extend(image_chains(rec));
    }
    (blobs, chains)
}

impl Store {
    pub(crate) fn gc_lock(&self, exclusive: bool) -> Result<LockGuard> {
        lock(&self.images_dir.join("gc.lock"), exclusive)
    }

    /// Keep gc away while storing blobs for an image that `add_image` will record.
    pub fn ingest_lock(&self) -> Result<IngestGuard> {
        Ok(IngestGuard(self.gc_lock(false)?))
    }

    /// Remove blobs and unpacked layers (chain ids) that no image references, no prepared
    /// rootfs uses, and `keep` does not claim.
    pub fn gc(&self, keep: &dyn Fn(&Digest) -> bool) -> Result<GcReport> {
        let _gc = self.gc_lock(true)?;
        let db = self.read_db()?;
        let (blobs, mut chains) = referenced(&db);
        chains.extend(self.layers_in_use()?);
        let mut report = GcReport::default();
        for b in self.blobs()? {
            if blobs.contains(&b) || keep(&b) {
                continue;
            }
            report.bytes += self.blob_size(&b).unwrap_or(0);
            self.remove_blob(&b)?;
            report.blobs.push(b);
        }
        for c in self.unpacked_layers()? {
            if chains.contains(&c) || keep(&c) {
                continue;
            }
            report.bytes += self.remove_layer(&c)?;
            report.layers.push(c);
        }
        report.blobs.sort();
        report.layers.sort();
        Ok(report)
    }

    fn remove_blob(&self, d: &Digest) -> Result<()> {
        let p = self.blob_path(d);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("remove {}", p.display()))
            }
            _ => Ok(()),
        }
    }

    /// After `rmi` removed the record of `id`: delete its blobs and unpacked layers unless
    /// another image or a prepared rootfs still needs them. The caller holds the gc lock.
    pub(crate) fn drop_unreferenced(&self, id: &Digest, rec: &Record) -> Result<()> {
        let db = self.read_db()?;
        let (blobs, mut chains) = referenced(&db);
        chains.extend(self.layers_in_use()?);
        for b in rec.blobs(id) {
            if !blobs.contains(b) {
                self.remove_blob(b)?;
            }
        }
        for c in image_chains(rec) {
            if !chains.contains(&c) {
                self.remove_layer(&c)?;
            }
        }
        Ok(())
    }
}
