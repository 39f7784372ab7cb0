//! yun's node agent: runs the pods bound to its node, the kubelet's job.
//!
//! [`PodRuntime`] turns a Pod object into running containers on this node and reports a
//! PodStatus back: a sandbox container holds the pod's network, IPC and UTS namespaces and its
//! address on the node's bridge; init containers run in order, then the app containers, each
//! started by the engine (image config + pod spec) and joined to the sandbox's namespaces;
//! restartPolicy with CrashLoopBackOff; volumes; logs. Containers are found again by their
//! labels, so an agent restart re-adopts them instead of killing them.

mod auth;
mod container;
pub mod events;
mod exits;
mod heartbeat;
mod identity;
mod images;
pub mod logs;
pub mod metrics;
pub mod node;
mod podevents;
mod pods;
mod podwatch;
mod probes;
pub mod quantity;
pub mod record;
pub mod relay;
mod services;
pub mod snapshots;
mod status;
pub mod storage;
pub mod streams;
mod volumes;

use std::collections::{BTreeMap, HashMap};

pub use pods::{NodeConfig, PodRuntime};

/// What the agent resolved from the API for one pod: the ConfigMaps and Secrets its volumes
/// and env refer to (by name, decoded), the node's address, the pod's service-account
/// tokens and its service variables.
#[derive(Debug, Clone, Default)]
pub struct PodInputs {
    pub config_maps: HashMap<String, BTreeMap<String, Vec<u8>>>,
    pub secrets: HashMap<String, BTreeMap<String, Vec<u8>>>,
    pub host_ip: Option<String>,
    /// Filled in by the runtime once the sandbox has its address.
    pub pod_ip: Option<String>,
    /// Service-account tokens for projected volumes, by `VOLUME/PATH`.
    pub tokens: HashMap<String, Vec<u8>>,
    /// The service variables every container starts with (`KUBERNETES_SERVICE_HOST`, …).
    pub service_env: Vec<(String, String)>,
    /// The pod's claims (by claim name), where they are on this node.
    pub claims: HashMap<String, storage::ClaimVolume>,
}
