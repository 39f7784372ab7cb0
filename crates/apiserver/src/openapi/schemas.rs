//! Schemas of the served kinds: the built-in ones from k8s-openapi's JSON schemas (its
//! `schemars` feature: descriptions, types, formats, `required`), annotated with what
//! Kubernetes' own OpenAPI carries beyond JSON schema (the kind's group-version-kind and the
//! list merge strategies of [`super::patch_meta`]); a CRD's from its `openAPIV3Schema`.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use k8s_openapi::api::{
    apps, autoscaling, batch, coordination, core, node, policy, rbac, scheduling,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::resources::{Resource, Schema};

/// Where references point in OpenAPI v3 documents (v2 documents rewrite it to `#/definitions/`).
pub const REF_PREFIX: &str = "#/components/schemas/";

/// The built-in definitions of one group-version: every schema its kinds reach.
pub struct Definitions {
    pub schemas: Arc<Map<String, Value>>,
    /// (schema name, group, version, kind) of the top-level kinds.
    pub kinds: Vec<(String, String, String, String)>,
}

struct Builder {
    gen: SchemaGenerator,
    kinds: Vec<(String, String, String, String)>,
}

impl Builder {
    fn add<T: JsonSchema + k8s_openapi::Resource>(&mut self) {
        self.gen.subschema_for::<T>();
        self.kinds.push((
            T::schema_name().into_owned(),
            T::GROUP.to_string(),
            T::VERSION.to_string(),
            T::KIND.to_string(),
        ));
    }
}

/// The built-in kinds of a group-version, including those only served as subresources
/// (autoscaling/v1 Scale under apps/v1, as Kubernetes' apps/v1 document has it).
fn build(group: &str, version: &str) -> Option<Definitions> {
    let mut b = Builder {
        gen: SchemaGenerator::new(SchemaSettings::openapi3()),
        kinds: Vec::new(),
    };
    match (group, version) {
        ("", "v1") => {
            b.add::<core::v1::Namespace>();
            b.add::<core::v1::Pod>();
            b.add::<core::v1::Binding>();
            // The body of pods/eviction, which kube's core document carries too.
            b.add::<policy::v1::Eviction>();
            b.add::<core::v1::Service>();
            b.add::<core::v1::Endpoints>();
            b.add::<core::v1::ConfigMap>();
            b.add::<core::v1::Secret>();
            b.add::<core::v1::ResourceQuota>();
            b.add::<core::v1::Node>();
            b.add::<core::v1::Event>();
            b.add::<core::v1::ServiceAccount>();
            b.add::<core::v1::LimitRange>();
            b.add::<core::v1::PersistentVolume>();
            b.add::<core::v1::PersistentVolumeClaim>();
        }
        ("apps", "v1") => {
            b.add::<apps::v1::Deployment>();
            b.add::<apps::v1::ReplicaSet>();
            b.add::<apps::v1::DaemonSet>();
            b.add::<apps::v1::StatefulSet>();
            b.add::<apps::v1::ControllerRevision>();
            b.add::<autoscaling::v1::Scale>();
        }
        ("autoscaling", "v2") => b.add::<autoscaling::v2::HorizontalPodAutoscaler>(),
        ("batch", "v1") => {
            b.add::<batch::v1::Job>();
            b.add::<batch::v1::CronJob>();
        }
        ("coordination.k8s.io", "v1") => b.add::<coordination::v1::Lease>(),
        ("policy", "v1") => b.add::<policy::v1::PodDisruptionBudget>(),
        ("node.k8s.io", "v1") => b.add::<node::v1::RuntimeClass>(),
        ("scheduling.k8s.io", "v1") => b.add::<scheduling::v1::PriorityClass>(),
        ("storage.k8s.io", "v1") => b.add::<k8s_openapi::api::storage::v1::StorageClass>(),
        ("rbac.authorization.k8s.io", "v1") => {
            b.add::<rbac::v1::Role>();
            b.add::<rbac::v1::ClusterRole>();
            b.add::<rbac::v1::RoleBinding>();
            b.add::<rbac::v1::ClusterRoleBinding>();
        }
        ("apiextensions.k8s.io", "v1") => b.add::<apiext::CustomResourceDefinition>(),
        _ => return None,
    }
    // What every document refers to: DeleteOptions and Status (the body and answer of deletes).
    b.gen.subschema_for::<meta::DeleteOptions>();
    b.gen.subschema_for::<meta::Status>();
    let mut schemas = b.gen.take_definitions(true);
    for (name, g, v, k) in &b.kinds {
        if let Some(s) = schemas.get_mut(name).and_then(Value::as_object_mut) {
            s.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": g, "version": v, "kind": k}]),
            );
        }
    }
    super::patch_meta::annotate(&mut schemas);
    Some(Definitions {
        schemas: Arc::new(schemas),
        kinds: b.kinds,
    })
}

/// The built-in group-versions, in the order documents list them.
pub const BUILTIN_GROUP_VERSIONS: [(&str, &str); 11] = [
    ("", "v1"),
    ("apps", "v1"),
    ("autoscaling", "v2"),
    ("batch", "v1"),
    ("coordination.k8s.io", "v1"),
    ("node.k8s.io", "v1"),
    ("policy", "v1"),
    ("scheduling.k8s.io", "v1"),
    ("storage.k8s.io", "v1"),
    ("rbac.authorization.k8s.io", "v1"),
    ("apiextensions.k8s.io", "v1"),
];

/// The built-in definitions of a group-version, generated once per process (they are fixed at
/// build time).
pub fn builtin(group: &str, version: &str) -> Option<Arc<Definitions>> {
    static CACHE: OnceLock<BTreeMap<(String, String), Arc<Definitions>>> = OnceLock::new();
    let all = CACHE.get_or_init(|| {
        BUILTIN_GROUP_VERSIONS
            .iter()
            .filter_map(|(g, v)| Some(((g.to_string(), v.to_string()), Arc::new(build(g, v)?))))
            .collect()
    });
    all.get(&(group.to_string(), version.to_string())).cloned()
}

/// The schema name Kubernetes gives a custom resource: the group reversed, then version and
/// kind (`example.com`, v1, Widget → `com.example.v1.Widget`).
pub fn crd_schema_name(r: &Resource) -> String {
    let rev: Vec<&str> = r.group.split('.').rev().collect();
    format!("{}.{}.{}", rev.join("."), r.version, r.kind)
}

/// A custom resource's schema as Kubernetes publishes it: its `openAPIV3Schema` with
/// apiVersion, kind and metadata (ObjectMeta) filled in and its group-version-kind attached.
pub fn crd_schema(r: &Resource) -> Value {
    let mut s = match &r.schema {
        Schema::Custom(Some(s)) => (**s).clone(),
        _ => json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
    };
    if !s.is_object() {
        s = json!({"type": "object"});
    }
    let props = s
        .as_object_mut()
        .map(|o| o.entry("properties").or_insert_with(|| json!({})));
    if let Some(Value::Object(p)) = props {
        p.insert(
            "apiVersion".into(),
            json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values."}),
        );
        p.insert(
            "kind".into(),
            json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to."}),
        );
        p.insert(
            "metadata".into(),
            json!({"allOf": [{"$ref": format!("{REF_PREFIX}{}", object_meta_name())}],
                   "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}),
        );
    }
    s["type"] = "object".into();
    s["x-kubernetes-group-version-kind"] =
        json!([{"group": r.group, "version": r.version, "kind": r.kind}]);
    s
}

fn object_meta_name() -> String {
    meta::ObjectMeta::schema_name().into_owned()
}

/// The definitions a CRD document needs besides its own schema (ObjectMeta and what it reaches,
/// DeleteOptions, Status): taken from the apiextensions group's built-in definitions.
pub fn meta_definitions() -> Map<String, Value> {
    let Some(defs) = builtin("apiextensions.k8s.io", "v1") else {
        return Map::new();
    };
    let wanted = [
        object_meta_name(),
        meta::DeleteOptions::schema_name().into_owned(),
        meta::Status::schema_name().into_owned(),
    ];
    let mut out = Map::new();
    for w in wanted {
        collect(&defs.schemas, &w, &mut out);
    }
    out
}

/// Copy `name` and every schema it refers to (transitively) from `all` into `out`.
fn collect(all: &Map<String, Value>, name: &str, out: &mut Map<String, Value>) {
    if out.contains_key(name) {
        return;
    }
    let Some(s) = all.get(name) else { return };
    out.insert(name.to_string(), s.clone());
    let mut refs = Vec::new();
    refs_in(s, &mut refs);
    for r in refs {
        collect(all, &r, out);
    }
}

fn refs_in(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            if let Some(r) = o.get("$ref").and_then(Value::as_str) {
                if let Some(n) = r.strip_prefix(REF_PREFIX) {
                    out.push(n.to_string());
                }
            }
            o.values().for_each(|x| refs_in(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| refs_in(x, out)),
        _ => {}
    }
}

/// The schema (and the definitions it refers to) a served resource's objects follow.
pub fn for_resource(r: &Resource) -> Option<(Value, Arc<Map<String, Value>>)> {
    match r.schema {
        Schema::Builtin => {
            let defs = builtin(&r.group, &r.version)?;
            let name = defs
                .kinds
                .iter()
                .find(|(_, _, _, k)| *k == r.kind)
                .map(|(n, ..)| n.clone())?;
            let root = json!({"$ref": format!("{REF_PREFIX}{name}")});
            Some((root, defs.schemas.clone()))
        }
        Schema::Custom(_) => {
            static META: OnceLock<Arc<Map<String, Value>>> = OnceLock::new();
            let meta = META.get_or_init(|| Arc::new(meta_definitions())).clone();
            Some((crd_schema(r), meta))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_schema_carries_kubernetes_extensions() {
        let core = builtin("", "v1").unwrap();
        let pod = &core.schemas["io.k8s.api.core.v1.Pod"];
        assert_eq!(
            pod["x-kubernetes-group-version-kind"],
            json!([{"group": "", "version": "v1", "kind": "Pod"}])
        );
        let containers = &core.schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-list-type"], "map");
        assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
        let container = &core.schemas["io.k8s.api.core.v1.Container"];
        assert_eq!(container["required"], json!(["name"]));
        assert!(container["description"]
            .as_str()
            .unwrap()
            .contains("container"));
        let apps = builtin("apps", "v1").unwrap();
        assert!(apps.schemas.contains_key("io.k8s.api.autoscaling.v1.Scale"));
        let selector = &apps.schemas["io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"];
        assert_eq!(selector["x-kubernetes-map-type"], "atomic");
    }

    #[test]
    fn crd_names_reverse_the_group() {
        let r = crate::resources::Registry::new();
        let mut res = r.crd_resource();
        res.group = "example.com".into();
        res.kind = "Widget".into();
        assert_eq!(crd_schema_name(&res), "com.example.v1.Widget");
    }
}
