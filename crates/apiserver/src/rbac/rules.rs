//! PolicyRules and what a request asks for: whether a rule allows a request (the authorizer's
//! question) and whether a set of rules covers another (escalation prevention), with kube's
//! wildcard semantics (`*` in any list, `resource/*` and `*/subresource`, `/path/*` URLs).

use serde_json::Value;

use crate::auth::UserInfo;

/// One `rbac.authorization.k8s.io/v1` PolicyRule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(v: &Value, field: &str) -> Vec<String> {
    v.get(field)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl Rule {
    pub fn from_json(v: &Value) -> Rule {
        Rule {
            verbs: strings(v, "verbs"),
            api_groups: strings(v, "apiGroups"),
            resources: strings(v, "resources"),
            resource_names: strings(v, "resourceNames"),
            non_resource_urls: strings(v, "nonResourceURLs"),
        }
    }

    /// The rules of a Role or ClusterRole object.
    pub fn all_of(role: &Value) -> Vec<Rule> {
        role.get("rules")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(Rule::from_json).collect())
            .unwrap_or_default()
    }

    /// Whether this rule allows the request.
    pub fn allows(&self, a: &Attributes) -> bool {
        if !has(&self.verbs, &a.verb) {
            return false;
        }
        if !a.resource_request {
            return self
                .non_resource_urls
                .iter()
                .any(|u| url_matches(u, &a.path));
        }
        if !has(&self.api_groups, &a.api_group) {
            return false;
        }
        // `pods`, `pods/log`, `*`, `*/log` or `pods/*`, compared without building strings:
        // this runs for every rule on every checked request.
        let sub = a.subresource.as_str();
        let resource_ok = self.resources.iter().any(|r| {
            if r == "*" {
                return true;
            }
            match r.split_once('/') {
                None => sub.is_empty() && *r == a.resource,
                Some((base, rs)) => {
                    !sub.is_empty()
                        && (base == a.resource || base == "*")
                        && (rs == sub || rs == "*" && base == a.resource)
                }
            }
        });
        resource_ok
            && (self.resource_names.is_empty()
                || (!a.name.is_empty() && self.resource_names.contains(&a.name)))
    }
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

fn url_matches(rule: &str, path: &str) -> bool {
    rule == "*"
        || rule == path
        || rule
            .strip_suffix('*')
            .is_some_and(|prefix| path.starts_with(prefix))
}

/// What a request asks to do (kube's `authorizer.Attributes`).
#[derive(Clone, Debug, Default)]
pub struct Attributes {
    pub user: UserInfo,
    pub verb: String,
    pub resource_request: bool,
    pub namespace: String,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    /// The URL path, for a non-resource request.
    pub path: String,
}

impl Attributes {
    /// kube's denial text: `User "alice" cannot list resource "pods" in API group "" in the
    /// namespace "default"`.
    pub fn denial(&self) -> String {
        if !self.resource_request {
            return format!(
                "User {:?} cannot {} path {:?}",
                self.user.name, self.verb, self.path
            );
        }
        let resource = if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        };
        let scope = if self.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace {:?}", self.namespace)
        };
        format!(
            "User {:?} cannot {} resource {:?} in API group {:?} {scope}",
            self.user.name, self.verb, resource, self.api_group
        )
    }
}

/// Whether `owner` allows everything `wanted` grants: each verb/group/resource/name (or URL)
/// `wanted` names is allowed by some rule of `owner` (kube's `ConfirmNoEscalation`). A wildcard
/// in `wanted` must be matched by a wildcard in `owner`.
pub fn covers(owner: &[Rule], wanted: &[Rule]) -> bool {
    wanted.iter().all(|w| covers_one(owner, w))
}

fn covers_one(owner: &[Rule], w: &Rule) -> bool {
    let names: Vec<Option<&String>> = if w.resource_names.is_empty() {
        vec![None]
    } else {
        w.resource_names.iter().map(Some).collect()
    };
    for verb in &w.verbs {
        for url in &w.non_resource_urls {
            if !owner.iter().any(|o| {
                has_exact(&o.verbs, verb) && o.non_resource_urls.iter().any(|u| url_matches(u, url))
            }) {
                return false;
            }
        }
        for group in &w.api_groups {
            for resource in &w.resources {
                for name in &names {
                    let ok = owner.iter().any(|o| {
                        has_exact(&o.verbs, verb)
                            && has_exact(&o.api_groups, group)
                            && o.resources.iter().any(|r| resource_covers(r, resource))
                            && (o.resource_names.is_empty()
                                || name.is_some_and(|n| o.resource_names.contains(n)))
                    });
                    if !ok {
                        return false;
                    }
                }
            }
        }
    }
    true
}

/// `want` is in `list` or `list` has the wildcard (a wildcard wanted needs a wildcard held).
fn has_exact(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

fn resource_covers(owner: &str, want: &str) -> bool {
    if owner == "*" || owner == want {
        return true;
    }
    // `pods/*` covers `pods/exec`; `*/status` covers `pods/status`.
    if let Some(base) = owner.strip_suffix("/*") {
        return want.split_once('/').is_some_and(|(b, _)| b == base);
    }
    if let Some(sub) = owner.strip_prefix("*/") {
        return want.split_once('/').is_some_and(|(_, s)| s == sub);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: Value) -> Rule {
        Rule::from_json(&v)
    }

    fn attrs(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource_request: true,
            namespace: "default".into(),
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn matching() {
        let pods =
            rule(json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}));
        assert!(pods.allows(&attrs("list", "", "pods", "", "")));
        assert!(pods.allows(&attrs("get", "", "pods", "", "p")));
        assert!(!pods.allows(&attrs("delete", "", "pods", "", "p")));
        assert!(!pods.allows(&attrs("get", "apps", "pods", "", "p")));
        assert!(!pods.allows(&attrs("get", "", "pods", "log", "p")));
        let sub = rule(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*/status"]}));
        assert!(sub.allows(&attrs("update", "apps", "deployments", "status", "d")));
        assert!(!sub.allows(&attrs("update", "apps", "deployments", "", "d")));
        let base = rule(json!({"verbs": ["create"], "apiGroups": [""], "resources": ["pods/*"]}));
        assert!(base.allows(&attrs("create", "", "pods", "exec", "p")));
        assert!(!base.allows(&attrs("create", "", "pods", "", "")));
        let named = rule(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"]}),
        );
        assert!(named.allows(&attrs("get", "", "configmaps", "", "a")));
        assert!(!named.allows(&attrs("get", "", "configmaps", "", "b")));
        assert!(!named.allows(&attrs("list", "", "configmaps", "", "")));
        let urls = rule(json!({"verbs": ["get"], "nonResourceURLs": ["/healthz", "/apis/*"]}));
        let path = |p: &str| Attributes {
            verb: "get".into(),
            path: p.into(),
            ..Default::default()
        };
        assert!(urls.allows(&path("/healthz")));
        assert!(urls.allows(&path("/apis/apps/v1")));
        assert!(!urls.allows(&path("/api")));
        assert!(!urls.allows(&attrs("get", "", "healthz", "", "")));
    }

    #[test]
    fn escalation() {
        let admin = vec![rule(
            json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
        )];
        let reader = vec![rule(
            json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log"]}),
        )];
        assert!(covers(&admin, &reader));
        assert!(!covers(&reader, &admin));
        let list_pods = vec![rule(
            json!({"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}),
        )];
        assert!(covers(&reader, &list_pods));
        let named = vec![rule(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["x"]}),
        )];
        assert!(covers(&reader, &named));
        assert!(!covers(&named, &reader));
        let sub = vec![rule(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/*"]}),
        )];
        assert!(covers(
            &sub,
            &[rule(
                json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]})
            )]
        ));
        let urls = vec![rule(
            json!({"verbs": ["get"], "nonResourceURLs": ["/apis/*"]}),
        )];
        assert!(covers(
            &urls,
            &[rule(
                json!({"verbs": ["get"], "nonResourceURLs": ["/apis/apps"]})
            )]
        ));
        assert!(!covers(
            &urls,
            &[rule(json!({"verbs": ["get"], "nonResourceURLs": ["*"]}))]
        ));
    }
}
