//! ResourceQuota accounting as Kubernetes does it, shared by the API server (which admits a
//! request against its namespace's quotas and charges it to them) and the controllers (which
//! recompute each quota's usage from what exists). Pure functions over JSON objects:
//! - [`quantity`]: exact quantities in Kubernetes' canonical print;
//! - [`Evaluator`]: what one object of a kind costs (`pods`, `requests.cpu`, `count/…`), which
//!   of a quota's resources a kind answers for, whether an object is in a quota's scopes, and
//!   what a pod must declare under a compute quota;
//! - [`ResourceList`] arithmetic (add, mask, compare) as `quota.Add`/`Mask`/`LessThanOrEqual`.

mod pods;
pub mod quantity;

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde_json::Value;

pub use pods::{charge_ends, charged};
pub use quantity::Quantity;

/// Resource name → amount, ordered by name (the order Kubernetes prints them in).
pub type ResourceList = BTreeMap<String, Quantity>;

/// The scopes a quota may name (`spec.scopes`, `spec.scopeSelector`).
pub const SCOPES: [&str; 6] = [
    "Terminating",
    "NotTerminating",
    "BestEffort",
    "NotBestEffort",
    "PriorityClass",
    "CrossNamespacePodAffinity",
];

/// Names Kubernetes knows for quota without a `/` (kube's standard quota resources); anything
/// else must be qualified (`count/widgets.example.com`, `requests.example.com/gpu`).
pub const STANDARD: [&str; 19] = [
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.storage",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
    "resourcequotas",
    "services",
    "replicationcontrollers",
    "secrets",
    "persistentvolumeclaims",
    "configmaps",
    "services.nodeports",
    "services.loadbalancers",
];

/// Counted in whole numbers only.
pub fn is_integer_resource(name: &str) -> bool {
    matches!(
        name,
        "pods"
            | "resourcequotas"
            | "services"
            | "replicationcontrollers"
            | "secrets"
            | "configmaps"
            | "persistentvolumeclaims"
            | "services.nodeports"
            | "services.loadbalancers"
    ) || is_extended(name)
}

/// A name Kubernetes accepts in a quota's `hard` without a `/`.
pub fn is_standard(name: &str) -> bool {
    STANDARD.contains(&name)
        || name.starts_with("hugepages-")
        || name.starts_with("requests.hugepages-")
}

/// An extended resource (`example.com/gpu`): qualified, outside `kubernetes.io/`, and not a
/// `requests.` name itself.
fn is_extended(name: &str) -> bool {
    name.contains('/')
        && !name.starts_with("kubernetes.io/")
        && !name.contains(".kubernetes.io/")
        && !name.starts_with("requests.")
        && !name.starts_with("count/")
}

/// The resources pods are measured in (besides hugepages and extended resources).
const POD_RESOURCES: [&str; 11] = [
    "count/pods",
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
];

/// Of pod resources, those a scope other than BestEffort may constrain.
const POD_COMPUTE: [&str; 7] = [
    "pods",
    "cpu",
    "memory",
    "limits.cpu",
    "limits.memory",
    "requests.cpu",
    "requests.memory",
];

/// Whether `scope` can constrain the standard resource `name` (kube's
/// IsResourceQuotaScopeValidForResource).
pub fn scope_valid_for(scope: &str, name: &str) -> bool {
    match scope {
        "Terminating"
        | "NotTerminating"
        | "NotBestEffort"
        | "PriorityClass"
        | "CrossNamespacePodAffinity" => POD_COMPUTE.contains(&name),
        "BestEffort" => name == "pods",
        _ => true,
    }
}

/// `count/<plural>` or `count/<plural>.<group>`: the object-count name of a resource.
pub fn count_name(group: &str, plural: &str) -> String {
    if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    }
}

/// How a kind is charged to quota.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Evaluator {
    /// Pods: their count and compute resources, in scopes.
    Pods,
    /// Services: their count, node ports and load balancers.
    Services,
    /// PersistentVolumeClaims: their count and requested storage, per class too.
    Claims,
    /// Anything else: a count of objects (`count/<plural>.<group>`, and the legacy name of
    /// configmaps, secrets, resourcequotas and replicationcontrollers).
    Objects { group: String, plural: String },
}

/// A step of a quota's scope selector (a `spec.scopes` entry is `Exists`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeRequirement {
    pub scope: String,
    pub operator: String,
    pub values: Vec<String>,
}

impl Evaluator {
    pub fn for_resource(group: &str, plural: &str) -> Evaluator {
        match (group, plural) {
            ("", "pods") => Evaluator::Pods,
            ("", "services") => Evaluator::Services,
            ("", "persistentvolumeclaims") => Evaluator::Claims,
            _ => Evaluator::Objects {
                group: group.into(),
                plural: plural.into(),
            },
        }
    }

    /// The (group, plural) this evaluator measures.
    pub fn resource(&self) -> (&str, &str) {
        match self {
            Evaluator::Pods => ("", "pods"),
            Evaluator::Services => ("", "services"),
            Evaluator::Claims => ("", "persistentvolumeclaims"),
            Evaluator::Objects { group, plural } => (group, plural),
        }
    }

    /// Whether an update is charged too (the change in what it costs); creates always are.
    pub fn charges_updates(&self) -> bool {
        matches!(self, Evaluator::Services | Evaluator::Claims)
    }

    /// Which of `names` this kind's objects are measured in.
    pub fn matching<'a>(&self, names: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        names
            .into_iter()
            .filter(|n| self.measures(n))
            .cloned()
            .collect()
    }

    fn measures(&self, name: &str) -> bool {
        match self {
            Evaluator::Pods => {
                POD_RESOURCES.contains(&name)
                    || name.starts_with("hugepages-")
                    || name.starts_with("requests.hugepages-")
                    || name.strip_prefix("requests.").is_some_and(is_extended)
            }
            Evaluator::Services => matches!(
                name,
                "count/services" | "services" | "services.nodeports" | "services.loadbalancers"
            ),
            Evaluator::Claims => {
                matches!(
                    name,
                    "count/persistentvolumeclaims" | "persistentvolumeclaims" | "requests.storage"
                ) || name.ends_with(".storageclass.storage.k8s.io/requests.storage")
                    || name.ends_with(".storageclass.storage.k8s.io/persistentvolumeclaims")
            }
            Evaluator::Objects { group, plural } => {
                name == count_name(group, plural)
                    || (group.is_empty()
                        && name == plural
                        && matches!(
                            plural.as_str(),
                            "configmaps" | "secrets" | "resourcequotas" | "replicationcontrollers"
                        ))
            }
        }
    }

    /// What `obj` costs (kube's evaluator Usage); `now` decides whether a pod being deleted
    /// has outlived its grace period.
    pub fn usage(&self, obj: &Value, now: Timestamp) -> ResourceList {
        let (group, plural) = self.resource();
        let mut out = ResourceList::new();
        out.insert(count_name(group, plural), Quantity::count(1));
        match self {
            Evaluator::Pods => pods::usage(obj, now, &mut out),
            Evaluator::Services => {
                out.insert("services".into(), Quantity::count(1));
                let ports = obj
                    .pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let kind = obj.pointer("/spec/type").and_then(Value::as_str);
                if kind == Some("NodePort") {
                    out.insert(
                        "services.nodeports".into(),
                        Quantity::count(ports.len() as i64),
                    );
                }
                if kind == Some("LoadBalancer") {
                    let allocate = obj.pointer("/spec/allocateLoadBalancerNodePorts")
                        != Some(&Value::Bool(false));
                    // Without allocation only the ports that name a node port take one.
                    let n = ports
                        .iter()
                        .filter(|p| allocate || p.get("nodePort").and_then(Value::as_i64) > Some(0))
                        .count();
                    out.insert("services.nodeports".into(), Quantity::count(n as i64));
                    out.insert("services.loadbalancers".into(), Quantity::count(1));
                }
            }
            Evaluator::Claims => {
                out.insert("persistentvolumeclaims".into(), Quantity::count(1));
                let class = obj
                    .pointer("/spec/storageClassName")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !class.is_empty() {
                    out.insert(
                        format!("{class}.storageclass.storage.k8s.io/persistentvolumeclaims"),
                        Quantity::count(1),
                    );
                }
                if let Some(q) = obj
                    .pointer("/spec/resources/requests/storage")
                    .and_then(Quantity::from_json)
                {
                    out.insert("requests.storage".into(), q);
                    if !class.is_empty() {
                        out.insert(
                            format!("{class}.storageclass.storage.k8s.io/requests.storage"),
                            q,
                        );
                    }
                }
            }
            Evaluator::Objects { group, plural } => {
                if self.measures(plural) && group.is_empty() {
                    out.insert(plural.clone(), Quantity::count(1));
                }
            }
        }
        out
    }

    /// Whether `obj` is in scope `req`. Only pods have scopes: a scoped quota never counts
    /// another kind.
    pub fn in_scope(&self, req: &ScopeRequirement, obj: &Value) -> bool {
        match self {
            Evaluator::Pods => pods::in_scope(req, obj),
            _ => false,
        }
    }

    /// What a pod must declare under a quota of `required` resources: every container a
    /// request or limit for each of cpu and memory the quota constrains. Kube's message.
    pub fn constraints(&self, required: &[String], obj: &Value) -> Result<(), String> {
        match self {
            Evaluator::Pods => pods::constraints(required, obj),
            _ => Ok(()),
        }
    }
}

/// A quota's scope requirements: each of `spec.scopes` as Exists, then the scope selector's.
pub fn scope_requirements(spec: &Value) -> Vec<ScopeRequirement> {
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let mut out: Vec<ScopeRequirement> = strings(spec.get("scopes"))
        .into_iter()
        .map(|scope| ScopeRequirement {
            scope,
            operator: "Exists".into(),
            values: Vec::new(),
        })
        .collect();
    let exprs = spec
        .pointer("/scopeSelector/matchExpressions")
        .and_then(Value::as_array);
    for e in exprs.into_iter().flatten() {
        out.push(ScopeRequirement {
            scope: e
                .get("scopeName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .into(),
            operator: e
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or("")
                .into(),
            values: strings(e.get("values")),
        });
    }
    out
}

/// Whether a quota (its `status.hard` and spec's scopes) counts `obj` of this evaluator: it
/// constrains something the kind is measured in, and the object is in all its scopes.
pub fn matches(eval: &Evaluator, hard: &ResourceList, spec: &Value, obj: &Value) -> bool {
    !eval.matching(hard.keys()).is_empty()
        && scope_requirements(spec)
            .iter()
            .all(|r| eval.in_scope(r, obj))
}

/// A JSON map of quantities; Err names the first entry that is not one.
pub fn parse_list(v: Option<&Value>) -> Result<ResourceList, (String, Value)> {
    let mut out = ResourceList::new();
    for (k, q) in v.and_then(Value::as_object).into_iter().flatten() {
        match Quantity::from_json(q) {
            Some(n) => out.insert(k.clone(), n),
            None => return Err((k.clone(), q.clone())),
        };
    }
    Ok(out)
}

/// A list as JSON, each quantity in canonical form.
pub fn to_json(list: &ResourceList) -> Value {
    Value::Object(
        list.iter()
            .map(|(k, q)| (k.clone(), Value::String(q.to_string())))
            .collect(),
    )
}

/// `a + b`, key by key (a key of either is in the sum).
pub fn add(a: &ResourceList, b: &ResourceList) -> ResourceList {
    let mut out = a.clone();
    for (k, q) in b {
        let sum = out.get(k).copied().unwrap_or(Quantity::ZERO) + *q;
        out.insert(k.clone(), sum);
    }
    out
}

/// `a - b` floored at zero, for the keys of `a` (what an update adds).
pub fn sub_non_negative(a: &ResourceList, b: &ResourceList) -> ResourceList {
    a.iter()
        .map(|(k, q)| {
            let d = match b.get(k) {
                Some(old) => *q - *old,
                None => *q,
            };
            (k.clone(), if d.nanos < 0 { Quantity::ZERO } else { d })
        })
        .collect()
}

/// The entries of `list` named in `names`.
pub fn mask<'a>(list: &ResourceList, names: impl IntoIterator<Item = &'a String>) -> ResourceList {
    let names: BTreeSet<&String> = names.into_iter().collect();
    list.iter()
        .filter(|(k, _)| names.contains(k))
        .map(|(k, q)| (k.clone(), *q))
        .collect()
}

/// Same keys, equal amounts (`1000m` equals `1`).
pub fn equal(a: &ResourceList, b: &ResourceList) -> bool {
    a.len() == b.len() && a.iter().all(|(k, q)| b.get(k) == Some(q))
}

/// The names of `used` above their bound in `hard` (a name without a bound is not limited).
pub fn exceeded(used: &ResourceList, hard: &ResourceList) -> Vec<String> {
    used.iter()
        .filter(|(k, q)| hard.get(*k).is_some_and(|h| *q > h))
        .map(|(k, _)| k.clone())
        .collect()
}

/// `name=q,name=q` in name order, as kube's quota messages print a list.
pub fn pretty(list: &ResourceList) -> String {
    list.iter()
        .map(|(k, q)| format!("{k}={q}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests;
