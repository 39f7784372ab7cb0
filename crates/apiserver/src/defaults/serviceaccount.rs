//! The ServiceAccount admission of a Pod on create (kube's `ServiceAccount` plugin): the
//! account the pod names (`default` unless it names one) must exist, and unless the pod or
//! the account turns `automountServiceAccountToken` off, the pod gets the projected
//! `kube-api-access-XXXXX` volume (a token bound to the pod, the cluster CA, the namespace)
//! mounted read-only at [`MOUNT_PATH`] in every container.

use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::meta::str_at;
use crate::Api;

/// Where a pod finds its service-account credentials.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// kube's lifetime for the projected token: just over an hour, so that the API server can
/// tell a kubelet-requested token from others.
pub const TOKEN_EXPIRATION: i64 = 3607;
/// How many times, and how far apart, the `default` account is looked for: the controller
/// that creates it may not have caught up with a brand-new namespace yet (as in kube).
const DEFAULT_ATTEMPTS: u32 = 10;
const RETRY: Duration = Duration::from_millis(150);

/// Admit `pod` (already defaulted) being created as `name` in `ns`.
pub async fn admit(api: &Api, ns: &str, name: &str, pod: &mut Value) -> ApiResult<()> {
    if pod
        .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
        .is_some()
    {
        return Ok(());
    }
    let account = str_at(pod, "/spec/serviceAccountName")
        .unwrap_or("default")
        .to_string();
    let found = lookup(api, ns, &account).await?.ok_or_else(|| {
        ApiError::forbidden(
            "pods",
            name,
            &format!(
                "error looking up service account {ns}/{account}: serviceaccount \"{account}\" not found"
            ),
        )
    })?;
    let automount = pod
        .pointer("/spec/automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            found
                .get("automountServiceAccountToken")
                .and_then(Value::as_bool)
        })
        .unwrap_or(true);
    if automount {
        mount(pod);
    }
    Ok(())
}

/// Create the `default` ServiceAccount in `ns` unless it exists.
pub async fn seed_default(api: &Api, ns: &str) -> ApiResult<()> {
    let Some(res) = api.registry.find("", "v1", "serviceaccounts") else {
        return Ok(());
    };
    let obj = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                     "metadata": {"name": "default", "namespace": ns}});
    match Box::pin(crate::rest::write::create_object(
        api,
        &res,
        Some(ns),
        obj,
        false,
    ))
    .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn lookup(api: &Api, ns: &str, account: &str) -> ApiResult<Option<Value>> {
    let Some(res) = api.registry.find("", "v1", "serviceaccounts") else {
        return Ok(None);
    };
    let key = res.key(Some(ns), account);
    let attempts = if account == "default" {
        DEFAULT_ATTEMPTS
    } else {
        1
    };
    for i in 0..attempts {
        if i > 0 {
            tokio::time::sleep(RETRY).await;
        }
        if let Some(kv) = api.store.get(&key).await? {
            return Ok(crate::meta::decode(&kv));
        }
    }
    Ok(None)
}

/// Add the projected volume and its mount, unless a container mounts something at
/// [`MOUNT_PATH`] already (then the pod brings its own credentials).
fn mount(pod: &mut Value) {
    let spec = &mut pod["spec"];
    let containers = ["initContainers", "containers", "ephemeralContainers"];
    let taken = containers.iter().any(|list| {
        spec[*list].as_array().into_iter().flatten().any(|c| {
            c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["mountPath"].as_str() == Some(MOUNT_PATH))
        })
    });
    if taken {
        return;
    }
    let volume = format!("kube-api-access-{}", crate::meta::name_suffix());
    if !spec["volumes"].is_array() {
        spec["volumes"] = json!([]);
    }
    if let Some(v) = spec["volumes"].as_array_mut() {
        v.push(projected(&volume));
    }
    for list in containers {
        for c in spec[list].as_array_mut().into_iter().flatten() {
            if !c["volumeMounts"].is_array() {
                c["volumeMounts"] = json!([]);
            }
            if let Some(m) = c["volumeMounts"].as_array_mut() {
                m.push(json!({"name": volume, "mountPath": MOUNT_PATH, "readOnly": true}));
            }
        }
    }
}

/// kube's `kube-api-access-*` volume.
fn projected(name: &str) -> Value {
    json!({"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef":
            {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_container_mounts_the_projected_volume_read_only() {
        let mut pod = json!({"spec": {
            "initContainers": [{"name": "i"}],
            "containers": [{"name": "a", "volumeMounts": [{"name": "x", "mountPath": "/x"}]},
                           {"name": "b"}],
            "volumes": [{"name": "x", "emptyDir": {}}]}});
        mount(&mut pod);
        let vols = pod["spec"]["volumes"].as_array().unwrap();
        assert_eq!(vols.len(), 2);
        let name = vols[1]["name"].as_str().unwrap();
        assert!(
            name.starts_with("kube-api-access-") && name.len() == 21,
            "{name}"
        );
        let sources = &vols[1]["projected"]["sources"];
        assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
        assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
        assert_eq!(sources[2]["downwardAPI"]["items"][0]["path"], "namespace");
        for c in ["initContainers", "containers"] {
            for c in pod["spec"][c].as_array().unwrap() {
                let m = c["volumeMounts"]
                    .as_array()
                    .unwrap()
                    .last()
                    .unwrap()
                    .clone();
                assert_eq!(
                    m,
                    json!({"name": name, "mountPath": MOUNT_PATH, "readOnly": true})
                );
            }
        }
    }

    #[test]
    fn a_pod_with_its_own_credentials_mount_is_left_alone() {
        let mut pod = json!({"spec": {"containers": [{"name": "a",
            "volumeMounts": [{"name": "mine", "mountPath": MOUNT_PATH}]}]}});
        let before = pod.clone();
        mount(&mut pod);
        assert_eq!(pod, before);
    }
}
