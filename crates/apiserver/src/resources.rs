//! The registry of served kinds: the built-in ones and those added by CustomResourceDefinitions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::Api;

/// How a kind's objects are checked on write.
#[derive(Clone, Debug)]
pub enum Schema {
    /// A built-in kind: deserialized into its k8s-openapi type plus kind-specific rules.
    Builtin,
    /// A custom resource: its version's `openAPIV3Schema` (None = anything goes).
    Custom(Option<Arc<Value>>),
}

/// Where a custom resource keeps what its scale subresource shows, as JSON pointers made from
/// the CRD's `specReplicasPath`, `statusReplicasPath` and `labelSelectorPath` (`.spec.replicas`
/// → `/spec/replicas`). Built-in kinds have none: theirs are spec.replicas, status.replicas and
/// the LabelSelector at spec.selector.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    /// The selector as a string (the form a Scale's status carries), if the CRD names one.
    pub label_selector: Option<String>,
}

impl ScalePaths {
    fn of(scale: &Value) -> Option<ScalePaths> {
        let pointer = |key: &str| {
            scale
                .get(key)
                .and_then(Value::as_str)
                .map(|p| format!("/{}", p.trim_start_matches('.').replace('.', "/")))
        };
        Some(ScalePaths {
            spec_replicas: pointer("specReplicasPath")?,
            status_replicas: pointer("statusReplicasPath")?,
            label_selector: pointer("labelSelectorPath"),
        })
    }
}

/// One served resource (a group/version/plural).
#[derive(Clone, Debug)]
pub struct Resource {
    /// "" for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub namespaced: bool,
    /// Member of `kubectl get all`.
    pub in_all: bool,
    pub status: bool,
    pub scale: bool,
    /// A custom resource's scale paths (None for built-in kinds).
    pub scale_paths: Option<ScalePaths>,
    pub binding: bool,
    pub schema: Schema,
    /// A CRD version's `selectableFields` as field labels (`spec.color`): what its objects
    /// can be selected by besides `metadata.name` and `metadata.namespace`.
    pub selectable: Vec<String>,
    /// A CRD version's `additionalPrinterColumns`, as written (the columns of `kubectl get`).
    pub printer_columns: Vec<Value>,
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `deployments.apps`, as Kubernetes names a resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The store prefix of a collection: all namespaces when `ns` is None.
    pub fn prefix(&self, ns: Option<&str>) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        match ns {
            Some(ns) if self.namespaced => format!("/registry/{group}/{}/{ns}/", self.plural),
            _ => format!("/registry/{group}/{}/", self.plural),
        }
    }

    pub fn key(&self, ns: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.prefix(ns))
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    kind: &str,
    plural: &str,
    short: &[&str],
    namespaced: bool,
    in_all: bool,
    status: bool,
    scale: bool,
) -> Resource {
    let version = "v1";
    Resource {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        short_names: short.iter().map(|s| s.to_string()).collect(),
        namespaced,
        in_all,
        status,
        scale,
        scale_paths: None,
        binding: kind == "Pod",
        schema: Schema::Builtin,
        selectable: Vec::new(),
        printer_columns: Vec::new(),
    }
}

fn builtins() -> Vec<Resource> {
    let rbac = crate::rbac::GROUP;
    vec![
        builtin(
            "",
            "Namespace",
            "namespaces",
            &["ns"],
            false,
            false,
            true,
            false,
        ),
        builtin("", "Pod", "pods", &["po"], true, true, true, false),
        builtin("", "Service", "services", &["svc"], true, true, true, false),
        builtin(
            "",
            "Endpoints",
            "endpoints",
            &["ep"],
            true,
            false,
            false,
            false,
        ),
        builtin(
            "",
            "ConfigMap",
            "configmaps",
            &["cm"],
            true,
            false,
            false,
            false,
        ),
        builtin("", "Secret", "secrets", &[], true, false, false, false),
        builtin(
            "",
            "LimitRange",
            "limitranges",
            &["limits"],
            true,
            false,
            false,
            false,
        ),
        builtin(
            "",
            "ResourceQuota",
            "resourcequotas",
            &["quota"],
            true,
            false,
            true,
            false,
        ),
        builtin("", "Node", "nodes", &["no"], false, false, true, false),
        builtin(
            "",
            "PersistentVolume",
            "persistentvolumes",
            &["pv"],
            false,
            false,
            true,
            false,
        ),
        builtin(
            "",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            &["pvc"],
            true,
            false,
            true,
            false,
        ),
        builtin("", "Event", "events", &["ev"], true, false, false, false),
        builtin(
            "",
            "ServiceAccount",
            "serviceaccounts",
            &["sa"],
            true,
            false,
            false,
            false,
        ),
        builtin(
            "apps",
            "ReplicaSet",
            "replicasets",
            &["rs"],
            true,
            true,
            true,
            true,
        ),
        builtin(
            "apps",
            "Deployment",
            "deployments",
            &["deploy"],
            true,
            true,
            true,
            true,
        ),
        builtin(
            "apps",
            "DaemonSet",
            "daemonsets",
            &["ds"],
            true,
            true,
            true,
            false,
        ),
        builtin(
            "apps",
            "StatefulSet",
            "statefulsets",
            &["sts"],
            true,
            true,
            true,
            true,
        ),
        builtin(
            "apps",
            "ControllerRevision",
            "controllerrevisions",
            &[],
            true,
            false,
            false,
            false,
        ),
        // autoscaling is served at v2 only (v1 would need conversion between versions).
        Resource {
            version: crate::hpa::VERSION.into(),
            ..builtin(
                crate::hpa::GROUP,
                "HorizontalPodAutoscaler",
                "horizontalpodautoscalers",
                &["hpa"],
                true,
                true,
                true,
                false,
            )
        },
        builtin("batch", "Job", "jobs", &[], true, true, true, false),
        builtin(
            "batch",
            "CronJob",
            "cronjobs",
            &["cj"],
            true,
            true,
            true,
            false,
        ),
        builtin(
            crate::policy::GROUP,
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            &["pdb"],
            true,
            false,
            true,
            false,
        ),
        builtin(
            crate::priority::GROUP,
            "PriorityClass",
            "priorityclasses",
            &["pc"],
            false,
            false,
            false,
            false,
        ),
        builtin(
            crate::storage::GROUP,
            "StorageClass",
            "storageclasses",
            &["sc"],
            false,
            false,
            false,
            false,
        ),
        builtin(
            "coordination.k8s.io",
            "Lease",
            "leases",
            &[],
            true,
            false,
            false,
            false,
        ),
        builtin(
            "node.k8s.io",
            "RuntimeClass",
            "runtimeclasses",
            &[],
            false,
            false,
            false,
            false,
        ),
        builtin(rbac, "Role", "roles", &[], true, false, false, false),
        builtin(
            rbac,
            "ClusterRole",
            "clusterroles",
            &[],
            false,
            false,
            false,
            false,
        ),
        builtin(
            rbac,
            "RoleBinding",
            "rolebindings",
            &[],
            true,
            false,
            false,
            false,
        ),
        builtin(
            rbac,
            "ClusterRoleBinding",
            "clusterrolebindings",
            &[],
            false,
            false,
            false,
            false,
        ),
        builtin(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            &["crd", "crds"],
            false,
            false,
            true,
            false,
        ),
    ]
}

pub struct Registry {
    resources: RwLock<Vec<Resource>>,
    /// Bumped on every change, so what is derived from the registry (OpenAPI documents) can be
    /// cached until it moves.
    generation: AtomicU64,
}

impl Registry {
    pub fn new() -> Self {
        Registry {
            resources: RwLock::new(builtins()),
            generation: AtomicU64::new(0),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Resource>> {
        // A panic while holding the lock cannot leave the Vec half-updated (writes are
        // single assignments), so a poisoned lock is still safe to read.
        self.resources.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes whenever a resource is added, changed or removed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub fn all(&self) -> Vec<Resource> {
        self.read().clone()
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Resource> {
        self.read()
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    }

    /// (Re)register a CRD's served versions; returns the group/plural it serves.
    pub fn register_crd(&self, crd: &Value) -> Option<(String, String)> {
        let spec = crd.get("spec")?;
        let group = spec.get("group")?.as_str()?.to_string();
        let names = spec.get("names")?;
        let plural = names.get("plural")?.as_str()?.to_string();
        let kind = names.get("kind")?.as_str()?.to_string();
        let singular = names
            .get("singular")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| kind.to_lowercase());
        let strings = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let short_names = strings(names.get("shortNames"));
        let in_all = strings(names.get("categories")).iter().any(|c| c == "all");
        let namespaced = spec.get("scope").and_then(Value::as_str) != Some("Cluster");
        let mut added = Vec::new();
        for v in spec.get("versions")?.as_array()? {
            if v.get("served").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            let Some(version) = v.get("name").and_then(Value::as_str) else {
                continue;
            };
            let schema = v.pointer("/schema/openAPIV3Schema").cloned().map(Arc::new);
            let scale_paths = v.pointer("/subresources/scale").and_then(ScalePaths::of);
            added.push(Resource {
                group: group.clone(),
                version: version.to_string(),
                kind: kind.clone(),
                plural: plural.clone(),
                singular: singular.clone(),
                short_names: short_names.clone(),
                namespaced,
                in_all,
                status: v.pointer("/subresources/status").is_some(),
                scale: scale_paths.is_some(),
                scale_paths,
                binding: false,
                schema: Schema::Custom(schema),
                printer_columns: v
                    .get("additionalPrinterColumns")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                selectable: v
                    .get("selectableFields")
                    .and_then(Value::as_array)
                    .map(|fields| {
                        fields
                            .iter()
                            .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                            .map(|p| p.trim_start_matches('.').to_string())
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
        let mut all = self.resources.write().unwrap_or_else(|e| e.into_inner());
        all.retain(|r| !(r.group == group && r.plural == plural));
        all.extend(added);
        self.generation.fetch_add(1, Ordering::SeqCst);
        Some((group, plural))
    }

    pub fn unregister_crd(&self, group: &str, plural: &str) {
        let mut all = self.resources.write().unwrap_or_else(|e| e.into_inner());
        all.retain(|r| {
            !(r.group == group && r.plural == plural && matches!(r.schema, Schema::Custom(_)))
        });
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn crd_resource(&self) -> Resource {
        self.find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .unwrap_or_else(|| builtins().pop().expect("built-in CRD resource"))
    }
}

/// Serve the CRDs already in the store.
pub async fn load_crds(api: &Api) -> anyhow::Result<()> {
    let res = api.registry.crd_resource();
    let list = api
        .store
        .range(yun_store::RangeRequest {
            prefix: res.prefix(None),
            ..Default::default()
        })
        .await?;
    for kv in list.kvs {
        if let Ok(v) = serde_json::from_slice::<Value>(&kv.value) {
            api.registry.register_crd(&v);
        }
    }
    Ok(())
}
