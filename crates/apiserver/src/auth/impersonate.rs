//! Impersonation (`Impersonate-User`, `-Group`, `-Uid`, `-Extra-*` headers; kubectl `--as`,
//! `--as-group`): each requested attribute needs verb `impersonate` on users, groups, uids or
//! userextras/KEY, and the impersonated identity is what every later check sees.

use axum::http::HeaderMap;

use super::UserInfo;
use crate::error::{ApiError, ApiResult};
use crate::rbac::rules::Attributes;
use crate::rbac::Authorizer;

fn values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

/// The identity the request acts as: `user` itself without impersonation headers.
pub fn apply(authz: &Authorizer, user: UserInfo, headers: &HeaderMap) -> ApiResult<UserInfo> {
    let name = values(headers, "impersonate-user");
    let groups = values(headers, "impersonate-group");
    let uid = values(headers, "impersonate-uid");
    let extras: Vec<(String, &str)> = headers
        .iter()
        .filter_map(|(k, v)| {
            let key = k.as_str().strip_prefix("impersonate-extra-")?;
            Some((key.to_string(), v.to_str().ok()?))
        })
        .collect();
    if name.is_empty() {
        if !groups.is_empty() || !uid.is_empty() || !extras.is_empty() {
            return Err(ApiError::new(
                500,
                "InternalError",
                "requested impersonation of groups, uid or extra without impersonating a user",
            ));
        }
        return Ok(user);
    }
    let check = |resource: &str, sub: &str, name: &str, ns: &str| -> ApiResult<()> {
        let a = Attributes {
            user: user.clone(),
            verb: "impersonate".into(),
            resource_request: true,
            // kube asks about users, groups and service accounts in the core group, and
            // about uids and extras in authentication.k8s.io.
            api_group: if matches!(resource, "uids" | "userextras") {
                "authentication.k8s.io"
            } else {
                ""
            }
            .into(),
            namespace: ns.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            ..Default::default()
        };
        if authz.allows(&a) {
            return Ok(());
        }
        let qualified = if a.api_group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{}", a.api_group)
        };
        Err(ApiError::forbidden(&qualified, name, &a.denial()))
    };
    let target = name[0];
    match target
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, sa)) => check("serviceaccounts", "", sa, ns)?,
        None => check("users", "", target, "")?,
    }
    for g in &groups {
        check("groups", "", g, "")?;
    }
    for u in &uid {
        check("uids", "", u, "")?;
    }
    let mut out = UserInfo {
        name: target.to_string(),
        uid: uid.first().map(|s| s.to_string()).unwrap_or_default(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        ..Default::default()
    };
    for (key, value) in extras {
        check("userextras", &key, value, "")?;
        out.extra.entry(key).or_default().push(value.to_string());
    }
    if let Some((ns, _)) = target
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        // A service account's groups come with it, as kube adds them.
        for g in [
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{ns}"),
        ] {
            if !out.in_group(&g) {
                out.groups.push(g);
            }
        }
    }
    Ok(if target == super::ANONYMOUS {
        out
    } else {
        out.authenticated()
    })
}
