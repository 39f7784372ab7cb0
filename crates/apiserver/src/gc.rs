//! Garbage collection by ownerReferences, inside the server: after a delete (and once a
//! minute) scan all objects; delete those whose owners are all gone (background cascade), and
//! finish foreground deletions whose dependents are gone. Also the cascades that run inline:
//! orphaning, a namespace's contents, a CRD's objects.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use yun_store::{KeyValue, RangeRequest};

use crate::error::ApiResult;
use crate::meta::{str_at, strings_at};
use crate::Api;

const ROOT: &str = "/registry/";
const IDLE_SCAN: Duration = Duration::from_secs(60);

pub async fn run(api: Arc<Api>) {
    loop {
        // Repeat while a pass changed something: one cascade level per pass.
        for _ in 0..64 {
            match scan(&api).await {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!("garbage collector: {}", e.message);
                    break;
                }
            }
        }
        let _ = tokio::time::timeout(IDLE_SCAN, api.gc.notified()).await;
    }
}

async fn all_objects(api: &Api) -> ApiResult<Vec<(KeyValue, Value)>> {
    let page = api
        .store
        .range(RangeRequest {
            prefix: ROOT.into(),
            ..Default::default()
        })
        .await?;
    Ok(page
        .kvs
        .into_iter()
        .filter_map(|kv| crate::meta::decode(&kv).map(|v| (kv, v)))
        .collect())
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// One pass; true if it changed anything.
async fn scan(api: &Api) -> ApiResult<bool> {
    let objects = all_objects(api).await?;
    let mut alive: HashMap<String, bool> = HashMap::new(); // uid -> being deleted in foreground
    for (_, o) in &objects {
        if let Some(uid) = str_at(o, "/metadata/uid") {
            let fg = o.pointer("/metadata/deletionTimestamp").is_some()
                && strings_at(o, "/metadata/finalizers")
                    .iter()
                    .any(|f| f == "foregroundDeletion");
            alive.insert(uid.to_string(), fg);
        }
    }
    let mut has_dependents: HashSet<String> = HashSet::new();
    let mut changed = false;
    for (kv, o) in &objects {
        let owners = owner_uids(o);
        if owners.is_empty() {
            continue;
        }
        for u in &owners {
            has_dependents.insert(u.clone());
        }
        let all_gone = owners.iter().all(|u| !alive.contains_key(u));
        let owner_fg = owners.iter().any(|u| alive.get(u) == Some(&true));
        if (all_gone || owner_fg) && o.pointer("/metadata/deletionTimestamp").is_none() {
            changed |= delete_kv(api, kv, o).await?;
        }
    }
    // Foreground owners whose dependents are all gone lose their finalizer.
    for (kv, o) in &objects {
        let uid = str_at(o, "/metadata/uid").unwrap_or("");
        if alive.get(uid) != Some(&true) || has_dependents.contains(uid) {
            continue;
        }
        let mut fins = strings_at(o, "/metadata/finalizers");
        fins.retain(|f| f != "foregroundDeletion");
        let expected = Some(kv.mod_revision);
        if fins.is_empty() {
            changed |= api.store.delete(&kv.key, expected).await?.done().is_some();
        } else {
            let mut o = o.clone();
            o["metadata"]["finalizers"] = json!(fins);
            changed |= crate::rest::put(api, &kv.key, &o, expected)
                .await?
                .is_some();
        }
    }
    Ok(changed)
}

/// Delete a dependent: objects with finalizers are marked, the rest removed.
async fn delete_kv(api: &Api, kv: &KeyValue, o: &Value) -> ApiResult<bool> {
    if strings_at(o, "/metadata/finalizers").is_empty() {
        return Ok(api
            .store
            .delete(&kv.key, Some(kv.mod_revision))
            .await?
            .done()
            .is_some());
    }
    let mut o = o.clone();
    o["metadata"]["deletionTimestamp"] = Value::String(crate::meta::now_rfc3339());
    Ok(crate::rest::put(api, &kv.key, &o, Some(kv.mod_revision))
        .await?
        .is_some())
}

/// Orphan deletion: dependents drop their reference to `uid` before the owner goes.
pub async fn orphan_dependents(api: &Api, uid: &str) -> ApiResult<()> {
    for (kv, mut o) in all_objects(api).await? {
        if !owner_uids(&o).iter().any(|u| u == uid) {
            continue;
        }
        if let Some(refs) = o
            .pointer_mut("/metadata/ownerReferences")
            .and_then(Value::as_array_mut)
        {
            refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
        }
        // A lost race means the dependent changed or went; the next GC pass sees it anew.
        let _ = crate::rest::put(api, &kv.key, &o, Some(kv.mod_revision)).await?;
    }
    Ok(())
}

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
