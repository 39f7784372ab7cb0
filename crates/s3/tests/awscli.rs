//! The AWS CLI (`aws s3` and `aws s3api`) against the server.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn s3_high_level_cp_ls_sync_rm() {
    require("aws");
    let s = Server::start();
    s.aws_ok(&["s3", "mb", "s3://high"]);
    let work = s.dir.path().join("work");
    std::fs::create_dir_all(work.join("tree/sub dir/ünï")).unwrap();
    std::fs::write(work.join("small.txt"), b"hello s3\n").unwrap();
    // Over the CLI's multipart threshold (8 MiB): uploaded in parts.
    std::fs::write(work.join("big.bin"), random_bytes(20 << 20, 7)).unwrap();
    std::fs::write(work.join("tree/a.txt"), b"a").unwrap();
    std::fs::write(work.join("tree/sub dir/b.txt"), b"b").unwrap();
    std::fs::write(work.join("tree/sub dir/ünï/c+d e.txt"), b"c").unwrap();
    std::fs::write(work.join("tree/empty"), b"").unwrap();

    for f in ["small.txt", "big.bin"] {
        let local = work.join(f);
        s.aws_ok(&[
            "s3",
            "cp",
            local.to_str().unwrap(),
            &format!("s3://high/{f}"),
        ]);
        let back = work.join(format!("{f}.back"));
        s.aws_ok(&[
            "s3",
            "cp",
            &format!("s3://high/{f}"),
            back.to_str().unwrap(),
        ]);
        assert_eq!(sha256_file(&local), sha256_file(&back), "{f}");
    }
    let ls = s.aws_ok(&["s3", "ls", "s3://high/"]);
    assert!(ls.contains("small.txt") && ls.contains("big.bin"), "{ls}");
    let buckets = s.aws_ok(&["s3", "ls"]);
    assert!(buckets.contains("high"), "{buckets}");

    s.aws_ok(&[
        "s3",
        "sync",
        work.join("tree").to_str().unwrap(),
        "s3://high/tree/",
    ]);
    let down = work.join("down");
    s.aws_ok(&["s3", "sync", "s3://high/tree/", down.to_str().unwrap()]);
    for f in ["a.txt", "sub dir/b.txt", "sub dir/ünï/c+d e.txt", "empty"] {
        assert_eq!(
            sha256_file(&work.join("tree").join(f)),
            sha256_file(&down.join(f)),
            "{f}"
        );
    }
    let ls = s.aws_ok(&["s3", "ls", "--recursive", "s3://high/tree/"]);
    assert_eq!(ls.lines().count(), 4, "{ls}");
    // A second sync has nothing to do.
    let again = s.aws_ok(&[
        "s3",
        "sync",
        work.join("tree").to_str().unwrap(),
        "s3://high/tree/",
    ]);
    assert!(again.trim().is_empty(), "{again}");

    s.aws_ok(&["s3", "rm", "--recursive", "s3://high/"]);
    let ls = s.aws_ok(&["s3", "ls", "--recursive", "s3://high/"]);
    assert!(ls.trim().is_empty(), "{ls}");
    s.aws_ok(&["s3", "rb", "s3://high"]);
    s.assert_no_temp_files_anywhere();
}

#[test]
fn s3api_objects_metadata_ranges_copy_tagging() {
    require("aws");
    let s = Server::start();
    s.aws_ok(&["s3api", "create-bucket", "--bucket", "api"]);
    let err = s.aws_err(&["s3api", "create-bucket", "--bucket", "api"]);
    assert!(err.contains("BucketAlreadyOwnedByYou"), "{err}");
    let body = s.dir.path().join("body");
    std::fs::write(&body, b"0123456789abcdefghij").unwrap();
    let put = s.aws_json(&[
        "s3api",
        "put-object",
        "--bucket",
        "api",
        "--key",
        "dir/obj one",
        "--body",
        body.to_str().unwrap(),
        "--content-type",
        "text/x-yun",
        "--cache-control",
        "max-age=60",
        "--content-disposition",
        "attachment; filename=\"x.txt\"",
        "--metadata",
        "colour=blue,Shape=round",
        "--tagging",
        "env=test&team=yun",
    ]);
    let etag = put["ETag"].as_str().unwrap().to_string();
    assert_eq!(
        etag,
        "\"c89caef64e4d7e47d8b9a7ddc70e2d6a\"".replace(
            "c89caef64e4d7e47d8b9a7ddc70e2d6a",
            &md5_hex(b"0123456789abcdefghij")
        )
    );

    let head = s.aws_json(&[
        "s3api",
        "head-object",
        "--bucket",
        "api",
        "--key",
        "dir/obj one",
    ]);
    assert_eq!(head["ContentLength"], 20);
    assert_eq!(head["ContentType"], "text/x-yun");
    assert_eq!(head["CacheControl"], "max-age=60");
    assert_eq!(head["ContentDisposition"], "attachment; filename=\"x.txt\"");
    assert_eq!(head["Metadata"]["colour"], "blue");
    assert_eq!(head["Metadata"]["shape"], "round");
    assert_eq!(head["ETag"], etag.as_str());

    let out = s.dir.path().join("range");
    let got = s.aws_json(&[
        "s3api",
        "get-object",
        "--bucket",
        "api",
        "--key",
        "dir/obj one",
        "--range",
        "bytes=5-9",
        out.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&out).unwrap(), b"56789");
    assert_eq!(got["ContentRange"], "bytes 5-9/20");
    s.aws_json(&[
        "s3api",
        "get-object",
        "--bucket",
        "api",
        "--key",
        "dir/obj one",
        "--range",
        "bytes=-3",
        out.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&out).unwrap(), b"hij");
    let err = s.aws_err(&[
        "s3api",
        "get-object",
        "--bucket",
        "api",
        "--key",
        "dir/obj one",
        "--range",
        "bytes=50-60",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("InvalidRange"), "{err}");
    let err = s.aws_err(&[
        "s3api",
        "get-object",
        "--bucket",
        "api",
        "--key",
        "nope",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("NoSuchKey"), "{err}");
    let err = s.aws_err(&[
        "s3api",
        "get-object",
        "--bucket",
        "api",
        "--key",
        "dir/obj one",
        "--if-none-match",
        &etag,
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("304"), "{err}");
    let err = s.aws_err(&[
        "s3api",
        "get-object",
        "--bucket",
        "api",
        "--key",
        "dir/obj one",
        "--if-match",
        "\"0000\"",
        out.to_str().unwrap(),
    ]);
    assert!(
        err.contains("PreconditionFailed") || err.contains("412"),
        "{err}"
    );

    let tags = s.aws_json(&[
        "s3api",
        "get-object-tagging",
        "--bucket",
        "api",
        "--key",
        "dir/obj one",
    ]);
    assert_eq!(tags["TagSet"].as_array().unwrap().len(), 2, "{tags}");
    s.aws_ok(&[
        "s3api",
        "put-object-tagging",
        "--bucket",
        "api",
        "--key",
        "dir/obj one",
        "--tagging",
        r#"{"TagSet":[{"Key":"k & <x>","Value":"v ü"}]}"#,
    ]);
    let tags = s.aws_json(&[
        "s3api",
        "get-object-tagging",
        "--bucket",
        "api",
        "--key",
        "dir/obj one",
    ]);
    assert_eq!(
        tags["TagSet"],
        serde_json::json!([{"Key": "k & <x>", "Value": "v ü"}])
    );
    s.aws_ok(&[
        "s3api",
        "delete-object-tagging",
        "--bucket",
        "api",
        "--key",
        "dir/obj one",
    ]);
    let tags = s.aws_json(&[
        "s3api",
        "get-object-tagging",
        "--bucket",
        "api",
        "--key",
        "dir/obj one",
    ]);
    assert_eq!(tags["TagSet"], serde_json::json!([]));

    // Copy keeps metadata (COPY) or takes the request's (REPLACE).
    s.aws_ok(&[
        "s3api",
        "copy-object",
        "--bucket",
        "api",
        "--key",
        "copy1",
        "--copy-source",
        "api/dir/obj one",
    ]);
    let h = s.aws_json(&["s3api", "head-object", "--bucket", "api", "--key", "copy1"]);
    assert_eq!(h["Metadata"]["colour"], "blue");
    assert_eq!(h["ETag"], etag.as_str());
    s.aws_ok(&[
        "s3api",
        "copy-object",
        "--bucket",
        "api",
        "--key",
        "copy2",
        "--copy-source",
        "api/dir/obj one",
        "--metadata-directive",
        "REPLACE",
        "--metadata",
        "new=yes",
        "--content-type",
        "text/plain",
    ]);
    let h = s.aws_json(&["s3api", "head-object", "--bucket", "api", "--key", "copy2"]);
    assert_eq!(h["Metadata"], serde_json::json!({"new": "yes"}));
    assert_eq!(h["ContentType"], "text/plain");

    let del = s.aws_json(&[
        "s3api",
        "delete-objects",
        "--bucket",
        "api",
        "--delete",
        r#"{"Objects":[{"Key":"copy1"},{"Key":"copy2"},{"Key":"never-there"}]}"#,
    ]);
    assert_eq!(del["Deleted"].as_array().unwrap().len(), 3, "{del}");
    let quiet = s.aws_json(&[
        "s3api",
        "delete-objects",
        "--bucket",
        "api",
        "--delete",
        r#"{"Objects":[{"Key":"dir/obj one"}],"Quiet":true}"#,
    ]);
    assert!(quiet.get("Deleted").is_none(), "{quiet}");
    let err = s.aws_err(&[
        "s3api",
        "head-object",
        "--bucket",
        "api",
        "--key",
        "dir/obj one",
    ]);
    assert!(err.contains("404"), "{err}");
    let err = s.aws_err(&["s3api", "head-bucket", "--bucket", "nobucket"]);
    assert!(err.contains("404"), "{err}");
    let loc = s.aws_json(&["s3api", "get-bucket-location", "--bucket", "api"]);
    assert_eq!(loc["LocationConstraint"], Value::Null);
    let err = s.aws_err(&["s3api", "get-bucket-policy", "--bucket", "api"]);
    assert!(err.contains("NotImplemented"), "{err}");
}

#[test]
fn s3api_list_objects_v2_pagination_delimiter() {
    require("aws");
    let s = Server::start();
    s.aws_ok(&["s3api", "create-bucket", "--bucket", "lst"]);
    let body = s.dir.path().join("b");
    std::fs::write(&body, b"x").unwrap();
    let keys = ["a/1", "a/2", "b/1", "c", "d/e/f", "z"];
    for k in keys {
        s.aws_ok(&[
            "s3api",
            "put-object",
            "--bucket",
            "lst",
            "--key",
            k,
            "--body",
            body.to_str().unwrap(),
        ]);
    }
    // The CLI pages with max-items/page-size and follows continuation tokens itself.
    let all = s.aws_json(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        "lst",
        "--page-size",
        "2",
    ]);
    let got: Vec<_> = all["Contents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["Key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, keys);
    let page = s.aws_json(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        "lst",
        "--max-items",
        "4",
    ]);
    assert_eq!(page["Contents"].as_array().unwrap().len(), 4);
    let token = page["NextToken"].as_str().unwrap();
    let rest = s.aws_json(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        "lst",
        "--starting-token",
        token,
    ]);
    assert_eq!(rest["Contents"].as_array().unwrap().len(), 2);
    let d = s.aws_json(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        "lst",
        "--delimiter",
        "/",
        "--page-size",
        "1",
    ]);
    let prefixes: Vec<_> = d["CommonPrefixes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["Prefix"].as_str().unwrap())
        .collect();
    assert_eq!(prefixes, ["a/", "b/", "d/"]);
    let files: Vec<_> = d["Contents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["Key"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["c", "z"]);
    let sa = s.aws_json(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        "lst",
        "--start-after",
        "b/1",
        "--prefix",
        "",
    ]);
    assert_eq!(sa["Contents"].as_array().unwrap().len(), 3);
    let v1 = s.aws_json(&[
        "s3api",
        "list-objects",
        "--bucket",
        "lst",
        "--prefix",
        "a/",
        "--page-size",
        "1",
    ]);
    assert_eq!(v1["Contents"].as_array().unwrap().len(), 2);
}

#[test]
fn s3api_multipart_and_versioning() {
    require("aws");
    let s = Server::start();
    s.aws_ok(&["s3api", "create-bucket", "--bucket", "mpu"]);
    let up = s.aws_json(&[
        "s3api",
        "create-multipart-upload",
        "--bucket",
        "mpu",
        "--key",
        "big",
        "--metadata",
        "m=1",
    ]);
    let id = up["UploadId"].as_str().unwrap().to_string();
    let p1 = s.dir.path().join("p1");
    let p2 = s.dir.path().join("p2");
    std::fs::write(&p1, random_bytes(5 << 20, 1)).unwrap();
    std::fs::write(&p2, random_bytes(1000, 2)).unwrap();
    let e1 = s.aws_json(&[
        "s3api",
        "upload-part",
        "--bucket",
        "mpu",
        "--key",
        "big",
        "--upload-id",
        &id,
        "--part-number",
        "1",
        "--body",
        p1.to_str().unwrap(),
    ])["ETag"]
        .as_str()
        .unwrap()
        .to_string();
    let e2 = s.aws_json(&[
        "s3api",
        "upload-part",
        "--bucket",
        "mpu",
        "--key",
        "big",
        "--upload-id",
        &id,
        "--part-number",
        "2",
        "--body",
        p2.to_str().unwrap(),
    ])["ETag"]
        .as_str()
        .unwrap()
        .to_string();
    let parts = s.aws_json(&[
        "s3api",
        "list-parts",
        "--bucket",
        "mpu",
        "--key",
        "big",
        "--upload-id",
        &id,
    ]);
    assert_eq!(parts["Parts"].as_array().unwrap().len(), 2);
    let uploads = s.aws_json(&["s3api", "list-multipart-uploads", "--bucket", "mpu"]);
    assert_eq!(uploads["Uploads"][0]["UploadId"], id.as_str());
    let bad_order = format!(
        r#"{{"Parts":[{{"PartNumber":2,"ETag":{e2:?}}},{{"PartNumber":1,"ETag":{e1:?}}}]}}"#
    );
    let err = s.aws_err(&[
        "s3api",
        "complete-multipart-upload",
        "--bucket",
        "mpu",
        "--key",
        "big",
        "--upload-id",
        &id,
        "--multipart-upload",
        &bad_order,
    ]);
    assert!(err.contains("InvalidPartOrder"), "{err}");
    let bad_part = format!(
        r#"{{"Parts":[{{"PartNumber":1,"ETag":{e1:?}}},{{"PartNumber":3,"ETag":{e2:?}}}]}}"#
    );
    let err = s.aws_err(&[
        "s3api",
        "complete-multipart-upload",
        "--bucket",
        "mpu",
        "--key",
        "big",
        "--upload-id",
        &id,
        "--multipart-upload",
        &bad_part,
    ]);
    assert!(err.contains("InvalidPart"), "{err}");
    let small_first = format!(
        r#"{{"Parts":[{{"PartNumber":2,"ETag":{e2:?}}},{{"PartNumber":3,"ETag":{e2:?}}}]}}"#
    );
    let p3 = s.aws_json(&[
        "s3api",
        "upload-part",
        "--bucket",
        "mpu",
        "--key",
        "big",
        "--upload-id",
        &id,
        "--part-number",
        "3",
        "--body",
        p2.to_str().unwrap(),
    ]);
    assert_eq!(p3["ETag"].as_str().unwrap(), e2);
    let err = s.aws_err(&[
        "s3api",
        "complete-multipart-upload",
        "--bucket",
        "mpu",
        "--key",
        "big",
        "--upload-id",
        &id,
        "--multipart-upload",
        &small_first,
    ]);
    assert!(err.contains("EntityTooSmall"), "{err}");
    let good = format!(
        r#"{{"Parts":[{{"PartNumber":1,"ETag":{e1:?}}},{{"PartNumber":2,"ETag":{e2:?}}}]}}"#
    );
    let done = s.aws_json(&[
        "s3api",
        "complete-multipart-upload",
        "--bucket",
        "mpu",
        "--key",
        "big",
        "--upload-id",
        &id,
        "--multipart-upload",
        &good,
    ]);
    let mut md5s = Vec::new();
    md5s.extend(hex::decode(e1.trim_matches('"')).unwrap());
    md5s.extend(hex::decode(e2.trim_matches('"')).unwrap());
    assert_eq!(
        done["ETag"].as_str().unwrap(),
        format!("\"{}-2\"", md5_hex(&md5s))
    );
    let out = s.dir.path().join("out");
    let got = s.aws_json(&[
        "s3api",
        "get-object",
        "--bucket",
        "mpu",
        "--key",
        "big",
        out.to_str().unwrap(),
    ]);
    assert_eq!(got["Metadata"]["m"], "1");
    let mut want = std::fs::read(&p1).unwrap();
    want.extend(std::fs::read(&p2).unwrap());
    assert_eq!(std::fs::read(&out).unwrap(), want);
    let err = s.aws_err(&[
        "s3api",
        "abort-multipart-upload",
        "--bucket",
        "mpu",
        "--key",
        "big",
        "--upload-id",
        &id,
    ]);
    assert!(err.contains("NoSuchUpload"), "{err}");

    // Upload part copy with a range, then abort.
    let up = s.aws_json(&[
        "s3api",
        "create-multipart-upload",
        "--bucket",
        "mpu",
        "--key",
        "copied",
    ]);
    let id2 = up["UploadId"].as_str().unwrap().to_string();
    let cp = s.aws_json(&[
        "s3api",
        "upload-part-copy",
        "--bucket",
        "mpu",
        "--key",
        "copied",
        "--upload-id",
        &id2,
        "--part-number",
        "1",
        "--copy-source",
        "mpu/big",
        "--copy-source-range",
        "bytes=0-5242879",
    ]);
    assert_eq!(cp["CopyPartResult"]["ETag"].as_str().unwrap(), e1);
    s.aws_ok(&[
        "s3api",
        "abort-multipart-upload",
        "--bucket",
        "mpu",
        "--key",
        "copied",
        "--upload-id",
        &id2,
    ]);
    let uploads = s.aws_json(&["s3api", "list-multipart-uploads", "--bucket", "mpu"]);
    assert!(uploads.get("Uploads").is_none(), "{uploads}");

    // Versioning.
    s.aws_ok(&[
        "s3api",
        "put-bucket-versioning",
        "--bucket",
        "mpu",
        "--versioning-configuration",
        "Status=Enabled",
    ]);
    let v = s.aws_json(&["s3api", "get-bucket-versioning", "--bucket", "mpu"]);
    assert_eq!(v["Status"], "Enabled");
    let f = s.dir.path().join("v");
    std::fs::write(&f, b"one").unwrap();
    let v1 = s.aws_json(&[
        "s3api",
        "put-object",
        "--bucket",
        "mpu",
        "--key",
        "doc",
        "--body",
        f.to_str().unwrap(),
    ])["VersionId"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(&f, b"two").unwrap();
    let v2 = s.aws_json(&[
        "s3api",
        "put-object",
        "--bucket",
        "mpu",
        "--key",
        "doc",
        "--body",
        f.to_str().unwrap(),
    ])["VersionId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(v1, v2);
    s.aws_json(&[
        "s3api",
        "get-object",
        "--bucket",
        "mpu",
        "--key",
        "doc",
        "--version-id",
        &v1,
        out.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&out).unwrap(), b"one");
    let del = s.aws_json(&["s3api", "delete-object", "--bucket", "mpu", "--key", "doc"]);
    assert_eq!(del["DeleteMarker"], true);
    let err = s.aws_err(&[
        "s3api",
        "get-object",
        "--bucket",
        "mpu",
        "--key",
        "doc",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("NoSuchKey"), "{err}");
    let versions = s.aws_json(&[
        "s3api",
        "list-object-versions",
        "--bucket",
        "mpu",
        "--prefix",
        "doc",
    ]);
    assert_eq!(
        versions["Versions"].as_array().unwrap().len(),
        2,
        "{versions}"
    );
    assert_eq!(
        versions["DeleteMarkers"].as_array().unwrap().len(),
        1,
        "{versions}"
    );
    assert_eq!(versions["DeleteMarkers"][0]["IsLatest"], true);
    // Removing the marker brings the newest version back.
    let marker = versions["DeleteMarkers"][0]["VersionId"].as_str().unwrap();
    s.aws_json(&[
        "s3api",
        "delete-object",
        "--bucket",
        "mpu",
        "--key",
        "doc",
        "--version-id",
        marker,
    ]);
    s.aws_json(&[
        "s3api",
        "get-object",
        "--bucket",
        "mpu",
        "--key",
        "doc",
        out.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&out).unwrap(), b"two");
    let err = s.aws_err(&["s3", "rb", "s3://mpu"]);
    assert!(err.contains("BucketNotEmpty"), "{err}");
    s.assert_no_temp_files("mpu");
}

fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(data))
}

#[test]
fn s3api_versions_paginated_and_suspended() {
    require("aws");
    let s = Server::start();
    s.aws_ok(&["s3api", "create-bucket", "--bucket", "ver"]);
    s.aws_ok(&[
        "s3api",
        "put-bucket-versioning",
        "--bucket",
        "ver",
        "--versioning-configuration",
        "Status=Enabled",
    ]);
    let f = s.dir.path().join("f");
    let mut want = Vec::new();
    for key in ["a", "b", "c"] {
        for n in 0..3 {
            std::fs::write(&f, format!("{key}{n}")).unwrap();
            let v = s.aws_json(&[
                "s3api",
                "put-object",
                "--bucket",
                "ver",
                "--key",
                key,
                "--body",
                f.to_str().unwrap(),
            ])["VersionId"]
                .as_str()
                .unwrap()
                .to_string();
            want.push((key.to_string(), v));
        }
    }
    // Newest first within a key, keys in order; the CLI follows the markers page by page.
    let mut expected = Vec::new();
    for chunk in want.chunks(3) {
        expected.extend(chunk.iter().rev().cloned());
    }
    let all = s.aws_json(&[
        "s3api",
        "list-object-versions",
        "--bucket",
        "ver",
        "--page-size",
        "2",
    ]);
    let got: Vec<(String, String)> = all["Versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["Key"].as_str().unwrap().to_string(),
                v["VersionId"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, expected);
    // Suspended: a PUT writes the "null" version, a second PUT replaces it, old ids stay.
    s.aws_ok(&[
        "s3api",
        "put-bucket-versioning",
        "--bucket",
        "ver",
        "--versioning-configuration",
        "Status=Suspended",
    ]);
    for body in ["n1", "n2"] {
        std::fs::write(&f, body).unwrap();
        let put = s.aws_json(&[
            "s3api",
            "put-object",
            "--bucket",
            "ver",
            "--key",
            "a",
            "--body",
            f.to_str().unwrap(),
        ]);
        assert_eq!(put["VersionId"], "null");
    }
    let a = s.aws_json(&[
        "s3api",
        "list-object-versions",
        "--bucket",
        "ver",
        "--prefix",
        "a",
    ]);
    let ids: Vec<_> = a["Versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["VersionId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 4, "{a}");
    assert_eq!(ids[0], "null");
    let out = s.dir.path().join("out");
    s.aws_json(&[
        "s3api",
        "get-object",
        "--bucket",
        "ver",
        "--key",
        "a",
        out.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&out).unwrap(), b"n2");
    s.aws_json(&[
        "s3api",
        "get-object",
        "--bucket",
        "ver",
        "--key",
        "a",
        "--version-id",
        &want[0].1,
        out.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&out).unwrap(), b"a0");
}
