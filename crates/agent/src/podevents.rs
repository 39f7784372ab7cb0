//! The events the agent posts about pods, with the kubelet's reasons and wording (`Pulled`,
//! `Created`, `Started`, `Killing`, `BackOff`, `Unhealthy`, `FailedMount`…), through the shared
//! [`Recorder`] as component `kubelet` on this node.
//!
//! A pod is synced every second, so most conditions are seen again and again; an event is
//! posted on the transition (a container attempt started, an attempt entered its back-off).
//! A condition that persists (a missing Secret) is posted when first seen and then at most
//! once per [`REPEAT`], and those repeats aggregate in the recorder into one Event with a
//! growing count.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use crate::events::{reference, EventType, Recorder};

/// How often a condition that persists is posted again.
pub const REPEAT: Duration = Duration::from_secs(30);

/// The kubelet's reasons.
pub mod reason {
    pub const PULLING: &str = "Pulling";
    pub const PULLED: &str = "Pulled";
    pub const FAILED: &str = "Failed";
    pub const BACK_OFF: &str = "BackOff";
    pub const NEVER_PULL: &str = "ErrImageNeverPull";
    pub const CREATED: &str = "Created";
    pub const STARTED: &str = "Started";
    pub const KILLING: &str = "Killing";
    pub const UNHEALTHY: &str = "Unhealthy";
    pub const FAILED_MOUNT: &str = "FailedMount";
    pub const INVALID_ENV: &str = "InvalidEnvironmentVariableNames";
    pub const SANDBOX_CHANGED: &str = "SandboxChanged";
}

/// Posts pod events once a recorder is set (a runtime used without the API posts none).
#[derive(Default)]
pub struct PodEvents {
    recorder: OnceLock<Recorder>,
    /// (pod uid, what) → (token, when posted): what was posted last, for transitions.
    noted: Mutex<HashMap<(String, String), (String, Instant)>>,
}

impl PodEvents {
    pub fn set_recorder(&self, recorder: Recorder) {
        let _ = self.recorder.set(recorder);
    }

    /// Post an event about `pod`, or about its container `container` (the reference's
    /// fieldPath names it, as the kubelet's do).
    pub fn post(
        &self,
        pod: &Pod,
        container: Option<&str>,
        type_: EventType,
        reason: &str,
        message: &str,
    ) {
        let Some(recorder) = self.recorder.get() else {
            return;
        };
        let mut object = reference("v1", "Pod", &pod.metadata);
        object.field_path = container.map(|c| field_path(pod, c));
        recorder.record(&object, type_, reason, "", message);
    }

    /// Post unless the same `what` was posted with the same `token` less than [`REPEAT`]
    /// ago: a transition (a new token) posts at once, a state that persists now and then.
    pub fn post_on_change(
        &self,
        pod: &Pod,
        container: Option<&str>,
        token: &str,
        type_: EventType,
        reason: &str,
        message: &str,
    ) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let what = format!("{reason}/{}", container.unwrap_or(""));
        {
            let mut noted = self.noted.lock().expect("events lock");
            let now = Instant::now();
            match noted.get(&(uid.clone(), what.clone())) {
                Some((t, at)) if t == token && now.duration_since(*at) < REPEAT => return,
                _ => {}
            }
            noted.insert((uid, what), (token.to_string(), now));
        }
        self.post(pod, container, type_, reason, message);
    }

    /// Forget what was posted about pod `uid` (it is gone).
    pub fn forget(&self, uid: &str) {
        self.noted
            .lock()
            .expect("events lock")
            .retain(|(u, _), _| u != uid);
    }
}

/// `spec.containers{NAME}` or `spec.initContainers{NAME}`, as the kubelet names a container
/// in an event's reference.
pub fn field_path(pod: &Pod, container: &str) -> String {
    let init = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|l| l.iter().any(|c| c.name == container));
    if init {
        format!("spec.initContainers{{{container}}}")
    } else {
        format!("spec.containers{{{container}}}")
    }
}

/// How the kubelet names a pod in messages: `NAME_NAMESPACE(UID)`.
pub fn pod_desc(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.uid.as_deref().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    #[test]
    fn field_paths_name_init_and_app_containers() {
        let c = |n: &str| Container {
            name: n.into(),
            ..Default::default()
        };
        let pod = Pod {
            spec: Some(PodSpec {
                init_containers: Some(vec![c("setup")]),
                containers: vec![c("app")],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(field_path(&pod, "setup"), "spec.initContainers{setup}");
        assert_eq!(field_path(&pod, "app"), "spec.containers{app}");
    }

    #[test]
    fn a_persisting_state_is_noted_once_per_token() {
        let ev = PodEvents::default();
        let mut pod = Pod::default();
        pod.metadata.uid = Some("u".into());
        let posted = |token: &str| {
            let before = ev
                .noted
                .lock()
                .unwrap()
                .get(&("u".into(), "BackOff/c".into()))
                .cloned();
            ev.post_on_change(&pod, Some("c"), token, EventType::Warning, "BackOff", "m");
            let after = ev
                .noted
                .lock()
                .unwrap()
                .get(&("u".into(), "BackOff/c".into()))
                .cloned();
            before.map(|b| b.1) != after.map(|a| a.1)
        };
        assert!(posted("1"));
        assert!(!posted("1"));
        assert!(posted("2"));
        ev.forget("u");
        assert!(ev.noted.lock().unwrap().is_empty());
    }
}
