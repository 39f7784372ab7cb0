//! What the loops that keep a revision history (StatefulSets, DaemonSets) do with it: make
//! sure the current template's ControllerRevision exists, and delete what is beyond the
//! history limit (see [`crate::revision`] for the decisions).

use std::collections::HashSet;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

use super::is_status;
use crate::revision::{self, Owner, Update};

/// Carry out `update` for the owner's template: its revision's name, or None when the name
/// was taken by other data (the owner's `status.collisionCount`, `collisions` now, is raised
/// through `owner_api` and the next pass tries the next name).
pub async fn record<K>(
    api: &Api<ControllerRevision>,
    owner_api: &Api<K>,
    owner: &Owner<'_>,
    update: &Update,
    template: &PodTemplateSpec,
    collisions: i32,
) -> anyhow::Result<Option<String>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match update {
        Update::Latest(name) => Ok(Some(name.clone())),
        Update::Renumber(name, number) => {
            let patch = json!({"revision": number});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            Ok(Some(name.clone()))
        }
        Update::Create(rev) => match api.create(&PostParams::default(), rev).await {
            Ok(r) => Ok(r.metadata.name),
            Err(e) if is_status(&e, 409) => {
                let name = update.name();
                let existing = api.get(name).await?;
                let uid = owner.meta.uid.as_deref().unwrap_or_default();
                if crate::owner::controlled_by(&existing.metadata, uid)
                    && revision::records(&existing, template)
                {
                    // Ours, not in the cache yet.
                    return Ok(Some(name.to_string()));
                }
                let patch = json!({"status": {"collisionCount": collisions + 1}});
                owner_api
                    .patch_status(
                        owner.meta.name.as_deref().unwrap_or_default(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await?;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        },
    }
}

/// Delete the revisions beyond `limit` that nothing in `live` names.
pub async fn prune(
    api: &Api<ControllerRevision>,
    owned: &[&ControllerRevision],
    live: &HashSet<&str>,
    limit: i32,
) -> kube::Result<()> {
    let mut failure = Ok(());
    for old in revision::surplus(owned, live, limit) {
        match api.delete(&old, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => failure = Err(e),
        }
    }
    failure
}
