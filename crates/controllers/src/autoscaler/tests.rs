use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::json;

use super::*;

fn now() -> Timestamp {
    "2026-01-01T12:00:00Z".parse().unwrap()
}

fn ago(secs: i64) -> Timestamp {
    now() - SignedDuration::from_secs(secs)
}

/// A running pod, ready for 10 minutes, requesting 100m CPU and 100Mi.
fn pod(name: &str) -> PodState {
    PodState {
        name: name.into(),
        phase: "Running".into(),
        deleting: false,
        ready: Some((true, ago(600))),
        started: Some(ago(700)),
        requests: vec![Figures {
            container: "c".into(),
            cpu: Some(100),
            memory: Some(100 << 20),
        }],
    }
}

fn sample(cpu: i64) -> Usage {
    Usage {
        containers: vec![Figures {
            container: "c".into(),
            cpu: Some(cpu),
            memory: Some(50 << 20),
        }],
        timestamp: ago(5),
        window: Duration::from_secs(15),
    }
}

/// `n` pods each using `cpu` millicores.
fn fleet(n: usize, cpu: i64) -> (Vec<PodState>, BTreeMap<String, Usage>) {
    let pods: Vec<PodState> = (0..n).map(|i| pod(&format!("p{i}"))).collect();
    let usage = pods.iter().map(|p| (p.name.clone(), sample(cpu))).collect();
    (pods, usage)
}

fn hpa(spec: serde_json::Value) -> HorizontalPodAutoscaler {
    let mut base = json!({"metadata": {"name": "web", "namespace": "default", "generation": 1},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1, "maxReplicas": 10,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 50}}}]}});
    for (k, v) in spec.as_object().unwrap() {
        base["spec"][k] = v.clone();
    }
    serde_json::from_value(base).unwrap()
}

fn cpu(
    target: Target,
    current: i32,
    pods: &[PodState],
    usage: &BTreeMap<String, Usage>,
) -> Result<i32, String> {
    replicas::propose(Resource::Cpu, None, target, current, pods, usage, now()).map(|p| p.replicas)
}

fn condition(p: &Plan, t: &str) -> (String, String) {
    let c = p
        .status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == t)
        .unwrap();
    (c.status.clone(), c.reason.clone().unwrap())
}

#[test]
fn utilization_scales_proportionally_outside_the_tolerance() {
    let (pods, usage) = fleet(2, 100);
    // 100% of request against 50%: twice the pods.
    assert_eq!(cpu(Target::Utilization(50), 2, &pods, &usage), Ok(4));
    // 54% is within 10% of 50%: no change.
    let (pods, usage) = fleet(2, 54);
    assert_eq!(cpu(Target::Utilization(50), 2, &pods, &usage), Ok(2));
    // 56% is not.
    let (pods, usage) = fleet(2, 56);
    assert_eq!(cpu(Target::Utilization(50), 2, &pods, &usage), Ok(3));
    // Idle: down to one.
    let (pods, usage) = fleet(3, 1);
    assert_eq!(cpu(Target::Utilization(50), 3, &pods, &usage), Ok(1));
    let p = replicas::propose(
        Resource::Cpu,
        None,
        Target::Utilization(50),
        2,
        &pods,
        &usage,
        now(),
    );
    assert_eq!(p.unwrap().utilization, Some(1));
}

#[test]
fn average_value_targets_divide_the_mean() {
    let (pods, usage) = fleet(2, 300);
    assert_eq!(cpu(Target::AverageValue(100), 2, &pods, &usage), Ok(6));
    let p = replicas::propose(
        Resource::Memory,
        None,
        Target::AverageValue(25 << 20),
        2,
        &pods,
        &usage,
        now(),
    )
    .unwrap();
    assert_eq!((p.replicas, p.utilization, p.average), (4, None, 50 << 20));
}

#[test]
fn missing_and_unready_pods_damp_the_change() {
    // Two busy pods and one without a sample: on a scale-up it counts as idle.
    let (mut pods, usage) = fleet(2, 100);
    pods.push(pod("new"));
    assert_eq!(cpu(Target::Utilization(50), 3, &pods, &usage), Ok(4));
    // Two idle pods and one without a sample: on a scale-down it counts as at its request.
    let (mut pods, usage) = fleet(2, 10);
    pods.push(pod("new"));
    assert_eq!(cpu(Target::Utilization(50), 3, &pods, &usage), Ok(3));
    // A pod that just became ready has its CPU sample left out on a scale-up (counted as 0).
    let (mut pods, mut usage) = fleet(2, 100);
    let mut young = pod("young");
    young.started = Some(ago(20));
    young.ready = Some((true, ago(2)));
    pods.push(young);
    usage.insert("young".into(), sample(1000));
    assert_eq!(cpu(Target::Utilization(50), 3, &pods, &usage), Ok(4));
    // Pending and deleted pods are left out entirely.
    let (mut pods, usage) = fleet(2, 100);
    let mut pending = pod("pending");
    pending.phase = "Pending".into();
    let mut gone = pod("gone");
    gone.deleting = true;
    pods.extend([pending, gone]);
    assert_eq!(cpu(Target::Utilization(50), 2, &pods, &usage), Ok(4));
}

#[test]
fn missing_metrics_and_requests_are_errors() {
    let (pods, _) = fleet(2, 100);
    let e = cpu(Target::Utilization(50), 2, &pods, &BTreeMap::new()).unwrap_err();
    assert!(
        e.contains("no metrics returned from resource metrics API"),
        "{e}"
    );
    let (mut pods, usage) = fleet(2, 100);
    pods[0].requests[0].cpu = None;
    let e = cpu(Target::Utilization(50), 2, &pods, &usage).unwrap_err();
    assert_eq!(e, "missing request for cpu in container c of Pod p0");
    // Without requests, an average value still works.
    assert_eq!(cpu(Target::AverageValue(50), 2, &pods, &usage), Ok(4));

    let (pods, usage) = fleet(2, 100);
    let plan = plan(
        &hpa(json!({})),
        Scale {
            replicas: 2,
            selector: true,
        },
        &pods,
        &BTreeMap::new(),
        &mut History::default(),
        now(),
        Instant::now(),
    );
    assert!(!plan.rescale);
    assert_eq!(
        condition(&plan, "ScalingActive"),
        ("False".into(), "FailedGetResourceMetric".into())
    );
    assert_eq!(plan.warnings[1].0, "FailedComputeMetricsReplicas");
    drop(usage);
}

#[test]
fn plans_clamp_to_min_and_max() {
    let (pods, usage) = fleet(2, 1000);
    let mut h = History::default();
    let p = plan(
        &hpa(json!({"maxReplicas": 3})),
        Scale {
            replicas: 2,
            selector: true,
        },
        &pods,
        &usage,
        &mut h,
        now(),
        Instant::now(),
    );
    assert_eq!((p.desired, p.rescale), (3, true));
    assert_eq!(
        condition(&p, "ScalingLimited"),
        ("True".into(), "TooManyReplicas".into())
    );
    assert_eq!(
        condition(&p, "AbleToScale"),
        ("True".into(), "SucceededRescale".into())
    );
    assert_eq!(
        p.reason,
        "cpu resource utilization (percentage of request) above target"
    );
    let m = &p.status.current_metrics.as_ref().unwrap()[0];
    assert_eq!(
        m.resource.as_ref().unwrap().current.average_utilization,
        Some(1000)
    );
    assert_eq!(
        m.resource
            .as_ref()
            .unwrap()
            .current
            .average_value
            .as_ref()
            .unwrap()
            .0,
        "1"
    );
    // Above max without looking at metrics.
    let p = plan(
        &hpa(json!({"maxReplicas": 3})),
        Scale {
            replicas: 5,
            selector: true,
        },
        &pods,
        &usage,
        &mut h,
        now(),
        Instant::now(),
    );
    assert_eq!(
        (p.desired, p.reason.as_str()),
        (3, "Current number of replicas above Spec.MaxReplicas")
    );
    // Below min needs no selector; within range it does.
    let none = Scale {
        replicas: 0,
        selector: false,
    };
    let p = plan(
        &hpa(json!({"minReplicas": 2})),
        Scale {
            replicas: 1,
            ..none
        },
        &pods,
        &usage,
        &mut h,
        now(),
        Instant::now(),
    );
    assert_eq!(
        (p.desired, p.reason.as_str()),
        (2, "Current number of replicas below Spec.MinReplicas")
    );
    let p = plan(
        &hpa(json!({})),
        Scale {
            replicas: 2,
            ..none
        },
        &pods,
        &usage,
        &mut h,
        now(),
        Instant::now(),
    );
    assert!(!p.rescale);
    assert_eq!(
        condition(&p, "ScalingActive"),
        ("False".into(), "InvalidSelector".into())
    );
    // A target scaled to zero is left alone.
    let p = plan(
        &hpa(json!({})),
        Scale {
            replicas: 0,
            selector: true,
        },
        &pods,
        &usage,
        &mut h,
        now(),
        Instant::now(),
    );
    assert_eq!((p.desired, p.rescale), (0, false));
    assert_eq!(
        condition(&p, "ScalingActive"),
        ("False".into(), "ScalingDisabled".into())
    );
}

#[test]
fn default_behavior_limits_scale_up_rate_and_waits_to_scale_down() {
    let t0 = Instant::now();
    let mut h = History::default();
    let (pods, usage) = fleet(1, 10_000);
    // From 1: at most max(1 + 4, 2 * 1) = 5 within 15 s.
    let p = plan(
        &hpa(json!({"maxReplicas": 50})),
        Scale {
            replicas: 1,
            selector: true,
        },
        &pods,
        &usage,
        &mut h,
        now(),
        t0,
    );
    assert_eq!(p.desired, 5);
    assert_eq!(
        condition(&p, "ScalingLimited"),
        ("True".into(), "ScaleUpLimit".into())
    );
    let b = Behavior::of(None);
    h.scaled(&b, 1, 5, t0);
    // Within the same period no more room: the start of the period was 1.
    let (pods, usage) = fleet(5, 10_000);
    let p = plan(
        &hpa(json!({"maxReplicas": 50})),
        Scale {
            replicas: 5,
            selector: true,
        },
        &pods,
        &usage,
        &mut h,
        now(),
        t0 + Duration::from_secs(5),
    );
    assert_eq!(p.desired, 5);
    // After the period: doubling (10) beats +4 (9).
    let p = plan(
        &hpa(json!({"maxReplicas": 50})),
        Scale {
            replicas: 5,
            selector: true,
        },
        &pods,
        &usage,
        &mut h,
        now(),
        t0 + Duration::from_secs(16),
    );
    assert_eq!(p.desired, 10);
    // Idle now: the default scale-down window keeps the highest recommendation of 5 minutes.
    let (pods, usage) = fleet(10, 1);
    let p = plan(
        &hpa(json!({"maxReplicas": 50})),
        Scale {
            replicas: 10,
            selector: true,
        },
        &pods,
        &usage,
        &mut h,
        now(),
        t0 + Duration::from_secs(60),
    );
    assert_eq!(p.desired, 10);
    assert_eq!(
        condition(&p, "AbleToScale"),
        ("True".into(), "ScaleDownStabilized".into())
    );
    let p = plan(
        &hpa(json!({"maxReplicas": 50})),
        Scale {
            replicas: 10,
            selector: true,
        },
        &pods,
        &usage,
        &mut h,
        now(),
        t0 + Duration::from_secs(400),
    );
    assert_eq!(p.desired, 1);
    assert_eq!(p.reason, "All metrics below target");
}

#[test]
fn policies_and_select_policy() {
    let t0 = Instant::now();
    let (pods, usage) = fleet(10, 1);
    let down = |select: &str| {
        hpa(
            json!({"behavior": {"scaleDown": {"stabilizationWindowSeconds": 0, "selectPolicy": select,
            "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60},
                         {"type": "Percent", "value": 50, "periodSeconds": 60}]}}}),
        )
    };
    // Max: the bigger change (50% of 10 = 5 down), Min: the smaller (2 down).
    let p = plan(
        &down("Max"),
        Scale {
            replicas: 10,
            selector: true,
        },
        &pods,
        &usage,
        &mut History::default(),
        now(),
        t0,
    );
    assert_eq!(p.desired, 5);
    assert_eq!(
        condition(&p, "ScalingLimited"),
        ("True".into(), "ScaleDownLimit".into())
    );
    let mut h = History::default();
    let p = plan(
        &down("Min"),
        Scale {
            replicas: 10,
            selector: true,
        },
        &pods,
        &usage,
        &mut h,
        now(),
        t0,
    );
    assert_eq!(p.desired, 8);
    // Within the period, the 2 already removed count: 8 stays.
    h.scaled(
        &Behavior::of(down("Min").spec.unwrap().behavior.as_ref()),
        10,
        8,
        t0,
    );
    let (pods8, usage8) = fleet(8, 1);
    let p = plan(
        &down("Min"),
        Scale {
            replicas: 8,
            selector: true,
        },
        &pods8,
        &usage8,
        &mut h,
        now(),
        t0 + Duration::from_secs(30),
    );
    assert_eq!(p.desired, 8);
    // Disabled: never down.
    let p = plan(
        &down("Disabled"),
        Scale {
            replicas: 10,
            selector: true,
        },
        &pods,
        &usage,
        &mut History::default(),
        now(),
        t0,
    );
    assert_eq!((p.desired, p.rescale), (10, false));
}

#[test]
fn scale_up_window_takes_the_lowest_recent_recommendation() {
    let t0 = Instant::now();
    let spec = json!({"behavior": {"scaleUp": {"stabilizationWindowSeconds": 60,
        "policies": [{"type": "Pods", "value": 100, "periodSeconds": 15}]}}});
    let mut h = History::default();
    let (pods, usage) = fleet(2, 100);
    // The first recommendation is the current count (2): the window holds the scale-up.
    let p = plan(
        &hpa(spec.clone()),
        Scale {
            replicas: 2,
            selector: true,
        },
        &pods,
        &usage,
        &mut h,
        now(),
        t0,
    );
    assert_eq!(p.desired, 2);
    assert_eq!(
        condition(&p, "AbleToScale"),
        ("True".into(), "ScaleUpStabilized".into())
    );
    let p = plan(
        &hpa(spec),
        Scale {
            replicas: 2,
            selector: true,
        },
        &pods,
        &usage,
        &mut h,
        now(),
        t0 + Duration::from_secs(61),
    );
    assert_eq!(p.desired, 4);
}

#[test]
fn quantities_read_like_kube() {
    assert_eq!(Resource::Cpu.quantity(250), "250m");
    assert_eq!(Resource::Cpu.quantity(2000), "2");
    assert_eq!(Resource::Memory.quantity(10485760), "10485760");
    assert_eq!(Resource::Memory.quantity(64_000_000), "64M");
    assert_eq!(Resource::Cpu.amount("12345678n"), Some(13));
}
