//! The namespace controller's decision: from what one pass over a terminating namespace's
//! content found (what is left of each resource, which finalizers hold it, what failed),
//! the conditions Kubernetes' namespace controller reports and whether the namespace may be
//! finalized.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::NamespaceCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The finalizer in `spec.finalizers` that this controller removes.
pub const FINALIZER: &str = "kubernetes";

/// What one pass over a terminating namespace found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Discovery failed with this error (nothing else was attempted).
    pub discovery_failure: Option<String>,
    /// Listing or deleting some resource failed: one message each.
    pub failures: Vec<String>,
    /// Resource ("pods", "widgets.example.com") → objects still there after the deletes.
    pub remaining: BTreeMap<String, usize>,
    /// Finalizer → objects still there that carry it.
    pub finalizers: BTreeMap<String, usize>,
}

impl Report {
    /// Nothing left and nothing failed: the `kubernetes` finalizer may go.
    pub fn done(&self) -> bool {
        self.discovery_failure.is_none() && self.failures.is_empty() && self.remaining.is_empty()
    }
}

fn condition(ty: &str, holds: bool, reason: &str, message: String) -> NamespaceCondition {
    NamespaceCondition {
        type_: ty.into(),
        status: if holds { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: None,
    }
}

/// The deletion conditions for `report`, with the reasons and messages Kubernetes uses.
/// A condition that did not change keeps its `lastTransitionTime` from `old`; others get `now`.
pub fn conditions(
    report: &Report,
    old: &[NamespaceCondition],
    now: &Time,
) -> Vec<NamespaceCondition> {
    let mut out = Vec::new();
    out.push(match &report.discovery_failure {
        Some(e) => condition(
            "NamespaceDeletionDiscoveryFailure",
            true,
            "DiscoveryFailed",
            format!("Discovery failed for some groups: {e}"),
        ),
        None => condition(
            "NamespaceDeletionDiscoveryFailure",
            false,
            "ResourcesDiscovered",
            "All resources successfully discovered".into(),
        ),
    });
    out.push(condition(
        "NamespaceDeletionGroupVersionParsingFailure",
        false,
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed".into(),
    ));
    out.push(if report.failures.is_empty() {
        condition(
            "NamespaceDeletionContentFailure",
            false,
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization".into(),
        )
    } else {
        condition(
            "NamespaceDeletionContentFailure",
            true,
            "ContentDeletionFailed",
            format!(
                "Failed to delete all resource types, {} remaining: {}",
                report.failures.len(),
                report.failures.join(", ")
            ),
        )
    });
    out.push(if report.remaining.is_empty() {
        condition(
            "NamespaceContentRemaining",
            false,
            "ContentRemoved",
            "All content successfully removed".into(),
        )
    } else {
        let parts: Vec<String> = report
            .remaining
            .iter()
            .map(|(r, n)| format!("{r} has {n} resource instances"))
            .collect();
        condition(
            "NamespaceContentRemaining",
            true,
            "SomeResourcesRemain",
            format!("Some resources are remaining: {}", parts.join(", ")),
        )
    });
    out.push(if report.finalizers.is_empty() {
        condition(
            "NamespaceFinalizersRemaining",
            false,
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished".into(),
        )
    } else {
        let parts: Vec<String> = report
            .finalizers
            .iter()
            .map(|(f, n)| format!("{f} in {n} resource instances"))
            .collect();
        condition(
            "NamespaceFinalizersRemaining",
            true,
            "SomeFinalizersRemain",
            format!(
                "Some content in the namespace has finalizers remaining: {}",
                parts.join(", ")
            ),
        )
    });
    for c in &mut out {
        let same = old.iter().find(|o| o.type_ == c.type_);
        c.last_transition_time = match same {
            Some(o) if o.status == c.status => o.last_transition_time.clone(),
            _ => Some(now.clone()),
        };
    }
    out
}

/// Whether two condition lists say the same (times aside): no status write is needed.
pub fn same_conditions(a: &[NamespaceCondition], b: &[NamespaceCondition]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            (&x.type_, &x.status, &x.reason, &x.message)
                == (&y.type_, &y.status, &y.reason, &y.message)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap())
    }

    fn find<'a>(cs: &'a [NamespaceCondition], ty: &str) -> &'a NamespaceCondition {
        cs.iter().find(|c| c.type_ == ty).expect(ty)
    }

    #[test]
    fn an_empty_namespace_may_be_finalized() {
        let r = Report::default();
        assert!(r.done());
        let cs = conditions(&r, &[], &now());
        assert_eq!(cs.len(), 5);
        assert!(cs.iter().all(|c| c.status == "False"), "{cs:?}");
        assert_eq!(
            find(&cs, "NamespaceContentRemaining").reason.as_deref(),
            Some("ContentRemoved")
        );
    }

    #[test]
    fn remaining_content_and_finalizers_are_named() {
        let mut r = Report::default();
        r.remaining.insert("pods".into(), 2);
        r.remaining.insert("widgets.example.com".into(), 1);
        r.finalizers.insert("example.com/keep".into(), 1);
        assert!(!r.done());
        let cs = conditions(&r, &[], &now());
        let c = find(&cs, "NamespaceContentRemaining");
        assert_eq!(c.status, "True");
        assert_eq!(
            c.message.as_deref(),
            Some("Some resources are remaining: pods has 2 resource instances, widgets.example.com has 1 resource instances")
        );
        let f = find(&cs, "NamespaceFinalizersRemaining");
        assert_eq!(f.reason.as_deref(), Some("SomeFinalizersRemain"));
        assert_eq!(
            f.message.as_deref(),
            Some("Some content in the namespace has finalizers remaining: example.com/keep in 1 resource instances")
        );
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let mut r = Report::default();
        r.remaining.insert("pods".into(), 2);
        let first = conditions(&r, &[], &now());
        let later = Time(k8s_openapi::jiff::Timestamp::from_second(2_000).unwrap());
        r.remaining.insert("pods".into(), 1);
        let second = conditions(&r, &first, &later);
        let c = find(&second, "NamespaceContentRemaining");
        assert_eq!(c.last_transition_time, Some(now()));
        assert!(!same_conditions(&first, &second), "the message changed");
        r.remaining.clear();
        let third = conditions(&r, &second, &later);
        assert_eq!(
            find(&third, "NamespaceContentRemaining").last_transition_time,
            Some(later)
        );
        assert!(!Report {
            discovery_failure: Some("x".into()),
            ..Report::default()
        }
        .done());
    }
}
