//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (session, monolithic `?digest=`, or
//! cross-repository `?mount=&from=`), `PATCH`/`PUT`/`GET`/`DELETE` on a session.
//!
//! A session is a directory `uploads/<id>/` holding the repository name and the data so far.
//! The running SHA-256 lives in memory; after a restart it is gone and the data is re-hashed
//! at the final `PUT`, so sessions survive restarts.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};

use crate::error::{ApiError, ApiResult, Code};
use crate::http::{blocking, set, upload_range, Query};
use crate::names::{check_name, Algorithm, Digest};
use crate::store::Store;
use crate::stream::{body_to_file, BodyError, Written};
use crate::Shared;

/// One upload in progress: its repository, and its state, locked for the whole of a request
/// on it so chunks of one upload are applied one at a time, in order.
struct SessionEntry {
    repo: String,
    state: tokio::sync::Mutex<Session>,
}

struct Session {
    size: u64,
    /// SHA-256 of the data's `size` bytes, if known (not after a restart).
    hasher: Option<Sha256>,
    /// Set when the session was completed or cancelled while a request waited for the lock.
    gone: bool,
}

type SessionRef = Arc<SessionEntry>;

/// The live sessions, and the source of unguessable session ids.
pub struct Uploads {
    sessions: Mutex<HashMap<String, SessionRef>>,
    seed: [u8; 32],
    counter: AtomicU64,
}

impl Uploads {
    pub fn new() -> std::io::Result<Uploads> {
        use std::io::Read;
        let mut seed = [0u8; 32];
        File::open("/dev/urandom")?.read_exact(&mut seed)?;
        Ok(Uploads {
            sessions: Mutex::new(HashMap::new()),
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
        self.sessions.lock().unwrap().remove(id);
    }

    /// Drops sessions whose directory is gone (swept as stale, see `Store::sweep_uploads`).
    pub fn prune(&self, store: &Store) {
        self.sessions
            .lock()
            .unwrap()
            .retain(|id, _| store.upload_dir(id).exists());
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
    let existing = state.uploads.sessions.lock().unwrap().get(id).cloned();
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
                state: tokio::sync::Mutex::new(Session {
                    size,
                    hasher: (size == 0).then(Sha256::new),
                    gone: false,
                }),
            });
            let mut map = state.uploads.sessions.lock().unwrap();
            map.entry(id.to_string()).or_insert(s).clone()
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
pub async fn start(state: Shared, name: String, query: &Query, body: Body) -> ApiResult<Response> {
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

    let id = state.uploads.new_id();
    let dir = state.store.upload_dir(&id);
    let repo = name.clone();
    blocking(move || {
        fs::create_dir(&dir)?;
        fs::write(dir.join("repo"), &repo)?;
        File::create(dir.join("data")).map(drop)
    })
    .await?;
    let session = Arc::new(SessionEntry {
        repo: name.clone(),
        state: tokio::sync::Mutex::new(Session {
            size: 0,
            hasher: Some(Sha256::new()),
            gone: false,
        }),
    });
    state
        .uploads
        .sessions
        .lock()
        .unwrap()
        .insert(id.clone(), session);
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
    append(&state, &name, &id, &mut s, headers, body).await?;
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
    let s = locked(&session, &id).await?;
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
