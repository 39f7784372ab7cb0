//! Interoperability with distribution (Debian's docker-registry 2.8): images copied
//! docker-registry → yun → docker-registry with skopeo keep their digests, for an OCI
//! image, a Docker schema 2 image and a multi-platform OCI index.

mod common;

use common::*;
use serde_json::json;

fn raw_digest(image: &str) -> String {
    sha256(skopeo(&["inspect", "--raw", "--tls-verify=false", image]).as_bytes())
}

fn copy(from: &str, to: &str, all: bool) {
    let mut args = vec!["copy", "--src-tls-verify=false", "--dest-tls-verify=false"];
    if all {
        args.push("--all");
    }
    args.extend([from, to]);
    skopeo(&args);
}

/// Adds to the layout in `dir` an image index over two single-layer images (amd64, arm64)
/// and points index.json at it under `tag`. Returns the index digest.
fn add_multi_platform_index(dir: &std::path::Path, tag: &str) -> String {
    let mut entries = Vec::new();
    for arch in ["amd64", "arm64"] {
        let img = oci_layout(
            &dir.join(format!("tmp-{arch}")),
            "x",
            &[tar_layer(&[File("arch", arch.as_bytes(), 0o644)])],
            true,
            &["/bin/true"],
        );
        // Move the image's blobs into the shared layout.
        let from = img.dir.join("blobs/sha256");
        for e in std::fs::read_dir(&from).unwrap().flatten() {
            let to = dir.join("blobs/sha256").join(e.file_name());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::rename(e.path(), to).unwrap();
        }
        std::fs::remove_dir_all(&img.dir).unwrap();
        entries.push(json!({
            "mediaType": OCI_MANIFEST, "digest": img.manifest_digest, "size": img.manifest.len(),
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries,
    }))
    .unwrap();
    let d = sha256(&index);
    std::fs::write(dir.join("blobs/sha256").join(&d[7..]), &index).unwrap();
    let top = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": OCI_INDEX, "digest": d, "size": index.len(),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }]});
    std::fs::write(dir.join("index.json"), top.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    d
}

#[test]
fn docker_registry_to_yun_and_back() {
    let tmp = temp_dir();
    let first = DockerRegistry::start(&tmp.path().join("dr1"));
    let last = DockerRegistry::start(&tmp.path().join("dr2"));
    let yun = Registry::start(&tmp.path().join("yun"));

    let src = small_layout(&tmp.path().join("src"), "v1");
    let oci_src = format!("oci:{}:v1", src.dir.display());
    let multi = tmp.path().join("multi");
    let index_digest = add_multi_platform_index(&multi, "all");

    let cases = [
        (
            "oci",
            vec!["--dest-tls-verify=false"],
            oci_src.clone(),
            false,
        ),
        (
            "v2s2",
            vec!["--dest-tls-verify=false", "--format", "v2s2"],
            oci_src.clone(),
            false,
        ),
        (
            "index",
            vec!["--dest-tls-verify=false", "--all"],
            format!("oci:{}:all", multi.display()),
            true,
        ),
    ];
    for (name, flags, from, all) in cases {
        let on_first = format!("docker://{}/interop/{name}:t", first.addr);
        let on_yun = format!("docker://{}/interop/{name}:t", yun.host());
        let on_last = format!("docker://{}/interop/{name}:t", last.addr);
        let mut args = vec!["copy"];
        args.extend(flags.iter().copied());
        args.extend([from.as_str(), on_first.as_str()]);
        skopeo(&args);

        let digest = raw_digest(&on_first);
        copy(&on_first, &on_yun, all);
        assert_eq!(raw_digest(&on_yun), digest, "{name}: docker-registry → yun");
        copy(&on_yun, &on_last, all);
        assert_eq!(
            raw_digest(&on_last),
            digest,
            "{name}: yun → docker-registry"
        );
        if name == "oci" {
            assert_eq!(digest, src.manifest_digest);
        }
        if name == "index" {
            assert_eq!(digest, index_digest);
            // Each platform's image arrived in yun too, with its blobs.
            let index = yun
                .http("GET", "/v2/interop/index/manifests/t", &[], b"")
                .json();
            for child in index["manifests"].as_array().unwrap() {
                let d = child["digest"].as_str().unwrap();
                let m = yun.http("GET", &format!("/v2/interop/index/manifests/{d}"), &[], b"");
                assert_eq!(m.status, 200);
                let layer = m.json()["layers"][0]["digest"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let r = yun.http(
                    "HEAD",
                    &format!("/v2/interop/index/blobs/{layer}"),
                    &[],
                    b"",
                );
                assert_eq!(r.status, 200);
            }
        }
    }
}
