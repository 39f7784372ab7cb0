//! The scale (deployments, replicasets) and binding (pods) subresources.

use std::sync::Arc;

use axum::http::Method;
use axum::response::Response;
use serde_json::{json, Value};

use super::{decode, get_kv, parse_body, put};
use crate::error::{ApiError, ApiResult};
use crate::meta::str_at;
use crate::patch::{self, PatchType};
use crate::router::{Req, Target};
use crate::selectors::label_selector_string;
use crate::Api;

/// The autoscaling/v1 Scale view of a workload.
fn scale_of(obj: &Value) -> Value {
    let meta = obj.get("metadata").cloned().unwrap_or(Value::Null);
    let pick = |k: &str| meta.get(k).cloned().unwrap_or(Value::Null);
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
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": obj.pointer("/spec/selector").map(label_selector_string).unwrap_or_default(),
        },
    })
}

pub async fn scale(api: &Arc<Api>, t: &Target, req: &Req) -> ApiResult<Response> {
    let writes = req.method != Method::GET;
    let manager = crate::apply::manager(req)?;
    let dry = writes && super::options::dry_run(req)?;
    for _ in 0..8 {
        let kv = get_kv(api, &t.res, &t.key(), t.name()).await?;
        let mut obj = decode(&kv)?;
        let current = scale_of(&obj);
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
        obj["spec"]["replicas"] = json!(replicas);
        if obj.pointer("/spec/replicas") != current.pointer("/spec/replicas") {
            let generation = obj
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            obj["metadata"]["generation"] = json!(generation + 1);
        }
        crate::apply::track_update(&t.res, Some(&before), &mut obj, &manager, "scale")?;
        if dry {
            return Ok(crate::proto::respond(req.output, 200, &scale_of(&obj)));
        }
        if let Some(stored) = put(api, &t.key(), &obj, Some(kv.mod_revision)).await? {
            return Ok(crate::proto::respond(req.output, 200, &scale_of(&stored)));
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
