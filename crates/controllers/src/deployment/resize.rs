//! A Deployment resized (`kubectl scale deploy`) rather than given a new template: how its
//! live ReplicaSets share the new count, as kube-controller-manager's `scale` does.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};

use super::{annotation_i32, spec_replicas, DESIRED_REPLICAS, MAX_REPLICAS};

/// The answer to a scaling event (`kubectl scale deploy`), as Kubernetes gives it: `None` when
/// the Deployment was not resized since its live ReplicaSets were sized, else the ReplicaSets
/// to scale. One live ReplicaSet (or none: the template's own) takes the whole count; a
/// fully available new ReplicaSet lets the old ones go; during a rolling update every live
/// ReplicaSet gets its share of the change, so a bad new version is not handed all of it and a
/// smaller Deployment stays within maxSurge.
pub(super) fn resize(
    d: &Deployment,
    owned: &[ReplicaSet],
    new_name: &str,
    replicas: i32,
    surge: i32,
    recreate: bool,
) -> Option<Vec<(String, i32)>> {
    let mut active: Vec<&ReplicaSet> = owned.iter().filter(|rs| spec_replicas(rs) > 0).collect();
    // ReplicaSets never sized by this controller carry no annotation: no event then.
    let resized = active
        .iter()
        .any(|rs| annotation_i32(rs, DESIRED_REPLICAS).is_some_and(|n| n != replicas));
    if !resized {
        return None;
    }
    let name = |rs: &ReplicaSet| rs.metadata.name.clone().unwrap_or_default();
    let new = owned.iter().find(|rs| name(rs) == new_name);
    // Sized for this Deployment size already (the annotations are how the event ends).
    let stale = |rs: &ReplicaSet, size: i32| {
        spec_replicas(rs) != size
            || annotation_i32(rs, DESIRED_REPLICAS) != Some(replicas)
            || annotation_i32(rs, MAX_REPLICAS) != Some(replicas + surge)
    };
    if active.len() <= 1 {
        let target = active.first().copied().or(new)?;
        return Some(if stale(target, replicas) {
            vec![(name(target), replicas)]
        } else {
            Vec::new()
        });
    }
    if let Some(new) = new {
        let available = new.status.as_ref().and_then(|s| s.available_replicas);
        if annotation_i32(new, DESIRED_REPLICAS) == Some(replicas)
            && spec_replicas(new) == replicas
            && available == Some(replicas)
        {
            return Some(
                active
                    .iter()
                    .filter(|rs| name(rs) != new_name)
                    .map(|rs| (name(rs), 0))
                    .collect(),
            );
        }
    }
    if recreate {
        // Recreate has one live ReplicaSet but for a moment; its own path handles that.
        return None;
    }
    let total: i32 = active.iter().map(|rs| spec_replicas(rs)).sum();
    let allowed = if replicas > 0 { replicas + surge } else { 0 };
    let to_add = allowed - total;
    // Biggest first; on a tie the newer one grows first and the older one shrinks first.
    let age = |rs: &ReplicaSet| (rs.metadata.creation_timestamp.clone(), name(rs));
    active.sort_by(|a, b| {
        spec_replicas(b).cmp(&spec_replicas(a)).then_with(|| {
            if to_add > 0 {
                age(b).cmp(&age(a))
            } else {
                age(a).cmp(&age(b))
            }
        })
    });
    let previous_total = d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let mut added = 0;
    let mut sizes: Vec<i32> = Vec::new();
    for rs in &active {
        let size = spec_replicas(rs);
        let share = if to_add == 0 || to_add == added {
            0
        } else {
            let fraction = if replicas == 0 {
                -size
            } else {
                // Its size as a part of the Deployment it was sized for, applied to the new one.
                let base = annotation_i32(rs, MAX_REPLICAS).unwrap_or(previous_total);
                if base > 0 {
                    (f64::from(size) * f64::from(allowed) / f64::from(base)).round() as i32 - size
                } else {
                    0
                }
            };
            let left = to_add - added;
            if to_add > 0 {
                fraction.min(left)
            } else {
                fraction.max(left)
            }
        };
        added += share;
        sizes.push(size + share);
    }
    // What rounding left over goes to (or comes from) the biggest.
    sizes[0] = (sizes[0] + to_add - added).max(0);
    Some(
        active
            .iter()
            .zip(sizes)
            .filter(|(rs, size)| stale(rs, *size))
            .map(|(rs, size)| (name(rs), size))
            .collect(),
    )
}
