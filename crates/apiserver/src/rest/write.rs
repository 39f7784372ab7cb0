//! create, update, patch, delete, deletecollection. Every write is one compare-and-swap on one
//! key, so a failed request leaves nothing half-written.

use std::sync::Arc;

use axum::response::Response;
use base64::Engine;
use serde_json::{json, Value};
use yun_store::Outcome;

use super::options::{dry_run, options_invalid};
use super::{check_type_meta, decode, get_kv, object_response, parse_body, put};
use crate::defaults::{self, Write};
use crate::error::{ApiError, ApiResult};
use crate::meta::{meta_mut, name_suffix, new_uid, now_rfc3339, str_at, strings_at};
use crate::openapi::fields;
use crate::patch::{self, PatchType};
use crate::resources::{Resource, Schema};
use crate::router::{Req, Target};
use crate::validation;
use crate::Api;

pub async fn create(api: &Arc<Api>, t: &Target, req: &Req) -> ApiResult<Response> {
    let mut obj = parse_body(req)?;
    let warnings = fields::check(&t.res, req, &obj, None)?;
    let dry_run = dry_run(req)?;
    crate::apply::track_update(&t.res, None, &mut obj, &crate::apply::manager(req)?, "")?;
    let out = create_object(api, &t.res, t.ns.as_deref(), obj, dry_run).await?;
    Ok(fields::with_warnings(
        object_response(t, req, 201, out),
        &warnings,
    ))
}

/// Create `obj` in namespace `ns` (None for cluster-scoped kinds or to take the object's own).
pub async fn create_object(
    api: &Api,
    res: &Resource,
    ns: Option<&str>,
    mut obj: Value,
    dry_run: bool,
) -> ApiResult<Value> {
    check_type_meta(res, &mut obj)?;
    let meta = meta_mut(&mut obj);
    let ns = if res.namespaced {
        let body_ns = meta
            .get("namespace")
            .and_then(Value::as_str)
            .map(str::to_string);
        let ns = match (ns, body_ns.as_deref()) {
            (Some(p), Some(b)) if p != b => {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object ({b}) does not match the namespace sent on the request ({p})"
                )))
            }
            (Some(p), _) => p.to_string(),
            (None, Some(b)) => b.to_string(),
            (None, None) => "default".to_string(),
        };
        meta.insert("namespace".into(), Value::String(ns.clone()));
        Some(ns)
    } else {
        meta.remove("namespace");
        None
    };
    let name = match meta.get("name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => match meta.get("generateName").and_then(Value::as_str) {
            Some(g) if !g.is_empty() => format!("{g}{}", name_suffix()),
            _ => {
                return Err(ApiError::invalid(
                    &res.kind,
                    "",
                    &res.group,
                    vec![crate::error::Cause::required("metadata.name")],
                ))
            }
        },
    };
    if let Some(cause) = validation::check_name(res, &name) {
        return Err(ApiError::invalid(&res.kind, &name, &res.group, vec![cause]));
    }
    meta.insert("name".into(), Value::String(name.clone()));
    meta.insert("uid".into(), Value::String(new_uid()));
    meta.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
    meta.insert("generation".into(), json!(1));
    meta.remove("resourceVersion");
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    meta.remove("selfLink");
    if res.status && res.kind != "Node" {
        // Status is the controllers' to write, through the status subresource (a kubelet
        // registers its Node with a status, so that one stays).
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
    }
    super::admission::defaulted(api, res, ns.as_deref(), &name, &mut obj).await?;
    normalize(res, &mut obj);
    validation::validate(res, &obj)?;
    crate::rbac::escalation::check(res, &obj)?;
    super::encode(&obj)?;
    if let Some(ns) = &ns {
        super::namespaces::admit_create(api, res, ns, &name).await?;
        crate::resourcequota::admit(api, res, ns, &name, &obj, None, dry_run).await?;
    }
    if dry_run {
        return Ok(obj);
    }
    let key = res.key(ns.as_deref(), &name);
    if is_service(res) {
        crate::services::allocate(api, &key, &mut obj).await?;
    }
    let stored = put(api, &key, &obj, Some(0))
        .await?
        .ok_or_else(|| ApiError::already_exists(&res.qualified(), &name))?;
    if res.kind == "CustomResourceDefinition" {
        api.registry.register_crd(&stored);
    }
    if res.kind == "Namespace" && res.group.is_empty() {
        // Seed the namespace's `default` ServiceAccount at once, so a pod created right after
        // the namespace is admitted; the controllers' loop keeps it (recreates it if deleted).
        defaults::serviceaccount::seed_default(api, &name).await?;
    }
    Ok(stored)
}

/// The subresource a write is recorded under in managedFields.
fn subresource(status: bool) -> &'static str {
    if status {
        "status"
    } else {
        ""
    }
}

fn is_service(res: &Resource) -> bool {
    res.kind == "Service" && res.group.is_empty()
}

/// Write-time conversions: a Secret's `stringData` is merged into `data` (base64), as the
/// API does; it is never stored.
pub(super) fn normalize(res: &Resource, obj: &mut Value) {
    if res.kind != "Secret" || !res.group.is_empty() {
        return;
    }
    if obj.get("type").is_none() {
        obj["type"] = "Opaque".into();
    }
    let Some(Value::Object(plain)) = obj.as_object_mut().and_then(|m| m.remove("stringData"))
    else {
        return;
    };
    if !obj.get("data").is_some_and(Value::is_object) {
        obj["data"] = json!({});
    }
    for (k, v) in plain {
        let text = v
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string());
        obj["data"][k] = Value::String(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

/// Everything but metadata and status: a change here bumps `metadata.generation`.
fn spec_part(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

/// Merge a client's new version with the stored one: the server owns identity fields, and
/// the main resource and the status subresource each change only their own part.
pub(super) fn merge_update(
    res: &Resource,
    cur: &Value,
    new: Value,
    status_only: bool,
) -> ApiResult<Value> {
    let mut out = if status_only {
        let mut o = cur.clone();
        o["status"] = new.get("status").cloned().unwrap_or(Value::Null);
        o
    } else {
        let mut o = new;
        if res.status {
            match cur.get("status") {
                Some(s) => o["status"] = s.clone(),
                None => {
                    if let Some(m) = o.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        o
    };
    if is_service(res) && !status_only {
        crate::services::keep_ip(cur, &mut out)?;
    }
    if res.group == "batch" && res.kind == "Job" && !status_only {
        crate::batch::keep_generated(cur, &mut out);
    }
    if !status_only {
        // Defaults first, so a client that leaves them out changes nothing (and the
        // generation stays); an object stored before a default existed is compared with
        // its defaulted self for the same reason.
        defaults::apply(res, &mut out, Write::Update);
        if res.kind == "Namespace" && res.group.is_empty() {
            // spec.finalizers changes only through the finalize subresource.
            if !out.get("spec").is_some_and(Value::is_object) {
                out["spec"] = json!({});
            }
            out["spec"]["finalizers"] = cur
                .pointer("/spec/finalizers")
                .cloned()
                .unwrap_or_else(|| json!([]));
        }
    }
    let mut cur_defaulted = cur.clone();
    if !status_only {
        defaults::apply(res, &mut cur_defaulted, Write::Update);
    }
    let cur_meta = cur.get("metadata").cloned().unwrap_or(Value::Null);
    let new_name = str_at(&out, "/metadata/name").unwrap_or("");
    let cur_name = str_at(cur, "/metadata/name").unwrap_or("");
    if !new_name.is_empty() && new_name != cur_name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({new_name}) does not match the name on the URL ({cur_name})"
        )));
    }
    let mut generation = cur_meta
        .get("generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    if !status_only && spec_part(&out) != spec_part(&cur_defaulted) {
        generation += 1;
    }
    let m = meta_mut(&mut out);
    for k in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        match cur_meta.get(k) {
            Some(v) => m.insert(k.into(), v.clone()),
            None => m.remove(k),
        };
    }
    m.insert("generation".into(), json!(generation));
    m.remove("selfLink");
    Ok(out)
}

/// Write an updated object with CAS on `cur_rev`; an object being deleted whose last finalizer
/// is gone is removed instead. Returns None on a lost race.
pub(super) async fn commit(
    api: &Api,
    t: &Target,
    out: Value,
    cur_rev: i64,
) -> ApiResult<Option<Value>> {
    let key = t.key();
    let deleting = out.pointer("/metadata/deletionTimestamp").is_some();
    if deleting && super::namespaces::finalized(&t.res, &out) {
        return match api.store.delete(&key, Some(cur_rev)).await? {
            Outcome::Done(d) => {
                let mut o = out;
                crate::meta::set_rv(&mut o, d.revision);
                Ok(Some(o))
            }
            Outcome::Conflict { .. } => Ok(None),
        };
    }
    if t.res.kind == "PriorityClass" && t.res.group == crate::priority::GROUP {
        crate::priority::admit_class(api, &out).await?;
    }
    let stored = put(api, &key, &out, Some(cur_rev)).await?;
    if let Some(s) = &stored {
        if t.res.kind == "CustomResourceDefinition" {
            api.registry.register_crd(s);
        }
    }
    Ok(stored)
}

/// Validate an object an update or patch (or apply) produced from `cur`: the object on its
/// own, and, for a write of the main resource, the rules on what may change (immutable
/// fields); a status write cannot touch the spec, so those do not apply to it.
pub(super) fn validate_change(
    res: &Resource,
    cur: &Value,
    out: &Value,
    status: bool,
) -> Result<(), ApiError> {
    validation::validate(res, out)?;
    if !status {
        validation::validate_update(res, cur, out)?;
        crate::rbac::escalation::check(res, out)?;
    }
    Ok(())
}

pub async fn update(api: &Arc<Api>, t: &Target, req: &Req, status: bool) -> ApiResult<Response> {
    let mut new = parse_body(req)?;
    check_type_meta(&t.res, &mut new)?;
    let warnings = fields::check(&t.res, req, &new, None)?;
    let kv = get_kv(api, &t.res, &t.key(), t.name()).await?;
    let cur = decode(&kv)?;
    if let Some(rv) = str_at(&new, "/metadata/resourceVersion").filter(|s| !s.is_empty()) {
        if rv != kv.mod_revision.to_string() {
            return Err(ApiError::conflict(&t.res.qualified(), t.name()));
        }
    }
    let mut out = merge_update(&t.res, &cur, new, status)?;
    let manager = crate::apply::manager(req)?;
    crate::apply::track_update(&t.res, Some(&cur), &mut out, &manager, subresource(status))?;
    normalize(&t.res, &mut out);
    validate_change(&t.res, &cur, &out, status)?;
    super::admission::admit_change(api, t, &cur, &out, status, dry_run(req)?).await?;
    if dry_run(req)? {
        return Ok(fields::with_warnings(
            object_response(t, req, 200, out),
            &warnings,
        ));
    }
    let stored = commit(api, t, out, kv.mod_revision)
        .await?
        .ok_or_else(|| ApiError::conflict(&t.res.qualified(), t.name()))?;
    Ok(fields::with_warnings(
        object_response(t, req, 200, stored),
        &warnings,
    ))
}

pub async fn patch(api: &Arc<Api>, t: &Target, req: &Req, status: bool) -> ApiResult<Response> {
    if crate::apply::is_apply(req.header("content-type")) {
        return super::apply::apply_patch(api, t, req, status).await;
    }
    if req.q("force").is_some() {
        return Err(options_invalid(
            req,
            "force",
            "FieldValueForbidden",
            "Forbidden: may not be specified for non-apply patch".into(),
        ));
    }
    let manager = crate::apply::manager(req)?;
    let dry = dry_run(req)?;
    let mut kind = PatchType::from_content_type(req.header("content-type"))?;
    if kind == PatchType::Strategic && matches!(t.res.schema, Schema::Custom(_)) {
        // Custom resources have no patch strategies: a plain merge is what applies.
        kind = PatchType::Merge;
    }
    // A patch without a resourceVersion retries on a concurrent write, like kube-apiserver.
    for _ in 0..8 {
        let kv = get_kv(api, &t.res, &t.key(), t.name()).await?;
        let cur = decode(&kv)?;
        let mut new = patch::apply(kind, &cur, &req.body)?;
        check_type_meta(&t.res, &mut new)?;
        let warnings = fields::check(&t.res, req, &new, Some(&cur))?;
        let rv = str_at(&new, "/metadata/resourceVersion").map(str::to_string);
        let pinned = rv.as_deref() != Some(kv.mod_revision.to_string().as_str());
        if pinned && rv.is_some() {
            return Err(ApiError::conflict(&t.res.qualified(), t.name()));
        }
        let mut out = merge_update(&t.res, &cur, new, status)?;
        crate::apply::track_update(&t.res, Some(&cur), &mut out, &manager, subresource(status))?;
        normalize(&t.res, &mut out);
        validate_change(&t.res, &cur, &out, status)?;
        super::admission::admit_change(api, t, &cur, &out, status, dry).await?;
        if let Some(r) = write_back(api, t, req, out, kv.mod_revision, dry, &warnings).await? {
            return Ok(r);
        }
    }
    Err(ApiError::conflict(&t.res.qualified(), t.name()))
}

/// The end of a patch or apply: the object as it would be when nothing is to be written
/// (`skip`: a dry run, or an apply that changes nothing), else the CAS write of `out` over
/// revision `rev`. None when a concurrent write won the race (the caller reads again).
pub(super) async fn write_back(
    api: &Api,
    t: &Target,
    req: &Req,
    out: Value,
    rev: i64,
    skip: bool,
    warnings: &[String],
) -> ApiResult<Option<Response>> {
    let done = |obj| fields::with_warnings(object_response(t, req, 200, obj), warnings);
    if skip {
        return Ok(Some(done(out)));
    }
    Ok(commit(api, t, out, rev).await?.map(done))
}

/// DeleteOptions from the body (kubectl sends one) or the query.
fn delete_options(req: &Req) -> ApiResult<Value> {
    let mut opts = if req.body.is_empty() {
        json!({})
    } else {
        parse_body(req)?
    };
    if let Some(p) = req.q("propagationPolicy") {
        opts["propagationPolicy"] = Value::String(p.to_string());
    }
    if req.flag("orphanDependents") {
        opts["propagationPolicy"] = "Orphan".into();
    }
    if opts.get("orphanDependents") == Some(&Value::Bool(true)) {
        opts["propagationPolicy"] = "Orphan".into();
    }
    if dry_run(req)? {
        opts["dryRun"] = json!(["All"]);
    }
    if let Some(bad) = opts
        .get("dryRun")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|v| v.as_str() != Some("All")))
    {
        return Err(options_invalid(
            req,
            "dryRun",
            "FieldValueNotSupported",
            format!("Unsupported value: {bad}: supported values: \"All\""),
        ));
    }
    Ok(opts)
}

/// DeleteOptions ask for a dry run (`dryRun: ["All"]`, in the body or as `?dryRun=All`).
fn is_dry_run(opts: &Value) -> bool {
    opts.get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}

pub async fn delete(api: &Arc<Api>, t: &Target, req: &Req) -> ApiResult<Response> {
    let opts = delete_options(req)?;
    let out = delete_object(api, &t.res, t.ns.as_deref(), t.name(), &opts).await?;
    Ok(crate::proto::respond(req.output, 200, &out))
}

/// Delete one object honouring finalizers, preconditions and the propagation policy.
pub async fn delete_object(
    api: &Api,
    res: &Resource,
    ns: Option<&str>,
    name: &str,
    opts: &Value,
) -> ApiResult<Value> {
    let key = res.key(ns, name);
    for _ in 0..8 {
        let kv = get_kv(api, res, &key, name).await?;
        let mut cur = decode(&kv)?;
        let uid = str_at(&cur, "/metadata/uid").unwrap_or("").to_string();
        if let Some(p) = opts.get("preconditions") {
            let want_uid = p.get("uid").and_then(Value::as_str);
            let want_rv = p.get("resourceVersion").and_then(Value::as_str);
            if want_uid.is_some_and(|u| u != uid)
                || want_rv.is_some_and(|r| r != kv.mod_revision.to_string())
            {
                return Err(ApiError::conflict(&res.qualified(), name));
            }
        }
        let policy = opts
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .unwrap_or("Background");
        if !matches!(policy, "Background" | "Foreground" | "Orphan") {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy {policy:?} is not one of Background, Foreground, Orphan"
            )));
        }
        let namespace = super::namespaces::is_namespace(res);
        if namespace {
            super::namespaces::check_deletable(name)?;
        }
        if is_dry_run(opts) {
            // Checked as a real delete would be, then nothing is written (kubectl diff, delete
            // --dry-run=server).
            return Ok(cur);
        }
        // A pod on a node ends gracefully: it is marked with deletionTimestamp and a grace
        // period, its node agent stops the containers within it and then deletes the pod for
        // good (grace 0). Unbound pods, and grace 0, go at once.
        if res.kind == "Pod" && res.group.is_empty() {
            let bound = str_at(&cur, "/spec/nodeName").is_some_and(|n| !n.is_empty());
            let grace = opts
                .get("gracePeriodSeconds")
                .and_then(Value::as_i64)
                .or_else(|| {
                    cur.pointer("/spec/terminationGracePeriodSeconds")
                        .and_then(Value::as_i64)
                })
                .unwrap_or(30);
            if bound && grace > 0 {
                if cur.pointer("/metadata/deletionTimestamp").is_some() {
                    // A running grace period may be shortened, never lengthened.
                    let current = cur
                        .pointer("/metadata/deletionGracePeriodSeconds")
                        .and_then(Value::as_i64)
                        .unwrap_or(grace);
                    if grace >= current {
                        return Ok(cur);
                    }
                }
                let m = meta_mut(&mut cur);
                m.entry("deletionTimestamp")
                    .or_insert_with(|| Value::String(now_rfc3339()));
                m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                match put(api, &key, &cur, Some(kv.mod_revision)).await? {
                    Some(stored) => return Ok(stored),
                    None => continue,
                }
            }
        }
        // As kube-apiserver does, the policy becomes a finalizer that the garbage collector
        // (in the controller manager) carries out and then removes: `orphan` (dependents lose
        // their reference first) or `foregroundDeletion` (dependents go first). The policies
        // exclude each other; the latest request's wins.
        let mut finalizers = strings_at(&cur, "/metadata/finalizers");
        let policy_finalizer = match policy {
            "Orphan" => Some("orphan"),
            "Foreground" => Some("foregroundDeletion"),
            _ => None,
        };
        if let Some(f) = policy_finalizer {
            finalizers.retain(|x| x != "orphan" && x != "foregroundDeletion");
            finalizers.push(f.into());
        }
        // A namespace also waits for its spec.finalizers (the namespace controller's).
        let spec_finalizers = namespace && !strings_at(&cur, "/spec/finalizers").is_empty();
        if !finalizers.is_empty() || spec_finalizers {
            // Mark for deletion; the object goes once its finalizers are removed.
            if cur.pointer("/metadata/deletionTimestamp").is_none() || policy_finalizer.is_some() {
                let m = meta_mut(&mut cur);
                m.entry("deletionTimestamp")
                    .or_insert_with(|| Value::String(now_rfc3339()));
                m.insert("deletionGracePeriodSeconds".into(), json!(0));
                if !finalizers.is_empty() {
                    m.insert("finalizers".into(), json!(finalizers));
                }
                if namespace {
                    super::namespaces::mark_terminating(&mut cur);
                }
                match put(api, &key, &cur, Some(kv.mod_revision)).await? {
                    Some(stored) => return Ok(stored),
                    None => continue,
                }
            }
            return Ok(cur);
        }
        match api.store.delete(&key, Some(kv.mod_revision)).await? {
            Outcome::Done(d) => {
                crate::meta::set_rv(&mut cur, d.revision);
                if res.kind == "CustomResourceDefinition" {
                    crate::cascade::remove_crd(api, &cur).await?;
                }
                return Ok(cur);
            }
            Outcome::Conflict { .. } => continue,
        }
    }
    Err(ApiError::conflict(&res.qualified(), name))
}

pub async fn delete_collection(api: &Arc<Api>, t: &Target, req: &Req) -> ApiResult<Response> {
    let opts = delete_options(req)?;
    let page = super::read::list_page(api, t, req).await?;
    let mut deleted = Vec::new();
    for obj in page.items {
        let name = str_at(&obj, "/metadata/name").unwrap_or("").to_string();
        let ns = str_at(&obj, "/metadata/namespace").map(str::to_string);
        match delete_object(api, &t.res, ns.as_deref(), &name, &opts).await {
            Ok(o) => deleted.push(o),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(crate::proto::respond(
        req.output,
        200,
        &json!({"kind": format!("{}List", t.res.kind), "apiVersion": t.res.api_version(),
                "metadata": {"resourceVersion": page.revision.to_string()}, "items": deleted}),
    ))
}

/// `default`, `kube-system`, `kube-public` and `kube-node-lease` exist from the first start.
pub async fn ensure_default_namespaces(api: &Api) -> anyhow::Result<()> {
    let Some(res) = api.registry.find("", "v1", "namespaces") else {
        return Ok(());
    };
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        match create_object(api, &res, None, obj, false).await {
            Ok(_) => {}
            // An existing namespace from an older version may lack its account.
            Err(e) if e.code == 409 => defaults::serviceaccount::seed_default(api, ns)
                .await
                .map_err(|e| anyhow::anyhow!("creating {ns}/default: {}", e.message))?,
            Err(e) => anyhow::bail!("creating namespace {ns}: {}", e.message),
        }
    }
    Ok(())
}
