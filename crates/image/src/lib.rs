//! Images: the content store, image records and names, OCI/Docker formats (load/save), layer
//! unpack with whiteouts, and overlay snapshots for container root filesystems.
//!
//! On disk, under a data dir:
//!
//! ```text
//! images/blobs/sha256/<hex>        blobs, named by their verified digest
//! images/images.json               image records (ids, manifests, names, layers)
//! images/images.lock, gc.lock      flocks: record updates; gc against loads
//! snapshots/layers/<chain hex>/fs  each layer unpacked once, shared read-only
//! snapshots/containers/<key>/      a container's rootfs: upper, work, merged (overlay)
//! ```
//!
//! `images/` and `snapshots/` are 0700, the data dir at most 0710, and `snapshots/` is a
//! nosuid,nodev bind mount of itself: see [`layout`] for why.

mod archive;
mod content;
mod digest;
mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
mod gc;
mod import;
mod layout;
mod manifest;
mod meta;
mod reference;
mod snapshot;
mod unpack;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub use archive::ArchiveFormat;
pub use digest::{Digest, DigestError};
pub use fsutil::Compression;
pub use gc::{GcReport, IngestGuard};
pub use manifest::{
    go_arch, kind_of, layer_media_type, media, pick_platform, Descriptor, Index, Kind, Manifest,
    Platform,
};
pub use meta::Image;
pub use reference::{normalize, Reference};
pub use snapshot::{chain_ids, Rootfs};
pub use unpack::{unpack_layer, UnpackOptions, UnpackStats};

/// The image store of one data dir. Cheap to open; all state is on disk, guarded by flocks,
/// so several processes (and threads: it is Send + Sync) can use one data dir at once.
#[derive(Debug, Clone)]
pub struct Store {
    data_dir: PathBuf,
    images_dir: PathBuf,
    blobs: PathBuf,
    layers: PathBuf,
    containers: PathBuf,
}

impl Store {
    /// Open (creating as needed) the store under `data_dir`, and clear what a killed process
    /// may have left: temp files and half-unpacked layers nobody is working on.
    pub fn open(data_dir: &Path) -> Result<Store> {
        let images_dir = data_dir.join("images");
        let store = Store {
            data_dir: data_dir.to_path_buf(),
            blobs: images_dir.join("blobs").join("sha256"),
            images_dir,
            layers: data_dir.join("snapshots").join("layers"),
            containers: data_dir.join("snapshots").join("containers"),
        };
        fs::create_dir_all(data_dir)
            .with_context(|| format!("create the data dir {}", data_dir.display()))?;
        layout::tighten_data_dir(data_dir)?;
        // The top dirs first, so everything below is out of reach from its creation on.
        for d in [&store.images_dir, &store.snapshots_dir()] {
            layout::private_dir(d)?;
        }
        for d in [&store.blobs, &store.layers, &store.containers] {
            fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
        }
        // Content unpacked by an older yun, or before a reboot, goes under the mount now.
        if fs::read_dir(&store.layers)?.next().is_some() {
            store.protect_snapshots()?;
        }
        fsutil::clean_temp(&store.images_dir);
        fsutil::clean_temp(&store.blobs);
        store.clean_layer_temps();
        Ok(store)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `snapshots/`: unpacked layers and containers' rootfs dirs, under one mount.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.data_dir.join("snapshots")
    }

    /// Make `snapshots/` a nosuid,nodev mount before content goes there (see [`layout`]).
    pub(crate) fn protect_snapshots(&self) -> Result<()> {
        layout::ensure_nosuid_nodev(
            &self.snapshots_dir(),
            &self.images_dir.join("snapshots-mount.lock"),
        )
    }
}

#[cfg(test)]
mod send_sync {
    fn assert_send_sync<T: Send + Sync>() {}
    #[test]
    fn store_is_send_sync() {
        assert_send_sync::<super::Store>();
    }
}
