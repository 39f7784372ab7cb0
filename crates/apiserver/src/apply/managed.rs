//! `metadata.managedFields`: one entry per (manager, operation, apiVersion, subresource) with
//! the set of fields it owns, and the ownership rules of structured-merge-diff: an Update takes
//! the fields it changes from everyone silently; an Apply that changes a field another manager
//! owns is a conflict unless forced; fields removed from the object leave every set.

use serde_json::{json, Map, Value};

use super::fieldset::{Display, FieldSet, Path};
use super::shape::Fields;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Apply,
    Update,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Apply => "Apply",
            Op::Update => "Update",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub op: Op,
    pub api_version: String,
    pub subresource: String,
    pub time: Option<String>,
    pub set: FieldSet,
}

/// The manager that updates 10 or more Update entries are folded into, as Kubernetes names it.
pub const ANCIENT: &str = "ancient-changes";
/// Update entries kept per object; older ones merge into [`ANCIENT`].
pub const MAX_UPDATE_ENTRIES: usize = 10;

impl Entry {
    pub fn new(manager: &str, op: Op, api_version: &str, subresource: &str) -> Entry {
        Entry {
            manager: manager.into(),
            op,
            api_version: api_version.into(),
            subresource: subresource.into(),
            time: None,
            set: FieldSet::default(),
        }
    }

    /// Whether `o` is the same manager: Apply entries are one per manager and subresource
    /// whatever the version; Update entries one per version too.
    fn same(&self, o: &Entry) -> bool {
        self.manager == o.manager
            && self.op == o.op
            && self.subresource == o.subresource
            && (self.op == Op::Apply || self.api_version == o.api_version)
    }

    /// How conflicts name a manager (`"kubectl-scale" with subresource "scale" using apps/v1`).
    pub fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s = format!("{s} with subresource {:?}", self.subresource);
        }
        if self.op == Op::Update {
            s = format!("{s} using {}", self.api_version);
        }
        s
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), json!(self.manager));
        m.insert("operation".into(), json!(self.op.as_str()));
        m.insert("apiVersion".into(), json!(self.api_version));
        if let Some(t) = &self.time {
            m.insert("time".into(), json!(t));
        }
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), self.set.to_fields_v1());
        if !self.subresource.is_empty() {
            m.insert("subresource".into(), json!(self.subresource));
        }
        Value::Object(m)
    }

    fn from_json(v: &Value) -> Result<Entry, String> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let op = match s("operation").as_str() {
            "Apply" => Op::Apply,
            "Update" => Op::Update,
            other => return Err(format!("operation: unsupported value {other:?}")),
        };
        if !matches!(s("fieldsType").as_str(), "FieldsV1" | "") {
            return Err(format!(
                "fieldsType: unsupported value {:?}: supported values: \"FieldsV1\"",
                s("fieldsType")
            ));
        }
        let set = match v.get("fieldsV1") {
            Some(f) if !f.is_null() => FieldSet::from_fields_v1(f)?,
            _ => FieldSet::default(),
        };
        Ok(Entry {
            manager: s("manager"),
            op,
            api_version: s("apiVersion"),
            subresource: s("subresource"),
            time: v.get("time").and_then(Value::as_str).map(str::to_string),
            set,
        })
    }
}

/// Parse `metadata.managedFields`.
pub fn decode(v: &Value) -> Result<Vec<Entry>, String> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(a) => a.iter().map(Entry::from_json).collect(),
        _ => Err("managedFields must be a list".into()),
    }
}

/// Serialize in Kubernetes' order: Apply entries first, then by time and manager.
pub fn encode(entries: &[Entry]) -> Value {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| {
        (a.op, &a.time, &a.manager, &a.api_version, &a.subresource).cmp(&(
            b.op,
            &b.time,
            &b.manager,
            &b.api_version,
            &b.subresource,
        ))
    });
    Value::Array(sorted.iter().map(|e| e.to_json()).collect())
}

/// What a write changed, path by path.
#[derive(Default, Debug)]
pub struct Comparison {
    pub added: FieldSet,
    pub removed: FieldSet,
    pub modified: FieldSet,
}

impl Comparison {
    fn changed(&self) -> FieldSet {
        self.added.union(&self.modified)
    }
}

pub fn compare(old: &Fields, new: &Fields) -> Comparison {
    let modified = old
        .leaves
        .iter()
        .filter(|(p, v)| new.leaves.get(*p).is_some_and(|n| n != *v))
        .map(|(p, _)| p.clone())
        .collect();
    Comparison {
        added: new.set.difference(&old.set),
        removed: old.set.difference(&new.set),
        modified: FieldSet(modified),
    }
}

fn position(entries: &[Entry], me: &Entry) -> Option<usize> {
    entries.iter().position(|e| e.same(me))
}

/// An Update by `me`: it takes every field it added or changed from the others; removed
/// fields leave every set; an Update entry left owning nothing goes.
pub fn update(entries: &mut Vec<Entry>, me: Entry, cmp: &Comparison, now: &str) {
    let changed = cmp.changed();
    for e in entries.iter_mut() {
        if !e.same(&me) {
            e.set = e.set.difference(&changed).difference(&cmp.removed);
        }
    }
    let mine = match position(entries, &me) {
        Some(i) => entries.remove(i),
        None => me,
    };
    let before = mine.set.clone();
    let mut mine = mine;
    mine.set = mine.set.union(&changed).difference(&cmp.removed);
    if mine.set != before || mine.time.is_none() {
        mine.time = Some(now.to_string());
    }
    if !mine.set.is_empty() {
        entries.push(mine);
    }
    // A manager left with no fields (an applier's too) is dropped, as structured-merge-diff
    // drops it.
    entries.retain(|e| !e.set.is_empty());
}

/// One field another manager owns with a different value than an apply wants.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub manager: String,
    pub path: Path,
}

/// An Apply by `me` of the fields `applied`: a change to a field another manager owns is a
/// conflict unless `force`, which takes it over. Returns the fields `me` owned before.
pub fn apply(
    entries: &mut Vec<Entry>,
    me: Entry,
    applied: FieldSet,
    cmp: &Comparison,
    force: bool,
    now: &str,
) -> Result<FieldSet, Vec<Conflict>> {
    let changed = cmp.changed();
    let mut conflicts = Vec::new();
    for e in entries.iter().filter(|e| !e.same(&me)) {
        for p in &e.set.intersection(&changed).0 {
            conflicts.push(Conflict {
                manager: e.describe(),
                path: p.clone(),
            });
        }
    }
    if !force && !conflicts.is_empty() {
        return Err(conflicts);
    }
    for e in entries.iter_mut().filter(|e| !e.same(&me)) {
        e.set = e.set.difference(&changed).difference(&cmp.removed);
    }
    let mut mine = match position(entries, &me) {
        Some(i) => entries.remove(i),
        None => me,
    };
    let last = std::mem::take(&mut mine.set);
    if applied != last || mine.time.is_none() || !cmp.changed().is_empty() {
        mine.time = Some(now.to_string());
    }
    mine.set = applied;
    // Other managers whose fields were all taken are dropped; the applier keeps its entry
    // even when it applied no fields (structured-merge-diff's Apply).
    entries.retain(|e| !e.set.is_empty());
    entries.push(mine);
    Ok(last)
}

/// Keep at most [`MAX_UPDATE_ENTRIES`] Update entries: the oldest are merged into one
/// [`ANCIENT`] entry, so an object written by many clients stays bounded.
pub fn cap(entries: &mut Vec<Entry>) {
    let updates = entries.iter().filter(|e| e.op == Op::Update).count();
    if updates <= MAX_UPDATE_ENTRIES {
        return;
    }
    let (mut upd, mut rest): (Vec<Entry>, Vec<Entry>) = std::mem::take(entries)
        .into_iter()
        .partition(|e| e.op == Op::Update);
    upd.sort_by(|a, b| a.time.cmp(&b.time));
    let old: Vec<Entry> = upd.drain(..updates - MAX_UPDATE_ENTRIES + 1).collect();
    let mut ancient = Entry::new(ANCIENT, Op::Update, "", "");
    for e in old.into_iter().chain(
        upd.iter()
            .position(|e| e.manager == ANCIENT)
            .map(|i| upd.remove(i)),
    ) {
        ancient.api_version = e.api_version.clone();
        ancient.set = ancient.set.union(&e.set);
        ancient.time = ancient.time.clone().max(e.time);
    }
    rest.extend(upd);
    rest.push(ancient);
    *entries = rest;
}

/// The 409 Kubernetes answers a conflicting apply with: one cause per field.
pub fn conflict_error(conflicts: &[Conflict]) -> crate::error::ApiError {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| {
            json!({"reason": "FieldManagerConflict",
                   "message": format!("conflict with {}", c.manager),
                   "field": Display(&c.path).to_string()})
        })
        .collect();
    let message = if let [c] = conflicts {
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            c.manager,
            Display(&c.path)
        )
    } else {
        let mut managers: Vec<&String> = conflicts.iter().map(|c| &c.manager).collect();
        managers.sort();
        managers.dedup();
        let mut lines = Vec::new();
        for m in managers {
            lines.push(format!("conflicts with {m}:"));
            for c in conflicts.iter().filter(|c| &c.manager == m) {
                lines.push(format!("- {}", Display(&c.path)));
            }
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    let mut e = crate::error::ApiError::new(409, "Conflict", message);
    e.details = Some(json!({"causes": causes}));
    e
}
