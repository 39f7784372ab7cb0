//! The pods bound to this node, kept current by one watch (the kubelet's pod config source):
//! the sync loop reads them from here instead of listing, and learns which pods changed, so a
//! new pod is started at once without every other pod on the node being synced again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use kube::Api;
use tokio::sync::{watch, Notify};

#[derive(Default)]
struct State {
    /// uid → pod.
    pods: HashMap<String, Pod>,
    /// Pods added, changed or deleted since the sync loop last looked.
    changed: HashSet<String>,
}

pub struct Snapshot {
    pub pods: Vec<Pod>,
    pub changed: HashSet<String>,
    /// Every pod's uid, when this snapshot covers all pods or a pod was deleted.
    pub live: Option<HashSet<String>>,
}

/// A handle on the watched pods; the watch ends when it is dropped.
pub struct NodePods {
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
    synced: watch::Receiver<bool>,
    _task: tokio_util::task::AbortOnDropHandle<()>,
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

impl NodePods {
    /// Watch the pods of `api` that `field_selector` selects (e.g. spec.nodeName=NODE).
    pub fn start(api: Api<Pod>, field_selector: &str) -> NodePods {
        let state: Arc<Mutex<State>> = Arc::default();
        let wake = Arc::new(Notify::new());
        let (tx, synced) = watch::channel(false);
        let config = watcher::Config::default().fields(field_selector);
        let task = tokio::spawn(run(api, config, state.clone(), wake.clone(), tx));
        NodePods {
            state,
            wake,
            synced,
            _task: tokio_util::task::AbortOnDropHandle::new(task),
        }
    }

    /// Wait until the first full list is in (before it, a running container's pod could look
    /// deleted).
    pub async fn synced(&self) {
        let mut rx = self.synced.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Wait until a pod changes, or `period` passes.
    pub async fn changed_or(&self, period: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = self.wake.notified() => {}
        }
    }

    /// Count a pod as changed (to sync it again soon) and wake the sync loop.
    pub fn mark_changed(&self, uid: &str) {
        self.state
            .lock()
            .expect("lock")
            .changed
            .insert(uid.to_string());
        self.wake.notify_one();
    }

    /// What changed since the last call: the changed pods (every pod when `all`), and the
    /// uids of the node's pods when any pod went away (to find containers left without one).
    pub fn take(&self, all: bool) -> Snapshot {
        let mut s = self.state.lock().expect("lock");
        let changed = std::mem::take(&mut s.changed);
        let pods = if all {
            s.pods.values().cloned().collect()
        } else {
            changed
                .iter()
                .filter_map(|u| s.pods.get(u))
                .cloned()
                .collect()
        };
        let gone = changed.iter().any(|u| !s.pods.contains_key(u));
        Snapshot {
            pods,
            changed,
            live: (all || gone).then(|| s.pods.keys().cloned().collect()),
        }
    }
}

async fn run(
    api: Api<Pod>,
    config: watcher::Config,
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
    synced: watch::Sender<bool>,
) {
    let mut events = watcher(api, config).boxed();
    // A relist is gathered aside and swapped in whole when done.
    let mut relist: Option<HashMap<String, Pod>> = None;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!("watching this node's pods: {e:#}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut s = state.lock().expect("lock");
        match event {
            watcher::Event::Init => relist = Some(HashMap::new()),
            watcher::Event::InitApply(p) => {
                if let Some(r) = relist.as_mut() {
                    r.insert(uid(&p), p);
                }
            }
            watcher::Event::InitDone => {
                if let Some(fresh) = relist.take() {
                    let gone: Vec<String> = s
                        .pods
                        .keys()
                        .filter(|u| !fresh.contains_key(*u))
                        .cloned()
                        .collect();
                    s.changed.extend(gone);
                    s.changed.extend(fresh.keys().cloned());
                    s.pods = fresh;
                }
                let _ = synced.send(true);
            }
            watcher::Event::Apply(p) => {
                let u = uid(&p);
                s.changed.insert(u.clone());
                s.pods.insert(u, p);
            }
            watcher::Event::Delete(p) => {
                let u = uid(&p);
                s.pods.remove(&u);
                s.changed.insert(u);
            }
        }
        drop(s);
        wake.notify_one();
    }
}
