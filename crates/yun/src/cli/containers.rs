//! The Docker/podman-style verbs: run, ps, logs, exec, stop, rm, images, rmi, tag, load, save.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use yun_engine::{Engine, RunOptions};
use yun_image::ArchiveFormat;

#[derive(clap::Args, Debug, Default)]
pub struct ProcessFlags {
    /// Set an environment variable (KEY=VALUE, or KEY to pass ours).
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// USER[:GROUP] (names or ids, 0 to 2147483647).
    // Hyphen values reach the engine, which names --user when it refuses "-1".
    #[arg(short = 'u', long, allow_hyphen_values = true)]
    user: Option<String>,
    /// Allocate a pseudo terminal.
    #[arg(short = 't', long)]
    tty: bool,
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    interactive: bool,
}

#[derive(clap::Args, Debug)]
pub struct RegistryFlags {
    /// Verify the registry's TLS certificate (default: yes, except for loopback registries).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    tls_verify: Option<bool>,
    /// USER:PASSWORD for the registry.
    #[arg(long)]
    creds: Option<String>,
}

impl RegistryFlags {
    fn options(&self) -> yun_engine::distribution::client::Options {
        yun_engine::distribution::client::Options {
            tls_verify: self.tls_verify,
            creds: self.creds.clone(),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run a command in a new container from an image.
    Run {
        #[command(flatten)]
        process: ProcessFlags,
        /// Run in the background and print the container id.
        #[arg(short = 'd', long)]
        detach: bool,
        /// Remove the container when it exits.
        #[arg(long)]
        rm: bool,
        #[arg(long)]
        name: Option<String>,
        /// Bind mount: HOST:CONTAINER[:ro] (or NAME:CONTAINER for a named volume).
        #[arg(short = 'v', long = "volume")]
        volumes: Vec<String>,
        /// Memory limit (e.g. 64m, 1g).
        #[arg(short = 'm', long)]
        memory: Option<String>,
        /// CPU limit (e.g. 0.5).
        #[arg(long)]
        cpus: Option<f64>,
        /// Override the image's entrypoint ("" to clear it).
        #[arg(long)]
        entrypoint: Option<String>,
        /// Security options; `seccomp=unconfined` drops the default seccomp profile.
        #[arg(long = "security-opt")]
        security_opt: Vec<String>,
        /// Log options as docker and podman take them: `max-size=10m`, `max-file=5` (a detached
        /// container's log is rotated at max-size, max-file files kept; default 10Mi and 5).
        #[arg(long = "log-opt")]
        log_opt: Vec<String>,
        image: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// List containers.
    Ps {
        /// Also exited ones.
        #[arg(short = 'a', long)]
        all: bool,
        /// Only ids.
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Print a container's output.
    Logs {
        #[arg(short = 'f', long)]
        follow: bool,
        /// Prefix each line with the time it was written (RFC 3339).
        #[arg(short = 't', long)]
        timestamps: bool,
        /// Only lines written in the last DURATION (e.g. 10s, 5m) or since an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
        container: String,
    },
    /// Run a command in a running container.
    Exec {
        #[command(flatten)]
        process: ProcessFlags,
        container: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Stop containers (SIGTERM, then SIGKILL after --time seconds).
    Stop {
        #[arg(short = 't', long = "time", default_value_t = 10)]
        time: u64,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers.
    Rm {
        #[arg(short = 'f', long)]
        force: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Build an image from a Containerfile (Dockerfile).
    Build {
        /// The Containerfile (default: DIR/Containerfile, else DIR/Dockerfile).
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
        /// Name the image (repeatable).
        #[arg(short = 't', long = "tag")]
        tags: Vec<String>,
        /// ARG values: KEY=VALUE.
        #[arg(long = "build-arg")]
        build_args: Vec<String>,
        #[arg(long)]
        no_cache: bool,
        /// The build context directory.
        context: PathBuf,
    },
    /// Pull an image from a registry (HOST[:PORT]/REPO[:TAG|@DIGEST]).
    Pull {
        #[command(flatten)]
        registry: RegistryFlags,
        image: String,
    },
    /// Push an image to a registry.
    Push {
        #[command(flatten)]
        registry: RegistryFlags,
        image: String,
        /// HOST[:PORT]/REPO[:TAG] (default: the image's own name).
        dest: Option<String>,
    },
    /// Remove dangling images and unreferenced blobs and layers.
    Prune,
    /// List images.
    Images {
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Remove images (refused while a container uses them).
    Rmi {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Give an image another name.
    Tag { image: String, name: String },
    /// Import images from an archive or OCI layout (podman save / docker save / OCI).
    Load {
        #[arg(short = 'i', long)]
        input: PathBuf,
    },
    /// Export an image.
    Save {
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// docker-archive (default), oci-archive or oci-dir.
        #[arg(long, default_value = "docker-archive")]
        format: String,
        image: String,
    },
    /// The monitor of a detached container, started by the node agent (internal).
    #[command(hide = true)]
    ContainerMonitor { id: String },
}

pub fn run(data_dir: &Path, cmd: Cmd) -> Result<i32> {
    let engine = Engine::open(data_dir)?;
    let out = &mut std::io::stdout().lock();
    match cmd {
        Cmd::ContainerMonitor { id } => return Ok(engine.monitor_main(&id)),
        Cmd::Run {
            process,
            detach,
            rm,
            name,
            volumes,
            memory,
            cpus,
            entrypoint,
            security_opt,
            log_opt,
            image,
            command,
        } => {
            let log_rotation = log_rotation(&log_opt)?;
            let mut seccomp_unconfined = false;
            for o in &security_opt {
                match o.as_str() {
                    "seccomp=unconfined" | "seccomp:unconfined" => seccomp_unconfined = true,
                    other => {
                        bail!("--security-opt {other:?}: only seccomp=unconfined is supported")
                    }
                }
            }
            let opts = RunOptions {
                name,
                detach,
                auto_remove: rm,
                tty: process.tty,
                interactive: process.interactive,
                env: process.env,
                volumes,
                workdir: process.workdir,
                user: process.user,
                memory: memory
                    .as_deref()
                    .map(yun_engine::spec::parse_memory)
                    .transpose()?,
                cpus,
                command,
                entrypoint,
                seccomp_unconfined,
                log_rotation: Some(log_rotation),
                ..Default::default()
            };
            let (c, code) = engine.run(&image, &opts)?;
            if detach {
                writeln!(out, "{}", c.id)?;
            }
            return Ok(code);
        }
        Cmd::Ps { all, quiet } => {
            let list = engine.ps(all);
            if quiet {
                for s in list {
                    writeln!(out, "{}", &s.container.id[..12])?;
                }
                return Ok(0);
            }
            writeln!(
                out,
                "{:<12}  {:<20}  {:<24}  {:<20}  {:<16}  NAMES",
                "CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS"
            )?;
            for s in list {
                let c = &s.container;
                let status = match (s.state.as_str(), s.exit_code) {
                    ("exited", Some(code)) => format!("Exited ({code})"),
                    ("exited", None) => "Exited".to_string(),
                    ("running", _) => "Up".to_string(),
                    (other, _) => capitalize(other),
                };
                let mut cmd = c.command.join(" ");
                if cmd.len() > 24 {
                    cmd.truncate(21);
                    cmd.push_str("...");
                }
                writeln!(
                    out,
                    "{:<12}  {:<20}  {:<24}  {:<20}  {:<16}  {}",
                    &c.id[..12],
                    c.image,
                    cmd,
                    c.created,
                    status,
                    c.name
                )?;
            }
        }
        Cmd::Logs {
            follow,
            timestamps,
            since,
            tail,
            container,
        } => {
            let opts = yun_engine::ctrlog::LogOptions {
                since: since.as_deref().map(parse_since).transpose()?,
                timestamps,
                tail,
                limit_bytes: None,
            };
            engine.logs(&container, &opts, follow, out)?
        }
        Cmd::Exec {
            process,
            container,
            command,
        } => {
            yun_runtime::cloned_exe::ensure()?;
            let opts = RunOptions {
                tty: process.tty,
                interactive: process.interactive,
                env: process.env,
                workdir: process.workdir,
                user: process.user,
                ..Default::default()
            };
            return engine.exec(&container, &command, &opts);
        }
        Cmd::Stop { time, containers } => {
            for c in containers {
                engine.stop(&c, Duration::from_secs(time))?;
                writeln!(out, "{c}")?;
            }
        }
        Cmd::Rm { force, containers } => {
            for c in containers {
                engine.rm(&c, force)?;
                writeln!(out, "{c}")?;
            }
        }
        Cmd::Build {
            file,
            tags,
            build_args,
            no_cache,
            context,
        } => {
            let containerfile = file.unwrap_or_else(|| {
                let c = context.join("Containerfile");
                if c.exists() {
                    c
                } else {
                    context.join("Dockerfile")
                }
            });
            let mut args = std::collections::HashMap::new();
            for kv in build_args {
                let Some((k, v)) = kv.split_once('=') else {
                    bail!("--build-arg {kv:?}: expected KEY=VALUE");
                };
                args.insert(k.to_string(), v.to_string());
            }
            let opts = yun_engine::build::BuildOptions {
                containerfile,
                context,
                tags,
                build_args: args,
                no_cache,
            };
            let image = engine.build(&opts, out)?;
            writeln!(out, "{}", image.id)?;
        }
        Cmd::Pull { registry, image } => {
            let img = engine.pull(&image, &registry.options())?;
            writeln!(out, "{}", img.id)?;
        }
        Cmd::Push {
            registry,
            image,
            dest,
        } => {
            let dest = dest.unwrap_or_else(|| image.clone());
            let digest = engine.push(&image, &dest, &registry.options())?;
            writeln!(out, "{digest}")?;
        }
        Cmd::Prune => {
            let (removed, report) = engine.prune()?;
            for r in removed {
                writeln!(out, "{r}")?;
            }
            writeln!(
                out,
                "Removed {} blobs, {} unpacked layers; reclaimed {}",
                report.blobs.len(),
                report.layers.len(),
                human_size(report.bytes)
            )?;
        }
        Cmd::Images { quiet } => {
            let images = engine.images.images()?;
            if !quiet {
                writeln!(
                    out,
                    "{:<40}  {:<12}  {:<12}  {:<22}  SIZE",
                    "REPOSITORY", "TAG", "IMAGE ID", "CREATED"
                )?;
            }
            for img in images {
                let short = img.id.short();
                if quiet {
                    writeln!(out, "{short}")?;
                    continue;
                }
                let names = if img.names.is_empty() {
                    vec!["<none>:<none>".to_string()]
                } else {
                    img.names.clone()
                };
                for n in names {
                    let (repo, tag) = split_name(&n);
                    writeln!(
                        out,
                        "{:<40}  {:<12}  {:<12}  {:<22}  {}",
                        repo,
                        tag,
                        short,
                        img.created.clone().unwrap_or_default(),
                        human_size(img.size)
                    )?;
                }
            }
        }
        Cmd::Rmi { images } => {
            for i in images {
                for removed in engine.rmi(&i)? {
                    writeln!(out, "{removed}")?;
                }
            }
        }
        Cmd::Tag { image, name } => engine.images.tag(&image, &name)?,
        Cmd::Load { input } => {
            for img in engine.load(&input)? {
                let names = if img.names.is_empty() {
                    img.id.to_string()
                } else {
                    img.names.join(", ")
                };
                writeln!(out, "Loaded image: {names}")?;
            }
        }
        Cmd::Save {
            output,
            format,
            image,
        } => {
            let format = match format.as_str() {
                "docker-archive" => ArchiveFormat::DockerArchive,
                "oci-archive" => ArchiveFormat::OciArchive,
                "oci-dir" => ArchiveFormat::OciDir,
                other => bail!("--format {other:?}: use docker-archive, oci-archive or oci-dir"),
            };
            engine.save(&image, &output, format)?;
        }
    }
    Ok(0)
}

/// "repo:tag" (the tag after the last ':' that follows the last '/').
fn split_name(n: &str) -> (&str, &str) {
    let slash = n.rfind('/').map(|i| i + 1).unwrap_or(0);
    match n[slash..].rfind(':') {
        Some(i) => (&n[..slash + i], &n[slash + i + 1..]),
        None => (n, "latest"),
    }
}

fn human_size(b: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    format!("{v:.3} {}", UNITS[u]).replace(".000 ", " ")
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// `--since`: a duration back from now (`10s`, `5m`) or an RFC 3339 time, as podman takes it.
fn parse_since(s: &str) -> Result<std::time::SystemTime> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(std::time::SystemTime::now() - d);
    }
    humantime::parse_rfc3339_weak(s).map_err(|_| {
        anyhow::anyhow!("--since {s:?}: neither a duration (10s, 5m) nor an RFC 3339 time")
    })
}

/// `--log-opt max-size=S --log-opt max-file=N` (docker's and podman's names).
fn log_rotation(opts: &[String]) -> Result<yun_engine::logfile::Rotation> {
    let mut r = yun_engine::logfile::Rotation::default();
    for o in opts {
        match o.split_once('=') {
            Some(("max-size", v)) => {
                r.max_bytes =
                    yun_engine::logfile::parse_size(v).with_context(|| format!("--log-opt {o}"))?
            }
            Some(("max-file", v)) => {
                r.max_files = v
                    .parse()
                    .with_context(|| format!("--log-opt {o}: not a number of files"))?
            }
            _ => bail!("--log-opt {o:?}: only max-size=SIZE and max-file=N are supported"),
        }
    }
    yun_engine::logfile::Rotation::new(r.max_bytes, r.max_files)
        .with_context(|| format!("--log-opt {}", opts.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(split_name("busybox:latest"), ("busybox", "latest"));
        assert_eq!(
            split_name("127.0.0.1:5000/a/b:v1"),
            ("127.0.0.1:5000/a/b", "v1")
        );
        assert_eq!(
            split_name("127.0.0.1:5000/a"),
            ("127.0.0.1:5000/a", "latest")
        );
    }
}
