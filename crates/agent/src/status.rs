//! The PodStatus a pod's containers add up to: phase, conditions, container statuses.

use std::time::SystemTime;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use yun_engine::ContainerStatus as EngineStatus;

/// One run of a container (the engine's container for that attempt).
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    /// 0 for the first run; equals the restart count.
    pub number: u32,
    pub status: EngineStatus,
    pub finished: Option<SystemTime>,
}

impl Attempt {
    pub fn exited(&self) -> bool {
        self.status.state == "exited" && self.status.exit_code.is_some()
    }

    pub fn exit_code(&self) -> Option<i32> {
        self.exited().then_some(self.status.exit_code).flatten()
    }

    pub fn started(&self) -> SystemTime {
        humantime::parse_rfc3339(&self.status.container.created).unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// What the runtime knows about one container of the pod.
#[derive(Debug, Clone)]
pub(crate) struct View {
    pub latest: Option<Attempt>,
    pub previous: Option<Attempt>,
    /// Why it has not started (reason, message), e.g. ErrImagePull.
    pub waiting: Option<(String, String)>,
    /// Set when it exited and waits for its restart: the back-off message.
    pub crash_loop: Option<String>,
    /// What the probes say while it runs (true without probes).
    pub ready: bool,
    pub started: bool,
}

pub(crate) struct PodFacts<'a> {
    pub init_done: bool,
    pub init_failed: bool,
    pub restart_policy: &'a str,
    pub pod_ip: String,
    pub host_ip: Option<String>,
    pub started: Option<SystemTime>,
}

fn time(t: SystemTime) -> Time {
    // Kubernetes times have whole seconds.
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    Time(
        k8s_openapi::jiff::Timestamp::from_second(secs)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

fn terminated(a: &Attempt) -> ContainerStateTerminated {
    let code = a.exit_code().unwrap_or(-1);
    ContainerStateTerminated {
        exit_code: code,
        reason: Some(
            match (code, a.status.oom_killed) {
                (_, true) => "OOMKilled",
                (0, false) => "Completed",
                _ => "Error",
            }
            .into(),
        ),
        started_at: Some(time(a.started())),
        finished_at: a.finished.map(time),
        container_id: Some(format!("yun://{}", a.status.container.id)),
        ..Default::default()
    }
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message,
        }),
        ..Default::default()
    }
}

fn container_status(c: &Container, v: &View, default_wait: &str) -> ContainerStatus {
    let (state, ready, started) = match (&v.latest, &v.waiting) {
        (Some(a), _) if !a.exited() => (
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(time(a.started())),
                }),
                ..Default::default()
            },
            v.ready && v.started,
            v.started,
        ),
        (Some(a), _) => match &v.crash_loop {
            Some(msg) => (waiting("CrashLoopBackOff", Some(msg.clone())), false, false),
            None => (
                ContainerState {
                    terminated: Some(terminated(a)),
                    ..Default::default()
                },
                false,
                false,
            ),
        },
        (None, Some((reason, message))) => (waiting(reason, Some(message.clone())), false, false),
        (None, None) => (waiting(default_wait, None), false, false),
    };
    // The last termination: the previous attempt, or the latest one while it waits to restart.
    let last = match (&v.crash_loop, &v.latest, &v.previous) {
        (Some(_), Some(a), _) => Some(a),
        (_, _, Some(p)) => Some(p),
        _ => None,
    };
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_id: v
            .latest
            .as_ref()
            .map(|a| a.status.container.image_id.clone())
            .unwrap_or_default(),
        container_id: v
            .latest
            .as_ref()
            .map(|a| format!("yun://{}", a.status.container.id)),
        ready,
        started: Some(started),
        restart_count: v.latest.as_ref().map(|a| a.number as i32).unwrap_or(0),
        state: Some(state),
        last_state: last.map(|a| ContainerState {
            terminated: Some(terminated(a)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn condition(kind: &str, ok: bool, now: &Time) -> PodCondition {
    PodCondition {
        type_: kind.into(),
        status: if ok { "True" } else { "False" }.into(),
        last_transition_time: Some(now.clone()),
        ..Default::default()
    }
}

pub(crate) fn pod_status(
    init: &[(Container, View)],
    app: &[(Container, View)],
    facts: PodFacts,
) -> PodStatus {
    let init_statuses: Vec<ContainerStatus> = init
        .iter()
        .map(|(c, v)| container_status(c, v, "PodInitializing"))
        .collect();
    let default_wait = if facts.init_done {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let app_statuses: Vec<ContainerStatus> = app
        .iter()
        .map(|(c, v)| container_status(c, v, default_wait))
        .collect();

    let all_ready = app_statuses.iter().all(|s| s.ready);
    let never_started = app.iter().any(|(_, v)| v.latest.is_none());
    let all_done = !app.is_empty()
        && app
            .iter()
            .all(|(_, v)| v.latest.as_ref().is_some_and(Attempt::exited) && v.crash_loop.is_none());
    let all_succeeded = app
        .iter()
        .all(|(_, v)| v.latest.as_ref().and_then(Attempt::exit_code) == Some(0));
    let phase = if facts.init_failed {
        "Failed"
    } else if !facts.init_done || never_started {
        "Pending"
    } else if all_done && facts.restart_policy != "Always" {
        if all_succeeded {
            "Succeeded"
        } else {
            "Failed"
        }
    } else {
        "Running"
    };
    let now = time(SystemTime::now());
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(vec![
            condition("PodScheduled", true, &now),
            condition("Initialized", facts.init_done, &now),
            condition("ContainersReady", all_ready, &now),
            condition("Ready", all_ready, &now),
        ]),
        host_ip: facts.host_ip.clone(),
        pod_ip: Some(facts.pod_ip.clone()),
        pod_ips: Some(vec![PodIP {
            ip: facts.pod_ip.clone(),
        }]),
        start_time: facts.started.map(time),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        container_statuses: Some(app_statuses),
        ..Default::default()
    }
}
