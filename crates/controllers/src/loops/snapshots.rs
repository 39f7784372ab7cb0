//! The snapshot controller (external-snapshotter's common controller): a VolumeSnapshot of a
//! claim gets its class (named, or the default class of the claim's driver) and a
//! VolumeSnapshotContent asking the driver for a copy; a snapshot of an existing content is
//! bound to it; the snapshot shows its content's readiness, size and time; deleting a
//! snapshot deletes its content when the policy says Delete, and a content whose snapshot is
//! gone follows. Taking and deleting the copies is the node's (yun_agent::snapshots).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, WatchParams};
use kube::{Api, Client};
use serde_json::json;
use yun_agent::events::{reference, EventType, Recorder};
use yun_agent::snapshots::{
    VolumeSnapshot, VolumeSnapshotClass, VolumeSnapshotContent, VolumeSnapshotStatus,
};

use super::{is_status, set_finalizer, split_key, work, Next};
use crate::runtime::{key_of, Change, Informer, WorkQueue};

const COMPONENT: &str = "snapshot-controller";
const BOUND_PROTECTION: &str = "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection";
const DEFAULT_CLASS_ANNOTATION: &str = "snapshot.storage.kubernetes.io/is-default-class";

struct Ctx {
    client: Client,
    snapshots: Arc<Informer<VolumeSnapshot>>,
    contents: Arc<Informer<VolumeSnapshotContent>>,
    classes: Arc<Informer<VolumeSnapshotClass>>,
    events: Recorder,
}

pub async fn run(client: Client) {
    let queue = WorkQueue::new();
    let resync = Duration::from_secs(60);
    let snapshots = Arc::new(Informer::start(
        Api::<VolumeSnapshot>::all(client.clone()),
        WatchParams::default(),
        resync,
        {
            let queue = queue.clone();
            move |c: Change<'_, VolumeSnapshot>| {
                queue.add(&format!("snapshot:{}", key_of(c.object())))
            }
        },
    ));
    let contents = Arc::new(Informer::start(
        Api::<VolumeSnapshotContent>::all(client.clone()),
        WatchParams::default(),
        resync,
        {
            let queue = queue.clone();
            move |c: Change<'_, VolumeSnapshotContent>| {
                let content = c.object();
                queue.add(&format!(
                    "content:{}",
                    content.metadata.name.as_deref().unwrap_or("")
                ));
                let r = &content.spec.volume_snapshot_ref;
                if let (Some(ns), Some(name)) = (&r.namespace, &r.name) {
                    queue.add(&format!("snapshot:{ns}/{name}"));
                }
            }
        },
    ));
    let classes = Arc::new(Informer::start(
        Api::<VolumeSnapshotClass>::all(client.clone()),
        WatchParams::default(),
        resync,
        |_| {},
    ));
    snapshots.synced().await;
    contents.synced().await;
    classes.synced().await;
    let ctx = Arc::new(Ctx {
        events: Recorder::new(client.clone(), COMPONENT, None),
        client,
        snapshots,
        contents,
        classes,
    });
    work(queue, 2, move |key| {
        let ctx = ctx.clone();
        async move {
            match key.split_once(':') {
                Some(("snapshot", k)) => reconcile_snapshot(&ctx, k).await,
                Some(("content", name)) => reconcile_content(&ctx, name).await,
                _ => Ok(Next::Done),
            }
        }
    })
    .await;
}

async fn set_status(
    api: &Api<VolumeSnapshot>,
    vs: &VolumeSnapshot,
    status: serde_json::Value,
) -> anyhow::Result<()> {
    let now: VolumeSnapshotStatus = serde_json::from_value(status.clone())?;
    if vs.status.as_ref() == Some(&now) {
        return Ok(());
    }
    let name = vs.metadata.name.as_deref().unwrap_or_default();
    match api
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn error_status(message: &str) -> serde_json::Value {
    json!({"readyToUse": false, "error": {"message": message,
        "time": k8s_openapi::jiff::Timestamp::now().to_string()}})
}

async fn reconcile_snapshot(ctx: &Ctx, key: &str) -> anyhow::Result<Next> {
    let (ns, name) = split_key(key);
    let Some(vs) = ctx.snapshots.get(key) else {
        return Ok(Next::Done);
    };
    let api = Api::<VolumeSnapshot>::namespaced(ctx.client.clone(), ns);
    let bound = vs
        .status
        .as_ref()
        .and_then(|s| s.bound_volume_snapshot_content_name.clone());
    let content = bound.as_deref().and_then(|b| ctx.contents.get(b));
    if vs.metadata.deletion_timestamp.is_some() {
        if let Some(c) = &content {
            if c.spec.deletion_policy == "Delete" {
                if c.metadata.deletion_timestamp.is_none() {
                    let cname = c.metadata.name.as_deref().unwrap_or_default();
                    match Api::<VolumeSnapshotContent>::all(ctx.client.clone())
                        .delete(cname, &DeleteParams::default())
                        .await
                    {
                        Ok(_) => {}
                        Err(e) if is_status(&e, 404) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                // The snapshot goes once its content (and the copy) has.
                return Ok(Next::After(Duration::from_millis(500)));
            }
        }
        set_finalizer(&api, &vs.metadata, BOUND_PROTECTION, false).await?;
        return Ok(Next::Done);
    }
    if let Some(c) = content {
        let old = vs.status.as_ref();
        let status = yun_agent::snapshots::mirrored_status(&c, old);
        if old.and_then(|s| s.ready_to_use) != Some(true)
            && c.status.as_ref().and_then(|s| s.ready_to_use) == Some(true)
        {
            ctx.events.record(
                &reference("snapshot.storage.k8s.io/v1", "VolumeSnapshot", &vs.metadata),
                EventType::Normal,
                "SnapshotReady",
                "",
                &format!("Snapshot {ns}/{name} is ready to use."),
            );
        }
        return set_status(&api, &vs, status).await.map(|()| Next::Done);
    }
    if bound.is_some() {
        // Bound to a content not (yet) in the cache.
        return Ok(Next::After(Duration::from_secs(1)));
    }
    // Pre-provisioned: bind to the content that names this snapshot.
    if let Some(cname) = vs.spec.source.volume_snapshot_content_name.clone() {
        let Some(c) = ctx.contents.get(&cname) else {
            set_status(
                &api,
                &vs,
                error_status(&format!("VolumeSnapshotContent {cname} not found")),
            )
            .await?;
            return Ok(Next::Done);
        };
        let r = &c.spec.volume_snapshot_ref;
        if r.namespace.as_deref() != Some(ns) || r.name.as_deref() != Some(name) {
            set_status(
                &api,
                &vs,
                error_status(&format!(
                    "VolumeSnapshotContent {cname} is bound to a different snapshot"
                )),
            )
            .await?;
            return Ok(Next::Done);
        }
        set_finalizer(&api, &vs.metadata, BOUND_PROTECTION, true).await?;
        set_status(&api, &vs, yun_agent::snapshots::mirrored_status(&c, None)).await?;
        return Ok(Next::Done);
    }
    let Some(claim_name) = vs.spec.source.persistent_volume_claim_name.clone() else {
        set_status(
            &api,
            &vs,
            error_status("spec.source names neither a claim nor a content"),
        )
        .await?;
        return Ok(Next::Done);
    };
    let claim = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns)
        .get_opt(&claim_name)
        .await?;
    let pv_name = claim
        .as_ref()
        .and_then(|c| c.spec.as_ref())
        .and_then(|s| s.volume_name.clone())
        .filter(|v| !v.is_empty());
    let Some(pv_name) = pv_name else {
        let why = match claim {
            None => format!("failed to get input parameters to create snapshot {name}: persistentvolumeclaim \"{claim_name}\" not found"),
            Some(_) => format!("the source claim {claim_name} is not bound"),
        };
        set_status(&api, &vs, error_status(&why)).await?;
        return Ok(Next::After(Duration::from_secs(5)));
    };
    let pv = Api::<PersistentVolume>::all(ctx.client.clone())
        .get(&pv_name)
        .await?;
    let driver = driver_of(ctx, &pv).await?;
    let class = match vs.spec.volume_snapshot_class_name.clone() {
        Some(c) => ctx.classes.get(&c),
        None => ctx.classes.list().into_iter().find(|c| {
            c.driver == driver
                && c.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                    .map(String::as_str)
                    == Some("true")
        }),
    };
    let Some(class) = class else {
        let why = match &vs.spec.volume_snapshot_class_name {
            Some(c) => format!("volumesnapshotclass.snapshot.storage.k8s.io \"{c}\" not found"),
            None => format!("cannot find default snapshot class for driver {driver}"),
        };
        ctx.events.record(
            &reference("snapshot.storage.k8s.io/v1", "VolumeSnapshot", &vs.metadata),
            EventType::Warning,
            "SnapshotCreationFailed",
            "",
            &why,
        );
        set_status(&api, &vs, error_status(&why)).await?;
        return Ok(Next::Done);
    };
    let class_name = class.metadata.name.clone().unwrap_or_default();
    if vs.spec.volume_snapshot_class_name.is_none() {
        let patch = json!({"spec": {"volumeSnapshotClassName": class_name}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        return Ok(Next::Done);
    }
    let uid = vs.metadata.uid.clone().unwrap_or_default();
    let content_name = format!("snapcontent-{uid}");
    let content: VolumeSnapshotContent = serde_json::from_value(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
        "metadata": {"name": content_name},
        "spec": {
            "deletionPolicy": class.deletion_policy,
            "driver": class.driver,
            "source": {"volumeHandle": pv_name},
            "sourceVolumeMode": pv.spec.as_ref().and_then(|s| s.volume_mode.clone()).unwrap_or_else(|| "Filesystem".into()),
            "volumeSnapshotClassName": class_name,
            "volumeSnapshotRef": {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                "namespace": ns, "name": name, "uid": uid, "resourceVersion": vs.metadata.resource_version},
        },
    }))?;
    match Api::<VolumeSnapshotContent>::all(ctx.client.clone())
        .create(&PostParams::default(), &content)
        .await
    {
        Ok(_) => {}
        Err(e) if is_status(&e, 409) => {}
        Err(e) => return Err(e.into()),
    }
    set_finalizer(&api, &vs.metadata, BOUND_PROTECTION, true).await?;
    ctx.events.record(
        &reference("snapshot.storage.k8s.io/v1", "VolumeSnapshot", &vs.metadata),
        EventType::Normal,
        "CreatingSnapshot",
        "",
        &format!("Waiting for a snapshot {ns}/{name} to be created by the CSI driver."),
    );
    set_status(
        &api,
        &vs,
        json!({"boundVolumeSnapshotContentName": content_name, "readyToUse": false}),
    )
    .await?;
    Ok(Next::Done)
}

/// The driver of a volume: its provisioner's name, else its class's.
async fn driver_of(ctx: &Ctx, pv: &PersistentVolume) -> anyhow::Result<String> {
    if let Some(p) = pv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(yun_volumes::PROVISIONED_BY))
    {
        return Ok(p.clone());
    }
    let class = pv
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default();
    Ok(Api::<StorageClass>::all(ctx.client.clone())
        .get_opt(&class)
        .await?
        .map(|c| c.provisioner)
        .unwrap_or_default())
}

/// A dynamically made content whose snapshot is gone follows it when its policy is Delete.
async fn reconcile_content(ctx: &Ctx, name: &str) -> anyhow::Result<Next> {
    let Some(c) = ctx.contents.get(name) else {
        return Ok(Next::Done);
    };
    if c.metadata.deletion_timestamp.is_some()
        || c.spec.deletion_policy != "Delete"
        || c.spec.source.volume_handle.is_none()
    {
        return Ok(Next::Done);
    }
    let r = &c.spec.volume_snapshot_ref;
    let key = format!(
        "{}/{}",
        r.namespace.as_deref().unwrap_or(""),
        r.name.as_deref().unwrap_or("")
    );
    let alive = ctx
        .snapshots
        .get(&key)
        .is_some_and(|vs| r.uid.is_none() || vs.metadata.uid == r.uid);
    if alive {
        return Ok(Next::Done);
    }
    // The cache may lag a new snapshot: ask the server before deleting.
    let (ns, vs_name) = split_key(&key);
    let live = Api::<VolumeSnapshot>::namespaced(ctx.client.clone(), ns)
        .get_opt(vs_name)
        .await?;
    if live.is_some_and(|vs| r.uid.is_none() || vs.metadata.uid == r.uid) {
        return Ok(Next::Done);
    }
    match Api::<VolumeSnapshotContent>::all(ctx.client.clone())
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(Next::Done),
        Err(e) if is_status(&e, 404) => Ok(Next::Done),
        Err(e) => Err(e.into()),
    }
}
