//! Request options every write verb shares: `dryRun` and the 422 Kubernetes gives bad options.

use crate::error::ApiError;
use crate::router::Req;

/// `?dryRun=All`: check everything a write would, store nothing. Any other value is refused
/// as Kubernetes refuses it: 422 on the request's options.
pub fn dry_run(req: &Req) -> crate::error::ApiResult<bool> {
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
        _ => "PatchOptions",
    };
    let cause = crate::error::Cause {
        field: field.into(),
        kind: reason,
        message: message.clone(),
    };
    ApiError::invalid(kind, "", "meta.k8s.io", vec![cause]).with_message(format!(
        "{kind}.meta.k8s.io \"\" is invalid: {field}: {message}"
    ))
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
}
