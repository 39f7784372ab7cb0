//! Directories into images: a directory tarred into one layer (`import_rootfs`, the built-in
//! busybox image, `commit_layer` for `yun build` and commits of container upper dirs).
//!
//! The tar is faithful (modes, owners, mtimes, hard links, devices, fifos, symlinks, xattrs
//! as PAX `SCHILY.xattr.*`) and overlay-aware: an overlay whiteout (0:0 character device)
//! becomes `.wh.NAME` and an opaque directory (`trusted.overlay.opaque=y`) gets
//! `.wh..wh..opq`, so an upper dir turns into a proper OCI diff layer.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use oci_spec::image::{
    Arch, Config, ConfigBuilder, HistoryBuilder, ImageConfiguration, ImageConfigurationBuilder, Os,
    RootFsBuilder,
};

use crate::fsutil::{lock, temp_sibling};
use crate::manifest::{media, Descriptor, Manifest};
use crate::meta::Image;
use crate::reference::normalize;
use crate::Store;

/// PATH of the built-in image (and the default of images imported without a config).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
pub const BUSYBOX_NAME: &str = "busybox:latest";

impl Store {
    /// Tar `dir` into one layer and record an image of it named `name`, with `config` as the
    /// image's execution config (default: only PATH set).
    pub fn import_rootfs(&self, dir: &Path, name: &str, config: Option<Config>) -> Result<Image> {
        self.commit_layer(None, dir, name, config)
    }

    /// Tar `dir` (an overlay upper directory or a plain tree; overlay whiteouts converted)
    /// into an uncompressed layer blob; returns its digest (= its diff id) and size. The
    /// caller holds `ingest_lock` until an image references the blob.
    pub fn put_layer_from_dir(&self, dir: &Path) -> Result<(crate::Digest, u64)> {
        self.write_blob(None, |w| write_layer_tar(dir, w))
            .with_context(|| format!("tar {}", dir.display()))
    }

    /// A new image: `base`'s layers (none for `None`) plus `dir` tarred as one more layer
    /// (overlay whiteouts converted), named `name`. `config` replaces the base's execution
    /// config when given.
    pub fn commit_layer(
        &self,
        base: Option<&Image>,
        dir: &Path,
        name: &str,
        config: Option<Config>,
    ) -> Result<Image> {
        let name = normalize(name)?;
        let _ingest = self.ingest_lock()?;
        let (layer, size) = self.put_layer_from_dir(dir)?;
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let history = HistoryBuilder::default()
            .created(now.clone())
            .created_by(format!("yun commit {}", dir.display()))
            .build()?;
        let (mut layers, mut image_config) = match base {
            Some(b) => (self.manifest(b)?.layers, self.image_config(b)?),
            None => (Vec::new(), new_config(&now)?),
        };
        let mut diff_ids = image_config.rootfs().diff_ids().clone();
        diff_ids.push(layer.to_string());
        image_config.set_rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(diff_ids)
                .build()?,
        );
        let mut hist = image_config.history().clone().unwrap_or_default();
        hist.push(history);
        image_config.set_history(Some(hist));
        image_config.set_created(Some(now));
        if let Some(c) = config {
            image_config.set_config(Some(c));
        } else if image_config.config().is_none() {
            image_config.set_config(Some(
                ConfigBuilder::default()
                    .env(vec![DEFAULT_PATH.to_string()])
                    .build()?,
            ));
        }
        let config_json = serde_json::to_vec(&image_config)?;
        let config_digest = self.put_blob_bytes(&config_json, None)?;
        layers.push(Descriptor::new(media::OCI_LAYER, layer, size));
        let manifest = Manifest::oci(
            Descriptor::new(media::OCI_CONFIG, config_digest, config_json.len() as u64),
            layers,
        );
        self.add_image(&serde_json::to_vec_pretty(&manifest)?, &[name])
    }

    /// The built-in `busybox:latest`: the host's static busybox (see
    /// `yun_runtime::bundle::build_busybox_rootfs`) imported once, `Cmd ["sh"]`, PATH set.
    /// Later calls return the recorded image.
    pub fn busybox(&self) -> Result<Image> {
        if let Ok(i) = self.resolve(BUSYBOX_NAME) {
            return Ok(i);
        }
        let _lock = lock(&self.images_dir.join("busybox.lock"), true)?;
        if let Ok(i) = self.resolve(BUSYBOX_NAME) {
            return Ok(i);
        }
        let tmp = temp_sibling(&self.images_dir.join("busybox"));
        let result = (|| {
            let rootfs = tmp.join("rootfs");
            fs::create_dir_all(&tmp)?;
            yun_runtime::bundle::build_busybox_rootfs(&rootfs)
                .context("build the busybox root filesystem")?;
            let config = ConfigBuilder::default()
                .env(vec![DEFAULT_PATH.to_string()])
                .cmd(vec!["sh".to_string()])
                .build()?;
            self.import_rootfs(&rootfs, BUSYBOX_NAME, Some(config))
        })();
        let _ = fs::remove_dir_all(&tmp);
        result.context("built-in busybox image")
    }
}

fn new_config(now: &str) -> Result<ImageConfiguration> {
    Ok(ImageConfigurationBuilder::default()
        .created(now.to_string())
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(Vec::<String>::new())
                .build()?,
        )
        .build()?)
}

/// Write `dir` as a layer tar (uncompressed) to `w`: entries sorted by name, root omitted.
pub(crate) fn write_layer_tar(dir: &Path, w: &mut impl Write) -> Result<()> {
    let mut b = tar::Builder::new(w);
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    walk(&mut b, dir, Path::new(""), &mut links)?;
    b.into_inner()?.flush()?;
    Ok(())
}

fn walk<W: Write>(
    b: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .with_context(|| format!("read {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    for name in names {
        let path = rel.join(&name);
        let full = root.join(&path);
        let md = fs::symlink_metadata(&full).with_context(|| format!("stat {}", full.display()))?;
        append(b, &full, &path, &name, &md, links)
            .with_context(|| format!("tar {}", full.display()))?;
        if md.is_dir() {
            walk(b, root, &path, links)?;
        }
    }
    Ok(())
}

fn header(md: &fs::Metadata, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(md.mode() & 0o7777);
    h.set_uid(md.uid().into());
    h.set_gid(md.gid().into());
    h.set_mtime(md.mtime().max(0) as u64);
    h.set_size(0);
    h
}

fn append<W: Write>(
    b: &mut tar::Builder<W>,
    full: &Path,
    path: &Path,
    name: &OsStr,
    md: &fs::Metadata,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    let ft = md.file_type();
    // An overlay whiteout: the OCI form is an empty file `.wh.NAME` beside it.
    if ft.is_char_device() && md.rdev() == 0 {
        let mut wh_name = std::ffi::OsString::from(".wh.");
        wh_name.push(name);
        let wh = path.with_file_name(wh_name);
        let mut h = header(md, tar::EntryType::Regular);
        h.set_mode(0o600);
        b.append_data(&mut h, wh, io::empty())?;
        return Ok(());
    }
    let xattrs = list_xattrs(full)?;
    let opaque = xattrs
        .iter()
        .any(|(k, v)| k == "trusted.overlay.opaque" && v == b"y");
    let pax: Vec<(String, &[u8])> = xattrs
        .iter()
        .filter(|(k, _)| !k.starts_with("trusted.overlay."))
        .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
        .collect();
    if !pax.is_empty() {
        b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v)))?;
    }
    if ft.is_dir() {
        let mut h = header(md, tar::EntryType::Directory);
        let mut p = path.as_os_str().to_owned();
        p.push("/");
        b.append_data(&mut h, p, io::empty())?;
        if opaque {
            let mut h = header(md, tar::EntryType::Regular);
            h.set_mode(0o600);
            b.append_data(&mut h, path.join(".wh..wh..opq"), io::empty())?;
        }
    } else if ft.is_file() {
        if md.nlink() > 1 {
            if let Some(first) = links.get(&(md.dev(), md.ino())) {
                let mut h = header(md, tar::EntryType::Link);
                b.append_link(&mut h, path, first)?;
                return Ok(());
            }
            links.insert((md.dev(), md.ino()), path.to_path_buf());
        }
        let mut h = header(md, tar::EntryType::Regular);
        h.set_size(md.len());
        b.append_data(&mut h, path, File::open(full)?)?;
    } else if ft.is_symlink() {
        let target = fs::read_link(full)?;
        let mut h = header(md, tar::EntryType::Symlink);
        b.append_link(&mut h, path, target)?;
    } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
        let kind = if ft.is_char_device() {
            tar::EntryType::Char
        } else if ft.is_block_device() {
            tar::EntryType::Block
        } else {
            tar::EntryType::Fifo
        };
        let mut h = header(md, kind);
        if !ft.is_fifo() {
            h.set_device_major(libc::major(md.rdev()))?;
            h.set_device_minor(libc::minor(md.rdev()))?;
        }
        b.append_data(&mut h, path, io::empty())?;
    } else {
        tracing::warn!(
            "{}: sockets are not stored in layers; skipped",
            full.display()
        );
    }
    Ok(())
}

/// The xattrs of `path` itself (not following a symlink), as (name, value).
fn list_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let cpath = CString::new(path.as_os_str().as_bytes())?;
    let mut names = vec![0u8; 4096];
    let n = loop {
        // SAFETY: cpath is NUL-terminated; names is a writable buffer of the length passed.
        let n = unsafe { libc::llistxattr(cpath.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e).context("list xattrs"),
        }
    };
    let mut out = Vec::new();
    for key in names[..n].split(|&c| c == 0).filter(|k| !k.is_empty()) {
        let ckey = CString::new(key)?;
        let mut val = vec![0u8; 256];
        loop {
            // SAFETY: both strings are NUL-terminated; val is writable for its length.
            let r = unsafe {
                libc::lgetxattr(
                    cpath.as_ptr(),
                    ckey.as_ptr(),
                    val.as_mut_ptr().cast(),
                    val.len(),
                )
            };
            if r >= 0 {
                val.truncate(r as usize);
                break;
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) && val.len() < 1 << 20 {
                val.resize(val.len() * 8, 0);
                continue;
            }
            return Err(e).with_context(|| format!("read xattr {}", String::from_utf8_lossy(key)));
        }
        out.push((String::from_utf8_lossy(key).into_owned(), val));
    }
    Ok(out)
}
