//! `PATCH` with `application/apply-patch+yaml`: server-side apply (see `crate::apply` for the
//! merge and ownership rules). The body is the manager's whole intent for the object, in
//! YAML or JSON; an object that does not exist is created from it.

use std::sync::Arc;

use axum::response::Response;
use serde_json::Value;

use super::options::{dry_run, options_invalid};
use super::write::{create_object, merge_update, normalize, validate_change, write_back};
use super::{check_type_meta, decode, object_response};
use crate::error::{ApiError, ApiResult};
use crate::meta::str_at;
use crate::openapi::fields;
use crate::router::{Req, Target};
use crate::Api;

pub async fn apply_patch(
    api: &Arc<Api>,
    t: &Target,
    req: &Req,
    status: bool,
) -> ApiResult<Response> {
    if req.q("fieldManager").is_none() {
        return Err(options_invalid(
            req,
            "fieldManager",
            "FieldValueRequired",
            "Required value: is required for apply patch".into(),
        ));
    }
    let manager = crate::apply::manager(req)?;
    let force = req.flag("force");
    let dry = dry_run(req)?;
    let mut config: Value = serde_yaml::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if !config.is_object() {
        return Err(ApiError::bad_request(
            "the applied configuration must be an object",
        ));
    }
    check_type_meta(&t.res, &mut config)?;
    match str_at(&config, "/metadata/name") {
        Some(n) if n != t.name() => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({})",
                t.name()
            )))
        }
        Some(_) => {}
        None => {
            crate::meta::meta_mut(&mut config).insert("name".into(), t.name().into());
        }
    }
    let warnings = fields::check(&t.res, req, &config, None)?;
    let sub = if status { "status" } else { "" };
    for _ in 0..8 {
        let Some(kv) = api.store.get(&t.key()).await? else {
            if status {
                return Err(ApiError::not_found(&t.res.qualified(), t.name()));
            }
            let obj = crate::apply::apply(&t.res, None, &config, &manager, force, "")?;
            match create_object(api, &t.res, t.ns.as_deref(), obj, dry).await {
                Ok(created) => {
                    return Ok(fields::with_warnings(
                        object_response(t, req, 201, created),
                        &warnings,
                    ))
                }
                // Created meanwhile by someone else: apply onto theirs.
                Err(e) if e.reason == "AlreadyExists" => continue,
                Err(e) => return Err(e),
            }
        };
        let cur = decode(&kv)?;
        if let Some(rv) = str_at(&config, "/metadata/resourceVersion").filter(|s| !s.is_empty()) {
            if rv != kv.mod_revision.to_string() {
                return Err(ApiError::conflict(&t.res.qualified(), t.name()));
            }
        }
        let new = crate::apply::apply(&t.res, Some(&cur), &config, &manager, force, sub)?;
        let mut out = merge_update(&t.res, &cur, new, status)?;
        normalize(&t.res, &mut out);
        validate_change(&t.res, &cur, &out, status)?;
        super::admission::admit_change(api, t, &cur, &out, status, dry).await?;
        // An apply that changes nothing writes nothing (Kubernetes' storage skips identical
        // writes too, so the resourceVersion stays).
        let skip = dry || out == cur;
        if let Some(r) = write_back(api, t, req, out, kv.mod_revision, skip, &warnings).await? {
            return Ok(r);
        }
    }
    Err(ApiError::conflict(&t.res.qualified(), t.name()))
}
