//! The HorizontalPodAutoscaler loop: every sync period, per HPA, read the target's scale
//! subresource, the pods its selector selects and their samples from `metrics.k8s.io`, let
//! [`crate::autoscaler`] decide, then write the scale (when the count changes) and the status
//! (when it changes), with kube's events.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::{HorizontalPodAutoscaler, HorizontalPodAutoscalerStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
    WatchParams,
};
use kube::{Api, Client};
use serde_json::{json, Value};
use yun_agent::events::{reference, EventType, Recorder};

use super::{is_status, split_key, work, Next};
use crate::autoscaler::{self, Behavior, Figures, History, PodState, Scale, Usage, SYNC_PERIOD};
use crate::runtime::{enqueue_self, Informer, WorkQueue};

/// What the loop remembers of one HPA between passes.
#[derive(Default)]
struct Memory {
    uid: String,
    history: History,
    /// When the last full pass ran, and at which generation of the spec.
    last: Option<(Instant, Option<i64>)>,
}

type Memories = Arc<Mutex<HashMap<String, Memory>>>;

struct Ctx {
    client: Client,
    hpas: Arc<Informer<HorizontalPodAutoscaler>>,
    events: Recorder,
    memories: Memories,
    /// Targets' kinds resolved through discovery (apiVersion/kind → resource).
    kinds: Mutex<HashMap<(String, String), ApiResource>>,
}

pub async fn run(client: Client) {
    let queue = WorkQueue::new();
    let hpas = Arc::new(Informer::start(
        Api::<HorizontalPodAutoscaler>::all(client.clone()),
        WatchParams::default(),
        Duration::from_secs(60),
        enqueue_self(queue.clone()),
    ));
    hpas.synced().await;
    let ctx = Arc::new(Ctx {
        events: Recorder::new(client.clone(), "horizontal-pod-autoscaler", None),
        client,
        hpas,
        memories: Arc::default(),
        kinds: Mutex::default(),
    });
    work(queue, 2, move |key| {
        let ctx = ctx.clone();
        async move { reconcile(&key, &ctx).await }
    })
    .await;
}

/// The resource of a target: apps/v1's scalable kinds by name, anything else (a custom
/// resource) through discovery.
async fn target_resource(ctx: &Ctx, api_version: &str, kind: &str) -> anyhow::Result<ApiResource> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let plural = match (group, kind) {
        ("apps", "Deployment") => Some("deployments"),
        ("apps", "ReplicaSet") => Some("replicasets"),
        ("apps", "StatefulSet") => Some("statefulsets"),
        _ => None,
    };
    if let Some(p) = plural {
        return Ok(ApiResource::from_gvk_with_plural(&gvk, p));
    }
    let key = (api_version.to_string(), kind.to_string());
    if let Some(r) = ctx.kinds.lock().expect("kinds lock").get(&key) {
        return Ok(r.clone());
    }
    let (r, _) = kube::discovery::pinned_kind(&ctx.client, &gvk).await?;
    ctx.kinds.lock().expect("kinds lock").insert(key, r.clone());
    Ok(r)
}

async fn reconcile(key: &str, ctx: &Ctx) -> anyhow::Result<Next> {
    let Some(hpa) = ctx.hpas.get(key) else {
        ctx.memories.lock().expect("memory lock").remove(key);
        return Ok(Next::Done);
    };
    let uid = hpa.metadata.uid.clone().unwrap_or_default();
    let generation = hpa.metadata.generation;
    {
        // Our own status writes come back through the watch: a pass runs once per sync
        // period unless the spec changed.
        let mut memories = ctx.memories.lock().expect("memory lock");
        let m = memories.entry(key.to_string()).or_default();
        if m.uid != uid {
            *m = Memory {
                uid,
                ..Default::default()
            };
        }
        if let Some((at, seen)) = m.last {
            let since = at.elapsed();
            if since < SYNC_PERIOD && seen == generation {
                return Ok(Next::After(SYNC_PERIOD - since));
            }
        }
        m.last = Some((Instant::now(), generation));
    }
    pass(key, ctx, &hpa).await?;
    Ok(Next::After(SYNC_PERIOD))
}

async fn pass(key: &str, ctx: &Ctx, hpa: &HorizontalPodAutoscaler) -> anyhow::Result<()> {
    let (ns, _) = split_key(key);
    let object = reference("autoscaling/v2", "HorizontalPodAutoscaler", &hpa.metadata);
    let warn = |reason: &str, message: &str| {
        ctx.events
            .record(&object, EventType::Warning, reason, "", message);
    };
    let spec = hpa.spec.clone().unwrap_or_default();
    let target = &spec.scale_target_ref;
    let scale = match target_resource(
        ctx,
        target.api_version.as_deref().unwrap_or(""),
        &target.kind,
    )
    .await
    {
        Ok(r) => Api::<DynamicObject>::namespaced_with(ctx.client.clone(), ns, &r)
            .get_scale(&target.name)
            .await
            .map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    let now = Timestamp::now();
    let mut failed = hpa.status.clone().unwrap_or_default();
    let scale = match scale {
        Ok(s) => s,
        Err(e) => {
            // Resolved again next time: the kind may have been removed or redefined.
            let kind_key = (
                target.api_version.clone().unwrap_or_default(),
                target.kind.clone(),
            );
            ctx.kinds.lock().expect("kinds lock").remove(&kind_key);
            let message =
                format!("the HPA controller was unable to get the target's current scale: {e}");
            warn("FailedGetScale", &e.to_string());
            autoscaler::set_condition(
                &mut failed,
                "AbleToScale",
                false,
                "FailedGetScale",
                &message,
                now,
            );
            return write_status(ctx, hpa, failed).await;
        }
    };
    let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let selector = scale
        .status
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    let (pods, usage) = if selector.is_empty() {
        (Vec::new(), BTreeMap::new())
    } else {
        let lp = ListParams::default().labels(&selector);
        let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns)
            .list(&lp)
            .await?;
        let pods: Vec<PodState> = pods.items.iter().map(pod_state).collect();
        (pods, pod_usage(ctx, ns, &lp).await)
    };
    let plan = {
        let mut memories = ctx.memories.lock().expect("memory lock");
        let m = memories.entry(key.to_string()).or_default();
        autoscaler::plan(
            hpa,
            Scale {
                replicas: current,
                selector: !selector.is_empty(),
            },
            &pods,
            &usage,
            &mut m.history,
            now,
            Instant::now(),
        )
    };
    for (reason, message) in &plan.warnings {
        warn(reason, message);
    }
    let mut status = plan.status;
    if plan.rescale {
        let r = target_resource(
            ctx,
            target.api_version.as_deref().unwrap_or(""),
            &target.kind,
        )
        .await?;
        let patch = json!({"spec": {"replicas": plan.desired}});
        let wrote = Api::<DynamicObject>::namespaced_with(ctx.client.clone(), ns, &r)
            .patch_scale(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        match wrote {
            Ok(_) => {
                let b = Behavior::of(spec.behavior.as_ref());
                let mut memories = ctx.memories.lock().expect("memory lock");
                let m = memories.entry(key.to_string()).or_default();
                m.history.scaled(&b, current, plan.desired, Instant::now());
                drop(memories);
                ctx.events.record(
                    &object,
                    EventType::Normal,
                    "SuccessfulRescale",
                    "",
                    &format!("New size: {}; reason: {}", plan.desired, plan.reason),
                );
                tracing::info!(
                    "{key}: scaled {} {} from {current} to {}",
                    target.kind,
                    target.name,
                    plan.desired
                );
            }
            Err(e) => {
                warn(
                    "FailedRescale",
                    &format!(
                        "New size: {}; reason: {}; error: {e}",
                        plan.desired, plan.reason
                    ),
                );
                let message =
                    format!("the HPA controller was unable to update the target scale: {e}");
                autoscaler::set_condition(
                    &mut status,
                    "AbleToScale",
                    false,
                    "FailedUpdateScale",
                    &message,
                    now,
                );
                status.desired_replicas = hpa.status.as_ref().map_or(0, |s| s.desired_replicas);
                status.last_scale_time =
                    hpa.status.as_ref().and_then(|s| s.last_scale_time.clone());
            }
        }
    }
    write_status(ctx, hpa, status).await
}

/// Replace the status when it differs from the one stored (a conflict retries with back-off).
async fn write_status(
    ctx: &Ctx,
    hpa: &HorizontalPodAutoscaler,
    status: HorizontalPodAutoscalerStatus,
) -> anyhow::Result<()> {
    if hpa.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let ns = hpa.metadata.namespace.clone().unwrap_or_default();
    let name = hpa.metadata.name.clone().unwrap_or_default();
    let mut new = hpa.clone();
    new.status = Some(status);
    match Api::<HorizontalPodAutoscaler>::namespaced(ctx.client.clone(), &ns)
        .replace_status(&name, &PostParams::default(), &new)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn pod_state(p: &Pod) -> PodState {
    let status = p.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .map(|c| {
            let since = c
                .last_transition_time
                .as_ref()
                .map_or(Timestamp::UNIX_EPOCH, |t| t.0);
            (c.status == "True", since)
        });
    let requests = p
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| {
            let get = |k: &str| {
                c.resources
                    .as_ref()
                    .and_then(|r| r.requests.as_ref())
                    .and_then(|m| m.get(k))
                    .map(|q| q.0.clone())
            };
            Figures {
                container: c.name.clone(),
                cpu: get("cpu").and_then(|q| autoscaler::Resource::Cpu.amount(&q)),
                memory: get("memory").and_then(|q| autoscaler::Resource::Memory.amount(&q)),
            }
        })
        .collect();
    PodState {
        name: p.metadata.name.clone().unwrap_or_default(),
        phase: status.phase.clone().unwrap_or_default(),
        deleting: p.metadata.deletion_timestamp.is_some(),
        ready,
        started: status.start_time.map(|t| t.0),
        requests,
    }
}

/// A Go duration as metav1.Duration writes it (`15s`, `1.002s`, `500ms`, `1m0s`).
fn go_duration(s: &str) -> Option<Duration> {
    let mut total = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        total += n * match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_end..];
    }
    Some(Duration::from_secs_f64(total))
}

/// The pods' samples from `metrics.k8s.io/v1beta1` (none when the API has nothing yet: the
/// decision then reports the metrics as missing).
async fn pod_usage(ctx: &Ctx, ns: &str, lp: &ListParams) -> BTreeMap<String, Usage> {
    let gvk = GroupVersionKind::gvk("metrics.k8s.io", "v1beta1", "PodMetrics");
    let r = ApiResource::from_gvk_with_plural(&gvk, "pods");
    let list = match Api::<DynamicObject>::namespaced_with(ctx.client.clone(), ns, &r)
        .list(lp)
        .await
    {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!("pod metrics in {ns}: {e}");
            return BTreeMap::new();
        }
    };
    let mut out = BTreeMap::new();
    for m in list.items {
        let data = &m.data;
        let quantity = |c: &Value, k: &str| {
            c.pointer(&format!("/usage/{k}"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let containers = data
            .get("containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| Figures {
                container: c.get("name").and_then(Value::as_str).unwrap_or("").into(),
                cpu: quantity(c, "cpu").and_then(|q| autoscaler::Resource::Cpu.amount(&q)),
                memory: quantity(c, "memory").and_then(|q| autoscaler::Resource::Memory.amount(&q)),
            })
            .collect();
        let timestamp = data
            .get("timestamp")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<Timestamp>().ok())
            .unwrap_or_else(Timestamp::now);
        let window = data
            .get("window")
            .and_then(Value::as_str)
            .and_then(go_duration)
            .unwrap_or(Duration::from_secs(15));
        out.insert(
            m.metadata.name.clone().unwrap_or_default(),
            Usage {
                containers,
                timestamp,
                window,
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(go_duration("15s"), Some(Duration::from_secs(15)));
        assert_eq!(go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(go_duration("1m0s"), Some(Duration::from_secs(60)));
        assert_eq!(go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(go_duration("x"), None);
    }
}
