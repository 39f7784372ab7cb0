//! A request's authorization attributes from its method, path and query (kube's
//! `RequestInfoFactory`): resource requests under `/api/v1` and `/apis/GROUP/VERSION`, anything
//! else a non-resource URL.

use std::collections::HashMap;

use axum::http::Method;

use super::rules::Attributes;
use crate::auth::UserInfo;

/// Subresources that open a stream into a pod: kube checks them as `create` (the POST of
/// SPDY clients), and a websocket's GET needs `create` as well as `get`.
pub fn is_stream(sub: &str) -> bool {
    matches!(sub, "exec" | "attach" | "portforward" | "proxy")
}

pub fn of_request(
    user: &UserInfo,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
) -> Attributes {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut a = Attributes {
        user: user.clone(),
        path: path.to_string(),
        ..Default::default()
    };
    let (group, rest) = match segs.as_slice() {
        ["api", _v, rest @ ..] if !rest.is_empty() => ("", rest),
        ["apis", g, _v, rest @ ..] if !rest.is_empty() => (*g, rest),
        _ => {
            a.verb = method.as_str().to_ascii_lowercase();
            if matches!(*method, Method::GET | Method::HEAD) {
                a.verb = "get".into();
            }
            return a;
        }
    };
    a.resource_request = true;
    a.api_group = group.to_string();
    let mut rest = rest;
    let mut watch = matches!(query.get("watch").map(String::as_str), Some("1" | "true"));
    if let ["watch", r @ ..] = rest {
        watch = true;
        rest = r;
    }
    // `namespaces/NS/RESOURCE/...` is namespaced; `namespaces/NS[/sub]` is the namespace itself.
    if let ["namespaces", ns, r @ ..] = rest {
        a.namespace = ns.to_string();
        if r.is_empty()
            || (r.len() == 1 && group.is_empty() && matches!(r[0], "status" | "finalize"))
        {
            a.resource = "namespaces".into();
            a.name = ns.to_string();
            a.subresource = r.first().map(|s| s.to_string()).unwrap_or_default();
        } else {
            rest = r;
        }
    }
    if a.resource.is_empty() {
        a.resource = rest.first().map(|s| s.to_string()).unwrap_or_default();
        a.name = rest.get(1).map(|s| s.to_string()).unwrap_or_default();
        a.subresource = rest.get(2).map(|s| s.to_string()).unwrap_or_default();
    }
    let named = !a.name.is_empty();
    a.verb = match *method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ if watch => "watch",
        _ if named => "get",
        _ => "list",
    }
    .to_string();
    // A watch of one object by name is a watch on the collection with a field selector.
    if a.verb == "watch" {
        if let Some(n) = query
            .get("fieldSelector")
            .and_then(|f| f.strip_prefix("metadata.name="))
        {
            a.name = n.to_string();
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(method: Method, path: &str, q: &[(&str, &str)]) -> Attributes {
        let q = q
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        of_request(&UserInfo::anonymous(), &method, path, &q)
    }

    #[test]
    fn parse() {
        let a = at(Method::GET, "/api/v1/namespaces/default/pods", &[]);
        assert_eq!(
            (a.verb.as_str(), a.namespace.as_str(), a.resource.as_str()),
            ("list", "default", "pods")
        );
        let a = at(Method::GET, "/api/v1/pods", &[("watch", "true")]);
        assert_eq!((a.verb.as_str(), a.namespace.as_str()), ("watch", ""));
        let a = at(Method::POST, "/api/v1/namespaces/d/pods/p/exec", &[]);
        assert_eq!(
            (a.verb.as_str(), a.name.as_str(), a.subresource.as_str()),
            ("create", "p", "exec")
        );
        let a = at(
            Method::DELETE,
            "/apis/apps/v1/namespaces/d/deployments",
            &[],
        );
        assert_eq!(
            (a.verb.as_str(), a.api_group.as_str()),
            ("deletecollection", "apps")
        );
        let a = at(Method::GET, "/api/v1/namespaces/d", &[]);
        assert_eq!(
            (a.resource.as_str(), a.name.as_str(), a.namespace.as_str()),
            ("namespaces", "d", "d")
        );
        let a = at(Method::PUT, "/api/v1/namespaces/d/finalize", &[]);
        assert_eq!(
            (a.verb.as_str(), a.subresource.as_str()),
            ("update", "finalize")
        );
        let a = at(Method::GET, "/apis/apps/v1", &[]);
        assert!(!a.resource_request);
        assert_eq!(a.verb, "get");
        let a = at(Method::GET, "/api/v1/watch/namespaces/d/pods", &[]);
        assert_eq!((a.verb.as_str(), a.namespace.as_str()), ("watch", "d"));
    }
}
