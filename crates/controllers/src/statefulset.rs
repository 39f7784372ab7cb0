//! The StatefulSet controller's decision: pods with stable names (`NAME-ORDINAL`) and
//! identities (hostname, subdomain of the governing Service), started and removed in ordinal
//! order (OrderedReady) or all at once (Parallel), replaced when they finish, and updated
//! from the highest ordinal down to the partition within `maxUnavailable` (RollingUpdate) or
//! only when deleted (OnDelete). Each pod carries the name of the ControllerRevision of its
//! template (see [`crate::revision`]).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaimVolumeSource, Pod as ApiPod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::cached::Pod;
use crate::daemonset::available;
use crate::owner;
use crate::replicaset::is_ready;

/// The label naming the ControllerRevision a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// The labels of a pod's identity.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// A revision by name and the template it records.
pub struct Revision<'a> {
    pub name: &'a str,
    pub template: &'a PodTemplateSpec,
}

/// What to do for one StatefulSet.
#[derive(Debug, Clone, Default)]
pub struct StatefulSetPlan {
    /// New pods, each with its final name.
    pub create: Vec<ApiPod>,
    /// Names of pods to delete.
    pub delete: Vec<String>,
    pub adopt: Vec<String>,
    pub release: Vec<String>,
    pub status: StatefulSetStatus,
    /// Look again after this long (a pod becomes available after minReadySeconds).
    pub recheck: Option<Duration>,
}

fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

fn running_and_ready(p: &Pod) -> bool {
    phase(p) == Some("Running") && is_ready(p)
}

fn revision_of(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_LABEL))
        .map(String::as_str)
}

/// The ordinal of a pod named `SET-N` (None for any other name).
fn ordinal(set: &str, pod: &str) -> Option<i32> {
    let n = pod.strip_prefix(set)?.strip_prefix('-')?;
    if n.is_empty() || (n.len() > 1 && n.starts_with('0')) {
        return None;
    }
    n.parse().ok().filter(|n| *n >= 0)
}

/// The claim a pod's volume `template` refers to: `TEMPLATE-POD`.
pub fn claim_name(template: &str, pod: &str) -> String {
    format!("{template}-{pod}")
}

/// The pod for `ordinal` from `revision`: the template's labels plus its identity and
/// revision, its hostname and subdomain, and a volume per claim template.
pub fn pod_for(set: &StatefulSet, ordinal: i32, revision: &Revision<'_>) -> ApiPod {
    let set_name = set.metadata.name.clone().unwrap_or_default();
    let pod_name = format!("{set_name}-{ordinal}");
    let template = revision.template.clone();
    let tmeta = template.metadata.unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.insert(REVISION_LABEL.into(), revision.name.into());
    labels.insert(POD_NAME_LABEL.into(), pod_name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    let mut spec = template.spec.unwrap_or_default();
    spec.hostname = Some(pod_name.clone());
    let spec_of_set = set.spec.as_ref();
    if let Some(service) = spec_of_set
        .and_then(|s| s.service_name.clone())
        .filter(|s| !s.is_empty())
    {
        spec.subdomain = Some(service);
    }
    for claim in spec_of_set
        .and_then(|s| s.volume_claim_templates.as_ref())
        .into_iter()
        .flatten()
    {
        let volume = claim.metadata.name.clone().unwrap_or_default();
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        volumes.retain(|v| v.name != volume);
        volumes.push(Volume {
            name: volume.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(&volume, &pod_name),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    ApiPod {
        metadata: ObjectMeta {
            name: Some(pod_name),
            namespace: set.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tmeta.annotations,
            owner_references: Some(vec![owner::controller_ref(
                "apps/v1",
                "StatefulSet",
                &set.metadata,
            )]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// maxUnavailable of a rolling update: an int, or a percentage of `replicas` rounded up; at
/// least 1.
fn max_unavailable(v: Option<&IntOrString>, replicas: i32) -> i32 {
    let n = match v {
        None => 1,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            let p: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            ((p.max(0) * i64::from(replicas) + 99) / 100) as i32
        }
    };
    n.max(1)
}

/// Decide for `set` given its current and update revisions and every pod in its namespace,
/// at `now` (unix seconds).
pub fn plan(
    set: &StatefulSet,
    current: &Revision<'_>,
    update: &Revision<'_>,
    namespace_pods: &[Pod],
    now: i64,
) -> StatefulSetPlan {
    let uid = set.metadata.uid.clone().unwrap_or_default();
    let set_name = set.metadata.name.clone().unwrap_or_default();
    let spec = set.spec.clone().unwrap_or_default();
    let claim = owner::claim(
        &set.metadata,
        &spec.selector,
        namespace_pods.iter().map(|p| &p.metadata),
    );
    // The set's members: pods it controls (or adopts) named SET-ORDINAL.
    let mut members: BTreeMap<i32, &Pod> = BTreeMap::new();
    for p in namespace_pods {
        let n = name(p);
        let ours = !claim.release.contains(&n)
            && (claim.adopt.contains(&n) || owner::controlled_by(&p.metadata, &uid));
        if let Some(ord) = ordinal(&set_name, &n).filter(|_| ours) {
            members.insert(ord, p);
        }
    }
    let mut plan = StatefulSetPlan {
        adopt: claim.adopt,
        release: claim.release,
        ..Default::default()
    };
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let start = spec
        .ordinals
        .as_ref()
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0);
    let wanted = start..start.saturating_add(replicas);
    let min_ready = i64::from(spec.min_ready_seconds.unwrap_or(0));
    let monotonic = spec.pod_management_policy.as_deref() != Some("Parallel");
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let rolling = strategy.type_.as_deref().unwrap_or("RollingUpdate") == "RollingUpdate";
    let partition = strategy
        .rolling_update
        .as_ref()
        .and_then(|r| r.partition)
        .unwrap_or(0);
    let healthy = |p: &Pod, plan: &mut StatefulSetPlan| -> bool {
        if terminating(p) || !running_and_ready(p) {
            return false;
        }
        match available(p, min_ready, now) {
            Ok(()) => true,
            Err(wait) => {
                if let Some(wait) = wait {
                    plan.recheck = Some(plan.recheck.map_or(wait, |r| r.min(wait)));
                }
                false
            }
        }
    };
    // A set being deleted makes no new pods and removes none: the garbage collector takes them.
    let mut waiting = set.metadata.deletion_timestamp.is_some();
    // 1. Every wanted ordinal runs a pod: create the missing, replace the finished; in order,
    //    one at a time, unless Parallel.
    for ord in wanted.clone() {
        if waiting {
            break;
        }
        match members.get(&ord) {
            None => {
                let revision = if rolling && ord < partition {
                    current
                } else {
                    update
                };
                plan.create.push(pod_for(set, ord, revision));
                waiting = monotonic;
            }
            Some(p) if matches!(phase(p), Some("Succeeded" | "Failed")) => {
                if !terminating(p) {
                    plan.delete.push(name(p));
                }
                waiting = monotonic;
            }
            Some(p) => waiting = monotonic && !healthy(p, &mut plan),
        }
    }
    // 2. Ordinals no longer wanted go, highest first; in order only once the rest are healthy.
    let condemned: Vec<&Pod> = members
        .iter()
        .rev()
        .filter(|(ord, _)| !wanted.contains(ord))
        .map(|(_, p)| *p)
        .collect();
    let first_unhealthy = members
        .iter()
        .filter(|(ord, _)| wanted.contains(ord))
        .chain(
            members
                .iter()
                .rev()
                .filter(|(ord, _)| !wanted.contains(ord)),
        )
        .map(|(_, p)| *p)
        .find(|p| !healthy(p, &mut StatefulSetPlan::default()))
        .map(name);
    for p in condemned {
        if waiting {
            break;
        }
        if terminating(p) {
            waiting = monotonic;
            continue;
        }
        if monotonic && !healthy(p, &mut plan) && first_unhealthy.as_deref() != Some(&name(p)) {
            waiting = true;
            break;
        }
        plan.delete.push(name(p));
        waiting = monotonic;
    }
    // 3. A rolling update replaces pods of older revisions from the highest ordinal down to the
    //    partition, keeping at most maxUnavailable of the wanted pods unhealthy.
    if rolling && !waiting {
        let budget = max_unavailable(
            strategy
                .rolling_update
                .as_ref()
                .and_then(|r| r.max_unavailable.as_ref()),
            replicas,
        );
        let mut unhealthy = wanted
            .clone()
            .filter(|ord| members.get(ord).is_none_or(|p| !healthy(p, &mut plan)))
            .count() as i32;
        for ord in wanted.clone().rev().filter(|ord| *ord >= partition) {
            if unhealthy >= budget {
                break;
            }
            let Some(p) = members.get(&ord) else {
                continue;
            };
            if revision_of(p) != Some(update.name) && !terminating(p) {
                if healthy(p, &mut plan) {
                    unhealthy += 1;
                }
                plan.delete.push(name(p));
            }
        }
    }
    plan.status = status(set, &members, &plan, current, update, rolling, |p| {
        healthy(p, &mut StatefulSetPlan::default())
    });
    plan
}

/// The status kubectl reads: counts of the members (and the pods this pass creates), and the
/// revisions. A rolling update whose pods are all updated and ready makes the update
/// revision current.
fn status(
    set: &StatefulSet,
    members: &BTreeMap<i32, &Pod>,
    plan: &StatefulSetPlan,
    current: &Revision<'_>,
    update: &Revision<'_>,
    rolling: bool,
    available: impl Fn(&Pod) -> bool,
) -> StatefulSetStatus {
    let mut s = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        current_revision: Some(current.name.into()),
        update_revision: Some(update.name.into()),
        collision_count: set.status.as_ref().and_then(|s| s.collision_count),
        ..Default::default()
    };
    let mut current_replicas = 0;
    let mut updated = 0;
    let (mut ready, mut avail) = (0, 0);
    let mut count = |revision: Option<&str>, live: bool| {
        if live && revision == Some(current.name) {
            current_replicas += 1;
        }
        if live && revision == Some(update.name) {
            updated += 1;
        }
    };
    for p in members.values() {
        s.replicas += 1;
        if running_and_ready(p) {
            ready += 1;
        }
        if available(p) {
            avail += 1;
        }
        count(revision_of(p), !terminating(p));
    }
    for p in &plan.create {
        s.replicas += 1;
        let labels = p.metadata.labels.as_ref();
        count(
            labels
                .and_then(|l| l.get(REVISION_LABEL))
                .map(String::as_str),
            true,
        );
    }
    s.ready_replicas = Some(ready);
    s.available_replicas = Some(avail);
    s.current_replicas = Some(current_replicas);
    s.updated_replicas = Some(updated);
    if rolling && updated == s.replicas && ready == s.replicas {
        s.current_replicas = Some(updated);
        s.current_revision = Some(update.name.into());
    }
    s
}
