//! Making layer tars from local files for COPY/ADD (a RUN step's layer comes from the
//! overlay upper directory, through `yun_image::Store::put_layer_from_dir`).

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest as _, Sha256};

/// A layer tar being written (into the content store, which hashes it).
pub struct LayerWriter<'a> {
    builder: tar::Builder<&'a mut dyn Write>,
    /// (dev, ino) of files already written → their path, for hardlinks.
    seen: HashMap<(u64, u64), PathBuf>,
}

/// A header for an entry we make up (parents, whiteouts): root-owned, time zero.
fn synthetic(kind: tar::EntryType, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(0);
    h.set_mtime(0);
    h
}

impl<'a> LayerWriter<'a> {
    pub fn new(out: &'a mut dyn Write) -> LayerWriter<'a> {
        let mut builder = tar::Builder::new(out);
        builder.follow_symlinks(false);
        LayerWriter {
            builder,
            seen: HashMap::new(),
        }
    }

    pub fn finish(self) -> Result<()> {
        self.builder.into_inner()?.flush()?;
        Ok(())
    }

    /// Every directory of `path` (relative) as an entry, so the layer stands on its own.
    pub fn parents(&mut self, rel: &Path) -> Result<()> {
        let mut acc = PathBuf::new();
        let comps: Vec<_> = rel.components().collect();
        for c in comps.iter().take(comps.len().saturating_sub(1)) {
            acc.push(c);
            let mut h = synthetic(tar::EntryType::Directory, 0o755);
            self.builder.append_data(&mut h, &acc, std::io::empty())?;
        }
        Ok(())
    }

    /// Add `src` (a host path, not followed if a symlink) as `rel` in the layer.
    pub fn add_path(&mut self, src: &Path, rel: &Path, owner: Option<(u32, u32)>) -> Result<()> {
        let meta = fs::symlink_metadata(src).with_context(|| format!("stat {}", src.display()))?;
        let mut h = tar::Header::new_gnu();
        h.set_mode(meta.mode() & 0o7777);
        let (uid, gid) = owner.unwrap_or((meta.uid(), meta.gid()));
        h.set_uid(uid as u64);
        h.set_gid(gid as u64);
        h.set_mtime(meta.mtime().max(0) as u64);
        h.set_size(0);
        let ft = meta.file_type();
        if ft.is_file() && meta.nlink() > 1 {
            if let Some(first) = self.seen.get(&(meta.dev(), meta.ino())).cloned() {
                h.set_entry_type(tar::EntryType::Link);
                self.builder.append_link(&mut h, rel, &first)?;
                return Ok(());
            }
            self.seen
                .insert((meta.dev(), meta.ino()), rel.to_path_buf());
        }
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            self.builder.append_data(&mut h, rel, std::io::empty())?;
        } else if ft.is_file() {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(meta.len());
            let f = fs::File::open(src).with_context(|| format!("open {}", src.display()))?;
            self.builder.append_data(&mut h, rel, f)?;
        } else if ft.is_symlink() {
            h.set_entry_type(tar::EntryType::Symlink);
            let target = fs::read_link(src)?;
            self.builder.append_link(&mut h, rel, &target)?;
        } else if ft.is_char_device() || ft.is_block_device() {
            h.set_entry_type(if ft.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            });
            let rdev = meta.rdev();
            h.set_device_major(nix::sys::stat::major(rdev) as u32)?;
            h.set_device_minor(nix::sys::stat::minor(rdev) as u32)?;
            self.builder.append_data(&mut h, rel, std::io::empty())?;
        } else if ft.is_fifo() {
            h.set_entry_type(tar::EntryType::Fifo);
            self.builder.append_data(&mut h, rel, std::io::empty())?;
        }
        // Sockets are not content: skipped, as tar does.
        Ok(())
    }
}

/// A tar or gzip-compressed tar, by magic bytes.
fn is_tar(p: &Path) -> Result<bool> {
    use std::io::Read;
    let mut head = [0u8; 512];
    let n = fs::File::open(p)?.read(&mut head)?;
    Ok((n >= 2 && head[..2] == [0x1f, 0x8b]) || (n >= 262 && &head[257..262] == b"ustar"))
}

impl LayerWriter<'_> {
    /// Copy the entries of a local archive under `dest`; entries that would climb out with
    /// `..` are refused, absolute ones are taken relative to `dest`.
    fn extract(&mut self, archive: &Path, dest: &Path, owner: Option<(u32, u32)>) -> Result<()> {
        use std::io::Read;
        let mut f = fs::File::open(archive)?;
        let mut magic = [0u8; 2];
        let n = f.read(&mut magic)?;
        let f = fs::File::open(archive)?;
        let reader: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
            Box::new(flate2::read::GzDecoder::new(f))
        } else {
            Box::new(f)
        };
        let mut ar = tar::Archive::new(reader);
        for entry in ar.entries()? {
            let mut entry = entry?;
            let rel: PathBuf = entry
                .path()?
                .components()
                .filter(|c| {
                    !matches!(
                        c,
                        std::path::Component::RootDir | std::path::Component::CurDir
                    )
                })
                .collect();
            if rel
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                bail!(
                    "{}: entry {} leaves the destination",
                    archive.display(),
                    rel.display()
                );
            }
            let path = dest.join(&rel);
            let mut h = entry.header().clone();
            if let Some((u, g)) = owner {
                h.set_uid(u as u64);
                h.set_gid(g as u64);
            }
            match h.entry_type() {
                tar::EntryType::Link | tar::EntryType::Symlink => {
                    let target = entry
                        .link_name()?
                        .map(|t| t.into_owned())
                        .unwrap_or_default();
                    let target = if h.entry_type() == tar::EntryType::Link {
                        dest.join(target)
                    } else {
                        target
                    };
                    self.builder.append_link(&mut h, &path, &target)?;
                }
                _ => self.builder.append_data(&mut h, &path, &mut entry)?,
            }
        }
        Ok(())
    }
}

/// COPY/ADD: `sources` (under `context`) placed at `dest` the way docker places them.
pub fn from_sources(
    context: &Path,
    sources: &[String],
    dest: &str,
    owner: Option<(u32, u32)>,
    add: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let mut w = LayerWriter::new(out);
    let dest_rel = PathBuf::from(dest.trim_start_matches('/'));
    let into_dir = dest.ends_with('/') || sources.len() > 1;
    w.parents(&dest_rel.join("x"))?;
    for s in sources {
        let src = resolve_source(context, s)?;
        let meta =
            fs::metadata(&src).with_context(|| format!("{s}: not found in the build context"))?;
        if add && meta.is_file() && is_tar(&src)? {
            // ADD of a local tar archive (plain or gzip) unpacks it into dest.
            w.extract(&src, &dest_rel, owner)
                .with_context(|| format!("ADD {s}"))?;
        } else if meta.is_dir() {
            // A directory's contents go into dest.
            if !dest_rel.as_os_str().is_empty() {
                w.add_path(&src, &dest_rel, owner)?;
            }
            copy_tree(&mut w, &src, &dest_rel, owner)?;
        } else {
            let target = if into_dir {
                dest_rel.join(src.file_name().unwrap_or_default())
            } else {
                dest_rel.clone()
            };
            w.add_path(&src, &target, owner)?;
        }
    }
    w.finish()
}

fn copy_tree(
    w: &mut LayerWriter<'_>,
    dir: &Path,
    rel: &Path,
    owner: Option<(u32, u32)>,
) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let r = rel.join(e.file_name());
        w.add_path(&e.path(), &r, owner)?;
        if e.file_type()?.is_dir() {
            copy_tree(w, &e.path(), &r, owner)?;
        }
    }
    Ok(())
}

/// A source must stay inside the build context.
pub fn resolve_source(context: &Path, s: &str) -> Result<PathBuf> {
    if s.contains("://") {
        bail!("{s}: remote sources are not supported (yun builds offline)");
    }
    let joined = context.join(s.trim_start_matches('/'));
    let canon = joined
        .canonicalize()
        .with_context(|| format!("{s}: not found in the build context"))?;
    let ctx = context.canonicalize()?;
    if !canon.starts_with(&ctx) {
        bail!("{s}: outside the build context");
    }
    Ok(canon)
}

/// A hash of what COPY would put in the layer: names, modes and contents.
pub fn content_hash(context: &Path, sources: &[String]) -> Result<String> {
    let mut h = Sha256::new();
    for s in sources {
        let src = resolve_source(context, s)?;
        hash_path(&mut h, &src, Path::new(s))?;
    }
    Ok(hex::encode(h.finalize()))
}

fn hash_path(h: &mut Sha256, path: &Path, rel: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(path)?;
    h.update(rel.as_os_str().as_encoded_bytes());
    h.update(meta.mode().to_le_bytes());
    if meta.is_file() {
        let mut f = fs::File::open(path)?;
        std::io::copy(&mut f, h)?;
    } else if meta.file_type().is_symlink() {
        h.update(fs::read_link(path)?.as_os_str().as_encoded_bytes());
    } else if meta.is_dir() {
        let mut entries: Vec<_> = fs::read_dir(path)?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            hash_path(h, &e.path(), &rel.join(e.file_name()))?;
        }
    }
    Ok(())
}
