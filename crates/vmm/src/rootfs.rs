//! Root disks from yun images: the image's layers, merged as for a container, written into an
//! ext4 file system (`mkfs.ext4 -d`), so one image runs as a container or as a VM.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::disk::make_ext4;
use crate::qemu::guest_script;

/// An image's root disk (cached, shared: attach it read-only or as scratch, or copy it) and how
/// to run the image's own command in it.
#[derive(Debug, Clone)]
pub struct ImageDisk {
    pub path: PathBuf,
    /// Environment, working dir and the image's entrypoint + cmd, as one guest script.
    pub script: String,
    /// Environment and working dir only, to put before a command given instead of the image's.
    pub env_prefix: String,
}

/// The built-in image, built from the host's busybox when first asked for.
const BUSYBOX: &str = "busybox:latest";

/// Build (once per image id) `DATA/vm/images/<id>.ext4` for `reference`.
pub fn image_disk(data_dir: &Path, reference: &str) -> Result<ImageDisk> {
    let store = yun_image::Store::open(data_dir)?;
    let image = match store.resolve(reference) {
        Ok(i) => i,
        Err(_) if yun_image::normalize(reference).ok().as_deref() == Some(BUSYBOX) => {
            store.busybox()?
        }
        Err(e) => return Err(e.context(format!("image {reference}"))),
    };
    let config = store.image_config(&image)?;
    let c = config.config().clone().unwrap_or_default();
    let mut env_prefix = String::new();
    for kv in c.env().clone().unwrap_or_default() {
        if let Some((k, v)) = kv.split_once('=') {
            if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                env_prefix.push_str(&format!("export {k}={}; ", quote(v)));
            }
        }
    }
    let workdir = c.working_dir().clone().unwrap_or_default();
    if !workdir.is_empty() {
        env_prefix.push_str(&format!("cd {} || exit 1; ", quote(&workdir)));
    }
    let mut argv = c.entrypoint().clone().unwrap_or_default();
    argv.extend(c.cmd().clone().unwrap_or_default());
    if argv.is_empty() {
        argv.push("sh".into());
    }
    // Always quoted: one element is an argv of one, not a script, for an image's command.
    let run = if argv.len() == 1 {
        quote(&argv[0])
    } else {
        guest_script(&argv)
    };
    let script = format!("{env_prefix}{run}");

    let dir = data_dir.join("vm").join("images");
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join(format!("{}.ext4", image.id.hex()));
    if !path.is_file() {
        build(&store, &image, &dir, &path)
            .with_context(|| format!("image {reference}: root disk"))?;
    }
    Ok(ImageDisk {
        path,
        script,
        env_prefix,
    })
}

fn build(
    store: &yun_image::Store,
    image: &yun_image::Image,
    dir: &Path,
    path: &Path,
) -> Result<()> {
    let key = format!("yun-vm-{}", crate::qemu::nonce());
    let tmp = dir.join(format!(".tmp-{key}.ext4"));
    let result = (|| -> Result<()> {
        let rootfs = store.prepare_rootfs(&key, image)?;
        let (bytes, entries) = tree_size(&rootfs.path)?;
        // Room for the files, ext4's metadata and some writes by the guest.
        let size_mib = (bytes + bytes / 4) / (1024 * 1024) + 64;
        make_ext4(&tmp, size_mib, Some(&rootfs.path), Some(entries * 2 + 4096))?;
        fs::rename(&tmp, path)?;
        Ok(())
    })();
    let _ = store.remove_rootfs(&key);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Bytes allocated and entries in a tree (not following symlinks or crossing mounts).
fn tree_size(root: &Path) -> Result<(u64, u64)> {
    let mut bytes = 0;
    let mut entries = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("read {}", d.display()))? {
            let e = e?;
            let m = e.path().symlink_metadata()?;
            entries += 1;
            bytes += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok((bytes, entries))
}

/// Copy a disk image keeping its holes (an ext4 image is mostly unallocated).
pub(crate) fn copy_sparse(from: &Path, to: &Path) -> Result<()> {
    let out = std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(from)
        .arg(to)
        .output()
        .context("cp: cannot run")?;
    if !out.status.success() {
        let _ = fs::remove_file(to);
        bail!(
            "copy {} to {}: {}",
            from.display(),
            to.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
