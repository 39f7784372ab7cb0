//! The persistent volume loop (kube's PV controller and its two protection controllers):
//! binds claims to volumes — a volume promised to the claim, else the smallest free one that
//! fits (see `yun_volumes::binding`) — or hands the claim to its class's provisioner; keeps
//! both sides' phases (Pending/Bound/Lost, Available/Bound/Released/Failed); and lets a
//! claim go only when no live pod uses it, a volume only when no claim is bound to it.
//! Provisioning and deleting node-local volumes is the node agent's (yun_agent::storage).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, WatchParams};
use kube::{Api, Client};
use serde_json::json;
use yun_agent::events::{reference, EventType, Recorder};
use yun_volumes::binding;

use super::{is_status, set_finalizer, split_key, work, Next};
use crate::cached::Pod;
use crate::runtime::{key_of, Change, Informer, WorkQueue};

const COMPONENT: &str = "persistentvolume-controller";
/// How often every claim and volume is looked at again without a change.
const RESYNC: Duration = Duration::from_secs(60);

struct Ctx {
    client: Client,
    claims: Arc<Informer<PersistentVolumeClaim>>,
    volumes: Arc<Informer<PersistentVolume>>,
    classes: Arc<Informer<StorageClass>>,
    nodes: Arc<Informer<Node>>,
    pods: Arc<Informer<Pod>>,
    events: Recorder,
}

fn claim_key(ns: &str, name: &str) -> String {
    format!("claim:{ns}/{name}")
}

pub async fn run(client: Client, shared: super::Shared) {
    let queue = WorkQueue::new();
    let claims = Arc::new(Informer::start(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        WatchParams::default(),
        RESYNC,
        {
            let queue = queue.clone();
            move |c: Change<'_, PersistentVolumeClaim>| {
                let claim = c.object();
                queue.add(&format!("claim:{}", key_of(claim)));
                // The volume's phase follows its claim's binding.
                if let Some(v) = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()) {
                    queue.add(&format!("volume:{v}"));
                }
            }
        },
    ));
    let volumes = Arc::new(Informer::start(
        Api::<PersistentVolume>::all(client.clone()),
        WatchParams::default(),
        RESYNC,
        {
            let queue = queue.clone();
            move |c: Change<'_, PersistentVolume>| {
                let v = c.object();
                queue.add(&format!(
                    "volume:{}",
                    v.metadata.name.as_deref().unwrap_or("")
                ));
                if let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
                    queue.add(&claim_key(
                        r.namespace.as_deref().unwrap_or(""),
                        r.name.as_deref().unwrap_or(""),
                    ));
                }
            }
        },
    ));
    let classes = Arc::new(Informer::start(
        Api::<StorageClass>::all(client.clone()),
        WatchParams::default(),
        RESYNC,
        |_| {},
    ));
    {
        // A claim waiting for a class that appears, or whose class changed.
        let (queue, claims) = (queue.clone(), claims.clone());
        classes.add_handler(move |_| {
            for c in claims.list() {
                if c.spec
                    .as_ref()
                    .and_then(|s| s.volume_name.as_ref())
                    .is_none()
                {
                    queue.add(&format!("claim:{}", key_of(&*c)));
                }
            }
        });
    }
    {
        // A pod that goes or finishes may free a claim being deleted.
        let queue = queue.clone();
        shared.pods.add_handler(move |c| {
            let pod = c.object();
            let gone = matches!(c, Change::Deleted(_)) || pod.is_terminal();
            if gone {
                let ns = pod.metadata.namespace.as_deref().unwrap_or("");
                for claim in pod.claims() {
                    queue.add(&claim_key(ns, claim));
                }
            }
        });
    }
    claims.synced().await;
    volumes.synced().await;
    classes.synced().await;
    shared.pods.synced().await;
    shared.nodes.synced().await;
    let ctx = Arc::new(Ctx {
        events: Recorder::new(client.clone(), COMPONENT, None),
        client,
        claims,
        volumes,
        classes,
        nodes: shared.nodes.clone(),
        pods: shared.pods.clone(),
    });
    work(queue, 2, move |key| {
        let ctx = ctx.clone();
        async move {
            match key.split_once(':') {
                Some(("claim", k)) => reconcile_claim(&ctx, k).await,
                Some(("volume", name)) => reconcile_volume(&ctx, name).await,
                _ => Ok(Next::Done),
            }
        }
    })
    .await;
}

fn claim_ref(c: &PersistentVolumeClaim) -> ObjectReference {
    reference("v1", "PersistentVolumeClaim", &c.metadata)
}

fn has_finalizer(meta: &ObjectMeta, f: &str) -> bool {
    meta.finalizers.iter().flatten().any(|x| x == f)
}

/// Whether a pod that has not finished uses claim `ns/name`.
fn in_use(ctx: &Ctx, ns: &str, name: &str) -> bool {
    ctx.pods
        .list_namespace(ns)
        .iter()
        .any(|p| !p.is_terminal() && p.claims().any(|c| c == name))
}

async fn set_claim_status(
    api: &Api<PersistentVolumeClaim>,
    claim: &PersistentVolumeClaim,
    status: PersistentVolumeClaimStatus,
) -> anyhow::Result<()> {
    if claim.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let name = claim.metadata.name.as_deref().unwrap_or_default();
    let patch = json!({"status": status});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

async fn reconcile_claim(ctx: &Ctx, key: &str) -> anyhow::Result<Next> {
    let (ns, name) = split_key(key);
    let Some(claim) = ctx.claims.get(key) else {
        return Ok(Next::Done);
    };
    let api = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns);
    if claim.metadata.deletion_timestamp.is_some() {
        // StorageObjectInUseProtection: the claim goes once no live pod uses it.
        if has_finalizer(&claim.metadata, yun_volumes::PVC_PROTECTION) && !in_use(ctx, ns, name) {
            set_finalizer(&api, &claim.metadata, yun_volumes::PVC_PROTECTION, false).await?;
        }
        return Ok(Next::Done);
    }
    let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
    let volume_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|v| !v.is_empty());
    if let Some(vname) = volume_name {
        let Some(volume) = ctx.volumes.get(&vname) else {
            if phase == Some("Bound") {
                ctx.events.record(
                    &claim_ref(&claim),
                    EventType::Warning,
                    "ClaimLost",
                    "",
                    "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
                );
                let status = PersistentVolumeClaimStatus {
                    phase: Some("Lost".into()),
                    ..claim.status.clone().unwrap_or_default()
                };
                set_claim_status(&api, &claim, status).await?;
            }
            return Ok(Next::Done);
        };
        if !binding::promised_to(&volume, &claim) {
            if volume
                .spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .is_none()
            {
                // Pre-bound by the user through volumeName: finish the volume's side.
                bind_volume(ctx, &volume, &claim).await?;
                return Ok(Next::Done);
            }
            ctx.events.record(
                &claim_ref(&claim),
                EventType::Warning,
                "FailedBinding",
                "",
                &format!("volume \"{vname}\" already bound to a different claim."),
            );
            return Ok(Next::Done);
        }
        return finish_claim(ctx, &api, &claim, &volume).await;
    }
    // Unbound: a volume that fits, else the class's provisioner.
    let all: Vec<Arc<PersistentVolume>> = ctx.volumes.list();
    if let Some(v) = binding::best_match(&claim, all.iter().map(|v| &**v)) {
        let v = v.clone();
        if !binding::promised_to(&v, &claim) {
            bind_volume(ctx, &v, &claim).await?;
        }
        return finish_claim(ctx, &api, &claim, &v).await;
    }
    let class_name = binding::claim_class(&claim).to_string();
    let reference = claim_ref(&claim);
    if class_name.is_empty() {
        ctx.events.record(
            &reference,
            EventType::Normal,
            "FailedBinding",
            "",
            "no persistent volumes available for this claim and no storage class is set",
        );
        return Ok(Next::Done);
    }
    let Some(class) = ctx.classes.get(&class_name) else {
        ctx.events.record(
            &reference,
            EventType::Warning,
            "ProvisioningFailed",
            "",
            &format!("storageclass.storage.k8s.io \"{class_name}\" not found"),
        );
        return Ok(Next::Done);
    };
    let annotations = claim.metadata.annotations.clone().unwrap_or_default();
    let wait = class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer");
    let mut add: BTreeMap<String, String> = BTreeMap::new();
    let ours = class.provisioner == yun_volumes::PROVISIONER;
    if ours && !annotations.contains_key(yun_volumes::SELECTED_NODE) {
        // A restore or clone of a node-local volume can only be made where its source is:
        // that node is chosen now, and the scheduler places the claim's pod there.
        match yun_agent::snapshots::source_of(&ctx.client, &claim).await {
            Ok(None) => {}
            Ok(Some(source)) => {
                let node = match source {
                    yun_agent::snapshots::Source::Snapshot { node, .. } => Some(node),
                    yun_agent::snapshots::Source::Volume { pv } => ctx
                        .volumes
                        .get(&pv)
                        .and_then(|v| yun_agent::snapshots::pinned_node(&v)),
                };
                match node {
                    Some(n) => {
                        add.insert(yun_volumes::SELECTED_NODE.into(), n);
                    }
                    None => return Ok(Next::After(Duration::from_secs(2))),
                }
            }
            Err(e) => {
                ctx.events.record(
                    &reference,
                    EventType::Warning,
                    "ProvisioningFailed",
                    "",
                    &format!("waiting for the claim's data source: {e:#}"),
                );
                return Ok(Next::After(Duration::from_secs(5)));
            }
        }
    }
    if !annotations.contains_key(yun_volumes::SELECTED_NODE)
        && !add.contains_key(yun_volumes::SELECTED_NODE)
    {
        if wait {
            ctx.events.record(
                &reference,
                EventType::Normal,
                "WaitForFirstConsumer",
                "",
                "waiting for first consumer to be created before binding",
            );
            return Ok(Next::Done);
        }
        if class.provisioner == yun_volumes::PROVISIONER {
            // A node-local class bound at once: the volume goes on a ready node.
            match ready_node(ctx) {
                Some(node) => {
                    add.insert(yun_volumes::SELECTED_NODE.into(), node);
                }
                None => return Ok(Next::After(Duration::from_secs(5))),
            }
        }
    }
    if annotations.get(yun_volumes::STORAGE_PROVISIONER) != Some(&class.provisioner) {
        add.insert(
            yun_volumes::STORAGE_PROVISIONER.into(),
            class.provisioner.clone(),
        );
        add.insert(
            "volume.beta.kubernetes.io/storage-provisioner".into(),
            class.provisioner.clone(),
        );
    }
    if !add.is_empty() {
        let patch = json!({"metadata": {"annotations": add, "resourceVersion": claim.metadata.resource_version}});
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) || is_status(&e, 404) => return Ok(Next::Done),
            Err(e) => return Err(e.into()),
        }
    }
    ctx.events.record(&reference, EventType::Normal, "ExternalProvisioning", "", &format!(
        "Waiting for a volume to be created either by the external provisioner '{}' or manually by the system administrator. If volume creation is delayed, please verify that your external provisioner is running and correctly registered.",
        class.provisioner
    ));
    Ok(Next::Done)
}

/// The first ready node by name.
fn ready_node(ctx: &Ctx) -> Option<String> {
    let mut ready: Vec<String> = ctx
        .nodes
        .list()
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    ready.sort();
    ready.into_iter().next()
}

/// Promise `volume` to `claim` (the volume's side of a binding, written first as kube does).
async fn bind_volume(
    ctx: &Ctx,
    volume: &PersistentVolume,
    claim: &PersistentVolumeClaim,
) -> anyhow::Result<()> {
    let api = Api::<PersistentVolume>::all(ctx.client.clone());
    let name = volume.metadata.name.as_deref().unwrap_or_default();
    let patch = json!({
        "metadata": {
            "annotations": {yun_volumes::BOUND_BY_CONTROLLER: "yes"},
            "resourceVersion": volume.metadata.resource_version,
        },
        "spec": {"claimRef": {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "namespace": claim.metadata.namespace, "name": claim.metadata.name,
            "uid": claim.metadata.uid, "resourceVersion": claim.metadata.resource_version,
        }},
    });
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 409) || is_status(&e, 404) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The claim's side of a binding to a volume promised to it: volumeName, the bind
/// annotations, then status Bound with the volume's modes and capacity.
async fn finish_claim(
    ctx: &Ctx,
    api: &Api<PersistentVolumeClaim>,
    claim: &PersistentVolumeClaim,
    volume: &PersistentVolume,
) -> anyhow::Result<Next> {
    let vname = volume.metadata.name.clone().unwrap_or_default();
    let name = claim.metadata.name.as_deref().unwrap_or_default();
    let annotations = claim.metadata.annotations.clone().unwrap_or_default();
    let named = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(&vname);
    if !named || !annotations.contains_key(yun_volumes::BIND_COMPLETED) {
        let mut meta = json!({"annotations": {yun_volumes::BIND_COMPLETED: "yes"},
            "resourceVersion": claim.metadata.resource_version});
        if !named {
            meta["annotations"][yun_volumes::BOUND_BY_CONTROLLER] = json!("yes");
        }
        let patch = json!({"metadata": meta, "spec": {"volumeName": vname}});
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) || is_status(&e, 404) => return Ok(Next::Done),
            Err(e) => return Err(e.into()),
        }
        // The write wakes the claim again; the status follows then.
        return Ok(Next::Done);
    }
    let spec = volume.spec.clone().unwrap_or_default();
    let old = claim.status.clone().unwrap_or_default();
    // A growth in flight keeps the capacity the filesystem really has (the node reports it).
    let capacity = match old.capacity.clone() {
        Some(c) if old.phase.as_deref() == Some("Bound") => Some(c),
        _ => spec.capacity.clone(),
    };
    let status = PersistentVolumeClaimStatus {
        phase: Some("Bound".into()),
        access_modes: spec.access_modes.clone(),
        capacity,
        ..old
    };
    if claim.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
        ctx.events.record(
            &claim_ref(claim),
            EventType::Normal,
            "Bound",
            "",
            &format!("Successfully bound to volume {vname}"),
        );
    }
    set_claim_status(api, claim, status).await?;
    Ok(Next::Done)
}

async fn set_volume_phase(
    api: &Api<PersistentVolume>,
    volume: &PersistentVolume,
    phase: &str,
    message: Option<&str>,
) -> anyhow::Result<()> {
    let status = volume.status.clone().unwrap_or_default();
    if status.phase.as_deref() == Some(phase) && status.message.as_deref() == message {
        return Ok(());
    }
    let name = volume.metadata.name.as_deref().unwrap_or_default();
    let patch = json!({"status": {"phase": phase, "message": message,
        "lastPhaseTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string()}});
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn reconcile_volume(ctx: &Ctx, name: &str) -> anyhow::Result<Next> {
    let Some(volume) = ctx.volumes.get(name) else {
        return Ok(Next::Done);
    };
    let api = Api::<PersistentVolume>::all(ctx.client.clone());
    let phase = volume.status.as_ref().and_then(|s| s.phase.clone());
    if volume.metadata.deletion_timestamp.is_some() {
        // pv-protection: a volume goes once no claim is bound to it.
        if phase.as_deref() != Some("Bound") {
            set_finalizer(&api, &volume.metadata, yun_volumes::PV_PROTECTION, false).await?;
        }
        return Ok(Next::Done);
    }
    let spec = volume.spec.clone().unwrap_or_default();
    let Some(r) = spec.claim_ref.as_ref() else {
        if phase.as_deref() != Some("Failed") {
            set_volume_phase(&api, &volume, "Available", None).await?;
        }
        return Ok(Next::Done);
    };
    let (cns, cname) = (
        r.namespace.as_deref().unwrap_or(""),
        r.name.as_deref().unwrap_or(""),
    );
    let claim = ctx.claims.get(&format!("{cns}/{cname}"));
    let same = claim
        .as_ref()
        .is_some_and(|c| r.uid.is_none() || r.uid == c.metadata.uid);
    if same {
        let claim = claim.expect("checked");
        let bound_here = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(name);
        if bound_here {
            set_volume_phase(&api, &volume, "Bound", None).await?;
        } else if claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .is_none_or(str::is_empty)
        {
            // Promised, the claim's side is still to come (its key is queued too).
            if phase.is_none() || phase.as_deref() == Some("Pending") {
                set_volume_phase(&api, &volume, "Available", None).await?;
            }
        } else if volume
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(yun_volumes::BOUND_BY_CONTROLLER))
        {
            // The claim went to another volume: this promise was ours, take it back.
            let patch = json!({"spec": {"claimRef": null}, "metadata": {"resourceVersion": volume.metadata.resource_version}});
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(e) if is_status(&e, 409) || is_status(&e, 404) => {}
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(Next::Done);
    }
    if r.uid.is_none() {
        // Pre-bound to a claim that does not exist yet.
        set_volume_phase(&api, &volume, "Available", None).await?;
        return Ok(Next::Done);
    }
    // The claim is gone: released, then reclaimed by policy.
    let policy = spec
        .persistent_volume_reclaim_policy
        .as_deref()
        .unwrap_or("Retain");
    let ours = volume
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(yun_volumes::PROVISIONED_BY))
        .is_some_and(|p| p == yun_volumes::PROVISIONER);
    match policy {
        "Delete" if !ours => {
            let msg = format!("error getting deleter volume plugin for volume \"{name}\": no deletable volume plugin matched");
            set_volume_phase(&api, &volume, "Failed", Some(&msg)).await?;
            let reference = reference("v1", "PersistentVolume", &volume.metadata);
            ctx.events.record(
                &reference,
                EventType::Warning,
                "VolumeFailedDelete",
                "",
                &msg,
            );
        }
        "Recycle" => {
            let msg = "Recycle is not supported: use Delete or Retain";
            set_volume_phase(&api, &volume, "Failed", Some(msg)).await?;
        }
        // Delete of a node-local volume: its node's agent deletes the data and the volume.
        _ => set_volume_phase(&api, &volume, "Released", None).await?,
    }
    Ok(Next::Done)
}
