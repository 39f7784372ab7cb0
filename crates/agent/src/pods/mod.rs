//! Pods on this node: sandbox, network, volumes, init and app containers, restarts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use yun_engine::{Engine, RunOptions};
use yun_net::{BridgeNetwork, Ipv4Cidr};

use crate::events::EventType::{Normal, Warning};
use crate::events::Recorder;
use crate::podevents::{pod_desc, reason, PodEvents};
use crate::probes::{Prober, Verdict};
use crate::status::{self, Attempt, View};
use crate::{container, volumes, PodInputs};

mod finished;
mod start;

/// Labels on the engine's containers that tie them to a pod.
pub(crate) const LABEL_POD_UID: &str = "yun.pod.uid";
pub(crate) const LABEL_CONTAINER: &str = "yun.pod.container";
pub(crate) const LABEL_ATTEMPT: &str = "yun.pod.attempt";
/// The container name of a pod's sandbox (Kubernetes calls it the pause container).
pub(crate) const SANDBOX: &str = "POD";
/// The sandbox's process: sleep forever, exit on SIGTERM.
const SANDBOX_COMMAND: &str = "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done";
/// Exited attempts kept per container: the current one and the previous (`logs --previous`).
const KEEP_ATTEMPTS: usize = 2;

/// How this node runs pods.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's data dir (images, containers, pod volumes, network state).
    pub data_dir: PathBuf,
    /// The pod bridge, e.g. `yun0`.
    pub bridge: String,
    /// The node's pod subnet; its first address is the bridge's.
    pub pod_cidr: Ipv4Cidr,
    /// The `yun` binary: container monitors are started as `yun container-monitor`.
    pub yun_exe: PathBuf,
    /// CrashLoopBackOff: the first delay, doubled per restart up to `backoff_max`
    /// (Kubernetes: 10 s and 5 min).
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How big each container's log may grow (the kubelet's containerLogMaxSize/MaxFiles).
    pub log_rotation: yun_engine::logfile::Rotation,
}

impl NodeConfig {
    pub fn new(data_dir: &Path, yun_exe: &Path) -> NodeConfig {
        NodeConfig {
            data_dir: data_dir.to_path_buf(),
            bridge: "yun0".into(),
            pod_cidr: "10.42.0.0/24".parse().expect("valid CIDR"),
            yun_exe: yun_exe.to_path_buf(),
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            log_rotation: Default::default(),
        }
    }
}

/// Why a container has not started (an image that cannot be pulled, a missing ConfigMap…),
/// and how often it failed, for the back-off.
#[derive(Debug, Clone)]
struct Waiting {
    reason: String,
    message: String,
    failures: u32,
    since: SystemTime,
}

pub struct PodRuntime {
    cfg: NodeConfig,
    engine: Engine,
    net: BridgeNetwork,
    waiting: Mutex<HashMap<(String, String), Waiting>>,
    prober: Mutex<Prober>,
    events: PodEvents,
}

/// A pod's containers as the engine has them: container name → attempts, oldest first.
type Attempts = BTreeMap<String, Vec<Attempt>>;

impl PodRuntime {
    /// The node's data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.cfg.data_dir
    }

    /// Open the node's engine and bring up its pod bridge.
    pub fn open(cfg: NodeConfig) -> Result<PodRuntime> {
        let mut engine = Engine::open(&cfg.data_dir)?;
        engine.set_monitor_command(vec![
            cfg.yun_exe.clone().into(),
            "--data-dir".into(),
            cfg.data_dir.clone().into(),
            "container-monitor".into(),
        ]);
        let net = BridgeNetwork::new(&cfg.bridge, cfg.pod_cidr, &cfg.data_dir.join("net"))?;
        net.ensure()
            .with_context(|| format!("bringing up the pod bridge {}", cfg.bridge))?;
        Ok(PodRuntime {
            cfg,
            engine,
            net,
            waiting: Mutex::new(HashMap::new()),
            prober: Mutex::new(Prober::default()),
            events: PodEvents::default(),
        })
    }

    /// Post the kubelet's events about pods through `recorder` from now on.
    pub fn set_recorder(&self, recorder: Recorder) {
        self.events.set_recorder(recorder);
    }

    /// Say that the running containers of `pod` are being stopped (the kubelet's Killing).
    pub fn announce_stop(&self, pod: &Pod) {
        let uid = pod.metadata.uid.as_deref().unwrap_or("");
        for (name, list) in self.attempts(uid) {
            if name != SANDBOX && list.last().is_some_and(Attempt::running) {
                let m = format!("Stopping container {name}");
                self.events
                    .post(pod, Some(&name), Normal, reason::KILLING, &m);
            }
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn network(&self) -> &BridgeNetwork {
        &self.net
    }

    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.cfg.data_dir.join("pods").join(uid)
    }

    /// The uids of all pods that have containers on this node.
    pub fn pod_uids(&self) -> Vec<String> {
        let mut uids: Vec<String> = self
            .engine
            .containers()
            .into_iter()
            .filter_map(|c| c.labels.get(LABEL_POD_UID).cloned())
            .collect();
        uids.sort();
        uids.dedup();
        uids
    }

    /// The engine's records of pod `uid`'s containers, every attempt (read by their names, not
    /// by scanning every record on the node).
    pub(crate) fn records(&self, uid: &str) -> Vec<yun_engine::Container> {
        let mut out = self.engine.containers_named(&format!("yunpod_{uid}_"));
        out.retain(|c| c.labels.get(LABEL_POD_UID).map(String::as_str) == Some(uid));
        out
    }

    fn attempts(&self, uid: &str) -> Attempts {
        let mut out: Attempts = BTreeMap::new();
        // The runtime's state is read only for this pod's containers: a sync runs for every
        // pod every second, and the node may hold many.
        // Only this pod's records are read (by their names): a node keeps the exited
        // containers of every finished pod, and a sync runs for every pod every second.
        for c in self.records(uid) {
            let labels = &c.labels;
            let (Some(name), Some(n)) = (
                labels.get(LABEL_CONTAINER),
                labels.get(LABEL_ATTEMPT).and_then(|a| a.parse().ok()),
            ) else {
                continue;
            };
            let name = name.clone();
            let s = self.engine.status(&c);
            let finished = self.engine.finished_at(&c);
            out.entry(name).or_default().push(Attempt {
                number: n,
                status: s,
                finished,
            });
        }
        for list in out.values_mut() {
            list.sort_by_key(|a| a.number);
        }
        out
    }

    /// One reconcile step for `pod`: make the node match its spec as far as possible now
    /// (start what is missing, restart what the policy says, after its back-off) and report
    /// the pod's status. Call it again whenever the pod or its containers may have changed.
    pub fn sync(&self, pod: &Pod, inputs: &PodInputs) -> Result<PodStatus> {
        let uid = pod
            .metadata
            .uid
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| anyhow!("pod has no metadata.uid"))?;
        let spec = pod
            .spec
            .as_ref()
            .ok_or_else(|| anyhow!("pod has no spec"))?;
        if finished::is_finished(pod) {
            return self.release_finished(pod, &uid);
        }
        let mut attempts = self.attempts(&uid);
        let (sandbox_pid, pod_ip) = self.ensure_sandbox(pod, &uid, &mut attempts)?;
        let ev = &self.events;
        let mut inputs = inputs.clone();
        inputs.pod_ip = Some(pod_ip.to_string());
        let pod_dir = self.pod_dir(&uid);
        let restart_policy = spec.restart_policy.as_deref().unwrap_or("Always");

        let volumes = volumes::prepare(pod, &pod_dir, &inputs);
        let start = |c: &Container, attempt: u32| -> Result<()> {
            let volumes = match &volumes {
                Ok(v) => v,
                Err(e) => {
                    // The pod's event (not the container's), as the kubelet's volume manager.
                    let m = format!(
                        "MountVolume.SetUp failed for volume {:?} : {:#}",
                        e.volume, e.cause
                    );
                    ev.post_on_change(pod, None, &m, Warning, reason::FAILED_MOUNT, &m);
                    self.set_waiting(&uid, &c.name, "CreateContainerConfigError", e.to_string());
                    return Ok(());
                }
            };
            self.start_container(pod, &uid, c, attempt, &inputs, volumes, sandbox_pid)
        };

        // Init containers, one at a time, in order.
        let mut init_done = true;
        let mut init_failed = false;
        for c in spec.init_containers.iter().flatten() {
            match attempts.get(&c.name).and_then(|a| a.last()) {
                Some(a) if a.running() => init_done = false,
                Some(a) if a.exit_code() == Some(0) => continue,
                Some(a) if a.exited() => {
                    init_done = false;
                    if restart_policy == "Never" {
                        init_failed = true;
                    } else if self.backoff_over(a) {
                        start(c, a.number + 1)?;
                    } else {
                        self.note_backoff(pod, &c.name, a);
                    }
                }
                Some(_) => init_done = false,
                None => {
                    init_done = false;
                    start(c, 0)?;
                }
            }
            break;
        }

        if init_done {
            for c in &spec.containers {
                match attempts.get(&c.name).and_then(|a| a.last()) {
                    None => start(c, 0)?,
                    Some(a) if a.exited() => {
                        let restart = match restart_policy {
                            "Never" => false,
                            "OnFailure" => a.exit_code() != Some(0),
                            _ => true,
                        };
                        if restart && self.backoff_over(a) {
                            start(c, a.number + 1)?;
                        } else if restart {
                            self.note_backoff(pod, &c.name, a);
                        }
                    }
                    Some(_) => {}
                }
            }
        }

        // Probes of the running app containers; a failed liveness or startup probe stops the
        // container, and the restart policy takes it from there on the next sync.
        let mut verdicts: HashMap<String, Verdict> = HashMap::new();
        if init_done {
            let grace = Duration::from_secs(
                spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64,
            );
            for c in &spec.containers {
                let Some(a) = attempts.get(&c.name).and_then(|a| a.last()) else {
                    continue;
                };
                if !a.running() {
                    continue;
                }
                let target = crate::probes::Target {
                    pod_uid: &uid,
                    container_id: &a.status.container.id,
                    pod_ip: &inputs.pod_ip.clone().unwrap_or_default(),
                    yun_exe: &self.cfg.yun_exe,
                    data_dir: &self.cfg.data_dir,
                };
                let (verdict, failures) =
                    self.prober.lock().expect("prober lock").check(c, &target);
                for m in &failures {
                    ev.post(pod, Some(&c.name), Warning, reason::UNHEALTHY, m);
                }
                if verdict.kill {
                    tracing::info!(
                        "pod {uid}: container {} failed its probe; restarting",
                        c.name
                    );
                    let which = if verdict.started {
                        "liveness"
                    } else {
                        "startup"
                    };
                    let m = format!(
                        "Container {} failed {which} probe, will be restarted",
                        c.name
                    );
                    ev.post(pod, Some(&c.name), Normal, reason::KILLING, &m);
                    let _ = self.engine.stop(&a.status.container.id, grace);
                }
                verdicts.insert(c.name.clone(), verdict);
            }
        }

        // Re-read what the engine has now, drop attempts beyond the last two, and report.
        let attempts = self.attempts(&uid);
        {
            let live: Vec<String> = attempts
                .values()
                .flatten()
                .filter(|a| a.running())
                .map(|a| a.status.container.id.clone())
                .collect();
            self.prober
                .lock()
                .expect("prober lock")
                .retain_for_pod(&uid, &live);
        }
        for (name, list) in &attempts {
            if name == SANDBOX {
                continue;
            }
            for old in list.iter().rev().skip(KEEP_ATTEMPTS) {
                let _ = self.engine.rm(&old.status.container.id, true);
            }
        }
        let views = |containers: &[Container], init: bool| -> Vec<(Container, View)> {
            containers
                .iter()
                .map(|c| {
                    (
                        c.clone(),
                        self.view(
                            &uid,
                            c,
                            &attempts,
                            restart_policy,
                            init,
                            verdicts.get(&c.name),
                        ),
                    )
                })
                .collect()
        };
        let init_views = views(spec.init_containers.as_deref().unwrap_or(&[]), true);
        let app_views = views(&spec.containers, false);
        Ok(status::pod_status(
            &init_views,
            &app_views,
            status::PodFacts {
                init_done,
                init_failed,
                restart_policy,
                pod_ip: pod_ip.to_string(),
                host_ip: inputs.host_ip.clone(),
                started: attempts
                    .get(SANDBOX)
                    .and_then(|a| a.last())
                    .map(|a| a.started()),
            },
        ))
    }

    /// What to report for one container.
    fn view(
        &self,
        uid: &str,
        c: &Container,
        attempts: &Attempts,
        restart_policy: &str,
        init: bool,
        verdict: Option<&Verdict>,
    ) -> View {
        let list = attempts.get(&c.name).map(Vec::as_slice).unwrap_or(&[]);
        let waiting = self
            .waiting
            .lock()
            .expect("waiting lock")
            .get(&(uid.to_string(), c.name.clone()))
            .cloned();
        let latest = list.last();
        let previous = if list.len() >= 2 {
            list.get(list.len() - 2)
        } else {
            None
        };
        let backing_off = latest.is_some_and(|a| {
            a.exited()
                && match restart_policy {
                    "Never" => false,
                    "OnFailure" => a.exit_code() != Some(0),
                    _ => !init || a.exit_code() != Some(0),
                }
        });
        View {
            // Not probed yet (it just started): ready only if no probe has a say.
            ready: verdict.map_or(
                c.readiness_probe.is_none() && c.startup_probe.is_none(),
                |v| v.ready,
            ),
            started: verdict.map_or(c.startup_probe.is_none(), |v| v.started),
            latest: latest.cloned(),
            previous: previous.cloned(),
            waiting: waiting.map(|w| (w.reason, w.message)),
            crash_loop: backing_off.then(|| {
                let delay = latest
                    .map(|a| self.backoff_delay(a.number))
                    .unwrap_or_default();
                format!(
                    "back-off {}s restarting failed container={} pod={}",
                    delay.as_secs(),
                    c.name,
                    uid
                )
            }),
        }
    }

    fn backoff_delay(&self, restarts: u32) -> Duration {
        let factor = 1u32.checked_shl(restarts.min(16)).unwrap_or(u32::MAX);
        (self.cfg.backoff_base * factor).min(self.cfg.backoff_max)
    }

    /// Whether the back-off after `a`'s exit has passed, so it may be restarted.
    fn backoff_over(&self, a: &Attempt) -> bool {
        let Some(finished) = a.finished else {
            return false;
        };
        finished.elapsed().unwrap_or_default() >= self.backoff_delay(a.number)
    }

    /// The kubelet's BackOff for an exited attempt waiting out its back-off: once per
    /// attempt (and now and then while the wait is long), not on every sync.
    fn note_backoff(&self, pod: &Pod, container: &str, a: &Attempt) {
        let m = format!(
            "Back-off restarting failed container {container} in pod {}",
            pod_desc(pod)
        );
        let token = a.number.to_string();
        self.events
            .post_on_change(pod, Some(container), &token, Warning, reason::BACK_OFF, &m);
    }

    fn set_waiting(&self, uid: &str, container: &str, reason: &str, message: String) {
        let mut map = self.waiting.lock().expect("waiting lock");
        let key = (uid.to_string(), container.to_string());
        let failures = map.get(&key).map(|w| w.failures + 1).unwrap_or(1);
        map.insert(
            key,
            Waiting {
                reason: reason.to_string(),
                message,
                failures,
                since: SystemTime::now(),
            },
        );
    }

    fn clear_waiting(&self, uid: &str, container: &str) {
        self.waiting
            .lock()
            .expect("waiting lock")
            .remove(&(uid.to_string(), container.to_string()));
    }

    /// The sandbox's pid and the pod's address: the running sandbox, or a new one (after
    /// removing every container of a sandbox that died — they lost their namespaces).
    fn ensure_sandbox(
        &self,
        pod: &Pod,
        uid: &str,
        attempts: &mut Attempts,
    ) -> Result<(i32, std::net::Ipv4Addr)> {
        let latest = attempts.get(SANDBOX).and_then(|a| a.last());
        if let Some(a) = latest.filter(|a| a.running()) {
            if let (Some(pid), Some(ip)) = (a.status.pid, self.net.address_of(uid)?) {
                return Ok((pid, ip));
            }
        }
        let next = latest.map(|a| a.number + 1).unwrap_or(0);
        if !attempts.is_empty() {
            if latest.is_some() {
                let m = "Pod sandbox changed, it will be killed and re-created.";
                self.events
                    .post(pod, None, Normal, reason::SANDBOX_CHANGED, m);
            }
            self.remove_containers(uid, Duration::ZERO)?;
            self.net.detach(uid)?;
            attempts.clear();
        }
        let labels = labels(uid, SANDBOX, next);
        let opts = RunOptions {
            name: Some(container_name(uid, SANDBOX, next)),
            detach: true,
            command: vec!["sh".into(), "-c".into(), SANDBOX_COMMAND.into()],
            entrypoint: Some(String::new()),
            hostname: container::pod_hostname(pod),
            labels,
            ..Default::default()
        };
        let (c, _) = self
            .engine
            .run("busybox", &opts)
            .context("starting the pod sandbox")?;
        let pid = self
            .engine
            .status(&c)
            .pid
            .ok_or_else(|| anyhow!("the pod sandbox exited at once"));
        let attached = pid.and_then(|pid| {
            let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
            let a = self
                .net
                .attach(uid, &netns, "eth0")
                .context("connecting the pod sandbox to the node network")?;
            Ok((pid, a.address.addr))
        });
        if attached.is_err() {
            let _ = self.engine.rm(&c.id, true);
        }
        attached
    }

    /// Stop and remove every container of pod `uid` (app and init first, the sandbox last),
    /// give back its address, and delete its volumes. Idempotent.
    pub fn remove(&self, uid: &str, grace: Duration) -> Result<()> {
        self.remove_containers(uid, grace)?;
        self.net.detach(uid)?;
        let dir = self.pod_dir(uid);
        if dir.exists() {
            volumes::unmount_under(&dir)?;
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        self.waiting
            .lock()
            .expect("waiting lock")
            .retain(|(u, _), _| u != uid);
        self.events.forget(uid);
        Ok(())
    }

    fn remove_containers(&self, uid: &str, grace: Duration) -> Result<()> {
        let attempts = self.attempts(uid);
        let (sandbox, others): (Vec<_>, Vec<_>) =
            attempts.into_iter().partition(|(name, _)| name == SANDBOX);
        for (_, list) in others.into_iter().chain(sandbox) {
            for a in list {
                let id = &a.status.container.id;
                if a.running() {
                    self.engine.stop(id, grace)?;
                }
                self.engine.rm(id, true)?;
            }
        }
        Ok(())
    }

    /// The log file of `container` in pod `uid`: its latest attempt, or with `previous` the
    /// one before.
    pub fn log_path(&self, uid: &str, container: &str, previous: bool) -> Result<PathBuf> {
        let attempts = self.attempts(uid);
        let list = attempts
            .get(container)
            .ok_or_else(|| anyhow!("container {container:?} has not run in this pod"))?;
        let pick = if previous {
            list.iter()
                .rev()
                .nth(1)
                .ok_or_else(|| anyhow!("previous terminated container {container:?} not found"))?
        } else {
            list.last().expect("non-empty")
        };
        Ok(self.engine.log_path(&pick.status.container))
    }

    /// The engine's view of the running attempt of `container` in pod `uid` (exec joins it,
    /// attach writes its stdin, port-forward joins the sandbox's network namespace); the
    /// error is the kubelet's message for a container that is not running.
    pub fn running(&self, uid: &str, container: &str) -> Result<yun_engine::ContainerStatus> {
        let attempts = self.attempts(uid);
        match attempts.get(container).and_then(|l| l.last()) {
            Some(a) if a.status.state == "running" && a.status.pid.is_some() => {
                Ok(a.status.clone())
            }
            _ => bail!("container not found ({container:?})"),
        }
    }

    /// The running containers of pod `uid` (its latest attempts, not the sandbox) with their
    /// pids, for the node agent to wait on their exits.
    pub fn running_containers(&self, uid: &str) -> Vec<(i32, yun_engine::Container)> {
        self.attempts(uid)
            .into_iter()
            .filter(|(name, _)| name != SANDBOX)
            .filter_map(|(_, attempts)| {
                let a = attempts.into_iter().max_by_key(|a| a.number)?;
                let pid = a.status.pid.filter(|_| a.status.state == "running")?;
                Some((pid, a.status.container))
            })
            .collect()
    }

    /// The sandbox's pid: its network namespace is the pod's.
    pub fn sandbox_pid(&self, uid: &str) -> Result<i32> {
        self.running(uid, SANDBOX)
            .map(|s| s.pid.expect("a running container has a pid"))
    }

    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    /// Whether container `container` of pod `uid` is running now.
    pub fn is_running(&self, uid: &str, container: &str) -> bool {
        self.attempts(uid)
            .get(container)
            .and_then(|l| l.last())
            .is_some_and(Attempt::running)
    }
}

fn labels(uid: &str, container: &str, attempt: u32) -> BTreeMap<String, String> {
    [
        (LABEL_POD_UID, uid.to_string()),
        (LABEL_CONTAINER, container.to_string()),
        (LABEL_ATTEMPT, attempt.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The engine's name for a pod's container: unique per pod, container and attempt.
fn container_name(uid: &str, container: &str, attempt: u32) -> String {
    format!("yunpod_{uid}_{container}_{attempt}")
}

impl Attempt {
    pub(crate) fn running(&self) -> bool {
        matches!(self.status.state.as_str(), "running" | "paused" | "created")
    }
}
