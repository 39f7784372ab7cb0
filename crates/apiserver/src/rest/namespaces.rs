//! Namespace lifecycle, as kube-apiserver runs it: a DELETE marks the namespace
//! (`deletionTimestamp`, `status.phase: Terminating`) and nothing more; the namespace
//! controller (in the controller manager) deletes its content and then removes the
//! `kubernetes` finalizer from `spec.finalizers` through the `finalize` subresource; the
//! namespace goes once both `spec.finalizers` and `metadata.finalizers` are empty. Meanwhile
//! no new content may be created in it, and the namespaces the system needs are never deleted.

use std::sync::Arc;

use axum::response::Response;
use serde_json::{json, Value};

use super::{check_type_meta, decode, get_kv, object_response, parse_body};
use crate::error::{ApiError, ApiResult};
use crate::meta::{str_at, strings_at};
use crate::resources::Resource;
use crate::router::{Req, Target};
use crate::Api;

/// Namespaces that may not be deleted (kube-apiserver's immortal namespaces).
pub const IMMORTAL: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

pub fn is_namespace(res: &Resource) -> bool {
    res.kind == "Namespace" && res.group.is_empty()
}

/// Whether an object marked for deletion may now be removed: no finalizer left (for a
/// namespace, in `spec.finalizers` too).
pub fn finalized(res: &Resource, obj: &Value) -> bool {
    strings_at(obj, "/metadata/finalizers").is_empty()
        && (!is_namespace(res) || strings_at(obj, "/spec/finalizers").is_empty())
}

/// Refuse a DELETE of a namespace the system needs.
pub fn check_deletable(name: &str) -> ApiResult<()> {
    if IMMORTAL.contains(&name) {
        return Err(ApiError::forbidden(
            "namespaces",
            name,
            "this namespace may not be deleted",
        ));
    }
    Ok(())
}

/// What a DELETE does to a namespace on top of marking it: it is Terminating from now on.
pub fn mark_terminating(obj: &mut Value) {
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    obj["status"]["phase"] = json!("Terminating");
}

/// Admit a create of `name` (a `res`) into namespace `ns`: the namespace must exist and not
/// be terminating (kube's NamespaceLifecycle admission, with its message and cause).
pub async fn admit_create(api: &Api, res: &Resource, ns: &str, name: &str) -> ApiResult<()> {
    let key = format!("/registry/core/namespaces/{ns}");
    let Some(kv) = api.store.get(&key).await? else {
        return Err(ApiError::not_found("namespaces", ns));
    };
    let namespace = decode(&kv)?;
    let terminating = namespace.pointer("/metadata/deletionTimestamp").is_some()
        || str_at(&namespace, "/status/phase") == Some("Terminating");
    if terminating {
        let mut e = ApiError::forbidden(
            &res.qualified(),
            name,
            &format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ),
        );
        if let Some(d) = e.details.as_mut() {
            d["causes"] = json!([{
                "reason": "NamespaceTerminating",
                "message": format!("namespace {ns} is being terminated"),
                "field": "metadata.namespace",
            }]);
        }
        return Err(e);
    }
    Ok(())
}

/// PUT namespaces/NAME/finalize: replace `spec.finalizers` (only that); a terminating
/// namespace left with no finalizer at all is removed.
pub async fn finalize(api: &Arc<Api>, t: &Target, req: &Req) -> ApiResult<Response> {
    let mut body = parse_body(req)?;
    check_type_meta(&t.res, &mut body)?;
    let wanted = match body.pointer("/spec/finalizers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|f| {
                f.as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "Namespace",
                            t.name(),
                            "",
                            vec![crate::error::Cause::invalid(
                                "spec.finalizers",
                                format!("Invalid value: {f}: must be a non-empty string"),
                            )],
                        )
                    })
            })
            .collect::<ApiResult<Vec<_>>>()?,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "spec.finalizers must be a list of strings, not {other}"
            )))
        }
    };
    let pinned = str_at(&body, "/metadata/resourceVersion")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    for _ in 0..8 {
        let kv = get_kv(api, &t.res, &t.key(), t.name()).await?;
        if pinned
            .as_ref()
            .is_some_and(|rv| *rv != kv.mod_revision.to_string())
        {
            return Err(ApiError::conflict(&t.res.qualified(), t.name()));
        }
        let mut cur = decode(&kv)?;
        if !cur.get("spec").is_some_and(Value::is_object) {
            cur["spec"] = json!({});
        }
        cur["spec"]["finalizers"] = json!(wanted);
        if let Some(out) = super::write::commit(api, t, cur, kv.mod_revision).await? {
            return Ok(object_response(t, req, 200, out));
        }
        if pinned.is_some() {
            return Err(ApiError::conflict(&t.res.qualified(), t.name()));
        }
    }
    Err(ApiError::conflict(&t.res.qualified(), t.name()))
}
