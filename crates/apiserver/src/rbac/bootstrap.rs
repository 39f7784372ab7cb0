//! The default ClusterRoles and ClusterRoleBindings kube ships and users rely on, created at
//! startup when absent and reconciled as kube does: missing rules and subjects are added unless
//! the object says `rbac.authorization.kubernetes.io/autoupdate: "false"`; nothing a user added
//! is taken away.

use serde_json::{json, Value};

use super::rules::Rule;
use crate::Api;

const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

fn meta(name: &str, labels: Value) -> Value {
    let mut l = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    if let (Some(m), Some(extra)) = (l.as_object_mut(), labels.as_object()) {
        m.extend(extra.clone());
    }
    json!({"name": name, "labels": l, "annotations": {AUTOUPDATE: "true"}})
}

fn role(name: &str, labels: Value, rules: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
           "metadata": meta(name, labels), "rules": rules})
}

fn aggregated(name: &str, labels: Value, to: &str) -> Value {
    let mut r = role(name, labels, json!([]));
    r["aggregationRule"] = json!({"clusterRoleSelectors": [
        {"matchLabels": {format!("rbac.authorization.k8s.io/aggregate-to-{to}"): "true"}}]});
    r
}

fn binding(name: &str, groups: &[&str]) -> Value {
    let subjects: Vec<Value> = groups
        .iter()
        .map(|g| json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": g}))
        .collect();
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
           "metadata": meta(name, json!({})),
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
           "subjects": subjects})
}

const READ: [&str; 3] = ["get", "list", "watch"];
const WRITE: [&str; 6] = [
    "create",
    "delete",
    "deletecollection",
    "patch",
    "update",
    "get",
];

pub fn cluster_roles() -> Vec<Value> {
    let agg = |to: &str| json!({format!("rbac.authorization.k8s.io/aggregate-to-{to}"): "true"});
    vec![
        role(
            "cluster-admin",
            json!({}),
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                   {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        ),
        aggregated("admin", json!({}), "admin"),
        aggregated("edit", agg("admin"), "edit"),
        aggregated("view", agg("edit"), "view"),
        role(
            "system:aggregate-to-admin",
            agg("admin"),
            json!([{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"],
                    "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]},
                   {"apiGroups": ["authorization.k8s.io"], "resources": ["localsubjectaccessreviews"], "verbs": ["create"]}]),
        ),
        role(
            "system:aggregate-to-edit",
            agg("edit"),
            json!([{"apiGroups": [""], "resources": ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy",
                     "configmaps", "endpoints", "persistentvolumeclaims", "replicationcontrollers", "secrets",
                     "serviceaccounts", "services", "services/proxy"], "verbs": WRITE},
                   {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"]},
                   {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
                   {"apiGroups": ["apps"], "resources": ["daemonsets", "deployments", "deployments/rollback",
                     "deployments/scale", "replicasets", "replicasets/scale", "statefulsets", "statefulsets/scale"], "verbs": WRITE},
                   {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": WRITE},
                   {"apiGroups": ["batch"], "resources": ["cronjobs", "jobs"], "verbs": WRITE},
                   {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": WRITE},
                   {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": WRITE}]),
        ),
        role(
            "system:aggregate-to-view",
            agg("view"),
            json!([{"apiGroups": [""], "resources": ["configmaps", "endpoints", "persistentvolumeclaims",
                     "persistentvolumeclaims/status", "pods", "pods/log", "pods/status", "replicationcontrollers",
                     "replicationcontrollers/scale", "replicationcontrollers/status", "serviceaccounts", "services",
                     "services/status", "bindings", "events", "limitranges", "namespaces/status", "resourcequotas",
                     "resourcequotas/status", "namespaces"], "verbs": READ},
                   {"apiGroups": ["apps"], "resources": ["controllerrevisions", "daemonsets", "daemonsets/status",
                     "deployments", "deployments/scale", "deployments/status", "replicasets", "replicasets/scale",
                     "replicasets/status", "statefulsets", "statefulsets/scale", "statefulsets/status"], "verbs": READ},
                   {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers",
                     "horizontalpodautoscalers/status"], "verbs": READ},
                   {"apiGroups": ["batch"], "resources": ["cronjobs", "cronjobs/status", "jobs", "jobs/status"], "verbs": READ},
                   {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets", "poddisruptionbudgets/status"], "verbs": READ},
                   {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": READ}]),
        ),
        // What metrics-server installs for `kubectl top`: the metrics reads, aggregated into
        // view, edit and admin.
        role(
            "system:aggregated-metrics-reader",
            json!({"rbac.authorization.k8s.io/aggregate-to-view": "true",
                   "rbac.authorization.k8s.io/aggregate-to-edit": "true",
                   "rbac.authorization.k8s.io/aggregate-to-admin": "true"}),
            json!([{"apiGroups": ["metrics.k8s.io"], "resources": ["pods", "nodes"], "verbs": READ}]),
        ),
        role(
            "system:discovery",
            json!({}),
            json!([{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez",
                     "/openapi", "/openapi/*", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
        ),
        role(
            "system:basic-user",
            json!({}),
            json!([{"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews",
                     "selfsubjectrulesreviews"], "verbs": ["create"]},
                   {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]}]),
        ),
        // What a workload needs to verify service-account tokens itself (OIDC discovery and
        // the JWKS); kube binds it to every service account, not to anonymous users.
        role(
            "system:service-account-issuer-discovery",
            json!({}),
            json!([{"nonResourceURLs": ["/.well-known/openid-configuration",
                     "/.well-known/openid-configuration/", "/openid/v1/jwks", "/openid/v1/jwks/"],
                    "verbs": ["get"]}]),
        ),
        role(
            "system:public-info-viewer",
            json!({}),
            json!([{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
        ),
    ]
}

pub fn cluster_role_bindings() -> Vec<Value> {
    use crate::auth::{AUTHENTICATED, MASTERS, UNAUTHENTICATED};
    vec![
        binding("cluster-admin", &[MASTERS]),
        binding("system:discovery", &[AUTHENTICATED]),
        binding("system:basic-user", &[AUTHENTICATED]),
        binding(
            "system:service-account-issuer-discovery",
            &["system:serviceaccounts"],
        ),
        binding(
            "system:public-info-viewer",
            &[AUTHENTICATED, UNAUTHENTICATED],
        ),
    ]
}

/// What reconciling adds to `cur` from the default `want` (None: nothing to change).
pub fn reconcile(cur: &Value, want: &Value) -> Option<Value> {
    if cur.pointer(&format!(
        "/metadata/annotations/{}",
        AUTOUPDATE.replace('/', "~1")
    )) == Some(&json!("false"))
    {
        return None;
    }
    let mut out = cur.clone();
    for field in ["rules", "subjects"] {
        let Some(wanted) = want.get(field).and_then(Value::as_array) else {
            continue;
        };
        let have: Vec<Value> = cur
            .get(field)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut merged = have.clone();
        for w in wanted {
            let present = if field == "rules" {
                have.iter()
                    .any(|h| Rule::from_json(h) == Rule::from_json(w))
            } else {
                have.iter()
                    .any(|h| h.get("kind") == w.get("kind") && h.get("name") == w.get("name"))
            };
            if !present {
                merged.push(w.clone());
            }
        }
        out[field] = Value::Array(merged);
    }
    if cur.get("aggregationRule").is_none() && want.get("aggregationRule").is_some() {
        out["aggregationRule"] = want["aggregationRule"].clone();
    }
    (out != *cur).then_some(out)
}

/// Create or reconcile the defaults (before the server answers anyone).
pub async fn ensure(api: &Api) -> anyhow::Result<()> {
    for (plural, objs) in [
        ("clusterroles", cluster_roles()),
        ("clusterrolebindings", cluster_role_bindings()),
    ] {
        let res = api
            .registry
            .find(super::GROUP, "v1", plural)
            .ok_or_else(|| anyhow::anyhow!("{plural} not registered"))?;
        for want in objs {
            let name = want["metadata"]["name"].as_str().unwrap_or("").to_string();
            let key = res.key(None, &name);
            match api.store.get(&key).await? {
                None => {
                    if let Err(e) = crate::rest::create_object(api, &res, None, want, false).await {
                        tracing::warn!("default {plural} {name}: {}", e.message);
                    }
                }
                Some(kv) => {
                    let cur: Value = serde_json::from_slice(&kv.value)?;
                    if let Some(new) = reconcile(&cur, &want) {
                        let bytes =
                            crate::rest::encode(&new).map_err(|e| anyhow::anyhow!(e.message))?;
                        api.store.put(&key, bytes, Some(kv.mod_revision)).await?;
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconcile_adds_and_keeps() {
        let want = binding("system:discovery", &["system:authenticated"]);
        let mut cur = want.clone();
        cur["subjects"] = json!([{"kind": "User", "name": "bob"}]);
        let out = reconcile(&cur, &want).unwrap();
        assert_eq!(out["subjects"].as_array().unwrap().len(), 2);
        assert_eq!(reconcile(&out, &want), None);
        cur["metadata"]["annotations"][AUTOUPDATE] = json!("false");
        assert_eq!(reconcile(&cur, &want), None);
    }
}
