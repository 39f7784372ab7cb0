//! The object store `yun up` runs beside its API server: `yun_s3` on the API server's host,
//! its data in DATA/s3/data, one key pair made on first start and kept (DATA/s3/key.json,
//! 0600), and the files the AWS CLI, boto3, s3cmd-style tools read written beside the
//! kubeconfig: DATA/s3-credentials (a shared credentials file) and DATA/s3-config (region and
//! `endpoint_url`). The port is chosen once (or given with `--s3-addr`) and kept, so the
//! endpoint does not move between restarts.

use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(clap::Args, Debug)]
pub struct S3Flags {
    /// Where `yun up` serves S3 (default: the API server's host, on a port chosen once and
    /// kept in the data dir).
    #[arg(long)]
    pub s3_addr: Option<SocketAddr>,
    /// Run no S3 service.
    #[arg(long)]
    pub disable_s3: bool,
}

#[derive(Serialize, Deserialize)]
struct Key {
    access_key: String,
    secret_key: String,
    /// The port last served on (0: none yet).
    #[serde(default)]
    port: u16,
}

fn random(n: usize, alphabet: &[u8]) -> Result<String> {
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes
        .iter()
        .map(|b| alphabet[*b as usize % alphabet.len()] as char)
        .collect())
}

/// Write `text` to `path` (0600) atomically: temp, fsync, rename.
fn write_private(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Start the service; returns its address and the handle that stops it.
pub async fn start(
    data_dir: &Path,
    api_addr: SocketAddr,
    flags: &S3Flags,
) -> Result<Option<(SocketAddr, yun_s3::ServerHandle)>> {
    if flags.disable_s3 {
        return Ok(None);
    }
    let dir = data_dir.join("s3");
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let key_path = dir.join("key.json");
    let mut key: Key = match std::fs::read(&key_path) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("{} is not yun's S3 key file", key_path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Key {
            access_key: format!("YUN{}", random(17, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")?),
            secret_key: random(
                40,
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            )?,
            port: 0,
        },
        Err(e) => return Err(e).with_context(|| format!("reading {}", key_path.display())),
    };
    let addr = flags
        .s3_addr
        .unwrap_or_else(|| SocketAddr::new(api_addr.ip(), key.port));
    let mut config = yun_s3::Config::new(addr, dir.join("data"));
    config.credentials = vec![(key.access_key.clone(), key.secret_key.clone())];
    let started = match yun_s3::spawn(config).await {
        Ok(s) => s,
        // The kept port was taken meanwhile: any free one.
        Err(_) if flags.s3_addr.is_none() && key.port != 0 => {
            let mut config =
                yun_s3::Config::new(SocketAddr::new(api_addr.ip(), 0), dir.join("data"));
            config.credentials = vec![(key.access_key.clone(), key.secret_key.clone())];
            yun_s3::spawn(config).await?
        }
        Err(e) => return Err(e).with_context(|| format!("serving S3 on {addr}")),
    };
    let bound = started.0;
    key.port = bound.port();
    write_private(&key_path, &serde_json::to_string_pretty(&key)?)?;
    write_private(
        &data_dir.join("s3-credentials"),
        &format!(
            "# yun up's S3 service: AWS_SHARED_CREDENTIALS_FILE={} AWS_CONFIG_FILE={} aws s3 ls\n[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            data_dir.join("s3-credentials").display(),
            data_dir.join("s3-config").display(),
            key.access_key,
            key.secret_key
        ),
    )?;
    write_private(
        &data_dir.join("s3-config"),
        &format!("[default]\nregion = us-east-1\nendpoint_url = http://{bound}\n"),
    )?;
    Ok(Some(started))
}
