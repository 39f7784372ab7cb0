//! kill -9 of the server during a large PUT: after a restart the key holds its old version
//! (never a partial object) and no temp file is left. The server runs in a child process: this
//! test binary re-executed to run `crash_child_server`, which serves until killed.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const ROOT_ENV: &str = "YUN_S3_CRASH_CHILD_ROOT";

/// Only acts when the crash test started this binary as its server; a no-op otherwise.
#[test]
fn crash_child_server() {
    let Ok(root) = std::env::var(ROOT_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = yun_s3::Config::new("127.0.0.1:0".parse().unwrap(), &root);
        c.credentials.push((ACCESS.into(), SECRET.into()));
        let (addr, _h) = yun_s3::spawn(c).await.unwrap();
        let tmp = Path::new(&root).with_extension("addr.tmp");
        std::fs::write(&tmp, addr.to_string()).unwrap();
        std::fs::rename(&tmp, Path::new(&root).with_extension("addr")).unwrap();
        std::future::pending::<()>().await;
    });
}

struct ChildServer(Child);

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_child(root: &Path) -> (ChildServer, String) {
    let addr_file = root.with_extension("addr");
    let _ = std::fs::remove_file(&addr_file);
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_server",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROOT_ENV, root)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let child = ChildServer(child);
    let start = Instant::now();
    loop {
        if let Ok(a) = std::fs::read_to_string(&addr_file) {
            return (child, format!("http://{a}"));
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "child server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn aws(dir: &Path, endpoint: &str, args: &[&str]) -> Command {
    let empty = dir.join("empty");
    let mut c = Command::new("aws");
    c.args(args)
        .args(["--endpoint-url", endpoint])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("AWS_ACCESS_KEY_ID", ACCESS)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", &empty)
        .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
        .env("AWS_MAX_ATTEMPTS", "1");
    c
}

fn ok(mut c: Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn dir_size(d: &Path) -> u64 {
    std::fs::read_dir(d)
        .map(|it| {
            it.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn kill_9_during_put_leaves_no_partial_object() {
    require("aws");
    let dir = tempdir();
    std::fs::write(dir.path().join("empty"), "").unwrap();
    let root = dir.path().join("data");
    let old = dir.path().join("old");
    std::fs::write(&old, b"the old version").unwrap();
    let big = dir.path().join("big");
    std::fs::write(&big, random_bytes(256 << 20, 5)).unwrap();

    let (mut child, ep) = start_child(&root);
    ok(aws(
        dir.path(),
        &ep,
        &["s3api", "create-bucket", "--bucket", "crash"],
    ));
    ok(aws(
        dir.path(),
        &ep,
        &[
            "s3api",
            "put-object",
            "--bucket",
            "crash",
            "--key",
            "obj",
            "--body",
            old.to_str().unwrap(),
        ],
    ));
    // One single PUT of 256 MiB (not multipart); killed once the body is partly on disk.
    let mut put = aws(
        dir.path(),
        &ep,
        &[
            "s3api",
            "put-object",
            "--bucket",
            "crash",
            "--key",
            "obj",
            "--body",
            big.to_str().unwrap(),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let tmp = root.join("buckets/crash/tmp");
    let start = Instant::now();
    while dir_size(&tmp) < 8 << 20 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "upload never reached the disk"
        );
        assert!(
            put.try_wait().unwrap().is_none(),
            "the PUT finished before the kill"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // SIGKILL: no destructor, no cleanup.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let _ = put.wait();
    assert!(
        dir_size(&tmp) > 0,
        "the partial body should still be in tmp before restart"
    );

    let (_child, ep) = start_child(&root);
    let leftover: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(
        leftover.is_empty(),
        "temp files left after restart: {leftover:?}"
    );
    let out = dir.path().join("out");
    ok(aws(
        dir.path(),
        &ep,
        &[
            "s3api",
            "get-object",
            "--bucket",
            "crash",
            "--key",
            "obj",
            out.to_str().unwrap(),
        ],
    ));
    assert_eq!(std::fs::read(&out).unwrap(), b"the old version");
    let ls = ok(aws(
        dir.path(),
        &ep,
        &["s3", "ls", "--recursive", "s3://crash/"],
    ));
    assert_eq!(ls.lines().count(), 1, "{ls}");
}
