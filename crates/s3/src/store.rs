//! The storage engine: buckets, object versions and their metadata on the local filesystem.
//!
//! # On-disk layout
//!
//! ```text
//! ROOT/
//!   tmp/                              staging for bucket create/delete (emptied on start)
//!   buckets/NAME/
//!     bucket.json                     creation time, versioning state (write temp + rename)
//!     tmp/                            object bodies being received (emptied on start)
//!     objects/HH/SHA256(KEY)/         one directory per key, named by the hash of the key
//!       SEQ-VERSIONID                 one file per version: DATA ‖ META-JSON ‖ len u64le ‖ "YUNS3OB1"
//!       SEQ-VERSIONID.tags            tags set after the upload (replaces META's tags)
//!     uploads/UPLOADID/               multipart uploads (see `multipart`)
//! ```
//!
//! A key never becomes a path: its directory is named by the SHA-256 of its bytes (`HH` is the
//! first two hex digits), so `..`, `/`, NUL or unicode in a key cannot reach outside the bucket.
//! Bucket names are checked against S3's rules (lowercase letters, digits, `-`, `.`) before
//! they are joined to a path.
//!
//! Data and metadata of a version live in one file, the metadata as a trailer, so they become
//! visible together: the body is streamed into `tmp/`, hashed on the way, the trailer appended,
//! the file fsynced and renamed into the key's directory (then the directory is fsynced). A
//! kill at any point leaves either no file under the key or a complete one; what is left in
//! `tmp/` is removed on the next start. `SEQ` is a 16-hex-digit counter that grows with time:
//! the newest version of a key is the file with the largest name. An unversioned bucket keeps
//! one version, `null`; writing a new `null` renames the new file in before the old is removed,
//! and a start-up scan removes an older `null` left by a kill between the two.
//!
//! All keys' newest metadata is kept in memory (a sorted map per bucket, read at start), so
//! listing is a walk of a `BTreeMap` in UTF-8 byte order, as S3 sorts.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Code, S3Error, S3Result};

const MAGIC: &[u8; 8] = b"YUNS3OB1";
pub const NULL_VERSION: &str = "null";

/// Everything known about one version of an object (or a delete marker).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Meta {
    pub key: String,
    pub version_id: String,
    pub seq: u64,
    #[serde(default)]
    pub delete_marker: bool,
    pub size: u64,
    /// Hex MD5 of the content, or of the parts' MD5s with `-N` for multipart objects.
    pub etag: String,
    /// Milliseconds since the epoch.
    pub last_modified: u64,
    #[serde(default)]
    pub content_type: Option<String>,
    /// Standard headers stored and returned as given (Cache-Control, Content-Disposition, …).
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// `x-amz-meta-*` without the prefix, lowercase names.
    #[serde(default)]
    pub user_meta: Vec<(String, String)>,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
}

impl Meta {
    pub fn modified(&self) -> SystemTime {
        UNIX_EPOCH + std::time::Duration::from_millis(self.last_modified)
    }

    pub fn file_name(&self) -> String {
        format!("{:016x}-{}", self.seq, self.version_id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Versioning {
    Unversioned,
    Enabled,
    Suspended,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct BucketFile {
    pub created: u64,
    pub versioning: Versioning,
}

pub struct Bucket {
    pub name: String,
    pub dir: PathBuf,
    pub created: SystemTime,
    pub(crate) versioning: Mutex<Versioning>,
    /// Every key's versions, newest first.
    pub index: Mutex<BTreeMap<String, Vec<Arc<Meta>>>>,
}

impl Bucket {
    pub fn versioning(&self) -> Versioning {
        *self.versioning.lock().unwrap()
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    pub fn uploads_dir(&self) -> PathBuf {
        self.dir.join("uploads")
    }

    pub fn key_dir(&self, key: &str) -> PathBuf {
        let h = hex::encode(Sha256::digest(key.as_bytes()));
        self.dir.join("objects").join(&h[..2]).join(h)
    }

    pub fn version_path(&self, meta: &Meta) -> PathBuf {
        self.key_dir(&meta.key).join(meta.file_name())
    }

    /// The newest version of a key (possibly a delete marker).
    pub fn latest(&self, key: &str) -> Option<Arc<Meta>> {
        self.index.lock().unwrap().get(key)?.first().cloned()
    }

    pub fn version(&self, key: &str, version_id: &str) -> Option<Arc<Meta>> {
        let index = self.index.lock().unwrap();
        index
            .get(key)?
            .iter()
            .find(|m| m.version_id == version_id)
            .cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.index.lock().unwrap().is_empty()
    }
}

pub struct Store {
    root: PathBuf,
    buckets: Mutex<BTreeMap<String, Arc<Bucket>>>,
    seq: AtomicU64,
    ids: AtomicU64,
    seed: [u8; 32],
}

/// S3's bucket naming rules (the current ones, without the legacy us-east-1 exceptions).
pub fn check_bucket_name(name: &str) -> S3Result<()> {
    let bad = |why: &str| {
        Err(S3Error::new(
            Code::InvalidBucketName,
            format!("The specified bucket is not valid: {why}"),
        )
        .with("BucketName", name))
    };
    if name.len() < 3 || name.len() > 63 {
        return bad("length must be 3 to 63");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return bad("only lowercase letters, digits, '.' and '-' are allowed");
    }
    let first = name.as_bytes()[0];
    let last = name.as_bytes()[name.len() - 1];
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return bad("must begin and end with a letter or digit");
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return bad("adjacent periods or period-hyphen");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return bad("must not be an IP address");
    }
    if name.starts_with("xn--") || name.starts_with("sthree-") || name.ends_with("-s3alias") {
        return bad("reserved prefix or suffix");
    }
    Ok(())
}

pub fn check_key(key: &str) -> S3Result<()> {
    if key.is_empty() {
        return Err(S3Error::new(Code::InvalidArgument, "Object key is empty"));
    }
    if key.len() > 1024 {
        return Err(S3Error::new(
            Code::KeyTooLongError,
            "Your key is too long (max 1024 bytes)",
        ));
    }
    Ok(())
}

/// Writes a small file atomically: temp in the same directory, fsync, rename, fsync the dir.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Appends the metadata trailer to an open data file.
pub fn append_trailer(f: &mut File, meta: &Meta) -> io::Result<()> {
    let json = serde_json::to_vec(meta).map_err(io::Error::other)?;
    f.write_all(&json)?;
    f.write_all(&(json.len() as u64).to_le_bytes())?;
    f.write_all(MAGIC)
}

/// Reads a version file's trailer: its metadata (data is bytes `0..meta.size`).
pub fn read_trailer(f: &mut File) -> io::Result<Meta> {
    let len = f.metadata()?.len();
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "no yun object trailer");
    if len < 16 {
        return Err(bad());
    }
    f.seek(SeekFrom::Start(len - 16))?;
    let mut tail = [0u8; 16];
    f.read_exact(&mut tail)?;
    if &tail[8..] != MAGIC {
        return Err(bad());
    }
    let json_len = u64::from_le_bytes(tail[..8].try_into().unwrap());
    if json_len > len - 16 || json_len > 16 << 20 {
        return Err(bad());
    }
    f.seek(SeekFrom::Start(len - 16 - json_len))?;
    let mut json = vec![0u8; json_len as usize];
    f.read_exact(&mut json)?;
    let meta: Meta = serde_json::from_slice(&json).map_err(|_| bad())?;
    if meta.size != len - 16 - json_len {
        return Err(bad());
    }
    Ok(meta)
}

impl Store {
    /// Opens (creating) the storage under `root`, removes temp files a killed server left and
    /// reads every bucket's index.
    pub fn open(root: &Path) -> io::Result<Store> {
        fs::create_dir_all(root.join("buckets"))?;
        crate::scan::clean_dir(&root.join("tmp"))?;
        let mut seed = [0u8; 32];
        File::open("/dev/urandom")?.read_exact(&mut seed)?;
        let store = Store {
            root: root.to_path_buf(),
            buckets: Mutex::new(BTreeMap::new()),
            seq: AtomicU64::new(0),
            ids: AtomicU64::new(0),
            seed,
        };
        let mut max_seq = 0;
        for e in fs::read_dir(root.join("buckets"))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            // Without bucket.json it is not a bucket (e.g. a directory a PUT racing a
            // DeleteBucket could not have created: see `commit`); left alone.
            if check_bucket_name(&name).is_err() || !e.path().join("bucket.json").exists() {
                tracing::warn!("s3: ignoring {} (not a bucket)", e.path().display());
                continue;
            }
            let (bucket, seq) = crate::scan::load_bucket(&name, &e.path())?;
            max_seq = max_seq.max(seq);
            store.buckets.lock().unwrap().insert(name, Arc::new(bucket));
        }
        store.seq.store(max_seq, Ordering::SeqCst);
        Ok(store)
    }

    /// A sequence number larger than any before, growing with time (microseconds).
    pub fn next_seq(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64;
        let mut cur = self.seq.load(Ordering::SeqCst);
        loop {
            let next = now.max(cur + 1);
            match self
                .seq
                .compare_exchange(cur, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return next,
                Err(c) => cur = c,
            }
        }
    }

    /// A fresh random-looking identifier (version ids, upload ids, request ids).
    pub fn new_id(&self) -> String {
        let n = self.ids.fetch_add(1, Ordering::SeqCst);
        let mut h = Sha256::new();
        h.update(self.seed);
        h.update(n.to_le_bytes());
        hex::encode(&h.finalize()[..16])
    }

    pub fn bucket(&self, name: &str) -> S3Result<Arc<Bucket>> {
        self.buckets
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or_else(|| S3Error::no_such_bucket(name))
    }

    pub fn buckets(&self) -> Vec<Arc<Bucket>> {
        self.buckets.lock().unwrap().values().cloned().collect()
    }

    pub fn create_bucket(&self, name: &str) -> S3Result<()> {
        check_bucket_name(name)?;
        let mut buckets = self.buckets.lock().unwrap();
        if buckets.contains_key(name) {
            return Err(S3Error::new(
                Code::BucketAlreadyOwnedByYou,
                "Your previous request to create the named bucket succeeded and you already own it.",
            )
            .with("BucketName", name));
        }
        // Built in ROOT/tmp and renamed into place: a bucket is there whole or not at all.
        let staging = self
            .root
            .join("tmp")
            .join(format!("bucket-{}", self.new_id()));
        let created = SystemTime::now();
        fs::create_dir_all(staging.join("tmp"))?;
        fs::create_dir_all(staging.join("objects"))?;
        fs::create_dir_all(staging.join("uploads"))?;
        let file = BucketFile {
            created: crate::time::secs(created),
            versioning: Versioning::Unversioned,
        };
        write_atomic(
            &staging.join("bucket.json"),
            &serde_json::to_vec(&file).map_err(S3Error::internal)?,
        )?;
        let dir = self.root.join("buckets").join(name);
        fs::rename(&staging, &dir)?;
        sync_dir(&self.root.join("buckets"))?;
        buckets.insert(
            name.to_string(),
            Arc::new(Bucket {
                name: name.to_string(),
                dir,
                created: UNIX_EPOCH + std::time::Duration::from_secs(file.created),
                versioning: Mutex::new(Versioning::Unversioned),
                index: Mutex::new(BTreeMap::new()),
            }),
        );
        Ok(())
    }

    pub fn delete_bucket(&self, name: &str) -> S3Result<()> {
        let mut buckets = self.buckets.lock().unwrap();
        let bucket = buckets
            .get(name)
            .cloned()
            .ok_or_else(|| S3Error::no_such_bucket(name))?;
        if !bucket.is_empty() {
            return Err(S3Error::new(
                Code::BucketNotEmpty,
                "The bucket you tried to delete is not empty",
            )
            .with("BucketName", name));
        }
        // Renamed out first so the name is free at once; the remains are removed after.
        let grave = self
            .root
            .join("tmp")
            .join(format!("deleted-{}", self.new_id()));
        fs::rename(&bucket.dir, &grave)?;
        buckets.remove(name);
        drop(buckets);
        let _ = fs::remove_dir_all(&grave);
        Ok(())
    }

    pub fn set_versioning(&self, bucket: &Bucket, v: Versioning) -> S3Result<()> {
        let mut cur = bucket.versioning.lock().unwrap();
        let file = BucketFile {
            created: crate::time::secs(bucket.created),
            versioning: v,
        };
        write_atomic(
            &bucket.dir.join("bucket.json"),
            &serde_json::to_vec(&file).map_err(S3Error::internal)?,
        )?;
        *cur = v;
        Ok(())
    }

    /// Moves a complete version file (trailer written, fsynced) from the bucket's tmp dir to
    /// its key, and records it. In an unversioned or suspended bucket the previous `null`
    /// version is replaced.
    pub fn commit(&self, bucket: &Bucket, staged: &Path, meta: Meta) -> S3Result<Arc<Meta>> {
        let dir = bucket.key_dir(&meta.key);
        let meta = Arc::new(meta);
        let target = dir.join(meta.file_name());
        let mut tries = 0;
        loop {
            {
                // Under the index lock, as `remove_version` removes an empty key dir under it.
                let _index = bucket.index.lock().unwrap();
                make_key_dir(bucket, &dir)?;
            }
            match fs::rename(staged, &target) {
                Ok(()) => break,
                // The key's last version was removed meanwhile, and its dir with it.
                Err(e) if e.kind() == io::ErrorKind::NotFound && staged.exists() && tries < 3 => {
                    tries += 1
                }
                Err(e) => return Err(e.into()),
            }
        }
        // The rename and the directory's fsync run unlocked: writers of other keys proceed.
        sync_dir(&dir)?;
        let mut index = bucket.index.lock().unwrap();
        let versions = index.entry(meta.key.clone()).or_default();
        let pos = versions
            .iter()
            .position(|v| v.seq < meta.seq)
            .unwrap_or(versions.len());
        versions.insert(pos, meta.clone());
        if meta.version_id == NULL_VERSION {
            // A concurrent writer may have committed a newer `null` already: the newest stays.
            let keep = versions
                .iter()
                .filter(|v| v.version_id == NULL_VERSION)
                .map(|v| v.seq)
                .max()
                .unwrap_or(meta.seq);
            let old: Vec<_> = versions
                .iter()
                .filter(|v| v.version_id == NULL_VERSION && v.seq != keep)
                .cloned()
                .collect();
            versions.retain(|v| v.version_id != NULL_VERSION || v.seq == keep);
            for o in old {
                remove_version_files(&dir, &o);
            }
        }
        Ok(meta)
    }

    /// Removes one version for good (file and tags).
    pub fn remove_version(
        &self,
        bucket: &Bucket,
        key: &str,
        version_id: &str,
    ) -> Option<Arc<Meta>> {
        let mut index = bucket.index.lock().unwrap();
        let versions = index.get_mut(key)?;
        let pos = versions.iter().position(|v| v.version_id == version_id)?;
        let meta = versions.remove(pos);
        if versions.is_empty() {
            index.remove(key);
        }
        let dir = bucket.key_dir(key);
        remove_version_files(&dir, &meta);
        let _ = fs::remove_dir(&dir);
        Some(meta)
    }

    /// Replaces a version's tags (a sidecar file beside the version, written atomically).
    pub fn set_tags(
        &self,
        bucket: &Bucket,
        meta: &Meta,
        tags: Vec<(String, String)>,
    ) -> S3Result<()> {
        let mut index = bucket.index.lock().unwrap();
        let path = bucket.version_path(meta);
        let tags_path = path.with_file_name(format!("{}.tags", meta.file_name()));
        write_atomic(
            &tags_path,
            &serde_json::to_vec(&tags).map_err(S3Error::internal)?,
        )?;
        if let Some(versions) = index.get_mut(&meta.key) {
            for v in versions.iter_mut() {
                if v.seq == meta.seq {
                    let mut m = (**v).clone();
                    m.tags = tags.clone();
                    *v = Arc::new(m);
                }
            }
        }
        Ok(())
    }
}

/// Creates `objects/HH/KEYHASH` level by level under the bucket's existing `objects/` dir, so a
/// bucket deleted meanwhile (renamed away) is never recreated by a late PUT.
fn make_key_dir(bucket: &Bucket, dir: &Path) -> S3Result<()> {
    for d in [dir.parent().expect("HH dir"), dir] {
        match fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(S3Error::no_such_bucket(&bucket.name))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

pub(crate) fn remove_version_files(dir: &Path, meta: &Meta) {
    let _ = fs::remove_file(dir.join(meta.file_name()));
    let _ = fs::remove_file(dir.join(format!("{}.tags", meta.file_name())));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        for ok in ["abc", "my-bucket.2", "a".repeat(63).as_str()] {
            assert!(check_bucket_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "ABC",
            "a_b",
            "..",
            "a..b",
            "-ab",
            "ab-",
            "192.168.1.1",
            "a/b",
            "../x",
            "xn--ab",
        ] {
            assert!(check_bucket_name(bad).is_err(), "{bad}");
        }
    }
}
