//! s3cmd and rclone (Debian's) against the server; every round trip checked by hash.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run client");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn s3cmd_put_get_ls_del() {
    require("s3cmd");
    let s = Server::start();
    let cfg = s.dir.path().join("s3cmd.cfg");
    std::fs::write(
        &cfg,
        format!(
            "[default]\naccess_key = {ACCESS}\nsecret_key = {SECRET}\nhost_base = {a}\nhost_bucket = {a}\n\
             use_https = False\nsignature_v2 = False\nbucket_location = us-east-1\nmultipart_chunk_size_mb = 5\n",
            a = s.addr
        ),
    )
    .unwrap();
    let s3cmd = |args: &[&str]| {
        let mut c = Command::new("s3cmd");
        c.arg("-c")
            .arg(&cfg)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", s.dir.path());
        run(&mut c)
    };
    s3cmd(&["mb", "s3://s3cmd-bucket"]);
    let small = s.dir.path().join("small file.txt");
    let big = s.dir.path().join("big.bin");
    std::fs::write(&small, b"from s3cmd\n").unwrap();
    std::fs::write(&big, random_bytes(12 << 20, 3)).unwrap();
    for (local, key) in [(&small, "dir/small file.txt"), (&big, "big.bin")] {
        let put = s3cmd(&[
            "put",
            "--progress",
            "--multipart-chunk-size-mb=5",
            local.to_str().unwrap(),
            &format!("s3://s3cmd-bucket/{key}"),
        ]);
        if key == "big.bin" {
            // 12 MiB in 5 MiB chunks: a multipart upload of three parts.
            assert!(put.contains("part 3 of 3"), "{put}");
        }
        let back = s.dir.path().join("back");
        let _ = std::fs::remove_file(&back);
        s3cmd(&[
            "get",
            &format!("s3://s3cmd-bucket/{key}"),
            back.to_str().unwrap(),
        ]);
        assert_eq!(sha256_file(local), sha256_file(&back), "{key}");
    }
    let ls = s3cmd(&["ls", "-r", "s3://s3cmd-bucket"]);
    assert!(
        ls.contains("s3://s3cmd-bucket/dir/small file.txt") && ls.contains("big.bin"),
        "{ls}"
    );
    let info = s3cmd(&["info", "s3://s3cmd-bucket/big.bin"]);
    assert!(info.contains("File size: 12582912"), "{info}");
    s3cmd(&[
        "del",
        "s3://s3cmd-bucket/big.bin",
        "s3://s3cmd-bucket/dir/small file.txt",
    ]);
    let ls = s3cmd(&["ls", "-r", "s3://s3cmd-bucket"]);
    assert!(ls.trim().is_empty(), "{ls}");
    s3cmd(&["rb", "s3://s3cmd-bucket"]);
}

fn tree_hashes(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, sha256_file(&p)));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn rclone_sync_tree_up_and_down() {
    require("rclone");
    let s = Server::start();
    let up = s.dir.path().join("up");
    for (i, f) in [
        "a.txt",
        "deep/er/still/b.bin",
        "space name/ü ñ.txt",
        "weird/%41+&=?.txt",
        "empty",
        "big/twelve.bin",
    ]
    .iter()
    .enumerate()
    {
        let p = up.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let len = match *f {
            "empty" => 0,
            "big/twelve.bin" => 12 << 20,
            _ => 1000 * (i + 1),
        };
        std::fs::write(&p, random_bytes(len, i as u64 + 10)).unwrap();
    }
    let rclone = |args: &[&str]| {
        let mut c = Command::new("rclone");
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .args(["--config", s.dir.path().join("empty").to_str().unwrap()])
            .args(["--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M"])
            .env("RCLONE_CONFIG_YUN_TYPE", "s3")
            .env("RCLONE_CONFIG_YUN_PROVIDER", "Other")
            .env("RCLONE_CONFIG_YUN_ENDPOINT", s.endpoint())
            .env("RCLONE_CONFIG_YUN_ACCESS_KEY_ID", ACCESS)
            .env("RCLONE_CONFIG_YUN_SECRET_ACCESS_KEY", SECRET)
            .env("RCLONE_CONFIG_YUN_REGION", "us-east-1")
            .env("HOME", s.dir.path());
        run(&mut c)
    };
    rclone(&["mkdir", "yun:rclone-bucket"]);
    rclone(&["sync", up.to_str().unwrap(), "yun:rclone-bucket/tree"]);
    rclone(&["check", up.to_str().unwrap(), "yun:rclone-bucket/tree"]);
    let down = s.dir.path().join("down");
    rclone(&["sync", "yun:rclone-bucket/tree", down.to_str().unwrap()]);
    assert_eq!(tree_hashes(&up), tree_hashes(&down));
    // A deletion locally is synced as a deletion remotely.
    std::fs::remove_file(up.join("a.txt")).unwrap();
    rclone(&["sync", up.to_str().unwrap(), "yun:rclone-bucket/tree"]);
    let ls = rclone(&["lsf", "-R", "yun:rclone-bucket/tree"]);
    assert!(!ls.lines().any(|l| l == "a.txt"), "{ls}");
    rclone(&["purge", "yun:rclone-bucket"]);
    s.assert_no_temp_files_anywhere();
}
