//! Request options the verbs share: `dryRun` for writes, the list and watch options
//! (`sendInitialEvents`, `resourceVersionMatch`), and the 422 Kubernetes gives bad options.

use crate::error::{ApiError, ApiResult};
use crate::router::Req;

/// `?dryRun=All`: check everything a write would, store nothing. Any other value is refused
/// as Kubernetes refuses it: 422 on the request's options.
pub fn dry_run(req: &Req) -> ApiResult<bool> {
    match req.q("dryRun") {
        None => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(options_invalid(
            req,
            "dryRun",
            "FieldValueNotSupported",
            format!("Unsupported value: {other:?}: supported values: \"All\""),
        )),
    }
}

/// Kubernetes' 422 for bad request options (`PatchOptions.meta.k8s.io "" is invalid: …`).
pub fn options_invalid(req: &Req, field: &str, reason: &'static str, message: String) -> ApiError {
    let kind = match req.method.as_str() {
        "POST" => "CreateOptions",
        "PUT" => "UpdateOptions",
        "DELETE" => "DeleteOptions",
        "GET" => "ListOptions",
        _ => "PatchOptions",
    };
    invalid_options(kind, vec![cause(field, reason, message)])
}

fn cause(field: &str, reason: &'static str, message: String) -> crate::error::Cause {
    crate::error::Cause {
        field: field.into(),
        kind: reason,
        message,
    }
}

fn invalid_options(kind: &str, causes: Vec<crate::error::Cause>) -> ApiError {
    let e = ApiError::invalid(kind, "", "meta.k8s.io", causes);
    let message = e.message.replacen(kind, &format!("{kind}.meta.k8s.io"), 1);
    e.with_message(message)
}

pub const NOT_OLDER_THAN: &str = "NotOlderThan";
pub const EXACT: &str = "Exact";

/// How a watch starts, from its `resourceVersion`, `resourceVersionMatch` and
/// `sendInitialEvents` after kube-apiserver's defaulting.
#[derive(Debug, PartialEq, Eq)]
pub struct WatchStart {
    /// The revision the client named ("" and "0" name none).
    pub resource_version: Option<i64>,
    /// Send the collection's objects first, as ADDED events.
    pub initial_events: bool,
    /// The client asked for the initial events explicitly (watch-list): they end with a
    /// BOOKMARK annotated `k8s.io/initial-events-end` when bookmarks are allowed.
    pub watch_list: bool,
}

/// Check a list's options as kube-apiserver does (`ValidateListOptions`), 422 on a bad mix.
pub fn validate_list(req: &Req) -> ApiResult<()> {
    let rv = req.q("resourceVersion").unwrap_or("");
    let matched = req.q("resourceVersionMatch").unwrap_or("");
    let mut causes = Vec::new();
    if !matched.is_empty() {
        if rv.is_empty() {
            causes.push(forbidden(
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        if req.q("continue").is_some_and(|c| !c.is_empty()) {
            causes.push(forbidden(
                "resourceVersionMatch is forbidden when continue is provided",
            ));
        }
        if matched != EXACT && matched != NOT_OLDER_THAN {
            causes.push(not_supported(matched, &[EXACT, NOT_OLDER_THAN, ""]));
        }
        if matched == EXACT && rv == "0" {
            causes.push(forbidden(
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            ));
        }
    }
    if req.q("sendInitialEvents").is_some() {
        causes.push(cause(
            "sendInitialEvents",
            "FieldValueForbidden",
            "Forbidden: sendInitialEvents is forbidden for list".into(),
        ));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid_options("ListOptions", causes))
    }
}

/// A watch's start, or kube-apiserver's 422 for a bad mix of options. As on Kubernetes
/// with WatchList on, a watch from no revision (or "0") that says nothing of initial events
/// gets them.
pub fn watch_start(req: &Req) -> ApiResult<WatchStart> {
    let rv = req.q("resourceVersion").unwrap_or("");
    let matched = req.q("resourceVersionMatch").unwrap_or("");
    let send = match req.q("sendInitialEvents") {
        None => None,
        Some(v) => Some(parse_bool(v).ok_or_else(|| {
            ApiError::bad_request(format!("invalid sendInitialEvents {v:?}: not a boolean"))
        })?),
    };
    let mut causes = Vec::new();
    if send.is_some() && matched != NOT_OLDER_THAN {
        causes.push(forbidden(
            "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ));
    }
    if !matched.is_empty() {
        if send.is_none() {
            causes.push(forbidden(
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        if matched != NOT_OLDER_THAN {
            causes.push(not_supported(matched, &[NOT_OLDER_THAN]));
        }
        if req.q("continue").is_some_and(|c| !c.is_empty()) {
            causes.push(forbidden(
                "resourceVersionMatch is forbidden when continue is provided",
            ));
        }
    }
    if !causes.is_empty() {
        return Err(invalid_options("ListOptions", causes));
    }
    let resource_version = match rv {
        "" | "0" => None,
        rv => Some(
            rv.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    Ok(WatchStart {
        resource_version,
        initial_events: send.unwrap_or(resource_version.is_none()),
        watch_list: send == Some(true),
    })
}

/// Go's `strconv.ParseBool`, which query parameters go through on Kubernetes.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn forbidden(detail: &str) -> crate::error::Cause {
    cause(
        "resourceVersionMatch",
        "FieldValueForbidden",
        format!("Forbidden: {detail}"),
    )
}

fn not_supported(value: &str, supported: &[&str]) -> crate::error::Cause {
    let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
    cause(
        "resourceVersionMatch",
        "FieldValueNotSupported",
        format!(
            "Unsupported value: {value:?}: supported values: {}",
            list.join(", ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dry_run_accepts_all_only() {
        let req = |v: &str| Req::for_test(&[("dryRun", v)], &[]);
        assert!(!dry_run(&Req::for_test(&[], &[])).unwrap());
        assert!(dry_run(&req("All")).unwrap());
        // Any value used to mean a dry run; Kubernetes refuses all but All.
        let e = dry_run(&req("true")).unwrap_err();
        assert_eq!((e.code, e.reason), (422, "Invalid"));
        assert!(
            e.message.ends_with(
                r#"is invalid: dryRun: Unsupported value: "true": supported values: "All""#
            ),
            "{}",
            e.message
        );
    }

    fn errs(q: &[(&str, &str)], watch: bool) -> String {
        let req = Req::for_test(q, &[]);
        let e = if watch {
            watch_start(&req).unwrap_err()
        } else {
            validate_list(&req).unwrap_err()
        };
        assert_eq!((e.code, e.reason), (422, "Invalid"), "{}", e.message);
        e.message
    }

    #[test]
    fn watch_options_default_and_validate_as_kube_does() {
        let start = |q: &[(&str, &str)]| watch_start(&Req::for_test(q, &[])).unwrap();
        // A legacy watch from nothing gets the current objects, no end bookmark.
        assert_eq!(
            start(&[]),
            WatchStart {
                resource_version: None,
                initial_events: true,
                watch_list: false
            }
        );
        assert!(!start(&[("resourceVersion", "7")]).initial_events);
        let list = start(&[
            ("sendInitialEvents", "true"),
            ("resourceVersionMatch", "NotOlderThan"),
            ("resourceVersion", "7"),
        ]);
        assert_eq!(list.resource_version, Some(7));
        assert!(list.initial_events && list.watch_list);
        let none = start(&[
            ("sendInitialEvents", "false"),
            ("resourceVersionMatch", "NotOlderThan"),
        ]);
        assert!(!none.initial_events && !none.watch_list);
        assert_eq!(
            errs(&[("sendInitialEvents", "true")], true),
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
        );
        assert_eq!(
            errs(&[("resourceVersionMatch", "NotOlderThan")], true),
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"
        );
        assert_eq!(
            errs(&[("sendInitialEvents", "true"), ("resourceVersionMatch", "Exact")], true),
            "ListOptions.meta.k8s.io \"\" is invalid: [resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan, resourceVersionMatch: Unsupported value: \"Exact\": supported values: \"NotOlderThan\"]"
        );
    }

    #[test]
    fn list_options_validate_as_kube_does() {
        let ok = |q: &[(&str, &str)]| validate_list(&Req::for_test(q, &[])).is_ok();
        assert!(ok(&[]));
        assert!(ok(&[
            ("resourceVersion", "5"),
            ("resourceVersionMatch", "Exact")
        ]));
        assert!(ok(&[
            ("resourceVersion", "0"),
            ("resourceVersionMatch", "NotOlderThan")
        ]));
        assert!(errs(&[("sendInitialEvents", "true")], false)
            .ends_with("sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list"));
        assert!(errs(&[("resourceVersionMatch", "Exact")], false).ends_with(
            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"
        ));
        assert!(errs(
            &[("resourceVersion", "0"), ("resourceVersionMatch", "Exact")],
            false
        )
        .ends_with("forbidden for resourceVersion \"0\""));
        assert!(errs(
            &[("resourceVersion", "3"), ("resourceVersionMatch", "Newest")],
            false
        )
        .contains("Unsupported value: \"Newest\""));
    }
}
