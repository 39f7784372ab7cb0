//! The garbage collector's dependency graph: every object of every served kind that the
//! collector watches, by uid, with its owner references, plus the reverse edges (owner uid →
//! dependents). Watch events keep it current; each change names the uids whose verdict may
//! have changed, and the collector's workers decide for those (see `loops::gc`). Owners are
//! known by uid only: an owner that is not (yet) in the graph is "absent here", which the
//! collector confirms with a live read before it deletes anything on that account.

use std::collections::{HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// The finalizer that holds an owner until its blocking dependents are gone.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer that holds an owner until its dependents no longer point at it.
pub const ORPHAN: &str = "orphan";

/// One object as the collector knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Which watched resource it came from ("group/version/plural"), so a relist can tell
    /// what vanished.
    pub resource: String,
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
    pub owners: Vec<OwnerReference>,
    pub deleting: bool,
    pub finalizers: Vec<String>,
}

impl Node {
    pub fn from_meta(resource: &str, api_version: &str, kind: &str, meta: &ObjectMeta) -> Node {
        Node {
            resource: resource.into(),
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: meta.namespace.clone().filter(|n| !n.is_empty()),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            owners: meta.owner_references.clone().unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
        }
    }

    fn has(&self, finalizer: &str) -> bool {
        self.finalizers.iter().any(|f| f == finalizer)
    }

    /// Being deleted in the foreground: waits for its blocking dependents.
    pub fn waiting_for_dependents(&self) -> bool {
        self.deleting && self.has(FOREGROUND)
    }

    /// Being deleted with its dependents orphaned.
    pub fn orphaning(&self) -> bool {
        self.deleting && self.has(ORPHAN)
    }

    /// Whether this object's reference to `owner` blocks the owner's foreground deletion.
    pub fn blocks(&self, owner: &str) -> bool {
        self.owners
            .iter()
            .any(|o| o.uid == owner && o.block_owner_deletion == Some(true))
    }
}

#[derive(Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    /// Owner uid → dependent uids (owners need not be in `nodes`).
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The objects that name `uid` as an owner, as the graph holds them.
    pub fn dependents_of(&self, uid: &str) -> Vec<Node> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| self.nodes.get(d).cloned())
            .collect()
    }

    /// Uids of the objects from `resource` (to find what a relist no longer has).
    pub fn uids_of(&self, resource: &str) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| n.resource == resource)
            .map(|n| n.uid.clone())
            .collect()
    }

    /// Add or update `node`; returns the uids to look at again.
    pub fn apply(&mut self, node: Node) -> Vec<String> {
        if node.uid.is_empty() {
            return Vec::new();
        }
        let uid = node.uid.clone();
        let mut touched: Vec<String> = vec![uid.clone()];
        let old_owners: Vec<String> = self
            .nodes
            .get(&uid)
            .map(|o| o.owners.iter().map(|r| r.uid.clone()).collect())
            .unwrap_or_default();
        for o in &old_owners {
            self.unlink(o, &uid);
        }
        for o in &node.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        // An owner waiting for its dependents may be done once this one changed (lost its
        // reference, or started its own deletion).
        for o in old_owners.iter().chain(node.owners.iter().map(|r| &r.uid)) {
            if self.nodes.get(o).is_some_and(|n| n.deleting) {
                touched.push(o.clone());
            }
        }
        self.nodes.insert(uid, node);
        touched.sort();
        touched.dedup();
        touched
    }

    /// Forget `uid` (it was deleted); returns the uids to look at again: its dependents (their
    /// owner may be gone) and its owners (one waiting for it may be done).
    pub fn remove(&mut self, uid: &str) -> Vec<String> {
        let mut touched: Vec<String> = self
            .dependents
            .get(uid)
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default();
        if let Some(node) = self.nodes.remove(uid) {
            for o in &node.owners {
                self.unlink(&o.uid, uid);
                if self.nodes.contains_key(&o.uid) {
                    touched.push(o.uid.clone());
                }
            }
        }
        touched.sort();
        touched.dedup();
        touched
    }

    fn unlink(&mut self, owner: &str, dependent: &str) {
        if let Some(set) = self.dependents.get_mut(owner) {
            set.remove(dependent);
            if set.is_empty() {
                self.dependents.remove(owner);
            }
        }
    }
}

/// How an owner reference stands, as the collector classifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerState {
    /// The owner exists and is not being deleted in the foreground.
    Solid,
    /// The owner is being deleted in the foreground and waits for its dependents.
    Waiting,
    /// No object with that uid exists (confirmed by a live read).
    Dangling,
}

/// What to do with a dependent, given the state of each of its owner references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Delete it: in the foreground when an owner waits for it (so that owner also waits for
    /// this one's own dependents), else in the background.
    Delete {
        foreground: bool,
    },
    /// Some owners remain: drop the references to these gone (or going) owners.
    DropOwners(Vec<String>),
}

/// Kubernetes' rule: with every owner gone the dependent goes; with owners gone and some
/// waiting for it, it goes in the foreground; with a live owner left, the references to gone
/// owners are removed (and to foreground-deleted ones, which would otherwise wait for nothing).
pub fn verdict(owners: &[(String, OwnerState)]) -> Verdict {
    if owners.is_empty() {
        return Verdict::Keep;
    }
    let solid = owners.iter().any(|(_, s)| *s == OwnerState::Solid);
    let waiting = owners.iter().any(|(_, s)| *s == OwnerState::Waiting);
    if !solid {
        return Verdict::Delete {
            foreground: waiting,
        };
    }
    let gone: Vec<String> = owners
        .iter()
        .filter(|(_, s)| *s != OwnerState::Solid)
        .map(|(u, _)| u.clone())
        .collect();
    if gone.is_empty() {
        Verdict::Keep
    } else {
        Verdict::DropOwners(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(uid: &str, owners: &[(&str, bool)]) -> Node {
        Node {
            resource: "apps/v1/replicasets".into(),
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            namespace: Some("default".into()),
            name: uid.into(),
            uid: uid.into(),
            owners: owners
                .iter()
                .map(|(u, block)| OwnerReference {
                    uid: (*u).into(),
                    block_owner_deletion: Some(*block),
                    ..Default::default()
                })
                .collect(),
            deleting: false,
            finalizers: vec![],
        }
    }

    #[test]
    fn edges_follow_owner_changes_and_removals() {
        let mut g = Graph::default();
        g.apply(node("d", &[]));
        assert_eq!(g.apply(node("rs", &[("d", true)])), vec!["rs"]);
        assert_eq!(g.dependents_of("d").len(), 1);
        // The owner starts a foreground deletion: a change of its dependent concerns it.
        let mut d = node("d", &[]);
        d.deleting = true;
        d.finalizers = vec![FOREGROUND.into()];
        g.apply(d);
        assert_eq!(g.apply(node("rs", &[])), vec!["d", "rs"]);
        assert!(g.dependents_of("d").is_empty());
        g.apply(node("rs", &[("d", true)]));
        // The dependent goes: the owner is looked at again; the owner goes: its dependents are.
        assert_eq!(g.remove("rs"), vec!["d"]);
        g.apply(node("rs", &[("d", true)]));
        assert_eq!(g.remove("d"), vec!["rs"]);
        assert!(g.get("d").is_none());
        assert!(g.get("rs").unwrap().blocks("d"));
    }

    #[test]
    fn verdicts_as_kubernetes_decides() {
        use OwnerState::*;
        let o = |s: &[OwnerState]| -> Vec<(String, OwnerState)> {
            s.iter()
                .enumerate()
                .map(|(i, s)| (format!("u{i}"), *s))
                .collect()
        };
        assert_eq!(verdict(&o(&[])), Verdict::Keep);
        assert_eq!(verdict(&o(&[Solid])), Verdict::Keep);
        assert_eq!(
            verdict(&o(&[Dangling])),
            Verdict::Delete { foreground: false }
        );
        assert_eq!(
            verdict(&o(&[Dangling, Waiting])),
            Verdict::Delete { foreground: true }
        );
        assert_eq!(
            verdict(&o(&[Solid, Dangling, Waiting])),
            Verdict::DropOwners(vec!["u1".into(), "u2".into()])
        );
    }
}
