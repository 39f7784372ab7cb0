//! Starting one container attempt: its image (per pull policy), its options, the engine's
//! run, and the kubelet's events on the way (Pulling/Pulled, Failed, Created, Started…).

use anyhow::Result;
use k8s_openapi::api::core::v1::{Container, Pod};

use super::{container_name, labels, PodRuntime};
use crate::events::EventType::{Normal, Warning};
use crate::images::Source;
use crate::podevents::reason;
use crate::{container, volumes, PodInputs};

impl PodRuntime {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_container(
        &self,
        pod: &Pod,
        uid: &str,
        c: &Container,
        attempt: u32,
        inputs: &PodInputs,
        volumes: &volumes::PodVolumes,
        sandbox_pid: i32,
    ) -> Result<()> {
        let ev = &self.events;
        let name = Some(c.name.as_str());
        let image = match c.image.as_deref().filter(|i| !i.is_empty()) {
            Some(i) => i,
            None => {
                self.set_waiting(uid, &c.name, "InvalidImageName", "no image given".into());
                let m = "Error: InvalidImageName";
                ev.post_on_change(pod, name, m, Warning, reason::FAILED, m);
                return Ok(());
            }
        };
        // A failed pull is retried with the same back-off as a crashing container.
        if let Some(w) = self
            .waiting
            .lock()
            .expect("waiting lock")
            .get(&(uid.to_string(), c.name.clone()))
        {
            if w.reason.starts_with("ErrImage") || w.reason == "ImagePullBackOff" {
                let delay = self.backoff_delay(w.failures.saturating_sub(1));
                if w.since.elapsed().unwrap_or_default() < delay {
                    let token = w.failures.to_string();
                    let m = format!("Back-off pulling image {image:?}");
                    ev.post_on_change(pod, name, &token, Normal, reason::BACK_OFF, &m);
                    return Ok(());
                }
            }
        }
        let pulling = || {
            let m = format!("Pulling image {image:?}");
            ev.post(pod, name, Normal, reason::PULLING, &m);
        };
        match crate::images::ensure(&self.engine, c, image, pulling) {
            Ok(Source::Present) => {
                let m = format!("Container image {image:?} already present on machine");
                ev.post(pod, name, Normal, reason::PULLED, &m);
            }
            Ok(Source::Pulled(took)) => {
                let m = format!("Successfully pulled image {image:?} in {took:.3?}");
                ev.post(pod, name, Normal, reason::PULLED, &m);
            }
            Err((why, e)) => {
                let failures = self
                    .waiting
                    .lock()
                    .expect("waiting lock")
                    .get(&(uid.to_string(), c.name.clone()))
                    .map(|w| w.failures)
                    .unwrap_or(0);
                if why == "ErrImageNeverPull" {
                    let m = format!(
                        "Container image {image:?} is not present with pull policy of Never"
                    );
                    ev.post(pod, name, Warning, reason::NEVER_PULL, &m);
                } else {
                    let m = format!("Failed to pull image {image:?}: {e:#}");
                    ev.post(pod, name, Warning, reason::FAILED, &m);
                }
                ev.post(pod, name, Warning, reason::FAILED, &format!("Error: {why}"));
                let why = if failures > 0 && why == "ErrImagePull" {
                    "ImagePullBackOff"
                } else {
                    why
                };
                self.set_waiting(uid, &c.name, why, format!("{e:#}"));
                return Ok(());
            }
        }
        let mut opts = match container::run_options(
            pod,
            c,
            inputs,
            volumes,
            sandbox_pid,
            labels(uid, &c.name, attempt),
            container_name(uid, &c.name, attempt),
        ) {
            Ok(o) => o,
            Err(e) => {
                let m = format!("Error: {e:#}");
                ev.post_on_change(pod, name, &m, Warning, reason::FAILED, &m);
                self.set_waiting(uid, &c.name, "CreateContainerConfigError", format!("{e:#}"));
                return Ok(());
            }
        };
        opts.log_rotation = Some(self.cfg.log_rotation);
        // The keys envFrom skipped (run_options resolved them without a word).
        if let Ok(from) = container::env_from(c, inputs) {
            for m in &from.invalid {
                ev.post(pod, None, Warning, reason::INVALID_ENV, m);
            }
        }
        match self.engine.run(image, &opts) {
            Ok(_) => {
                self.clear_waiting(uid, &c.name);
                // The engine creates and starts in one step; the kubelet's two events follow.
                let created = format!("Created container {}", c.name);
                ev.post(pod, name, Normal, reason::CREATED, &created);
                let started = format!("Started container {}", c.name);
                ev.post(pod, name, Normal, reason::STARTED, &started);
            }
            Err(e) => {
                let m = format!("Error: {e:#}");
                ev.post(pod, name, Warning, reason::FAILED, &m);
                self.set_waiting(uid, &c.name, "RunContainerError", format!("{e:#}"));
            }
        }
        Ok(())
    }
}
