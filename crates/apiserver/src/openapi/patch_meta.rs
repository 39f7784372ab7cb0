//! The list semantics Kubernetes' OpenAPI publishes and k8s-openapi's JSON schemas leave out:
//! `x-kubernetes-patch-strategy`/`-patch-merge-key` (how a strategic merge patch merges a
//! list: kubectl apply and diff compute their patches from these) and `x-kubernetes-list-type`/
//! `-list-map-keys` (how server-side apply owns list items). Taken from the Kubernetes API
//! types' `patchStrategy`/`+listType` tags for the kinds yun serves; the merge keys agree with
//! those the server's own strategic merge uses (`crate::patch`).

use serde_json::{json, Map, Value};

/// (schema, property, patch strategy, merge key, list type, list map keys).
type Entry = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    &'static str,
    &'static [&'static str],
);

const MERGE: Option<&str> = Some("merge");
const MERGE_RETAIN: Option<&str> = Some("merge,retainKeys");

/// The lists of a container (and an ephemeral one); the schema name is filled in per kind.
const CONTAINER_LISTS: &[Entry] = &[
    (
        "",
        "ports",
        MERGE,
        Some("containerPort"),
        "map",
        &["containerPort", "protocol"],
    ),
    ("", "env", MERGE, Some("name"), "map", &["name"]),
    (
        "",
        "volumeMounts",
        MERGE,
        Some("mountPath"),
        "map",
        &["mountPath"],
    ),
    (
        "",
        "volumeDevices",
        MERGE,
        Some("devicePath"),
        "map",
        &["devicePath"],
    ),
    ("", "envFrom", None, None, "atomic", &[]),
    ("", "resizePolicy", None, None, "atomic", &[]),
    ("", "command", None, None, "atomic", &[]),
];

const ENTRIES: &[Entry] = &[
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        MERGE,
        Some("uid"),
        "map",
        &["uid"],
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        MERGE,
        None,
        "set",
        &[],
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
        "matchExpressions",
        None,
        None,
        "atomic",
        &[],
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "containers",
        MERGE,
        Some("name"),
        "map",
        &["name"],
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "initContainers",
        MERGE,
        Some("name"),
        "map",
        &["name"],
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        MERGE,
        Some("name"),
        "map",
        &["name"],
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "volumes",
        MERGE_RETAIN,
        Some("name"),
        "map",
        &["name"],
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "imagePullSecrets",
        MERGE,
        Some("name"),
        "map",
        &["name"],
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "hostAliases",
        MERGE,
        Some("ip"),
        "map",
        &["ip"],
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        MERGE,
        Some("topologyKey"),
        "map",
        &["topologyKey", "whenUnsatisfiable"],
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "schedulingGates",
        MERGE,
        Some("name"),
        "map",
        &["name"],
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "resourceClaims",
        MERGE_RETAIN,
        Some("name"),
        "map",
        &["name"],
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "tolerations",
        None,
        None,
        "atomic",
        &[],
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "conditions",
        MERGE,
        Some("type"),
        "map",
        &["type"],
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "podIPs",
        MERGE,
        Some("ip"),
        "map",
        &["ip"],
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "hostIPs",
        MERGE,
        Some("ip"),
        "atomic",
        &[],
    ),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "ports",
        MERGE,
        Some("port"),
        "map",
        &["port", "protocol"],
    ),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "clusterIPs",
        None,
        None,
        "atomic",
        &[],
    ),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "ipFamilies",
        None,
        None,
        "atomic",
        &[],
    ),
    (
        "io.k8s.api.core.v1.ServiceStatus",
        "conditions",
        MERGE,
        Some("type"),
        "map",
        &["type"],
    ),
    (
        "io.k8s.api.core.v1.NodeSpec",
        "podCIDRs",
        MERGE,
        None,
        "set",
        &[],
    ),
    (
        "io.k8s.api.core.v1.NodeSpec",
        "taints",
        None,
        None,
        "atomic",
        &[],
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "conditions",
        MERGE,
        Some("type"),
        "map",
        &["type"],
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "addresses",
        MERGE,
        Some("type"),
        "map",
        &["type"],
    ),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        MERGE,
        Some("type"),
        "map",
        &["type"],
    ),
    (
        "io.k8s.api.core.v1.ServiceAccount",
        "secrets",
        MERGE,
        Some("name"),
        "map",
        &["name"],
    ),
    (
        "io.k8s.api.core.v1.EndpointSubset",
        "addresses",
        None,
        None,
        "atomic",
        &[],
    ),
    (
        "io.k8s.api.core.v1.EndpointSubset",
        "ports",
        None,
        None,
        "atomic",
        &[],
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        MERGE,
        Some("type"),
        "map",
        &["type"],
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        MERGE,
        Some("type"),
        "map",
        &["type"],
    ),
];

fn set(schemas: &mut Map<String, Value>, e: Entry) {
    let (schema, prop, strategy, key, list_type, map_keys) = e;
    let Some(p) = schemas
        .get_mut(schema)
        .and_then(|s| s.pointer_mut(&format!("/properties/{prop}")))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    if let Some(s) = strategy {
        p.insert("x-kubernetes-patch-strategy".into(), s.into());
    }
    if let Some(k) = key {
        p.insert("x-kubernetes-patch-merge-key".into(), k.into());
    }
    p.insert("x-kubernetes-list-type".into(), list_type.into());
    if !map_keys.is_empty() {
        p.insert("x-kubernetes-list-map-keys".into(), json!(map_keys));
    }
}

/// Structs Kubernetes marks `+structType=atomic` (`x-kubernetes-map-type: atomic`): a selector
/// or reference is replaced whole by server-side apply and owned as one field.
const ATOMIC_STRUCTS: &[&str] = &[
    "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
    "io.k8s.api.core.v1.LocalObjectReference",
    "io.k8s.api.core.v1.ObjectReference",
    "io.k8s.api.core.v1.ConfigMapKeySelector",
    "io.k8s.api.core.v1.SecretKeySelector",
    "io.k8s.api.core.v1.ObjectFieldSelector",
    "io.k8s.api.core.v1.ResourceFieldSelector",
    "io.k8s.api.core.v1.NodeSelector",
];

/// Add the list semantics to the definitions present (others are left alone).
pub fn annotate(schemas: &mut Map<String, Value>) {
    for name in ATOMIC_STRUCTS {
        if let Some(s) = schemas.get_mut(*name).and_then(Value::as_object_mut) {
            s.insert("x-kubernetes-map-type".into(), "atomic".into());
        }
    }
    for e in ENTRIES {
        set(schemas, *e);
    }
    for schema in [
        "io.k8s.api.core.v1.Container",
        "io.k8s.api.core.v1.EphemeralContainer",
    ] {
        for e in CONTAINER_LISTS {
            set(schemas, (schema, e.1, e.2, e.3, e.4, e.5));
        }
        set(schemas, (schema, "args", None, None, "atomic", &[]));
    }
}
