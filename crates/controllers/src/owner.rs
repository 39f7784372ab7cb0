//! Owner references: who controls an object, and how to say "this controls that".

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

/// The controller reference `meta` points to (the owner with `controller: true`).
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// Whether `meta` is controlled by the object with `uid`.
pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_of(meta).is_some_and(|o| o.uid == uid)
}

/// A controller reference to `owner` (api version and kind as given).
pub fn controller_ref(api_version: &str, kind: &str, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// What a controller claims among the objects of its namespace (Kubernetes'
/// ControllerRefManager): orphans its selector matches are adopted, and objects it controls
/// that its selector no longer matches are released. Neither happens while the controller is
/// being deleted (a dying owner must not take objects a new one could adopt), nor to objects
/// being deleted. An empty selector matches nothing: a controller must say what it owns.
#[derive(Debug, Default, PartialEq)]
pub struct Claim {
    pub adopt: Vec<String>,
    pub release: Vec<String>,
}

pub fn claim<'a>(
    owner: &ObjectMeta,
    selector: &LabelSelector,
    candidates: impl IntoIterator<Item = &'a ObjectMeta>,
) -> Claim {
    let mut c = Claim::default();
    let uid = owner.uid.as_deref().unwrap_or_default();
    let has_terms = selector
        .match_labels
        .as_ref()
        .is_some_and(|m| !m.is_empty())
        || selector
            .match_expressions
            .as_ref()
            .is_some_and(|m| !m.is_empty());
    if owner.deletion_timestamp.is_some() || uid.is_empty() {
        return c;
    }
    for m in candidates {
        if m.deletion_timestamp.is_some() {
            continue;
        }
        let matches =
            has_terms && crate::selector::matches(selector, &m.labels.clone().unwrap_or_default());
        let name = m.name.clone().unwrap_or_default();
        match controller_of(m) {
            Some(o) if o.uid == uid && !matches => c.release.push(name),
            None if matches => c.adopt.push(name),
            _ => {}
        }
    }
    c
}

/// `meta`'s owner references with a controller reference to `owner` added.
pub fn adopted_refs(meta: &ObjectMeta, reference: OwnerReference) -> Vec<OwnerReference> {
    let mut refs: Vec<OwnerReference> = meta.owner_references.clone().unwrap_or_default();
    refs.retain(|r| r.uid != reference.uid);
    refs.push(reference);
    refs
}

/// `meta`'s owner references without the one to `uid`.
pub fn released_refs(meta: &ObjectMeta, uid: &str) -> Vec<OwnerReference> {
    let mut refs: Vec<OwnerReference> = meta.owner_references.clone().unwrap_or_default();
    refs.retain(|r| r.uid != uid);
    refs
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn meta(name: &str, app: &str, controller: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            labels: Some([("app".to_string(), app.to_string())].into()),
            owner_references: controller.map(|u| {
                vec![OwnerReference {
                    uid: u.into(),
                    controller: Some(true),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }
    }

    #[test]
    fn adopts_matching_orphans_and_releases_what_no_longer_matches() {
        let owner = meta("d", "web", None);
        let sel = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            ..Default::default()
        };
        let objs = [
            meta("orphan", "web", None),
            meta("mine", "web", Some("uid-d")),
            meta("relabelled", "db", Some("uid-d")),
            meta("theirs", "web", Some("uid-other")),
            meta("stranger", "db", None),
        ];
        let c = claim(&owner, &sel, objs.iter());
        assert_eq!(c.adopt, vec!["orphan"]);
        assert_eq!(c.release, vec!["relabelled"]);
        // A dying owner claims nothing; nor does an empty selector adopt anything.
        let mut dying = owner.clone();
        dying.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        assert_eq!(claim(&dying, &sel, objs.iter()), Claim::default());
        let c = claim(&owner, &LabelSelector::default(), objs.iter());
        assert!(c.adopt.is_empty());
        assert_eq!(c.release, vec!["mine", "relabelled"]);
    }
}
