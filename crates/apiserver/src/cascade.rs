//! The cascades the server still runs inline: a namespace's contents and a CRD's objects.
//! Garbage collection by ownerReferences is the controller manager's (its `gc` loop); the
//! server only turns a delete's propagationPolicy into the `orphan` or `foregroundDeletion`
//! finalizer, as kube-apiserver does.

use serde_json::Value;
use yun_store::RangeRequest;

use crate::error::ApiResult;
use crate::meta::str_at;
use crate::Api;

/// Delete every namespaced object in namespace `ns` (before the namespace itself).
pub async fn delete_namespace_contents(api: &Api, ns: &str) -> ApiResult<()> {
    for res in api.registry.all() {
        if !res.namespaced {
            continue;
        }
        let page = api
            .store
            .range(RangeRequest {
                prefix: res.prefix(Some(ns)),
                ..Default::default()
            })
            .await?;
        for kv in page.kvs {
            let _ = api.store.delete(&kv.key, None).await?;
        }
    }
    Ok(())
}

/// A deleted CRD takes its objects with it and leaves discovery.
pub async fn remove_crd(api: &Api, crd: &Value) -> ApiResult<()> {
    let group = str_at(crd, "/spec/group").unwrap_or("");
    let plural = str_at(crd, "/spec/names/plural").unwrap_or("");
    if group.is_empty() || plural.is_empty() {
        return Ok(());
    }
    api.registry.unregister_crd(group, plural);
    let page = api
        .store
        .range(RangeRequest {
            prefix: format!("/registry/{group}/{plural}/"),
            ..Default::default()
        })
        .await?;
    for kv in page.kvs {
        let _ = api.store.delete(&kv.key, None).await?;
    }
    Ok(())
}
