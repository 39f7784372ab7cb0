//! The scheduler's picture of the cluster: every node with the pods counted on it, kept current
//! one event at a time (as kube-scheduler's cache is), so that placing a pod never walks every
//! pod in the cluster. A pod being bound is "assumed" on its node until the watch shows it bound,
//! so the next decision already counts it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;

use super::{NodeInfo, Placed};
use crate::cached::Pod;
use crate::replicaset::is_active;

#[derive(Debug, Default)]
pub struct Cache {
    nodes: BTreeMap<String, NodeInfo>,
    /// Pod key → the node it is counted on.
    placed: HashMap<String, String>,
    /// Pods bound to a node that is not registered (yet, or any more), by pod key: they count
    /// again when the node (re)appears.
    orphans: HashMap<String, (String, Placed)>,
    /// Pods whose binding is in flight.
    assumed: HashSet<String>,
}

fn bound_node(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

impl Cache {
    pub fn new() -> Cache {
        Cache::default()
    }

    /// The nodes, in name order (the order ties are broken in).
    pub fn nodes(&self) -> std::collections::btree_map::Values<'_, String, NodeInfo> {
        self.nodes.values()
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name)
    }

    pub fn apply_node(&mut self, node: &Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        if let Some(info) = self.nodes.get_mut(&name) {
            info.set_node(node.clone());
            return;
        }
        let mut info = NodeInfo::new(node.clone());
        let homecoming: Vec<String> = self
            .orphans
            .iter()
            .filter(|(_, (n, _))| *n == name)
            .map(|(k, _)| k.clone())
            .collect();
        for key in homecoming {
            if let Some((_, placed)) = self.orphans.remove(&key) {
                info.add_pod(&key, placed);
            }
        }
        self.nodes.insert(name, info);
    }

    pub fn delete_node(&mut self, name: &str) {
        let Some(info) = self.nodes.remove(name) else {
            return;
        };
        for (key, placed) in info.into_pods() {
            self.orphans.insert(key, (name.to_string(), placed));
        }
    }

    /// A pod was created or changed: count it where it is bound; stop counting it once it has
    /// finished. A pod still waiting for a node changes nothing (it may be assumed).
    pub fn apply_pod(&mut self, key: &str, pod: &Arc<Pod>) {
        if !is_active(pod) {
            self.forget(key);
            return;
        }
        if let Some(node) = bound_node(pod) {
            self.place(key, node.to_string(), Placed::of(pod));
        }
    }

    /// Count `pod` on `node` before the API says so (its binding is in flight).
    pub fn assume(&mut self, key: &str, node: &str, pod: &Arc<Pod>) {
        self.place(key, node.to_string(), Placed::of(pod));
        self.assumed.insert(key.to_string());
    }

    /// Whether the pod is counted somewhere (bound, or its binding is in flight).
    pub fn is_placed(&self, key: &str) -> bool {
        self.placed.contains_key(key)
    }

    /// Stop counting a pod (deleted, finished, or its binding failed).
    pub fn forget(&mut self, key: &str) {
        self.assumed.remove(key);
        if let Some(node) = self.placed.remove(key) {
            if let Some(info) = self.nodes.get_mut(&node) {
                info.remove_pod(key);
            }
            self.orphans.remove(key);
        }
    }

    fn place(&mut self, key: &str, node: String, placed: Placed) {
        self.forget(key);
        match self.nodes.get_mut(&node) {
            Some(info) => info.add_pod(key, placed),
            None => {
                self.orphans.insert(key.to_string(), (node.clone(), placed));
            }
        }
        self.placed.insert(key.to_string(), node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap()
    }

    fn pod(name: &str, node: Option<&str>, phase: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "uid": name},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox",
                    "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]},
                "status": {"phase": phase}
            }))
            .unwrap(),
        )
    }

    fn cpu(cache: &Cache, node: &str) -> i64 {
        cache.node(node).unwrap().requested().cpu_millis
    }

    #[test]
    fn counts_follow_pods_through_assume_bind_finish_and_delete() {
        let mut c = Cache::new();
        c.apply_node(&node("a"));
        c.apply_node(&node("b"));
        let p = pod("p", None, "Pending");
        c.apply_pod("default/p", &p);
        assert!(!c.is_placed("default/p"));
        c.assume("default/p", "a", &p);
        assert_eq!(cpu(&c, "a"), 500);
        // The watch shows the binding: still counted once.
        c.apply_pod("default/p", &pod("p", Some("a"), "Pending"));
        c.apply_pod("default/p", &pod("p", Some("a"), "Running"));
        assert_eq!(cpu(&c, "a"), 500);
        assert_eq!(c.node("a").unwrap().pod_count(), 1);
        // Finished pods free their node.
        c.apply_pod("default/p", &pod("p", Some("a"), "Succeeded"));
        assert_eq!(cpu(&c, "a"), 0);
        // A failed binding is forgotten.
        let q = pod("q", None, "Pending");
        c.assume("default/q", "b", &q);
        assert_eq!(cpu(&c, "b"), 500);
        c.forget("default/q");
        assert_eq!(cpu(&c, "b"), 0);
        assert!(!c.is_placed("default/q"));
    }

    #[test]
    fn pods_of_a_node_that_leaves_count_again_when_it_returns() {
        let mut c = Cache::new();
        c.apply_pod("default/early", &pod("early", Some("late"), "Running"));
        assert!(c.is_placed("default/early"));
        c.apply_node(&node("late"));
        assert_eq!(cpu(&c, "late"), 500);
        c.delete_node("late");
        assert!(c.node("late").is_none());
        c.apply_node(&node("late"));
        assert_eq!(cpu(&c, "late"), 500);
        c.forget("default/early");
        assert_eq!(cpu(&c, "late"), 0);
    }
}
