//! The agent's side of the API: register the Node, renew its Lease, run the pods bound to it
//! and write their status back — the kubelet's sync loop over [`PodRuntime`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ConfigMap, Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo, Pod,
    PodStatus, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client};
use serde_json::json;
use tokio_util::task::AbortOnDropHandle;

use crate::{PodInputs, PodRuntime};

/// How long the containers of a pod that vanished from the API get to stop.
const ORPHAN_GRACE: Duration = Duration::from_secs(10);

/// How many pods are synced at once because they changed (a new pod, a deletion), and how
/// many in the periodic resync of every pod. Each pod syncs on a task of its own (the kubelet
/// has a worker per pod), so a changed pod never waits behind the resync of a full node.
const CHANGED_SYNCS: usize = 8;
const RESYNCS: usize = 2;

/// What the agent is called and how often it reports.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    /// How often every pod is synced even without an event (to see container exits).
    pub sync_period: Duration,
    /// How long the node's Lease is valid (Kubernetes: 40 s); it is renewed every quarter of
    /// that, as the kubelet does.
    pub lease_duration: Duration,
    /// Serve container logs (for `kubectl logs`, through the API server) on this port of the
    /// node's address (0: any free port), to requests bearing this token. None: no log endpoint.
    pub logs: Option<(u16, String)>,
}

impl AgentConfig {
    pub fn new(node_name: &str) -> AgentConfig {
        AgentConfig {
            node_name: node_name.to_string(),
            sync_period: Duration::from_secs(1),
            lease_duration: Duration::from_secs(40),
            logs: None,
        }
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

fn host_facts() -> (i64, i64, String) {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as i64)
        .unwrap_or(1);
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    (cpus, mem_kib, kernel)
}

/// The Node object this agent registers: capacity from the host, its pod CIDR, Ready.
pub fn node_object(cfg: &AgentConfig, rt: &PodRuntime, log_port: Option<u16>) -> Node {
    let (cpus, mem_kib, kernel) = host_facts();
    let mut capacity = BTreeMap::new();
    capacity.insert("cpu".to_string(), Quantity(cpus.to_string()));
    capacity.insert("memory".to_string(), Quantity(format!("{mem_kib}Ki")));
    capacity.insert("pods".to_string(), Quantity("110".into()));
    let net = rt.network();
    Node {
        metadata: ObjectMeta {
            name: Some(cfg.node_name.clone()),
            labels: Some(
                [
                    ("kubernetes.io/hostname", cfg.node_name.as_str()),
                    ("kubernetes.io/os", "linux"),
                    ("kubernetes.io/arch", "amd64"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(net.subnet().to_string()),
            pod_cidrs: Some(vec![net.subnet().to_string()]),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            allocatable: Some(capacity.clone()),
            capacity: Some(capacity),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: net.gateway().to_string(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: cfg.node_name.clone(),
                },
            ]),
            conditions: Some(vec![ready_condition()]),
            daemon_endpoints: log_port.map(|port| {
                k8s_openapi::api::core::v1::NodeDaemonEndpoints {
                    kubelet_endpoint: Some(k8s_openapi::api::core::v1::DaemonEndpoint {
                        port: port as i32,
                    }),
                }
            }),
            node_info: Some(NodeSystemInfo {
                architecture: "amd64".into(),
                container_runtime_version: format!("yun://{}", env!("CARGO_PKG_VERSION")),
                kernel_version: kernel,
                kubelet_version: "v1.33.0-yun".into(),
                kube_proxy_version: String::new(),
                operating_system: "linux".into(),
                os_image: "yun".into(),
                boot_id: String::new(),
                machine_id: String::new(),
                system_uuid: String::new(),
                swap: None,
            }),
            ..Default::default()
        }),
    }
}

pub(crate) fn ready_condition() -> NodeCondition {
    NodeCondition {
        type_: "Ready".into(),
        status: "True".into(),
        reason: Some("KubeletReady".into()),
        message: Some("yun agent is posting ready status".into()),
        last_heartbeat_time: Some(now()),
        last_transition_time: Some(now()),
    }
}

/// Create the Node, or bring an existing one's status up to date.
pub async fn register(
    client: &Client,
    cfg: &AgentConfig,
    rt: &PodRuntime,
    log_port: Option<u16>,
) -> anyhow::Result<()> {
    let api = Api::<Node>::all(client.clone());
    let node = node_object(cfg, rt, log_port);
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    let patch = json!({"status": node.status});
    api.patch_status(
        &cfg.node_name,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// The ConfigMaps and Secrets a pod refers to, read from the API.
async fn inputs_for(
    client: &Client,
    identity: &crate::identity::Identity,
    storage: &crate::storage::NodeStorage,
    pod: &Pod,
    host_ip: &str,
) -> anyhow::Result<PodInputs> {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let spec = pod.spec.clone().unwrap_or_default();
    let mut cm_names: Vec<String> = Vec::new();
    let mut secret_names: Vec<String> = Vec::new();
    for v in spec.volumes.iter().flatten() {
        if let Some(c) = &v.config_map {
            cm_names.push(c.name.clone());
        }
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secret_names.push(s);
        }
    }
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        for src in c.env_from.iter().flatten() {
            if let Some(r) = &src.config_map_ref {
                cm_names.push(r.name.clone());
            }
            if let Some(r) = &src.secret_ref {
                secret_names.push(r.name.clone());
            }
        }
        for e in c.env.iter().flatten() {
            if let Some(from) = &e.value_from {
                if let Some(r) = &from.config_map_key_ref {
                    cm_names.push(r.name.clone());
                }
                if let Some(r) = &from.secret_key_ref {
                    secret_names.push(r.name.clone());
                }
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        let sources = v.projected.as_ref().and_then(|p| p.sources.as_ref());
        for src in sources.into_iter().flatten() {
            if let Some(c) = &src.config_map {
                cm_names.push(c.name.clone());
            }
            if let Some(s) = &src.secret {
                secret_names.push(s.name.clone());
            }
        }
    }
    let mut inputs = PodInputs {
        host_ip: Some(host_ip.to_string()),
        tokens: identity.tokens.for_pod(client, pod).await?,
        service_env: identity.env_for(pod),
        ..Default::default()
    };
    for v in spec.volumes.iter().flatten() {
        if let Some(c) = &v.persistent_volume_claim {
            let found = storage.claim_volume(client, &ns, &c.claim_name).await?;
            inputs.claims.insert(c.claim_name.clone(), found);
        }
    }
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    for name in cm_names {
        if let Ok(Some(cm)) = cms.get_opt(&name).await {
            let mut data: BTreeMap<String, Vec<u8>> = cm
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            for (k, v) in cm.binary_data.unwrap_or_default() {
                data.insert(k, v.0);
            }
            inputs.config_maps.insert(name, data);
        }
    }
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    for name in secret_names {
        if let Ok(Some(s)) = secrets.get_opt(&name).await {
            let mut data: BTreeMap<String, Vec<u8>> = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            for (k, v) in s.string_data.unwrap_or_default() {
                data.insert(k, v.into_bytes());
            }
            inputs.secrets.insert(name, data);
        }
    }
    Ok(inputs)
}

/// A condition's lastTransitionTime is when its status last changed: keep the recorded one
/// while the status is the same, so the time means something and an unchanged pod's status is
/// identical to what the API has (and is not rewritten, waking no watcher).
fn keep_transition_times(old: Option<&PodStatus>, new: &mut PodStatus) {
    let old = old.and_then(|s| s.conditions.as_deref()).unwrap_or(&[]);
    for c in new.conditions.iter_mut().flatten() {
        if let Some(o) = old
            .iter()
            .find(|o| o.type_ == c.type_ && o.status == c.status)
        {
            c.last_transition_time = o.last_transition_time.clone();
        }
    }
}

/// Run the agent until the process ends: register, heartbeat, and sync the node's pods.
pub async fn run(client: Client, cfg: AgentConfig, rt: Arc<PodRuntime>) -> anyhow::Result<()> {
    let host_ip = rt.network().gateway().to_string();
    let log_port = match &cfg.logs {
        Some((port, token)) => {
            let (listener, addr) = crate::logs::bind(std::net::SocketAddr::new(
                rt.network().gateway().into(),
                *port,
            ))
            .await?;
            let server = tokio::spawn(crate::logs::serve(
                listener,
                rt.clone(),
                client.clone(),
                token.clone(),
                cfg.node_name.clone(),
            ));
            Some((addr.port(), AbortOnDropHandle::new(server)))
        }
        None => None,
    };
    let (log_port, _log_server) = match log_port {
        Some((port, task)) => (Some(port), Some(task)),
        None => (None, None),
    };
    register(&client, &cfg, &rt, log_port).await?;
    rt.set_recorder(crate::events::Recorder::new(
        client.clone(),
        crate::heartbeat::COMPONENT,
        Some(&cfg.node_name),
    ));
    // Helpers end with this future, so nothing outlives an agent that was stopped.
    let _heartbeat = AbortOnDropHandle::new(tokio::spawn(crate::heartbeat::run(
        client.clone(),
        cfg.clone(),
    )));
    let _service_proxy = AbortOnDropHandle::new(tokio::spawn(crate::services::run(
        client.clone(),
        rt.network().bridge().to_string(),
    )));
    let (services, _services_watch) =
        crate::services::reflect::<Service>(client.clone(), Arc::new(tokio::sync::Notify::new()));
    // Containers start with the service variables: know the Services first.
    let _ = tokio::time::timeout(Duration::from_secs(10), services.wait_until_ready()).await;
    let identity = Arc::new(crate::identity::Identity {
        tokens: Default::default(),
        services,
    });
    // The node's volumes: claims placed here are provisioned, grown and deleted here.
    let storage = {
        let (node, dir) = (cfg.node_name.clone(), rt.data_dir().to_path_buf());
        Arc::new(
            tokio::task::spawn_blocking(move || crate::storage::NodeStorage::open(&node, &dir))
                .await??,
        )
    };
    let _provisioner = AbortOnDropHandle::new(tokio::spawn(crate::storage::run(
        client.clone(),
        storage.clone(),
    )));
    let pods_api = Api::<Pod>::all(client.clone());
    let selector = format!("spec.nodeName={}", cfg.node_name);
    // A watch on this node's pods wakes the sync loop at once for the pods that changed, so
    // a new pod starts without waiting out the sync period; every pod is still synced each
    // period, to notice containers that exit.
    let node_pods = Arc::new(crate::podwatch::NodePods::start(pods_api, &selector));
    node_pods.synced().await;
    let mut last_full = std::time::Instant::now() - cfg.sync_period;
    let last_status: Arc<std::sync::Mutex<HashMap<String, serde_json::Value>>> = Arc::default();
    let workers = Workers {
        in_flight: Arc::default(),
        again: Arc::default(),
        changed_slots: Arc::new(tokio::sync::Semaphore::new(CHANGED_SYNCS)),
        resync_slots: Arc::new(tokio::sync::Semaphore::new(RESYNCS)),
    };
    // Pods being stopped: each on a task of its own, so one pod's grace period holds up no
    // other pod.
    let terminating: Arc<std::sync::Mutex<std::collections::HashSet<String>>> = Arc::default();
    // Finished pods whose sandbox is released: nothing of them changes any more, so the
    // periodic pass skips them (only a change of the pod itself syncs one again). A node keeps
    // every finished Job pod; resyncing them all each second delayed the live ones.
    let released: Arc<std::sync::Mutex<std::collections::HashSet<String>>> = Arc::default();
    let syncer = PodSyncer {
        client: client.clone(),
        identity,
        rt: rt.clone(),
        host_ip: host_ip.clone(),
        last_status: last_status.clone(),
        exits: Arc::default(),
        node_pods: node_pods.clone(),
        storage: storage.clone(),
    };
    loop {
        let full = last_full.elapsed() >= cfg.sync_period;
        if full {
            last_full = std::time::Instant::now();
        }
        let crate::podwatch::Snapshot {
            pods,
            changed,
            live,
        } = node_pods.take(full);
        let mut to_sync = Vec::new();
        // Containers of pods the API no longer has: remove them. (Read from disk only when a
        // pod went away, or on the periodic pass, not on every change.)
        let known = match &live {
            Some(_) => {
                let rt = rt.clone();
                tokio::task::spawn_blocking(move || rt.pod_uids()).await?
            }
            None => Vec::new(),
        };
        if let Some(live) = &live {
            released.lock().expect("lock").retain(|u| live.contains(u));
        }
        let live = live.unwrap_or_default();
        for uid in known.into_iter().filter(|u| !live.contains(u)) {
            if terminating.lock().expect("lock").insert(uid.clone()) {
                let (rt, terminating) = (rt.clone(), terminating.clone());
                tokio::spawn(async move {
                    let rt2 = rt.clone();
                    let uid2 = uid.clone();
                    let _ =
                        tokio::task::spawn_blocking(move || rt2.remove(&uid2, ORPHAN_GRACE)).await;
                    terminating.lock().expect("lock").remove(&uid);
                });
            }
        }
        for pod in pods {
            if pod.metadata.deletion_timestamp.is_some() {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                last_status.lock().expect("lock").remove(&uid);
                if terminating.lock().expect("lock").insert(uid.clone()) {
                    let (client, rt, terminating) =
                        (client.clone(), rt.clone(), terminating.clone());
                    tokio::spawn(async move {
                        if let Err(e) = terminate(&client, &rt, &pod).await {
                            tracing::warn!("{e:#}");
                        }
                        terminating.lock().expect("lock").remove(&uid);
                    });
                }
                continue;
            }
            to_sync.push(pod);
        }
        for pod in to_sync {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let finished = matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded") | Some("Failed")
            );
            if finished && !changed.contains(&uid) && released.lock().expect("lock").contains(&uid)
            {
                continue;
            }
            let slots = if changed.contains(&uid) {
                workers.changed_slots.clone()
            } else {
                workers.resync_slots.clone()
            };
            if !workers.in_flight.lock().expect("lock").insert(uid.clone()) {
                // Being synced now: look again as soon as that sync is done.
                workers.again.lock().expect("lock").insert(uid);
                continue;
            }
            let (syncer, workers, node_pods, released) = (
                syncer.clone(),
                workers.clone(),
                node_pods.clone(),
                released.clone(),
            );
            tokio::spawn(async move {
                if let Ok(_slot) = slots.acquire_owned().await {
                    match syncer.sync_one(pod).await {
                        Ok(()) if finished => {
                            released.lock().expect("lock").insert(uid.clone());
                        }
                        Ok(()) => {}
                        Err(e) => tracing::warn!("{e:#}"),
                    }
                }
                workers.in_flight.lock().expect("lock").remove(&uid);
                if workers.again.lock().expect("lock").remove(&uid) {
                    node_pods.mark_changed(&uid);
                }
            });
        }
        node_pods
            .changed_or(cfg.sync_period.saturating_sub(last_full.elapsed()))
            .await;
    }
}

/// The pod syncs under way, and the slots they take.
#[derive(Clone)]
struct Workers {
    in_flight: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Pods that changed while being synced.
    again: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    changed_slots: Arc<tokio::sync::Semaphore>,
    resync_slots: Arc<tokio::sync::Semaphore>,
}

/// Stop a deleted pod's containers within its grace period, then finish the deletion (the
/// kubelet's final, grace-0 delete).
async fn terminate(client: &Client, rt: &Arc<PodRuntime>, pod: &Pod) -> anyhow::Result<()> {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let grace = pod
        .metadata
        .deletion_grace_period_seconds
        .unwrap_or(30)
        .max(0) as u64;
    let (rt, uid2, pod2) = (rt.clone(), uid.clone(), pod.clone());
    tokio::task::spawn_blocking(move || {
        rt.announce_stop(&pod2);
        rt.remove(&uid2, Duration::from_secs(grace))
    })
    .await??;
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..Default::default()
    };
    match Api::<Pod>::namespaced(client.clone(), &ns)
        .delete(&name, &dp)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// What every pod sync shares: the API client, the runtime, the pods' identities (tokens,
/// service variables), the last status written per pod, and the exit waits.
#[derive(Clone)]
struct PodSyncer {
    client: Client,
    identity: Arc<crate::identity::Identity>,
    rt: Arc<PodRuntime>,
    host_ip: String,
    last_status: Arc<std::sync::Mutex<HashMap<String, serde_json::Value>>>,
    exits: Arc<crate::exits::ExitWatch>,
    node_pods: Arc<crate::podwatch::NodePods>,
    storage: Arc<crate::storage::NodeStorage>,
}

impl PodSyncer {
    /// One reconcile step for one pod, and its status written if it changed.
    async fn sync_one(&self, pod: Pod) -> anyhow::Result<()> {
        let PodSyncer {
            client,
            identity,
            rt,
            host_ip,
            last_status,
            exits,
            node_pods,
            storage,
        } = self;
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let api = Api::<Pod>::namespaced(client.clone(), &ns);
        let inputs = match inputs_for(client, identity, storage, &pod, host_ip).await {
            Ok(i) => i,
            Err(e) => {
                // The next sync tries again (a TokenRequest the server refused, for now).
                tracing::warn!("pod {ns}/{name}: {e:#}");
                return Ok(());
            }
        };
        let (rt2, pod2, uid2) = (rt.clone(), pod.clone(), uid.clone());
        let (status, running) = tokio::task::spawn_blocking(move || {
            let status = rt2.sync(&pod2, &inputs);
            // What runs now is waited on, so its exit syncs the pod at once.
            let running = match &status {
                Ok(s) if !matches!(s.phase.as_deref(), Some("Succeeded") | Some("Failed")) => {
                    rt2.running_containers(&uid2)
                }
                _ => Vec::new(),
            };
            (status, running)
        })
        .await?;
        exits.watch(rt, node_pods, &uid, running);
        let mut status = match status {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("pod {ns}/{name}: {e:#}");
                return Ok(());
            }
        };
        keep_transition_times(pod.status.as_ref(), &mut status);
        // The QoS class is the API server's (computed at create); the node reports it unchanged
        // so the status it compares with the stored one is the same when nothing moved.
        status.qos_class = pod.status.as_ref().and_then(|s| s.qos_class.clone());
        let now = serde_json::to_value(&status)?;
        let was = pod.status.as_ref().map(serde_json::to_value).transpose()?;
        // `last_status` guards against a server that stores the status slightly differently
        // from how we sent it: the same status is never written twice in a row.
        let repeat = last_status.lock().expect("lock").get(&uid) == Some(&now);
        if was.as_ref() != Some(&now) && !repeat {
            let patch = json!({"status": status});
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            last_status.lock().expect("lock").insert(uid, now);
        }
        Ok(())
    }
}
