//! The ReplicaSet controller's decision: how many pods to create or delete so that the
//! ReplicaSet's selector matches `spec.replicas` live pods, which orphans to adopt, and the
//! status to report.

use std::cmp::Reverse;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod as ApiPod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::cached::Pod;
use crate::owner;

/// What to do for one ReplicaSet.
#[derive(Debug, Clone, Default)]
pub struct ReplicaSetPlan {
    /// New pods (with generateName) to create.
    pub create: Vec<ApiPod>,
    /// Names of pods to delete, the least valuable first.
    pub delete: Vec<String>,
    /// Names of matching pods without a controller, to adopt (set our controller reference).
    pub adopt: Vec<String>,
    /// Names of pods we control that the selector no longer matches, to release.
    pub release: Vec<String>,
    pub status: ReplicaSetStatus,
}

/// Create at most this many pods per pass (Kubernetes' burst limit).
const MAX_BURST: usize = 500;

/// A pod still counts toward replicas: not being deleted and not finished.
pub fn is_active(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && !matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded") | Some("Failed")
        )
}

pub fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// Deletion order: unscheduled, then pending, then not ready, then most restarted, then newest.
fn deletion_rank(p: &Pod) -> (bool, u8, bool, Reverse<i32>, Reverse<String>) {
    let scheduled = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
    let phase = match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        _ => 2,
    };
    let restarts = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|c| c.iter().map(|c| c.restart_count).max().unwrap_or(0))
        .unwrap_or(0);
    let created = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    (
        scheduled,
        phase,
        is_ready(p),
        Reverse(restarts),
        Reverse(created),
    )
}

/// Decide for `rs` given every pod in its namespace.
pub fn plan(rs: &ReplicaSet, namespace_pods: &[Pod]) -> ReplicaSetPlan {
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let spec = rs.spec.clone().unwrap_or_default();
    let want = spec.replicas.unwrap_or(1).max(0) as usize;
    // ControllerRef: adopt matching orphans, release owned pods the selector no longer matches.
    let claim = owner::claim(
        &rs.metadata,
        &spec.selector,
        namespace_pods.iter().map(|p| &p.metadata),
    );
    let owned: Vec<&Pod> = namespace_pods
        .iter()
        .filter(|p| {
            let name = p.metadata.name.clone().unwrap_or_default();
            if claim.release.contains(&name) {
                return false;
            }
            claim.adopt.contains(&name) && is_active(p) || owner::controlled_by(&p.metadata, &uid)
        })
        .collect();
    let adopt: Vec<String> = claim
        .adopt
        .into_iter()
        .filter(|n| owned.iter().any(|p| p.metadata.name.as_ref() == Some(n)))
        .collect();
    let mut active: Vec<&Pod> = owned.iter().copied().filter(|p| is_active(p)).collect();
    let mut plan = ReplicaSetPlan {
        adopt,
        release: claim.release,
        ..Default::default()
    };
    if rs.metadata.deletion_timestamp.is_none() {
        if active.len() < want {
            let missing = (want - active.len()).min(MAX_BURST);
            for _ in 0..missing {
                plan.create.push(pod_from_template(rs));
            }
        } else if active.len() > want {
            active.sort_by_key(|p| deletion_rank(p));
            plan.delete = active[..active.len() - want]
                .iter()
                .map(|p| p.metadata.name.clone().unwrap_or_default())
                .collect();
        }
    }
    let ready = active.iter().filter(|p| is_ready(p)).count() as i32;
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully_labeled = active
        .iter()
        .filter(|p| {
            let labels = p.metadata.labels.clone().unwrap_or_default();
            template_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
        })
        .count() as i32;
    plan.status = ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: Some(fully_labeled),
        ready_replicas: Some(ready),
        available_replicas: Some(ready),
        observed_generation: rs.metadata.generation,
        conditions: None,
        terminating_replicas: None,
    };
    plan
}

/// A new pod from the ReplicaSet's template, controlled by it.
pub fn pod_from_template(rs: &ReplicaSet) -> ApiPod {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let name = rs.metadata.name.clone().unwrap_or_default();
    ApiPod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: rs.metadata.namespace.clone(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            owner_references: Some(vec![owner::controller_ref(
                "apps/v1",
                "ReplicaSet",
                &rs.metadata,
            )]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}
