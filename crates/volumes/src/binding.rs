//! Which PersistentVolume a claim may bind to, by the rules of kube's binder: the same class
//! (`""` matches only volumes without one), the same volume mode, every access mode the claim
//! asks for, at least the capacity it requests, its selector, and a volume that is free or
//! already promised to this claim. Among those, the smallest wins; a volume promised to the
//! claim wins outright.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::bytes;

/// The class a claim or volume names (`""` when none).
pub fn claim_class(c: &PersistentVolumeClaim) -> &str {
    c.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("")
}

pub fn volume_class(v: &PersistentVolume) -> &str {
    v.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("")
}

/// The storage a claim requests, in bytes.
pub fn requested_bytes(c: &PersistentVolumeClaim) -> Option<u64> {
    c.spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
        .and_then(bytes)
}

/// A volume's capacity, in bytes.
pub fn capacity_bytes(v: &PersistentVolume) -> Option<u64> {
    v.spec
        .as_ref()?
        .capacity
        .as_ref()?
        .get("storage")
        .and_then(bytes)
}

fn claim_mode(c: &PersistentVolumeClaim) -> &str {
    c.spec
        .as_ref()
        .and_then(|s| s.volume_mode.as_deref())
        .unwrap_or("Filesystem")
}

fn volume_mode(v: &PersistentVolume) -> &str {
    v.spec
        .as_ref()
        .and_then(|s| s.volume_mode.as_deref())
        .unwrap_or("Filesystem")
}

fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    for (k, v) in sel.match_labels.iter().flatten() {
        if labels.get(k) != Some(v) {
            return false;
        }
    }
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or(&[]);
        let have = labels.get(&e.key);
        let ok = match e.operator.as_str() {
            "In" => have.is_some_and(|h| values.contains(h)),
            "NotIn" => !have.is_some_and(|h| values.contains(h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Whether `v` is promised to claim `c` (its claimRef names it, by uid when it has one).
pub fn promised_to(v: &PersistentVolume, c: &PersistentVolumeClaim) -> bool {
    let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    r.name == c.metadata.name
        && r.namespace == c.metadata.namespace
        && (r.uid.is_none() || r.uid == c.metadata.uid)
}

/// Why `v` cannot hold claim `c`, None when it can.
pub fn mismatch(c: &PersistentVolumeClaim, v: &PersistentVolume) -> Option<&'static str> {
    let spec = v.spec.as_ref()?;
    if spec.claim_ref.is_some() && !promised_to(v, c) {
        return Some("volume is bound to another claim");
    }
    if v.metadata.deletion_timestamp.is_some() {
        return Some("volume is being deleted");
    }
    let phase = v.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Released" | "Failed")) && !promised_to(v, c) {
        return Some("volume is released");
    }
    if volume_class(v) != claim_class(c) {
        return Some("storage class differs");
    }
    if volume_mode(v) != claim_mode(c) {
        return Some("volume mode differs");
    }
    let wanted = c.spec.as_ref().and_then(|s| s.access_modes.as_deref());
    let offered = spec.access_modes.as_deref().unwrap_or(&[]);
    if !wanted.into_iter().flatten().all(|m| offered.contains(m)) {
        return Some("access modes differ");
    }
    match (requested_bytes(c), capacity_bytes(v)) {
        (Some(want), Some(have)) if have >= want => {}
        _ => return Some("capacity is smaller than requested"),
    }
    if let Some(sel) = c.spec.as_ref().and_then(|s| s.selector.as_ref()) {
        let empty = BTreeMap::new();
        if !selector_matches(sel, v.metadata.labels.as_ref().unwrap_or(&empty)) {
            return Some("labels do not match the claim's selector");
        }
    }
    None
}

/// The volume claim `c` should bind to: one promised to it if it fits, else the smallest
/// free one that fits.
pub fn best_match<'a>(
    c: &PersistentVolumeClaim,
    volumes: impl IntoIterator<Item = &'a PersistentVolume>,
) -> Option<&'a PersistentVolume> {
    let mut best: Option<&PersistentVolume> = None;
    for v in volumes {
        if mismatch(c, v).is_some() {
            continue;
        }
        if promised_to(v, c) {
            return Some(v);
        }
        if best.is_none_or(|b| capacity_bytes(v) < capacity_bytes(b)) {
            best = Some(v);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(v: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(v).unwrap()
    }
    fn volume(v: serde_json::Value) -> PersistentVolume {
        serde_json::from_value(v).unwrap()
    }

    fn pv(name: &str, size: &str, class: &str) -> PersistentVolume {
        volume(
            json!({"metadata": {"name": name, "labels": {"tier": "fast"}},
            "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce", "ReadOnlyMany"],
            "storageClassName": class, "hostPath": {"path": "/tmp/x"}}}),
        )
    }

    #[test]
    fn the_smallest_fitting_volume_of_the_same_class_wins() {
        let c = claim(
            json!({"metadata": {"name": "data", "namespace": "ns", "uid": "u1"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
            "resources": {"requests": {"storage": "1Gi"}}}}),
        );
        let vols = [
            pv("big", "10Gi", ""),
            pv("small", "1Gi", ""),
            pv("tiny", "512Mi", ""),
            pv("other", "1Gi", "fast"),
        ];
        assert_eq!(
            best_match(&c, &vols).unwrap().metadata.name.as_deref(),
            Some("small")
        );
        assert_eq!(
            mismatch(&c, &vols[2]),
            Some("capacity is smaller than requested")
        );
        assert_eq!(mismatch(&c, &vols[3]), Some("storage class differs"));
    }

    #[test]
    fn modes_selectors_and_promises_count() {
        let c = claim(
            json!({"metadata": {"name": "data", "namespace": "ns", "uid": "u1"},
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "",
            "resources": {"requests": {"storage": "1Gi"}}}}),
        );
        assert_eq!(
            mismatch(&c, &pv("a", "1Gi", "")),
            Some("access modes differ")
        );
        let c2 = claim(
            json!({"metadata": {"name": "data", "namespace": "ns", "uid": "u1"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
            "selector": {"matchLabels": {"tier": "slow"}},
            "resources": {"requests": {"storage": "1Gi"}}}}),
        );
        assert_eq!(
            mismatch(&c2, &pv("a", "1Gi", "")),
            Some("labels do not match the claim's selector")
        );
        let mut taken = pv("t", "1Gi", "");
        taken.spec.as_mut().unwrap().claim_ref =
            Some(serde_json::from_value(json!({"name": "other", "namespace": "ns"})).unwrap());
        let c3 = claim(
            json!({"metadata": {"name": "data", "namespace": "ns", "uid": "u1"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
            "resources": {"requests": {"storage": "1Gi"}}}}),
        );
        assert_eq!(
            mismatch(&c3, &taken),
            Some("volume is bound to another claim")
        );
        let mut mine = pv("m", "5Gi", "");
        mine.spec.as_mut().unwrap().claim_ref = Some(
            serde_json::from_value(json!({"name": "data", "namespace": "ns", "uid": "u1"}))
                .unwrap(),
        );
        let vols = [pv("s", "1Gi", ""), mine];
        assert_eq!(
            best_match(&c3, &vols).unwrap().metadata.name.as_deref(),
            Some("m")
        );
    }
}
