//! `yun pull` / `yun push` against any OCI distribution registry.
//!
//! Pull: manifest (an index resolves to linux/amd64), then config and layers in parallel,
//! each streamed to `images/partial/DIGEST` and resumed from its size with a Range request
//! after an interruption, verified, and moved into the store. Push: every blob the registry
//! lacks (HEAD first, so a second push after an interruption sends only what is missing),
//! then the manifest exactly as stored, so digests survive round trips.

pub mod client;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{Method, StatusCode};
use tokio::io::AsyncWriteExt;
use yun_image::{Digest, Image, Store};

use client::{check, manifest_accept, Options, Reference, Session};

/// How many blobs move at once.
const PARALLEL: usize = 4;

/// Progress: bars on a terminal, one line per blob otherwise.
struct Progress {
    multi: Option<indicatif::MultiProgress>,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            multi: std::io::stdout()
                .is_terminal()
                .then(indicatif::MultiProgress::new),
        }
    }

    /// `hex`: the blob digest's hex digits.
    fn bar(&self, verb: &str, hex: &str, size: u64) -> Option<indicatif::ProgressBar> {
        let short = &hex[..12.min(hex.len())];
        match &self.multi {
            Some(m) => {
                let b = m.add(indicatif::ProgressBar::new(size));
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                b.set_message(format!("{verb} blob {short}"));
                Some(b)
            }
            None => {
                println!("{verb} blob {short} ({size} bytes)");
                None
            }
        }
    }
}

pub async fn pull(store: Arc<Store>, reference: &str, opts: &Options) -> Result<Image> {
    let r = Reference::parse(reference)?;
    let session = Arc::new(Session::connect(&r.registry, opts).await?);
    let scope = format!("repository:{}:pull", r.repository);
    let (mut bytes, media) = get_manifest(&session, &r, &r.reference, &scope).await?;
    if media.contains("index") || media.contains("manifest.list") {
        let index: serde_json::Value = serde_json::from_slice(&bytes).context("image index")?;
        let pick = index["manifests"]
            .as_array()
            .and_then(|list| {
                list.iter().find(|m| {
                    m["platform"]["os"] == "linux" && m["platform"]["architecture"] == "amd64"
                })
            })
            .ok_or_else(|| anyhow!("{reference}: the index has no linux/amd64 image"))?;
        let d = pick["digest"]
            .as_str()
            .ok_or_else(|| anyhow!("index entry without digest"))?
            .to_string();
        bytes = get_manifest(&session, &r, &d, &scope).await?.0;
    }
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).context("manifest")?;
    let mut blobs: Vec<(Digest, u64)> = Vec::new();
    let config = &manifest["config"];
    blobs.push((
        parse_digest(&config["digest"])?,
        config["size"].as_u64().unwrap_or(0),
    ));
    for l in manifest["layers"]
        .as_array()
        .ok_or_else(|| anyhow!("manifest has no layers"))?
    {
        blobs.push((parse_digest(&l["digest"])?, l["size"].as_u64().unwrap_or(0)));
    }
    let names = if r.reference.starts_with("sha256:") {
        Vec::new()
    } else {
        vec![r.name()]
    };
    // Blobs arrive before their image is recorded: keep gc away until then, and remove what
    // this pull brought if the image is refused (a bad layer), so nothing of it stays.
    let ingest = store.ingest_lock()?;
    let fetched = std::sync::Mutex::new(Vec::new());
    let progress = Progress::new();
    let got = all_parallel(blobs, |(d, size)| {
        let (store, session, r, scope, progress) = (&store, &session, &r, &scope, &progress);
        let fetched = &fetched;
        async move {
            if store.has_blob(&d) {
                return Ok(());
            }
            fetch_blob(store, session, r, scope, &d, size, progress)
                .await
                .with_context(|| format!("blob {d}"))?;
            fetched.lock().expect("not poisoned").push(d);
            Ok(())
        }
    })
    .await;
    let store2 = store.clone();
    let recorded = match got {
        Ok(()) => tokio::task::spawn_blocking(move || store2.add_image(&bytes, &names))
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r),
        Err(e) => Err(e),
    };
    drop(ingest);
    if recorded.is_err() {
        let fetched = fetched.into_inner().expect("not poisoned");
        let store2 = store.clone();
        let _ = tokio::task::spawn_blocking(move || store2.forget_unreferenced(&fetched)).await;
    }
    recorded.with_context(|| format!("pull {reference}"))
}

/// Run `f` on every item, PARALLEL at a time; the first error wins (after all finish).
async fn all_parallel<T, F, Fut>(items: Vec<T>, f: F) -> Result<()>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let results: Vec<Result<()>> = futures::stream::iter(items.into_iter().map(f))
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    results.into_iter().collect()
}

fn parse_digest(v: &serde_json::Value) -> Result<Digest> {
    Ok(v.as_str()
        .ok_or_else(|| anyhow!("missing digest"))?
        .parse()?)
}

async fn get_manifest(
    s: &Session,
    r: &Reference,
    reference: &str,
    scope: &str,
) -> Result<(Vec<u8>, String)> {
    let path = format!("/v2/{}/manifests/{reference}", r.repository);
    let resp = s
        .send(
            |s| s.request(Method::GET, &path).headers(manifest_accept()),
            scope,
        )
        .await?;
    let resp = check(
        resp,
        &format!("manifest {}/{}:{reference}", r.registry, r.repository),
    )
    .await?;
    let media = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = resp.bytes().await?.to_vec();
    if reference.starts_with("sha256:") {
        let got = Digest::of(&bytes).to_string();
        if got != reference {
            bail!("manifest {reference}: the registry sent bytes with digest {got}");
        }
    }
    Ok((bytes, media))
}

/// Download into images/partial/HEX, resuming from what is there, then store (verified).
async fn fetch_blob(
    store: &Arc<Store>,
    s: &Session,
    r: &Reference,
    scope: &str,
    d: &Digest,
    size: u64,
    progress: &Progress,
) -> Result<()> {
    let dir = store.data_dir().join("images/partial");
    tokio::fs::create_dir_all(&dir).await?;
    let hex = d.hex().to_string();
    let partial: PathBuf = dir.join(&hex);
    let have = tokio::fs::metadata(&partial)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    let path = format!("/v2/{}/blobs/{d}", r.repository);
    let resp = s
        .send(
            |s| {
                let req = s.request(Method::GET, &path);
                if have > 0 {
                    req.header(RANGE, format!("bytes={have}-"))
                } else {
                    req
                }
            },
            scope,
        )
        .await?;
    let resumed = resp.status() == StatusCode::PARTIAL_CONTENT;
    let resp = check(resp, "download").await?;
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(resumed)
        .write(true)
        .truncate(!resumed)
        .open(&partial)
        .await?;
    let bar = progress.bar("Copying", &hex, size);
    if let (Some(b), true) = (&bar, resumed) {
        b.set_position(have);
    }
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("download interrupted (run the pull again to resume)")?;
        file.write_all(&chunk).await?;
        if let Some(b) = &bar {
            b.inc(chunk.len() as u64);
        }
    }
    file.flush().await?;
    drop(file);
    if let Some(b) = bar {
        b.finish();
    }
    let (store, d2, p2) = (store.clone(), d.clone(), partial.clone());
    let stored = tokio::task::spawn_blocking(move || -> Result<()> {
        let f = std::fs::File::open(&p2)?;
        store.put_blob(std::io::BufReader::with_capacity(1 << 20, f), Some(&d2))?;
        Ok(())
    })
    .await?;
    // Verified or not, the partial file is done with: a corrupt one must not be resumed.
    let _ = tokio::fs::remove_file(&partial).await;
    stored
}

pub async fn push(
    store: Arc<Store>,
    image_ref: &str,
    dest: &str,
    opts: &Options,
) -> Result<String> {
    let image = store.resolve(image_ref)?;
    let r = Reference::parse(dest)?;
    if r.reference.starts_with("sha256:") {
        bail!("{dest}: push to a tag, not a digest");
    }
    let session = Arc::new(Session::connect(&r.registry, opts).await?);
    let scope = format!("repository:{}:pull,push", r.repository);
    let manifest_bytes = store.read_blob(&image.manifest_digest)?;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes)?;
    let mut blobs = vec![parse_digest(&manifest["config"]["digest"])?];
    for l in manifest["layers"]
        .as_array()
        .ok_or_else(|| anyhow!("manifest has no layers"))?
    {
        blobs.push(parse_digest(&l["digest"])?);
    }
    let progress = Progress::new();
    all_parallel(blobs, |d| {
        let (store, session, r, scope, progress) = (&store, &session, &r, &scope, &progress);
        async move {
            upload_blob(store, session, r, scope, &d, progress)
                .await
                .with_context(|| format!("blob {d}"))
        }
    })
    .await?;
    let media = manifest["mediaType"]
        .as_str()
        .unwrap_or("application/vnd.oci.image.manifest.v1+json")
        .to_string();
    let path = format!("/v2/{}/manifests/{}", r.repository, r.reference);
    let resp = session
        .send(
            |s| {
                s.request(Method::PUT, &path)
                    .header(CONTENT_TYPE, media.clone())
                    .body(manifest_bytes.clone())
            },
            &scope,
        )
        .await?;
    check(resp, "push manifest").await?;
    Ok(image.manifest_digest.to_string())
}

async fn upload_blob(
    store: &Arc<Store>,
    s: &Session,
    r: &Reference,
    scope: &str,
    d: &Digest,
    progress: &Progress,
) -> Result<()> {
    let head = format!("/v2/{}/blobs/{d}", r.repository);
    let resp = s.send(|s| s.request(Method::HEAD, &head), scope).await?;
    if resp.status().is_success() {
        return Ok(()); // already there (a resumed push skips it)
    }
    let size = store.blob_size(d)?;
    let start = format!("/v2/{}/blobs/uploads/", r.repository);
    let resp = check(
        s.send(|s| s.request(Method::POST, &start), scope).await?,
        "start upload",
    )
    .await?;
    let location = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| anyhow!("upload without Location"))?
        .to_string();
    let mut url = if location.starts_with("http") {
        location
    } else {
        format!("{}{location}", s.base)
    };
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str(&format!("digest={d}"));
    let hex = d.hex().to_string();
    let bar = progress.bar("Pushing", &hex, size);
    let file = tokio::fs::File::open(store.blob_path(d)).await?;
    let bar2 = bar.clone();
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).inspect(move |c| {
        if let (Some(b), Ok(c)) = (&bar2, c) {
            b.inc(c.len() as u64);
        }
    });
    // Monolithic PUT, streamed from the blob file.
    let req = s
        .request(Method::PUT, &url)
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(CONTENT_LENGTH, size)
        .body(reqwest::Body::wrap_stream(stream));
    check(req.send().await?, "upload").await?;
    if let Some(b) = bar {
        b.finish();
    }
    Ok(())
}
