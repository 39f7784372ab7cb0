//! `yun …`: the cloud's own command line.

mod cluster;
mod containers;
mod kube;
mod kubeconfig;
mod s3up;
mod server;
mod vm;

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "yun", version, about = "yun: a cloud in one binary")]
struct Yun {
    /// Where yun keeps images, containers and volumes.
    #[arg(
        long,
        global = true,
        env = "YUN_DATA_DIR",
        default_value = "/var/lib/yun"
    )]
    data_dir: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// The OCI runtime (same command line as `yunc`, like runc's).
    #[command(disable_help_flag = true)]
    Runtime {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Write an OCI bundle running CMD on the built-in busybox image (offline).
    Bundle {
        /// The bundle directory to create.
        dir: PathBuf,
        /// Build the image here once and share it between bundles (root.path points to it).
        #[arg(long)]
        rootfs: Option<PathBuf>,
        /// Command and arguments (default: sh).
        #[arg(last = true)]
        cmd: Vec<String>,
    },
    #[command(flatten)]
    Containers(containers::Cmd),
    #[command(flatten)]
    Cluster(cluster::Cmd),
    /// Virtual machines (QEMU; KVM where the host really has it, TCG otherwise).
    Vm {
        #[command(subcommand)]
        cmd: vm::VmCmd,
    },
    #[command(flatten)]
    Kube(kube::Cmd),
    /// The Kubernetes-compatible API server (writes DATA_DIR/kubeconfig for kubectl).
    Server(server::ServerArgs),
    /// Mint a kubeconfig with a client certificate for a user (and groups), signed by the
    /// API server's CA in DATA_DIR/pki.
    Kubeconfig(kubeconfig::Args),
    /// An OCI distribution registry server.
    Registry {
        #[command(subcommand)]
        cmd: RegistryCmd,
    },
    /// S3-compatible object storage.
    S3 {
        #[command(subcommand)]
        cmd: S3Cmd,
    },
}

#[derive(Subcommand, Debug)]
enum S3Cmd {
    /// Serve S3 until interrupted.
    Serve {
        #[arg(long, default_value = "127.0.0.1:9000")]
        addr: std::net::SocketAddr,
        /// Storage directory.
        #[arg(long)]
        root: PathBuf,
        /// Access key id clients sign with.
        #[arg(long, env = "YUN_S3_ACCESS_KEY")]
        access_key: String,
        /// Secret access key clients sign with.
        #[arg(long, env = "YUN_S3_SECRET_KEY", hide_env_values = true)]
        secret_key: String,
        /// Region answered by GetBucketLocation.
        #[arg(long, default_value = "us-east-1")]
        region: String,
        /// Largest object accepted, in bytes (S3's limit, 5 TiB, by default).
        #[arg(long, default_value_t = yun_s3::DEFAULT_MAX_OBJECT_SIZE,
              value_parser = clap::value_parser!(u64).range(1..))]
        max_object_size: u64,
        /// Requests in flight per client IP; more get 503 SlowDown.
        #[arg(long, default_value_t = yun_s3::DEFAULT_MAX_REQUESTS_PER_CLIENT as u64,
              value_parser = clap::value_parser!(u64).range(1..))]
        max_requests_per_client: u64,
        /// Domain for virtual-host style addressing (BUCKET.DOMAIN).
        #[arg(long)]
        domain: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum RegistryCmd {
    /// Serve the registry until interrupted.
    Serve {
        #[arg(long, default_value = "127.0.0.1:5000")]
        addr: std::net::SocketAddr,
        /// Storage directory.
        #[arg(long)]
        root: PathBuf,
        /// htpasswd file (bcrypt entries) to require HTTP basic auth.
        #[arg(long)]
        htpasswd: Option<PathBuf>,
        /// PEM certificate and key to serve HTTPS.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Allow DELETE of manifests, tags and blobs (off: 405 UNSUPPORTED, as distribution).
        #[arg(long)]
        enable_delete: bool,
        /// Remove upload sessions idle this long (e.g. 10m, 90s).
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        upload_idle_timeout: std::time::Duration,
        /// Open upload sessions allowed per client (remote IP, and user with --htpasswd).
        #[arg(long, default_value_t = yun_registry::DEFAULT_MAX_UPLOADS_PER_CLIENT as u64,
              value_parser = clap::value_parser!(u64).range(1..))]
        max_uploads_per_client: u64,
    },
}

pub fn main(args: Vec<OsString>) -> i32 {
    let cli = match Yun::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let _ = crate::logging::init(None, crate::logging::Format::Text, false);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("yun: {e:#}");
            1
        }
    }
}

fn run(cli: Yun) -> Result<i32> {
    match cli.cmd {
        Cmd::Runtime { args } => {
            let mut argv = vec![OsString::from("yunc")];
            argv.extend(args);
            Ok(crate::yunc::main(argv))
        }
        Cmd::Bundle { dir, rootfs, cmd } => {
            let cmd = if cmd.is_empty() {
                vec!["sh".to_string()]
            } else {
                cmd
            };
            yun_runtime::bundle::create_busybox_bundle(&dir, &cmd, rootfs.as_deref())?;
            println!("{}", dir.display());
            Ok(0)
        }
        Cmd::Containers(cmd) => containers::run(&cli.data_dir, cmd),
        Cmd::Cluster(cmd) => cluster::run(&cli.data_dir, cmd),
        Cmd::Vm { cmd } => vm::run(&cli.data_dir, cmd),
        Cmd::Kube(cmd) => kube::run(&cli.data_dir, cmd),
        Cmd::Server(args) => server::run(&cli.data_dir, args),
        Cmd::Kubeconfig(args) => kubeconfig::run(&cli.data_dir, args),
        Cmd::Registry {
            cmd:
                RegistryCmd::Serve {
                    addr,
                    root,
                    htpasswd,
                    tls_cert,
                    tls_key,
                    enable_delete,
                    upload_idle_timeout,
                    max_uploads_per_client,
                },
        } => {
            let scheme = if tls_cert.is_some() { "https" } else { "http" };
            eprintln!(
                "yun registry: serving {scheme}://{addr} from {}",
                root.display()
            );
            let config = yun_registry::Config {
                htpasswd,
                tls_cert,
                tls_key,
                enable_delete,
                upload_idle_timeout,
                max_uploads_per_client: max_uploads_per_client as usize,
                ..yun_registry::Config::new(addr, root)
            };
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(yun_registry::serve(config))?;
            Ok(0)
        }
        Cmd::S3 {
            cmd:
                S3Cmd::Serve {
                    addr,
                    root,
                    access_key,
                    secret_key,
                    region,
                    max_object_size,
                    max_requests_per_client,
                    domain,
                },
        } => {
            eprintln!("yun s3: serving http://{addr} from {}", root.display());
            let config = yun_s3::Config {
                credentials: vec![(access_key, secret_key)],
                region,
                max_object_size,
                max_requests_per_client: max_requests_per_client as usize,
                domain,
                ..yun_s3::Config::new(addr, root)
            };
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(yun_s3::serve(config))?;
            Ok(0)
        }
    }
}
