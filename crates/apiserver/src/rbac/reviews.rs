//! The review kinds: `authorization.k8s.io/v1` SelfSubjectAccessReview, SelfSubjectRulesReview
//! and SubjectAccessReview, and `authentication.k8s.io` SelfSubjectReview (v1, and v1beta1 /
//! v1alpha1 for older kubectl). Create-only, answered from the authorizer, never stored.

use std::collections::BTreeMap;

use axum::response::Response;
use serde_json::{json, Value};

use super::rules::Attributes;
use crate::auth::UserInfo;
use crate::error::{ApiError, ApiResult};
use crate::router::Req;
use crate::Api;

/// Answer `POST /apis/GROUP/VERSION/PLURAL` if it is a review; None for any other path.
pub fn handle(
    api: &Api,
    group: &str,
    version: &str,
    plural: &str,
    req: &Req,
) -> Option<ApiResult<Response>> {
    let known = match (group, plural) {
        (
            "authorization.k8s.io",
            "selfsubjectaccessreviews" | "selfsubjectrulesreviews" | "subjectaccessreviews",
        ) => version == "v1",
        ("authentication.k8s.io", "selfsubjectreviews") => {
            matches!(version, "v1" | "v1beta1" | "v1alpha1")
        }
        _ => false,
    };
    if !known {
        return None;
    }
    if req.method != axum::http::Method::POST {
        return Some(Err(ApiError::method_not_allowed(format!(
            "{} is not supported on {plural}",
            req.method
        ))));
    }
    Some(answer(api, version, plural, req))
}

fn answer(api: &Api, version: &str, plural: &str, req: &Req) -> ApiResult<Response> {
    let out = crate::proto::negotiate(req.header("accept"), true)?;
    let mut obj = if plural == "selfsubjectreviews" && req.body.is_empty() {
        json!({})
    } else {
        crate::rest::parse_body(req)?
    };
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    let status = match plural {
        "selfsubjectaccessreviews" => access(api, &req.user, &spec)?,
        "subjectaccessreviews" => access(api, &subject(&spec)?, &spec)?,
        "selfsubjectrulesreviews" => rules(api, &req.user, &spec),
        _ => {
            obj["apiVersion"] = json!(format!("authentication.k8s.io/{version}"));
            obj["kind"] = json!("SelfSubjectReview");
            json!({"userInfo": user_json(&req.user)})
        }
    };
    obj["status"] = status;
    if obj.get("metadata").is_none_or(|m| !m.is_object()) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]["creationTimestamp"] = json!(crate::meta::now_rfc3339());
    Ok(crate::proto::respond(out, 201, &obj))
}

fn user_json(u: &UserInfo) -> Value {
    let mut v = json!({"username": u.name, "groups": u.groups});
    if !u.uid.is_empty() {
        v["uid"] = json!(u.uid);
    }
    if !u.extra.is_empty() {
        v["extra"] = json!(u.extra);
    }
    v
}

/// The user a SubjectAccessReview asks about.
fn subject(spec: &Value) -> ApiResult<UserInfo> {
    let s = |k: &str| {
        spec.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let groups: Vec<String> = spec
        .get("groups")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if s("user").is_empty() && groups.is_empty() {
        return Err(ApiError::invalid(
            "SubjectAccessReview",
            "",
            "authorization.k8s.io",
            vec![crate::error::Cause::invalid(
                "spec.user",
                "Invalid value: \"\": at least one of user or group must be specified",
            )],
        ));
    }
    let extra: BTreeMap<String, Vec<String>> = spec
        .get("extra")
        .and_then(|e| serde_json::from_value(e.clone()).ok())
        .unwrap_or_default();
    Ok(UserInfo {
        name: s("user"),
        uid: s("uid"),
        groups,
        extra,
    })
}

fn access(api: &Api, user: &UserInfo, spec: &Value) -> ApiResult<Value> {
    let s = |p: &str| {
        spec.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let a = if spec.get("resourceAttributes").is_some() {
        Attributes {
            user: user.clone(),
            verb: s("/resourceAttributes/verb"),
            resource_request: true,
            namespace: s("/resourceAttributes/namespace"),
            api_group: s("/resourceAttributes/group"),
            resource: s("/resourceAttributes/resource"),
            subresource: s("/resourceAttributes/subresource"),
            name: s("/resourceAttributes/name"),
            path: String::new(),
        }
    } else if spec.get("nonResourceAttributes").is_some() {
        Attributes {
            user: user.clone(),
            verb: s("/nonResourceAttributes/verb"),
            path: s("/nonResourceAttributes/path"),
            ..Default::default()
        }
    } else {
        return Err(ApiError::bad_request(
            "spec: exactly one of resourceAttributes or nonResourceAttributes must be set",
        ));
    };
    let allowed = api.authz.allows(&a);
    let mut status = json!({"allowed": allowed});
    if allowed && !user.in_group(crate::auth::MASTERS) {
        status["reason"] = json!("RBAC: allowed by a binding");
    }
    Ok(status)
}

fn rules(api: &Api, user: &UserInfo, spec: &Value) -> Value {
    let ns = spec.get("namespace").and_then(Value::as_str).unwrap_or("");
    let held = api.authz.read().rules_for(user, ns);
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for r in held {
        if r.non_resource_urls.is_empty() {
            let mut v =
                json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if !r.resource_names.is_empty() {
                v["resourceNames"] = json!(r.resource_names);
            }
            resource_rules.push(v);
        } else {
            non_resource_rules
                .push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
        }
    }
    json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false})
}
