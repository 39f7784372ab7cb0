//! The DaemonSet controller's decision: which nodes should run a daemon pod (the template's
//! node selector, required node affinity and tolerations against each node's labels and
//! taints), the pods to create or delete so each such node runs one, the rolling update of old
//! pods within `maxUnavailable`/`maxSurge`, and the status kubectl reads.
//!
//! As on Kubernetes since 1.12, a daemon pod is placed by the scheduler: it is created with a
//! required node affinity for its node's name, and tolerates what daemons tolerate (a not-ready
//! or unreachable node, resource pressure, a cordoned node).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    Pod as ApiPod, PodSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::cached::Pod;
use crate::owner;
use crate::replicaset::{is_active, is_ready};
use crate::selector::{self, Labels};

/// The label carrying the template's hash on each daemon pod (Kubernetes keeps the hash of
/// the ControllerRevision there).
pub const HASH_LABEL: &str = "controller-revision-hash";

/// The tolerations every daemon pod gets (the DaemonSet controller's defaults).
fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    let mut out = vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        out.push(t("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    out
}

/// What to do for one DaemonSet.
#[derive(Debug, Clone, Default)]
pub struct DaemonSetPlan {
    /// New pods (with generateName), each bound by affinity to its node.
    pub create: Vec<ApiPod>,
    /// Names of pods to delete.
    pub delete: Vec<String>,
    /// Matching orphans to adopt and owned pods no longer matched, to release.
    pub adopt: Vec<String>,
    pub release: Vec<String>,
    pub status: DaemonSetStatus,
    /// Look again after this long (a pod becomes available after minReadySeconds).
    pub recheck: Option<Duration>,
}

/// Whether a daemon pod should be placed on a node (`run`), and whether one already there may
/// stay (`keep`): an untolerated NoSchedule taint stops new pods only, NoExecute both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    pub run: bool,
    pub keep: bool,
}

/// The daemon pod template's fit on `node`.
pub fn fit(spec: &PodSpec, node: &Node) -> Fit {
    let no = Fit {
        run: false,
        keep: false,
    };
    let labels: Labels = node.metadata.labels.clone().unwrap_or_default();
    if let Some(sel) = &spec.node_selector {
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return no;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    if let Some(req) = required {
        let name = node.metadata.name.clone().unwrap_or_default();
        let fields: Labels = [("metadata.name".to_string(), name)].into_iter().collect();
        let ok = req.node_selector_terms.iter().any(|term| {
            term.match_expressions
                .iter()
                .flatten()
                .all(|e| selector::node_requirement(e, &labels))
                && term
                    .match_fields
                    .iter()
                    .flatten()
                    .all(|f| selector::node_requirement(f, &fields))
        });
        if !ok {
            return no;
        }
    }
    let mut tolerations = spec.tolerations.clone().unwrap_or_default();
    tolerations.extend(daemon_tolerations(spec.host_network == Some(true)));
    let mut out = Fit {
        run: true,
        keep: true,
    };
    for taint in node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[])
    {
        let tolerated = tolerations.iter().any(|t| {
            crate::scheduler::tolerates(t, &taint.key, taint.value.as_deref(), &taint.effect)
        });
        match taint.effect.as_str() {
            _ if tolerated => {}
            "NoSchedule" => out.run = false,
            "NoExecute" => return no,
            _ => {}
        }
    }
    out
}

/// The node a daemon pod is for: where it runs, or the node its affinity names.
fn node_of(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_fields.iter().flatten().find_map(|f| {
            (f.key == "metadata.name" && f.operator == "In")
                .then(|| f.values.as_ref()?.first().cloned())
                .flatten()
        })
    })
}

/// Ready for `min_ready` seconds at `now` (unix seconds); else how long until it is, if ready.
pub(crate) fn available(p: &Pod, min_ready: i64, now: i64) -> Result<(), Option<Duration>> {
    if !is_ready(p) {
        return Err(None);
    }
    if min_ready <= 0 {
        return Ok(());
    }
    let since = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0.as_second());
    match since {
        Some(t) if t + min_ready <= now => Ok(()),
        Some(t) => Err(Some(Duration::from_secs((t + min_ready - now) as u64))),
        None => Ok(()),
    }
}

/// An int-or-percent of `total`, percentages rounded up (as Kubernetes scales both
/// maxUnavailable and maxSurge for DaemonSets).
fn scaled(v: Option<&IntOrString>, total: i32) -> i32 {
    match v {
        None => 0,
        Some(IntOrString::Int(n)) => (*n).max(0),
        Some(IntOrString::String(s)) => {
            let p: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            ((p.max(0) * i64::from(total) + 99) / 100) as i32
        }
    }
}

/// The daemon pod for `node`, from the template, with its hash label, owner, node affinity
/// and the daemon tolerations.
pub fn pod_for_node(ds: &DaemonSet, hash: &str, node: &str) -> ApiPod {
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.into());
    let mut spec = template.spec.unwrap_or_default();
    // The controller has judged the template's own required terms against the node; the pod
    // requires just that node (Kubernetes replaces them the same way).
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.into()]),
            }]),
            ..Default::default()
        }],
    });
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for t in daemon_tolerations(spec.host_network == Some(true)) {
        if !tolerations
            .iter()
            .any(|have| have.key == t.key && have.effect == t.effect)
        {
            tolerations.push(t);
        }
    }
    let name = ds.metadata.name.clone().unwrap_or_default();
    ApiPod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tmeta.annotations,
            owner_references: Some(vec![owner::controller_ref(
                "apps/v1",
                "DaemonSet",
                &ds.metadata,
            )]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

fn hash_of(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(HASH_LABEL))
        .map(String::as_str)
}

/// The node counts of a DaemonSet's status.
#[derive(Default)]
struct Counts {
    desired: i32,
    current: i32,
    misscheduled: i32,
    ready: i32,
    updated: i32,
    available: i32,
}

impl Counts {
    /// Every count explicit, zeros too, so the status reads the same whether or not a count
    /// was ever non-zero (the writer, `loops::pods::write_status`, also nulls dropped fields).
    fn status(&self, generation: Option<i64>) -> DaemonSetStatus {
        DaemonSetStatus {
            observed_generation: generation,
            desired_number_scheduled: self.desired,
            current_number_scheduled: self.current,
            number_misscheduled: self.misscheduled,
            number_ready: self.ready,
            updated_number_scheduled: Some(self.updated),
            number_available: Some(self.available),
            number_unavailable: Some(self.desired - self.available),
            ..Default::default()
        }
    }
}

/// Decide for `ds` given the cluster's nodes and every pod in its namespace, at `now` (unix
/// seconds).
pub fn plan(ds: &DaemonSet, nodes: &[Node], namespace_pods: &[Pod], now: i64) -> DaemonSetPlan {
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let spec = ds.spec.clone().unwrap_or_default();
    let template_spec = spec.template.spec.clone().unwrap_or_default();
    // The hash of the template's ControllerRevision (`NAME-HASH`), which moves with the
    // collision count when a name was taken.
    let collisions = ds.status.as_ref().and_then(|s| s.collision_count);
    let hash = crate::revision::hash(&spec.template, collisions.unwrap_or(0));
    let min_ready = i64::from(spec.min_ready_seconds.unwrap_or(0));
    let claim = owner::claim(
        &ds.metadata,
        &spec.selector,
        namespace_pods.iter().map(|p| &p.metadata),
    );
    let owned: Vec<&Pod> = namespace_pods
        .iter()
        .filter(|p| {
            let n = name(p);
            !claim.release.contains(&n)
                && (claim.adopt.contains(&n) && is_active(p)
                    || owner::controlled_by(&p.metadata, &uid))
        })
        .collect();
    let mut plan = DaemonSetPlan {
        adopt: claim
            .adopt
            .into_iter()
            .filter(|n| owned.iter().any(|p| p.metadata.name.as_ref() == Some(n)))
            .collect(),
        release: claim.release,
        ..Default::default()
    };
    // Live pods by node; failed ones are deleted and replaced (a later pass creates).
    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    let mut failed_on: HashSet<String> = HashSet::new();
    for p in &owned {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let node = node_of(p).unwrap_or_default();
        if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed") {
            plan.delete.push(name(p));
            failed_on.insert(node);
            continue;
        }
        if is_active(p) {
            by_node.entry(node).or_default().push(p);
        }
    }
    let dying = ds.metadata.deletion_timestamp.is_some();
    let mut count = Counts::default();
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    let mut old_on_wanted: Vec<(&str, &Pod, bool)> = Vec::new(); // (node, old pod, new one there too)
    let mut unavailable = 0;
    let mut new_pods_unavailable_beside_old = 0;
    let known: HashSet<&str> = nodes
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    for node in nodes {
        let node_name = node.metadata.name.clone().unwrap_or_default();
        let f = fit(&template_spec, node);
        let mut pods = by_node.remove(&node_name).unwrap_or_default();
        if !f.run {
            if !pods.is_empty() {
                if !f.keep || dying {
                    plan.delete.extend(pods.iter().map(|p| name(p)));
                }
                count.misscheduled += 1;
            }
            continue;
        }
        count.desired += 1;
        if pods.is_empty() {
            unavailable += 1;
            if !dying && !failed_on.contains(&node_name) {
                plan.create.push(pod_for_node(ds, &hash, &node_name));
            }
            continue;
        }
        count.current += 1;
        // Newest template first, then the oldest pod: the one to keep.
        pods.sort_by_key(|p| {
            (
                hash_of(p) != Some(hash.as_str()),
                p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                name(p),
            )
        });
        let new: Vec<&&Pod> = pods
            .iter()
            .filter(|p| hash_of(p) == Some(hash.as_str()))
            .collect();
        let old: Vec<&&Pod> = pods
            .iter()
            .filter(|p| hash_of(p) != Some(hash.as_str()))
            .collect();
        // More than one pod of the same kind on a node: keep the first.
        for extra in new.iter().skip(1).chain(old.iter().skip(1)) {
            plan.delete.push(name(extra));
        }
        let first_new = new.first().copied().copied();
        let first_old = old.first().copied().copied();
        // The status speaks of the node's oldest pod, as Kubernetes' does: a node with an old
        // pod and its surge replacement counts as available but not updated, so a rollout is
        // reported done only once every node's remaining pod is new and available.
        let oldest = pods
            .iter()
            .min_by_key(|p| (p.metadata.creation_timestamp.as_ref().map(|t| t.0), name(p)))
            .expect("pods is not empty");
        if hash_of(oldest) == Some(hash.as_str()) {
            count.updated += 1;
        }
        if is_ready(oldest) {
            count.ready += 1;
        }
        match available(oldest, min_ready, now) {
            Ok(()) => count.available += 1,
            Err(Some(wait)) => plan.recheck = Some(plan.recheck.map_or(wait, |r| r.min(wait))),
            Err(None) => {}
        }
        // For the update's budget, a node is down when none of its pods is available.
        let node_up = [first_new, first_old]
            .into_iter()
            .flatten()
            .any(|p| available(p, min_ready, now).is_ok());
        if !node_up {
            unavailable += 1;
        }
        if let Some(old_pod) = first_old {
            match first_new {
                Some(new_pod) if available(new_pod, min_ready, now).is_ok() => {
                    // Surged: the replacement is available, the old pod goes.
                    plan.delete.push(name(old_pod));
                }
                Some(_) => {
                    new_pods_unavailable_beside_old += 1;
                    old_on_wanted.push((
                        node.metadata.name.as_deref().unwrap_or(""),
                        old_pod,
                        true,
                    ));
                }
                None => old_on_wanted.push((
                    node.metadata.name.as_deref().unwrap_or(""),
                    old_pod,
                    false,
                )),
            }
        }
    }
    // Pods on nodes that are gone, or for no node at all.
    for (node, pods) in by_node {
        if !known.contains(node.as_str()) {
            plan.delete.extend(pods.iter().map(|p| name(p)));
        }
    }
    if rolling && !dying {
        let desired = count.desired;
        let rolling_update = spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref());
        let max_surge = scaled(rolling_update.and_then(|r| r.max_surge.as_ref()), desired);
        let max_unavailable = scaled(
            rolling_update.and_then(|r| r.max_unavailable.as_ref()),
            desired,
        );
        if max_surge > 0 {
            // Surge: a new pod beside each old one, up to maxSurge at a time; an old pod
            // that is not available anyway goes at once.
            let mut surging = new_pods_unavailable_beside_old;
            for (node, old_pod, has_new) in &old_on_wanted {
                if *has_new {
                    continue;
                }
                if available(old_pod, min_ready, now).is_err() {
                    plan.delete.push(name(old_pod));
                } else if surging < max_surge {
                    surging += 1;
                    plan.create.push(pod_for_node(ds, &hash, node));
                }
            }
        } else {
            // Delete old pods: the unavailable ones at once, then available ones while the
            // number of nodes without an available pod stays within maxUnavailable.
            let mut budget = max_unavailable - unavailable;
            let (down, up): (Vec<_>, Vec<_>) = old_on_wanted
                .iter()
                .partition(|(_, p, _)| available(p, min_ready, now).is_err());
            for (_, p, _) in down {
                plan.delete.push(name(p));
            }
            for (_, p, _) in up {
                if budget <= 0 {
                    break;
                }
                budget -= 1;
                plan.delete.push(name(p));
            }
        }
    }
    plan.status = count.status(ds.metadata.generation);
    plan.status.collision_count = collisions;
    plan.delete.sort();
    plan.delete.dedup();
    plan
}
