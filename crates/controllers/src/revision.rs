//! Controller history: the ControllerRevisions a StatefulSet keeps of its pod templates, as
//! Kubernetes keeps them, so `kubectl rollout history` lists them and `kubectl rollout undo`
//! applies one back.
//!
//! A revision's `data` is the strategic merge patch that puts its template back
//! (`{"spec":{"template":{…,"$patch":"replace"}}}`): kubectl applies exactly that on undo.
//! Its name is the owner's name and a hash of the template; its `revision` number grows with
//! each new template, and a template that comes back (an undo) takes the next number again.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use serde_json::{json, Value};

use crate::deployment::{normalized_template, safe_hash};
use crate::owner;

/// The label carrying a revision's hash (beside the owner's template labels).
pub const HASH_KEY: &str = "controller.kubernetes.io/hash";

/// Who keeps the history.
pub struct Owner<'a> {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub meta: &'a ObjectMeta,
}

/// The patch a revision records for `template`.
pub fn data_of(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Some(map) = t.as_object_mut() {
        map.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The template a revision recorded (None when its data is not a template patch).
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Some(map) = t.as_object_mut() {
        map.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// The hash in a revision's name: of the template as Kubernetes compares templates, and of
/// the collision count when a name was already taken by other data.
pub fn hash(template: &PodTemplateSpec, collision_count: i32) -> String {
    let mut text = normalized_template(template).to_string();
    if collision_count > 0 {
        text.push_str(&collision_count.to_string());
    }
    safe_hash(&text)
}

/// Whether `rev` records `template`.
pub fn records(rev: &ControllerRevision, template: &PodTemplateSpec) -> bool {
    template_of(rev).is_some_and(|t| normalized_template(&t) == normalized_template(template))
}

/// The revisions `owner_uid` controls, oldest first (by number, then name).
pub fn owned<'a>(
    revisions: impl IntoIterator<Item = &'a ControllerRevision>,
    owner_uid: &str,
) -> Vec<&'a ControllerRevision> {
    let mut out: Vec<_> = revisions
        .into_iter()
        .filter(|r| owner::controlled_by(&r.metadata, owner_uid))
        .filter(|r| r.metadata.deletion_timestamp.is_none())
        .collect();
    out.sort_by(|a, b| (a.revision, &a.metadata.name).cmp(&(b.revision, &b.metadata.name)));
    out
}

/// What the history needs for the owner's current template.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// The newest revision already records it.
    Latest(String),
    /// An older revision records it (a rollback): it takes this next number.
    Renumber(String, i64),
    /// No revision records it: create this one.
    Create(Box<ControllerRevision>),
}

impl Update {
    pub fn name(&self) -> &str {
        match self {
            Update::Latest(n) | Update::Renumber(n, _) => n,
            Update::Create(r) => r.metadata.name.as_deref().unwrap_or_default(),
        }
    }
}

/// The revision of `template` among the owner's revisions (oldest first).
pub fn update_for(
    owner: &Owner<'_>,
    template: &PodTemplateSpec,
    collision_count: i32,
    revisions: &[&ControllerRevision],
) -> Update {
    let newest = revisions.iter().map(|r| r.revision).max().unwrap_or(0);
    if let Some(same) = revisions.iter().rev().find(|r| records(r, template)) {
        let name = same.metadata.name.clone().unwrap_or_default();
        return if same.revision == newest {
            Update::Latest(name)
        } else {
            Update::Renumber(name, newest + 1)
        };
    }
    let hash = hash(template, collision_count);
    let mut labels: BTreeMap<String, String> = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(HASH_KEY.into(), hash.clone());
    let owner_name = owner.meta.name.clone().unwrap_or_default();
    Update::Create(Box::new(ControllerRevision {
        metadata: ObjectMeta {
            name: Some(format!("{owner_name}-{hash}")),
            namespace: owner.meta.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![owner::controller_ref(
                owner.api_version,
                owner.kind,
                owner.meta,
            )]),
            ..Default::default()
        },
        data: Some(RawExtension(data_of(template))),
        revision: newest + 1,
    }))
}

/// The revisions beyond `limit` to delete: the oldest that are not `live` (in use by a pod or
/// named by the owner's status).
pub fn surplus(revisions: &[&ControllerRevision], live: &HashSet<&str>, limit: i32) -> Vec<String> {
    let dead: Vec<&str> = revisions
        .iter()
        .filter_map(|r| r.metadata.name.as_deref())
        .filter(|n| !live.contains(n))
        .collect();
    let excess = dead.len().saturating_sub(limit.max(0) as usize);
    dead[..excess].iter().map(|n| n.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    fn owner_meta() -> ObjectMeta {
        ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("u1".into()),
            ..Default::default()
        }
    }

    fn created(u: Update) -> ControllerRevision {
        match u {
            Update::Create(r) => *r,
            other => panic!("expected a new revision, got {other:?}"),
        }
    }

    #[test]
    fn history_grows_and_a_rollback_takes_the_next_number() {
        let meta = owner_meta();
        let owner = Owner {
            api_version: "apps/v1",
            kind: "StatefulSet",
            meta: &meta,
        };
        let first = created(update_for(&owner, &template("a"), 0, &[]));
        assert_eq!(first.revision, 1);
        assert!(first.metadata.name.as_deref().unwrap().starts_with("web-"));
        assert_eq!(first.metadata.labels.as_ref().unwrap()["app"], "web");
        assert_eq!(
            first.data.as_ref().unwrap().0["spec"]["template"]["$patch"],
            "replace"
        );
        assert_eq!(template_of(&first).unwrap(), template("a"));
        assert_eq!(
            update_for(&owner, &template("a"), 0, &[&first]),
            Update::Latest(first.metadata.name.clone().unwrap())
        );
        let second = created(update_for(&owner, &template("b"), 0, &[&first]));
        assert_eq!(second.revision, 2);
        assert_ne!(second.metadata.name, first.metadata.name);
        assert_eq!(
            update_for(&owner, &template("a"), 0, &[&first, &second]),
            Update::Renumber(first.metadata.name.clone().unwrap(), 3)
        );
        // A collision moves the name.
        assert_ne!(hash(&template("a"), 1), hash(&template("a"), 0));
    }

    #[test]
    fn surplus_spares_live_revisions() {
        let revs: Vec<ControllerRevision> = (1..=5)
            .map(|n| ControllerRevision {
                metadata: ObjectMeta {
                    name: Some(format!("r{n}")),
                    ..Default::default()
                },
                revision: n,
                data: None,
            })
            .collect();
        let refs: Vec<&ControllerRevision> = revs.iter().collect();
        let live: HashSet<&str> = ["r1", "r5"].into();
        assert_eq!(surplus(&refs, &live, 1), vec!["r2", "r3"]);
        assert!(surplus(&refs, &live, 10).is_empty());
    }
}
