//! `yun s3 serve`: keys from the environment, served to the AWS CLI, stopped by SIGTERM; and
//! its one-line errors (missing keys, a root that is a file).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn aws(dir: &std::path::Path, port: u16, args: &[&str]) -> std::process::Output {
    let empty = dir.join("empty");
    std::fs::write(&empty, "").unwrap();
    Command::new("aws")
        .args(args)
        .args(["--endpoint-url", &format!("http://127.0.0.1:{port}")])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("AWS_ACCESS_KEY_ID", "yun-cli-key")
        .env("AWS_SECRET_ACCESS_KEY", "yun-cli-secret")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", &empty)
        .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
        .output()
        .expect("aws (the AWS CLI, from PyPI) must be installed")
}

#[test]
fn s3_serve_takes_keys_from_the_environment() {
    let dir = tempfile::Builder::new()
        .prefix("yun-s3-cli-")
        .tempdir()
        .unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_yun"))
        .args([
            "s3",
            "serve",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--root",
        ])
        .arg(dir.path().join("data"))
        .env("YUN_S3_ACCESS_KEY", "yun-cli-key")
        .env("YUN_S3_SECRET_KEY", "yun-cli-secret")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Server(child);
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "yun s3 serve did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mb = aws(dir.path(), port, &["s3", "mb", "s3://from-cli"]);
    assert!(
        mb.status.success(),
        "{}",
        String::from_utf8_lossy(&mb.stderr)
    );
    let ls = aws(dir.path(), port, &["s3", "ls"]);
    assert!(String::from_utf8_lossy(&ls.stdout).contains("from-cli"));
    // SIGTERM: a clean stop, exit code 0.
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    unsafe { libc::kill(server.0.id() as i32, libc::SIGTERM) };
    let status = server.0.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn s3_serve_errors_are_one_line() {
    let dir = tempfile::Builder::new()
        .prefix("yun-s3-cli-")
        .tempdir()
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_yun"))
        .args(["s3", "serve", "--root"])
        .arg(dir.path())
        .env_remove("YUN_S3_ACCESS_KEY")
        .env_remove("YUN_S3_SECRET_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--access-key"));
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_yun"))
        .args(["s3", "serve", "--addr", "127.0.0.1:0", "--root"])
        .arg(&file)
        .env("YUN_S3_ACCESS_KEY", "k")
        .env("YUN_S3_SECRET_KEY", "s")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot open S3 storage"), "{err}");
}
