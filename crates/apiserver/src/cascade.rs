//! The cascade the server still runs inline: a CRD's objects. Garbage collection by
//! ownerReferences is the controller manager's (its `gc` loop); the server only turns a
//! delete's propagationPolicy into the `orphan` or `foregroundDeletion` finalizer, as
//! kube-apiserver does. A namespace's content is the namespace controller's to delete (see
//! `rest::namespaces`).

use serde_json::Value;
use yun_store::RangeRequest;

use crate::error::ApiResult;
use crate::meta::str_at;
use crate::Api;

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
