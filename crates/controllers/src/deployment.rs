//! The Deployment controller's decision: which ReplicaSet is the current template's, how to
//! scale it and the old ones (RollingUpdate within maxSurge/maxUnavailable, or Recreate),
//! revisions (so `kubectl rollout undo` finds the previous template), history cleanup, a
//! resize shared out between live ReplicaSets (`resize`), and the status `kubectl rollout
//! status` reads.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::owner;

mod resize;
use resize::resize;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// The Deployment's spec.replicas when this controller last sized the ReplicaSet: a live
/// ReplicaSet whose value differs from it tells a `kubectl scale deploy` apart from a rollout.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// spec.replicas + maxSurge at that time: the base of a proportional share.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const HASH_LABEL: &str = "pod-template-hash";

/// What to do for one Deployment.
#[derive(Debug, Clone, Default)]
pub struct DeploymentPlan {
    /// The new template's ReplicaSet, when it does not exist yet.
    pub create: Option<ReplicaSet>,
    /// ReplicaSet name → its new spec.replicas; each scaled ReplicaSet also gets
    /// [`Self::size_annotations`].
    pub scale: Vec<(String, i32)>,
    /// [`DESIRED_REPLICAS`] and [`MAX_REPLICAS`] as of this plan, for every ReplicaSet it sizes.
    pub size_annotations: BTreeMap<String, String>,
    /// ReplicaSet name → the revision it now carries (an old template rolled back to).
    pub set_revision: Vec<(String, String)>,
    /// Old, empty ReplicaSets beyond revisionHistoryLimit.
    pub delete: Vec<String>,
    /// The deployment's own revision annotation.
    pub revision: String,
    pub status: DeploymentStatus,
}

/// A pod template as Kubernetes compares them (`EqualIgnoreHash`): without its
/// pod-template-hash label, and with empty values (null, `{}`, `[]`) the same as absent, as
/// Go's zero values are. `kubectl rollout undo` (1.20) writes a ReplicaSet's template back
/// with `creationTimestamp: null` and `resources: {}` it never had: still the same template.
pub fn normalized_template(template: &PodTemplateSpec) -> serde_json::Value {
    let mut t = template.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(HASH_LABEL);
    }
    let mut v = serde_json::to_value(&t).unwrap_or_default();
    drop_empty(&mut v);
    v
}

/// Remove null, empty-object and empty-array members, innermost first.
fn drop_empty(v: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Null => true,
        Value::Object(m) => {
            m.retain(|_, x| !drop_empty(x));
            m.is_empty()
        }
        Value::Array(a) => {
            for x in a.iter_mut() {
                // An element stays (positions matter); only its own empty members go.
                drop_empty(x);
            }
            a.is_empty()
        }
        _ => false,
    }
}

/// A short, stable hash of a pod template ([`normalized_template`]), in the vowel-free
/// alphabet Kubernetes uses so it never spells words.
pub fn template_hash(template: &PodTemplateSpec) -> String {
    safe_hash(&normalized_template(template).to_string())
}

/// FNV-1a of `text`, spelled in the vowel-free alphabet Kubernetes uses for hashes in names.
pub fn safe_hash(text: &str) -> String {
    let mut h: u32 = 0x811c9dc5;
    for b in text.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x01000193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|d| ALPHABET[d as usize % ALPHABET.len()] as char)
        .collect()
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// maxSurge / maxUnavailable: an int, or a percentage of `replicas` rounded up (surge) or down.
fn resolve(v: Option<&IntOrString>, default_percent: i32, replicas: i32, round_up: bool) -> i32 {
    let percent = match v {
        Some(IntOrString::Int(n)) => return (*n).max(0),
        Some(IntOrString::String(s)) => s.trim_end_matches('%').parse().unwrap_or(default_percent),
        None => default_percent,
    };
    let exact = replicas as i64 * percent as i64;
    let value = if round_up {
        (exact + 99) / 100
    } else {
        exact / 100
    };
    value.max(0) as i32
}

fn annotation_i32(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .and_then(|v| v.parse().ok())
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (
        s.replicas,
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    )
}

/// The ReplicaSet for the deployment's current template, named DEPLOYMENT-HASH.
pub fn new_replicaset(d: &Deployment, hash: &str, replicas: i32, revision: i64) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let mut template = spec.template.clone();
    let mut tmeta = template.metadata.unwrap_or_default();
    tmeta
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.into());
    template.metadata = Some(tmeta.clone());
    let mut selector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.into());
    let name = d.metadata.name.clone().unwrap_or_default();
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{hash}")),
            namespace: d.metadata.namespace.clone(),
            labels: tmeta.labels,
            annotations: Some(
                [(REVISION.to_string(), revision.to_string())]
                    .into_iter()
                    .collect(),
            ),
            owner_references: Some(vec![owner::controller_ref(
                "apps/v1",
                "Deployment",
                &d.metadata,
            )]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

/// Decide for `d` given the ReplicaSets it controls, at time `now`.
pub fn plan(d: &Deployment, owned: &[ReplicaSet], now: &Time) -> DeploymentPlan {
    let spec = d.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let hash = template_hash(&spec.template);
    let max_revision = owned.iter().map(revision_of).max().unwrap_or(0);
    let mut plan = DeploymentPlan::default();

    // The template's ReplicaSet: the one whose template equals it (as Kubernetes finds it),
    // else one labelled with its hash.
    let wanted = normalized_template(&spec.template);
    let same_template = |rs: &&ReplicaSet| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|t| normalized_template(t) == wanted)
    };
    let labelled = |rs: &&ReplicaSet| {
        rs.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)) == Some(&hash)
    };
    let current = owned
        .iter()
        .find(same_template)
        .or_else(|| owned.iter().find(labelled))
        .cloned();
    let mut old: Vec<&ReplicaSet> = owned
        .iter()
        .filter(|rs| current.as_ref().map(|c| &c.metadata.name) != Some(&rs.metadata.name))
        .collect();
    old.sort_by_key(|rs| revision_of(rs));
    let old_pods: i32 = old.iter().map(|rs| status_of(rs).0).sum();
    let old_spec: i32 = old.iter().map(|rs| spec_replicas(rs)).sum();

    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let rolling = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.clone())
        .unwrap_or_default();
    let surge = if recreate {
        0
    } else {
        resolve(rolling.max_surge.as_ref(), 25, replicas, true)
    };
    let mut unavailable = if recreate {
        replicas
    } else {
        resolve(rolling.max_unavailable.as_ref(), 25, replicas, false)
    };
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }

    // The new ReplicaSet and its revision.
    let (new_name, new_spec, new_status, revision) = match &current {
        Some(rs) => {
            let mut rev = revision_of(rs);
            if rev < max_revision || rev == 0 {
                // A template rolled back to: it becomes the newest revision again.
                rev = max_revision + 1;
                plan.set_revision.push((
                    rs.metadata.name.clone().unwrap_or_default(),
                    rev.to_string(),
                ));
            }
            (
                rs.metadata.name.clone().unwrap_or_default(),
                spec_replicas(rs),
                status_of(rs),
                rev,
            )
        }
        None => {
            let rev = max_revision + 1;
            let rs = new_replicaset(d, &hash, 0, rev);
            let name = rs.metadata.name.clone().unwrap_or_default();
            plan.create = Some(rs);
            (name, 0, (0, 0, 0), rev)
        }
    };
    plan.revision = revision.to_string();

    plan.size_annotations = [
        (DESIRED_REPLICAS.to_string(), replicas.to_string()),
        (MAX_REPLICAS.to_string(), (replicas + surge).to_string()),
    ]
    .into_iter()
    .collect();
    if let Some(rs) = plan.create.as_mut() {
        let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.extend(plan.size_annotations.clone());
    }

    let mut new_target = new_spec;
    let resized = match (&current, spec.paused == Some(true)) {
        (Some(_), false) => resize(d, owned, &new_name, replicas, surge, recreate),
        _ => None,
    };
    if let Some(scale) = resized {
        plan.scale = scale;
    } else if spec.paused != Some(true) {
        if recreate {
            for rs in &old {
                if spec_replicas(rs) > 0 {
                    plan.scale
                        .push((rs.metadata.name.clone().unwrap_or_default(), 0));
                }
            }
            // The new pods start only once every old one is gone.
            new_target = if old_pods == 0 && old_spec == 0 {
                replicas
            } else {
                0
            };
        } else {
            // Scale up the new ReplicaSet within maxSurge.
            let total = old_spec + new_spec;
            if new_spec < replicas {
                let room = replicas + surge - total;
                if room > 0 {
                    new_target = (new_spec + room).min(replicas);
                }
            } else {
                new_target = replicas;
            }
            // Scale down old ReplicaSets while keeping replicas - maxUnavailable available.
            // Counted from the specs, as Kubernetes does: a status still counting pods a
            // resize just removed must not make room for cutting more.
            let all_pods: i32 = old_spec + new_target;
            let min_available = replicas - unavailable;
            let new_unavailable = (new_target - new_status.2).max(0);
            // Nothing goes while the pods beyond the minimum are all new ones still starting
            // (also not the old pods a proportional resize just added). Then old pods that are
            // not available go first (they cost no availability), then available ones down to
            // the minimum; a ReplicaSet counts no more available pods than it is to keep.
            let mut cleanup = (all_pods - min_available - new_unavailable).max(0);
            let available_all: i32 = old
                .iter()
                .map(|rs| status_of(rs).2.min(spec_replicas(rs)))
                .sum::<i32>()
                + new_status.2.min(new_target);
            let mut scale_down = if cleanup > 0 {
                (available_all - min_available).max(0)
            } else {
                0
            };
            for rs in &old {
                let (_, _, available) = status_of(rs);
                let want = spec_replicas(rs);
                if want == 0 {
                    continue;
                }
                let unhealthy = (want - available).max(0).min(cleanup);
                cleanup -= unhealthy;
                let healthy = (want - unhealthy).min(scale_down);
                scale_down -= healthy;
                let cut = unhealthy + healthy;
                if cut > 0 {
                    plan.scale
                        .push((rs.metadata.name.clone().unwrap_or_default(), want - cut));
                }
            }
        }
        if new_target != new_spec {
            match plan.create.as_mut() {
                Some(rs) => rs.spec.as_mut().expect("spec").replicas = Some(new_target),
                None => plan.scale.push((new_name.clone(), new_target)),
            }
        }
    }

    // History: old, empty ReplicaSets beyond the limit go, oldest first.
    let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let empty_old: Vec<&&ReplicaSet> = old
        .iter()
        .filter(|rs| spec_replicas(rs) == 0 && status_of(rs).0 == 0)
        .collect();
    if empty_old.len() > limit {
        plan.delete = empty_old[..empty_old.len() - limit]
            .iter()
            .map(|rs| rs.metadata.name.clone().unwrap_or_default())
            .collect();
    }

    plan.status = status(
        d,
        &plan,
        owned,
        new_status,
        replicas,
        unavailable,
        &new_name,
        now,
    );
    plan
}

#[allow(clippy::too_many_arguments)]
fn status(
    d: &Deployment,
    plan: &DeploymentPlan,
    owned: &[ReplicaSet],
    new_status: (i32, i32, i32),
    replicas: i32,
    max_unavailable: i32,
    new_name: &str,
    now: &Time,
) -> DeploymentStatus {
    let total: i32 = owned.iter().map(|rs| status_of(rs).0).sum();
    let ready: i32 = owned.iter().map(|rs| status_of(rs).1).sum();
    let available: i32 = owned.iter().map(|rs| status_of(rs).2).sum();
    let previous = d.status.clone().unwrap_or_default();
    let old_progressing = previous
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing")
        .cloned();
    let complete = new_status.0 == replicas && new_status.2 == replicas && total == replicas;
    let changed = plan.create.is_some()
        || !plan.scale.is_empty()
        || previous.updated_replicas != Some(new_status.0)
        || previous.available_replicas != Some(available)
        || previous.replicas != Some(total);
    let deadline = d
        .spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .unwrap_or(600) as i64;
    let condition =
        |status: &str, reason: &str, message: String, update: Option<Time>| DeploymentCondition {
            type_: "Progressing".into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message),
            last_update_time: update.clone(),
            last_transition_time: update,
        };
    let progressing = if complete {
        condition(
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            Some(now.clone()),
        )
    } else if changed || old_progressing.is_none() {
        condition(
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{new_name}\" is progressing."),
            Some(now.clone()),
        )
    } else {
        let old = old_progressing.expect("checked above");
        let since = old
            .last_update_time
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or_else(|| now.0.as_second());
        if old.reason.as_deref() == Some("ProgressDeadlineExceeded")
            || now.0.as_second() - since > deadline
        {
            condition(
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                old.last_update_time.clone(),
            )
        } else {
            old
        }
    };
    let min_available = available >= replicas - max_unavailable;
    let available_condition = DeploymentCondition {
        type_: "Available".into(),
        status: if min_available { "True" } else { "False" }.into(),
        reason: Some(
            if min_available {
                "MinimumReplicasAvailable"
            } else {
                "MinimumReplicasUnavailable"
            }
            .into(),
        ),
        message: Some(if min_available {
            "Deployment has minimum availability.".into()
        } else {
            "Deployment does not have minimum availability.".into()
        }),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    };
    DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(total),
        updated_replicas: Some(new_status.0),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((replicas - available).max(0)),
        conditions: Some(vec![available_condition, progressing]),
        collision_count: previous.collision_count,
        terminating_replicas: None,
    }
}
