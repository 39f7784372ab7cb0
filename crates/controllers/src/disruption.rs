//! The disruption decision: a PodDisruptionBudget's status from the pods it selects and the
//! scale of their controllers (kube-controller-manager's disruption controller).
//!
//! - `desiredHealthy`: minAvailable as an int; a percent of the expected pods (rounded up);
//!   or the expected pods less maxUnavailable (itself rounded up when a percent), floored at 0.
//! - `expectedPods`: for an int minAvailable, the pods selected; otherwise the sum of the
//!   `spec.replicas` of the pods' controllers (each counted once). A pod with no controller
//!   whose scale is known (a bare pod, a Job's pod) expects itself: it counts as one.
//! - `currentHealthy`: selected pods that are Ready, not being deleted and not named in
//!   `disruptedPods` (an eviction just spent a disruption on them).
//! - `disruptedPods` entries last until the pod is gone or being deleted, at most
//!   [`DELETION_TIMEOUT`]; after that an eviction that never deleted its pod is forgotten.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use crate::cached::Pod;
use crate::replicaset::is_ready;

/// How long an eviction's pod may take to start going before it counts again.
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

/// An int, or a percent of `total`, rounded up (kube's `GetScaledValueFromIntOrPercent` with
/// roundUp, which the disruption controller uses for both fields). None for a bad percent.
pub fn scaled(v: &IntOrString, total: i32) -> Option<i32> {
    match v {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(s) => {
            let p: i64 = s.strip_suffix('%')?.parse().ok()?;
            let total = i64::from(total);
            Some(((p * total + 99) / 100).clamp(0, i64::from(i32::MAX)) as i32)
        }
    }
}

/// Whether a budget selects `pod`: policy/v1's meaning, no selector selects nothing.
pub fn selects(pdb: &PodDisruptionBudget, pod: &Pod) -> bool {
    let Some(sel) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    pod.metadata.namespace == pdb.metadata.namespace
        && crate::selector::matches(
            sel,
            pod.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()),
        )
}

/// The budget's new status and when to look again (the earliest disruptedPods expiry).
pub struct Decision {
    pub status: PodDisruptionBudgetStatus,
    pub recheck: Option<Duration>,
}

/// Decide the status of `pdb` over the pods it selects; `scale` gives, for a pod's
/// controller, the uid of the object whose scale counts and its replicas (a ReplicaSet's
/// Deployment's, so the sets of a rollout count once); None when it has no known scale.
pub fn decide(
    pdb: &PodDisruptionBudget,
    pods: &[&Pod],
    scale: impl Fn(&OwnerReference) -> Option<(String, i32)>,
    now: Timestamp,
) -> Decision {
    let spec = pdb.spec.clone().unwrap_or_default();
    let expected_scale = || {
        let mut seen = HashSet::new();
        let mut total = 0i32;
        for p in pods {
            match crate::owner::controller_of(&p.metadata).and_then(&scale) {
                Some((uid, n)) => {
                    if seen.insert(uid) {
                        total = total.saturating_add(n.max(0));
                    }
                }
                None => total = total.saturating_add(1),
            }
        }
        total
    };
    let (expected, desired) = match (&spec.max_unavailable, &spec.min_available) {
        (Some(max), _) => {
            let expected = expected_scale();
            let max = scaled(max, expected).unwrap_or(0);
            (expected, (expected - max).max(0))
        }
        (None, Some(IntOrString::Int(n))) => (pods.len() as i32, *n),
        (None, Some(min)) => {
            let expected = expected_scale();
            (expected, scaled(min, expected).unwrap_or(expected))
        }
        (None, None) => (0, 0),
    };
    let (disrupted, recheck) = live_disruptions(pdb, pods, now);
    let healthy = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or("")))
        .filter(|p| is_ready(p))
        .count() as i32;
    let allowed = (healthy - desired).max(0);
    let generation = pdb.metadata.generation.unwrap_or(0);
    let old = pdb.status.as_ref();
    let condition = allowed_condition(old, generation, allowed > 0, now);
    Decision {
        status: PodDisruptionBudgetStatus {
            observed_generation: Some(generation),
            disruptions_allowed: allowed,
            current_healthy: healthy,
            desired_healthy: desired,
            expected_pods: expected,
            disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
            conditions: Some(vec![condition]),
        },
        recheck,
    }
}

/// The disruptedPods entries still pending: their pod is selected, not yet being deleted,
/// and the entry is younger than [`DELETION_TIMEOUT`].
fn live_disruptions(
    pdb: &PodDisruptionBudget,
    pods: &[&Pod],
    now: Timestamp,
) -> (BTreeMap<String, Time>, Option<Duration>) {
    let mut live = BTreeMap::new();
    let mut recheck: Option<Duration> = None;
    let Some(entries) = pdb.status.as_ref().and_then(|s| s.disrupted_pods.as_ref()) else {
        return (live, None);
    };
    for p in pods {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = p.metadata.name.clone().unwrap_or_default();
        let Some(at) = entries.get(&name) else {
            continue;
        };
        let expires = at.0 + DELETION_TIMEOUT;
        let left = expires.duration_since(now);
        if left.is_positive() {
            let left = Duration::try_from(left).unwrap_or_default();
            recheck = Some(recheck.map_or(left, |r| r.min(left)));
            live.insert(name, at.clone());
        }
    }
    (live, recheck)
}

/// `DisruptionAllowed`: True/SufficientPods or False/InsufficientPods; the transition time
/// stays while the status does, so an unchanged budget is written no more.
fn allowed_condition(
    old: Option<&PodDisruptionBudgetStatus>,
    generation: i64,
    allowed: bool,
    now: Timestamp,
) -> Condition {
    let (status, reason) = if allowed {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    let since = old
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "DisruptionAllowed"))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: "DisruptionAllowed".into(),
        status: status.into(),
        reason: reason.into(),
        message: String::new(),
        observed_generation: Some(generation),
        last_transition_time: since,
    }
}

#[cfg(test)]
#[path = "disruption_tests.rs"]
mod tests;
