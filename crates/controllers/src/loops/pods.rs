//! What the pod-owning loops (ReplicaSet, DaemonSet) do with a plan: adopt and release pods
//! through controller references, create and delete pods, and write the owner's status.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::Pod as ApiPod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde::Serialize;
use serde_json::{json, Value};

use super::{is_status, set_owners};
use crate::cached::Pod;
use crate::owner;

/// A plan's pod actions for one owner (`api_version`/`kind` name it in controller refs).
pub struct Actions<'a> {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub owner: &'a ObjectMeta,
    pub adopt: &'a [String],
    pub release: &'a [String],
    pub create: &'a [ApiPod],
    pub delete: &'a [String],
}

/// What was done: the names created and deleted (for the expectations), and the last error.
pub struct Outcome {
    pub created: HashSet<String>,
    pub deleted: HashSet<String>,
    pub failure: Option<kube::Error>,
}

/// Carry out `a` on the pods of one namespace. Creation stops at the first failure (the next
/// pass tries again, with back-off); a pod already gone counts as deleted.
pub async fn carry_out(api: &Api<ApiPod>, namespace_pods: &[Pod], a: Actions<'_>) -> Outcome {
    let mut out = Outcome {
        created: HashSet::new(),
        deleted: HashSet::new(),
        failure: None,
    };
    let uid = a.owner.uid.as_deref().unwrap_or_default();
    for pod in namespace_pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let refs = if a.adopt.contains(&name) {
            let reference = owner::controller_ref(a.api_version, a.kind, a.owner);
            owner::adopted_refs(&pod.metadata, reference)
        } else if a.release.contains(&name) {
            owner::released_refs(&pod.metadata, uid)
        } else {
            continue;
        };
        if let Err(e) = set_owners(api, &pod.metadata, refs).await {
            out.failure = Some(e);
        }
    }
    for pod in a.create {
        match api.create(&PostParams::default(), pod).await {
            Ok(p) => {
                out.created.insert(p.metadata.name.unwrap_or_default());
            }
            Err(e) => {
                out.failure = Some(e);
                break;
            }
        }
    }
    for name in a.delete {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                out.deleted.insert(name.clone());
            }
            Err(e) if is_status(&e, 404) => {}
            Err(e) => out.failure = Some(e),
        }
    }
    out
}

/// The merge patch that makes an object's status `new`: every field of `new`, and null for
/// each top-level field `old` has and `new` omits. A merge patch keeps what it does not
/// mention, so without the nulls a count serialized away when it drops (k8s-openapi omits
/// None) would keep its old value: a DaemonSet's stale `updatedNumberScheduled` once made
/// `kubectl rollout status` report a rollout done before it began.
pub fn status_patch(old: Option<&impl Serialize>, new: &impl Serialize) -> Value {
    let mut status = serde_json::to_value(new).unwrap_or(Value::Null);
    let old = old.and_then(|o| serde_json::to_value(o).ok());
    if let (Some(Value::Object(old)), Value::Object(new)) = (old, &mut status) {
        for key in old.keys() {
            new.entry(key.clone()).or_insert(Value::Null);
        }
    }
    json!({ "status": status })
}

/// Write `new` as the status of `name` (see [`status_patch`]); an object already gone is not
/// an error.
pub async fn write_status<K, S>(
    api: &Api<K>,
    name: &str,
    old: Option<&S>,
    new: &S,
) -> kube::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let patch = status_patch(old, new);
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DaemonSetStatus;

    #[test]
    fn a_field_that_drops_out_is_written_as_null() {
        let old = DaemonSetStatus {
            updated_number_scheduled: Some(2),
            number_available: Some(2),
            ..Default::default()
        };
        let new = DaemonSetStatus {
            number_available: Some(1),
            ..Default::default()
        };
        let patch = status_patch(Some(&old), &new);
        assert_eq!(patch["status"]["updatedNumberScheduled"], Value::Null);
        assert!(patch["status"]
            .as_object()
            .unwrap()
            .contains_key("updatedNumberScheduled"));
        assert_eq!(patch["status"]["numberAvailable"], 1);
        assert_eq!(
            status_patch(None::<&DaemonSetStatus>, &new)["status"]["numberAvailable"],
            1
        );
    }
}
