//! What discovery shows of one resource: the registry's kinds with their verbs and
//! subresources, and the kinds that are answered but never stored (the create-only reviews),
//! which the registry does not hold.

use super::{discovered_subresources, verbs, Subresource};
use crate::resources::Resource;

pub struct Listed {
    /// "" for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    /// Member of `kubectl get all`.
    pub in_all: bool,
    pub verbs: Vec<&'static str>,
    pub subresources: Vec<Subresource>,
}

impl Listed {
    pub fn of(r: &Resource) -> Listed {
        Listed {
            group: r.group.clone(),
            version: r.version.clone(),
            kind: r.kind.clone(),
            plural: r.plural.clone(),
            singular: r.singular.clone(),
            namespaced: r.namespaced,
            short_names: r.short_names.clone(),
            in_all: r.in_all,
            verbs: verbs(r),
            subresources: discovered_subresources(r),
        }
    }
}

/// The reviews (`rbac::reviews`, `rest::tokens`): (group, versions, kind, plural). All are
/// cluster-scoped and create-only, as on Kubernetes.
const REVIEWS: &[(&str, &[&str], &str, &str)] = &[
    (
        "authentication.k8s.io",
        &["v1"],
        "TokenReview",
        "tokenreviews",
    ),
    (
        "authentication.k8s.io",
        &["v1", "v1beta1", "v1alpha1"],
        "SelfSubjectReview",
        "selfsubjectreviews",
    ),
    (
        "authorization.k8s.io",
        &["v1"],
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
    ),
    (
        "authorization.k8s.io",
        &["v1"],
        "SelfSubjectRulesReview",
        "selfsubjectrulesreviews",
    ),
    (
        "authorization.k8s.io",
        &["v1"],
        "SubjectAccessReview",
        "subjectaccessreviews",
    ),
];

/// The review kinds, one entry per served version.
pub fn reviews() -> Vec<Listed> {
    let mut out = Vec::new();
    for (group, versions, kind, plural) in REVIEWS {
        for version in *versions {
            out.push(Listed {
                group: group.to_string(),
                version: version.to_string(),
                kind: kind.to_string(),
                plural: plural.to_string(),
                singular: kind.to_ascii_lowercase(),
                namespaced: false,
                short_names: Vec::new(),
                in_all: false,
                verbs: vec!["create"],
                subresources: Vec::new(),
            });
        }
    }
    out
}
