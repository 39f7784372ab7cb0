//! An informer: a local cache of one kind of object kept current by list + watch, telling a
//! handler about every change. Controllers read the cache instead of asking the API server,
//! and queue keys from the handler.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::WorkQueue;

/// "namespace/name", or "name" for cluster-scoped objects.
pub fn key_of<K: Resource>(obj: &K) -> String {
    match obj.meta().namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{}", obj.meta().name.as_deref().unwrap_or("")),
        _ => obj.meta().name.clone().unwrap_or_default(),
    }
}

/// A change seen by the informer, with the object as the cache holds it (handlers that keep
/// it share that copy).
pub enum Change<'a, K> {
    Applied(&'a Arc<K>),
    Deleted(&'a Arc<K>),
}

impl<K> Change<'_, K> {
    /// The object, applied or deleted.
    pub fn object(&self) -> &K {
        match self {
            Change::Applied(o) | Change::Deleted(o) => o,
        }
    }
}

/// A handler that queues the changed object's own key.
pub fn enqueue_self<K: Resource>(queue: WorkQueue) -> impl Fn(Change<'_, K>) + Send + Sync {
    move |c| queue.add(&key_of(c.object()))
}

/// A handler that queues the key of the changed object's controller, when that controller is
/// of `kind` (a pod → its ReplicaSet, a ReplicaSet → its Deployment).
pub fn enqueue_controller<K: Resource>(
    queue: WorkQueue,
    kind: &'static str,
) -> impl Fn(Change<'_, K>) + Send + Sync {
    move |c| {
        let meta = c.object().meta();
        if let Some(o) = crate::owner::controller_of(meta).filter(|o| o.kind == kind) {
            let ns = meta.namespace.as_deref().unwrap_or_default();
            queue.add(&format!("{ns}/{}", o.name));
        }
    }
}

type Cache<K> = Arc<RwLock<BTreeMap<String, Arc<K>>>>;

/// Objects per list request when (re)filling the cache.
const LIST_PAGE: u32 = 500;

type Handler<K> = Arc<dyn Fn(Change<'_, K>) + Send + Sync>;
type Handlers<K> = Arc<RwLock<Vec<Handler<K>>>>;

/// One cache per kind can serve every loop (client-go's shared informers): each loop adds its
/// handler, and a 30 000-pod cluster is held in memory once, not once per loop.
pub struct Informer<K> {
    cache: Cache<K>,
    handlers: Handlers<K>,
    synced: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl<K> Informer<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// Start caching what `api` lists (optionally narrowed by `params`, e.g. a field
    /// selector), calling `handler` for each change and, every `resync`, for every object.
    pub fn start(
        api: Api<K>,
        params: WatchParams,
        resync: Duration,
        handler: impl Fn(Change<'_, K>) + Send + Sync + 'static,
    ) -> Informer<K> {
        let cache: Cache<K> = Arc::default();
        let handler: Handler<K> = Arc::new(handler);
        let handlers: Handlers<K> = Arc::new(RwLock::new(vec![handler]));
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(run(
            api,
            params,
            resync,
            cache.clone(),
            tx,
            handlers.clone(),
        ));
        Informer {
            cache,
            handlers,
            synced: rx,
            task,
        }
    }

    /// Tell `handler` about every change from now on, and about every object cached so far
    /// (as Applied) right away — so it misses nothing, whenever it joins.
    pub fn add_handler(&self, handler: impl Fn(Change<'_, K>) + Send + Sync + 'static) {
        // Changes are applied to the cache and dispatched under the read lock: holding the
        // write lock here puts this replay wholly before or after each of them.
        let mut handlers = self.handlers.write().expect("handlers lock");
        for o in self.list() {
            handler(Change::Applied(&o));
        }
        handlers.push(Arc::new(handler));
    }

    /// Wait until the first list is in the cache.
    pub async fn synced(&self) {
        let mut rx = self.synced.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    pub fn get(&self, key: &str) -> Option<Arc<K>> {
        self.cache.read().expect("cache lock").get(key).cloned()
    }

    pub fn list(&self) -> Vec<Arc<K>> {
        self.cache
            .read()
            .expect("cache lock")
            .values()
            .cloned()
            .collect()
    }

    /// Objects of one namespace.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        let prefix = format!("{namespace}/");
        self.cache
            .read()
            .expect("cache lock")
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Copies of the objects of one namespace, for a decision that takes a slice of them.
    pub fn copies_in_namespace(&self, namespace: &str) -> Vec<K> {
        self.list_namespace(namespace)
            .iter()
            .map(|o| (**o).clone())
            .collect()
    }
}

impl<K> Drop for Informer<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn dispatch<K>(handlers: &[Handler<K>], change: Change<'_, K>) {
    for h in handlers {
        h(match change {
            Change::Applied(o) => Change::Applied(o),
            Change::Deleted(o) => Change::Deleted(o),
        });
    }
}

async fn run<K>(
    api: Api<K>,
    params: WatchParams,
    resync: Duration,
    cache: Cache<K>,
    synced: watch::Sender<bool>,
    handlers: Handlers<K>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let mut failures = 0u32;
    loop {
        match list_and_watch(&api, &params, resync, &cache, &synced, &handlers).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                tracing::debug!("informer: {e:#}; relisting");
            }
        }
        tokio::time::sleep(super::queue::backoff(failures.min(8)).max(Duration::from_millis(50)))
            .await;
    }
}

/// One list, then watch from its revision until the watch fails or is expired (410 Gone).
async fn list_and_watch<K>(
    api: &Api<K>,
    params: &WatchParams,
    resync: Duration,
    cache: &Cache<K>,
    synced: &watch::Sender<bool>,
    handlers: &Handlers<K>,
) -> anyhow::Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    // In pages, as client-go lists: a big collection never sits in memory twice over (the
    // response and the objects) in one piece.
    let mut lp = ListParams {
        label_selector: params.label_selector.clone(),
        field_selector: params.field_selector.clone(),
        limit: Some(LIST_PAGE),
        ..Default::default()
    };
    let mut fresh: BTreeMap<String, Arc<K>> = BTreeMap::new();
    let mut version = loop {
        let page = api.list(&lp).await?;
        fresh.extend(page.items.into_iter().map(|o| (key_of(&o), Arc::new(o))));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp.continue_token = Some(c),
            None => break page.metadata.resource_version.unwrap_or_default(),
        }
    };
    {
        let hs = handlers.read().expect("handlers lock");
        // Objects that vanished while we were not watching are deletions too.
        let gone: Vec<Arc<K>> = {
            let mut c = cache.write().expect("cache lock");
            let gone = c
                .iter()
                .filter(|(k, _)| !fresh.contains_key(*k))
                .map(|(_, v)| v.clone())
                .collect();
            *c = fresh.clone();
            gone
        };
        for o in gone {
            dispatch(&hs, Change::Deleted(&o));
        }
        for o in fresh.values() {
            dispatch(&hs, Change::Applied(o));
        }
    }
    drop(fresh);
    let _ = synced.send(true);
    let mut resync_timer = tokio::time::interval(resync);
    resync_timer.tick().await;
    loop {
        let mut wp = params.clone();
        wp.bookmarks = true;
        let stream = api.watch(&wp, &version).await?;
        let mut stream = stream.boxed();
        loop {
            let event = tokio::select! {
                e = stream.try_next() => e?,
                _ = resync_timer.tick() => {
                    let hs = handlers.read().expect("handlers lock");
                    for o in cache.read().expect("cache lock").values().cloned().collect::<Vec<_>>() {
                        dispatch(&hs, Change::Applied(&o));
                    }
                    continue;
                }
            };
            let Some(event) = event else {
                break; // the server ended the watch (timeout): watch again from `version`
            };
            match event {
                WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                    version = o.resource_version().unwrap_or(version);
                    let o = Arc::new(o);
                    let hs = handlers.read().expect("handlers lock");
                    cache
                        .write()
                        .expect("cache lock")
                        .insert(key_of(&*o), o.clone());
                    dispatch(&hs, Change::Applied(&o));
                }
                WatchEvent::Deleted(o) => {
                    version = o.resource_version().unwrap_or(version);
                    let o = Arc::new(o);
                    let hs = handlers.read().expect("handlers lock");
                    cache.write().expect("cache lock").remove(&key_of(&*o));
                    dispatch(&hs, Change::Deleted(&o));
                }
                WatchEvent::Bookmark(b) => version = b.metadata.resource_version,
                WatchEvent::Error(status) => {
                    anyhow::bail!("watch: {} ({})", status.message, status.code)
                }
            }
        }
    }
}

/// A handler that, for a changed object without a controller, queues every object of
/// `owners` in its namespace whose selector (from `selector_of`) matches it: an orphan is
/// news to the controllers that could adopt it.
pub fn enqueue_adopters<K: Resource, O>(
    queue: WorkQueue,
    owners: Arc<Informer<O>>,
    selector_of: fn(&O) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
) -> impl Fn(Change<'_, K>) + Send + Sync
where
    O: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    move |c| {
        let meta = c.object().meta();
        if crate::owner::controller_of(meta).is_some() {
            return;
        }
        let labels = meta.labels.clone().unwrap_or_default();
        let ns = meta.namespace.as_deref().unwrap_or_default();
        for o in owners.list_namespace(ns) {
            let matches = selector_of(&o).is_some_and(|s| {
                (s.match_labels.as_ref().is_some_and(|m| !m.is_empty())
                    || s.match_expressions.as_ref().is_some_and(|m| !m.is_empty()))
                    && crate::selector::matches(s, &labels)
            });
            if matches {
                queue.add(&key_of(&*o));
            }
        }
    }
}
