//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (session, monolithic `?digest=`, or
//! cross-repository `?mount=&from=`), `PATCH`/`PUT`/`GET`/`DELETE` on a session.
//!
//! A session is a directory `uploads/<id>/` holding the repository name and the data so far.
//! The running SHA-256 lives in memory; after a restart it is gone and the data is re-hashed
//! at the final `PUT`, so sessions survive restarts.
//!
//! Sessions cost disk and memory until finished, so each client (remote IP, and user when
//! authentication is on) may hold only so many open at once, and idle ones are swept.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};

use crate::error::{ApiError, ApiResult, Code};
use crate::http::{blocking, set, upload_range, Query};
use crate::names::{check_name, Algorithm, Digest};
use crate::store::Store;
use crate::stream::{body_to_file, BodyError, Written};
use crate::{Client, Shared};

/// One upload in progress: its repository, the client keys it counts against (none for a
/// session found on disk after a restart), and its state, locked for the whole of a request on
/// it so chunks of one upload are applied one at a time, in order.
struct SessionEntry {
    repo: String,
    owners: Vec<String>,
    state: tokio::sync::Mutex<Session>,
}

struct Session {
    size: u64,
    /// SHA-256 of the data's `size` bytes, if known (not after a restart).
    hasher: Option<Sha256>,
    /// Set when the session was completed, cancelled or swept while a request waited for
    /// the lock.
    gone: bool,
    /// When a request on it last finished (the idle sweep's clock).
    touched: Instant,
}

impl Session {
    fn new(size: u64, hasher: Option<Sha256>) -> Session {
        Session {
            size,
            hasher,
            gone: false,
            touched: Instant::now(),
        }
    }
}

type SessionRef = Arc<SessionEntry>;

/// The sessions in memory and how many each client key holds.
#[derive(Default)]
struct Open {
    sessions: HashMap<String, SessionRef>,
    per_client: HashMap<String, usize>,
}

impl Open {
    fn insert(&mut self, id: String, s: SessionRef) {
        for k in &s.owners {
            *self.per_client.entry(k.clone()).or_default() += 1;
        }
        self.sessions.insert(id, s);
    }

    fn remove(&mut self, id: &str) {
        let Some(s) = self.sessions.remove(id) else {
            return;
        };
        for k in &s.owners {
            if let Entry::Occupied(mut e) = self.per_client.entry(k.clone()) {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
    }
}

/// The live sessions, the per-client limit, and the source of unguessable session ids.
pub struct Uploads {
    open: Mutex<Open>,
    max_per_client: usize,
    seed: [u8; 32],
    counter: AtomicU64,
}

impl Uploads {
    pub fn new(max_per_client: usize) -> std::io::Result<Uploads> {
        use std::io::Read;
        let mut seed = [0u8; 32];
        File::open("/dev/urandom")?.read_exact(&mut seed)?;
        Ok(Uploads {
            open: Mutex::new(Open::default()),
            max_per_client,
            seed,
            counter: AtomicU64::new(0),
        })
    }

    /// A UUID-shaped id: SHA-256 of a random seed and a counter, so ids never repeat and
    /// cannot be guessed from one another.
    fn new_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut h = Sha256::new();
        h.update(self.seed);
        h.update(n.to_le_bytes());
        let x = hex::encode(&h.finalize()[..16]);
        format!(
            "{}-{}-{}-{}-{}",
            &x[..8],
            &x[8..12],
            &x[12..16],
            &x[16..20],
            &x[20..32]
        )
    }

    fn forget(&self, id: &str) {
        self.open.lock().unwrap().remove(id);
    }

    /// Removes sessions idle for longer than `idle`, their directories and their memory, and
    /// then session directories on disk that no live session owns and that were not modified
    /// within `idle` (left by an earlier process). A session a request holds is not idle.
    /// Blocks: runs on the blocking pool.
    pub fn sweep(&self, store: &Store, idle: Duration) -> usize {
        let now = Instant::now();
        let candidates: Vec<(String, SessionRef)> = {
            let open = self.open.lock().unwrap();
            open.sessions
                .iter()
                .map(|(id, s)| (id.clone(), s.clone()))
                .collect()
        };
        let mut swept = 0;
        for (id, s) in candidates {
            let Ok(mut st) = s.state.try_lock() else {
                continue;
            };
            if st.gone || now.duration_since(st.touched) < idle {
                continue;
            }
            // A request that already holds this entry finds it gone once it gets the lock.
            st.gone = true;
            if let Err(e) = fs::remove_dir_all(store.upload_dir(&id)) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("removing idle upload {id}: {e}");
                }
            }
            self.forget(&id);
            tracing::info!("removed upload {id}, idle for {:?}", now - st.touched);
            swept += 1;
        }
        let live: HashSet<String> = {
            let mut open = self.open.lock().unwrap();
            if swept > 0 {
                // After a burst of sessions the maps would keep their peak capacity.
                open.sessions.shrink_to_fit();
                open.per_client.shrink_to_fit();
            }
            open.sessions.keys().cloned().collect()
        };
        swept + store.sweep_uploads(idle, |id| live.contains(id))
    }
}

fn valid_id(id: &str) -> bool {
    id.len() == 36 && id.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-')
}

fn upload_unknown(id: &str) -> ApiError {
    ApiError::new(Code::BlobUploadUnknown, format!("upload {id:?} unknown"))
}

/// The session `id` of repository `name`, from memory or (after a restart) from disk.
async fn session(state: &Shared, name: &str, id: &str) -> ApiResult<SessionRef> {
    if !valid_id(id) {
        return Err(upload_unknown(id));
    }
    let existing = state.uploads.open.lock().unwrap().sessions.get(id).cloned();
    let session = match existing {
        Some(s) => s,
        None => {
            let dir = state.store.upload_dir(id);
            let found = blocking(move || {
                let repo = match fs::read_to_string(dir.join("repo")) {
                    Ok(r) => r,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e),
                };
                let size = fs::metadata(dir.join("data"))?.len();
                Ok(Some((repo, size)))
            })
            .await?;
            let Some((repo, size)) = found else {
                return Err(upload_unknown(id));
            };
            let s = Arc::new(SessionEntry {
                repo,
                owners: Vec::new(),
                state: tokio::sync::Mutex::new(Session::new(size, (size == 0).then(Sha256::new))),
            });
            let mut open = state.uploads.open.lock().unwrap();
            match open.sessions.get(id) {
                Some(existing) => existing.clone(),
                None => {
                    open.insert(id.to_string(), s.clone());
                    s
                }
            }
        }
    };
    if session.repo != name {
        return Err(upload_unknown(id));
    }
    Ok(session)
}

/// 202 with the headers a client needs to continue the session.
fn accepted(name: &str, id: &str, size: u64, status: StatusCode) -> Response {
    let mut resp = status.into_response();
    let h = resp.headers_mut();
    set(h, "location", format!("/v2/{name}/blobs/uploads/{id}"));
    set(h, "range", upload_range(size));
    set(h, "docker-upload-uuid", id);
    set(h, "content-length", "0");
    resp
}

/// 201 for a blob now in the repository.
fn created(name: &str, d: &Digest) -> Response {
    let mut resp = StatusCode::CREATED.into_response();
    let h = resp.headers_mut();
    set(h, "location", format!("/v2/{name}/blobs/{d}"));
    set(h, "docker-content-digest", d.to_string());
    set(h, "content-length", "0");
    resp
}

fn digest_mismatch(want: &Digest, got: &Digest) -> ApiError {
    ApiError::new(
        Code::DigestInvalid,
        format!("content digest {got} does not match the requested digest {want}"),
    )
    .detail(serde_json::json!({ "expected": want.to_string(), "actual": got.to_string() }))
}

fn body_error(e: BodyError) -> ApiError {
    match e {
        BodyError::Client(msg) => ApiError::new(Code::BlobUploadInvalid, msg),
        BodyError::Storage(e) => ApiError::internal("writing upload", e),
    }
}

/// `POST /v2/<name>/blobs/uploads/`
pub async fn start(
    state: Shared,
    name: String,
    query: &Query,
    client: Option<Client>,
    body: Body,
) -> ApiResult<Response> {
    if let (Some(mount), Some(from)) = (query.get("mount"), query.get("from")) {
        let d = Digest::parse(mount)?;
        check_name(from)?;
        let (st, n, f, dd) = (state.clone(), name.clone(), from.to_string(), d.clone());
        let mounted = blocking(move || {
            if st.store.linked_blob_size(&f, &dd)?.is_none() {
                return Ok(false);
            }
            st.store.link_blob(&n, &dd)?;
            Ok(true)
        })
        .await?;
        if mounted {
            return Ok(created(&name, &d));
        }
        // Not mountable: the spec's fallback is an ordinary upload session.
    } else if let Some(digest) = query.get("digest") {
        let d = Digest::parse(digest)?;
        return monolithic(state, name, d, body).await;
    }

    // The session is counted (and so the client's limit checked) before anything is written.
    let id = state.uploads.new_id();
    let session = Arc::new(SessionEntry {
        repo: name.clone(),
        owners: client.map(|c| c.keys()).unwrap_or_default(),
        state: tokio::sync::Mutex::new(Session::new(0, Some(Sha256::new()))),
    });
    {
        let mut open = state.uploads.open.lock().unwrap();
        let max = state.uploads.max_per_client;
        for key in &session.owners {
            let held = open.per_client.get(key).copied().unwrap_or(0);
            if held >= max {
                return Err(ApiError::new(
                    Code::TooManyRequests,
                    format!(
                        "client {key} already holds {held} open upload sessions, the most \
                         allowed: finish or cancel one (idle ones expire)"
                    ),
                )
                .detail(serde_json::json!({ "client": key, "open": held, "limit": max })));
            }
        }
        open.insert(id.clone(), session);
    }
    let dir = state.store.upload_dir(&id);
    let repo = name.clone();
    let created_dir = blocking(move || {
        let r = (|| {
            fs::create_dir(&dir)?;
            fs::write(dir.join("repo"), &repo)?;
            File::create(dir.join("data")).map(drop)
        })();
        if r.is_err() {
            let _ = fs::remove_dir_all(&dir);
        }
        r
    })
    .await;
    if let Err(e) = created_dir {
        state.uploads.forget(&id);
        return Err(e);
    }
    Ok(accepted(&name, &id, 0, StatusCode::ACCEPTED))
}

/// `POST …/uploads/?digest=` with the whole blob as the body.
async fn monolithic(state: Shared, name: String, d: Digest, body: Body) -> ApiResult<Response> {
    let tmp = state.store.temp_path();
    let tmp2 = tmp.clone();
    let file = blocking(move || File::create(&tmp2)).await?;
    let written = body_to_file(body, file, Some(Sha256::new())).await;
    let (st, n, dd) = (state.clone(), name.clone(), d.clone());
    let outcome = blocking(move || -> std::io::Result<Result<(), ApiError>> {
        let result = verify_and_commit(&st.store, written, &tmp, &dd, &n);
        if result.as_ref().map_or(true, |r| r.is_err()) {
            let _ = fs::remove_file(&tmp);
        }
        result
    })
    .await?;
    outcome?;
    Ok(created(&name, &d))
}

/// Checks the digest of a fully written file and moves it into the content store, linked
/// into `name`. The inner `Err` is the client's fault (nothing stored); the outer one is ours.
fn verify_and_commit(
    store: &Store,
    written: Written,
    path: &std::path::Path,
    want: &Digest,
    name: &str,
) -> std::io::Result<Result<(), ApiError>> {
    if let Err(e) = written.result {
        return Ok(Err(body_error(e)));
    }
    let got = match (want.algorithm, written.hasher) {
        (Algorithm::Sha256, Some(h)) => Digest {
            algorithm: Algorithm::Sha256,
            hex: hex::encode(h.finalize()),
        },
        (algorithm, _) => Store::hash_file(path, algorithm)?,
    };
    if &got != want {
        return Ok(Err(digest_mismatch(want, &got)));
    }
    // Durable before it becomes visible under its digest.
    written.file.sync_all()?;
    store.commit_blob(path, want)?;
    store.link_blob(name, want)?;
    Ok(Ok(()))
}

/// Parses `Content-Range: <start>-<end>` (also accepting `bytes <start>-<end>/<total>`).
fn content_range(headers: &HeaderMap) -> ApiResult<Option<(u64, u64)>> {
    let Some(v) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = || ApiError::new(Code::BlobUploadInvalid, "malformed Content-Range");
    let s = v.to_str().map_err(|_| bad())?.trim();
    let s = s.strip_prefix("bytes ").unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let start = a.trim().parse().map_err(|_| bad())?;
    let end = b.trim().parse().map_err(|_| bad())?;
    if end < start {
        return Err(bad());
    }
    Ok(Some((start, end)))
}

/// Appends a request body to a locked session, enforcing chunk order.
async fn append(
    state: &Shared,
    name: &str,
    id: &str,
    s: &mut Session,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<()> {
    if let Some((start, _end)) = content_range(headers)? {
        if start != s.size {
            return Err(ApiError::new(
                Code::BlobUploadInvalid,
                format!(
                    "chunk starts at {start}, but the upload has {} bytes",
                    s.size
                ),
            )
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .header(header::RANGE, &upload_range(s.size))
            .header(header::LOCATION, &format!("/v2/{name}/blobs/uploads/{id}")));
        }
    }
    let data = state.store.upload_dir(id).join("data");
    let file = blocking(move || OpenOptions::new().append(true).open(data)).await?;
    let written = body_to_file(body, file, s.hasher.take()).await;
    s.size += written.len;
    s.hasher = written.hasher;
    written.result.map_err(body_error)
}

async fn locked<'a>(
    session: &'a SessionEntry,
    id: &str,
) -> ApiResult<tokio::sync::MutexGuard<'a, Session>> {
    let guard = session.state.lock().await;
    if guard.gone {
        return Err(upload_unknown(id));
    }
    Ok(guard)
}

/// `PATCH /v2/<name>/blobs/uploads/<id>`
pub async fn patch(
    state: Shared,
    name: String,
    id: String,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let session = session(&state, &name, &id).await?;
    let mut s = locked(&session, &id).await?;
    let appended = append(&state, &name, &id, &mut s, headers, body).await;
    s.touched = Instant::now();
    appended?;
    Ok(accepted(&name, &id, s.size, StatusCode::ACCEPTED))
}

/// `PUT /v2/<name>/blobs/uploads/<id>?digest=` — the last chunk (optional) and the commit.
pub async fn finish(
    state: Shared,
    name: String,
    id: String,
    query: &Query,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let want = Digest::parse(query.get("digest").unwrap_or(""))?;
    let session = session(&state, &name, &id).await?;
    let mut s = locked(&session, &id).await?;
    append(&state, &name, &id, &mut s, headers, body).await?;

    let dir = state.store.upload_dir(&id);
    let hasher = s.hasher.take();
    let (st, n, w) = (state.clone(), name.clone(), want.clone());
    let outcome = blocking(move || {
        let data = dir.join("data");
        let written = Written {
            file: File::open(&data)?,
            hasher,
            len: 0,
            result: Ok(()),
        };
        let r = verify_and_commit(&st.store, written, &data, &w, &n)?;
        // Committed or refused, the session ends: a bad digest leaves nothing behind.
        fs::remove_dir_all(&dir)?;
        Ok(r)
    })
    .await?;
    s.gone = true;
    state.uploads.forget(&id);
    outcome?;
    Ok(created(&name, &want))
}

/// `GET /v2/<name>/blobs/uploads/<id>` — where to resume.
pub async fn status(state: Shared, name: String, id: String) -> ApiResult<Response> {
    let session = session(&state, &name, &id).await?;
    let mut s = locked(&session, &id).await?;
    s.touched = Instant::now();
    Ok(accepted(&name, &id, s.size, StatusCode::NO_CONTENT))
}

/// `DELETE /v2/<name>/blobs/uploads/<id>`
pub async fn cancel(state: Shared, name: String, id: String) -> ApiResult<Response> {
    let session = session(&state, &name, &id).await?;
    let mut s = locked(&session, &id).await?;
    let dir = state.store.upload_dir(&id);
    blocking(move || fs::remove_dir_all(dir)).await?;
    s.gone = true;
    state.uploads.forget(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}
