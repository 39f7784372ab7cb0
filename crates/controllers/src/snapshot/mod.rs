//! The snapshot kinds as `yun up` serves them: external-snapshotter's three CRDs
//! (`snapshot.storage.k8s.io/v1`), installed by yun itself rather than by the user, and a
//! default VolumeSnapshotClass for the local-path driver.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PostParams;
use kube::{Api, Client};
use yun_agent::snapshots::VolumeSnapshotClass;

const CRDS: &str = include_str!("crds.json");

/// Create the snapshot CRDs that are missing and the class `local-path` if there is none of
/// that name.
pub async fn ensure(client: &Client) -> Result<()> {
    let crds: Vec<CustomResourceDefinition> =
        serde_json::from_str(CRDS).context("the built-in snapshot CRDs")?;
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        if api.get_opt(&name).await?.is_none() {
            match api.create(&PostParams::default(), &crd).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e).with_context(|| format!("creating CRD {name}")),
            }
        }
    }
    let classes = Api::<VolumeSnapshotClass>::all(client.clone());
    let class: VolumeSnapshotClass = serde_json::from_value(serde_json::json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
        "metadata": {"name": yun_volumes::DEFAULT_CLASS,
            "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"}},
        "driver": yun_volumes::PROVISIONER,
        "deletionPolicy": "Delete",
    }))?;
    // A CRD serves its kind a moment after it is stored.
    for _ in 0..50 {
        match classes.get_opt(yun_volumes::DEFAULT_CLASS).await {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => match classes.create(&PostParams::default(), &class).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            },
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the VolumeSnapshotClass kind was not served within 5 s of its CRD")
}
