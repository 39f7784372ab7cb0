//! `yunc`: the runtime with runc's command line, so any engine that drives runc drives it.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use nix::sys::signal::Signal;
use oci_spec::runtime::{Capability, LinuxResources, Process};
use yun_runtime::{cloned_exe, CreateOptions, ExecOptions, Runtime};

use crate::logging;

#[derive(Parser, Debug)]
#[command(
    name = "yunc",
    about = "yun's OCI container runtime (runc-compatible command line)",
    disable_version_flag = true
)]
pub struct Yunc {
    /// Directory holding containers' state.
    #[arg(long, global = true, default_value = "/run/yunc")]
    root: PathBuf,
    /// Write log lines to this file instead of stderr.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: logging::Format,
    #[arg(long, global = true)]
    debug: bool,
    /// Not supported: yunc manages cgroupfs directly.
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// Accepted for runc compatibility (true, false or auto). Also `spec --rootless`: runc
    /// has a flag of that name there, and one argument must serve both (two with one name
    /// made clap panic on `yunc spec`).
    #[arg(long, global = true, hide = true, num_args = 0..=1, default_missing_value = "true")]
    rootless: Option<String>,
    /// Accepted for runc compatibility; checkpointing is not implemented.
    #[arg(long, global = true, hide = true)]
    criu: Option<String>,
    /// Print the version.
    #[arg(short = 'v', long = "version")]
    version: bool,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(clap::Args, Debug, Default)]
struct CreateArgs {
    /// The bundle directory (holding config.json).
    #[arg(short = 'b', long, default_value = ".")]
    bundle: PathBuf,
    /// A Unix socket that receives the pty master when process.terminal is true.
    #[arg(long)]
    console_socket: Option<PathBuf>,
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Do not use pivot_root (for a root on ramfs).
    #[arg(long)]
    no_pivot: bool,
    /// Accepted for runc compatibility (yunc never creates a session keyring).
    #[arg(long)]
    no_new_keyring: bool,
    /// Pass this many extra fds (3, 4, ...) to the container.
    #[arg(long, default_value_t = 0)]
    preserve_fds: u32,
}

impl CreateArgs {
    fn options(&self) -> CreateOptions {
        CreateOptions {
            console_socket: self.console_socket.clone(),
            pid_file: self.pid_file.clone(),
            no_pivot: self.no_pivot,
            preserve_fds: self.preserve_fds,
            stdio: None,
            keep: false,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a container; its process waits for `start`.
    Create {
        id: String,
        #[command(flatten)]
        args: CreateArgs,
    },
    /// Run the user process of a created container.
    Start { id: String },
    /// Create and start a container; wait for it unless --detach.
    Run {
        id: String,
        #[command(flatten)]
        args: CreateArgs,
        #[arg(short = 'd', long)]
        detach: bool,
        /// Keep the container's state after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// Print a container's state as JSON.
    State { id: String },
    /// Send a signal (default SIGTERM) to a container.
    Kill {
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
        /// Signal every process of the container.
        #[arg(short = 'a', long)]
        all: bool,
    },
    /// Remove a container (with --force, kill it first).
    Delete {
        id: String,
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// Run another process in a container.
    Exec(ExecArgs),
    /// List a container's processes.
    Ps {
        id: String,
        #[arg(short = 'f', long, default_value = "table")]
        format: String,
        /// Options for ps(1) in table format (default -ef).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// List containers.
    List {
        #[arg(short = 'f', long, default_value = "table")]
        format: String,
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Freeze every process of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Print resource statistics and OOM events.
    Events {
        id: String,
        /// Print one stats event and exit.
        #[arg(long)]
        stats: bool,
        #[arg(long, default_value = "5s")]
        interval: String,
    },
    /// Print what this runtime implements (runtime-spec features JSON).
    Features,
    /// Write a default config.json into a bundle directory.
    Spec {
        #[arg(short = 'b', long, default_value = ".")]
        bundle: PathBuf,
    },
    /// Change a live container's resource limits.
    Update {
        id: String,
        /// A JSON file of linux.resources ("-" for stdin).
        #[arg(short = 'r', long)]
        resources: Option<PathBuf>,
        #[arg(long)]
        pids_limit: Option<i64>,
        #[arg(short = 'm', long)]
        memory: Option<i64>,
    },
}

#[derive(clap::Args, Debug)]
struct ExecArgs {
    id: String,
    /// A JSON file with the process to run (the runtime spec's process object).
    #[arg(short = 'p', long)]
    process: Option<PathBuf>,
    #[arg(short = 't', long)]
    tty: bool,
    #[arg(long)]
    console_socket: Option<PathBuf>,
    #[arg(long)]
    cwd: Option<PathBuf>,
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// UID[:GID]
    #[arg(short = 'u', long)]
    user: Option<String>,
    #[arg(short = 'g', long = "additional-gids")]
    additional_gids: Vec<u32>,
    /// Add a capability (e.g. CAP_NET_ADMIN).
    #[arg(short = 'c', long = "cap")]
    caps: Vec<String>,
    #[arg(long)]
    no_new_privs: bool,
    #[arg(short = 'd', long)]
    detach: bool,
    #[arg(long)]
    pid_file: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    preserve_fds: u32,
    /// Accepted for runc compatibility; SELinux is not supported.
    #[arg(long)]
    process_label: Option<String>,
    /// Accepted for runc compatibility; AppArmor is not supported.
    #[arg(long)]
    apparmor: Option<String>,
    /// Accepted for runc compatibility.
    #[arg(long, hide = true)]
    ignore_paused: bool,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Entry point: parse `args` (args[0] is the program name), run, return the exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let cli = match Yunc::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 1 } else { 0 };
        }
    };
    if cli.version {
        println!("yunc version {}\nspec: 1.2.0", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    if cli.cmd.is_none() {
        eprintln!("yunc: no command given; see yunc --help");
        return 1;
    }
    let to_file = match logging::init(cli.log.as_deref(), cli.log_format, cli.debug) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("yunc: {e:#}");
            return 1;
        }
    };
    match dispatch(cli) {
        Ok(code) => code,
        // A reader that went away (`yunc events | head`) is not our failure.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            0
        }
        Err(e) => {
            let msg = format!("{e:#}");
            if to_file {
                tracing::error!("{msg}");
            }
            eprintln!("yunc: {msg}");
            1
        }
    }
}

fn dispatch(cli: Yunc) -> Result<i32> {
    if cli.systemd_cgroup {
        bail!("--systemd-cgroup is not supported: yunc manages cgroups through cgroupfs (configure the engine with cgroup_manager = \"cgroupfs\")");
    }
    let rt = Runtime::new(&cli.root);
    let rootless = cli.rootless.as_deref().is_some_and(|v| v != "false");
    let out = &mut std::io::stdout().lock();
    let Some(cmd) = cli.cmd else {
        return Ok(1);
    };
    match cmd {
        Cmd::Create { id, args } => {
            if cloned_exe::needed_for_bundle(&args.bundle) {
                cloned_exe::ensure()?;
            }
            rt.create(&id, &args.bundle, &args.options())?;
        }
        Cmd::Start { id } => rt.start(&id)?,
        Cmd::Run {
            id,
            args,
            detach,
            keep,
        } => {
            if cloned_exe::needed_for_bundle(&args.bundle) {
                cloned_exe::ensure()?;
            }
            let opts = CreateOptions {
                keep,
                ..args.options()
            };
            return rt.run(&id, &args.bundle, &opts, detach);
        }
        Cmd::State { id } => {
            serde_json::to_writer_pretty(&mut *out, &rt.state(&id)?)?;
            writeln!(out)?;
        }
        Cmd::Kill { id, signal, all } => rt.kill(&id, parse_signal(&signal)?, all)?,
        Cmd::Delete { id, force } => rt.delete(&id, force)?,
        Cmd::Exec(args) => {
            cloned_exe::ensure()?;
            let process = exec_process(&rt, &args)?;
            let opts = ExecOptions {
                console_socket: args.console_socket.clone(),
                pid_file: args.pid_file.clone(),
                detach: args.detach,
                preserve_fds: args.preserve_fds,
            };
            return rt.exec(&args.id, &process, &opts);
        }
        Cmd::Ps {
            id,
            format,
            ps_args,
        } => ps(&rt, &id, &format, &ps_args, out)?,
        Cmd::List { format, quiet } => list(&rt, &format, quiet, out)?,
        Cmd::Pause { id } => rt.pause(&id)?,
        Cmd::Resume { id } => rt.resume(&id)?,
        Cmd::Events {
            id,
            stats,
            interval,
        } => {
            if stats {
                serde_json::to_writer(&mut *out, &rt.stats(&id)?)?;
                writeln!(out)?;
            } else {
                let interval = humantime::parse_duration(&interval)
                    .map_err(|e| anyhow!("--interval {interval:?}: {e}"))?;
                rt.events(&id, interval.max(Duration::from_millis(100)), |ev| {
                    serde_json::to_writer(&mut *out, ev)?;
                    writeln!(out)?;
                    out.flush()?;
                    Ok(())
                })?;
            }
        }
        Cmd::Features => {
            serde_json::to_writer_pretty(&mut *out, &yun_runtime::features::features())?;
            writeln!(out)?;
        }
        Cmd::Spec { bundle } => {
            let path = bundle.join("config.json");
            if path.exists() {
                bail!("{}: already exists; remove it first", path.display());
            }
            let spec = yun_runtime::bundle::default_spec(&["sh".to_string()], rootless)?;
            yun_runtime::bundle::write_config(&bundle, &spec)?;
        }
        Cmd::Update {
            id,
            resources,
            pids_limit,
            memory,
        } => {
            let mut res: LinuxResources = match resources {
                Some(p) => read_json(&p, "--resources")?,
                None => LinuxResources::default(),
            };
            if let Some(n) = pids_limit {
                res.set_pids(Some(
                    oci_spec::runtime::LinuxPidsBuilder::default()
                        .limit(n)
                        .build()?,
                ));
            }
            if let Some(m) = memory {
                res.set_memory(Some(
                    oci_spec::runtime::LinuxMemoryBuilder::default()
                        .limit(m)
                        .build()?,
                ));
            }
            rt.update(&id, &res)?;
        }
    }
    Ok(0)
}

/// "KILL", "SIGKILL", "kill" or "9".
pub fn parse_signal(s: &str) -> Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| anyhow!("unknown signal {s:?}"));
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| anyhow!("unknown signal {s:?}"))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let data = if path == Path::new("-") {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut s)?;
        s
    } else {
        let file =
            std::fs::File::open(path).with_context(|| format!("{what} {}", path.display()))?;
        yun_runtime::config::check_size(path, &file).with_context(|| what.to_string())?;
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut &file, &mut data)
            .with_context(|| format!("{what} {}", path.display()))?;
        data
    };
    let de = &mut serde_json::Deserializer::from_slice(&data);
    serde_path_to_error::deserialize(de)
        .map_err(|e| anyhow!("{what} {}: {}: {}", path.display(), e.path(), e.inner()))
}

/// The process for `exec`: from --process, or the container's own process with the
/// command-line changes (like runc).
fn exec_process(rt: &Runtime, a: &ExecArgs) -> Result<Process> {
    if let Some(p) = &a.process {
        return read_json(p, "--process");
    }
    if a.command.is_empty() {
        bail!("exec: give a command to run, or --process FILE");
    }
    let st = yun_runtime::state::ContainerState::load(rt.root(), &a.id)?;
    let mut p = st.config.process().clone().unwrap_or_default();
    p.set_args(Some(a.command.clone()));
    p.set_terminal(Some(a.tty));
    if let Some(cwd) = &a.cwd {
        p.set_cwd(cwd.clone());
    }
    let mut env = p.env().clone().unwrap_or_default();
    for kv in &a.env {
        let key = kv.split('=').next().unwrap_or_default();
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    p.set_env(Some(env));
    if let Some(u) = &a.user {
        let (uid, gid) = match u.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (u.as_str(), None),
        };
        let mut user = p.user().clone();
        user.set_uid(
            uid.parse()
                .map_err(|_| anyhow!("--user {u:?}: expected UID[:GID]"))?,
        );
        user.set_gid(match gid {
            Some(g) => g
                .parse()
                .map_err(|_| anyhow!("--user {u:?}: expected UID[:GID]"))?,
            None => 0,
        });
        p.set_user(user);
    }
    if !a.additional_gids.is_empty() {
        let mut user = p.user().clone();
        user.set_additional_gids(Some(a.additional_gids.clone()));
        p.set_user(user);
    }
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if !a.caps.is_empty() {
        let added = a
            .caps
            .iter()
            .map(|c| {
                Capability::from_str(c.trim_start_matches("CAP_"))
                    .map_err(|_| anyhow!("--cap {c:?}: unknown capability"))
            })
            .collect::<Result<Vec<_>>>()?;
        // Added to all five sets, so the process really holds it.
        let with = |set: &Option<oci_spec::runtime::Capabilities>| {
            let mut s = set.clone().unwrap_or_default();
            s.extend(added.iter().copied());
            Some(s)
        };
        let mut caps = p.capabilities().clone().unwrap_or_default();
        caps.set_bounding(with(caps.bounding()));
        caps.set_effective(with(caps.effective()));
        caps.set_permitted(with(caps.permitted()));
        caps.set_ambient(with(caps.ambient()));
        caps.set_inheritable(with(caps.inheritable()));
        p.set_capabilities(Some(caps));
    }
    Ok(p)
}

fn list(rt: &Runtime, format: &str, quiet: bool, out: &mut impl Write) -> Result<()> {
    let all = rt.list()?;
    if quiet {
        for c in &all {
            writeln!(out, "{}", c.id)?;
        }
        return Ok(());
    }
    match format {
        "json" => {
            serde_json::to_writer(&mut *out, &all)?;
            writeln!(out)?;
        }
        "table" => {
            writeln!(
                out,
                "{:<20} {:<8} {:<10} {:<40} {:<32} OWNER",
                "ID", "PID", "STATUS", "BUNDLE", "CREATED"
            )?;
            for c in &all {
                writeln!(
                    out,
                    "{:<20} {:<8} {:<10} {:<40} {:<32} {}",
                    c.id,
                    c.pid,
                    c.status,
                    c.bundle.display(),
                    c.created,
                    c.owner
                )?;
            }
        }
        other => bail!("--format {other:?}: use table or json"),
    }
    Ok(())
}

fn ps(
    rt: &Runtime,
    id: &str,
    format: &str,
    ps_args: &[String],
    out: &mut impl Write,
) -> Result<()> {
    let pids = rt.ps(id)?;
    match format {
        "json" => {
            serde_json::to_writer(&mut *out, &pids)?;
            writeln!(out)?;
        }
        "table" => {
            let args = if ps_args.is_empty() {
                vec!["-ef".to_string()]
            } else {
                ps_args.to_vec()
            };
            let output = std::process::Command::new("ps")
                .args(&args)
                .output()
                .context("run ps")?;
            if !output.status.success() {
                bail!(
                    "ps {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
            let text = String::from_utf8_lossy(&output.stdout);
            let mut lines = text.lines();
            let header = lines.next().unwrap_or_default();
            let col = header
                .split_whitespace()
                .position(|h| h == "PID")
                .ok_or_else(|| anyhow!("ps output has no PID column"))?;
            writeln!(out, "{header}")?;
            for line in lines {
                let pid: Option<i32> = line
                    .split_whitespace()
                    .nth(col)
                    .and_then(|p| p.parse().ok());
                if pid.is_some_and(|p| pids.contains(&p)) {
                    writeln!(out, "{line}")?;
                }
            }
        }
        other => bail!("--format {other:?}: use table or json"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        for s in ["KILL", "SIGKILL", "kill", "9"] {
            assert_eq!(parse_signal(s).unwrap(), Signal::SIGKILL);
        }
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("99").is_err());
    }

    #[test]
    fn spec_parses_with_and_without_rootless() {
        for (args, want) in [
            (&["yunc", "spec", "-b", "/tmp/yun-x"][..], None),
            (
                &["yunc", "spec", "--rootless", "-b", "/tmp/yun-x"][..],
                Some("true"),
            ),
            (&["yunc", "--rootless", "false", "spec"][..], Some("false")),
        ] {
            let cli = Yunc::try_parse_from(args).unwrap();
            assert!(matches!(cli.cmd, Some(Cmd::Spec { .. })), "{args:?}");
            assert_eq!(cli.rootless.as_deref(), want, "{args:?}");
        }
    }

    #[test]
    fn runc_style_command_lines_parse() {
        let c = Yunc::try_parse_from([
            "yunc",
            "--root",
            "/run/x",
            "--log",
            "/tmp/l",
            "--log-format",
            "json",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/p",
            "--console-socket",
            "/s",
            "--no-new-keyring",
            "id1",
        ])
        .unwrap();
        assert!(matches!(c.cmd, Some(Cmd::Create { .. })));
        let c = Yunc::try_parse_from([
            "yunc",
            "exec",
            "--pid-file",
            "/p",
            "--process",
            "/f",
            "--detach",
            "id1",
        ])
        .unwrap();
        assert!(matches!(c.cmd, Some(Cmd::Exec(_))));
        let c = Yunc::try_parse_from(["yunc", "exec", "id1", "sh", "-c", "echo hi"]).unwrap();
        match c.cmd {
            Some(Cmd::Exec(a)) => assert_eq!(a.command, ["sh", "-c", "echo hi"]),
            _ => panic!(),
        }
        let c = Yunc::try_parse_from(["yunc", "kill", "--all", "id1", "9"]).unwrap();
        assert!(matches!(c.cmd, Some(Cmd::Kill { all: true, .. })));
    }
}
