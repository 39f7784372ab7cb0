//! Preemption, as kube-scheduler's DefaultPreemption decides it: a pod that fits nowhere may
//! take a node from pods of lower priority. On each node where removing every lower-priority
//! pod would let it fit, as many of those pods as possible are spared again (those whose
//! eviction would break a PodDisruptionBudget first, then the rest, highest priority first);
//! the rest are the victims. The node chosen breaks the fewest budgets, then has the
//! lowest-priority victims, then the smallest sum of their priorities, then the fewest.

use std::sync::Arc;

use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use super::{filter, pod_requests, NodeInfo, Placed};
use crate::cached::Pod;

/// A pod's priority (0 when admission left none).
pub fn priority(p: &Pod) -> i32 {
    p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Whether a pod may preempt others (`preemptionPolicy: Never` may not).
pub fn may_preempt(p: &Pod) -> bool {
    p.spec.as_ref().and_then(|s| s.preemption_policy.as_deref()) != Some("Never")
}

/// The pods a preemption evicts and the node it frees for the preemptor.
#[derive(Debug, Clone)]
pub struct Preemption {
    pub node: String,
    /// "namespace/name" and the pod, lowest priority first.
    pub victims: Vec<(String, Arc<Pod>)>,
    /// How many of the victims break a budget.
    pub violations: usize,
}

/// What the budgets still allow: each budget and the disruptions it has left.
fn allowances(budgets: &[Arc<PodDisruptionBudget>]) -> Vec<(&PodDisruptionBudget, i32)> {
    budgets
        .iter()
        .map(|b| {
            let left = b
                .status
                .as_ref()
                .map(|s| s.disruptions_allowed)
                .unwrap_or(0);
            (&**b, left)
        })
        .collect()
}

/// Spend one disruption of every budget selecting `pod`: whether any went below zero.
fn breaks(pod: &Pod, left: &mut [(&PodDisruptionBudget, i32)]) -> bool {
    let mut broken = false;
    for (budget, n) in left.iter_mut() {
        if crate::disruption::selects(budget, pod) {
            *n -= 1;
            broken |= *n < 0;
        }
    }
    broken
}

/// The victims on `info` for `pod`, or None when evicting every lower-priority pod there would
/// still not make it fit.
fn victims_on<'a>(
    pod: &Pod,
    info: &NodeInfo,
    all: impl IntoIterator<Item = &'a NodeInfo> + Clone,
    budgets: &[Arc<PodDisruptionBudget>],
) -> Option<Preemption> {
    let want = pod_requests(pod);
    let mine = priority(pod);
    let mut lower: Vec<(String, Placed)> = info
        .pods
        .iter()
        .filter(|(_, p)| priority(&p.pod) < mine)
        .map(|(k, p)| (k.clone(), p.clone()))
        .collect();
    if lower.is_empty() {
        return None;
    }
    let mut trimmed = info.clone();
    for (key, _) in &lower {
        trimmed.remove_pod(key);
    }
    filter(pod, want, &trimmed, all.clone()).ok()?;
    // Highest priority first: the most valuable are spared first.
    lower.sort_by_key(|(key, p)| (std::cmp::Reverse(priority(&p.pod)), key.clone()));
    let mut left = allowances(budgets);
    let (breaking, keeping): (Vec<_>, Vec<_>) = lower
        .into_iter()
        .partition(|(_, p)| breaks(&p.pod, &mut left));
    let mut victims = Vec::new();
    let mut violations = 0;
    for (group, (key, placed)) in breaking
        .into_iter()
        .map(|v| (true, v))
        .chain(keeping.into_iter().map(|v| (false, v)))
    {
        trimmed.add_pod(&key, placed.clone());
        if filter(pod, want, &trimmed, all.clone()).is_err() {
            trimmed.remove_pod(&key);
            violations += usize::from(group);
            victims.push((key, placed.pod));
        }
    }
    victims.sort_by_key(|(key, p)| (priority(p), key.clone()));
    Some(Preemption {
        node: info.name().to_string(),
        victims,
        violations,
    })
}

/// The preemption that lets `pod` run, if any node offers one.
pub fn select<'a, I>(
    pod: &Pod,
    nodes: I,
    budgets: &[Arc<PodDisruptionBudget>],
) -> Option<Preemption>
where
    I: IntoIterator<Item = &'a NodeInfo> + Clone,
{
    if !may_preempt(pod) {
        return None;
    }
    nodes
        .clone()
        .into_iter()
        .filter_map(|info| victims_on(pod, info, nodes.clone(), budgets))
        .filter(|p| !p.victims.is_empty())
        .min_by_key(|p| {
            let priorities: Vec<i64> = p
                .victims
                .iter()
                .map(|(_, v)| i64::from(priority(v)))
                .collect();
            (
                p.violations,
                priorities.iter().max().copied().unwrap_or(i64::MIN),
                priorities.iter().sum::<i64>(),
                p.victims.len(),
                p.node.clone(),
            )
        })
}
