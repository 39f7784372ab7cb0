//! Write-time checks: names (DNS-1123), the shape of built-in kinds (through their k8s-openapi
//! types), kind-specific required fields, and the basics of a CRD's openAPIV3Schema.

use k8s_openapi::api::{apps, autoscaling, batch, coordination, core, node, policy, rbac};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ApiError, ApiResult, Cause};
use crate::resources::{Resource, Schema};

pub(crate) fn dns_label_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub(crate) fn dns_subdomain_ok(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(dns_label_ok)
}

/// Kinds whose names become DNS labels (host names, namespace names).
fn needs_label(res: &Resource) -> bool {
    matches!(res.kind.as_str(), "Namespace" | "Service") && res.group.is_empty()
}

pub fn check_name(res: &Resource, name: &str) -> Option<Cause> {
    if res.group == crate::rbac::GROUP && matches!(res.schema, Schema::Builtin) {
        // RBAC names are path segments (`system:basic-user`), as kube validates them.
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '%']) {
            return Some(Cause::invalid(
                "metadata.name",
                format!("Invalid value: {name:?}: may not be '.' or '..' and may not contain '/' or '%'"),
            ));
        }
        return None;
    }
    if needs_label(res) {
        if !dns_label_ok(name) {
            return Some(Cause::invalid(
                "metadata.name",
                format!("Invalid value: {name:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"),
            ));
        }
    } else if !dns_subdomain_ok(name) {
        return Some(Cause::invalid(
            "metadata.name",
            format!("Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
        ));
    }
    None
}

fn typed<T: DeserializeOwned>(obj: &Value) -> Result<(), String> {
    let de = serde_json::Value::clone(obj);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("{}: {}", e.path(), e.inner())),
    }
}

/// Deserialize into the kind's k8s-openapi type: a wrong type anywhere is a 400, as in Kubernetes.
fn check_shape(kind: &str, obj: &Value) -> Result<(), String> {
    match kind {
        "Namespace" => typed::<core::v1::Namespace>(obj),
        "Pod" => typed::<core::v1::Pod>(obj),
        "Service" => typed::<core::v1::Service>(obj),
        "Endpoints" => typed::<core::v1::Endpoints>(obj),
        "ConfigMap" => typed::<core::v1::ConfigMap>(obj),
        "Secret" => typed::<core::v1::Secret>(obj),
        "LimitRange" => typed::<core::v1::LimitRange>(obj),
        "ResourceQuota" => typed::<core::v1::ResourceQuota>(obj),
        "Node" => typed::<core::v1::Node>(obj),
        "PersistentVolume" => typed::<core::v1::PersistentVolume>(obj),
        "PersistentVolumeClaim" => typed::<core::v1::PersistentVolumeClaim>(obj),
        "StorageClass" => typed::<k8s_openapi::api::storage::v1::StorageClass>(obj),
        "Event" => typed::<core::v1::Event>(obj),
        "ServiceAccount" => typed::<core::v1::ServiceAccount>(obj),
        "ReplicaSet" => typed::<apps::v1::ReplicaSet>(obj),
        "Deployment" => typed::<apps::v1::Deployment>(obj),
        "DaemonSet" => typed::<apps::v1::DaemonSet>(obj),
        "StatefulSet" => typed::<apps::v1::StatefulSet>(obj),
        "ControllerRevision" => typed::<apps::v1::ControllerRevision>(obj),
        "PriorityClass" => typed::<k8s_openapi::api::scheduling::v1::PriorityClass>(obj),
        "HorizontalPodAutoscaler" => typed::<autoscaling::v2::HorizontalPodAutoscaler>(obj),
        "Job" => typed::<batch::v1::Job>(obj),
        "CronJob" => typed::<batch::v1::CronJob>(obj),
        "Lease" => typed::<coordination::v1::Lease>(obj),
        "PodDisruptionBudget" => typed::<policy::v1::PodDisruptionBudget>(obj),
        "RuntimeClass" => typed::<node::v1::RuntimeClass>(obj),
        "Role" => typed::<rbac::v1::Role>(obj),
        "ClusterRole" => typed::<rbac::v1::ClusterRole>(obj),
        "RoleBinding" => typed::<rbac::v1::RoleBinding>(obj),
        "ClusterRoleBinding" => typed::<rbac::v1::ClusterRoleBinding>(obj),
        "CustomResourceDefinition" => typed::<CustomResourceDefinition>(obj),
        _ => Ok(()),
    }
}

pub(crate) fn check_containers(obj: &Value, path: &str, causes: &mut Vec<Cause>) {
    let pointer = format!("/{}", path.replace('.', "/"));
    match obj.pointer(&pointer).and_then(Value::as_array) {
        Some(list) if !list.is_empty() => {
            for (i, c) in list.iter().enumerate() {
                let name = c.get("name").and_then(Value::as_str).unwrap_or("");
                if name.is_empty() {
                    causes.push(Cause::required(&format!("{path}[{i}].name")));
                } else if !dns_label_ok(name) {
                    causes.push(Cause::invalid(
                        &format!("{path}[{i}].name"),
                        format!("Invalid value: {name:?}: must be a lowercase RFC 1123 label"),
                    ));
                }
                if c.get("image")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    causes.push(Cause::required(&format!("{path}[{i}].image")));
                }
                for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                    if let Some(p) = c.get(probe) {
                        check_probe(p, &format!("{path}[{i}].{probe}"), causes);
                    }
                }
            }
        }
        _ => causes.push(Cause::required(path)),
    }
}

/// A probe needs exactly one handler, a command or a valid port, and sane timings.
fn check_probe(p: &Value, path: &str, causes: &mut Vec<Cause>) {
    let handlers: Vec<&str> = ["exec", "httpGet", "tcpSocket", "grpc"]
        .into_iter()
        .filter(|h| p.get(*h).is_some_and(|v| !v.is_null()))
        .collect();
    match handlers.as_slice() {
        [] => causes.push(Cause::required(&format!("{path}.exec"))),
        [_] => {}
        [_, second, ..] => causes.push(Cause::invalid(
            &format!("{path}.{second}"),
            "Forbidden: may not specify more than 1 handler type",
        )),
    }
    if let Some(exec) = p.get("exec") {
        let empty = exec
            .get("command")
            .and_then(Value::as_array)
            .is_none_or(|c| c.is_empty());
        if empty {
            causes.push(Cause::required(&format!("{path}.exec.command")));
        }
    }
    for handler in ["httpGet", "tcpSocket", "grpc"] {
        let Some(h) = p.get(handler) else { continue };
        let field = format!("{path}.{handler}.port");
        match h.get("port") {
            None | Some(Value::Null) => causes.push(Cause::required(&field)),
            Some(Value::Number(n)) if !n.as_i64().is_some_and(|n| (1..=65535).contains(&n)) => {
                causes.push(Cause::invalid(
                    &field,
                    format!("Invalid value: {n}: must be between 1 and 65535, inclusive"),
                ))
            }
            Some(Value::String(name)) if !dns_label_ok(name) || name.len() > 15 => {
                causes.push(Cause::invalid(
                    &field,
                    format!(
                        "Invalid value: {name:?}: must be a port number or an IANA service name"
                    ),
                ))
            }
            _ => {}
        }
    }
    for (key, min) in [
        ("initialDelaySeconds", 0),
        ("timeoutSeconds", 1),
        ("periodSeconds", 1),
        ("successThreshold", 1),
        ("failureThreshold", 1),
    ] {
        if let Some(n) = p.get(key).and_then(Value::as_i64).filter(|n| *n < min) {
            causes.push(Cause::invalid(
                &format!("{path}.{key}"),
                format!("Invalid value: {n}: must be greater than or equal to {min}"),
            ));
        }
    }
}

/// The largest user or group id Kubernetes accepts (`validation.IsValidUserID`): ids are
/// int32 on the node's side, and a negative or wider id would reach the runtime as some other
/// user (a wrap to 0 is root).
const MAX_ID: i64 = (1 << 31) - 1;

/// `runAsUser`, `runAsGroup`, `fsGroup` and `supplementalGroups` of the pod and of each
/// (init, ephemeral) container must lie in 0..=2^31-1.
fn check_pod_ids(obj: &Value, causes: &mut Vec<Cause>) {
    let mut check = |ctx: Option<&Value>, path: &str, keys: &[&str]| {
        let Some(ctx) = ctx else { return };
        for key in keys {
            let bad = |v: &Value| !v.as_i64().is_some_and(|n| (0..=MAX_ID).contains(&n));
            match ctx.get(*key) {
                Some(Value::Array(list)) => {
                    for (i, v) in list.iter().enumerate() {
                        if bad(v) {
                            causes.push(id_cause(&format!("{path}.{key}[{i}]"), v));
                        }
                    }
                }
                Some(Value::Null) | None => {}
                Some(v) if bad(v) => causes.push(id_cause(&format!("{path}.{key}"), v)),
                Some(_) => {}
            }
        }
    };
    check(
        obj.pointer("/spec/securityContext"),
        "spec.securityContext",
        &["runAsUser", "runAsGroup", "fsGroup", "supplementalGroups"],
    );
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        let Some(cs) = obj
            .pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
        else {
            continue;
        };
        for (i, c) in cs.iter().enumerate() {
            check(
                c.get("securityContext"),
                &format!("spec.{list}[{i}].securityContext"),
                &["runAsUser", "runAsGroup"],
            );
        }
    }
}

fn id_cause(field: &str, v: &Value) -> Cause {
    Cause::invalid(
        field,
        format!("Invalid value: {v}: must be between 0 and {MAX_ID}, inclusive"),
    )
}

fn check_workload(obj: &Value, causes: &mut Vec<Cause>) {
    let Some(selector) = obj.pointer("/spec/selector").filter(|s| s.is_object()) else {
        causes.push(Cause::required("spec.selector"));
        return;
    };
    let labels = obj.pointer("/spec/template/metadata/labels");
    if let Some(m) = selector.get("matchLabels").and_then(Value::as_object) {
        let ok = m
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
        if !ok {
            causes.push(Cause::invalid(
                "spec.template.metadata.labels",
                "Invalid value: `selector` does not match template `labels`",
            ));
        }
    }
    check_containers(obj, "spec.template.spec.containers", causes);
}

fn builtin_rules(res: &Resource, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    match res.kind.as_str() {
        "Pod" => {
            check_containers(obj, "spec.containers", &mut causes);
            check_pod_ids(obj, &mut causes);
        }
        "Deployment" | "ReplicaSet" => check_workload(obj, &mut causes),
        "LimitRange" if res.group.is_empty() => crate::limitrange::validate(obj, &mut causes),
        "ResourceQuota" if res.group.is_empty() => crate::resourcequota::validate(obj, &mut causes),
        "PersistentVolumeClaim" if res.group.is_empty() => {
            crate::storage::validate_claim(obj, &mut causes)
        }
        "PersistentVolume" if res.group.is_empty() => {
            crate::storage::validate_volume(obj, &mut causes)
        }
        "StorageClass" if res.group == crate::storage::GROUP => {
            crate::storage::validate_class(obj, &mut causes)
        }
        "DaemonSet" if res.group == "apps" => {
            check_workload(obj, &mut causes);
            crate::daemonset::validate(obj, &mut causes);
        }
        "StatefulSet" if res.group == "apps" => {
            check_workload(obj, &mut causes);
            crate::statefulset::validate(obj, &mut causes);
        }
        "ControllerRevision" if res.group == "apps" => {
            crate::statefulset::validate_revision(obj, &mut causes)
        }
        "PriorityClass" if res.group == crate::priority::GROUP => {
            crate::priority::validate(obj, &mut causes)
        }
        "HorizontalPodAutoscaler" if res.group == crate::hpa::GROUP => {
            crate::hpa::validate(obj, &mut causes)
        }
        "Job" if res.group == "batch" => crate::batch::validate_job(obj, &mut causes),
        "CronJob" if res.group == "batch" => crate::batch::validate_cronjob(obj, &mut causes),
        "PodDisruptionBudget" if res.group == crate::policy::GROUP => {
            crate::policy::validate_pdb(obj, &mut causes)
        }
        _ if res.group == crate::rbac::GROUP => {
            crate::rbac::validation::validate(res, obj, &mut causes)
        }
        "CustomResourceDefinition" => {
            let group = obj.pointer("/spec/group").and_then(Value::as_str);
            let plural = obj.pointer("/spec/names/plural").and_then(Value::as_str);
            for (p, f) in [
                ("/spec/group", "spec.group"),
                ("/spec/names/plural", "spec.names.plural"),
                ("/spec/names/kind", "spec.names.kind"),
            ] {
                if obj
                    .pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    causes.push(Cause::required(f));
                }
            }
            if let (Some(g), Some(p)) = (group, plural) {
                let want = format!("{p}.{g}");
                let name = obj.pointer("/metadata/name").and_then(Value::as_str);
                if name != Some(want.as_str()) {
                    causes.push(Cause::invalid(
                        "metadata.name",
                        format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group ({want})"),
                    ));
                }
            }
            let versions = obj.pointer("/spec/versions").and_then(Value::as_array);
            if versions.is_none_or(|v| v.is_empty()) {
                causes.push(Cause::required("spec.versions"));
            }
            for (i, v) in versions.into_iter().flatten().enumerate() {
                if let Some(scale) = v.pointer("/subresources/scale") {
                    let path = format!("spec.versions[{i}].subresources.scale");
                    crd_scale_paths(scale, &path, &mut causes);
                }
            }
        }
        _ => {}
    }
    causes
}

/// A CRD's scale paths must point into the object's spec (replicas) and status (observed
/// replicas; the selector may be in either), as kube-apiserver requires.
fn crd_scale_paths(scale: &Value, path: &str, causes: &mut Vec<Cause>) {
    let under = |p: &str, roots: &[&str]| {
        roots.iter().any(|r| {
            p.strip_prefix(r)
                .is_some_and(|rest| rest.starts_with('.') && rest.len() > 1)
        })
    };
    for (key, roots, what) in [
        ("specReplicasPath", &[".spec"][..], ".spec"),
        ("statusReplicasPath", &[".status"][..], ".status"),
        (
            "labelSelectorPath",
            &[".spec", ".status"][..],
            "either .spec or .status",
        ),
    ] {
        let Some(p) = scale.get(key).and_then(Value::as_str) else {
            continue;
        };
        if !under(p, roots) {
            causes.push(Cause::invalid(
                &format!("{path}.{key}"),
                format!("Invalid value: {p:?}: should be a json path under {what}"),
            ));
        }
    }
}

/// Check an object about to be written. `name` is its (possibly generated) name.
pub fn validate(res: &Resource, obj: &Value) -> ApiResult<()> {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let causes = match &res.schema {
        Schema::Builtin => {
            check_shape(&res.kind, obj).map_err(|e| {
                ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: {e}",
                    res.kind, res.version, res.kind
                ))
            })?;
            builtin_rules(res, obj)
        }
        Schema::Custom(Some(schema)) => {
            let mut causes = Vec::new();
            // metadata and apiVersion/kind are the server's business, not the schema's.
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                if let Some(map) = obj.as_object() {
                    for (k, v) in map {
                        if matches!(k.as_str(), "metadata" | "apiVersion" | "kind") {
                            continue;
                        }
                        if let Some(s) = props.get(k) {
                            check_schema(s, v, k, &mut causes);
                        }
                    }
                }
            }
            if let Some(req) = schema.get("required").and_then(Value::as_array) {
                for r in req.iter().filter_map(Value::as_str) {
                    if obj.get(r).is_none() {
                        causes.push(Cause::required(r));
                    }
                }
            }
            causes
        }
        Schema::Custom(None) => Vec::new(),
    };
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&res.kind, name, &res.group, causes))
    }
}

/// Check what an update may not change (both sides defaulted), after `validate`.
pub fn validate_update(res: &Resource, cur: &Value, new: &Value) -> ApiResult<()> {
    let mut causes = Vec::new();
    if matches!(res.schema, Schema::Builtin) && res.group == "batch" && res.kind == "Job" {
        crate::batch::job_update(cur, new, &mut causes);
    }
    if matches!(res.schema, Schema::Builtin) && res.group == "apps" && res.kind == "DaemonSet" {
        crate::daemonset::update(cur, new, &mut causes);
    }
    if matches!(res.schema, Schema::Builtin) && res.group == "apps" {
        match res.kind.as_str() {
            "StatefulSet" => crate::statefulset::update(cur, new, &mut causes),
            "ControllerRevision" => crate::statefulset::revision_update(cur, new, &mut causes),
            _ => {}
        }
    }
    if matches!(res.schema, Schema::Builtin) && res.group == crate::priority::GROUP {
        crate::priority::update(cur, new, &mut causes);
    }
    if matches!(res.schema, Schema::Builtin)
        && (res.group.is_empty() || res.group == crate::storage::GROUP)
    {
        crate::storage::validate_update(&res.kind, cur, new, &mut causes);
    }
    if matches!(res.schema, Schema::Builtin) && res.group.is_empty() && res.kind == "ResourceQuota"
    {
        crate::resourcequota::validate_update(cur, new, &mut causes);
    }
    if res.group == crate::rbac::GROUP && cur.get("roleRef") != new.get("roleRef") {
        causes.push(Cause::invalid(
            "roleRef",
            format!(
                "Invalid value: {}: cannot change roleRef",
                new.get("roleRef").cloned().unwrap_or_default()
            ),
        ));
    }
    if causes.is_empty() {
        return Ok(());
    }
    let name = new
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    Err(ApiError::invalid(&res.kind, name, &res.group, causes))
}

/// The basics of structural-schema validation: type, required, properties, items, enum.
fn check_schema(schema: &Value, v: &Value, path: &str, causes: &mut Vec<Cause>) {
    let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string() || (int_or_string && v.is_i64()),
            "integer" => v.is_i64() || v.is_u64() || (int_or_string && v.is_string()),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            _ => true,
        };
        let ok = ok || (v.is_null() && schema.get("nullable") == Some(&Value::Bool(true)));
        if !ok {
            causes.push(Cause {
                field: path.into(),
                kind: "FieldValueTypeInvalid",
                message: format!(
                    "Invalid value: {}: {path} in body must be of type {t}",
                    short(v)
                ),
            });
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(v) {
            causes.push(Cause {
                field: path.into(),
                kind: "FieldValueNotSupported",
                message: format!("Unsupported value: {}", short(v)),
            });
        }
    }
    if let Some(map) = v.as_object() {
        if let Some(req) = schema.get("required").and_then(Value::as_array) {
            for r in req.iter().filter_map(Value::as_str) {
                if !map.contains_key(r) {
                    causes.push(Cause::required(&format!("{path}.{r}")));
                }
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        let extra = schema.get("additionalProperties").filter(|a| a.is_object());
        for (k, child) in map {
            if let Some(s) = props.and_then(|p| p.get(k)).or(extra) {
                check_schema(s, child, &format!("{path}.{k}"), causes);
            }
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), v.as_array()) {
        for (i, child) in list.iter().enumerate() {
            check_schema(items, child, &format!("{path}[{i}]"), causes);
        }
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(40).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(dns_subdomain_ok("web-1.example"));
        assert!(!dns_subdomain_ok("Web"));
        assert!(!dns_subdomain_ok("-a"));
        assert!(!dns_label_ok("a.b"));
        assert!(!dns_subdomain_ok(""));
    }

    #[test]
    fn crd_scale_paths_point_into_spec_and_status() {
        let scale = serde_json::json!({"specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"});
        let mut causes = Vec::new();
        crd_scale_paths(&scale, "s", &mut causes);
        assert!(causes.is_empty());
        let scale = serde_json::json!({"specReplicasPath": ".status.replicas",
            "statusReplicasPath": ".statusx", "labelSelectorPath": ".metadata.name"});
        crd_scale_paths(&scale, "s", &mut causes);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "s.specReplicasPath",
                "s.statusReplicasPath",
                "s.labelSelectorPath"
            ]
        );
    }

    #[test]
    fn pod_ids_out_of_range_name_their_field() {
        let pod = serde_json::json!({"spec": {
            "securityContext": {"runAsUser": -1, "runAsGroup": 2147483647,
                "fsGroup": 2147483648_i64, "supplementalGroups": [1, -5]},
            "initContainers": [{"securityContext": {"runAsGroup": 4294967296_i64}}],
            "containers": [{"securityContext": {"runAsUser": 0}},
                {"securityContext": {"runAsUser": 9223372036854775807_i64}}]}});
        let mut causes = Vec::new();
        check_pod_ids(&pod, &mut causes);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.securityContext.runAsUser",
                "spec.securityContext.fsGroup",
                "spec.securityContext.supplementalGroups[1]",
                "spec.initContainers[0].securityContext.runAsGroup",
                "spec.containers[1].securityContext.runAsUser",
            ]
        );
        assert!(causes[0].message.contains("-1"), "{}", causes[0].message);
    }

    #[test]
    fn malformed_probes_name_their_field() {
        let pod = serde_json::json!({"spec": {"containers": [{"name": "c", "image": "busybox",
            "livenessProbe": {"httpGet": {"port": 70000}, "periodSeconds": 0},
            "readinessProbe": {"exec": {"command": []}, "tcpSocket": {"port": 80}},
            "startupProbe": {}}]}});
        let mut causes = Vec::new();
        check_containers(&pod, "spec.containers", &mut causes);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.containers[0].livenessProbe.httpGet.port",
                "spec.containers[0].livenessProbe.periodSeconds",
                "spec.containers[0].readinessProbe.tcpSocket",
                "spec.containers[0].readinessProbe.exec.command",
                "spec.containers[0].startupProbe.exec",
            ]
        );
    }
}
