//! OCI hooks: programs run at fixed points of the lifecycle, given the state on stdin.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use oci_spec::runtime::{Hook, Spec};

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Prestart => "prestart",
            Kind::CreateRuntime => "createRuntime",
            Kind::CreateContainer => "createContainer",
            Kind::StartContainer => "startContainer",
            Kind::Poststart => "poststart",
            Kind::Poststop => "poststop",
        }
    }
}

pub fn list(spec: &Spec, kind: Kind) -> Vec<Hook> {
    let Some(h) = spec.hooks() else {
        return Vec::new();
    };
    #[allow(deprecated)]
    let l = match kind {
        Kind::Prestart => h.prestart(),
        Kind::CreateRuntime => h.create_runtime(),
        Kind::CreateContainer => h.create_container(),
        Kind::StartContainer => h.start_container(),
        Kind::Poststart => h.poststart(),
        Kind::Poststop => h.poststop(),
    };
    l.clone().unwrap_or_default()
}

/// Run the hooks of `kind` in order; the first failure stops and is returned (prestart,
/// createRuntime, createContainer, startContainer: a failure there fails the operation).
pub fn run(spec: &Spec, kind: Kind, state: &impl serde::Serialize) -> Result<()> {
    let hooks = list(spec, kind);
    if hooks.is_empty() {
        return Ok(());
    }
    let input = serde_json::to_vec(state)?;
    for (i, hook) in hooks.iter().enumerate() {
        run_one(hook, &input)
            .with_context(|| format!("hooks.{}[{i}] ({})", kind.name(), hook.path().display()))?;
    }
    Ok(())
}

/// Run every hook of `kind`, logging a warning for each that fails: the runtime spec says a
/// failing poststart or poststop hook must not stop the lifecycle, nor the hooks after it.
pub fn run_all_warn(spec: &Spec, kind: Kind, state: &impl serde::Serialize) -> usize {
    let hooks = list(spec, kind);
    if hooks.is_empty() {
        return 0;
    }
    let input = match serde_json::to_vec(state) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!("hooks.{}: cannot encode the state: {e}", kind.name());
            return hooks.len();
        }
    };
    let mut failed = 0;
    for (i, hook) in hooks.iter().enumerate() {
        if let Err(e) = run_one(hook, &input) {
            tracing::warn!(
                "hooks.{}[{i}] ({}): {e:#}",
                kind.name(),
                hook.path().display()
            );
            failed += 1;
        }
    }
    failed
}

fn run_one(hook: &Hook, input: &[u8]) -> Result<()> {
    let args = hook.args().clone().unwrap_or_default();
    let mut cmd = Command::new(hook.path());
    if let Some(argv0) = args.first() {
        cmd.arg0(argv0);
    }
    cmd.args(args.iter().skip(1))
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    let mut child = cmd.spawn().context("start")?;
    // A hook that does not read its stdin must not block us: ignore EPIPE.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let timeout = hook.timeout().map(|t| Duration::from_secs(t.max(1) as u64));
    let start = Instant::now();
    let mut pause = Duration::from_micros(100);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if timeout.is_some_and(|t| start.elapsed() > t) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("timed out after {}s", timeout.unwrap_or_default().as_secs());
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    };
    if !status.success() {
        let mut out = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut out);
        }
        if out.trim().is_empty() {
            if let Some(mut o) = child.stdout.take() {
                let _ = o.read_to_string(&mut out);
            }
        }
        let out = out.trim().replace('\n', " ");
        bail!(
            "failed ({status}){}",
            if out.is_empty() {
                String::new()
            } else {
                format!(": {out}")
            }
        );
    }
    Ok(())
}
