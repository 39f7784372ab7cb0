//! Issue 14 against an in-process server: watch limits (bounded memory per watch, stalled
//! watchers dropped, a per-user cap), errors that name their cause (protobuf bodies, a list at
//! a compacted revision, a watch at a future one), pod id ranges, and Secrets encrypted at rest.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, VersionMatch, WatchParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::{api_status, connect, start_with};

// The allocator of the yun binary: the memory figures below are the server's as it runs there
// (glibc's per-thread arenas would add the store's blocking-pool threads' to them).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("yun-test-hardening-")
        .tempdir()
        .unwrap()
}

/// curl with the admin token; returns (HTTP code, body).
fn curl(
    dir: &Path,
    port: u16,
    method: &str,
    path: &str,
    ctype: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let token = std::fs::read_to_string(dir.join("pki/token")).unwrap();
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "15",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
        ])
        .arg("--cacert")
        .arg(dir.join("pki/ca.crt"))
        .args(["-H", &format!("Content-Type: {ctype}")])
        .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
        .args(if body.is_empty() {
            vec![]
        } else {
            vec!["--data-binary", body]
        })
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let value = serde_json::from_str(body).unwrap_or(serde_json::Value::String(body.into()));
    (code.trim().parse().unwrap_or(0), value)
}

/// The tests of this file share one process, so a test that measures the process's memory
/// holds this exclusively while the others hold it shared: their servers' allocations would
/// otherwise count as its own (a run once measured +101 MiB that way; alone it is 20–40).
static PROCESS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A TLS connection that sends a watch request and then reads nothing, with a small receive
/// buffer so the kernel does not absorb what the server sends.
async fn idle_watch(
    addr: std::net::SocketAddr,
    ca_pem: &[u8],
    token: &str,
    path: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    tls
}

/// A user's watches beyond the cap get 429 with a Status; a closed watch frees its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_beyond_the_cap_get_429() {
    let _shared = PROCESS.read().await;
    let dir = dir();
    let server = start_with(dir.path(), |c| c.watch.per_user = 3).await;
    let cms: Api<ConfigMap> = Api::namespaced(connect(&server).await, "default");
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(
            cms.watch(&WatchParams::default(), "0")
                .await
                .unwrap()
                .boxed(),
        );
    }
    // (curl: kube-rs retries a 429 on its own.)
    let (d, port) = (dir.path().to_path_buf(), server.addr.port());
    let path = "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1";
    let get = move || curl(&d, port, "GET", path, "application/json", "");
    let (code, e) = tokio::task::spawn_blocking(get.clone()).await.unwrap();
    assert_eq!((code, e["reason"].as_str()), (429, Some("TooManyRequests")));
    assert!(e["message"].as_str().unwrap().contains("watches"), "{e}");
    open.pop();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _) = tokio::task::spawn_blocking(get.clone()).await.unwrap();
        if code == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "a closed watch kept its place");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(open);
    server.shutdown().await;
}

/// Watches that never read, each on a namespace of ~10 MB of objects: the server's memory
/// stays bounded (it used to copy the whole namespace into every watcher), and stalled
/// watchers are dropped with their connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_watches_are_bounded_and_dropped() {
    let _alone = PROCESS.write().await;
    const WATCHERS: usize = 30;
    let dir = dir();
    let server = start_with(dir.path(), |c| {
        c.watch.per_user = WATCHERS + 2;
        c.watch.stall_timeout = Duration::from_secs(4);
    })
    .await;
    let client = connect(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let data = "x".repeat(8 * 1024);
    let names: Vec<String> = (0..1200).map(|i| format!("cm-{i:04}")).collect();
    futures::stream::iter(names.iter())
        .for_each_concurrent(16, |name| {
            let cms = cms.clone();
            let cm: ConfigMap =
                serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": data}}))
                    .unwrap();
            async move {
                cms.create(&PostParams::default(), &cm).await.unwrap();
            }
        })
        .await;

    let ca = std::fs::read(dir.path().join("pki/ca.crt")).unwrap();
    let token = std::fs::read_to_string(dir.path().join("pki/token")).unwrap();
    let before = rss_kib();
    let mut idle = Vec::new();
    for _ in 0..WATCHERS {
        let path = "/api/v1/namespaces/default/configmaps?watch=1";
        idle.push(idle_watch(server.addr, &ca, token.trim(), path).await);
    }
    let opened = Instant::now();
    // Every watcher has filled what it may buffer by now.
    let mut during = 0;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        during = during.max(rss_kib());
        eprintln!("RSS {} MiB", rss_kib() / 1024);
    }
    let growth_mib = during.saturating_sub(before) / 1024;
    eprintln!(
        "RSS before {} MiB, with {WATCHERS} idle watches of 10 MB each {} MiB (+{growth_mib} MiB)",
        before / 1024,
        during / 1024
    );
    // Copying the namespace into each watcher costs >= 10 MB apiece (300 MB here).
    assert!(
        growth_mib < 100,
        "server grew {growth_mib} MiB for {WATCHERS} idle watches"
    );

    // Past the stall timeout every idle watcher's connection is closed by the server. Reading
    // one any earlier would unstall it: it would then get every object and stay open.
    tokio::time::sleep(
        (opened + Duration::from_secs(4 + 3)).saturating_duration_since(Instant::now()),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    for mut conn in idle {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, conn.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => {}
                Err(_) => panic!("a watcher that never read was not dropped"),
            }
        }
    }
    eprintln!(
        "RSS after the idle watchers were dropped: {} MiB",
        rss_kib() / 1024
    );
    // Their places are free again: the full cap of watches opens.
    let mut again = Vec::new();
    let wp = WatchParams::default();
    for _ in 0..WATCHERS + 1 {
        let w = tokio::time::timeout(Duration::from_secs(10), cms.watch(&wp, "0"));
        again.push(
            w.await
                .expect("watch opens in time")
                .expect("under the cap")
                .boxed(),
        );
    }
    // And a watch that reads gets every object.
    let mut seen = 0;
    let mut w = again.pop().unwrap();
    while seen < names.len() {
        let ev = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .unwrap();
        assert!(matches!(ev, Some(Ok(kube::api::WatchEvent::Added(_)))));
        seen += 1;
    }
    drop((w, again));
    server.shutdown().await;
}

// Multi-threaded: curl runs blocking on one worker while the server answers on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_their_cause() {
    let _shared = PROCESS.read().await;
    let dir = dir();
    let server = start_with(dir.path(), |_| {}).await;
    let client = connect(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let port = server.addr.port();

    // A body in a media type not served: 415 naming it.
    let (code, status) = curl(
        dir.path(),
        port,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/cbor",
        "cbor-bytes",
    );
    assert_eq!(code, 415, "{status}");
    assert_eq!(status["reason"], "UnsupportedMediaType");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("application/cbor"),
        "{status}"
    );
    // A protobuf body that is not one: 400 saying what is wrong with it.
    let (code, status) = curl(
        dir.path(),
        port,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/vnd.kubernetes.protobuf",
        "k8s-then-protobuf-bytes",
    );
    assert_eq!(code, 400, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("protobuf body is invalid"),
        "{status}"
    );

    // A list at a compacted revision: 410 about the resourceVersion, no continue token.
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "a"}})).unwrap();
    let old = cms.create(&PostParams::default(), &cm).await.unwrap();
    let old_rv = old.metadata.resource_version.unwrap();
    let patched = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "v"}})),
        )
        .await
        .unwrap();
    let now: i64 = patched.metadata.resource_version.unwrap().parse().unwrap();
    server.compact(now).await.unwrap();
    let e = cms
        .list(
            &ListParams::default()
                .at(&old_rv)
                .matching(VersionMatch::Exact),
        )
        .await
        .unwrap_err();
    let e = api_status(e);
    assert_eq!((e.code, e.reason.as_str()), (410, "Expired"), "{e:?}");
    assert!(
        e.message.contains("too old resource version"),
        "{}",
        e.message
    );
    assert!(!e.message.contains("continue"), "{}", e.message);

    // A watch from a revision the store has not reached: 504 Too large resource version,
    // after a short wait (it used to hang).
    let future = (now + 1000).to_string();
    let started = Instant::now();
    // (curl: kube-rs retries a 504 on its own.)
    let path = format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={future}");
    let (code, e) = curl(dir.path(), port, "GET", &path, "application/json", "");
    assert_eq!((code, e["reason"].as_str()), (504, Some("Timeout")), "{e}");
    let message = e["message"].as_str().unwrap();
    assert!(message.contains("Too large resource version"), "{e}");
    assert_eq!(
        e["details"]["causes"][0]["reason"], "ResourceVersionTooLarge",
        "{e}"
    );
    assert_eq!(e["details"]["retryAfterSeconds"], 1, "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
    server.shutdown().await;
}

#[tokio::test]
async fn pod_ids_outside_int32_are_refused_with_the_field() {
    let _shared = PROCESS.read().await;
    let dir = dir();
    let server = start_with(dir.path(), |_| {}).await;
    let pods: Api<Pod> = Api::namespaced(connect(&server).await, "default");
    for (sc, field) in [
        (
            json!({"securityContext": {"runAsUser": -1}}),
            "spec.securityContext.runAsUser",
        ),
        (
            json!({"securityContext": {"fsGroup": 2147483648_i64}}),
            "spec.securityContext.fsGroup",
        ),
        (
            json!({"securityContext": {"supplementalGroups": [5, 4294967296_i64]}}),
            "spec.securityContext.supplementalGroups[1]",
        ),
        (
            json!({"containers": [{"name": "c", "image": "busybox",
                "securityContext": {"runAsGroup": -7}}]}),
            "spec.containers[0].securityContext.runAsGroup",
        ),
    ] {
        let mut spec = json!({"containers": [{"name": "c", "image": "busybox"}]});
        for (k, v) in sc.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap();
        let e = api_status(pods.create(&PostParams::default(), &pod).await.unwrap_err());
        assert_eq!(e.code, 422, "{field}: {e:?}");
        assert!(e.message.contains(field), "{field}: {}", e.message);
    }
    // The largest id is fine.
    let ok: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {
        "securityContext": {"runAsUser": 2147483647_i64, "runAsGroup": 0},
        "containers": [{"name": "c", "image": "busybox"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &ok).await.unwrap();
    server.shutdown().await;
}

fn file_contains(path: &Path, needle: &[u8]) -> bool {
    let data = std::fs::read(path).unwrap();
    data.windows(needle.len()).any(|w| w == needle)
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Secrets are encrypted in the store file with `encryption_key_file`, read back in the
/// clear, plaintext ones from before stay readable and are encrypted on their next write; a
/// wrong key refuses to start with one line. Store and credential files are the owner's only.
#[tokio::test]
async fn secrets_are_encrypted_at_rest_and_files_are_private() {
    let _shared = PROCESS.read().await;
    use std::os::unix::fs::PermissionsExt;
    let dir = dir();
    let data = dir.path().join("data");
    // An existing data dir left readable by an earlier version is tightened at start.
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let key_file = dir.path().join("key");
    let key = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);
    std::fs::write(&key_file, format!("{key}\n")).unwrap();

    // First without a key: a plaintext Secret.
    let server = start_with(&data, |_| {}).await;
    let secrets: Api<Secret> = Api::namespaced(connect(&server).await, "default");
    let plain: Secret = serde_json::from_value(
        json!({"metadata": {"name": "old"}, "stringData": {"pw": "plaintext-before-key"}}),
    )
    .unwrap();
    secrets
        .create(&PostParams::default(), &plain)
        .await
        .unwrap();
    server.shutdown().await;
    assert_eq!(mode(&data), 0o700);
    for f in [
        "store.redb",
        "store.wal",
        "pki/ca.key",
        "pki/token",
        "kubeconfig",
    ] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&data.join("pki")), 0o700);
    // Loosened by hand, tightened again at the next start.
    std::fs::set_permissions(
        data.join("store.redb"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(
        data.join("pki/ca.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();

    let with_key = |c: &mut yun_apiserver::Config| c.encryption_key_file = Some(key_file.clone());
    let server = start_with(&data, with_key).await;
    assert_eq!(mode(&data.join("store.redb")), 0o600);
    assert_eq!(mode(&data.join("pki/ca.key")), 0o600);
    let secrets: Api<Secret> = Api::namespaced(connect(&server).await, "default");
    let new: Secret = serde_json::from_value(
        json!({"metadata": {"name": "new"}, "stringData": {"pw": "top-secret-value-1"}}),
    )
    .unwrap();
    secrets.create(&PostParams::default(), &new).await.unwrap();
    // The plaintext one reads as before, and is encrypted by its next write.
    let old = secrets.get("old").await.unwrap();
    assert_eq!(old.data.unwrap()["pw"].0, b"plaintext-before-key");
    secrets
        .patch(
            "old",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    let read = secrets.get("new").await.unwrap();
    assert_eq!(read.data.unwrap()["pw"].0, b"top-secret-value-1");
    let listed = secrets.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 2);
    server.shutdown().await;
    // Closed, so everything is in store.redb (the log is checkpointed on close).
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for f in ["store.redb", "store.wal"] {
        let v = b64("top-secret-value-1");
        assert!(
            !file_contains(&data.join(f), v.as_bytes()),
            "the Secret's value in {f}"
        );
    }
    assert!(file_contains(
        &data.join("store.redb"),
        b"k8s:enc:aesgcm:v1:"
    ));

    // Another key, or none: refused at start with one line naming the cause.
    let wrong = dir.path().join("wrong");
    std::fs::write(
        &wrong,
        base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
    )
    .unwrap();
    for file in [Some(wrong), None] {
        let mut config = yun_apiserver::Config {
            addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: data.clone(),
            ..Default::default()
        };
        config.encryption_key_file = file;
        let err = format!(
            "{:#}",
            yun_apiserver::start(config).await.err().expect("refused")
        );
        assert!(!err.contains('\n'), "{err}");
        assert!(err.contains("/registry/core/secrets/default/"), "{err}");
        assert!(err.contains("key"), "{err}");
    }
    // A bad key file: one line naming it.
    std::fs::write(dir.path().join("short"), "c2hvcnQ=").unwrap();
    let mut config = yun_apiserver::Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: data.clone(),
        ..Default::default()
    };
    config.encryption_key_file = Some(dir.path().join("short"));
    let err = format!(
        "{:#}",
        yun_apiserver::start(config).await.err().expect("refused")
    );
    assert!(
        err.contains("--encryption-key-file") && err.contains("32 bytes"),
        "{err}"
    );
}
