//! The distribution API spoken byte by byte: status codes, headers and error codes for good
//! and bad input.

mod common;

use common::*;
use serde_json::json;

fn push_blob(reg: &Registry, repo: &str, data: &[u8]) -> String {
    let d = sha256(data);
    let r = reg.http(
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
        &[("Content-Type", "application/octet-stream")],
        data,
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    d
}

fn image_manifest(reg: &Registry, repo: &str, layer: &[u8]) -> (Vec<u8>, String) {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let c = push_blob(reg, repo, config);
    let l = push_blob(reg, repo, layer);
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l, "size": layer.len()}],
    }))
    .unwrap();
    let d = sha256(&m);
    (m, d)
}

fn put_manifest(reg: &Registry, repo: &str, reference: &str, media_type: &str, m: &[u8]) -> Resp {
    reg.http(
        "PUT",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", media_type)],
        m,
    )
}

fn count_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|e| {
            e.flatten()
                .map(|e| {
                    if e.file_type().unwrap().is_dir() {
                        count_files(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn base_endpoint() {
    let tmp = temp_dir();
    let reg = Registry::start(tmp.path());
    let r = reg.http("GET", "/v2/", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
}

#[test]
fn digest_mismatch_stores_nothing() {
    let tmp = temp_dir();
    let reg = Registry::start(tmp.path());
    let wrong = sha256(b"other bytes");
    // Monolithic.
    let r = reg.http(
        "POST",
        &format!("/v2/a/blobs/uploads/?digest={wrong}"),
        &[],
        b"these bytes",
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "DIGEST_INVALID");
    assert_eq!(
        reg.http("HEAD", &format!("/v2/a/blobs/{wrong}"), &[], b"")
            .status,
        404
    );
    // Through a session.
    let r = reg.http("POST", "/v2/a/blobs/uploads/", &[], b"");
    assert_eq!(r.status, 202);
    let loc = r.header("location").unwrap().to_string();
    assert_eq!(reg.http("PATCH", &loc, &[], b"these bytes").status, 202);
    let r = reg.http("PUT", &format!("{loc}?digest={wrong}"), &[], b"");
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "DIGEST_INVALID");
    let r = reg.http("GET", &loc, &[], b"");
    assert_eq!(r.status, 404);
    assert_eq!(r.code(), "BLOB_UPLOAD_UNKNOWN");
    let right = sha256(b"these bytes");
    assert_eq!(
        reg.http("HEAD", &format!("/v2/a/blobs/{right}"), &[], b"")
            .status,
        404
    );
    // Nothing left anywhere: no blob, no temp file, no upload.
    for dir in ["blobs", "tmp", "uploads"] {
        assert_eq!(count_files(&tmp.path().join(dir)), 0, "{dir}");
    }
    // A malformed digest is refused too.
    let r = reg.http("POST", "/v2/a/blobs/uploads/?digest=sha256:xyz", &[], b"x");
    assert_eq!(r.code(), "DIGEST_INVALID");
    assert_eq!(
        reg.http("GET", "/v2/a/blobs/sha256:short", &[], b"").code(),
        "DIGEST_INVALID"
    );
}

#[test]
fn chunked_upload_in_order_and_out_of_order() {
    let tmp = temp_dir();
    let reg = Registry::start(tmp.path());
    let data: Vec<u8> = (0..30u8).collect();
    let d = sha256(&data);
    let r = reg.http("POST", "/v2/lib/chunks/blobs/uploads/", &[], b"");
    assert_eq!(r.status, 202);
    assert_eq!(r.header("range"), Some("0-0"));
    assert!(r.header("docker-upload-uuid").is_some());
    let loc = r.header("location").unwrap().to_string();
    assert!(loc.starts_with("/v2/lib/chunks/blobs/uploads/"));

    let r = reg.http("PATCH", &loc, &[("Content-Range", "0-9")], &data[..10]);
    assert_eq!(r.status, 202);
    assert_eq!(r.header("range"), Some("0-9"));
    // Skipping ahead is refused with 416 and the current range.
    let r = reg.http("PATCH", &loc, &[("Content-Range", "20-29")], &data[20..]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("range"), Some("0-9"));
    // So is repeating a chunk.
    assert_eq!(
        reg.http("PATCH", &loc, &[("Content-Range", "0-9")], &data[..10])
            .status,
        416
    );
    // Resume from the status.
    let r = reg.http("GET", &loc, &[], b"");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("range"), Some("0-9"));
    assert_eq!(
        reg.http("PATCH", &loc, &[("Content-Range", "10-19")], &data[10..20])
            .status,
        202
    );
    // The last chunk comes with the PUT.
    let r = reg.http(
        "PUT",
        &format!("{loc}?digest={d}"),
        &[("Content-Range", "20-29")],
        &data[20..],
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/lib/chunks/blobs/{d}").as_str())
    );

    let r = reg.http("GET", &format!("/v2/lib/chunks/blobs/{d}"), &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));

    let r = reg.http("HEAD", &format!("/v2/lib/chunks/blobs/{d}"), &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("30"));
    assert!(r.body.is_empty());

    let r = reg.http(
        "GET",
        &format!("/v2/lib/chunks/blobs/{d}"),
        &[("Range", "bytes=5-14")],
        b"",
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[5..15]);
    assert_eq!(r.header("content-range"), Some("bytes 5-14/30"));
    let r = reg.http(
        "GET",
        &format!("/v2/lib/chunks/blobs/{d}"),
        &[("Range", "bytes=-5")],
        b"",
    );
    assert_eq!(r.body, &data[25..]);
    let r = reg.http(
        "GET",
        &format!("/v2/lib/chunks/blobs/{d}"),
        &[("Range", "bytes=30-40")],
        b"",
    );
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */30"));
}

#[test]
fn cancel_and_restart_resume() {
    let tmp = temp_dir();
    let data = vec![42u8; 3 << 20];
    let d = sha256(&data);
    let loc;
    {
        let reg = Registry::start(tmp.path());
        let r = reg.http("POST", "/v2/c/blobs/uploads/", &[], b"");
        let cancel = r.header("location").unwrap().to_string();
        assert_eq!(reg.http("DELETE", &cancel, &[], b"").status, 204);
        assert_eq!(reg.http("GET", &cancel, &[], b"").status, 404);
        assert_eq!(
            reg.http("PATCH", &cancel, &[], b"x").code(),
            "BLOB_UPLOAD_UNKNOWN"
        );

        let r = reg.http("POST", "/v2/c/blobs/uploads/", &[], b"");
        loc = r.header("location").unwrap().to_string();
        assert_eq!(reg.http("PATCH", &loc, &[], &data[..1 << 20]).status, 202);
        // Another repository cannot use the session.
        let other = loc.replace("/v2/c/", "/v2/d/");
        assert_eq!(
            reg.http("GET", &other, &[], b"").code(),
            "BLOB_UPLOAD_UNKNOWN"
        );
    }
    // A new process on the same storage resumes the session (re-hashing what it has).
    std::fs::write(tmp.path().join("tmp/leftover"), b"junk").unwrap();
    let reg = Registry::start(tmp.path());
    assert!(
        !tmp.path().join("tmp/leftover").exists(),
        "temp files are wiped on start"
    );
    let r = reg.http("GET", &loc, &[], b"");
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("range"),
        Some(format!("0-{}", (1 << 20) - 1).as_str())
    );
    let range = format!("{}-{}", 1 << 20, data.len() - 1);
    let r = reg.http(
        "PATCH",
        &loc,
        &[("Content-Range", &range)],
        &data[1 << 20..],
    );
    assert_eq!(r.status, 202);
    let r = reg.http("PUT", &format!("{loc}?digest={d}"), &[], b"");
    assert_eq!(r.status, 201, "{r:?}");
    let r = reg.http("GET", &format!("/v2/c/blobs/{d}"), &[], b"");
    assert_eq!(sha256(&r.body), d);
}

#[test]
fn stale_uploads_are_swept_on_start() {
    let tmp = temp_dir();
    let id = {
        let reg = Registry::start(tmp.path());
        let r = reg.http("POST", "/v2/s/blobs/uploads/", &[], b"");
        r.header("docker-upload-uuid").unwrap().to_string()
    };
    let dir = tmp.path().join("uploads").join(&id);
    assert!(dir.is_dir());
    run(std::process::Command::new("touch")
        .args(["-d", "3 days ago"])
        .arg(dir.join("data"))
        .arg(&dir));
    let _reg = Registry::start(tmp.path());
    assert!(!dir.exists());
}

#[test]
fn manifests_validated() {
    let tmp = temp_dir();
    let reg = Registry::start(tmp.path());
    let (m, d) = image_manifest(&reg, "m/img", b"layer bytes");

    // Missing blob: the same manifest in a repository without the blobs.
    let r = put_manifest(&reg, "m/empty", "v1", OCI_MANIFEST, &m);
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "MANIFEST_BLOB_UNKNOWN");

    for bad in [
        &b"{not json"[..],
        b"[]",
        b"",
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":5,"layers":[]}"#,
        br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:nothex","size":1},"layers":[]}"#,
        br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:00","size":-1}}"#,
        br#"{"schemaVersion":1,"layers":[]}"#,
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":{}}"#,
    ] {
        let r = put_manifest(&reg, "m/img", "bad", OCI_MANIFEST, bad);
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(bad));
        assert_eq!(r.code(), "MANIFEST_INVALID", "{}", String::from_utf8_lossy(bad));
    }
    let r = put_manifest(&reg, "m/img", "v1", DOCKER_MANIFEST, &m);
    assert_eq!(
        r.code(),
        "MANIFEST_INVALID",
        "Content-Type must match mediaType"
    );
    let r = put_manifest(&reg, "m/img", &sha256(b"x"), OCI_MANIFEST, &m);
    assert_eq!(r.code(), "DIGEST_INVALID");

    let r = put_manifest(&reg, "m/img", "v1", OCI_MANIFEST, &m);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/m/img/manifests/{d}").as_str())
    );
    let r = put_manifest(&reg, "m/img", &d, OCI_MANIFEST, &m);
    assert_eq!(r.status, 201);

    let r = reg.http(
        "GET",
        "/v2/m/img/manifests/v1",
        &[("Accept", OCI_MANIFEST)],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, m);
    assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    let etag = r.header("etag").unwrap().to_string();
    let r = reg.http(
        "GET",
        "/v2/m/img/manifests/v1",
        &[("If-None-Match", &etag)],
        b"",
    );
    assert_eq!(r.status, 304);
    let r = reg.http("HEAD", &format!("/v2/m/img/manifests/{d}"), &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some(m.len().to_string().as_str())
    );
    let r = reg.http(
        "GET",
        "/v2/m/img/manifests/v1",
        &[("Accept", DOCKER_MANIFEST)],
        b"",
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.code(), "MANIFEST_UNKNOWN");
    let r = reg.http("GET", "/v2/m/img/manifests/nope", &[], b"");
    assert_eq!(r.code(), "MANIFEST_UNKNOWN");
    let r = reg.http("GET", "/v2/m/never/manifests/v1", &[], b"");
    assert_eq!(r.code(), "NAME_UNKNOWN");

    // An index needs its children in the repository.
    let index = |child: &str| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": child, "size": m.len(),
                           "platform": {"architecture": "amd64", "os": "linux"}}],
        }))
        .unwrap()
    };
    let r = put_manifest(&reg, "m/img", "idx", OCI_INDEX, &index(&sha256(b"missing")));
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "MANIFEST_BLOB_UNKNOWN");
    let r = put_manifest(&reg, "m/img", "idx", OCI_INDEX, &index(&d));
    assert_eq!(r.status, 201);
    let r = reg.http("GET", "/v2/m/img/manifests/idx", &[], b"");
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));

    // Deleting a tag removes the tag; deleting by digest removes the manifest.
    assert_eq!(
        reg.http("DELETE", "/v2/m/img/manifests/idx", &[], b"")
            .status,
        202
    );
    assert_eq!(
        reg.http("GET", "/v2/m/img/manifests/idx", &[], b"").status,
        404
    );
    assert_eq!(
        reg.http("DELETE", &format!("/v2/m/img/manifests/{d}"), &[], b"")
            .status,
        202
    );
    assert_eq!(
        reg.http("GET", "/v2/m/img/manifests/v1", &[], b"").status,
        404
    );
    assert_eq!(
        reg.http("GET", &format!("/v2/m/img/manifests/{d}"), &[], b"")
            .status,
        404
    );
    let r = reg.http("DELETE", &format!("/v2/m/img/manifests/{d}"), &[], b"");
    assert_eq!(r.code(), "MANIFEST_UNKNOWN");
}

#[test]
fn names_tags_catalog() {
    let tmp = temp_dir();
    let reg = Registry::start(tmp.path());
    for path in [
        "/v2/UPPER/tags/list",
        "/v2/a..b/manifests/latest",
        "/v2/-a/blobs/uploads/",
        "/v2/a//b/tags/list",
    ] {
        let method = if path.ends_with("uploads/") {
            "POST"
        } else {
            "GET"
        };
        let r = reg.http(method, path, &[], b"");
        assert_eq!(r.status, 400, "{path}");
        assert_eq!(r.code(), "NAME_INVALID", "{path}");
    }
    let r = reg.http("GET", "/v2/no/such/tags/list", &[], b"");
    assert_eq!(r.status, 404);
    assert_eq!(r.code(), "NAME_UNKNOWN");

    let (m, _) = image_manifest(&reg, "t/repo", b"l");
    for tag in ["c", "a", "e", "b", "d"] {
        assert_eq!(
            put_manifest(&reg, "t/repo", tag, OCI_MANIFEST, &m).status,
            201
        );
    }
    let r = reg.http("GET", "/v2/t/repo/tags/list", &[], b"");
    assert_eq!(
        r.json(),
        json!({"name": "t/repo", "tags": ["a", "b", "c", "d", "e"]})
    );
    let r = reg.http("GET", "/v2/t/repo/tags/list?n=2", &[], b"");
    assert_eq!(r.json()["tags"], json!(["a", "b"]));
    assert_eq!(
        r.header("link"),
        Some("</v2/t/repo/tags/list?n=2&last=b>; rel=\"next\"")
    );
    let r = reg.http("GET", "/v2/t/repo/tags/list?n=2&last=b", &[], b"");
    assert_eq!(r.json()["tags"], json!(["c", "d"]));
    let r = reg.http("GET", "/v2/t/repo/tags/list?n=2&last=d", &[], b"");
    assert_eq!(r.json()["tags"], json!(["e"]));
    assert!(r.header("link").is_none());

    let (m2, _) = image_manifest(&reg, "a/first", b"l");
    put_manifest(&reg, "a/first", "x", OCI_MANIFEST, &m2);
    let r = reg.http("GET", "/v2/_catalog?n=1", &[], b"");
    assert_eq!(r.json(), json!({"repositories": ["a/first"]}));
    assert!(r.header("link").unwrap().contains("last=a/first"));
    let r = reg.http("GET", "/v2/_catalog?n=1&last=a/first", &[], b"");
    assert_eq!(r.json(), json!({"repositories": ["t/repo"]}));
}

#[test]
fn repositories_are_isolated_and_mounts_work() {
    let tmp = temp_dir();
    let reg = Registry::start(tmp.path());
    let d = push_blob(&reg, "one", b"shared layer");
    assert_eq!(
        reg.http("GET", &format!("/v2/two/blobs/{d}"), &[], b"")
            .code(),
        "BLOB_UNKNOWN"
    );
    // Mount from a repository that lacks it: an ordinary session instead.
    let r = reg.http(
        "POST",
        &format!("/v2/two/blobs/uploads/?mount={d}&from=three"),
        &[],
        b"",
    );
    assert_eq!(r.status, 202);
    let r = reg.http(
        "POST",
        &format!("/v2/two/blobs/uploads/?mount={d}&from=one"),
        &[],
        b"",
    );
    assert_eq!(r.status, 201);
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/two/blobs/{d}").as_str())
    );
    let r = reg.http("GET", &format!("/v2/two/blobs/{d}"), &[], b"");
    assert_eq!(r.body, b"shared layer");

    assert_eq!(
        reg.http("DELETE", &format!("/v2/two/blobs/{d}"), &[], b"")
            .status,
        202
    );
    assert_eq!(
        reg.http("HEAD", &format!("/v2/two/blobs/{d}"), &[], b"")
            .status,
        404
    );
    assert_eq!(
        reg.http("HEAD", &format!("/v2/one/blobs/{d}"), &[], b"")
            .status,
        200
    );
}

#[test]
fn referrers() {
    let tmp = temp_dir();
    let reg = Registry::start(tmp.path());
    let (m, subject) = image_manifest(&reg, "r", b"layer");
    assert_eq!(put_manifest(&reg, "r", "v1", OCI_MANIFEST, &m).status, 201);
    let empty = push_blob(&reg, "r", b"{}");
    let sig = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": m.len()},
        "annotations": {"org.example": "yes"},
    }))
    .unwrap();
    let sig_digest = sha256(&sig);
    let r = put_manifest(&reg, "r", &sig_digest, OCI_MANIFEST, &sig);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.header("oci-subject"), Some(subject.as_str()));

    let r = reg.http("GET", &format!("/v2/r/referrers/{subject}"), &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    let index = r.json();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(index["manifests"][0]["digest"], sig_digest.as_str());
    assert_eq!(
        index["manifests"][0]["artifactType"],
        "application/vnd.example.signature"
    );
    assert_eq!(index["manifests"][0]["annotations"]["org.example"], "yes");

    let r = reg.http(
        "GET",
        &format!("/v2/r/referrers/{subject}?artifactType=application/other"),
        &[],
        b"",
    );
    assert_eq!(r.json()["manifests"], json!([]));
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    let r = reg.http(
        "GET",
        &format!("/v2/r/referrers/{}", sha256(b"nothing")),
        &[],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["manifests"], json!([]));
    assert_eq!(
        reg.http("GET", "/v2/r/referrers/sha256:bad", &[], b"")
            .code(),
        "DIGEST_INVALID"
    );

    // Deleting the referrer removes it from the list.
    assert_eq!(
        reg.http("DELETE", &format!("/v2/r/manifests/{sig_digest}"), &[], b"")
            .status,
        202
    );
    let r = reg.http("GET", &format!("/v2/r/referrers/{subject}"), &[], b"");
    assert_eq!(r.json()["manifests"], json!([]));
}

#[test]
fn large_blob_streams() {
    let tmp = temp_dir();
    let reg = Registry::start(tmp.path());
    // 64 MiB of non-repeating bytes through a session, then back.
    let mut data = vec![0u8; 64 << 20];
    let mut x = 0x9e3779b97f4a7c15u64;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let d = sha256(&data);
    let r = reg.http("POST", "/v2/big/blobs/uploads/", &[], b"");
    let loc = r.header("location").unwrap().to_string();
    assert_eq!(reg.http("PATCH", &loc, &[], &data).status, 202);
    assert_eq!(
        reg.http("PUT", &format!("{loc}?digest={d}"), &[], b"")
            .status,
        201
    );
    let r = reg.http("GET", &format!("/v2/big/blobs/{d}"), &[], b"");
    assert_eq!(r.body.len(), data.len());
    assert!(r.body == data);
}
