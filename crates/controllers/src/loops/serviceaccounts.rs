//! The service-account loops, as kube-controller-manager's `serviceaccount` controller and
//! `root-ca-cert-publisher`: every active namespace keeps a `default` ServiceAccount and a
//! `kube-root-ca.crt` ConfigMap holding the cluster CA (what a pod's projected volume shows
//! as `ca.crt`). Each is created when missing (a new namespace, or someone deleted it) and the
//! ConfigMap is put back when its content drifts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{ObjectMeta, PostParams, WatchParams};
use kube::{Api, Client};

use super::{is_status, work, Next};
use crate::runtime::{Informer, WorkQueue};

/// The ConfigMap every namespace gets, and its one key.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
pub const ROOT_CA_KEY: &str = "ca.crt";
/// The account every namespace gets.
pub const DEFAULT_ACCOUNT: &str = "default";

/// What a namespace should hold: (the account, the ConfigMap), or None while it terminates.
pub fn desired(ns: &Namespace, root_ca: &str) -> Option<(ServiceAccount, ConfigMap)> {
    if ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
    {
        return None;
    }
    let name = ns.metadata.name.clone()?;
    let meta = |n: &str| ObjectMeta {
        name: Some(n.to_string()),
        namespace: Some(name.clone()),
        ..Default::default()
    };
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "kubernetes.io/description".to_string(),
        "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.".to_string(),
    );
    let cm = ConfigMap {
        metadata: ObjectMeta {
            annotations: Some(annotations),
            ..meta(ROOT_CA_CONFIGMAP)
        },
        data: Some(BTreeMap::from([(
            ROOT_CA_KEY.to_string(),
            root_ca.to_string(),
        )])),
        ..Default::default()
    };
    Some((
        ServiceAccount {
            metadata: meta(DEFAULT_ACCOUNT),
            ..Default::default()
        },
        cm,
    ))
}

/// A handler that queues the changed object's namespace.
fn by_namespace<K: kube::Resource>(
    queue: WorkQueue,
) -> impl Fn(crate::runtime::Change<'_, K>) + Send + Sync {
    move |c| queue.add(c.object().meta().namespace.as_deref().unwrap_or_default())
}

/// Run the loop; `root_ca` is the cluster CA in PEM.
pub async fn run(client: Client, root_ca: String) {
    let queue = WorkQueue::new();
    let namespaces = Arc::new(Informer::start(
        Api::<Namespace>::all(client.clone()),
        WatchParams::default(),
        Duration::from_secs(300),
        crate::runtime::enqueue_self(queue.clone()),
    ));
    // Only the objects this loop owns are watched: their deletion or edit brings the
    // namespace back to the queue.
    let accounts = Informer::start(
        Api::<ServiceAccount>::all(client.clone()),
        WatchParams::default().fields(&format!("metadata.name={DEFAULT_ACCOUNT}")),
        Duration::from_secs(300),
        by_namespace(queue.clone()),
    );
    let configmaps = Informer::start(
        Api::<ConfigMap>::all(client.clone()),
        WatchParams::default().fields(&format!("metadata.name={ROOT_CA_CONFIGMAP}")),
        Duration::from_secs(300),
        by_namespace(queue.clone()),
    );
    namespaces.synced().await;
    accounts.synced().await;
    configmaps.synced().await;
    let (accounts, configmaps) = (Arc::new(accounts), Arc::new(configmaps));
    let root_ca = Arc::new(root_ca);
    work(queue, 1, move |ns| {
        let (client, namespaces, root_ca) = (client.clone(), namespaces.clone(), root_ca.clone());
        let (accounts, configmaps) = (accounts.clone(), configmaps.clone());
        async move {
            let Some(namespace) = namespaces.get(&ns) else {
                return Ok(Next::Done);
            };
            let Some((sa, cm)) = desired(&namespace, &root_ca) else {
                return Ok(Next::Done);
            };
            let pp = PostParams::default();
            if accounts.get(&format!("{ns}/{DEFAULT_ACCOUNT}")).is_none() {
                let api = Api::<ServiceAccount>::namespaced(client.clone(), &ns);
                match api.create(&pp, &sa).await {
                    Ok(_) => {}
                    // Exists (the cache lags), or the namespace started terminating.
                    Err(e) if is_status(&e, 409) || is_status(&e, 403) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let api = Api::<ConfigMap>::namespaced(client, &ns);
            match configmaps.get(&format!("{ns}/{ROOT_CA_CONFIGMAP}")) {
                None => match api.create(&pp, &cm).await {
                    Ok(_) => {}
                    Err(e) if is_status(&e, 409) || is_status(&e, 403) => {}
                    Err(e) => return Err(e.into()),
                },
                Some(cur) if cur.data != cm.data => {
                    let mut next = (*cur).clone();
                    next.data = cm.data.clone();
                    match api.replace(ROOT_CA_CONFIGMAP, &pp, &next).await {
                        Ok(_) => {}
                        Err(e) if is_status(&e, 409) || is_status(&e, 404) => {
                            return Ok(Next::After(Duration::from_secs(1)))
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Some(_) => {}
            }
            Ok(Next::Done)
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_active_namespace_gets_its_account_and_the_ca() {
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "team"}, "status": {"phase": "Active"}}))
        .unwrap();
        let (sa, cm) = desired(&ns, "PEM").unwrap();
        assert_eq!(sa.metadata.name.as_deref(), Some("default"));
        assert_eq!(sa.metadata.namespace.as_deref(), Some("team"));
        assert_eq!(cm.metadata.name.as_deref(), Some("kube-root-ca.crt"));
        assert_eq!(cm.data.unwrap()["ca.crt"], "PEM");
        let gone: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "team"}, "status": {"phase": "Terminating"}}))
        .unwrap();
        assert!(desired(&gone, "PEM").is_none());
    }
}
