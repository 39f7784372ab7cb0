//! htpasswd Basic authentication and TLS, with real clients (htpasswd, curl, skopeo).

mod common;

use std::process::Command;

use base64::Engine as _;
use common::*;

fn basic(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

#[test]
fn htpasswd_basic_auth() {
    let tmp = temp_dir();
    let file = tmp.path().join("htpasswd");
    run(Command::new("htpasswd")
        .args(["-B", "-b", "-c"])
        .arg(&file)
        .args(["alice", "s3cret"]));
    let mut cfg = config(&tmp.path().join("root"));
    cfg.htpasswd = Some(file.clone());
    let reg = Registry::start_with(cfg).unwrap();

    let r = reg.http("GET", "/v2/", &[], b"");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"yun\""));
    assert_eq!(r.code(), "UNAUTHORIZED");
    let wrong = basic("alice", "nope");
    let r = reg.http("GET", "/v2/", &[("Authorization", &wrong)], b"");
    assert_eq!(r.status, 401);
    let r = reg.http(
        "GET",
        "/v2/_catalog",
        &[("Authorization", &basic("bob", "s3cret"))],
        b"",
    );
    assert_eq!(r.status, 401);
    let right = basic("alice", "s3cret");
    let r = reg.http("GET", "/v2/", &[("Authorization", &right)], b"");
    assert_eq!(r.status, 200);

    // skopeo: refused without credentials, works with them.
    let src = small_layout(&tmp.path().join("src"), "v1");
    let from = format!("oci:{}:v1", src.dir.display());
    let to = format!("docker://{}/auth/img:v1", reg.host());
    let out = Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--dest-tls-verify=false",
            &from,
            &to,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        "alice:s3cret",
        &from,
        &to,
    ]);
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        "alice:s3cret",
        &to,
    ]);
    assert_eq!(sha256(raw.as_bytes()), src.manifest_digest);
}

#[test]
fn bad_configuration_is_one_clear_error() {
    let tmp = temp_dir();
    let root = tmp.path().join("root");
    let err = |cfg| match Registry::start_with(cfg) {
        Ok(_) => panic!("started"),
        Err(e) => e.to_string(),
    };

    let mut cfg = config(&root);
    cfg.htpasswd = Some(tmp.path().join("missing"));
    assert!(err(cfg).contains("htpasswd"));

    let plain = tmp.path().join("plain");
    std::fs::write(&plain, "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n").unwrap();
    let mut cfg = config(&root);
    cfg.htpasswd = Some(plain);
    assert!(err(cfg).contains("bcrypt"));

    let junk = tmp.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let mut cfg = config(&root);
    cfg.tls_cert = Some(junk.clone());
    cfg.tls_key = Some(junk.clone());
    let e = err(cfg);
    assert!(e.contains("junk.pem"), "{e}");

    let mut cfg = config(&root);
    cfg.tls_cert = Some(junk);
    assert!(err(cfg).contains("both"));

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cfg = config(&root);
    cfg.addr = taken.local_addr().unwrap();
    let e = err(cfg);
    assert!(
        e.contains("cannot listen on") && e.contains("in use"),
        "{e}"
    );
}

#[test]
fn tls_with_rcgen_certificate() {
    let tmp = temp_dir();
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let certs = tmp.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let cert = certs.join("ca.crt");
    let key = tmp.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let mut cfg = config(&tmp.path().join("root"));
    cfg.tls_cert = Some(cert.clone());
    cfg.tls_key = Some(key);
    let reg = Registry::start_with(cfg).unwrap();

    let url = format!("https://{}/v2/", reg.host());
    let out = run(Command::new("curl")
        .args(["-sS", "-D", "-", "-o", "/dev/null", "--cacert"])
        .arg(&cert)
        .arg(&url));
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out
        .to_ascii_lowercase()
        .contains("docker-distribution-api-version: registry/2.0"));
    // Without trusting the certificate, curl refuses.
    let refused = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", &url])
        .output()
        .unwrap();
    assert!(!refused.status.success());

    // skopeo over verified TLS, trusting the certificate through a cert dir.
    let src = small_layout(&tmp.path().join("src"), "v1");
    let to = format!("docker://{}/tls/img:v1", reg.host());
    let cert_dir = format!("--dest-cert-dir={}", certs.display());
    skopeo(&[
        "copy",
        &cert_dir,
        &format!("oci:{}:v1", src.dir.display()),
        &to,
    ]);
    let raw = skopeo(&[
        "inspect",
        "--raw",
        &format!("--cert-dir={}", certs.display()),
        &to,
    ]);
    assert_eq!(sha256(raw.as_bytes()), src.manifest_digest);
}
