//! Field sets: which fields of an object a manager owns, as structured-merge-diff models them.
//! A path is a list of elements (a struct or map field `f:name`, a list-map item by its keys
//! `k:{"name":"nginx"}`, a set item by its value `v:"a"`, an item by position `i:0`); a set
//! holds every owned path. `metadata.managedFields[].fieldsV1` stores a set as a tree whose
//! keys are the encoded elements and where `.` marks a node that is itself owned besides its
//! children.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};

/// One step of a path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pe {
    Field(String),
    /// A list-map item: its key fields as a JSON object with sorted keys (the `k:` encoding).
    Key(String),
    /// A set item: its value as JSON (the `v:` encoding).
    Value(String),
    Index(usize),
}

impl Pe {
    /// The item of a list-map with these key fields (name, value), sorted by name.
    pub fn key(fields: &[(String, Value)]) -> Pe {
        let mut sorted: Vec<&(String, Value)> = fields.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let parts: Vec<String> = sorted
            .iter()
            .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), canonical(v)))
            .collect();
        Pe::Key(format!("{{{}}}", parts.join(",")))
    }

    pub fn value(v: &Value) -> Pe {
        Pe::Value(canonical(v))
    }

    /// The key fields of a `Key` element.
    pub fn key_fields(&self) -> Vec<(String, Value)> {
        match self {
            Pe::Key(s) => match serde_json::from_str::<Map<String, Value>>(s) {
                Ok(m) => m.into_iter().collect(),
                Err(_) => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    fn encode(&self) -> String {
        match self {
            Pe::Field(f) => format!("f:{f}"),
            Pe::Key(k) => format!("k:{k}"),
            Pe::Value(v) => format!("v:{v}"),
            Pe::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(s: &str) -> Option<Pe> {
        let (kind, rest) = s.split_at_checked(2)?;
        match kind {
            "f:" => Some(Pe::Field(rest.to_string())),
            "k:" => {
                let m: Map<String, Value> = serde_json::from_str(rest).ok()?;
                let fields: Vec<(String, Value)> = m.into_iter().collect();
                Some(Pe::key(&fields))
            }
            "v:" => Some(Pe::value(&serde_json::from_str::<Value>(rest).ok()?)),
            "i:" => rest.parse().ok().map(Pe::Index),
            _ => None,
        }
    }
}

/// JSON with object keys sorted, so equal values encode equally whatever their key order.
pub fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", Value::String((*k).clone()), canonical(&m[*k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

pub type Path = Vec<Pe>;

/// A path as Kubernetes prints it in conflicts: `.spec.containers[name="nginx"].image`.
pub struct Display<'a>(pub &'a [Pe]);

impl fmt::Display for Display<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for pe in self.0 {
            match pe {
                Pe::Field(n) => write!(f, ".{n}")?,
                Pe::Key(_) => {
                    let parts: Vec<String> = pe
                        .key_fields()
                        .iter()
                        .map(|(k, v)| format!("{k}={}", canonical(v)))
                        .collect();
                    write!(f, "[{}]", parts.join(","))?
                }
                Pe::Value(v) => write!(f, "[={v}]")?,
                Pe::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

/// The owned paths (each a member of the set; a path's ancestors are not members unless
/// inserted themselves).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet(pub BTreeSet<Path>);

impl FieldSet {
    pub fn insert(&mut self, p: Path) {
        self.0.insert(p);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn union(&self, o: &FieldSet) -> FieldSet {
        FieldSet(self.0.union(&o.0).cloned().collect())
    }
    pub fn difference(&self, o: &FieldSet) -> FieldSet {
        FieldSet(self.0.difference(&o.0).cloned().collect())
    }
    pub fn intersection(&self, o: &FieldSet) -> FieldSet {
        FieldSet(self.0.intersection(&o.0).cloned().collect())
    }
    /// Whether `p` or anything below it is in the set.
    pub fn has_prefix(&self, p: &[Pe]) -> bool {
        self.0
            .range(p.to_vec()..)
            .next()
            .is_some_and(|q| q.starts_with(p))
    }

    /// The `fieldsV1` tree.
    pub fn to_fields_v1(&self) -> Value {
        let mut root = Map::new();
        for path in &self.0 {
            let mut node = &mut root;
            for (i, pe) in path.iter().enumerate() {
                let entry = node
                    .entry(pe.encode())
                    .or_insert_with(|| Value::Object(Map::new()));
                let Value::Object(child) = entry else {
                    unreachable!("fieldsV1 nodes are objects")
                };
                if i + 1 == path.len() {
                    // A member: marked with `.` once it also has children (see `finish`).
                    child
                        .entry(".")
                        .or_insert_with(|| Value::Object(Map::new()));
                }
                node = child;
            }
        }
        finish(&mut root);
        let mut v = Value::Object(root);
        sort_keys(&mut v);
        v
    }

    /// Parse a `fieldsV1` tree; unknown element kinds are an error naming the key.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        let mut out = FieldSet::default();
        let Some(m) = v.as_object() else {
            return Err("fieldsV1 must be an object".into());
        };
        walk_v1(m, &mut Vec::new(), &mut out)?;
        Ok(out)
    }
}

/// A member without children is `{}`: drop the `.` inserted for it.
fn finish(node: &mut Map<String, Value>) {
    for (k, v) in node.iter_mut() {
        if k == "." {
            continue;
        }
        if let Value::Object(child) = v {
            if child.len() == 1 && child.contains_key(".") {
                child.clear();
            } else {
                finish(child);
            }
        }
    }
}

fn sort_keys(v: &mut Value) {
    if let Value::Object(m) = v {
        let mut entries: Vec<(String, Value)> = std::mem::take(m).into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, mut child) in entries {
            sort_keys(&mut child);
            m.insert(k, child);
        }
    }
}

fn walk_v1(m: &Map<String, Value>, path: &mut Path, out: &mut FieldSet) -> Result<(), String> {
    for (k, v) in m {
        if k == "." {
            out.insert(path.clone());
            continue;
        }
        let pe = Pe::decode(k).ok_or_else(|| format!("fieldsV1: invalid path element {k:?}"))?;
        let child = v
            .as_object()
            .ok_or_else(|| format!("fieldsV1: {k:?} must map to an object"))?;
        path.push(pe);
        if child.is_empty() {
            out.insert(path.clone());
        } else {
            walk_v1(child, path, out)?;
        }
        path.pop();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(s: &str) -> Pe {
        Pe::Field(s.into())
    }

    #[test]
    fn fields_v1_round_trip_with_dot_for_owned_parents() {
        let item = Pe::key(&[("name".into(), json!("nginx"))]);
        let port = Pe::key(&[
            ("protocol".into(), json!("TCP")),
            ("containerPort".into(), json!(80)),
        ]);
        let mut s = FieldSet::default();
        s.insert(vec![f("spec"), f("replicas")]);
        s.insert(vec![f("spec"), f("containers"), item.clone()]);
        s.insert(vec![f("spec"), f("containers"), item.clone(), f("image")]);
        s.insert(vec![
            f("spec"),
            f("containers"),
            item.clone(),
            f("ports"),
            port.clone(),
        ]);
        s.insert(vec![f("metadata"), f("finalizers"), Pe::value(&json!("a"))]);
        s.insert(vec![f("x"), Pe::Index(0)]);
        let v1 = s.to_fields_v1();
        assert_eq!(
            v1,
            json!({
                "f:metadata": {"f:finalizers": {"v:\"a\"": {}}},
                "f:spec": {
                    "f:containers": {"k:{\"name\":\"nginx\"}": {
                        ".": {}, "f:image": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {}}}},
                    "f:replicas": {}},
                "f:x": {"i:0": {}}})
        );
        // Keys come out sorted as Kubernetes writes them: `.` first.
        let text = serde_json::to_string(&v1["f:spec"]["f:containers"]).unwrap();
        assert!(text.starts_with(r#"{"k:{\"name\":\"nginx\"}":{".":{},"f:image""#));
        assert_eq!(FieldSet::from_fields_v1(&v1).unwrap(), s);
        let bad = FieldSet::from_fields_v1(&json!({"q:x": {}})).unwrap_err();
        assert!(bad.contains("\"q:x\""), "{bad}");
    }

    #[test]
    fn paths_print_as_kubernetes_conflicts_name_them() {
        let p = vec![
            f("spec"),
            f("containers"),
            Pe::key(&[("name".into(), json!("nginx"))]),
            f("image"),
        ];
        assert_eq!(
            Display(&p).to_string(),
            r#".spec.containers[name="nginx"].image"#
        );
        let p = vec![f("metadata"), f("finalizers"), Pe::value(&json!("x"))];
        assert_eq!(Display(&p).to_string(), r#".metadata.finalizers[="x"]"#);
    }

    #[test]
    fn prefix_queries() {
        let mut s = FieldSet::default();
        s.insert(vec![f("a"), f("b"), f("c")]);
        s.insert(vec![f("a"), f("d")]);
        assert!(s.has_prefix(&[f("a")]));
        assert!(s.has_prefix(&[f("a"), f("b")]));
        assert!(!s.has_prefix(&[f("b")]));
        assert!(!s.has_prefix(&[f("a"), f("c")]));
    }
}
