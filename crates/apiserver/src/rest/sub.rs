//! The scale (deployments, replicasets, custom resources that declare one) and binding (pods)
//! subresources.

use std::sync::Arc;

use axum::http::Method;
use axum::response::Response;
use serde_json::{json, Value};

use super::{decode, get_kv, parse_body, put};
use crate::error::{ApiError, ApiResult};
use crate::meta::str_at;
use crate::patch::{self, PatchType};
use crate::resources::Resource;
use crate::router::{Req, Target};
use crate::selectors::label_selector_string;
use crate::Api;

/// The pointers of (spec replicas, status replicas) of a resource's objects.
fn replica_pointers(res: &Resource) -> (&str, &str) {
    match &res.scale_paths {
        Some(p) => (&p.spec_replicas, &p.status_replicas),
        None => ("/spec/replicas", "/status/replicas"),
    }
}

/// The autoscaling/v1 Scale view of a workload (or of a custom resource, through its CRD's
/// paths: a replica count it does not have yet reads 0, as in kube).
fn scale_of(res: &Resource, obj: &Value) -> Value {
    let meta = obj.get("metadata").cloned().unwrap_or(Value::Null);
    let pick = |k: &str| meta.get(k).cloned().unwrap_or(Value::Null);
    let (spec, status) = replica_pointers(res);
    let (default, selector) = match &res.scale_paths {
        Some(p) => (
            0,
            p.label_selector
                .as_deref()
                .and_then(|l| obj.pointer(l))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        ),
        None => (
            1,
            obj.pointer("/spec/selector")
                .map(label_selector_string)
                .unwrap_or_default(),
        ),
    };
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": pick("name"),
            "namespace": pick("namespace"),
            "uid": pick("uid"),
            "resourceVersion": pick("resourceVersion"),
            "creationTimestamp": pick("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer(spec).cloned().unwrap_or(json!(default))},
        "status": {
            "replicas": obj.pointer(status).cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

/// Set `value` at `pointer`, making the objects on the way.
fn set_at(obj: &mut Value, pointer: &str, value: Value) {
    let mut at = obj;
    for part in pointer.trim_start_matches('/').split('/') {
        if !at.is_object() {
            *at = json!({});
        }
        at = at
            .as_object_mut()
            .expect("an object")
            .entry(part)
            .or_insert(Value::Null);
    }
    *at = value;
}

pub async fn scale(api: &Arc<Api>, t: &Target, req: &Req) -> ApiResult<Response> {
    let writes = req.method != Method::GET;
    let manager = crate::apply::manager(req)?;
    let dry = writes && super::options::dry_run(req)?;
    for _ in 0..8 {
        let kv = get_kv(api, &t.res, &t.key(), t.name()).await?;
        let mut obj = decode(&kv)?;
        let current = scale_of(&t.res, &obj);
        let wanted = match req.method {
            Method::GET => return Ok(crate::proto::respond(req.output, 200, &current)),
            Method::PUT => parse_body(req)?,
            _ => {
                let kind = PatchType::from_content_type(req.header("content-type"))?;
                patch::apply(kind, &current, &req.body)?
            }
        };
        if let Some(rv) = str_at(&wanted, "/metadata/resourceVersion").filter(|s| !s.is_empty()) {
            if rv != kv.mod_revision.to_string() {
                return Err(ApiError::conflict(&t.res.qualified(), t.name()));
            }
        }
        let replicas = match wanted.pointer("/spec/replicas") {
            Some(r) => r.as_i64().filter(|r| *r >= 0).ok_or_else(|| {
                ApiError::invalid(
                    "Scale",
                    t.name(),
                    "autoscaling",
                    vec![crate::error::Cause::invalid(
                        "spec.replicas",
                        format!("Invalid value: {r}: must be greater than or equal to 0"),
                    )],
                )
            })?,
            None => {
                return Err(ApiError::bad_request(
                    "spec.replicas is required in a Scale",
                ))
            }
        };
        let before = obj.clone();
        let (spec_pointer, _) = replica_pointers(&t.res);
        set_at(&mut obj, spec_pointer, json!(replicas));
        if obj.pointer(spec_pointer) != current.pointer("/spec/replicas") {
            let generation = obj
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            obj["metadata"]["generation"] = json!(generation + 1);
        }
        crate::apply::track_update(&t.res, Some(&before), &mut obj, &manager, "scale")?;
        if dry {
            return Ok(crate::proto::respond(
                req.output,
                200,
                &scale_of(&t.res, &obj),
            ));
        }
        if let Some(stored) = put(api, &t.key(), &obj, Some(kv.mod_revision)).await? {
            return Ok(crate::proto::respond(
                req.output,
                200,
                &scale_of(&t.res, &stored),
            ));
        }
    }
    Err(ApiError::conflict(&t.res.qualified(), t.name()))
}

/// POST pods/NAME/binding: assign the pod to a node once (the scheduler's write).
pub async fn binding(api: &Arc<Api>, t: &Target, req: &Req) -> ApiResult<Response> {
    let dry = super::options::dry_run(req)?;
    let body = parse_body(req)?;
    let node = body
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                "Binding",
                t.name(),
                "",
                vec![crate::error::Cause::required("target.name")],
            )
        })?
        .to_string();
    let kv = get_kv(api, &t.res, &t.key(), t.name()).await?;
    let mut pod = decode(&kv)?;
    if let Some(existing) = str_at(&pod, "/spec/nodeName").filter(|n| !n.is_empty()) {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on pods/binding \"{}\": pod {} is already assigned to node \"{existing}\"",
                t.name(),
                t.name()
            ),
        ));
    }
    pod["spec"]["nodeName"] = Value::String(node);
    if dry {
        return Ok(crate::proto::respond(
            req.output,
            201,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ));
    }
    put(api, &t.key(), &pod, Some(kv.mod_revision))
        .await?
        .ok_or_else(|| ApiError::conflict("pods", t.name()))?;
    Ok(crate::proto::respond(
        req.output,
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;

    #[test]
    fn custom_resources_scale_through_their_crd_paths() {
        let registry = Registry::new();
        let crd = json!({"spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "subresources": {"status": {},
                "scale": {"specReplicasPath": ".spec.size", "statusReplicasPath": ".status.count",
                    "labelSelectorPath": ".status.selector"}}}]}});
        registry.register_crd(&crd);
        let res = registry.find("example.com", "v1", "widgets").unwrap();
        assert!(res.scale);
        let obj = json!({"metadata": {"name": "w"}, "spec": {},
            "status": {"count": 2, "selector": "app=w"}});
        let scale = scale_of(&res, &obj);
        assert_eq!(scale["spec"]["replicas"], 0);
        assert_eq!(scale["status"], json!({"replicas": 2, "selector": "app=w"}));
        let mut obj = json!({"metadata": {"name": "w"}});
        set_at(&mut obj, "/spec/size", json!(3));
        assert_eq!(scale_of(&res, &obj)["spec"]["replicas"], 3);

        let deployments = registry.find("apps", "v1", "deployments").unwrap();
        let d = json!({"spec": {"selector": {"matchLabels": {"app": "web"}}}});
        assert_eq!(scale_of(&deployments, &d)["spec"]["replicas"], 1);
        assert_eq!(scale_of(&deployments, &d)["status"]["selector"], "app=web");
    }
}
