//! Write-time rules of the RBAC kinds (kube's `pkg/apis/rbac/validation`): a rule names verbs
//! and either resources (with apiGroups) or non-resource URLs (ClusterRole only); a binding's
//! roleRef is a Role or ClusterRole of this group, and its subjects are Users, Groups or
//! ServiceAccounts with the apiGroup each kind takes. roleRef is immutable (validation.rs).

use serde_json::Value;

use crate::error::Cause;
use crate::resources::Resource;

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn list_len(v: &Value, k: &str) -> usize {
    v.get(k).and_then(Value::as_array).map_or(0, Vec::len)
}

pub fn validate(res: &Resource, obj: &Value, causes: &mut Vec<Cause>) {
    match res.kind.as_str() {
        "Role" | "ClusterRole" => {
            let cluster = res.kind == "ClusterRole";
            for (i, r) in obj
                .get("rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let f = |k: &str| format!("rules[{i}].{k}");
                if list_len(r, "verbs") == 0 {
                    causes.push(Cause::required(&f("verbs")));
                }
                let urls = list_len(r, "nonResourceURLs");
                let resources = list_len(r, "resources");
                if urls > 0 && !cluster {
                    causes.push(Cause::invalid(
                        &f("nonResourceURLs"),
                        "Invalid value: namespaced rules cannot apply to non-resource URLs",
                    ));
                }
                if urls > 0 && (resources > 0 || list_len(r, "apiGroups") > 0) {
                    causes.push(Cause::invalid(&f("nonResourceURLs"), "Invalid value: rules cannot apply to both regular resources and non-resource URLs"));
                }
                if urls == 0 && resources == 0 {
                    causes.push(Cause::required(&f("resources")));
                }
                if resources > 0 && list_len(r, "apiGroups") == 0 {
                    causes.push(Cause::required(&f("apiGroups")));
                }
            }
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let role_ref = obj.get("roleRef").cloned().unwrap_or_default();
            let allowed: &[&str] = if res.kind == "RoleBinding" {
                &["Role", "ClusterRole"]
            } else {
                &["ClusterRole"]
            };
            if !allowed.contains(&s(&role_ref, "kind")) {
                causes.push(Cause {
                    field: "roleRef.kind".into(),
                    kind: "FieldValueNotSupported",
                    message: format!(
                        "Unsupported value: {:?}: supported values: {}",
                        s(&role_ref, "kind"),
                        allowed
                            .iter()
                            .map(|k| format!("{k:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
            if s(&role_ref, "apiGroup") != super::GROUP {
                causes.push(Cause {
                    field: "roleRef.apiGroup".into(),
                    kind: "FieldValueNotSupported",
                    message: format!(
                        "Unsupported value: {:?}: supported values: \"{}\"",
                        s(&role_ref, "apiGroup"),
                        super::GROUP
                    ),
                });
            }
            if s(&role_ref, "name").is_empty() {
                causes.push(Cause::required("roleRef.name"));
            }
            for (i, sub) in obj
                .get("subjects")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let f = |k: &str| format!("subjects[{i}].{k}");
                if s(sub, "name").is_empty() {
                    causes.push(Cause::required(&f("name")));
                }
                let (kind, group) = (s(sub, "kind"), s(sub, "apiGroup"));
                match kind {
                    "ServiceAccount" => {
                        if !group.is_empty() {
                            causes.push(Cause {
                                field: f("apiGroup"),
                                kind: "FieldValueNotSupported",
                                message: format!("Unsupported value: {group:?}: supported values: \"\""),
                            });
                        }
                        if res.kind == "ClusterRoleBinding" && s(sub, "namespace").is_empty() {
                            causes.push(Cause::required(&f("namespace")));
                        }
                    }
                    "User" | "Group" => {
                        // Empty is what kube defaults to the RBAC group.
                        if !group.is_empty() && group != super::GROUP {
                            causes.push(Cause {
                                field: f("apiGroup"),
                                kind: "FieldValueNotSupported",
                                message: format!("Unsupported value: {group:?}: supported values: \"{}\"", super::GROUP),
                            });
                        }
                    }
                    other => causes.push(Cause {
                        field: f("kind"),
                        kind: "FieldValueNotSupported",
                        message: format!("Unsupported value: {other:?}: supported values: \"ServiceAccount\", \"User\", \"Group\""),
                    }),
                }
            }
        }
        _ => {}
    }
}
