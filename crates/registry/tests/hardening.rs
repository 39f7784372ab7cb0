//! The registry's boundary: deletes off unless enabled, authentication on every request,
//! upload sessions capped per client and swept when idle, referenced blobs kept. With curl and
//! skopeo where a real client shows it.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use serde_json::json;

fn push_blob(reg: &Registry, auth: &[(&str, &str)], repo: &str, data: &[u8]) -> String {
    let d = sha256(data);
    let r = reg.http(
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
        auth,
        data,
    );
    assert_eq!(r.status, 201, "{r:?}");
    d
}

/// A config and one layer pushed, and a manifest of them tagged `v1`: (manifest, layer) digests.
fn push_image(reg: &Registry, auth: &[(&str, &str)], repo: &str) -> (String, String) {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let c = push_blob(reg, auth, repo, config);
    let l = push_blob(reg, auth, repo, b"layer bytes");
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l, "size": 11}],
    }))
    .unwrap();
    let mut headers = auth.to_vec();
    headers.push(("Content-Type", OCI_MANIFEST));
    let r = reg.http("PUT", &format!("/v2/{repo}/manifests/v1"), &headers, &m);
    assert_eq!(r.status, 201, "{r:?}");
    (sha256(&m), l)
}

/// curl's status code and body for a request.
fn curl(args: &[&str]) -> (u16, String) {
    let out = run(Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}"])
        .args(args));
    let (body, code) = out.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

fn code_of(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["errors"][0]["code"].as_str().unwrap_or("").to_string()
}

#[test]
fn deletes_are_off_unless_enabled() {
    let tmp = temp_dir();
    let mut cfg = config(&tmp.path().join("root"));
    cfg.enable_delete = false;
    let reg = Registry::start_with(cfg).unwrap();
    let (m, layer) = push_image(&reg, &[], "d/img");
    let base = format!("http://{}/v2/d/img", reg.host());
    for path in [
        format!("{base}/manifests/{m}"),
        format!("{base}/manifests/v1"),
        format!("{base}/blobs/{layer}"),
    ] {
        let (status, body) = curl(&["-X", "DELETE", &path]);
        assert_eq!(status, 405, "{path}: {body}");
        assert_eq!(code_of(&body), "UNSUPPORTED", "{body}");
        assert!(body.contains("--enable-delete"), "{body}");
    }
    // Nothing went: the tag, the manifest and the blob are all still served.
    for path in [
        format!("{base}/manifests/v1"),
        format!("{base}/manifests/{m}"),
        format!("{base}/blobs/{layer}"),
    ] {
        assert_eq!(curl(&["-I", &path]).0, 200, "{path}");
    }
    // Cancelling one's own upload session is not a delete of content.
    let r = reg.http("POST", "/v2/d/img/blobs/uploads/", &[], b"");
    let loc = r.header("location").unwrap().to_string();
    assert_eq!(reg.http("DELETE", &loc, &[], b"").status, 204);
}

#[test]
fn authentication_covers_every_request() {
    let tmp = temp_dir();
    let file = tmp.path().join("htpasswd");
    run(Command::new("htpasswd")
        .args(["-B", "-b", "-c"])
        .arg(&file)
        .args(["alice", "s3cret"]));
    let mut cfg = config(&tmp.path().join("root"));
    cfg.htpasswd = Some(file);
    let reg = Registry::start_with(cfg).unwrap();
    let token = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    let basic = format!("Basic {token}");
    let auth = [("Authorization", basic.as_str())];
    let (m, layer) = push_image(&reg, &auth, "a/img");
    let r = reg.http("POST", "/v2/a/img/blobs/uploads/", &auth, b"");
    let upload = r.header("location").unwrap().to_string();

    let requests = [
        ("GET", "/v2/".to_string()),
        ("GET", "/v2/_catalog".into()),
        ("GET", "/v2/a/img/tags/list".into()),
        ("HEAD", "/v2/a/img/manifests/v1".into()),
        ("GET", format!("/v2/a/img/manifests/{m}")),
        ("PUT", "/v2/a/img/manifests/v2".into()),
        ("DELETE", format!("/v2/a/img/manifests/{m}")),
        ("DELETE", "/v2/a/img/manifests/v1".into()),
        ("GET", format!("/v2/a/img/blobs/{layer}")),
        ("DELETE", format!("/v2/a/img/blobs/{layer}")),
        ("POST", "/v2/a/img/blobs/uploads/".into()),
        ("POST", format!("/v2/a/img/blobs/uploads/?digest={layer}")),
        (
            "POST",
            format!("/v2/b/img/blobs/uploads/?mount={layer}&from=a/img"),
        ),
        ("PATCH", upload.clone()),
        ("PUT", format!("{upload}?digest={layer}")),
        ("GET", upload.clone()),
        ("DELETE", upload.clone()),
        ("GET", format!("/v2/a/img/referrers/{m}")),
        ("GET", "/v2/a/img/other/thing".into()),
        ("GET", "/not-the-api".into()),
    ];
    for (method, path) in &requests {
        let r = reg.http(method, path, &[], b"data");
        assert_eq!(r.status, 401, "{method} {path} answered {r:?}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Basic realm=\"yun\""),
            "{method} {path}"
        );
    }
    // None of them did anything: the upload is still open, the image whole.
    assert_eq!(reg.http("GET", &upload, &auth, b"").status, 204);
    let r = reg.http("GET", "/v2/a/img/manifests/v1", &auth, b"");
    assert_eq!(sha256(&r.body), m);
    assert_eq!(
        reg.http("GET", &format!("/v2/a/img/blobs/{layer}"), &auth, b"")
            .body,
        b"layer bytes"
    );
    assert_eq!(
        reg.http("HEAD", "/v2/b/img/blobs/uploads/", &auth, b"")
            .status,
        405
    );
    // With credentials, a delete goes through.
    assert_eq!(reg.http("DELETE", &upload, &auth, b"").status, 204);
    assert_eq!(
        reg.http("DELETE", "/v2/a/img/manifests/v1", &auth, b"")
            .status,
        202
    );
}

/// Opens an upload session with curl from `source` (a loopback address); returns the status
/// and error code (empty on success).
fn open_upload(reg: &Registry, source: &str, user: Option<&str>) -> (u16, String) {
    let url = format!("http://{}/v2/u/blobs/uploads/", reg.host());
    let mut args = vec!["-X", "POST", "--interface", source, &url];
    if let Some(u) = user {
        args.extend(["-u", u]);
    }
    let (status, body) = curl(&args);
    let code = if status == 202 {
        String::new()
    } else {
        code_of(&body)
    };
    (status, code)
}

#[test]
fn upload_sessions_are_capped_per_client() {
    let tmp = temp_dir();
    let mut cfg = config(&tmp.path().join("root"));
    cfg.max_uploads_per_client = 3;
    let reg = Registry::start_with(cfg).unwrap();
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let r = reg.http("POST", "/v2/u/blobs/uploads/", &[], b"");
        assert_eq!(r.status, 202);
        sessions.push(r.header("location").unwrap().to_string());
    }
    let r = reg.http("POST", "/v2/u/blobs/uploads/", &[], b"");
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.code(), "TOOMANYREQUESTS");
    let msg = r.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("127.0.0.1") && msg.contains("3 open upload"),
        "{msg}"
    );
    // Nothing was written for the refused one.
    let on_disk = std::fs::read_dir(tmp.path().join("root/uploads"))
        .unwrap()
        .count();
    assert_eq!(on_disk, 3);
    // Another client (another loopback address) is not held back by this one.
    assert_eq!(open_upload(&reg, "127.0.0.2", None), (202, String::new()));
    // A monolithic upload opens no session: still allowed.
    push_blob(&reg, &[], "u", b"whole");
    // Cancelling one frees a slot; so does finishing one.
    assert_eq!(
        reg.http("DELETE", &sessions.pop().unwrap(), &[], b"")
            .status,
        204
    );
    let r = reg.http("POST", "/v2/u/blobs/uploads/", &[], b"");
    assert_eq!(r.status, 202);
    assert_eq!(
        reg.http("POST", "/v2/u/blobs/uploads/", &[], b"").status,
        429
    );
    let d = sha256(b"abc");
    let finish = format!("{}?digest={d}", sessions.pop().unwrap());
    assert_eq!(reg.http("PUT", &finish, &[], b"abc").status, 201);
    assert_eq!(
        reg.http("POST", "/v2/u/blobs/uploads/", &[], b"").status,
        202
    );
}

#[test]
fn upload_sessions_are_capped_per_user_with_auth() {
    let tmp = temp_dir();
    let file = tmp.path().join("htpasswd");
    run(Command::new("htpasswd")
        .args(["-B", "-b", "-c"])
        .arg(&file)
        .args(["alice", "a"]));
    run(Command::new("htpasswd")
        .args(["-B", "-b"])
        .arg(&file)
        .args(["bob", "b"]));
    let mut cfg = config(&tmp.path().join("root"));
    cfg.htpasswd = Some(file);
    cfg.max_uploads_per_client = 2;
    let reg = Registry::start_with(cfg).unwrap();
    let ok = (202, String::new());
    let refused = (429, "TOOMANYREQUESTS".to_string());
    assert_eq!(open_upload(&reg, "127.0.0.1", Some("alice:a")), ok);
    assert_eq!(open_upload(&reg, "127.0.0.2", Some("alice:a")), ok);
    // alice has two, from whichever address she comes.
    assert_eq!(open_upload(&reg, "127.0.0.3", Some("alice:a")), refused);
    // bob is another user, but 127.0.0.1 and 127.0.0.2 hold one each: bob gets one on each...
    assert_eq!(open_upload(&reg, "127.0.0.1", Some("bob:b")), ok);
    // ...and then 127.0.0.1 is full for anyone.
    assert_eq!(open_upload(&reg, "127.0.0.1", Some("bob:b")), refused);
    assert_eq!(open_upload(&reg, "127.0.0.4", Some("bob:b")), ok);
    assert_eq!(open_upload(&reg, "127.0.0.5", Some("bob:b")), refused);
    // Without credentials nothing is counted or opened at all.
    assert_eq!(open_upload(&reg, "127.0.0.6", None).0, 401);
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn idle_upload_sessions_are_swept() {
    let tmp = temp_dir();
    let root = tmp.path().join("root");
    let mut cfg = config(&root);
    cfg.upload_idle_timeout = Duration::from_secs(2);
    cfg.max_uploads_per_client = 2;
    let reg = Registry::start_with(cfg).unwrap();
    let start = |reg: &Registry| {
        let r = reg.http("POST", "/v2/i/blobs/uploads/", &[], b"");
        assert_eq!(r.status, 202, "{r:?}");
        r.header("location").unwrap().to_string()
    };
    let idle = start(&reg);
    let busy = start(&reg);
    for loc in [&idle, &busy] {
        assert_eq!(reg.http("PATCH", loc, &[], &[7u8; 100_000]).status, 202);
    }
    assert_eq!(
        reg.http("POST", "/v2/i/blobs/uploads/", &[], b"").status,
        429
    );
    // One session is used every 200 ms, the other left: only the left one goes.
    let uploads = root.join("uploads");
    let count = || std::fs::read_dir(&uploads).unwrap().count();
    let began = Instant::now();
    wait_until(
        "the idle session to be swept",
        Duration::from_secs(20),
        || {
            assert_eq!(reg.http("GET", &busy, &[], b"").status, 204);
            count() == 1
        },
    );
    assert!(began.elapsed() >= Duration::from_millis(1500));
    let r = reg.http("GET", &idle, &[], b"");
    assert_eq!((r.status, r.code().as_str()), (404, "BLOB_UPLOAD_UNKNOWN"));
    // Its slot is free again, and the busy session still completes.
    let again = start(&reg);
    let mut data = vec![7u8; 100_000];
    data.extend_from_slice(b"end");
    let d = sha256(&data);
    let r = reg.http("PUT", &format!("{busy}?digest={d}"), &[], b"end");
    assert_eq!(r.status, 201, "{r:?}");
    // Left alone, everything goes, disk included.
    wait_until("every session to be swept", Duration::from_secs(20), || {
        count() == 0
    });
    assert_eq!(reg.http("GET", &again, &[], b"").status, 404);
}

#[test]
fn a_blob_a_manifest_references_is_not_deleted() {
    let tmp = temp_dir();
    let reg = Registry::start(&tmp.path().join("root"));
    // skopeo pushes a real image; its layer cannot go while the manifest names it.
    let src = small_layout(&tmp.path().join("src"), "v1");
    let to = format!("docker://{}/ref/img:v1", reg.host());
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", src.dir.display()),
        &to,
    ]);
    let base = format!("http://{}/v2/ref/img", reg.host());
    let layer = &src.layer_digests[0];
    for blob in [layer, &src.config_digest] {
        let (status, body) = curl(&["-X", "DELETE", &format!("{base}/blobs/{blob}")]);
        assert_eq!(status, 409, "{body}");
        assert_eq!(code_of(&body), "DENIED");
        assert!(body.contains(&src.manifest_digest), "{body}");
        assert_eq!(curl(&["-I", &format!("{base}/blobs/{blob}")]).0, 200);
    }
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &to]);
    assert_eq!(sha256(raw.as_bytes()), src.manifest_digest);
    // Once the manifest is gone, so may the blob be.
    let manifest = format!("{base}/manifests/{}", src.manifest_digest);
    assert_eq!(curl(&["-X", "DELETE", &manifest]).0, 202);
    assert_eq!(
        curl(&["-X", "DELETE", &format!("{base}/blobs/{layer}")]).0,
        202
    );
    assert_eq!(curl(&["-I", &format!("{base}/blobs/{layer}")]).0, 404);
}
