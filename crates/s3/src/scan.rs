//! Opening a store: the start-up scan of a bucket's directory, which reads every version's
//! metadata trailer into the in-memory index and removes what a killed server left behind
//! (staged bodies in `tmp/`, an older `null` version superseded mid-replace, orphan tags).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use crate::store::{read_trailer, remove_version_files, Bucket, BucketFile, Meta, NULL_VERSION};

/// Empties a directory (creating it if missing): leftovers of a killed server.
pub fn clean_dir(dir: &Path) -> io::Result<()> {
    if dir.exists() {
        for e in fs::read_dir(dir)? {
            let p = e?.path();
            if p.is_dir() {
                fs::remove_dir_all(&p)?;
            } else {
                fs::remove_file(&p)?;
            }
        }
    }
    fs::create_dir_all(dir)
}

/// Reads a bucket's directory: its versions (cleaning what a kill left) and the largest SEQ.
pub fn load_bucket(name: &str, dir: &Path) -> io::Result<(Bucket, u64)> {
    let file: BucketFile = serde_json::from_slice(&fs::read(dir.join("bucket.json"))?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bucket.json: {e}")))?;
    clean_dir(&dir.join("tmp"))?;
    fs::create_dir_all(dir.join("uploads"))?;
    let mut index: BTreeMap<String, Vec<Arc<Meta>>> = BTreeMap::new();
    let mut max_seq = 0;
    let objects = dir.join("objects");
    fs::create_dir_all(&objects)?;
    for hh in fs::read_dir(&objects)? {
        for kd in fs::read_dir(hh?.path())? {
            let kd = kd?.path();
            let mut versions = Vec::new();
            let mut tag_files = Vec::new();
            for f in fs::read_dir(&kd)? {
                let p = f?.path();
                let fname = p
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                if fname.ends_with(".tags") {
                    tag_files.push(p);
                    continue;
                }
                if fname.starts_with(".tmp-") {
                    let _ = fs::remove_file(&p);
                    continue;
                }
                match File::open(&p).and_then(|mut f| read_trailer(&mut f)) {
                    Ok(meta) if meta.file_name() == fname => versions.push(meta),
                    _ => tracing::warn!("s3: ignoring unreadable object file {}", p.display()),
                }
            }
            versions.sort_by_key(|m| std::cmp::Reverse(m.seq));
            // Only the newest `null` counts: an older one is a leftover of a kill mid-replace.
            let mut seen_null = false;
            versions.retain(|m| {
                if m.version_id != NULL_VERSION {
                    return true;
                }
                if seen_null {
                    remove_version_files(&kd, m);
                    return false;
                }
                seen_null = true;
                true
            });
            for t in tag_files {
                let base = t
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                match versions.iter_mut().find(|m| m.file_name() == base) {
                    Some(m) => {
                        if let Ok(tags) = serde_json::from_slice(&fs::read(&t)?) {
                            m.tags = tags;
                        }
                    }
                    None => {
                        let _ = fs::remove_file(&t);
                    }
                }
            }
            if versions.is_empty() {
                let _ = fs::remove_dir(&kd);
                continue;
            }
            max_seq = max_seq.max(versions[0].seq);
            index.insert(
                versions[0].key.clone(),
                versions.into_iter().map(Arc::new).collect(),
            );
        }
    }
    let bucket = Bucket {
        name: name.to_string(),
        dir: dir.to_path_buf(),
        created: UNIX_EPOCH + std::time::Duration::from_secs(file.created),
        versioning: Mutex::new(file.versioning),
        index: Mutex::new(index),
    };
    Ok((bucket, max_seq))
}
