//! yun's control loops: the scheduler, ReplicaSet, Deployment, DaemonSet, StatefulSet, Job and
//! CronJob controllers, the HorizontalPodAutoscaler, disruption budgets, TTL after finished,
//! garbage collection, node lifecycle, endpoints and namespace deletion. Each decision is a pure function of cached
//! objects (desired vs actual → actions), tested on its own; the loops that feed them from the
//! API and carry out their actions sit on top.

pub mod autoscaler;
pub mod cached;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod garbage;
pub mod job;
pub mod loops;
pub mod manager;
pub mod namespace;
pub mod owner;
pub mod replicaset;
pub mod resourcequota;
pub mod revision;
pub mod runtime;
pub mod scheduler;
pub mod selector;
pub mod snapshot;
pub mod statefulset;

#[cfg(test)]
mod cronjob_tests;
#[cfg(test)]
mod daemonset_tests;
#[cfg(test)]
mod job_tests;
#[cfg(test)]
mod rollout_tests;
#[cfg(test)]
mod statefulset_tests;
