//! `yun kubeconfig --user NAME [--group G]... [--expiration 24h] [-o FILE]`: mint a kubeconfig
//! whose client certificate, signed by the API server's CA, names NAME (CN) in the groups G
//! (O). It reads `DATA_DIR/pki/ca.key`, so only root on the server host can mint one; what
//! RBAC lets the user do is up to the roles bound to the name or groups.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The user name the certificate carries (its CN).
    #[arg(long)]
    user: String,
    /// A group the user is in (its O); repeat for more.
    #[arg(long = "group")]
    groups: Vec<String>,
    /// How long the certificate is valid (e.g. 24h, 30m, 90d).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    expiration: Duration,
    /// Write the kubeconfig here (mode 0600) instead of to standard output.
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
}

pub fn run(data_dir: &Path, args: Args) -> Result<i32> {
    if args.user.trim().is_empty() {
        bail!("--user: must not be empty");
    }
    if args.expiration.is_zero() {
        bail!("--expiration: must be longer than zero");
    }
    let text = yun_apiserver::user_kubeconfig(data_dir, &args.user, &args.groups, args.expiration)?;
    match args.output {
        None => print!("{text}"),
        Some(path) => write_private(&path, text.as_bytes())?,
    }
    Ok(0)
}

/// Written whole or not at all, readable by its owner only (it holds the private key).
fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    let name = path.file_name().context("-o: not a file name")?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    let result = (|| -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("-o {}", path.display()))
}
