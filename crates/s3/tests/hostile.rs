//! Bad input from an authenticated attacker (raw requests signed by botocore, sent unmodified):
//! path traversal in keys and bucket names, malformed XML, bad signatures, hash mismatches,
//! clock skew; afterwards nothing exists outside the storage root and every key's file is
//! inside its bucket.

mod common;

use common::*;

fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        }
        out.push(p);
    }
}

#[test]
fn attacker_stays_inside_the_root() {
    require("python3");
    require_python("botocore");
    let s = Server::start();
    let before: Vec<_> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let out = s.python(include_str!("py/hostile.py"));
    assert!(out.contains("hostile ok"), "{out}");
    let after: Vec<_> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after, "files appeared beside the storage root");
    // Only the one valid bucket exists, and every file under it is in the known layout.
    let buckets: Vec<_> = std::fs::read_dir(s.root().join("buckets"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(buckets, ["victim"]);
    let mut files = Vec::new();
    walk(&s.root(), &mut files);
    for f in files {
        let rel = f
            .strip_prefix(s.root())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let ok = rel == "tmp" || rel == "buckets" || rel.starts_with("buckets/victim");
        assert!(ok, "unexpected path {rel}");
        assert!(!rel.contains(".."), "{rel}");
    }
    s.assert_no_temp_files("victim");
}

#[test]
fn limits_refuse_oversized_objects_and_headers() {
    require("aws");
    let s = Server::start_with(|c| {
        c.max_object_size = 1000;
    });
    s.aws_ok(&["s3api", "create-bucket", "--bucket", "limits"]);
    let big = s.dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 1001]).unwrap();
    let err = s.aws_err(&[
        "s3api",
        "put-object",
        "--bucket",
        "limits",
        "--key",
        "k",
        "--body",
        big.to_str().unwrap(),
    ]);
    assert!(err.contains("EntityTooLarge"), "{err}");
    std::fs::write(&big, vec![b'x'; 1000]).unwrap();
    s.aws_ok(&[
        "s3api",
        "put-object",
        "--bucket",
        "limits",
        "--key",
        "k",
        "--body",
        big.to_str().unwrap(),
    ]);
    // Headers over the limit (16 KiB by default) get S3's error, also when far over (hyper's
    // read buffer, 256 KiB, bounds what is held; beyond it hyper answers 431 itself).
    let big_meta = format!("big={}", "a".repeat(20 << 10));
    let err = s.aws_err(&[
        "s3api",
        "put-object",
        "--bucket",
        "limits",
        "--key",
        "k2",
        "--metadata",
        &big_meta,
    ]);
    assert!(err.contains("RequestHeaderSectionTooLarge"), "{err}");
    // Too long for one command-line argument: given to the CLI as a file.
    let huge = s.dir.path().join("huge.json");
    std::fs::write(&huge, format!("{{\"big\": \"{}\"}}", "a".repeat(300 << 10))).unwrap();
    let huge_meta = format!("file://{}", huge.display());
    let err = s.aws_err(&[
        "s3api",
        "put-object",
        "--bucket",
        "limits",
        "--key",
        "k3",
        "--metadata",
        &huge_meta,
    ]);
    assert!(
        err.contains("RequestHeaderSectionTooLarge") || err.contains("431"),
        "{err}"
    );
    s.assert_no_temp_files("limits");
}

/// Virtual-host style (`BUCKET.DOMAIN`) beside path style, with a configured domain.
#[test]
fn virtual_host_addressing() {
    require("python3");
    require_python("botocore");
    let s = Server::start_with(|c| c.domain = Some("s3.yun.test".into()));
    let out = s.python(
        r#"
import http.client, os, urllib.parse
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
ep = urllib.parse.urlsplit(os.environ["ENDPOINT"])
creds = Credentials(os.environ["ACCESS"], os.environ["SECRET"])
def send(method, host, path, body=b""):
    req = AWSRequest(method=method, url=f"http://{host}{path}", data=body)
    S3SigV4Auth(creds, "s3", "us-east-1").add_auth(req)
    c = http.client.HTTPConnection(ep.netloc)
    headers = dict(req.headers.items())
    headers["Host"] = host
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    return r.status, r.read()
port = ep.port
r = send("PUT", f"127.0.0.1:{port}", "/vhost")
assert r[0] == 200, r
r = send("PUT", f"vhost.s3.yun.test:{port}", "/dir/key", b"via vhost")
assert r[0] == 200, r
assert send("GET", f"127.0.0.1:{port}", "/vhost/dir/key") == (200, b"via vhost")
status, body = send("GET", f"vhost.s3.yun.test:{port}", "/?list-type=2")
assert status == 200 and b"<Key>dir/key</Key>" in body, body
print("vhost ok")
"#,
    );
    assert!(out.contains("vhost ok"), "{out}");
}

/// One request in flight per client: a second concurrent one gets 503 SlowDown.
#[test]
fn requests_in_flight_per_client_are_bounded() {
    require("aws");
    require("curl");
    let s = Server::start_with(|c| c.max_requests_per_client = 1);
    s.aws_ok(&["s3api", "create-bucket", "--bucket", "slow"]);
    // A signed PUT whose body trickles in (curl, rate-limited) holds the one slot; meanwhile
    // a listing from the same client is refused.
    let body = s.dir.path().join("body");
    std::fs::write(&body, random_bytes(4 << 20, 9)).unwrap();
    let ep = s.endpoint();
    let mut curl = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "--limit-rate",
            "200k",
            "--aws-sigv4",
            "aws:amz:us-east-1:s3",
        ])
        .args(["--user", &format!("{ACCESS}:{SECRET}")])
        .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
        .args(["-T", body.to_str().unwrap(), &format!("{ep}/slow/big")])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let err = s.aws_err(&["s3api", "list-objects-v2", "--bucket", "slow"]);
    assert!(err.contains("SlowDown") || err.contains("503"), "{err}");
    let _ = curl.kill();
    let _ = curl.wait();
}
