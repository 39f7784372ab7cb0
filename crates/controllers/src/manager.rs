//! The controller manager: elect a leader, and while leading run every control loop.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;

use crate::loops;
use crate::runtime::LeaderElection;

/// The Lease the control plane's leader holds (in kube-system, as Kubernetes names it).
pub const LEASE_NAME: &str = "yun-controller-manager";

/// Run the scheduler and the controllers for as long as this process leads; `identity` names
/// this process in the Lease (e.g. "HOST_PID"); `nodes` times the node lifecycle; `root_ca`
/// (PEM) is what every namespace's `kube-root-ca.crt` publishes.
pub async fn run(client: Client, identity: String, nodes: loops::nodes::Timing, root_ca: String) {
    let (tx, mut leading) = watch::channel(false);
    let election = LeaderElection {
        api: Api::<Lease>::namespaced(client.clone(), "kube-system"),
        lease_name: LEASE_NAME.into(),
        identity,
        lease_duration: Duration::from_secs(15),
        retry: Duration::from_secs(2),
    };
    // Children end with this future (aborted when `yun up` stops): nothing keeps calling a
    // server that is going away.
    let _election = AbortOnDropHandle::new(tokio::spawn(election.run(tx)));
    loop {
        if leading.wait_for(|l| *l).await.is_err() {
            return;
        }
        tracing::info!("leading: starting the scheduler and controllers");
        let shared = loops::Shared::start(&client);
        let tasks = [
            tokio::spawn(loops::scheduler::run(client.clone(), shared.clone())),
            tokio::spawn(loops::replicasets::run(client.clone(), 2, shared.clone())),
            tokio::spawn(loops::daemonsets::run(client.clone(), 2, shared.clone())),
            tokio::spawn(loops::statefulsets::run(client.clone(), 2, shared.clone())),
            tokio::spawn(loops::deployments::run(client.clone(), 2, shared.clone())),
            tokio::spawn(loops::jobs::run(client.clone(), 2, shared.clone())),
            tokio::spawn(loops::cronjobs::run(client.clone(), 1, shared.clone())),
            tokio::spawn(loops::ttl_after_finished::run(
                client.clone(),
                shared.clone(),
            )),
            tokio::spawn(loops::endpoints::run(client.clone(), shared.clone())),
            tokio::spawn(loops::disruption::run(client.clone(), shared.clone())),
            tokio::spawn(loops::resourcequotas::run(client.clone(), shared.clone())),
            tokio::spawn(loops::volumes::run(client.clone(), shared.clone())),
            tokio::spawn(loops::snapshots::run(client.clone())),
            tokio::spawn(loops::autoscalers::run(client.clone())),
            tokio::spawn(loops::gc::run(client.clone(), 2)),
            tokio::spawn(loops::namespaces::run(client.clone(), 2)),
            tokio::spawn(loops::serviceaccounts::run(client.clone(), root_ca.clone())),
            tokio::spawn(loops::nodes::run(client.clone(), nodes, shared)),
        ];
        let _ = leading.wait_for(|l| !*l).await;
        tracing::info!("lost the lease: stopping the controllers");
        for t in tasks {
            t.abort();
        }
    }
}
