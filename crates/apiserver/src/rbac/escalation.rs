//! Privilege-escalation prevention (kube's RBAC storage checks): a Role or ClusterRole may
//! only be written with rules its writer holds, unless they may `escalate`; a binding may only
//! name a role whose rules its writer holds, unless they may `bind` it.
//!
//! The writer travels in a task-local set by the router around each request, so the check runs
//! at the one place every create, update, patch and apply passes (validation of the final
//! object); writes the server makes itself (defaults, aggregation) run outside it and pass.

use std::sync::Arc;

use serde_json::Value;

use super::rules::{covers, Attributes, Rule};
use super::{Authorizer, GROUP};
use crate::auth::UserInfo;
use crate::error::{ApiError, ApiResult};
use crate::resources::Resource;

tokio::task_local! {
    /// The user a request is served for, and the authorizer to ask about them.
    pub static REQUESTER: (UserInfo, Arc<Authorizer>);
}

fn str_at<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

pub fn check(res: &Resource, obj: &Value) -> ApiResult<()> {
    if res.group != GROUP {
        return Ok(());
    }
    let Ok((user, authz)) = REQUESTER.try_with(|r| r.clone()) else {
        return Ok(());
    };
    if user.in_group(crate::auth::MASTERS) {
        return Ok(());
    }
    let ns = str_at(obj, "/metadata/namespace").to_string();
    let name = str_at(obj, "/metadata/name").to_string();
    let may = |verb: &str, resource: &str, name: &str| {
        authz.allows(&Attributes {
            user: user.clone(),
            verb: verb.into(),
            resource_request: true,
            namespace: ns.clone(),
            api_group: GROUP.into(),
            resource: resource.into(),
            name: name.into(),
            ..Default::default()
        })
    };
    let (wanted, verb) = match res.kind.as_str() {
        "Role" | "ClusterRole" => {
            if may("escalate", &res.plural, &name) {
                return Ok(());
            }
            (Rule::all_of(obj), "escalate")
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let role = str_at(obj, "/roleRef/name");
            let role_kind = str_at(obj, "/roleRef/kind");
            let plural = if role_kind == "Role" {
                "roles"
            } else {
                "clusterroles"
            };
            if may("bind", plural, role) {
                return Ok(());
            }
            let idx = authz.read();
            let rules = match role_kind {
                "Role" => idx.role(&ns, role),
                _ => idx.cluster_role(role),
            };
            (rules.map(|r| r.to_vec()).unwrap_or_default(), "bind")
        }
        _ => return Ok(()),
    };
    let held = authz.read().rules_for(&user, &ns);
    if covers(&held, &wanted) {
        return Ok(());
    }
    let groups = serde_json::to_string(&user.groups).unwrap_or_default();
    Err(ApiError::forbidden(
        &res.qualified(),
        &name,
        &format!(
            "user {:?} (groups={groups}) is attempting to grant RBAC permissions not currently held (and may not {verb})",
            user.name
        ),
    ))
}
