//! Pods that reached Succeeded or Failed: as the kubelet does, their sandbox is stopped and
//! their address given back (a Job of a thousand pods would otherwise hold a thousand pause
//! processes, veths and addresses — more than a node's /24 has), its volumes are unmounted,
//! while the exited containers stay with their logs until the pod is deleted (their rootfs
//! unmounted by the engine when each exits). A finished pod is never started again.

use anyhow::Result;
use k8s_openapi::api::core::v1::{Pod, PodStatus};

use super::{PodRuntime, SANDBOX};

/// Whether the API says `pod` finished (this agent reported it so): nothing of it runs again.
pub(super) fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

impl PodRuntime {
    /// Stop the sandbox of finished pod `uid` and release its network; its status stays
    /// what was reported (its IP included, as the kubelet keeps it). Idempotent.
    pub(super) fn release_finished(&self, pod: &Pod, uid: &str) -> Result<PodStatus> {
        let status = pod.status.clone().unwrap_or_default();
        // The address goes last: without one, the sandbox is stopped already, and the
        // periodic resync of a node's many finished pods costs no container scan.
        if self.net.address_of(uid)?.is_none() {
            return Ok(status);
        }
        let attempts = self.attempts(uid);
        for a in attempts.get(SANDBOX).into_iter().flatten() {
            if a.running() {
                self.engine
                    .stop(&a.status.container.id, std::time::Duration::ZERO)?;
            }
        }
        // Its secret and token volumes (tmpfs mounts) go as well, as the kubelet tears down a
        // terminated pod's volumes: a mount per finished pod would slow every reader of the
        // mount table.
        crate::volumes::unmount_under(&self.pod_dir(uid))?;
        self.net.detach(uid)?;
        Ok(status)
    }
}
