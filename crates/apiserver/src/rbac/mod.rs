//! RBAC authorization, as kube-apiserver's RBAC authorizer: Roles, ClusterRoles and their
//! bindings, held in an in-memory index that a store watch keeps current (a request is a few
//! hash lookups, never a store read), plus the checks that keep a user from granting what they
//! do not hold (escalate/bind).

pub mod aggregate;
pub mod attributes;
pub mod bootstrap;
pub mod escalation;
pub mod reviews;
pub mod rules;
pub mod validation;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;
use yun_store::{EventKind, RangeRequest, Store};

use crate::auth::{UserInfo, MASTERS};
use rules::{Attributes, Rule};

pub const GROUP: &str = "rbac.authorization.k8s.io";
/// Where the four kinds are stored (`resources::Resource::prefix` of the group).
pub const PREFIX: &str = "/registry/rbac.authorization.k8s.io/";

/// A RoleBinding's or ClusterRoleBinding's target.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum RoleRef {
    Role(String, String),
    ClusterRole(String),
}

/// Who a binding names, as the request's identity shows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Subject {
    User(String),
    Group(String),
}

/// The authorizer's view of the store's RBAC objects.
#[derive(Default)]
pub struct Index {
    /// Raw objects by store key, from which the maps below are rebuilt.
    objects: HashMap<String, Value>,
    roles: HashMap<(String, String), Arc<Vec<Rule>>>,
    cluster_roles: HashMap<String, Arc<Vec<Rule>>>,
    /// ClusterRoleBindings: subject → the cluster roles it holds everywhere.
    cluster: HashMap<Subject, Vec<String>>,
    /// RoleBindings: (namespace, subject) → the roles it holds there.
    namespaced: HashMap<(String, Subject), Vec<RoleRef>>,
}

fn str_at<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

/// The identities a binding's subjects match (a ServiceAccount is its user name).
fn subjects(binding: &Value) -> Vec<Subject> {
    let ns = str_at(binding, "/metadata/namespace");
    let mut out = Vec::new();
    for s in binding
        .get("subjects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = str_at(s, "/name").to_string();
        match str_at(s, "/kind") {
            "User" => out.push(Subject::User(name)),
            "Group" => out.push(Subject::Group(name)),
            "ServiceAccount" => {
                let sa_ns = match str_at(s, "/namespace") {
                    "" => ns,
                    n => n,
                };
                out.push(Subject::User(format!(
                    "system:serviceaccount:{sa_ns}:{name}"
                )));
            }
            _ => {}
        }
    }
    out
}

impl Index {
    fn rebuild(&mut self) {
        self.roles.clear();
        self.cluster_roles.clear();
        self.cluster.clear();
        self.namespaced.clear();
        for (key, obj) in &self.objects {
            let name = str_at(obj, "/metadata/name").to_string();
            let ns = str_at(obj, "/metadata/namespace").to_string();
            let kind = key
                .trim_start_matches(PREFIX)
                .split('/')
                .next()
                .unwrap_or("");
            match kind {
                "roles" => {
                    self.roles.insert((ns, name), Arc::new(Rule::all_of(obj)));
                }
                "clusterroles" => {
                    self.cluster_roles.insert(name, Arc::new(Rule::all_of(obj)));
                }
                "clusterrolebindings" => {
                    let role = str_at(obj, "/roleRef/name").to_string();
                    for s in subjects(obj) {
                        self.cluster.entry(s).or_default().push(role.clone());
                    }
                }
                "rolebindings" => {
                    let name = str_at(obj, "/roleRef/name").to_string();
                    let r = match str_at(obj, "/roleRef/kind") {
                        "ClusterRole" => RoleRef::ClusterRole(name),
                        _ => RoleRef::Role(ns.clone(), name),
                    };
                    for s in subjects(obj) {
                        self.namespaced
                            .entry((ns.clone(), s))
                            .or_default()
                            .push(r.clone());
                    }
                }
                _ => {}
            }
        }
    }

    fn rules_of(&self, r: &RoleRef) -> Option<&Arc<Vec<Rule>>> {
        match r {
            RoleRef::Role(ns, n) => self.roles.get(&(ns.clone(), n.clone())),
            RoleRef::ClusterRole(n) => self.cluster_roles.get(n),
        }
    }

    /// Every rule `user` holds in `ns` ("" = cluster-wide only), for reviews and escalation.
    pub fn rules_for(&self, user: &UserInfo, ns: &str) -> Vec<Rule> {
        let mut out = Vec::new();
        self.visit(user, ns, |rules| {
            out.extend(rules.iter().cloned());
            false
        });
        out
    }

    /// Call `f` with each rule set `user` holds in `ns`, until it returns true.
    fn visit(&self, user: &UserInfo, ns: &str, mut f: impl FnMut(&[Rule]) -> bool) -> bool {
        let ids = std::iter::once(Subject::User(user.name.clone()))
            .chain(user.groups.iter().map(|g| Subject::Group(g.clone())));
        for id in ids {
            for role in self.cluster.get(&id).into_iter().flatten() {
                if let Some(r) = self.cluster_roles.get(role) {
                    if f(r) {
                        return true;
                    }
                }
            }
            if ns.is_empty() {
                continue;
            }
            for r in self
                .namespaced
                .get(&(ns.to_string(), id))
                .into_iter()
                .flatten()
            {
                if let Some(rules) = self.rules_of(r) {
                    if f(rules) {
                        return true;
                    }
                }
            }
        }
        false
    }

    pub fn allows(&self, a: &Attributes) -> bool {
        self.visit(&a.user, &a.namespace, |rules| {
            rules.iter().any(|r| r.allows(a))
        })
    }

    /// The rules of the ClusterRole `name` (None if absent).
    pub fn cluster_role(&self, name: &str) -> Option<Arc<Vec<Rule>>> {
        self.cluster_roles.get(name).cloned()
    }

    pub fn role(&self, ns: &str, name: &str) -> Option<Arc<Vec<Rule>>> {
        self.roles.get(&(ns.to_string(), name.to_string())).cloned()
    }

    pub fn objects(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.objects.iter()
    }
}

/// The shared authorizer: the index behind a lock that requests only read.
#[derive(Default)]
pub struct Authorizer {
    index: RwLock<Index>,
}

impl Authorizer {
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the request is allowed (`system:masters` always is, as in kube).
    pub fn allows(&self, a: &Attributes) -> bool {
        a.user.in_group(MASTERS) || self.read().allows(a)
    }

    fn replace(&self, objects: HashMap<String, Value>) {
        let mut idx = self.index.write().unwrap_or_else(|e| e.into_inner());
        idx.objects = objects;
        idx.rebuild();
    }

    fn apply(&self, events: Vec<yun_store::Event>) {
        let mut idx = self.index.write().unwrap_or_else(|e| e.into_inner());
        for ev in events {
            match ev.kind {
                EventKind::Put => {
                    if let Ok(v) = serde_json::from_slice(&ev.kv.value) {
                        idx.objects.insert(ev.kv.key, v);
                    }
                }
                EventKind::Delete => {
                    idx.objects.remove(&ev.kv.key);
                }
            }
        }
        idx.rebuild();
    }

    /// Load the RBAC objects once (so the server answers right from its first request).
    pub async fn load(&self, store: &dyn Store) -> anyhow::Result<i64> {
        let list = store
            .range(RangeRequest {
                prefix: PREFIX.into(),
                ..Default::default()
            })
            .await?;
        let objects = list
            .kvs
            .into_iter()
            .filter_map(|kv| Some((kv.key, serde_json::from_slice(&kv.value).ok()?)))
            .collect();
        self.replace(objects);
        Ok(list.revision)
    }

    /// Keep the index current: watch the group's prefix from `rev`, list again after an
    /// error (a compacted revision, a store restart), and after each batch of changes let the
    /// aggregation loop bring aggregated ClusterRoles up to date.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>, mut rev: i64) {
        use futures::StreamExt;
        loop {
            aggregate::reconcile(&self, store.as_ref()).await;
            match store.watch(PREFIX, rev + 1).await {
                Ok(mut w) => {
                    while let Some(first) = w.next().await {
                        let Ok(first) = first else { break };
                        let mut batch = vec![first];
                        // Take what else is ready, so a burst rebuilds the index once.
                        while let Some(Some(Ok(ev))) = w.next().now_or_never() {
                            batch.push(ev);
                        }
                        rev = batch.last().map(|e| e.revision()).unwrap_or(rev);
                        self.apply(batch);
                        aggregate::reconcile(&self, store.as_ref()).await;
                    }
                }
                Err(e) => tracing::warn!("rbac watch: {e}"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            match self.load(store.as_ref()).await {
                Ok(r) => rev = r,
                Err(e) => tracing::warn!("rbac list: {e:#}"),
            }
        }
    }
}

use futures::FutureExt;
