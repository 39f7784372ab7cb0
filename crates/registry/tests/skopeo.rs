//! skopeo (containers/image, a real client) pushes to and pulls from the registry.

mod common;

use common::*;

/// OCI layout → registry → another OCI layout: the manifest digest never changes, and
/// list-tags/inspect see what was pushed.
#[test]
fn oci_round_trip_keeps_digest() {
    let tmp = temp_dir();
    let src = small_layout(&tmp.path().join("src"), "v1");
    let reg = Registry::start(&tmp.path().join("root"));
    let remote = format!("docker://{}/yun/small:v1", reg.host());

    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", src.dir.display()),
        &remote,
    ]);
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &remote]);
    assert_eq!(sha256(raw.as_bytes()), src.manifest_digest);
    assert_eq!(
        raw.as_bytes(),
        &src.manifest[..],
        "manifest bytes kept as pushed"
    );

    let back = tmp.path().join("back");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &remote,
        &format!("oci:{}:v1", back.display()),
    ]);
    assert_eq!(layout_manifest_digest(&back), src.manifest_digest);

    // A second tag and list-tags.
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", src.dir.display()),
        &format!("docker://{}/yun/small:v2", reg.host()),
    ]);
    let tags: serde_json::Value = serde_json::from_str(&skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{}/yun/small", reg.host()),
    ]))
    .unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["v1", "v2"]));

    let info: serde_json::Value =
        serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", &remote])).unwrap();
    assert_eq!(info["Digest"], src.manifest_digest.as_str());
    assert_eq!(info["Os"], "linux");
    assert_eq!(info["Layers"].as_array().unwrap().len(), 2);
    assert_eq!(info["Layers"][0], src.layer_digests[0].as_str());

    // Copying within the registry to another repository (skopeo may mount the blobs).
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &remote,
        &format!("docker://{}/other/repo:copied", reg.host()),
    ]);
    let raw2 = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/other/repo:copied", reg.host()),
    ]);
    assert_eq!(sha256(raw2.as_bytes()), src.manifest_digest);

    let catalog = reg.http("GET", "/v2/_catalog", &[], b"").json();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["other/repo", "yun/small"])
    );
}

/// Docker schema 2 (`--format v2s2`): stored and served as the docker media type, and a
/// `dir:` copy back holds the very manifest the registry names by digest.
#[test]
fn docker_schema2_round_trip() {
    let tmp = temp_dir();
    let src = small_layout(&tmp.path().join("src"), "v1");
    let reg = Registry::start(&tmp.path().join("root"));
    let remote = format!("docker://{}/docker/small:v2s2", reg.host());

    skopeo(&[
        "copy",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", src.dir.display()),
        &remote,
    ]);
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &remote]);
    let manifest: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(manifest["mediaType"], DOCKER_MANIFEST);

    let head = reg.http(
        "HEAD",
        "/v2/docker/small/manifests/v2s2",
        &[("Accept", DOCKER_MANIFEST)],
        b"",
    );
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some(DOCKER_MANIFEST));
    let digest = head.header("docker-content-digest").unwrap().to_string();
    assert_eq!(sha256(raw.as_bytes()), digest);
    assert_eq!(
        head.header("content-length").unwrap(),
        raw.len().to_string()
    );

    // A client accepting only OCI types gets no conversion, but MANIFEST_UNKNOWN.
    let oci_only = reg.http(
        "GET",
        "/v2/docker/small/manifests/v2s2",
        &[("Accept", OCI_MANIFEST)],
        b"",
    );
    assert_eq!(oci_only.status, 404);
    assert_eq!(oci_only.code(), "MANIFEST_UNKNOWN");

    let back = tmp.path().join("back");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &remote,
        &format!("dir:{}", back.display()),
    ]);
    let pulled = std::fs::read(back.join("manifest.json")).unwrap();
    assert_eq!(sha256(&pulled), digest);

    // And by digest.
    let by_digest = format!("docker://{}/docker/small@{digest}", reg.host());
    let info: serde_json::Value =
        serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", &by_digest])).unwrap();
    assert_eq!(info["Digest"], digest.as_str());
}
