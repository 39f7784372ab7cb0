//! How a kind's schema says its fields merge and are owned: structs field by field, maps key by
//! key, lists by `x-kubernetes-list-type` (`atomic` whole, `set` by value, `map` by
//! `x-kubernetes-list-map-keys`), `x-kubernetes-map-type: atomic` whole. Without a schema
//! (a schema-less CRD, preserved unknown fields) maps are granular and lists atomic, as
//! structured-merge-diff deduces.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::fieldset::{FieldSet, Path, Pe};
use crate::openapi::fields::resolve;

/// The schema of one node: `defs` resolves its `$ref`s.
#[derive(Clone, Copy)]
pub struct Node<'a> {
    pub defs: &'a Map<String, Value>,
    /// None: untyped (no schema).
    pub schema: Option<&'a Value>,
}

pub enum Shape<'a> {
    Scalar,
    Untyped,
    Atomic,
    Struct(&'a Map<String, Value>, Option<&'a Value>),
    Map(Option<&'a Value>),
    Set,
    /// A list-map with its key fields and item schema.
    ListMap(Vec<String>, Option<&'a Value>),
}

impl<'a> Node<'a> {
    fn child(&self, s: Option<&'a Value>) -> Node<'a> {
        Node {
            defs: self.defs,
            schema: s,
        }
    }

    pub fn shape(&self) -> Shape<'a> {
        let Some(raw) = self.schema else {
            return Shape::Untyped;
        };
        let s = resolve(self.defs, raw);
        let ext = |k: &str| {
            raw.get(k)
                .or_else(|| s.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        if s.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
            return Shape::Scalar;
        }
        let ty = s.get("type").and_then(Value::as_str).unwrap_or("");
        if ty == "array" || s.get("items").is_some() {
            let items = s.get("items");
            return match ext("x-kubernetes-list-type") {
                "set" => Shape::Set,
                "map" => {
                    let keys = raw
                        .get("x-kubernetes-list-map-keys")
                        .or_else(|| s.get("x-kubernetes-list-map-keys"))
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|k| k.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    Shape::ListMap(keys, items)
                }
                _ => Shape::Atomic,
            };
        }
        let props = s.get("properties").and_then(Value::as_object);
        let extra = s.get("additionalProperties").filter(|a| a.is_object());
        if props.is_some() || extra.is_some() || ty == "object" {
            if ext("x-kubernetes-map-type") == "atomic" {
                return Shape::Atomic;
            }
            return match props {
                Some(p) => Shape::Struct(p, extra),
                None => match extra {
                    Some(e) => Shape::Map(Some(e)),
                    // A free-form object (`type: object` alone, preserved unknown fields).
                    None => Shape::Untyped,
                },
            };
        }
        if ty.is_empty() {
            return Shape::Untyped;
        }
        Shape::Scalar
    }

    /// The schema of field `k` of a struct or map node (None: untyped).
    pub fn field(&self, k: &str) -> (Node<'a>, bool) {
        match self.shape() {
            Shape::Struct(props, extra) => match props.get(k) {
                Some(p) => (self.child(Some(p)), true),
                None => (self.child(extra), false),
            },
            Shape::Map(e) => (self.child(e), false),
            _ => (self.child(None), false),
        }
    }

    pub fn items(&self) -> Node<'a> {
        match self.shape() {
            Shape::ListMap(_, items) => self.child(items),
            _ => self.child(None),
        }
    }
}

/// The element naming item `i` of a list-map with `keys`: by its key fields, or by position
/// when it carries none of them. A port's `protocol` key counts as `TCP` when absent:
/// Kubernetes defaults it before computing ownership (yun stores what clients send), so the
/// same port is one item whether or not a client spelled out TCP.
pub fn item_pe(keys: &[String], item: &Value, i: usize) -> Pe {
    let is_port = item.get("containerPort").is_some() || item.get("port").is_some();
    let fields: Vec<(String, Value)> = keys
        .iter()
        .filter_map(|k| match item.get(k) {
            Some(v) => Some((k.clone(), v.clone())),
            None if k == "protocol" && is_port => Some((k.clone(), Value::from("TCP"))),
            None => None,
        })
        .collect();
    if fields.is_empty() {
        Pe::Index(i)
    } else {
        Pe::key(&fields)
    }
}

/// The owned paths of `v` and, for each leaf (a scalar, an atomic value), its value; list
/// items and map entries are members too (their value is None when they have children).
#[derive(Default)]
pub struct Fields {
    pub set: FieldSet,
    pub leaves: BTreeMap<Path, Value>,
}

pub fn fields(node: Node, v: &Value) -> Fields {
    let mut out = Fields::default();
    walk(node, v, &mut Vec::new(), &mut out);
    out
}

fn leaf(path: &Path, v: &Value, out: &mut Fields) {
    out.set.insert(path.clone());
    out.leaves.insert(path.clone(), v.clone());
}

fn walk(node: Node, v: &Value, path: &mut Path, out: &mut Fields) {
    match (node.shape(), v) {
        (Shape::Struct(..) | Shape::Map(_) | Shape::Untyped, Value::Object(m)) => {
            for (k, child) in m {
                let (cn, declared) = node.field(k);
                path.push(Pe::Field(k.clone()));
                let empty = child.is_null() || child.as_object().is_some_and(Map::is_empty);
                walk(cn, child, path, out);
                if empty {
                    leaf(path, child, out);
                } else if !declared {
                    // A map entry is owned itself, not only what it holds.
                    out.set.insert(path.clone());
                }
                path.pop();
            }
        }
        (Shape::Set, Value::Array(a)) => {
            for item in a {
                path.push(Pe::value(item));
                leaf(path, item, out);
                path.pop();
            }
        }
        (Shape::ListMap(keys, _), Value::Array(a)) => {
            let items = node.items();
            for (i, item) in a.iter().enumerate() {
                path.push(item_pe(&keys, item, i));
                walk(items, item, path, out);
                out.set.insert(path.clone());
                path.pop();
            }
        }
        _ => {
            if !path.is_empty() {
                leaf(path, v, out);
            }
        }
    }
}

/// Remove the node at `path` from `v` (nothing when it is not there).
pub fn remove(node: Node, v: &mut Value, path: &[Pe]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    match (first, v) {
        (Pe::Field(k), Value::Object(m)) => {
            if rest.is_empty() {
                m.remove(k);
            } else if let Some(c) = m.get_mut(k) {
                remove(node.field(k).0, c, rest);
            }
        }
        (pe, Value::Array(a)) => {
            let keys = match node.shape() {
                Shape::ListMap(keys, _) => keys,
                _ => Vec::new(),
            };
            let pos = a.iter().enumerate().position(|(i, item)| match pe {
                Pe::Value(_) => Pe::value(item) == *pe,
                Pe::Index(j) => i == *j,
                _ => item_pe(&keys, item, i) == *pe,
            });
            let Some(i) = pos else { return };
            if rest.is_empty() {
                a.remove(i);
            } else {
                remove(node.items(), &mut a[i], rest);
            }
        }
        _ => {}
    }
}

/// Merge an applied configuration onto the live object: structs and granular maps key by
/// key, sets by value, list-maps by their keys (the live order kept, new items appended);
/// atomic values and scalars are replaced; a null removes the field.
pub fn merge(node: Node, live: &Value, config: &Value) -> Value {
    match (node.shape(), live, config) {
        (
            Shape::Struct(..) | Shape::Map(_) | Shape::Untyped,
            Value::Object(l),
            Value::Object(c),
        ) => {
            let mut out = l.clone();
            for (k, cv) in c {
                if cv.is_null() {
                    out.remove(k);
                    continue;
                }
                let merged = match l.get(k) {
                    Some(lv) => merge(node.field(k).0, lv, cv),
                    None => cv.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Shape::Set, Value::Array(l), Value::Array(c)) => {
            let mut out = l.clone();
            for item in c {
                if !out.contains(item) {
                    out.push(item.clone());
                }
            }
            Value::Array(out)
        }
        (Shape::ListMap(keys, _), Value::Array(l), Value::Array(c)) => {
            let items = node.items();
            let mut out = l.clone();
            for (i, citem) in c.iter().enumerate() {
                // Items without any key field are matched by position (so a re-apply does
                // not append them again).
                let pe = item_pe(&keys, citem, i);
                let found = out
                    .iter()
                    .enumerate()
                    .position(|(j, li)| item_pe(&keys, li, j) == pe);
                match found {
                    Some(j) => out[j] = merge(items, &out[j], citem),
                    None => out.push(citem.clone()),
                }
            }
            Value::Array(out)
        }
        _ => config.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::fieldset::Display;
    use serde_json::json;

    fn deployment_node() -> (Value, std::sync::Arc<Map<String, Value>>) {
        let reg = crate::resources::Registry::new();
        let res = reg.find("apps", "v1", "deployments").unwrap();
        crate::openapi::for_resource(&res).unwrap()
    }

    fn paths(f: &Fields) -> Vec<String> {
        f.set.0.iter().map(|p| Display(p).to_string()).collect()
    }

    #[test]
    fn deployment_fields_follow_the_schema() {
        let (root, defs) = deployment_node();
        let node = Node {
            defs: &defs,
            schema: Some(&root),
        };
        let d = json!({"metadata": {"labels": {"app": "web"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
              "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1",
                 "args": ["a", "b"], "ports": [{"containerPort": 80}]}]}}}});
        let got = paths(&fields(node, &d));
        assert_eq!(
            got,
            [
                ".metadata.labels.app",
                ".spec.replicas",
                ".spec.selector",
                r#".spec.template.spec.containers[name="nginx"]"#,
                r#".spec.template.spec.containers[name="nginx"].args"#,
                r#".spec.template.spec.containers[name="nginx"].image"#,
                r#".spec.template.spec.containers[name="nginx"].name"#,
                r#".spec.template.spec.containers[name="nginx"].ports[containerPort=80,protocol="TCP"]"#,
                r#".spec.template.spec.containers[name="nginx"].ports[containerPort=80,protocol="TCP"].containerPort"#,
            ]
        );
        // A port spelled with its default protocol is the same item.
        let spelled = json!({"spec": {"template": {"spec": {"containers": [{"name": "nginx",
            "ports": [{"containerPort": 80, "protocol": "TCP", "name": "http"}]}]}}}});
        let merged = merge(node, &d, &spelled);
        let ports = &merged["spec"]["template"]["spec"]["containers"][0]["ports"];
        assert_eq!(
            ports,
            &json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}])
        );
    }

    #[test]
    fn merge_by_list_type() {
        let (root, defs) = deployment_node();
        let node = Node {
            defs: &defs,
            schema: Some(&root),
        };
        let live = json!({"metadata": {"finalizers": ["a"], "labels": {"x": "1"}},
            "spec": {"template": {"spec": {"containers": [
                {"name": "a", "image": "a:1", "args": ["x", "y"]},
                {"name": "b", "image": "b:1"}]}}}});
        let config = json!({"metadata": {"finalizers": ["b", "a"], "labels": {"y": "2"}},
            "spec": {"template": {"spec": {"containers": [
                {"name": "b", "image": "b:2"}, {"name": "a", "args": ["z"]},
                {"name": "c", "image": "c:1"}]}}}});
        let out = merge(node, &live, &config);
        assert_eq!(
            out,
            json!({"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}},
                "spec": {"template": {"spec": {"containers": [
                    {"name": "a", "image": "a:1", "args": ["z"]},
                    {"name": "b", "image": "b:2"},
                    {"name": "c", "image": "c:1"}]}}}})
        );
        // Items without their key merge by position: applying them again adds nothing.
        let keyless = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
        let once = merge(node, &json!({}), &keyless);
        assert_eq!(merge(node, &once, &keyless), keyless);
        let mut o = out;
        let item = Pe::key(&[("name".into(), json!("b"))]);
        let path = [
            Pe::Field("spec".into()),
            Pe::Field("template".into()),
            Pe::Field("spec".into()),
            Pe::Field("containers".into()),
            item,
        ];
        remove(node, &mut o, &path);
        assert_eq!(o["spec"]["template"]["spec"]["containers"][1]["name"], "c");
    }

    #[test]
    fn untyped_maps_are_granular_and_lists_atomic() {
        let defs = Map::new();
        let node = Node {
            defs: &defs,
            schema: None,
        };
        let got = paths(&fields(
            node,
            &json!({"spec": {"a": {"b": 1}, "l": [1, 2]}}),
        ));
        assert_eq!(got, [".spec", ".spec.a", ".spec.a.b", ".spec.l"]);
        let out = merge(
            node,
            &json!({"spec": {"a": {"b": 1}, "l": [1]}}),
            &json!({"spec": {"a": {"c": 2}, "l": [2]}}),
        );
        assert_eq!(out, json!({"spec": {"a": {"b": 1, "c": 2}, "l": [2]}}));
    }
}
