//! kube-scheduler's VolumeBinding plugin, as decisions: what a pod's claims demand of a
//! node. A claim that is missing or being deleted, or an unbound claim of an Immediate class,
//! keeps the pod off every node; a bound claim's volume may pin it (the volume's node
//! affinity); an unbound claim of a WaitForFirstConsumer class is bound after the node is
//! chosen — its volume made there by the provisioner, or a free local volume found there.

use k8s_openapi::api::core::v1::{NodeSelector, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;

use super::NodeInfo;
use crate::cached::Pod;
use crate::selector::{self, Labels};

/// The class whose volumes only an administrator makes (no provisioner).
pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// What the pod's claims ask of a node.
#[derive(Debug, Default)]
pub struct Needs {
    /// Node affinities of the volumes already bound: a node must satisfy all.
    pub affinities: Vec<NodeSelector>,
    /// Nodes already chosen for unbound claims (a restore made where its snapshot is).
    pub nodes: Vec<String>,
    /// Claims to bind once the node is chosen ("namespace/name"), and whether each must find
    /// an existing volume (a class without a provisioner).
    pub to_bind: Vec<(String, Option<PersistentVolumeClaim>)>,
}

impl Needs {
    pub fn is_empty(&self) -> bool {
        self.affinities.is_empty() && self.to_bind.is_empty() && self.nodes.is_empty()
    }
}

/// The objects a decision reads, from the scheduler's caches.
pub trait Lookup {
    fn claim(&self, ns: &str, name: &str) -> Option<PersistentVolumeClaim>;
    fn volume(&self, name: &str) -> Option<PersistentVolume>;
    fn class(&self, name: &str) -> Option<StorageClass>;
    fn volumes(&self) -> Vec<PersistentVolume>;
}

/// What `pod`'s claims need, or why it cannot be placed anywhere now (kube's words).
pub fn needs(pod: &Pod, look: &dyn Lookup) -> Result<Needs, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = Needs::default();
    for name in pod.claims() {
        let Some(claim) = look.claim(ns, name) else {
            return Err(format!("persistentvolumeclaim \"{name}\" not found"));
        };
        if claim.metadata.deletion_timestamp.is_some() {
            return Err(format!("persistentvolumeclaim \"{name}\" is being deleted"));
        }
        let bound = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .filter(|v| !v.is_empty());
        if let Some(vname) = bound {
            let Some(volume) = look.volume(vname) else {
                return Err(format!("persistentvolume \"{vname}\" not found"));
            };
            if let Some(req) = volume
                .spec
                .as_ref()
                .and_then(|s| s.node_affinity.as_ref())
                .and_then(|a| a.required.clone())
            {
                out.affinities.push(req);
            }
            continue;
        }
        let class_name = yun_volumes::binding::claim_class(&claim).to_string();
        let class = (!class_name.is_empty())
            .then(|| look.class(&class_name))
            .flatten();
        let wait = class
            .as_ref()
            .and_then(|c| c.volume_binding_mode.as_deref())
            == Some("WaitForFirstConsumer");
        if !wait {
            return Err("pod has unbound immediate PersistentVolumeClaims".into());
        }
        if let Some(node) = claim
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(yun_volumes::SELECTED_NODE))
        {
            out.nodes.push(node.clone());
        }
        let static_only = class
            .as_ref()
            .is_some_and(|c| c.provisioner == NO_PROVISIONER);
        out.to_bind
            .push((format!("{ns}/{name}"), static_only.then_some(claim)));
    }
    Ok(out)
}

/// Whether `labels` (a node's, plus its name as `metadata.name`) satisfy a node selector:
/// terms ORed, a term's requirements ANDed.
pub fn satisfies(sel: &NodeSelector, node_name: &str, labels: &Labels) -> bool {
    sel.node_selector_terms.iter().any(|term| {
        term.match_expressions
            .iter()
            .flatten()
            .all(|e| selector::node_requirement(e, labels))
            && term.match_fields.iter().flatten().all(|f| {
                let fields: Labels = [("metadata.name".to_string(), node_name.to_string())]
                    .into_iter()
                    .collect();
                selector::node_requirement(f, &fields)
            })
    })
}

/// The filter for one node, in kube's words.
pub fn node_fits(needs: &Needs, info: &NodeInfo, look: &dyn Lookup) -> Result<(), String> {
    let (name, labels) = (info.name(), info.labels());
    if !needs.affinities.iter().all(|a| satisfies(a, name, labels))
        || !needs.nodes.iter().all(|n| n == name)
    {
        return Err("node(s) had volume node affinity conflict".into());
    }
    let statics: Vec<&PersistentVolumeClaim> = needs
        .to_bind
        .iter()
        .filter_map(|(_, c)| c.as_ref())
        .collect();
    if !statics.is_empty() {
        let volumes = look.volumes();
        let here: Vec<&PersistentVolume> = volumes
            .iter()
            .filter(|v| {
                v.spec
                    .as_ref()
                    .and_then(|s| s.node_affinity.as_ref())
                    .and_then(|a| a.required.as_ref())
                    .is_none_or(|sel| satisfies(sel, name, labels))
            })
            .collect();
        for claim in statics {
            if yun_volumes::binding::best_match(claim, here.iter().copied()).is_none() {
                return Err("node(s) didn't find available persistent volumes to bind".into());
            }
        }
    }
    Ok(())
}
