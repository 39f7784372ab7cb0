//! Shared by the S3 tests: a server in-process on 127.0.0.1:0 over a temp root, and the real
//! clients (aws, python3 with boto3, s3cmd, rclone) pointed at it with no host config leaking in.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const ACCESS: &str = "yuntestaccess";
pub const SECRET: &str = "yuntestsecret/with+chars";

pub struct Server {
    pub rt: tokio::runtime::Runtime,
    pub handle: Option<yun_s3::ServerHandle>,
    pub addr: std::net::SocketAddr,
    /// Root of the store (`root/data`) and the clients' config files.
    pub dir: tempfile::TempDir,
}

/// Panics with a clear line when a client is missing: these tests never skip.
pub fn require(cmd: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{cmd} is not installed: run scripts/deps.sh (s3cmd, rclone from Debian; aws, boto3 from PyPI)"
    );
}

pub fn require_python(module: &str) {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "python3 module {module} is missing: pip install {module}"
    );
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("yun-s3-test-")
        .tempdir()
        .unwrap()
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(|_| {})
    }

    pub fn start_with(f: impl FnOnce(&mut yun_s3::Config)) -> Server {
        let dir = tempdir();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut config =
            yun_s3::Config::new("127.0.0.1:0".parse().unwrap(), dir.path().join("data"));
        config.credentials.push((ACCESS.into(), SECRET.into()));
        f(&mut config);
        let (addr, handle) = rt.block_on(yun_s3::spawn(config)).unwrap();
        std::fs::write(dir.path().join("empty"), "").unwrap();
        Server {
            rt,
            handle: Some(handle),
            addr,
            dir,
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `aws` with only our credentials and endpoint; config files point to an empty file.
    pub fn aws(&self, args: &[&str]) -> Output {
        let empty = self.dir.path().join("empty");
        Command::new("aws")
            .args(args)
            .args(["--endpoint-url", &self.endpoint()])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("AWS_ACCESS_KEY_ID", ACCESS)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", &empty)
            .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .expect("run aws")
    }

    /// `aws` that must succeed; its stdout.
    pub fn aws_ok(&self, args: &[&str]) -> String {
        let out = self.aws(args);
        assert!(
            out.status.success(),
            "aws {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `aws … --output json` parsed.
    pub fn aws_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        let out = self.aws_ok(&a);
        if out.trim().is_empty() {
            return serde_json::Value::Null;
        }
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("aws {args:?}: {e}: {out}"))
    }

    /// `aws` that must fail; its stderr (which names the S3 error code).
    pub fn aws_err(&self, args: &[&str]) -> String {
        let out = self.aws(args);
        assert!(
            !out.status.success(),
            "aws {args:?} succeeded, expected an error"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs a python script with boto3 against this server; the script gets ENDPOINT,
    /// ACCESS, SECRET in its environment and must exit 0.
    pub fn python(&self, script: &str) -> String {
        let empty = self.dir.path().join("empty");
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .env("ENDPOINT", self.endpoint())
            .env("ACCESS", ACCESS)
            .env("SECRET", SECRET)
            .env("AWS_CONFIG_FILE", &empty)
            .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("WORK", self.dir.path())
            .output()
            .expect("run python3");
        assert!(
            out.status.success(),
            "python failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The bucket's tmp dir is empty (no staged bodies left behind).
    pub fn assert_no_temp_files(&self, bucket: &str) {
        let tmp = self.root().join("buckets").join(bucket).join("tmp");
        let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
        assert!(
            left.is_empty(),
            "temp files left in {}: {left:?}",
            tmp.display()
        );
    }
}

impl Server {
    /// No bucket has staged bodies left in its tmp dir.
    pub fn assert_no_temp_files_anywhere(&self) {
        let buckets = self.root().join("buckets");
        for b in std::fs::read_dir(&buckets).unwrap() {
            let name = b.unwrap().file_name();
            self.assert_no_temp_files(name.to_str().unwrap());
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.rt.block_on(h.shutdown());
        }
    }
}

pub fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

/// Deterministic pseudo-random bytes (xorshift), so content differs between files.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}
