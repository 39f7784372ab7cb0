//! Server-side field validation (`?fieldValidation=Strict|Warn|Ignore`): fields a kind's schema
//! does not declare are refused (Strict, 400), reported in `Warning` headers (Warn, the
//! default, as on Kubernetes ≥1.27) or let through (Ignore). kubectl ≥1.27 relies on this for
//! `--validate=strict` once the OpenAPI v3 paths advertise the parameter.

use axum::http::HeaderValue;
use axum::response::Response;
use serde_json::{Map, Value};

use super::schemas::REF_PREFIX;
use crate::error::{ApiError, ApiResult};
use crate::resources::Resource;
use crate::router::Req;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Directive {
    Ignore,
    Warn,
    Strict,
}

pub fn directive(req: &Req) -> ApiResult<Directive> {
    match req.q("fieldValidation") {
        None | Some("Warn") => Ok(Directive::Warn),
        Some("Strict") => Ok(Directive::Strict),
        Some("Ignore") => Ok(Directive::Ignore),
        Some(other) => Err(ApiError::bad_request(format!(
            "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
        ))),
    }
}

/// Follow `$ref` (also wrapped in a one-element `allOf`) to the schema it names.
pub fn resolve<'a>(defs: &'a Map<String, Value>, mut s: &'a Value) -> &'a Value {
    for _ in 0..16 {
        let r = s.get("$ref").or_else(|| {
            s.get("allOf")
                .and_then(Value::as_array)
                .filter(|a| a.len() == 1)
                .and_then(|a| a[0].get("$ref"))
        });
        match r
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix(REF_PREFIX))
            .and_then(|n| defs.get(n))
        {
            Some(next) => s = next,
            None => break,
        }
    }
    s
}

/// The paths (`spec.template.spec.containers[0].foo`) of fields the schema does not declare.
pub fn unknown_fields(defs: &Map<String, Value>, schema: &Value, obj: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(defs, schema, obj, "", &mut out);
    out
}

fn walk(defs: &Map<String, Value>, schema: &Value, obj: &Value, path: &str, out: &mut Vec<String>) {
    let s = resolve(defs, schema);
    if s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
        || s.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
    {
        return;
    }
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match obj {
        Value::Object(o) => {
            let props = s.get("properties").and_then(Value::as_object);
            let extra = s.get("additionalProperties").filter(|a| a.is_object());
            if props.is_none() && extra.is_none() {
                // A free-form object (RawExtension, a schema-less field): anything goes.
                return;
            }
            let embedded = s.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true));
            for (k, v) in o {
                match (props.and_then(|p| p.get(k)), extra) {
                    (Some(p), _) | (None, Some(p)) => walk(defs, p, v, &join(k), out),
                    (None, None)
                        if embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") => {
                    }
                    (None, None) => out.push(join(k)),
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = s.get("items") {
                for (i, v) in a.iter().enumerate() {
                    walk(defs, items, v, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// Check `obj` (a request's object) for undeclared fields; `before` is the stored object a
/// patch started from, whose own undeclared fields are not the request's doing. Returns the
/// warnings to send (Warn), or the 400 (Strict).
pub fn check(
    res: &Resource,
    req: &Req,
    obj: &Value,
    before: Option<&Value>,
) -> ApiResult<Vec<String>> {
    let d = directive(req)?;
    if d == Directive::Ignore {
        return Ok(Vec::new());
    }
    let Some((root, defs)) = super::for_resource(res) else {
        return Ok(Vec::new());
    };
    let mut unknown = unknown_fields(&defs, &root, obj);
    if let Some(b) = before {
        let old = unknown_fields(&defs, &root, b);
        unknown.retain(|f| !old.contains(f));
    }
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    let listed: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect();
    if d == Directive::Strict {
        let kind = &res.kind;
        return Err(ApiError::bad_request(format!(
            "{kind} in version {:?} cannot be handled as a {kind}: strict decoding error: {}",
            res.version,
            listed.join(", ")
        )));
    }
    Ok(listed)
}

/// Add `Warning: 299 - "…"` headers, as Kubernetes reports warnings.
pub fn with_warnings(mut r: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - {:?}", w);
        if let Ok(v) = HeaderValue::from_str(&text) {
            r.headers_mut().append("warning", v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn directives_parse_as_kubernetes_names_them() {
        let d = |v: &str| directive(&Req::for_test(&[("fieldValidation", v)], &[]));
        assert_eq!(
            directive(&Req::for_test(&[], &[])).unwrap(),
            Directive::Warn
        );
        assert_eq!(d("Strict").unwrap(), Directive::Strict);
        assert_eq!(d("Ignore").unwrap(), Directive::Ignore);
        let e = d("strict").unwrap_err();
        assert_eq!(e.code, 400);
        assert!(e.message.contains("fieldValidation") && e.message.contains("\"strict\""));
    }

    #[test]
    fn unknown_fields_are_named_by_path() {
        let reg = crate::resources::Registry::new();
        let res = reg.find("apps", "v1", "deployments").unwrap();
        let (root, defs) = super::super::for_resource(&res).unwrap();
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "a", "labels": {"x": "y"}, "bogus": 1},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "replicaz": 2,
                     "template": {"spec": {"containers": [
                         {"name": "c", "image": "i", "imagePullPolicyy": "Always",
                          "ports": [{"containerPort": 80}], "resources": {"limits": {"cpu": 1}}}]}}}});
        let mut got = unknown_fields(&defs, &root, &d);
        got.sort();
        assert_eq!(
            got,
            [
                "metadata.bogus",
                "spec.replicaz",
                "spec.template.spec.containers[0].imagePullPolicyy"
            ]
        );
    }
}
