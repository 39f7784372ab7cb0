//! The scheduler's side of volume binding: caches of claims, volumes and classes for the
//! VolumeBinding decisions (`crate::scheduler::volumes`), and the PreBind step — a
//! WaitForFirstConsumer claim gets the chosen node in `volume.kubernetes.io/selected-node`,
//! and the pod is bound only once its claims are (as kube-scheduler waits in PreBind), so a
//! pod never lands on a node its volume could not be made on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Patch, PatchParams, WatchParams};
use kube::{Api, Client};
use serde_json::json;

use super::{is_status, split_key};
use crate::runtime::{Change, Informer};
use crate::scheduler::volumes::Lookup;

/// How long PreBind waits for a claim to be bound (kube-scheduler: 10 minutes; a node-local
/// volume takes well under a second here).
const BIND_TIMEOUT: Duration = Duration::from_secs(120);

pub struct VolumeCaches {
    claims: Arc<Informer<PersistentVolumeClaim>>,
    volumes: Arc<Informer<PersistentVolume>>,
    classes: Arc<Informer<StorageClass>>,
}

impl VolumeCaches {
    /// Start the caches; `changed` runs on every change of a claim, volume or class (pods
    /// waiting for one may fit now).
    pub fn start(client: &Client, changed: impl Fn() + Clone + Send + Sync + 'static) -> Self {
        fn cache<K>(client: &Client, changed: impl Fn() + Send + Sync + 'static) -> Arc<Informer<K>>
        where
            K: kube::Resource<DynamicType = ()>
                + Clone
                + serde::de::DeserializeOwned
                + std::fmt::Debug
                + Send
                + Sync
                + 'static,
        {
            Arc::new(Informer::start(
                Api::<K>::all(client.clone()),
                WatchParams::default(),
                Duration::from_secs(300),
                move |_: Change<'_, K>| changed(),
            ))
        }
        VolumeCaches {
            claims: cache(client, changed.clone()),
            volumes: cache(client, changed.clone()),
            classes: cache(client, changed),
        }
    }

    pub async fn synced(&self) {
        self.claims.synced().await;
        self.volumes.synced().await;
        self.classes.synced().await;
    }

    fn bound(&self, key: &str) -> Option<bool> {
        let c = self.claims.get(key)?;
        Some(
            c.spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .is_some_and(|v| !v.is_empty())
                && c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"),
        )
    }
}

impl Lookup for VolumeCaches {
    fn claim(&self, ns: &str, name: &str) -> Option<PersistentVolumeClaim> {
        self.claims
            .get(&format!("{ns}/{name}"))
            .map(|c| (*c).clone())
    }
    fn volume(&self, name: &str) -> Option<PersistentVolume> {
        self.volumes.get(name).map(|v| (*v).clone())
    }
    fn class(&self, name: &str) -> Option<StorageClass> {
        self.classes.get(name).map(|c| (*c).clone())
    }
    fn volumes(&self) -> Vec<PersistentVolume> {
        self.volumes.list().iter().map(|v| (**v).clone()).collect()
    }
}

/// PreBind: give each claim ("namespace/name") the node, then wait until all are bound.
/// Ok(false) when one went away or the wait timed out (the pod is tried again).
pub async fn prebind(
    client: &Client,
    caches: &VolumeCaches,
    claims: &[String],
    node: &str,
) -> anyhow::Result<bool> {
    for key in claims {
        let (ns, name) = split_key(key);
        let Some(claim) = caches.claims.get(key) else {
            return Ok(false);
        };
        let selected = claim
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(yun_volumes::SELECTED_NODE));
        if selected.map(String::as_str) == Some(node) {
            continue;
        }
        let patch = json!({"metadata": {"annotations": {yun_volumes::SELECTED_NODE: node}}});
        match Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
    let start = Instant::now();
    loop {
        let mut all = true;
        for key in claims {
            match caches.bound(key) {
                None => return Ok(false),
                Some(false) => all = false,
                Some(true) => {}
            }
        }
        if all {
            return Ok(true);
        }
        if start.elapsed() > BIND_TIMEOUT {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
