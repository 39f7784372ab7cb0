//! Placing pods on nodes: filter the nodes a pod may run on, score the rest, pick the best —
//! the decision half of kube-scheduler, as pure functions over the objects the scheduler loop
//! caches. Binding (the binding subresource) and the retry queue live in the loop.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Toleration};
use yun_agent::quantity;

use crate::cached::{Container, Pod};
use crate::selector::{self, Labels};

pub mod cache;
pub mod preemption;
#[cfg(test)]
mod tests;
pub mod unschedulable;
pub mod volumes;

/// What a pod asks for (or a node offers / has in use): millicores, bytes, pod slots.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Resources {
    pub cpu_millis: i64,
    pub memory_bytes: i64,
    pub pods: i64,
}

impl std::ops::AddAssign for Resources {
    fn add_assign(&mut self, o: Resources) {
        self.cpu_millis += o.cpu_millis;
        self.memory_bytes += o.memory_bytes;
        self.pods += o.pods;
    }
}

impl std::ops::SubAssign for Resources {
    fn sub_assign(&mut self, o: Resources) {
        self.cpu_millis -= o.cpu_millis;
        self.memory_bytes -= o.memory_bytes;
        self.pods -= o.pods;
    }
}

type Quantities = BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>;

fn quantity_of<'a>(map: Option<&'a Quantities>, key: &str) -> Option<&'a str> {
    map.and_then(|m| m.get(key)).map(|q| q.0.as_str())
}

/// A pod's requests: the sum over its app containers, or the largest init container if that is
/// more (they run one at a time). A container with limits but no requests requests its limits.
pub fn pod_requests(pod: &Pod) -> Resources {
    requests_with_defaults(pod, Resources::default())
}

/// What scoring counts for a container that requests nothing (kube-scheduler's non-zero
/// defaults: 0.1 CPU, 200 MiB), so pods without requests still spread across nodes instead of
/// all scoring the same and piling onto the first.
const SCORING_DEFAULT: Resources = Resources {
    cpu_millis: 100,
    memory_bytes: 200 << 20,
    pods: 0,
};

/// [`pod_requests`] as scoring sees it: with [`SCORING_DEFAULT`] for what a container leaves out.
pub fn scoring_requests(pod: &Pod) -> Resources {
    requests_with_defaults(pod, SCORING_DEFAULT)
}

fn requests_with_defaults(pod: &Pod, default: Resources) -> Resources {
    let one = |c: &Container| Resources {
        cpu_millis: c.resources.cpu_millis.unwrap_or(default.cpu_millis),
        memory_bytes: c.resources.memory_bytes.unwrap_or(default.memory_bytes),
        pods: 0,
    };
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::default();
    };
    let mut sum = Resources::default();
    for c in &spec.containers {
        sum += one(c);
    }
    for c in spec.init_containers.iter().flatten() {
        let r = one(c);
        sum.cpu_millis = sum.cpu_millis.max(r.cpu_millis);
        sum.memory_bytes = sum.memory_bytes.max(r.memory_bytes);
    }
    sum.pods = 1;
    sum
}

/// A node's allocatable resources (capacity when allocatable is not reported).
pub fn allocatable(node: &Node) -> Resources {
    let status = node.status.as_ref();
    let map = status.and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
    Resources {
        cpu_millis: quantity_of(map, "cpu")
            .and_then(|q| quantity::millicores(q).ok())
            .unwrap_or(0),
        memory_bytes: quantity_of(map, "memory")
            .and_then(|q| quantity::bytes(q).ok())
            .unwrap_or(0),
        pods: quantity_of(map, "pods")
            .and_then(|q| q.parse().ok())
            .unwrap_or(110),
    }
}

/// A pod placed on a node: the cached pod itself (shared with the informer, not copied —
/// the scheduler holds one per running pod in the cluster) and its requests, summed once.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    pub pod: Arc<Pod>,
    pub requests: Resources,
    /// The requests scoring counts ([`scoring_requests`]).
    pub scoring: Resources,
}

impl Placed {
    pub fn of(pod: &Arc<Pod>) -> Placed {
        Placed {
            pod: pod.clone(),
            requests: pod_requests(pod),
            scoring: scoring_requests(pod),
        }
    }

    fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("default")
    }

    fn labels(&self) -> &Labels {
        self.pod.metadata.labels.as_ref().unwrap_or(&NO_LABELS)
    }
}

/// A node and the pods bound to it (not finished), keyed by "namespace/name", with their
/// requests summed as pods come and go — so a decision costs O(nodes), not O(nodes × pods).
#[derive(Debug, Clone)]
pub struct NodeInfo {
    node: Node,
    allocatable: Resources,
    pods: BTreeMap<String, Placed>,
    requested: Resources,
    scoring: Resources,
}

static NO_LABELS: Labels = Labels::new();

impl NodeInfo {
    pub fn new(node: Node) -> NodeInfo {
        NodeInfo {
            allocatable: allocatable(&node),
            node,
            pods: BTreeMap::new(),
            requested: Resources::default(),
            scoring: Resources::default(),
        }
    }

    /// A node with these pods on it (keyed by their namespace/name).
    pub fn with_pods(node: Node, pods: &[Pod]) -> NodeInfo {
        let mut info = NodeInfo::new(node);
        for p in pods {
            let key = format!(
                "{}/{}",
                p.metadata.namespace.as_deref().unwrap_or("default"),
                p.metadata.name.as_deref().unwrap_or("")
            );
            info.add_pod(&key, Placed::of(&Arc::new(p.clone())));
        }
        info
    }

    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or("")
    }

    /// Replace the Node object (its status or spec changed), keeping the pods.
    pub fn set_node(&mut self, node: Node) {
        self.allocatable = allocatable(&node);
        self.node = node;
    }

    fn labels(&self) -> &Labels {
        self.node.metadata.labels.as_ref().unwrap_or(&NO_LABELS)
    }

    pub fn requested(&self) -> Resources {
        self.requested
    }

    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// Count a pod on this node (replacing what was counted under the same key).
    pub fn add_pod(&mut self, key: &str, pod: Placed) {
        self.remove_pod(key);
        self.requested += pod.requests;
        self.scoring += pod.scoring;
        self.pods.insert(key.to_string(), pod);
    }

    fn into_pods(self) -> BTreeMap<String, Placed> {
        self.pods
    }

    pub fn remove_pod(&mut self, key: &str) {
        if let Some(old) = self.pods.remove(key) {
            self.requested -= old.requests;
            self.scoring -= old.scoring;
        }
    }
}

/// Why a node was filtered out, in kube-scheduler's words.
fn filter<'a>(
    pod: &Pod,
    want: Resources,
    info: &NodeInfo,
    all: impl IntoIterator<Item = &'a NodeInfo> + Clone,
) -> Result<(), String> {
    let node = &info.node;
    let spec = pod.spec.as_ref();
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    if !ready {
        return Err("node(s) were not ready".into());
    }
    let tolerations = spec.and_then(|s| s.tolerations.as_deref()).unwrap_or(&[]);
    // A cordoned node takes only pods that tolerate its cordon (daemon pods do), as
    // kube-scheduler's NodeUnschedulable plugin judges it.
    let cordon_tolerated = tolerations
        .iter()
        .any(|t| tolerates(t, "node.kubernetes.io/unschedulable", None, "NoSchedule"));
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) && !cordon_tolerated {
        return Err("node(s) were unschedulable".into());
    }
    for taint in node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[])
    {
        if taint.effect == "PreferNoSchedule" {
            continue;
        }
        if !tolerations
            .iter()
            .any(|t| tolerates(t, &taint.key, taint.value.as_deref(), &taint.effect))
        {
            return Err(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or("")
            ));
        }
    }
    let labels = info.labels();
    if let Some(sel) = spec.and_then(|s| s.node_selector.as_ref()) {
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return Err("node(s) didn't match Pod's node affinity/selector".into());
        }
    }
    let required = spec
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    if let Some(req) = required {
        // Terms are ORed; the expressions of one term are ANDed.
        let ok = req.node_selector_terms.iter().any(|term| {
            term.match_expressions
                .iter()
                .flatten()
                .all(|e| selector::node_requirement(e, labels))
                && term.match_fields.iter().flatten().all(|f| {
                    let fields: Labels = [("metadata.name".to_string(), info.name().to_string())]
                        .into_iter()
                        .collect();
                    selector::node_requirement(f, &fields)
                })
        });
        if !ok {
            return Err("node(s) didn't match Pod's node affinity/selector".into());
        }
    }
    let free = info.allocatable;
    let used = info.requested;
    if used.pods + 1 > free.pods {
        return Err("Too many pods".into());
    }
    if want.cpu_millis > 0 && used.cpu_millis + want.cpu_millis > free.cpu_millis {
        return Err("Insufficient cpu".into());
    }
    if want.memory_bytes > 0 && used.memory_bytes + want.memory_bytes > free.memory_bytes {
        return Err("Insufficient memory".into());
    }
    // Required pod anti-affinity: no pod matching the term in the same topology domain.
    let anti = spec
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or(&[]);
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    for term in anti {
        let Some(domain) = labels.get(&term.topology_key) else {
            continue;
        };
        let sel = term.label_selector.clone().unwrap_or_default();
        let conflict = all
            .clone()
            .into_iter()
            .filter(|other| other.labels().get(&term.topology_key) == Some(domain))
            .flat_map(|other| other.pods.values())
            .any(|p| {
                p.namespace() == namespace
                    && p.pod.metadata.uid != pod.metadata.uid
                    && selector::matches(&sel, p.labels())
            });
        if conflict {
            return Err("node(s) didn't match pod anti-affinity rules".into());
        }
    }
    Ok(())
}

pub(crate) fn tolerates(t: &Toleration, key: &str, value: Option<&str>, effect: &str) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != effect)
    {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => t.key.as_deref().is_none_or(|k| k.is_empty() || k == key),
        _ => {
            t.key.as_deref() == Some(key) && t.value.as_deref().unwrap_or("") == value.unwrap_or("")
        }
    }
}

/// Score 0..=200: least-allocated (more free capacity after placing the pod is better) plus
/// balanced (CPU and memory used in similar proportions is better).
fn score(want: Resources, info: &NodeInfo) -> i64 {
    let alloc = info.allocatable;
    let mut used = info.scoring;
    used += want;
    let frac = |used: i64, total: i64| {
        if total <= 0 {
            1.0
        } else {
            (used as f64 / total as f64).min(1.0)
        }
    };
    let cpu = frac(used.cpu_millis, alloc.cpu_millis);
    let mem = frac(used.memory_bytes, alloc.memory_bytes);
    let least_allocated = ((1.0 - cpu) + (1.0 - mem)) / 2.0 * 100.0;
    let balanced = (1.0 - (cpu - mem).abs()) * 100.0;
    (least_allocated + balanced).round() as i64
}

/// The scheduler's verdict on a pod that fits nowhere: the reasons with how many nodes gave
/// each, e.g. "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) were not ready."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unschedulable {
    pub message: String,
}

impl std::fmt::Display for Unschedulable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The node for `pod`: the best-scoring node that passes every filter (ties go to the name
/// that sorts first, so the choice is stable).
pub fn pick_node<'a, I>(pod: &Pod, nodes: I) -> Result<String, Unschedulable>
where
    I: IntoIterator<Item = &'a NodeInfo> + Clone,
{
    pick_node_with(pod, nodes, &|_| Ok(()))
}

/// [`pick_node`] with one more filter (the pod's volumes').
pub fn pick_node_with<'a, I>(
    pod: &Pod,
    nodes: I,
    extra: &dyn Fn(&NodeInfo) -> Result<(), String>,
) -> Result<String, Unschedulable>
where
    I: IntoIterator<Item = &'a NodeInfo> + Clone,
{
    let want = pod_requests(pod);
    let scoring = scoring_requests(pod);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut best: Option<(i64, &str)> = None;
    let mut count = 0;
    for info in nodes.clone() {
        count += 1;
        match filter(pod, want, info, nodes.clone()).and_then(|()| extra(info)) {
            Ok(()) => {
                let s = score(scoring, info);
                let better = match best {
                    None => true,
                    Some((bs, bn)) => s > bs || (s == bs && info.name() < bn),
                };
                if better {
                    best = Some((s, info.name()));
                }
            }
            Err(reason) => *reasons.entry(reason).or_default() += 1,
        }
    }
    match best {
        Some((_, name)) => Ok(name.to_string()),
        None => Err(unschedulable(count, &reasons)),
    }
}

/// "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) were not ready."
pub fn unschedulable(count: usize, reasons: &BTreeMap<String, usize>) -> Unschedulable {
    let detail = reasons
        .iter()
        .map(|(r, n)| format!("{n} {r}"))
        .collect::<Vec<_>>()
        .join(", ");
    let message = if count == 0 {
        "0/0 nodes are available: no nodes registered.".to_string()
    } else {
        format!("0/{count} nodes are available: {detail}.")
    };
    Unschedulable { message }
}
