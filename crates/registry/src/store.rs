//! The on-disk store. One owner (this module), one layout, every write atomic:
//!
//! ```text
//! ROOT/blobs/<alg>/<hex[..2]>/<hex>                          content (blobs and manifests)
//! ROOT/repositories/<name>/_layers/<alg>/<hex>                  empty link: blob is in the repo
//! ROOT/repositories/<name>/_manifests/revisions/<alg>/<hex>     link holding the media type
//! ROOT/repositories/<name>/_manifests/tags/<tag>                the tagged digest
//! ROOT/repositories/<name>/_referrers/<alg>/<hex>/<alg>-<hex>   descriptor of a referrer
//! ROOT/uploads/<id>/{repo,data}                                 upload sessions
//! ROOT/tmp/                                                     temp files, renamed into place
//! ```
//!
//! Content is renamed into `blobs/` only after its digest was verified, and links are written
//! after the content they point to, so a process killed at any point leaves a store whose every
//! link resolves; leftovers are only in `tmp/` (wiped on start) and `uploads/` (swept when stale).
//! All functions here block: callers run them on tokio's blocking pool.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::names::{Algorithm, Digest};

pub struct Store {
    root: PathBuf,
    tmp_counter: AtomicU64,
    /// Held shared while a manifest's references are checked and it is stored, exclusively
    /// while a blob delete checks that no manifest references the blob: neither can slip
    /// between the other's check and write.
    references: RwLock<()>,
}

impl Store {
    /// Creates the layout under `root` and drops leftovers of an earlier process, upload
    /// sessions included when untouched for `upload_idle`.
    pub fn open(root: &Path, upload_idle: Duration) -> io::Result<Store> {
        for dir in ["blobs", "repositories", "uploads", "tmp"] {
            fs::create_dir_all(root.join(dir))?;
        }
        let store = Store {
            root: root.to_path_buf(),
            tmp_counter: AtomicU64::new(0),
            references: RwLock::new(()),
        };
        // Temp files belong to requests of a previous process: none can still be in flight.
        for entry in fs::read_dir(root.join("tmp"))? {
            let path = entry?.path();
            let _ = fs::remove_file(&path).or_else(|_| fs::remove_dir_all(&path));
        }
        store.sweep_uploads(upload_idle, |_| false);
        Ok(store)
    }

    /// Removes upload sessions whose directory was not modified within `max_age`, except
    /// those `keep` names (live sessions, whose idle time is kept in memory). Returns how many.
    pub fn sweep_uploads(&self, max_age: Duration, keep: impl Fn(&str) -> bool) -> usize {
        let Ok(entries) = fs::read_dir(self.root.join("uploads")) else {
            return 0;
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in entries.flatten() {
            if keep(&entry.file_name().to_string_lossy()) {
                continue;
            }
            let path = entry.path();
            let newest = [path.join("data"), path.clone()]
                .iter()
                .filter_map(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
                .max();
            let stale = match newest {
                Some(t) => now.duration_since(t).unwrap_or_default() > max_age,
                None => true,
            };
            if stale {
                tracing::info!("removing stale upload {}", path.display());
                if fs::remove_dir_all(&path).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// A fresh path in `tmp/` on the store's file system (so a rename into place is atomic).
    pub fn temp_path(&self) -> PathBuf {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{}-{n}", std::process::id()))
    }

    pub fn upload_dir(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm.as_str())
            .join(&d.hex[..2])
            .join(&d.hex)
    }

    fn repo(&self, name: &str) -> PathBuf {
        self.root.join("repositories").join(name)
    }

    fn layer_link(&self, name: &str, d: &Digest) -> PathBuf {
        self.repo(name)
            .join("_layers")
            .join(d.algorithm.as_str())
            .join(&d.hex)
    }

    fn revision(&self, name: &str, d: &Digest) -> PathBuf {
        self.repo(name)
            .join("_manifests/revisions")
            .join(d.algorithm.as_str())
            .join(&d.hex)
    }

    fn tags_dir(&self, name: &str) -> PathBuf {
        self.repo(name).join("_manifests/tags")
    }

    fn referrers_dir(&self, name: &str, subject: &Digest) -> PathBuf {
        self.repo(name)
            .join("_referrers")
            .join(subject.algorithm.as_str())
            .join(&subject.hex)
    }

    pub fn repo_exists(&self, name: &str) -> bool {
        self.repo(name).is_dir()
    }

    /// Size of the stored content, if present.
    pub fn blob_size(&self, d: &Digest) -> io::Result<Option<u64>> {
        match fs::metadata(self.blob_path(d)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Size of `d` if the repository may serve it: pushed or mounted into it as a blob, or
    /// pushed as a manifest (clients may fetch manifests through the blob endpoint too).
    pub fn linked_blob_size(&self, name: &str, d: &Digest) -> io::Result<Option<u64>> {
        if !self.layer_link(name, d).exists() && !self.revision(name, d).exists() {
            return Ok(None);
        }
        self.blob_size(d)
    }

    pub fn link_blob(&self, name: &str, d: &Digest) -> io::Result<()> {
        let link = self.layer_link(name, d);
        if link.exists() {
            return Ok(());
        }
        // An empty file: its existence is the link. Creating it is atomic.
        with_parent(&link, |p| fs::File::create(p).map(drop))
    }

    /// Taken (shared) around checking a manifest's blobs and storing it.
    pub fn manifest_put_lock(&self) -> RwLockReadGuard<'_, ()> {
        self.references.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes the repository's link to a blob; the content stays for other repositories.
    /// A blob that a manifest of the repository references as its config or a layer is kept:
    /// `Err` names that manifest (deleting it first frees the blob).
    pub fn unlink_blob(&self, name: &str, d: &Digest) -> io::Result<Result<bool, Digest>> {
        let _exclusive = self.references.write().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = self.manifest_referencing(name, d)? {
            return Ok(Err(m));
        }
        Ok(Ok(remove_if_exists(&self.layer_link(name, d))?))
    }

    /// The first manifest (by digest) of `name` whose config or layers name blob `d`.
    fn manifest_referencing(&self, name: &str, d: &Digest) -> io::Result<Option<Digest>> {
        let want = d.to_string();
        let mut found = Vec::new();
        let revisions = self.repo(name).join("_manifests/revisions");
        for alg in read_dir_names(&revisions)? {
            for hex in read_dir_names(&revisions.join(&alg))? {
                let Ok(m) = Digest::parse(&format!("{alg}:{hex}")) else {
                    continue;
                };
                let Ok(bytes) = fs::read(self.blob_path(&m)) else {
                    continue;
                };
                let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
                    continue;
                };
                let config = v["config"]["digest"].as_str();
                let layers = v["layers"].as_array().into_iter().flatten();
                let layer_digests = layers.filter_map(|l| l["digest"].as_str());
                if config.into_iter().chain(layer_digests).any(|x| x == want) {
                    found.push(m);
                }
            }
        }
        found.sort();
        Ok(found.into_iter().next())
    }

    /// Moves a verified temp file into the content store, or drops it when the same content
    /// is already there (equal digests mean equal bytes).
    pub fn commit_blob(&self, tmp: &Path, d: &Digest) -> io::Result<()> {
        let dest = self.blob_path(d);
        if dest.exists() {
            return fs::remove_file(tmp);
        }
        with_parent(&dest, |p| fs::rename(tmp, p))
    }

    /// Writes `bytes` to `path` atomically: temp file, fsync, rename.
    pub fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.temp_path();
        let result = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            with_parent(path, |p| fs::rename(&tmp, p))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Stores a verified manifest: content first, then the revision link (with its media
    /// type), then the referrer entry, then the tag, so each step only points at what exists.
    pub fn put_manifest(
        &self,
        name: &str,
        d: &Digest,
        bytes: &[u8],
        media_type: &str,
        tag: Option<&str>,
        referrer: Option<(&Digest, &Value)>,
    ) -> io::Result<()> {
        if !self.blob_path(d).exists() {
            self.write_atomic(&self.blob_path(d), bytes)?;
        }
        self.write_atomic(&self.revision(name, d), media_type.as_bytes())?;
        if let Some((subject, descriptor)) = referrer {
            let entry = self.referrers_dir(name, subject).join(format!(
                "{}-{}",
                d.algorithm.as_str(),
                d.hex
            ));
            self.write_atomic(&entry, descriptor.to_string().as_bytes())?;
        }
        if let Some(tag) = tag {
            self.write_atomic(&self.tags_dir(name).join(tag), d.to_string().as_bytes())?;
        }
        Ok(())
    }

    /// The media type the manifest was pushed with, if the repository has it.
    pub fn manifest_media_type(&self, name: &str, d: &Digest) -> io::Result<Option<String>> {
        match fs::read_to_string(self.revision(name, d)) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn resolve_tag(&self, name: &str, tag: &str) -> io::Result<Option<Digest>> {
        match fs::read_to_string(self.tags_dir(name).join(tag)) {
            Ok(s) => Ok(Digest::parse(s.trim()).ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sorted tags of a repository; `None` when the repository does not exist.
    pub fn tags(&self, name: &str) -> io::Result<Option<Vec<String>>> {
        if !self.repo_exists(name) {
            return Ok(None);
        }
        let mut tags = Vec::new();
        match fs::read_dir(self.tags_dir(name)) {
            Ok(entries) => {
                for entry in entries {
                    tags.push(entry?.file_name().to_string_lossy().into_owned());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        tags.sort();
        Ok(Some(tags))
    }

    pub fn delete_tag(&self, name: &str, tag: &str) -> io::Result<bool> {
        remove_if_exists(&self.tags_dir(name).join(tag))
    }

    /// Removes a manifest from a repository with every tag pointing at it and its referrer
    /// entry (tags first, so no tag ever names a missing revision).
    pub fn delete_manifest(&self, name: &str, d: &Digest) -> io::Result<bool> {
        if !self.revision(name, d).exists() {
            return Ok(false);
        }
        for tag in self.tags(name)?.unwrap_or_default() {
            if self.resolve_tag(name, &tag)?.as_ref() == Some(d) {
                self.delete_tag(name, &tag)?;
            }
        }
        if let Ok(bytes) = fs::read(self.blob_path(d)) {
            let subject = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v["subject"]["digest"].as_str().map(str::to_string))
                .and_then(|s| Digest::parse(&s).ok());
            if let Some(subject) = subject {
                let entry = self.referrers_dir(name, &subject).join(format!(
                    "{}-{}",
                    d.algorithm.as_str(),
                    d.hex
                ));
                remove_if_exists(&entry)?;
            }
        }
        remove_if_exists(&self.revision(name, d))
    }

    /// Descriptors of the manifests in `name` whose `subject` is `subject`, sorted by digest.
    pub fn referrers(&self, name: &str, subject: &Digest) -> io::Result<Vec<Value>> {
        let entries = match fs::read_dir(self.referrers_dir(name, subject)) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry?;
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(d) = file
                .split_once('-')
                .and_then(|(a, h)| Digest::parse(&format!("{a}:{h}")).ok())
            else {
                continue;
            };
            // A referrer whose manifest was deleted in between is not listed.
            if !self.revision(name, &d).exists() {
                continue;
            }
            if let Ok(v) = serde_json::from_slice::<Value>(&fs::read(entry.path())?) {
                found.push((d, v));
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found.into_iter().map(|(_, v)| v).collect())
    }

    /// Every repository that holds at least one manifest, sorted.
    pub fn catalog(&self) -> io::Result<Vec<String>> {
        let mut repos = Vec::new();
        walk_repos(&self.root.join("repositories"), "", &mut repos)?;
        repos.sort();
        Ok(repos)
    }

    /// Recomputes the digest of a file (used when an upload's running hash was lost, e.g.
    /// after a restart, or when the client asks for another algorithm).
    pub fn hash_file(path: &Path, algorithm: Algorithm) -> io::Result<Digest> {
        use sha2::Digest as _;
        use std::io::Read;
        let mut f = fs::File::open(path)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut s256 = sha2::Sha256::new();
        let mut s512 = sha2::Sha512::new();
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            match algorithm {
                Algorithm::Sha256 => s256.update(&buf[..n]),
                Algorithm::Sha512 => s512.update(&buf[..n]),
            }
        }
        let hex = match algorithm {
            Algorithm::Sha256 => hex::encode(s256.finalize()),
            Algorithm::Sha512 => hex::encode(s512.finalize()),
        };
        Ok(Digest { algorithm, hex })
    }
}

fn walk_repos(dir: &Path, prefix: &str, out: &mut Vec<String>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name();
        let child = file_name.to_string_lossy();
        // Names never start with '_', so the store's own directories cannot be repositories.
        if child.starts_with('_') || !entry.file_type()?.is_dir() {
            continue;
        }
        let name = if prefix.is_empty() {
            child.to_string()
        } else {
            format!("{prefix}/{child}")
        };
        if entry.path().join("_manifests").is_dir() {
            out.push(name.clone());
        }
        walk_repos(&entry.path(), &name, out)?;
    }
    Ok(())
}

/// Runs `op(path)`, creating the parent directories once if it fails for their absence.
fn with_parent(path: &Path, op: impl Fn(&Path) -> io::Result<()>) -> io::Result<()> {
    match op(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            op(path)
        }
        other => other,
    }
}

/// The entry names of a directory; none when it does not exist.
fn read_dir_names(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

fn remove_if_exists(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}
