//! Persistent volumes, below the API: which PersistentVolume a claim may bind to (the
//! binder's matching rules), and the node side of yun's `local-path` class — each volume a
//! file of its own size under the node's data dir, formatted ext4 and mounted through a
//! loop device (Filesystem mode) or handed to the container as the loop device itself
//! (Block mode), so a pod that writes past its request gets ENOSPC instead of filling the
//! node's disk.

pub mod binding;
pub mod local;
pub mod loopdev;

/// The provisioner name of yun's node-local class.
pub const PROVISIONER: &str = "yun.dev/local-path";
/// The class `yun up` creates and marks default.
pub const DEFAULT_CLASS: &str = "local-path";
/// The claim annotation the scheduler sets to the node a WaitForFirstConsumer volume is for.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The claim annotation naming who is to provision it (kube's binder sets it).
pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// The volume annotation naming who provisioned it.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// The claim annotations kube's binder writes once it bound a claim.
pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

/// Bytes as an exact quantity: the largest binary suffix that divides them (`32Mi`, `1536Ki`).
pub fn exact_quantity(bytes: u64) -> String {
    for (shift, suffix) in [
        (60, "Ei"),
        (50, "Pi"),
        (40, "Ti"),
        (30, "Gi"),
        (20, "Mi"),
        (10, "Ki"),
    ] {
        if bytes != 0 && bytes.is_multiple_of(1u64 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// The bytes a quantity stands for (`1Gi`), None when it is not one.
pub fn bytes(q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity) -> Option<u64> {
    let q = yun_quota::Quantity::parse(&q.0)?;
    // Billionths of a byte, rounded up to whole bytes.
    let b = (q.nanos + 999_999_999) / 1_000_000_000;
    u64::try_from(b).ok()
}
