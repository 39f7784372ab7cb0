//! Leader election on a Lease (coordination.k8s.io/v1), as kube-controller-manager does it:
//! the holder renews the lease well inside its duration; another candidate takes it only once
//! it has expired, and every write is a compare-and-swap on resourceVersion, so two servers on
//! one store never both lead.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::Api;
use tokio::sync::watch;

pub struct LeaderElection {
    pub api: Api<Lease>,
    pub lease_name: String,
    pub identity: String,
    /// How long a lease is valid without renewal (Kubernetes: 15 s).
    pub lease_duration: Duration,
    /// How often the holder renews and candidates retry (Kubernetes: 2 s).
    pub retry: Duration,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl LeaderElection {
    /// Try to acquire or renew once; Ok(true) while we hold the lease.
    pub async fn try_acquire_or_renew(&self) -> anyhow::Result<bool> {
        let ours = |spec: &LeaseSpec| spec.holder_identity.as_deref() == Some(&self.identity);
        let fresh_spec = |previous: Option<&LeaseSpec>| {
            let keep_acquire = previous
                .filter(|s| ours(s))
                .and_then(|s| s.acquire_time.clone());
            let transitions = previous.and_then(|s| s.lease_transitions).unwrap_or(0);
            LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.lease_duration.as_secs() as i32),
                acquire_time: keep_acquire.clone().or_else(|| Some(now())),
                renew_time: Some(now()),
                lease_transitions: Some(if keep_acquire.is_some() {
                    transitions
                } else {
                    transitions + 1
                }),
                ..Default::default()
            }
        };
        let Some(mut lease) = self.api.get_opt(&self.lease_name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.lease_name.clone()),
                    ..Default::default()
                },
                spec: Some(fresh_spec(None)),
            };
            return Ok(self
                .api
                .create(&PostParams::default(), &lease)
                .await
                .is_ok());
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if !ours(&spec) {
            let duration = spec.lease_duration_seconds.unwrap_or(15) as i64;
            let renewed = spec
                .renew_time
                .as_ref()
                .map(|t| t.0.as_second())
                .unwrap_or(0);
            let expired = now().0.as_second() > renewed + duration;
            if spec
                .holder_identity
                .as_deref()
                .is_some_and(|h| !h.is_empty())
                && !expired
            {
                return Ok(false);
            }
        }
        lease.spec = Some(fresh_spec(Some(&spec)));
        // The replace carries the resourceVersion we read: if someone else wrote in between,
        // it fails with a conflict and we are not the leader this round.
        Ok(self
            .api
            .replace(&self.lease_name, &PostParams::default(), &lease)
            .await
            .is_ok())
    }

    /// Keep electing forever, publishing whether we lead.
    pub async fn run(self, leading: watch::Sender<bool>) {
        loop {
            let lead = self.try_acquire_or_renew().await.unwrap_or(false);
            leading.send_if_modified(|l| std::mem::replace(l, lead) != lead);
            tokio::time::sleep(self.retry).await;
        }
    }
}
