//! Two `yun controller-manager`s against one API server: one leads through the Lease
//! kube-system/yun-controller-manager and reconciles, the other waits; when the leader dies the
//! other takes the Lease over and reconciles from then on. Driven by Debian's kubectl 1.20.

mod common;

use std::time::Duration;

use common::plane::Plane;

fn pods(p: &Plane) -> usize {
    let out = p.kubectl(&["get", "pods", "-l", "app=ha", "-o", "name"]);
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn one_controller_manager_leads_and_another_takes_over() {
    let mut p = Plane::server("ha");
    let first_pid = p.controller_manager();
    let lease = [
        "get",
        "lease",
        "-n",
        "kube-system",
        "yun-controller-manager",
        "-o",
    ];
    let holder_of = |p: &Plane| {
        let mut args = lease.to_vec();
        args.push("jsonpath={.spec.holderIdentity}");
        String::from_utf8_lossy(&p.kubectl(&args).stdout).into_owned()
    };
    p.until(
        &[&lease[..], &["jsonpath={.spec.holderIdentity}"]].concat(),
        30,
        |o| o.ends_with(&format!("_{first_pid}")),
    );
    let second_pid = p.controller_manager();

    // Pods fit no node here (there is none): the ReplicaSet still creates exactly its replicas,
    // as one reconciler would.
    let out = p.kubectl(&[
        "create",
        "deployment",
        "ha",
        "--image=busybox",
        "--",
        "sleep",
        "3600",
    ]);
    assert!(out.status.success(), "{out:?}");
    p.kubectl(&["scale", "deployment/ha", "--replicas=3"]);
    p.until(&["get", "pods", "-l", "app=ha", "-o", "name"], 30, |o| {
        o.lines().count() == 3
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(pods(&p), 3, "more pods than replicas: two reconcilers?");
    assert!(holder_of(&p).ends_with(&format!("_{first_pid}")));

    // The leader dies: once its Lease runs out (15 s) the second one leads and reconciles.
    p.kill(first_pid);
    p.until(
        &[&lease[..], &["jsonpath={.spec.holderIdentity}"]].concat(),
        40,
        |o| o.ends_with(&format!("_{second_pid}")),
    );
    p.kubectl(&["scale", "deployment/ha", "--replicas=5"]);
    p.until(&["get", "pods", "-l", "app=ha", "-o", "name"], 30, |o| {
        o.lines().count() == 5
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(pods(&p), 5);
}
