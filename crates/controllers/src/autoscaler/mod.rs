//! The HorizontalPodAutoscaler's decision, as kube's controller makes it each sync period: each
//! metric proposes a replica count ([`replicas`]), the largest wins, min/max and `behavior`
//! ([`behavior`]) bound it, and the status says what was seen and why (the conditions
//! AbleToScale, ScalingActive and ScalingLimited with kube's reasons). Only resource metrics
//! (CPU and memory, of whole pods or one container) exist here: there is no custom or external
//! metrics API, so Pods, Object and External metrics are reported as unavailable.

pub mod behavior;
pub mod replicas;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::{
    ContainerResourceMetricStatus, HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition,
    HorizontalPodAutoscalerStatus, MetricSpec, MetricStatus, MetricTarget, MetricValueStatus,
    ResourceMetricStatus,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

pub use behavior::{Behavior, History};
pub use replicas::{Figures, PodState, Resource, Target, Usage};

/// kube's default `--horizontal-pod-autoscaler-sync-period`.
pub const SYNC_PERIOD: Duration = Duration::from_secs(15);

/// A Warning event to record: (reason, message).
pub type Warning = (&'static str, String);

/// What one pass decided.
#[derive(Clone, Debug)]
pub struct Plan {
    pub desired: i32,
    /// Whether the target's scale is to be written (to `desired`).
    pub rescale: bool,
    /// Why, for the SuccessfulRescale event.
    pub reason: String,
    /// The new status, as it reads if the rescale (when any) succeeds.
    pub status: HorizontalPodAutoscalerStatus,
    pub warnings: Vec<Warning>,
}

/// Set a condition as kube does: its transition time moves only when its status does.
pub fn set_condition(
    status: &mut HorizontalPodAutoscalerStatus,
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let value = if ok { "True" } else { "False" };
    let fresh = HorizontalPodAutoscalerCondition {
        type_: type_.into(),
        status: value.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: Some(Time(now)),
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != value {
                c.last_transition_time = Some(Time(now));
            }
            c.status = fresh.status;
            c.reason = fresh.reason;
            c.message = fresh.message;
        }
        None => conditions.push(fresh),
    }
}

/// The metric's source kind for messages and reasons, and the resource part it names.
fn metric_reason(spec: &MetricSpec) -> &'static str {
    match spec.type_.as_str() {
        "Resource" => "FailedGetResourceMetric",
        "ContainerResource" => "FailedGetContainerResourceMetric",
        "Pods" => "FailedGetPodsMetric",
        "Object" => "FailedGetObjectMetric",
        _ => "FailedGetExternalMetric",
    }
}

fn target_of(r: Resource, t: &MetricTarget) -> Result<Target, String> {
    if let Some(u) = t.average_utilization {
        return Ok(Target::Utilization(u));
    }
    match t.average_value.as_ref().and_then(|q| r.amount(&q.0)) {
        Some(v) if v > 0 => Ok(Target::AverageValue(v)),
        _ => Err(format!(
            "invalid target for {} resource: neither averageUtilization nor a positive averageValue",
            r.name()
        )),
    }
}

/// One metric's proposal, its status and its name for messages.
fn compute(
    spec: &MetricSpec,
    current: i32,
    pods: &[PodState],
    usage: &BTreeMap<String, Usage>,
    now: Timestamp,
) -> Result<(i32, MetricStatus, String), String> {
    let (name, container, target) = match (&spec.resource, &spec.container_resource) {
        (Some(r), _) if spec.type_ == "Resource" => (&r.name, None, &r.target),
        (_, Some(c)) if spec.type_ == "ContainerResource" => {
            (&c.name, Some(c.container.as_str()), &c.target)
        }
        _ => {
            return Err(format!(
                "unable to get {} metric: no {} metrics API is served",
                spec.type_,
                if spec.type_ == "External" {
                    "external.metrics.k8s.io"
                } else {
                    "custom.metrics.k8s.io"
                }
            ))
        }
    };
    let r = Resource::parse(name).ok_or_else(|| {
        format!("failed to get {name} resource metric value: unable to get metrics for resource {name}: no metrics returned from resource metrics API")
    })?;
    let target = target_of(r, target)?;
    let p = replicas::propose(r, container, target, current, pods, usage, now).map_err(|e| {
        let what = match target {
            Target::Utilization(_) => "utilization",
            Target::AverageValue(_) => "usage",
        };
        format!("failed to get {name} {what}: {e}")
    })?;
    let value = MetricValueStatus {
        average_utilization: p.utilization,
        average_value: Some(Quantity(r.quantity(p.average))),
        value: None,
    };
    let scope = if container.is_some() {
        "container resource"
    } else {
        "resource"
    };
    let label = match target {
        Target::Utilization(_) => format!("{name} {scope} utilization (percentage of request)"),
        Target::AverageValue(_) => format!("{name} {scope}"),
    };
    let status = match container {
        None => MetricStatus {
            type_: "Resource".into(),
            resource: Some(ResourceMetricStatus {
                name: name.clone(),
                current: value,
            }),
            ..Default::default()
        },
        Some(c) => MetricStatus {
            type_: "ContainerResource".into(),
            container_resource: Some(ContainerResourceMetricStatus {
                name: name.clone(),
                container: c.into(),
                current: value,
            }),
            ..Default::default()
        },
    };
    Ok((p.replicas, status, label))
}

/// What the target's scale subresource says: `spec.replicas`, and whether it has a selector
/// (without one, no pods can be measured).
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub replicas: i32,
    pub selector: bool,
}

/// Decide one pass for `hpa`, whose target's scale is `scale` and selects `pods` (with their
/// samples in `usage`); `history` is this HPA's memory, `now`/`tick` the wall and monotonic
/// clocks.
pub fn plan(
    hpa: &HorizontalPodAutoscaler,
    scale: Scale,
    pods: &[PodState],
    usage: &BTreeMap<String, Usage>,
    history: &mut History,
    now: Timestamp,
    tick: Instant,
) -> Plan {
    let spec = hpa.spec.clone().unwrap_or_default();
    let mut status = hpa.status.clone().unwrap_or_default();
    let current = scale.replicas;
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    history.start(current, tick);
    set_condition(
        &mut status,
        "AbleToScale",
        true,
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale",
        now,
    );
    let mut warnings = Vec::new();
    let mut reason = String::new();
    // As in kube, a pass that does not read metrics (target out of bounds or at 0) reports none.
    let mut metric_statuses = Vec::new();
    let desired = if current == 0 && min != 0 {
        set_condition(
            &mut status,
            "ScalingActive",
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
            now,
        );
        0
    } else if current > max {
        reason = "Current number of replicas above Spec.MaxReplicas".into();
        max
    } else if current < min {
        reason = "Current number of replicas below Spec.MinReplicas".into();
        min
    } else if !scale.selector {
        set_condition(
            &mut status,
            "ScalingActive",
            false,
            "InvalidSelector",
            "the HPA target's scale is missing a selector",
            now,
        );
        warnings.push(("SelectorRequired", "selector is required".into()));
        status.current_replicas = Some(current);
        return Plan {
            desired: status.desired_replicas,
            rescale: false,
            reason,
            status,
            warnings,
        };
    } else {
        let metrics = spec.metrics.clone().unwrap_or_default();
        let mut proposed = 0;
        let mut winner = String::new();
        let mut statuses = vec![MetricStatus::default(); metrics.len()];
        let mut invalid: Vec<(&'static str, String)> = Vec::new();
        for (i, m) in metrics.iter().enumerate() {
            match compute(m, current, pods, usage, now) {
                Ok((n, s, label)) => {
                    statuses[i] = s;
                    if n > proposed {
                        proposed = n;
                        winner = label;
                    }
                }
                Err(e) => {
                    warnings.push((metric_reason(m), e.clone()));
                    invalid.push((metric_reason(m), e));
                }
            }
        }
        metric_statuses = statuses;
        if !invalid.is_empty() && (invalid.len() >= metrics.len() || proposed < current) {
            let (why, first) = &invalid[0];
            let message = format!("the HPA was unable to compute the replica count: {first}");
            set_condition(&mut status, "ScalingActive", false, why, &message, now);
            warnings.push((
                "FailedComputeMetricsReplicas",
                format!(
                    "invalid metrics ({} invalid out of {}), first error is: {first}",
                    invalid.len(),
                    metrics.len()
                ),
            ));
            status.current_replicas = Some(current);
            status.current_metrics = Some(metric_statuses);
            return Plan {
                desired: status.desired_replicas,
                rescale: false,
                reason,
                status,
                warnings,
            };
        }
        set_condition(
            &mut status,
            "ScalingActive",
            true,
            "ValidMetricFound",
            &format!("the HPA was able to successfully calculate a replica count from {winner}"),
            now,
        );
        if proposed > current {
            reason = format!("{winner} above target");
        } else if proposed < current {
            reason = "All metrics below target".into();
        }
        let b = Behavior::of(spec.behavior.as_ref());
        let (stabilized, why) = history.stabilize(&b, current, proposed, tick);
        let (able, msg) = if stabilized != proposed {
            why
        } else {
            ("ReadyForNewScale", "recommended size matches current size")
        };
        set_condition(&mut status, "AbleToScale", true, able, msg, now);
        let (limited, (why, msg)) = history.limit(&b, current, stabilized, (min, max), tick);
        set_condition(
            &mut status,
            "ScalingLimited",
            limited != stabilized,
            why,
            msg,
            now,
        );
        limited
    };
    let rescale = desired != current;
    if rescale {
        set_condition(
            &mut status,
            "AbleToScale",
            true,
            "SucceededRescale",
            &format!("the HPA controller was able to update the target scale to {desired}"),
            now,
        );
        status.last_scale_time = Some(Time(now));
    }
    status.observed_generation = hpa.metadata.generation;
    status.current_replicas = Some(current);
    status.desired_replicas = desired;
    status.current_metrics = Some(metric_statuses).filter(|m| !m.is_empty());
    Plan {
        desired,
        rescale,
        reason,
        status,
        warnings,
    }
}

#[cfg(test)]
mod tests;
