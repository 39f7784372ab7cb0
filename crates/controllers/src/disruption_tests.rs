use super::*;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodCondition;
use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use crate::cached::PodStatus;

fn pod(name: &str, owner: Option<&str>, ready: bool) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            labels: Some(BTreeMap::from([("app".into(), "web".into())])),
            owner_references: owner.map(|uid| {
                vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: uid.into(),
                    uid: uid.into(),
                    controller: Some(true),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        spec: None,
        status: Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

fn pdb(min: Option<IntOrString>, max: Option<IntOrString>) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some("b".into()),
            namespace: Some("ns".into()),
            generation: Some(3),
            ..Default::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            min_available: min,
            max_unavailable: max,
            selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

fn pct(s: &str) -> Option<IntOrString> {
    Some(IntOrString::String(s.into()))
}

/// (expected, desired, healthy, allowed) of `pdb` over `pods`, every controller at `replicas`.
fn counts(pdb: &PodDisruptionBudget, pods: &[Pod], replicas: i32) -> (i32, i32, i32, i32) {
    let refs: Vec<&Pod> = pods.iter().collect();
    let d = decide(
        pdb,
        &refs,
        |o| Some((o.uid.clone(), replicas)),
        Timestamp::now(),
    );
    let s = d.status;
    assert_eq!(s.observed_generation, Some(3));
    (
        s.expected_pods,
        s.desired_healthy,
        s.current_healthy,
        s.disruptions_allowed,
    )
}

#[test]
fn percentages_round_up() {
    assert_eq!(scaled(&IntOrString::String("50%".into()), 3), Some(2));
    assert_eq!(scaled(&IntOrString::String("10%".into()), 5), Some(1));
    assert_eq!(scaled(&IntOrString::String("0%".into()), 5), Some(0));
    assert_eq!(scaled(&IntOrString::String("100%".into()), 7), Some(7));
    assert_eq!(scaled(&IntOrString::Int(4), 7), Some(4));
    assert_eq!(scaled(&IntOrString::String("x".into()), 7), None);
}

#[test]
fn min_available_int_counts_the_selected_pods() {
    let pods = [pod("a", Some("rs"), true), pod("b", Some("rs"), true)];
    let b = pdb(Some(IntOrString::Int(1)), None);
    assert_eq!(counts(&b, &pods, 2), (2, 1, 2, 1));
    let not_ready = [pod("a", Some("rs"), true), pod("b", Some("rs"), false)];
    assert_eq!(counts(&b, &not_ready, 2), (2, 1, 1, 0));
}

#[test]
fn percent_and_max_unavailable_use_the_controllers_scale() {
    let pods = [
        pod("a", Some("rs"), true),
        pod("b", Some("rs"), true),
        pod("c", Some("rs"), true),
    ];
    // 50% of 3 rounds up to 2 needed, so 1 may go.
    assert_eq!(counts(&pdb(pct("50%"), None), &pods, 3), (3, 2, 3, 1));
    // maxUnavailable 50% of 3 rounds up to 2 unavailable: 1 needed, 2 may go.
    assert_eq!(counts(&pdb(None, pct("50%")), &pods, 3), (3, 1, 3, 2));
    assert_eq!(
        counts(&pdb(None, Some(IntOrString::Int(1))), &pods, 3),
        (3, 2, 3, 1)
    );
    // The controller wants 5: two missing pods are unavailable already.
    assert_eq!(
        counts(&pdb(None, Some(IntOrString::Int(1))), &pods, 5),
        (5, 4, 3, 0)
    );
    // More unavailable allowed than expected: nothing is needed.
    assert_eq!(
        counts(&pdb(None, Some(IntOrString::Int(9))), &pods, 3),
        (3, 0, 3, 3)
    );
}

#[test]
fn a_pod_without_a_scalable_controller_expects_itself() {
    let pods = [pod("bare", None, true), pod("a", Some("rs"), true)];
    let refs: Vec<&Pod> = pods.iter().collect();
    let b = pdb(None, Some(IntOrString::Int(1)));
    let d = decide(&b, &refs, |_| None, Timestamp::now());
    assert_eq!((d.status.expected_pods, d.status.desired_healthy), (2, 1));
    let d = decide(&b, &refs, |o| Some((o.uid.clone(), 4)), Timestamp::now());
    assert_eq!((d.status.expected_pods, d.status.desired_healthy), (5, 4));
}

#[test]
fn disrupted_and_deleting_pods_are_not_healthy_until_the_entry_expires() {
    let now = Timestamp::now();
    let mut going = pod("c", Some("rs"), true);
    going.metadata.deletion_timestamp = Some(Time(now));
    let pods = [
        pod("a", Some("rs"), true),
        pod("b", Some("rs"), true),
        going,
    ];
    let refs: Vec<&Pod> = pods.iter().collect();
    let mut b = pdb(Some(IntOrString::Int(1)), None);
    let recent = Time(now - Duration::from_secs(30));
    let old = Time(now - Duration::from_secs(200));
    b.status = Some(PodDisruptionBudgetStatus {
        disrupted_pods: Some(BTreeMap::from([
            ("a".into(), recent.clone()),
            ("c".into(), recent.clone()),
            ("gone".into(), recent),
        ])),
        ..Default::default()
    });
    let d = decide(&b, &refs, |o| Some((o.uid.clone(), 3)), now);
    assert_eq!(d.status.current_healthy, 1);
    assert_eq!(d.status.disruptions_allowed, 0);
    let kept: Vec<&String> = d.status.disrupted_pods.as_ref().unwrap().keys().collect();
    assert_eq!(kept, ["a"]);
    let left = d.recheck.unwrap();
    assert!(left > Duration::from_secs(80) && left <= Duration::from_secs(90));
    let cond = &d.status.conditions.as_ref().unwrap()[0];
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("False", "InsufficientPods")
    );
    // Two minutes on, the eviction that never deleted its pod is forgotten.
    b.status.as_mut().unwrap().disrupted_pods = Some(BTreeMap::from([("a".into(), old)]));
    let d = decide(&b, &refs, |o| Some((o.uid.clone(), 3)), now);
    assert_eq!(
        (d.status.current_healthy, d.status.disruptions_allowed),
        (2, 1)
    );
    assert!(d.status.disrupted_pods.is_none() && d.recheck.is_none());
    let cond = &d.status.conditions.as_ref().unwrap()[0];
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("True", "SufficientPods")
    );
}

#[test]
fn selectors_have_policy_v1_meaning() {
    let p = pod("a", None, true);
    let mut b = pdb(None, None);
    assert!(selects(&b, &p));
    b.spec.as_mut().unwrap().selector = Some(LabelSelector::default());
    assert!(selects(&b, &p));
    b.spec.as_mut().unwrap().selector = None;
    assert!(!selects(&b, &p));
    // Neither field: nothing is needed, every healthy pod may go.
    b.spec.as_mut().unwrap().selector = Some(LabelSelector::default());
    assert_eq!(counts(&b, &[p], 1), (0, 0, 1, 1));
}
