//! Operations on existing containers: state, list, kill, delete, pause, resume, ps, events.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;
use serde::Serialize;

use super::Runtime;
use crate::cgroups::{self, Stats};
use crate::hooks::{self, Kind};
use crate::state::{self, ContainerState, StateReport, Status};
use crate::Error;

/// One line of `events` output, in runc's format.
#[derive(Debug, Serialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Stats>,
}

impl Runtime {
    pub fn state(&self, id: &str) -> Result<StateReport> {
        Ok(ContainerState::load(&self.root, id)?.report(&self.root))
    }

    /// Every container under the root, sorted by id. Unreadable entries are skipped.
    pub fn list(&self) -> Result<Vec<StateReport>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("read {}", self.root.display())),
        };
        let mut out: Vec<StateReport> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|id| ContainerState::load(&self.root, &id).ok())
            .map(|st| st.report(&self.root))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    fn load_live(&self, id: &str, action: &'static str) -> Result<(ContainerState, Status)> {
        let st = ContainerState::load(&self.root, id)?;
        let status = st.status(&self.root);
        if status == Status::Stopped {
            return Err(Error::WrongState {
                id: id.into(),
                status: status.to_string(),
                action,
                wanted: "created, running or paused",
            }
            .into());
        }
        Ok((st, status))
    }

    /// Send `sig` to the container's process, or with `all` to every process in its cgroup.
    pub fn kill(&self, id: &str, sig: Signal, all: bool) -> Result<()> {
        let (st, status) = self.load_live(id, "kill")?;
        let cg = cgroups::Manager::from_state(&st.cgroup);
        if all {
            for p in cg.pids()? {
                let _ = kill(Pid::from_raw(p), sig);
            }
        } else {
            kill(Pid::from_raw(st.pid), sig).with_context(|| format!("kill {}", st.pid))?;
        }
        // A frozen process only acts on SIGKILL once thawed.
        if status == Status::Paused && sig == Signal::SIGKILL {
            cg.thaw()?;
        }
        Ok(())
    }

    /// Remove a stopped container (with `force`, kill it first): its processes, cgroup and
    /// state directory; then run its poststop hooks.
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let dir = state::dir(&self.root, id);
        let st = match ContainerState::load(&self.root, id) {
            Ok(st) => st,
            // A create that died half-way leaves a directory without state: force cleans it.
            Err(e) if force && dir.is_dir() && e.downcast_ref::<Error>().is_some() => {
                std::fs::remove_dir_all(&dir).ok();
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let status = st.status(&self.root);
        let cg = cgroups::Manager::from_state(&st.cgroup);
        if status != Status::Stopped {
            if !force {
                return Err(Error::WrongState {
                    id: id.into(),
                    status: status.to_string(),
                    action: "delete",
                    wanted: "stopped (or use --force)",
                }
                .into());
            }
            kill_and_wait(&st, &cg)?;
        }
        // Processes that left the init's pid namespace (no pid namespace, or double forks)
        // would keep the cgroup busy: kill whatever remains.
        for p in cg.pids().unwrap_or_default() {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        if let Some(rootfs) = &st.root_clone {
            crate::rootfs::propagation::detach(rootfs)?;
        }
        cg.destroy()?;
        std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
        hooks::run_all_warn(&st.config, Kind::Poststop, &st.oci(Status::Stopped));
        Ok(())
    }

    pub fn pause(&self, id: &str) -> Result<()> {
        let (st, status) = self.load_live(id, "pause")?;
        if status != Status::Running {
            return Err(wrong(id, status, "pause", "running"));
        }
        cgroups::Manager::from_state(&st.cgroup).freeze()
    }

    pub fn resume(&self, id: &str) -> Result<()> {
        let (st, status) = self.load_live(id, "resume")?;
        if status != Status::Paused {
            return Err(wrong(id, status, "resume", "paused"));
        }
        cgroups::Manager::from_state(&st.cgroup).thaw()
    }

    /// How many of the container's processes the OOM killer killed (its memory cgroup's
    /// count). Meaningful after the container stopped too, until it is deleted.
    pub fn oom_kills(&self, id: &str) -> Result<u64> {
        let st = ContainerState::load(&self.root, id)?;
        cgroups::Manager::from_state(&st.cgroup).oom_kill_count()
    }

    /// Host pids of every process in the container.
    pub fn ps(&self, id: &str) -> Result<Vec<i32>> {
        let st = ContainerState::load(&self.root, id)?;
        cgroups::Manager::from_state(&st.cgroup).pids()
    }

    pub fn stats(&self, id: &str) -> Result<Event> {
        let (st, _) = self.load_live(id, "events")?;
        let data = cgroups::Manager::from_state(&st.cgroup).stats()?;
        Ok(Event {
            kind: "stats".into(),
            id: id.into(),
            data: Some(data),
        })
    }

    /// Stream events until the container stops: stats every `interval`, and "oom" as soon as
    /// the OOM killer strikes (polled every 100 ms).
    pub fn events(
        &self,
        id: &str,
        interval: Duration,
        mut emit: impl FnMut(&Event) -> Result<()>,
    ) -> Result<()> {
        let (st, _) = self.load_live(id, "events")?;
        let cg = cgroups::Manager::from_state(&st.cgroup);
        let mut ooms = cg.oom_kill_count().unwrap_or(0);
        let mut next_stats = Instant::now();
        while state::pid_alive(st.pid, st.pid_start) {
            let now = cg.oom_kill_count().unwrap_or(ooms);
            if now > ooms {
                ooms = now;
                emit(&Event {
                    kind: "oom".into(),
                    id: id.into(),
                    data: None,
                })?;
            }
            if Instant::now() >= next_stats {
                emit(&Event {
                    kind: "stats".into(),
                    id: id.into(),
                    data: Some(cg.stats()?),
                })?;
                next_stats = Instant::now() + interval;
            }
            std::thread::sleep(Duration::from_millis(100).min(interval));
        }
        Ok(())
    }

    /// Change the resource limits of a live container (`yunc update --resources`).
    pub fn update(&self, id: &str, res: &LinuxResources) -> Result<()> {
        let (st, _) = self.load_live(id, "update")?;
        let cg = cgroups::Manager::from_state(&st.cgroup);
        cg.validate(res)?;
        cg.apply(res)
    }
}

fn wrong(id: &str, status: Status, action: &'static str, wanted: &'static str) -> anyhow::Error {
    Error::WrongState {
        id: id.into(),
        status: status.to_string(),
        action,
        wanted,
    }
    .into()
}

/// SIGKILL the container and wait (up to 10 s) until its init is gone.
fn kill_and_wait(st: &ContainerState, cg: &cgroups::Manager) -> Result<()> {
    let _ = kill(Pid::from_raw(st.pid), Signal::SIGKILL);
    for p in cg.pids().unwrap_or_default() {
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    }
    if cg.is_frozen().unwrap_or(false) {
        cg.thaw()?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while state::pid_alive(st.pid, st.pid_start) {
        if Instant::now() > deadline {
            bail!(
                "container {}: process {} did not die after SIGKILL",
                st.id,
                st.pid
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}
