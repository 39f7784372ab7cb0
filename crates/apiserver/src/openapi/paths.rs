//! The `paths` of an OpenAPI v3 group-version document. kubectl reads them to learn whether the
//! server checks fields itself: a PATCH operation tagged with the kind's group-version-kind
//! that takes a `fieldValidation` parameter means `--validate=strict` is left to the server.

use serde_json::{json, Map, Value};

use super::schemas::REF_PREFIX;
use crate::discovery::subresources;
use crate::resources::Resource;

fn param(name: &str, location: &str, description: &str) -> Value {
    json!({"name": name, "in": location, "description": description,
           "required": location == "path", "schema": {"type": "string", "uniqueItems": true}})
}

fn write_params() -> Vec<Value> {
    vec![
        param("dryRun", "query", "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed"),
        param("fieldManager", "query", "fieldManager is a name associated with the actor or entity that is making these changes."),
        param("fieldValidation", "query", "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict"),
    ]
}

fn content(schema: Value, types: &[&str]) -> Value {
    let mut m = Map::new();
    for t in types {
        m.insert(t.to_string(), json!({ "schema": schema }));
    }
    Value::Object(m)
}

fn reference(schema: &str) -> Value {
    json!({"$ref": format!("{REF_PREFIX}{schema}")})
}

fn op(
    action: &str,
    id: String,
    gvk: &Value,
    schema: &str,
    body: Option<&[&str]>,
    params: Vec<Value>,
) -> Value {
    let response = if action == "list" {
        json!({"type": "object", "properties": {"items": {"type": "array", "items": reference(schema)}}})
    } else {
        reference(schema)
    };
    let mut o = json!({
        "operationId": id,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
        "responses": {
            "200": {"description": "OK", "content": content(response, &["application/json", "application/yaml"])},
            "401": {"description": "Unauthorized"},
        },
    });
    if !params.is_empty() {
        o["parameters"] = Value::Array(params);
    }
    if let Some(types) = body {
        let body_schema = if action == "patch" {
            json!({"type": "object"})
        } else {
            reference(schema)
        };
        let mut c = Map::new();
        for t in types {
            c.insert(t.to_string(), json!({"schema": body_schema}));
        }
        o["requestBody"] = json!({"content": c, "required": true});
    }
    o
}

const PATCH_TYPES: [&str; 4] = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

/// Paths of one resource (collection, object, subresources), keyed by URL template.
pub fn resource_paths(r: &Resource, schema: &str, out: &mut Map<String, Value>) {
    let base = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    let coll = if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{base}/{}", r.plural)
    };
    let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let id = |verb: &str, suffix: &str| format!("{verb}{}{}{suffix}", r.group, r.kind);
    let json_yaml: &[&str] = &["application/json", "application/yaml"];
    let mut path_params = vec![];
    if r.namespaced {
        path_params.push(param(
            "namespace",
            "path",
            "object name and auth scope, such as for teams and projects",
        ));
    }
    out.insert(
        coll.clone(),
        json!({
            "get": op("list", id("list", ""), &gvk, schema, None, vec![]),
            "post": op("post", id("create", ""), &gvk, schema, Some(json_yaml), write_params()),
            "delete": op("deletecollection", id("deleteCollection", ""), &gvk, schema, None, vec![]),
            "parameters": path_params.clone(),
        }),
    );
    let mut item_params = path_params.clone();
    item_params.push(param("name", "path", "name of the object"));
    out.insert(
        format!("{coll}/{{name}}"),
        json!({
            "get": op("get", id("read", ""), &gvk, schema, None, vec![]),
            "put": op("put", id("replace", ""), &gvk, schema, Some(json_yaml), write_params()),
            "patch": op("patch", id("patch", ""), &gvk, schema, Some(&PATCH_TYPES), write_params()),
            "delete": op("delete", id("delete", ""), &gvk, schema, None, vec![param("dryRun", "query", "When present, indicates that modifications should not be persisted.")]),
            "parameters": item_params.clone(),
        }),
    );
    for (sub, g, v, kind, verbs) in subresources(r) {
        let sgvk = json!({"group": g, "version": v, "kind": kind});
        let sschema = if kind == r.kind {
            schema.to_string()
        } else {
            super::builtin_schema_name(&g, &v, &kind)
        };
        let suffix = format!("{}{}", sub[..1].to_uppercase(), &sub[1..]);
        let mut item = Map::new();
        for verb in verbs {
            let (method, action, body): (&str, &str, Option<&[&str]>) = match verb {
                "get" => ("get", "get", None),
                "update" => ("put", "put", Some(json_yaml)),
                "patch" => ("patch", "patch", Some(&PATCH_TYPES)),
                "create" => ("post", "post", Some(json_yaml)),
                _ => continue,
            };
            let params = if body.is_some() {
                write_params()
            } else {
                vec![]
            };
            item.insert(
                method.into(),
                op(action, id(method, &suffix), &sgvk, &sschema, body, params),
            );
        }
        item.insert("parameters".into(), Value::Array(item_params.clone()));
        out.insert(format!("{coll}/{{name}}/{sub}"), Value::Object(item));
    }
}
