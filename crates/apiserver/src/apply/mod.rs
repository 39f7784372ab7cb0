//! Server-side apply and managed fields (`metadata.managedFields`), modelled on Kubernetes'
//! structured-merge-diff: every write records which manager owns which fields; a `PATCH` with
//! `application/apply-patch+yaml` merges the manager's intent by the kind's schema and fails
//! with 409 when it would change another manager's field (unless `force=true`).

pub mod fieldset;
pub mod managed;
pub mod shape;

use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult, Cause};
use crate::meta::{meta_mut, now_rfc3339};
use crate::resources::Resource;
use crate::router::Req;
use fieldset::{FieldSet, Pe};
use managed::{Entry, Op};
use shape::{Fields, Node};

pub const APPLY_PATCH: &str = "application/apply-patch+yaml";

/// Whether a PATCH's content type asks for server-side apply.
pub fn is_apply(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|b| b.trim().eq_ignore_ascii_case(APPLY_PATCH))
}

/// The manager a write is recorded under: `?fieldManager`, else the User-Agent's product
/// (`kubectl/v1.33.0 (linux/amd64)…` → `kubectl`), as kube-apiserver derives it.
pub fn manager(req: &Req) -> ApiResult<String> {
    if let Some(m) = req.q("fieldManager") {
        check_manager(m)?;
        return Ok(m.to_string());
    }
    let ua = req.header("user-agent");
    let prefix: String = ua
        .split('/')
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(128)
        .collect();
    Ok(prefix)
}

fn check_manager(m: &str) -> ApiResult<()> {
    if m.chars().count() > 128 {
        return Err(ApiError::bad_request(format!(
            "fieldManager: Too long: may not be longer than 128 (got {} characters)",
            m.chars().count()
        )));
    }
    if m.chars().any(|c| c.is_control()) {
        return Err(ApiError::bad_request(
            "fieldManager: Invalid value: must only contain printable characters",
        ));
    }
    Ok(())
}

/// Fields no manager owns: identity and server-set metadata (and `metadata` itself).
fn ignored(p: &[Pe]) -> bool {
    let f = |i: usize| match p.get(i) {
        Some(Pe::Field(s)) => Some(s.as_str()),
        _ => None,
    };
    match (f(0), f(1)) {
        (Some("apiVersion" | "kind"), _) => true,
        (Some("metadata"), None) => true,
        (Some("metadata"), Some(m)) => matches!(
            m,
            "name"
                | "namespace"
                | "uid"
                | "resourceVersion"
                | "generation"
                | "creationTimestamp"
                | "selfLink"
                | "managedFields"
                | "deletionTimestamp"
                | "deletionGracePeriodSeconds"
        ),
        _ => false,
    }
}

/// Which part of an object a request may own: the status subresource only `status`, the
/// main resource of a kind with a status subresource everything else.
#[derive(Clone, Copy)]
struct Scope {
    has_status: bool,
    status_sub: bool,
}

impl Scope {
    fn keeps(&self, p: &[Pe]) -> bool {
        if ignored(p) {
            return false;
        }
        let is_status = p.first() == Some(&Pe::Field("status".into()));
        if self.status_sub {
            is_status
        } else {
            !(self.has_status && is_status)
        }
    }
}

fn fields_of(res: &Resource, scope: Scope, v: &Value) -> Fields {
    let mut obj = v.clone();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    let schema = crate::openapi::for_resource(res);
    let empty = Map::new();
    let node = match &schema {
        Some((root, defs)) => Node {
            defs,
            schema: Some(root),
        },
        None => Node {
            defs: &empty,
            schema: None,
        },
    };
    let mut f = shape::fields(node, &obj);
    f.set.0.retain(|p| scope.keeps(p));
    f.leaves.retain(|p, _| scope.keeps(p));
    f
}

/// `[{}]`: the client asks for the managed fields to be dropped, as Kubernetes allows.
fn is_reset(v: &Value) -> bool {
    v.as_array()
        .is_some_and(|a| a.len() == 1 && a[0].as_object().is_some_and(Map::is_empty))
}

fn entries_of(obj: Option<&Value>) -> Vec<Entry> {
    // Unreadable stored entries are dropped rather than failing every later write.
    obj.and_then(|o| o.pointer("/metadata/managedFields"))
        .map(|v| managed::decode(v).unwrap_or_default())
        .unwrap_or_default()
}

fn store_entries(obj: &mut Value, entries: &[Entry]) {
    let m = meta_mut(obj);
    if entries.is_empty() {
        m.remove("managedFields");
    } else {
        m.insert("managedFields".into(), managed::encode(entries));
    }
}

/// Record a create, update or patch (`old` None for a create) by `manager` on `new`: the
/// fields it added or changed become its own (an Update entry), taken from other managers.
/// Managed fields the client sent replace the stored ones (kubectl's apply migration does
/// this); `[{}]` clears them.
pub fn track_update(
    res: &Resource,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: &str,
) -> ApiResult<()> {
    let sent = meta_mut(new).remove("managedFields");
    if sent.as_ref().is_some_and(is_reset) {
        return Ok(());
    }
    let mut entries = match &sent {
        Some(v) if subresource.is_empty() && v.as_array().is_some_and(|a| !a.is_empty()) => {
            managed::decode(v).map_err(|e| {
                ApiError::invalid(
                    &res.kind,
                    crate::meta::str_at(new, "/metadata/name").unwrap_or(""),
                    &res.group,
                    vec![Cause::invalid("metadata.managedFields", e)],
                )
            })?
        }
        _ => entries_of(old),
    };
    let scope = Scope {
        has_status: res.status,
        status_sub: subresource == "status",
    };
    let before = old.map(|o| fields_of(res, scope, o)).unwrap_or_default();
    let after = fields_of(res, scope, new);
    let cmp = managed::compare(&before, &after);
    let me = Entry::new(manager, Op::Update, &res.api_version(), subresource);
    managed::update(&mut entries, me, &cmp, &now_rfc3339());
    managed::cap(&mut entries);
    store_entries(new, &entries);
    Ok(())
}

/// Server-side apply of `config` by `manager` onto `live` (None: the object does not exist
/// and the configuration is the whole of it). Returns the object to store, managed fields set.
pub fn apply(
    res: &Resource,
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
    subresource: &str,
) -> ApiResult<Value> {
    if config.pointer("/metadata/managedFields").is_some() {
        return Err(ApiError::bad_request(
            "metadata.managedFields must be nil in an applied configuration",
        ));
    }
    let scope = Scope {
        has_status: res.status,
        status_sub: subresource == "status",
    };
    let schema = crate::openapi::for_resource(res);
    let empty = Map::new();
    let node = match &schema {
        Some((root, defs)) => Node {
            defs,
            schema: Some(root),
        },
        None => Node {
            defs: &empty,
            schema: None,
        },
    };
    let mut base = live.cloned().unwrap_or_else(|| Value::Object(Map::new()));
    meta_mut(&mut base).remove("managedFields");
    let mut merged = shape::merge(node, &base, config);
    let mut entries = entries_of(live);
    let before = fields_of(res, scope, &base);
    let after = fields_of(res, scope, &merged);
    let applied = fields_of(res, scope, config).set;
    let cmp = managed::compare(&before, &after);
    let me = Entry::new(manager, Op::Apply, &res.api_version(), subresource);
    let last = managed::apply(
        &mut entries,
        me,
        applied.clone(),
        &cmp,
        force,
        &now_rfc3339(),
    )
    .map_err(|c| managed::conflict_error(&c))?;
    prune(node, &mut merged, &entries, &last.difference(&applied));
    managed::cap(&mut entries);
    store_entries(&mut merged, &entries);
    Ok(merged)
}

/// Remove from `obj` the fields a manager stopped applying that no manager (itself included)
/// owns any more, except list-map key fields while their item stays.
fn prune(node: Node, obj: &mut Value, entries: &[Entry], dropped: &FieldSet) {
    for p in dropped.0.iter().rev() {
        if entries.iter().any(|e| e.set.has_prefix(p)) {
            continue;
        }
        if let (Some(Pe::Field(f)), Some(parent @ Pe::Key(_))) =
            (p.last(), p.len().checked_sub(2).and_then(|i| p.get(i)))
        {
            if parent.key_fields().iter().any(|(k, _)| k == f) {
                continue;
            }
        }
        shape::remove(node, obj, p);
    }
}

#[cfg(test)]
mod tests;
