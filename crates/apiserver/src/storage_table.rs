//! `kubectl get` columns of the storage kinds (PersistentVolume, PersistentVolumeClaim,
//! StorageClass), as kube's printers fill them.

use serde_json::{json, Value};

use crate::meta::str_at;
use crate::storage::is_default;

/// The access modes as kubectl abbreviates them (`RWO,ROX`).
fn access_modes(o: &Value, pointer: &str) -> String {
    let short = |m: &str| match m {
        "ReadWriteOnce" => "RWO",
        "ReadOnlyMany" => "ROX",
        "ReadWriteMany" => "RWX",
        "ReadWriteOncePod" => "RWOP",
        _ => "",
    };
    o.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(short)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(",")
}

/// The `kubectl get` columns of the storage kinds, as kube's printers name them.
pub fn table_columns(kind: &str) -> Option<Vec<(&'static str, bool)>> {
    Some(match kind {
        "PersistentVolume" => vec![
            ("Name", false),
            ("Capacity", false),
            ("Access Modes", false),
            ("Reclaim Policy", false),
            ("Status", false),
            ("Claim", false),
            ("StorageClass", false),
            ("VolumeAttributesClass", false),
            ("Reason", false),
            ("Age", false),
            ("VolumeMode", true),
        ],
        "PersistentVolumeClaim" => vec![
            ("Name", false),
            ("Status", false),
            ("Volume", false),
            ("Capacity", false),
            ("Access Modes", false),
            ("StorageClass", false),
            ("VolumeAttributesClass", false),
            ("Age", false),
            ("VolumeMode", true),
        ],
        "StorageClass" => vec![
            ("Name", false),
            ("Provisioner", false),
            ("ReclaimPolicy", false),
            ("VolumeBindingMode", false),
            ("AllowVolumeExpansion", false),
            ("Age", false),
        ],
        _ => return None,
    })
}

/// A storage kind's cell of column `col`, None for the columns every kind shares.
pub fn table_cell(kind: &str, col: &str, o: &Value) -> Option<Value> {
    let s = |p: &str| str_at(o, p).unwrap_or("").to_string();
    let unset = |v: String| {
        if v.is_empty() {
            "<unset>".to_string()
        } else {
            v
        }
    };
    Some(match (kind, col) {
        ("PersistentVolume", "Capacity") => json!(s("/spec/capacity/storage")),
        ("PersistentVolume", "Access Modes") => json!(access_modes(o, "/spec/accessModes")),
        ("PersistentVolume", "Reclaim Policy") => json!(s("/spec/persistentVolumeReclaimPolicy")),
        ("PersistentVolume" | "PersistentVolumeClaim", "Status") => {
            if o.pointer("/metadata/deletionTimestamp").is_some() {
                json!("Terminating")
            } else {
                json!(s("/status/phase"))
            }
        }
        ("PersistentVolume", "Claim") => {
            let name = s("/spec/claimRef/name");
            if name.is_empty() {
                json!("")
            } else {
                json!(format!("{}/{name}", s("/spec/claimRef/namespace")))
            }
        }
        ("PersistentVolume" | "PersistentVolumeClaim", "StorageClass") => {
            json!(s("/spec/storageClassName"))
        }
        ("PersistentVolume" | "PersistentVolumeClaim", "VolumeAttributesClass") => {
            json!(unset(s("/spec/volumeAttributesClassName")))
        }
        ("PersistentVolume", "Reason") => json!(s("/status/reason")),
        ("PersistentVolume" | "PersistentVolumeClaim", "VolumeMode") => {
            json!(s("/spec/volumeMode"))
        }
        ("PersistentVolumeClaim", "Volume") => json!(s("/spec/volumeName")),
        ("PersistentVolumeClaim", "Capacity") => json!(s("/status/capacity/storage")),
        ("PersistentVolumeClaim", "Access Modes") => {
            json!(access_modes(o, "/status/accessModes"))
        }
        ("StorageClass", "Name") => {
            let name = s("/metadata/name");
            if is_default(o) {
                json!(format!("{name} (default)"))
            } else {
                json!(name)
            }
        }
        ("StorageClass", "Provisioner") => json!(s("/provisioner")),
        ("StorageClass", "ReclaimPolicy") => json!(s("/reclaimPolicy")),
        ("StorageClass", "VolumeBindingMode") => json!(s("/volumeBindingMode")),
        ("StorageClass", "AllowVolumeExpansion") => {
            json!(o.get("allowVolumeExpansion").and_then(Value::as_bool) == Some(true))
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::DEFAULT_CLASS_ANNOTATION;

    #[test]
    fn columns_read_like_kubectl() {
        let pv = json!({"metadata": {"name": "pv1"}, "spec": {"capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce", "ReadOnlyMany"], "persistentVolumeReclaimPolicy": "Delete",
            "claimRef": {"namespace": "ns", "name": "data"}, "storageClassName": "local-path"},
            "status": {"phase": "Bound"}});
        assert_eq!(
            table_cell("PersistentVolume", "Access Modes", &pv),
            Some(json!("RWO,ROX"))
        );
        assert_eq!(
            table_cell("PersistentVolume", "Claim", &pv),
            Some(json!("ns/data"))
        );
        assert_eq!(
            table_cell("PersistentVolume", "VolumeAttributesClass", &pv),
            Some(json!("<unset>"))
        );
        let sc = json!({"metadata": {"name": "local-path",
            "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}}, "provisioner": "p"});
        assert_eq!(
            table_cell("StorageClass", "Name", &sc),
            Some(json!("local-path (default)"))
        );
    }
}
