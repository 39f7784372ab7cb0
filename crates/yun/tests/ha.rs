//! Two `yun controller-manager`s against one API server: one leads through the Lease
//! kube-system/yun-controller-manager and reconciles, the other waits; when the leader dies the
//! other takes the Lease over and reconciles from then on. Driven by Debian's kubectl 1.20.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

struct Procs {
    children: Vec<Child>,
    data: PathBuf,
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

impl Procs {
    fn kubectl(&self, args: &[&str]) -> Output {
        common::kubectl::run(&self.data.join("kubeconfig"), args)
    }

    fn until(&self, args: &[&str], secs: u64, done: impl Fn(&str) -> bool) -> String {
        common::kubectl::until(&self.data.join("kubeconfig"), args, secs, done)
    }

    fn controller_manager(&self) -> Child {
        Command::new(common::YUN)
            .arg("--data-dir")
            .arg(&self.data)
            .arg("controller-manager")
            .arg("--kubeconfig")
            .arg(self.data.join("kubeconfig"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }
}

fn pods(p: &Procs) -> usize {
    let out = p.kubectl(&["get", "pods", "-l", "app=ha", "-o", "name"]);
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn one_controller_manager_leads_and_another_takes_over() {
    let data = PathBuf::from(format!("/tmp/yun-test-ha-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let addr = format!("127.0.0.1:{}", common::free_port());
    let server = Command::new(common::YUN)
        .arg("--data-dir")
        .arg(&data)
        .args(["server", "--addr", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut p = Procs {
        children: vec![server],
        data,
    };
    common::wait_for_port(&addr, "yun server");
    common::wait_for_file(&p.data.join("kubeconfig"), "yun server");
    let first = p.controller_manager();
    let first_pid = first.id();
    p.children.push(first);
    let lease = [
        "get",
        "lease",
        "-n",
        "kube-system",
        "yun-controller-manager",
        "-o",
    ];
    let holder_of = |p: &Procs| {
        let mut args = lease.to_vec();
        args.push("jsonpath={.spec.holderIdentity}");
        String::from_utf8_lossy(&p.kubectl(&args).stdout).into_owned()
    };
    p.until(
        &[&lease[..], &["jsonpath={.spec.holderIdentity}"]].concat(),
        30,
        |o| o.ends_with(&format!("_{first_pid}")),
    );
    let second = p.controller_manager();
    let second_pid = second.id();
    p.children.push(second);

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
    let mut leader = p.children.remove(1);
    let _ = leader.kill();
    let _ = leader.wait();
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
