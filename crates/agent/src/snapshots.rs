//! Volume snapshots (`snapshot.storage.k8s.io/v1`, external-snapshotter's kinds): their
//! types, and the node's part — the snapshotter of yun's local-path driver. A snapshot of a
//! volume on this node is a copy of its image (reflinked where the filesystem can, the
//! filesystem frozen for it) kept in `DATA/volume-snapshots`, named for its
//! VolumeSnapshotContent; its handle is `NODE/CONTENT`, so a restore knows where it lives.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const GROUP: &str = "snapshot.storage.k8s.io";
/// The content finalizer: the node deletes the copy before the object goes.
pub const CONTENT_FINALIZER: &str = "yun.dev/local-path-snapshot";

macro_rules! resource {
    ($t:ty, $kind:literal, $plural:literal, $scope:ty) => {
        impl kube::Resource for $t {
            type DynamicType = ();
            type Scope = $scope;
            fn kind(_: &()) -> Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> Cow<'_, str> {
                GROUP.into()
            }
            fn version(_: &()) -> Cow<'_, str> {
                "v1".into()
            }
            fn plural(_: &()) -> Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotClass {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub driver: String,
    #[serde(default)]
    pub deletion_policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BTreeMap<String, String>>,
}
resource!(
    VolumeSnapshotClass,
    "VolumeSnapshotClass",
    "volumesnapshotclasses",
    k8s_openapi::ClusterResourceScope
);

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotError {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_content_name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotSpec {
    #[serde(default)]
    pub source: VolumeSnapshotSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_volume_snapshot_content_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    /// A quantity (`1Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<SnapshotError>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeSnapshot {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: VolumeSnapshotSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<VolumeSnapshotStatus>,
}
resource!(
    VolumeSnapshot,
    "VolumeSnapshot",
    "volumesnapshots",
    k8s_openapi::NamespaceResourceScope
);

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_handle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_handle: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContentSpec {
    #[serde(default)]
    pub deletion_policy: String,
    #[serde(default)]
    pub driver: String,
    #[serde(default)]
    pub source: ContentSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_volume_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
    #[serde(default)]
    pub volume_snapshot_ref: k8s_openapi::api::core::v1::ObjectReference,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContentStatus {
    /// Nanoseconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_handle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<SnapshotError>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeSnapshotContent {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: VolumeSnapshotContentSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<VolumeSnapshotContentStatus>,
}
resource!(
    VolumeSnapshotContent,
    "VolumeSnapshotContent",
    "volumesnapshotcontents",
    k8s_openapi::ClusterResourceScope
);

/// The node a snapshot handle (`NODE/CONTENT`) lives on, and the copy's id there.
pub fn parse_handle(handle: &str) -> Option<(&str, &str)> {
    handle
        .split_once('/')
        .filter(|(n, c)| !n.is_empty() && !c.is_empty())
}

/// The node's snapshotter: take the snapshots asked of this node's volumes, and delete the
/// copies of contents being deleted. Called from the provisioner's pass.
pub(crate) async fn pass(
    client: &Client,
    storage: &Arc<crate::storage::NodeStorage>,
    contents: &[Arc<VolumeSnapshotContent>],
    volumes: &[Arc<k8s_openapi::api::core::v1::PersistentVolume>],
) {
    for c in contents {
        if c.spec.driver != yun_volumes::PROVISIONER {
            continue;
        }
        let r = if c.metadata.deletion_timestamp.is_some() {
            delete(client, storage, c).await
        } else {
            take(client, storage, c, volumes).await
        };
        if let Err(e) = r {
            tracing::warn!(
                "snapshot {}: {e:#}",
                c.metadata.name.as_deref().unwrap_or("")
            );
        }
    }
}

/// Copy the volume a content names, if it is on this node and not taken yet.
async fn take(
    client: &Client,
    storage: &Arc<crate::storage::NodeStorage>,
    c: &VolumeSnapshotContent,
    volumes: &[Arc<k8s_openapi::api::core::v1::PersistentVolume>],
) -> Result<()> {
    let status = c.status.clone().unwrap_or_default();
    if status.snapshot_handle.is_some() || status.error.is_some() {
        return Ok(());
    }
    let Some(pv_name) = c.spec.source.volume_handle.clone() else {
        return Ok(());
    };
    // From the provisioner's cache: every pass looks at every content, and most are done or
    // another node's.
    let pv = volumes
        .iter()
        .find(|v| v.metadata.name.as_deref() == Some(pv_name.as_str()));
    let Some(id) = pv.and_then(|pv| storage.local_id(pv)) else {
        return Ok(()); // another node's volume (or gone: the controller reports that)
    };
    let name = c.metadata.name.clone().unwrap_or_default();
    let api = Api::<VolumeSnapshotContent>::all(client.clone());
    if !c
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == CONTENT_FINALIZER)
    {
        let mut finalizers = c.metadata.finalizers.clone().unwrap_or_default();
        finalizers.push(CONTENT_FINALIZER.into());
        let patch = json!({"metadata": {"finalizers": finalizers,
            "resourceVersion": c.metadata.resource_version}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        return Ok(()); // the write brings the content back with its finalizer
    }
    let (local, snaps, name2) = (
        storage.local().clone(),
        storage.snapshots().clone(),
        name.clone(),
    );
    let taken = tokio::task::spawn_blocking(move || local.copy_to(&id, &snaps, &name2, 0)).await?;
    let patch = match taken {
        Ok(bytes) => json!({"status": {
            "snapshotHandle": format!("{}/{name}", storage.node()),
            "readyToUse": true,
            "restoreSize": bytes,
            "creationTime": k8s_openapi::jiff::Timestamp::now().as_nanosecond() as i64,
        }}),
        Err(e) => json!({"status": {"readyToUse": false, "error": {
            "message": format!("failed to take snapshot of the volume {pv_name}: {e:#}"),
            "time": k8s_openapi::jiff::Timestamp::now().to_string(),
        }}}),
    };
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Delete this node's copy of a content being deleted, then let the object go.
async fn delete(
    client: &Client,
    storage: &Arc<crate::storage::NodeStorage>,
    c: &VolumeSnapshotContent,
) -> Result<()> {
    let handle = c
        .status
        .as_ref()
        .and_then(|s| s.snapshot_handle.clone())
        .unwrap_or_default();
    let ours = parse_handle(&handle).is_some_and(|(node, _)| node == storage.node());
    let name = c.metadata.name.clone().unwrap_or_default();
    if ours {
        let (snaps, id) = (
            storage.snapshots().clone(),
            parse_handle(&handle)
                .map(|(_, id)| id.to_string())
                .unwrap_or_default(),
        );
        tokio::task::spawn_blocking(move || snaps.delete(&id)).await??;
    } else if !handle.is_empty() || c.spec.source.volume_handle.is_none() {
        return Ok(()); // another node's copy
    }
    let rest: Vec<&String> = c
        .metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != CONTENT_FINALIZER)
        .collect();
    if rest.len() == c.metadata.finalizers.as_ref().map_or(0, Vec::len) {
        return Ok(());
    }
    let patch =
        json!({"metadata": {"finalizers": rest, "resourceVersion": c.metadata.resource_version}});
    match Api::<VolumeSnapshotContent>::all(client.clone())
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Where a claim's data source is: (node, what to copy) — a snapshot's copy, or another
/// claim's volume. None when the claim has no data source.
pub enum Source {
    Snapshot { node: String, id: String },
    Volume { pv: String },
}

pub async fn source_of(
    client: &Client,
    claim: &k8s_openapi::api::core::v1::PersistentVolumeClaim,
) -> Result<Option<Source>> {
    let spec = claim.spec.clone().unwrap_or_default();
    let ns = claim.metadata.namespace.clone().unwrap_or_default();
    let (kind, group, name) = match (spec.data_source_ref, spec.data_source) {
        (Some(r), _) => (r.kind, r.api_group, r.name),
        (None, Some(r)) => (r.kind, r.api_group, r.name),
        (None, None) => return Ok(None),
    };
    match (kind.as_str(), group.as_deref().unwrap_or("")) {
        ("VolumeSnapshot", GROUP) => {
            let vs = Api::<VolumeSnapshot>::namespaced(client.clone(), &ns)
                .get_opt(&name)
                .await?
                .ok_or_else(|| anyhow!("volumesnapshot {name:?} not found"))?;
            let status = vs.status.unwrap_or_default();
            if status.ready_to_use != Some(true) {
                return Err(anyhow!("volumesnapshot {name:?} is not ready to use"));
            }
            let content_name = status
                .bound_volume_snapshot_content_name
                .context("the snapshot has no content")?;
            let content = Api::<VolumeSnapshotContent>::all(client.clone())
                .get(&content_name)
                .await?;
            let handle = content
                .status
                .and_then(|s| s.snapshot_handle)
                .or(content.spec.source.snapshot_handle)
                .context("the snapshot content has no handle")?;
            let (node, id) = parse_handle(&handle)
                .ok_or_else(|| anyhow!("snapshot handle {handle:?} is not NODE/ID"))?;
            Ok(Some(Source::Snapshot {
                node: node.into(),
                id: id.into(),
            }))
        }
        ("PersistentVolumeClaim", "") => {
            let src = Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(
                client.clone(),
                &ns,
            )
            .get_opt(&name)
            .await?
            .ok_or_else(|| anyhow!("persistentvolumeclaim {name:?} not found"))?;
            let pv = src
                .spec
                .and_then(|s| s.volume_name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| anyhow!("persistentvolumeclaim {name:?} is not bound"))?;
            Ok(Some(Source::Volume { pv }))
        }
        (k, g) => Err(anyhow!("data source {k} of group {g:?} is not supported")),
    }
}

/// The node a PersistentVolume is pinned to by its node affinity (`kubernetes.io/hostname`).
pub fn pinned_node(pv: &k8s_openapi::api::core::v1::PersistentVolume) -> Option<String> {
    let terms = &pv
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    let expr = terms
        .first()?
        .match_expressions
        .as_ref()?
        .iter()
        .find(|e| e.key == "kubernetes.io/hostname" && e.operator == "In")?;
    expr.values.as_ref()?.first().cloned()
}

/// A VolumeSnapshot's status from its content's (the common controller's mirror).
pub fn mirrored_status(
    content: &VolumeSnapshotContent,
    old: Option<&VolumeSnapshotStatus>,
) -> Value {
    let s = content.status.clone().unwrap_or_default();
    let created = s.creation_time.and_then(|n| {
        k8s_openapi::jiff::Timestamp::from_nanosecond(n as i128)
            .ok()
            .map(|t| t.to_string())
    });
    let size = s
        .restore_size
        .map(|b| yun_volumes::exact_quantity(b.max(0) as u64));
    json!({
        "boundVolumeSnapshotContentName": content.metadata.name,
        "readyToUse": s.ready_to_use.unwrap_or(false),
        "restoreSize": size.or(old.and_then(|o| o.restore_size.clone())),
        "creationTime": created.or(old.and_then(|o| o.creation_time.clone())),
        "error": s.error,
    })
}
