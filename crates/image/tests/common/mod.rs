//! Helpers shared by the integration tests: temp dirs that clean up (mounts included), layer
//! tars built entry by entry (malicious ones too), images assembled from layer tars.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;
use yun_image::{media, Digest, Image, Store};

/// A `yun-test-…` temp dir; on drop every mount under it is detached, then it is removed.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(tag: &str) -> TestDir {
        let path = tempfile::Builder::new()
            .prefix(&format!("yun-test-{tag}-"))
            .tempdir_in("/tmp")
            .expect("tempdir")
            .keep();
        TestDir { path }
    }

    pub fn store(&self) -> Store {
        Store::open(&self.path.join("data")).expect("open store")
    }

    /// The one mount a store that unpacked something keeps: its snapshots dir, bound onto
    /// itself nosuid,nodev.
    pub fn store_mounts(&self) -> Vec<String> {
        vec![self.path.join("data/snapshots").display().to_string()]
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        for m in mounts_under(&self.path).into_iter().rev() {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Mount points at or below `dir`, in mount order.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m == &dir || m.starts_with(&format!("{dir}/")))
        .collect()
}

/// One tar entry for [`tar_of`]. Paths are written raw, so `../x` and `/abs` stay as given.
pub enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, u32, &'a [u8]),
    /// path, mode, uid, gid, mtime, data
    FileOwned(&'a str, u32, u32, u32, u64, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Char(&'a str, u32, u32),
    Fifo(&'a str),
    /// A file preceded by a PAX header with these records.
    PaxFile(&'a str, u32, &'a [u8], Vec<(&'a str, &'a [u8])>),
}

fn raw_header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    {
        let gnu = h.as_gnu_mut().unwrap();
        assert!(path.len() < 100, "test paths stay short");
        gnu.name[..path.len()].copy_from_slice(path.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_600_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn set_link(h: &mut tar::Header, target: &str) {
    let gnu = h.as_gnu_mut().unwrap();
    gnu.linkname[..target.len()].copy_from_slice(target.as_bytes());
}

pub fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (mut h, data): (tar::Header, &[u8]) = match e {
            E::Dir(p, m) => (raw_header(p, tar::EntryType::Directory, *m, 0), b""),
            E::File(p, m, d) => (
                raw_header(p, tar::EntryType::Regular, *m, d.len() as u64),
                d,
            ),
            E::FileOwned(p, m, u, g, t, d) => {
                let mut h = raw_header(p, tar::EntryType::Regular, *m, d.len() as u64);
                h.set_uid(*u as u64);
                h.set_gid(*g as u64);
                h.set_mtime(*t);
                (h, d)
            }
            E::Symlink(p, t) => {
                let mut h = raw_header(p, tar::EntryType::Symlink, 0o777, 0);
                set_link(&mut h, t);
                (h, b"")
            }
            E::Hardlink(p, t) => {
                let mut h = raw_header(p, tar::EntryType::Link, 0o644, 0);
                set_link(&mut h, t);
                (h, b"")
            }
            E::Char(p, maj, min) => {
                let mut h = raw_header(p, tar::EntryType::Char, 0o666, 0);
                h.set_device_major(*maj).unwrap();
                h.set_device_minor(*min).unwrap();
                (h, b"")
            }
            E::Fifo(p) => (raw_header(p, tar::EntryType::Fifo, 0o644, 0), b""),
            E::PaxFile(p, m, d, pax) => {
                b.append_pax_extensions(pax.iter().map(|(k, v)| (*k, *v)))
                    .unwrap();
                (
                    raw_header(p, tar::EntryType::Regular, *m, d.len() as u64),
                    d,
                )
            }
        };
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Record an image whose layers are `layers` (stored as given, compressed or not; `diff_ids`
/// are the digests of the uncompressed tars `plain`).
pub fn image_of(store: &Store, layers: &[(Vec<u8>, Vec<u8>)], name: &str) -> Image {
    try_image_of(store, layers, name).unwrap()
}

/// [`image_of`], returning what `add_image` says (a bad layer is refused there).
pub fn try_image_of(
    store: &Store,
    layers: &[(Vec<u8>, Vec<u8>)],
    name: &str,
) -> anyhow::Result<Image> {
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (stored, plain) in layers {
        let d = store.put_blob(&stored[..], None).unwrap();
        let mt = if stored.starts_with(&[0x1f, 0x8b]) {
            media::OCI_LAYER_GZIP
        } else if stored.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            media::OCI_LAYER_ZSTD
        } else {
            media::OCI_LAYER
        };
        descs.push(json!({"mediaType": mt, "digest": d, "size": stored.len()}));
        diff_ids.push(Digest::of(plain).to_string());
    }
    let config = json!({
        "created": "2024-01-02T03:04:05Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        // a name-specific label keeps image ids distinct between tests' images
        "author": name,
    });
    let config = serde_json::to_vec(&config).unwrap();
    let cd = store.put_blob(&config[..], None).unwrap();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": cd, "size": config.len()},
        "layers": descs,
    });
    store.add_image(&serde_json::to_vec(&manifest).unwrap(), &[name.to_string()])
}

/// Plain layers (stored uncompressed).
pub fn image_of_plain(store: &Store, layers: &[Vec<u8>], name: &str) -> Image {
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = layers.iter().map(|l| (l.clone(), l.clone())).collect();
    image_of(store, &pairs, name)
}
