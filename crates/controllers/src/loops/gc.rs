//! The garbage collector, as Kubernetes runs it: the kinds come from discovery (every served
//! resource that can be listed, watched and deleted, custom resources included, found again
//! when a CRD changes), one metadata-only watch per kind feeds the dependency graph
//! (`crate::garbage`), and workers decide per object uid:
//! - an owner with the `orphan` finalizer: its dependents lose their reference to it, then the
//!   finalizer goes;
//! - an owner with `foregroundDeletion`: its dependents are deleted (each in the foreground, so
//!   it waits for its own), and once none that blocks it remains the finalizer goes;
//! - a dependent whose owners are all gone (verified by uid with a live read, not the cache)
//!   is deleted in the background, with the ordinary graceful deletion (a pod keeps its grace
//!   period).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, PartialObjectMeta, PostParams, Preconditions,
    PropagationPolicy,
};
use kube::discovery::{verbs, Discovery, Scope};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::sync::Notify;
use tokio_util::task::AbortOnDropHandle;

use super::{is_status, work, Next};
use crate::garbage::{self, Graph, Node, OwnerState, Verdict};
use crate::runtime::WorkQueue;

/// Look for new kinds this often even without a CRD event.
const REDISCOVER: Duration = Duration::from_secs(60);
/// The longest the workers wait for the first lists before they start anyway.
const SYNC_WAIT: Duration = Duration::from_secs(30);
/// Attempts at a read-modify-write before the key goes back to the queue.
const WRITE_TRIES: usize = 5;

#[derive(Clone)]
struct Kind {
    ar: ApiResource,
    namespaced: bool,
}

struct Collector {
    client: Client,
    graph: Mutex<Graph>,
    /// "group/version/plural" → kind, for the watched resources.
    resources: RwLock<HashMap<String, Kind>>,
    /// (apiVersion, kind) → kind, in every served version, for owner references.
    kinds: RwLock<HashMap<(String, String), Kind>>,
    queue: WorkQueue,
    rediscover: Notify,
}

fn resource_key(ar: &ApiResource) -> String {
    format!("{}/{}", ar.api_version, ar.plural)
}

pub async fn run(client: Client, workers: usize) {
    let gc = Arc::new(Collector {
        client,
        graph: Mutex::default(),
        resources: RwLock::default(),
        kinds: RwLock::default(),
        queue: WorkQueue::new(),
        rediscover: Notify::new(),
    });
    let mut watches: HashMap<String, AbortOnDropHandle<()>> = HashMap::new();
    let mut workers_task = None;
    loop {
        match Discovery::new(gc.client.clone()).run().await {
            Ok(d) => {
                let synced = gc.clone().watch_kinds(&d, &mut watches);
                if workers_task.is_none() {
                    // Decide only once each kind has been listed: an orphaning owner must see
                    // all its dependents before its finalizer goes.
                    // A kind that cannot be listed holds this up for at most SYNC_WAIT in all.
                    let all = futures::future::join_all(synced);
                    let _ = tokio::time::timeout(SYNC_WAIT, all).await;
                    let gc2 = gc.clone();
                    workers_task = Some(AbortOnDropHandle::new(tokio::spawn(work(
                        gc.queue.clone(),
                        workers,
                        move |uid| {
                            let gc = gc2.clone();
                            async move { gc.reconcile(&uid).await }
                        },
                    ))));
                }
            }
            Err(e) => tracing::debug!("garbage collector: discovery: {e}"),
        }
        let _ = tokio::time::timeout(REDISCOVER, gc.rediscover.notified()).await;
    }
}

impl Collector {
    /// Start a watch for each listable, watchable, deletable resource not watched yet, and
    /// stop those no longer served; returns receivers that fire when each new one has listed.
    fn watch_kinds(
        self: Arc<Self>,
        d: &Discovery,
        watches: &mut HashMap<String, AbortOnDropHandle<()>>,
    ) -> Vec<tokio::sync::oneshot::Receiver<()>> {
        let mut kinds = HashMap::new();
        let mut resources = HashMap::new();
        for group in d.groups() {
            for version in group.versions() {
                for (ar, caps) in group.versioned_resources(version) {
                    let kind = Kind {
                        namespaced: caps.scope == Scope::Namespaced,
                        ar: ar.clone(),
                    };
                    kinds.insert((ar.api_version.clone(), ar.kind.clone()), kind);
                }
            }
            for (ar, caps) in group.recommended_resources() {
                let usable = [verbs::LIST, verbs::WATCH, verbs::DELETE]
                    .iter()
                    .all(|v| caps.supports_operation(v));
                // Events own nothing and are many; Kubernetes' collector skips them too.
                if usable && ar.plural != "events" {
                    let kind = Kind {
                        namespaced: caps.scope == Scope::Namespaced,
                        ar,
                    };
                    resources.insert(resource_key(&kind.ar), kind);
                }
            }
        }
        *self.kinds.write().expect("kinds lock") = kinds;
        let mut synced = Vec::new();
        watches.retain(|r, _| resources.contains_key(r));
        {
            // A kind no longer served (its CRD went): its objects leave the graph.
            let mut g = self.graph.lock().expect("graph lock");
            let old = self.resources.read().expect("resources lock");
            for gone in old.keys().filter(|r| !resources.contains_key(*r)) {
                for uid in g.uids_of(gone) {
                    for t in g.remove(&uid) {
                        self.queue.add(&t);
                    }
                }
            }
        }
        for (key, kind) in &resources {
            if !watches.contains_key(key) {
                let (tx, rx) = tokio::sync::oneshot::channel();
                synced.push(rx);
                let task = tokio::spawn(self.clone().watch(key.clone(), kind.ar.clone(), tx));
                watches.insert(key.clone(), AbortOnDropHandle::new(task));
            }
        }
        *self.resources.write().expect("resources lock") = resources;
        synced
    }

    /// Keep the graph current with one resource's objects (their metadata only).
    async fn watch(
        self: Arc<Self>,
        resource: String,
        ar: ApiResource,
        synced: tokio::sync::oneshot::Sender<()>,
    ) {
        let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(self.client.clone(), &ar);
        let is_crd = ar.group == "apiextensions.k8s.io" && ar.plural == "customresourcedefinitions";
        let mut stream = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut synced = Some(synced);
        let mut listed: HashSet<String> = HashSet::new();
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    tracing::debug!("garbage collector: watch {resource}: {e}");
                    continue;
                }
            };
            let mut touched = Vec::new();
            {
                let mut g = self.graph.lock().expect("graph lock");
                match event {
                    Event::Init => listed.clear(),
                    Event::InitApply(o) => {
                        listed.insert(o.metadata.uid.clone().unwrap_or_default());
                        let n = Node::from_meta(&resource, &ar.api_version, &ar.kind, &o.metadata);
                        touched = g.apply(n);
                    }
                    Event::InitDone => {
                        // What the relist no longer has was deleted while we were not watching.
                        for uid in g.uids_of(&resource) {
                            if !listed.contains(&uid) {
                                touched.extend(g.remove(&uid));
                            }
                        }
                        listed.clear();
                        if let Some(tx) = synced.take() {
                            let _ = tx.send(());
                        }
                    }
                    Event::Apply(o) => {
                        let n = Node::from_meta(&resource, &ar.api_version, &ar.kind, &o.metadata);
                        touched = g.apply(n);
                    }
                    Event::Delete(o) => {
                        touched = g.remove(o.metadata.uid.as_deref().unwrap_or_default());
                    }
                }
            }
            if is_crd {
                self.rediscover.notify_one();
            }
            for uid in touched {
                self.queue.add(&uid);
            }
        }
    }

    async fn reconcile(&self, uid: &str) -> anyhow::Result<Next> {
        let (node, dependents) = {
            let g = self.graph.lock().expect("graph lock");
            match g.get(uid) {
                Some(n) => (n.clone(), g.dependents_of(uid)),
                None => return Ok(Next::Done),
            }
        };
        if node.orphaning() {
            for d in &dependents {
                self.drop_owners(d, &[uid.to_string()]).await?;
            }
            self.remove_finalizer(&node, garbage::ORPHAN).await?;
            return Ok(Next::Done);
        }
        if node.waiting_for_dependents() {
            if dependents.iter().any(|d| d.blocks(uid)) {
                // Each dependent sees its owner waiting and goes in the foreground; their
                // removal brings this owner back here.
                for d in dependents.iter().filter(|d| !d.deleting) {
                    self.queue.add(&d.uid);
                }
            } else {
                self.remove_finalizer(&node, garbage::FOREGROUND).await?;
            }
            return Ok(Next::Done);
        }
        if node.deleting || node.owners.is_empty() {
            return Ok(Next::Done);
        }
        let mut states = Vec::new();
        for owner in &node.owners {
            states.push((owner.uid.clone(), self.owner_state(&node, owner).await?));
        }
        match garbage::verdict(&states) {
            Verdict::Keep => {}
            Verdict::Delete { foreground } => self.delete(&node, foreground).await?,
            Verdict::DropOwners(uids) => self.drop_owners(&node, &uids).await?,
        }
        Ok(Next::Done)
    }

    /// How `owner` stands: from the graph when it is there, else from a live read by name
    /// (compared by uid), so a cache that has not seen a new owner deletes nothing.
    async fn owner_state(&self, node: &Node, owner: &OwnerReference) -> anyhow::Result<OwnerState> {
        if let Some(o) = self.graph.lock().expect("graph lock").get(&owner.uid) {
            return Ok(if o.waiting_for_dependents() {
                OwnerState::Waiting
            } else {
                OwnerState::Solid
            });
        }
        let key = (owner.api_version.clone(), owner.kind.clone());
        let kind = self.kinds.read().expect("kinds lock").get(&key).cloned();
        let Some(kind) = kind else {
            anyhow::bail!(
                "owner {} {}: kind {} {} is not served",
                owner.kind,
                owner.name,
                owner.api_version,
                owner.kind
            );
        };
        let api: Api<PartialObjectMeta<DynamicObject>> = match (&node.namespace, kind.namespaced) {
            (Some(ns), true) => Api::namespaced_with(self.client.clone(), ns, &kind.ar),
            (None, false) | (Some(_), false) => Api::all_with(self.client.clone(), &kind.ar),
            // A cluster-scoped object cannot be owned by a namespaced one: leave it be.
            (None, true) => return Ok(OwnerState::Solid),
        };
        Ok(match api.get_opt(&owner.name).await? {
            Some(o) if o.metadata.uid.as_deref() == Some(owner.uid.as_str()) => {
                let n = Node::from_meta("", "", "", &o.metadata);
                if n.waiting_for_dependents() {
                    OwnerState::Waiting
                } else {
                    OwnerState::Solid
                }
            }
            _ => OwnerState::Dangling,
        })
    }

    fn api_for(&self, node: &Node) -> Option<Api<DynamicObject>> {
        let kind = self
            .resources
            .read()
            .expect("resources lock")
            .get(&node.resource)
            .cloned()?;
        Some(match &node.namespace {
            Some(ns) if kind.namespaced => Api::namespaced_with(self.client.clone(), ns, &kind.ar),
            _ => Api::all_with(self.client.clone(), &kind.ar),
        })
    }

    /// An ordinary delete of this very object (by uid), so pods keep their grace period.
    async fn delete(&self, node: &Node, foreground: bool) -> anyhow::Result<()> {
        let Some(api) = self.api_for(node) else {
            return Ok(());
        };
        let dp = DeleteParams {
            propagation_policy: Some(if foreground {
                PropagationPolicy::Foreground
            } else {
                PropagationPolicy::Background
            }),
            preconditions: Some(Preconditions {
                uid: Some(node.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        tracing::debug!("garbage collector: deleting {} {}", node.kind, node.name);
        match api.delete(&node.name, &dp).await {
            Ok(_) => Ok(()),
            // Gone already, or a new object of that name: nothing of ours to delete.
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Read-modify-write of this object (by uid), retried on conflicts.
    async fn update(
        &self,
        node: &Node,
        change: impl Fn(&mut DynamicObject) -> bool,
    ) -> anyhow::Result<()> {
        let Some(api) = self.api_for(node) else {
            return Ok(());
        };
        for _ in 0..WRITE_TRIES {
            let Some(mut obj) = api.get_opt(&node.name).await? else {
                return Ok(());
            };
            if obj.metadata.uid.as_deref() != Some(node.uid.as_str()) || !change(&mut obj) {
                return Ok(());
            }
            match api.replace(&node.name, &PostParams::default(), &obj).await {
                Ok(_) => return Ok(()),
                Err(e) if is_status(&e, 404) => return Ok(()),
                Err(e) if is_status(&e, 409) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        anyhow::bail!(
            "{} {}: kept changing while being updated",
            node.kind,
            node.name
        )
    }

    /// Remove `node`'s references to the owners `uids`.
    async fn drop_owners(&self, node: &Node, uids: &[String]) -> anyhow::Result<()> {
        self.update(node, |obj| {
            let refs = obj.metadata.owner_references.get_or_insert_with(Vec::new);
            let before = refs.len();
            refs.retain(|r| !uids.contains(&r.uid));
            refs.len() != before
        })
        .await
    }

    async fn remove_finalizer(&self, node: &Node, finalizer: &str) -> anyhow::Result<()> {
        self.update(node, |obj| {
            let fins = obj.metadata.finalizers.get_or_insert_with(Vec::new);
            let before = fins.len();
            fins.retain(|f| f != finalizer);
            fins.len() != before
        })
        .await
    }
}
