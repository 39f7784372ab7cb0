//! The node's part in persistent storage: the provisioner of yun's `local-path` class for
//! claims the scheduler placed on this node (`volume.kubernetes.io/selected-node`), the
//! deleter of its released volumes, the expander of its claims that grew, and the resolution
//! of a pod's claims into what its containers mount. Volumes live in `DATA/volumes` (see
//! `yun_volumes::local`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::Notify;
use yun_volumes::local::{self, LocalVolumes, Mode};

use crate::events::{reference, EventType, Recorder};

const COMPONENT: &str = "yun.dev/local-path";
/// Every claim and volume is looked at this often even without a change.
const RESYNC: Duration = Duration::from_secs(5);
/// A failed provisioning is tried again after this long, doubling up to MAX_BACKOFF.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// A node's volumes.
pub struct NodeStorage {
    node: String,
    local: LocalVolumes,
    /// Snapshots' copies, by VolumeSnapshotContent name.
    snapshots: LocalVolumes,
}

/// What a pod's claim gives its containers.
#[derive(Clone, Debug)]
pub struct ClaimVolume {
    pub path: PathBuf,
    /// A Block volume: `path` is a device.
    pub block: bool,
}

impl NodeStorage {
    pub fn open(node: &str, data_dir: &Path) -> Result<NodeStorage> {
        Ok(NodeStorage {
            node: node.to_string(),
            local: LocalVolumes::open(&data_dir.join("volumes"))?,
            snapshots: LocalVolumes::open(&data_dir.join("volume-snapshots"))?,
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn local(&self) -> &LocalVolumes {
        &self.local
    }

    pub fn snapshots(&self) -> &LocalVolumes {
        &self.snapshots
    }

    /// Let go of every volume of the node (`yun down`): unmounted and detached, data kept.
    pub fn release_all(data_dir: &Path) -> Result<usize> {
        LocalVolumes::open(&data_dir.join("volumes"))?.release_all()
    }

    /// The local volume a PV stands for, when it is one of this node's.
    pub(crate) fn local_id(&self, pv: &PersistentVolume) -> Option<String> {
        let ours = pv
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(yun_volumes::PROVISIONED_BY))
            .is_some_and(|p| p == yun_volumes::PROVISIONER);
        let path = pv.spec.as_ref()?.local.as_ref()?.path.clone();
        let rel = Path::new(&path).strip_prefix(self.local.root()).ok()?;
        let id = rel.components().next()?.as_os_str().to_str()?.to_string();
        (ours && self.local.exists(&id)).then_some(id)
    }

    /// Where the pod's claim `name` in `ns` is on this node: its volume mounted (a local
    /// one) or the path its volume names (hostPath, local). An unbound claim is an error the
    /// pod's next sync retries.
    pub async fn claim_volume(&self, client: &Client, ns: &str, name: &str) -> Result<ClaimVolume> {
        let claim = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await?
            .ok_or_else(|| anyhow!("persistentvolumeclaim {name:?} not found"))?;
        let vname = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| anyhow!("persistentvolumeclaim {name:?} is not bound"))?;
        let pv = Api::<PersistentVolume>::all(client.clone())
            .get_opt(&vname)
            .await?
            .ok_or_else(|| anyhow!("persistentvolume {vname:?} not found"))?;
        let block = pv.spec.as_ref().and_then(|s| s.volume_mode.as_deref()) == Some("Block");
        if let Some(id) = self.local_id(&pv) {
            let local = self.local.clone();
            let path = tokio::task::spawn_blocking(move || {
                if block {
                    local.block_device(&id)
                } else {
                    local.mount(&id)
                }
            })
            .await??;
            return Ok(ClaimVolume { path, block });
        }
        let spec = pv.spec.clone().unwrap_or_default();
        let path = spec
            .local
            .map(|l| l.path)
            .or(spec.host_path.map(|h| h.path))
            .ok_or_else(|| {
                anyhow!("persistentvolume {vname:?} has no volume source this node can mount")
            })?;
        Ok(ClaimVolume {
            path: PathBuf::from(path),
            block,
        })
    }
}

/// Run the node's provisioner until the agent stops.
pub async fn run(client: Client, storage: Arc<NodeStorage>) {
    let changed = Arc::new(Notify::new());
    let (claims, _c) =
        crate::services::reflect::<PersistentVolumeClaim>(client.clone(), changed.clone());
    let (volumes, _v) =
        crate::services::reflect::<PersistentVolume>(client.clone(), changed.clone());
    let (classes, _s) = crate::services::reflect::<StorageClass>(client.clone(), changed.clone());
    let (contents, _sc) = crate::services::reflect::<crate::snapshots::VolumeSnapshotContent>(
        client.clone(),
        changed.clone(),
    );
    let events = Recorder::new(client.clone(), COMPONENT, Some(&storage.node));
    let node = Provisioner {
        client,
        storage,
        claims,
        volumes,
        classes,
        contents,
        events,
        backoff: Mutex::default(),
    };
    loop {
        let _ = tokio::time::timeout(RESYNC, changed.notified()).await;
        if node.claims.wait_until_ready().await.is_err() {
            continue;
        }
        node.pass().await;
    }
}

struct Provisioner {
    client: Client,
    storage: Arc<NodeStorage>,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    contents: Store<crate::snapshots::VolumeSnapshotContent>,
    events: Recorder,
    /// Claims whose provisioning failed: (when to try again, the next delay).
    backoff: Mutex<HashMap<String, (Instant, Duration)>>,
}

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

impl Provisioner {
    async fn pass(&self) {
        for claim in self.claims.state() {
            if let Err(e) = self.provision(&claim).await {
                tracing::warn!("provisioning {}: {e:#}", name_of(&claim.metadata));
            }
            if let Err(e) = self.expand(&claim).await {
                tracing::warn!("expanding {}: {e:#}", name_of(&claim.metadata));
            }
        }
        for pv in self.volumes.state() {
            if let Err(e) = self.reclaim(&pv).await {
                tracing::warn!("deleting {}: {e:#}", name_of(&pv.metadata));
            }
        }
        let (contents, volumes) = (self.contents.state(), self.volumes.state());
        crate::snapshots::pass(&self.client, &self.storage, &contents, &volumes).await;
    }

    fn class_of(&self, claim: &PersistentVolumeClaim) -> Option<Arc<StorageClass>> {
        let name = yun_volumes::binding::claim_class(claim);
        self.classes
            .state()
            .into_iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
    }

    /// Make the volume of a claim placed on this node, and its PersistentVolume.
    async fn provision(&self, claim: &PersistentVolumeClaim) -> Result<()> {
        let selected = claim
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(yun_volumes::SELECTED_NODE));
        let unbound = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .is_none_or(str::is_empty);
        if selected != Some(&self.storage.node)
            || !unbound
            || claim.metadata.deletion_timestamp.is_some()
        {
            return Ok(());
        }
        let Some(class) = self.class_of(claim) else {
            return Ok(());
        };
        if class.provisioner != yun_volumes::PROVISIONER {
            return Ok(());
        }
        let uid = claim.metadata.uid.clone().unwrap_or_default();
        let pv_name = format!("pvc-{uid}");
        if self
            .volumes
            .state()
            .iter()
            .any(|v| v.metadata.name.as_deref() == Some(&pv_name))
        {
            return Ok(()); // made; the binder finishes the claim
        }
        if let Some((when, _)) = self.backoff.lock().expect("lock").get(&uid) {
            if Instant::now() < *when {
                return Ok(());
            }
        }
        let ns = claim.metadata.namespace.clone().unwrap_or_default();
        let name = name_of(&claim.metadata).to_string();
        let reference = reference("v1", "PersistentVolumeClaim", &claim.metadata);
        let spec = claim.spec.clone().unwrap_or_default();
        let request: Quantity = spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .cloned()
            .context("the claim requests no storage")?;
        let bytes = yun_volumes::bytes(&request).context("the claim's storage request")?;
        let block = spec.volume_mode.as_deref() == Some("Block");
        let mode = if block { Mode::Block } else { Mode::Filesystem };
        self.events.record(
            &reference,
            EventType::Normal,
            "Provisioning",
            "",
            &format!("External provisioner is provisioning volume for claim \"{ns}/{name}\""),
        );
        let id = local::volume_id(&uid, &ns, &name);
        // A restore or a clone starts as a copy of its source, which must be on this node.
        let copy_from = match crate::snapshots::source_of(&self.client, claim).await {
            Ok(None) => None,
            Ok(Some(crate::snapshots::Source::Snapshot { node, id }))
                if node == self.storage.node =>
            {
                Some((self.storage.snapshots.clone(), id))
            }
            Ok(Some(crate::snapshots::Source::Snapshot { node, .. })) => {
                let e = anyhow!("the snapshot is on node {node:?}, not this one");
                return self.failed(&reference, &class, &uid, e);
            }
            Ok(Some(crate::snapshots::Source::Volume { pv })) => {
                let found = self
                    .volumes
                    .state()
                    .into_iter()
                    .find(|v| v.metadata.name.as_deref() == Some(&pv));
                match found.and_then(|v| self.storage.local_id(&v)) {
                    Some(src) => Some((self.storage.local.clone(), src)),
                    None => {
                        return self.failed(
                            &reference,
                            &class,
                            &uid,
                            anyhow!("the source volume {pv:?} is not on this node"),
                        );
                    }
                }
            }
            Err(e) => return self.failed(&reference, &class, &uid, e),
        };
        let (store, id2) = (self.storage.local.clone(), id.clone());
        let made = tokio::task::spawn_blocking(move || -> Result<PathBuf> {
            match copy_from {
                Some((from, src)) => from.copy_to(&src, &store, &id2, bytes).map(drop)?,
                None => store.provision(&id2, bytes, mode).map(drop)?,
            }
            Ok(match mode {
                Mode::Filesystem => store.mount(&id2)?,
                Mode::Block => store.dir(&id2).join("disk.img"),
            })
        })
        .await?;
        let path = match made {
            Ok(p) => p,
            Err(e) => return self.failed(&reference, &class, &uid, e),
        };
        self.backoff.lock().expect("lock").remove(&uid);
        let pv = json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": pv_name, "annotations": {yun_volumes::PROVISIONED_BY: yun_volumes::PROVISIONER}},
            "spec": {
                "capacity": {"storage": request},
                "accessModes": spec.access_modes,
                "persistentVolumeReclaimPolicy": class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
                "storageClassName": class.metadata.name,
                "volumeMode": if block { "Block" } else { "Filesystem" },
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns,
                    "name": name, "uid": uid, "resourceVersion": claim.metadata.resource_version},
                "local": {"path": path},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [self.storage.node]}]}]}},
            },
        });
        let pv: PersistentVolume = serde_json::from_value(pv)?;
        match Api::<PersistentVolume>::all(self.client.clone())
            .create(&PostParams::default(), &pv)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                // Nothing may be left of a volume no PV speaks for.
                let (store, id) = (self.storage.local.clone(), id.clone());
                let _ = tokio::task::spawn_blocking(move || store.delete(&id)).await;
                return Err(e.into());
            }
        }
        self.events.record(
            &reference,
            EventType::Normal,
            "ProvisioningSucceeded",
            "",
            &format!("Successfully provisioned volume {pv_name}"),
        );
        Ok(())
    }

    /// Report a provisioning that failed and put the claim's next try off (doubling).
    fn failed(
        &self,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        class: &StorageClass,
        uid: &str,
        e: anyhow::Error,
    ) -> Result<()> {
        let class_name = class.metadata.name.clone().unwrap_or_default();
        self.events.record(
            reference,
            EventType::Warning,
            "ProvisioningFailed",
            "",
            &format!("failed to provision volume with StorageClass \"{class_name}\": {e:#}"),
        );
        let mut backoff = self.backoff.lock().expect("lock");
        let delay = backoff
            .get(uid)
            .map_or(FIRST_BACKOFF, |(_, d)| (*d * 2).min(MAX_BACKOFF));
        backoff.insert(uid.to_string(), (Instant::now() + delay, delay));
        Ok(())
    }

    /// Delete the data and the object of a released volume of this node whose policy is
    /// Delete.
    async fn reclaim(&self, pv: &PersistentVolume) -> Result<()> {
        let Some(id) = self.storage.local_id(pv) else {
            return Ok(());
        };
        let released = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
        let policy = pv
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref());
        if !released || policy != Some("Delete") {
            return Ok(());
        }
        let store = self.storage.local.clone();
        tokio::task::spawn_blocking(move || store.delete(&id)).await??;
        match Api::<PersistentVolume>::all(self.client.clone())
            .delete(name_of(&pv.metadata), &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Grow this node's volume of a bound claim that asks for more than it has.
    async fn expand(&self, claim: &PersistentVolumeClaim) -> Result<()> {
        let Some(vname) = claim.spec.as_ref().and_then(|s| s.volume_name.clone()) else {
            return Ok(());
        };
        let Some(pv) = self
            .volumes
            .state()
            .into_iter()
            .find(|v| v.metadata.name.as_deref() == Some(&vname))
        else {
            return Ok(());
        };
        let Some(id) = self.storage.local_id(&pv) else {
            return Ok(());
        };
        let Some(want) = claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .cloned()
        else {
            return Ok(());
        };
        let want_bytes = yun_volumes::bytes(&want).unwrap_or(0);
        let has = yun_volumes::binding::capacity_bytes(&pv).unwrap_or(0);
        let status = claim.status.clone().unwrap_or_default();
        let pending = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "FileSystemResizePending");
        let shown = status
            .capacity
            .as_ref()
            .and_then(|c| c.get("storage"))
            .and_then(yun_volumes::bytes)
            .unwrap_or(0);
        let bound = status.phase.as_deref() == Some("Bound");
        if !bound || (want_bytes <= has && !pending && shown >= want_bytes) {
            return Ok(());
        }
        let store = self.storage.local.clone();
        let id2 = id.clone();
        let grown = tokio::task::spawn_blocking(move || store.expand(&id2, want_bytes)).await??;
        if has < want_bytes {
            let patch = json!({"spec": {"capacity": {"storage": want}}});
            Api::<PersistentVolume>::all(self.client.clone())
                .patch(&vname, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        let ns = claim.metadata.namespace.clone().unwrap_or_default();
        let api = Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &ns);
        let reference = reference("v1", "PersistentVolumeClaim", &claim.metadata);
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let patch = if grown.filesystem_pending {
            if pending {
                return Ok(());
            }
            json!({"status": {"conditions": [{"type": "FileSystemResizePending", "status": "True",
                "lastTransitionTime": now,
                "message": "Waiting for user to (re-)start a pod to finish file system resize of volume on node."}]}})
        } else {
            self.events.record(
                &reference,
                EventType::Normal,
                "FileSystemResizeSuccessful",
                "",
                &format!(
                    "MountVolume.NodeExpandVolume succeeded for volume \"{vname}\" {}",
                    self.storage.node
                ),
            );
            let capacity: BTreeMap<&str, &Quantity> = [("storage", &want)].into_iter().collect();
            json!({"status": {"capacity": capacity, "conditions": null}})
        };
        api.patch_status(
            name_of(&claim.metadata),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        Ok(())
    }
}

/// Create yun's default StorageClass `local-path` if there is no class of that name (an
/// administrator's edits to it, or its deletion followed by a class of their own, stand).
pub async fn ensure_default_class(client: &Client) -> Result<()> {
    let api = Api::<StorageClass>::all(client.clone());
    if api.get_opt(yun_volumes::DEFAULT_CLASS).await?.is_some() {
        return Ok(());
    }
    let class: StorageClass = serde_json::from_value(json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": yun_volumes::DEFAULT_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": yun_volumes::PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowVolumeExpansion": true,
    }))?;
    match api.create(&PostParams::default(), &class).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
