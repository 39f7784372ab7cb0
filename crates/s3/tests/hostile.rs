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
    // A request head over the limit is refused by the HTTP layer (431), before any work.
    let huge = "a".repeat(64 << 10);
    let err = s.aws_err(&[
        "s3api",
        "put-object",
        "--bucket",
        "limits",
        "--key",
        "k2",
        "--metadata",
        &format!("big={huge}"),
    ]);
    assert!(
        err.contains("431") || err.contains("Connection") || err.contains("closed"),
        "{err}"
    );
    s.assert_no_temp_files("limits");
}
