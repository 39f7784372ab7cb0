//! The token endpoints: `serviceaccounts/token` (TokenRequest), `tokenreviews` and the OIDC
//! discovery documents. Signing and verification live in `auth::serviceaccount`.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::{decode, get_kv, parse_body};
use crate::auth::serviceaccount::{
    self as sa, Claims, Ref, DEFAULT_EXPIRATION, MAX_EXPIRATION, MIN_EXPIRATION,
};
use crate::error::{ApiError, ApiResult, Cause};
use crate::meta::{format_rfc3339, now_rfc3339, str_at};
use crate::router::{Req, Target};
use crate::Api;

const GROUP: &str = "authentication.k8s.io";

fn invalid(field: &str, why: impl Into<String>) -> ApiError {
    ApiError::invalid("TokenRequest", "", GROUP, vec![Cause::invalid(field, why)])
}

/// POST `/api/v1/namespaces/NS/serviceaccounts/NAME/token`.
pub async fn token_request(api: &Arc<Api>, t: &Target, req: &Req) -> ApiResult<Response> {
    let ns = t.ns.clone().unwrap_or_default();
    let mut body = parse_body(req)?;
    let account = decode(&get_kv(api, &t.res, &t.key(), t.name()).await?)?;
    let sa_ref = Ref {
        name: t.name().to_string(),
        uid: str_at(&account, "/metadata/uid").unwrap_or("").to_string(),
    };
    if !body.get("spec").is_some_and(Value::is_object) {
        body["spec"] = json!({});
    }
    let spec = &mut body["spec"];
    let audiences: Vec<String> = spec["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .filter(|a: &Vec<String>| !a.is_empty())
        .unwrap_or_else(|| vec![api.sa_keys.issuer.clone()]);
    let seconds = match &spec["expirationSeconds"] {
        Value::Null => DEFAULT_EXPIRATION,
        v => v
            .as_i64()
            .ok_or_else(|| invalid("spec.expirationSeconds", "must be an integer"))?,
    };
    if seconds < MIN_EXPIRATION {
        return Err(invalid(
            "spec.expirationSeconds",
            format!("{seconds}: may not specify a duration less than 10 minutes"),
        ));
    }
    let seconds = seconds.min(MAX_EXPIRATION);
    let now = sa::now();
    let mut claims = Claims::new(
        &api.sa_keys.issuer,
        &ns,
        sa_ref,
        audiences.clone(),
        now,
        seconds,
    );
    if let Some(bound) = spec.get("boundObjectRef").filter(|b| !b.is_null()) {
        let r = bound_object(api, &ns, bound).await?;
        match bound["kind"].as_str() {
            Some("Pod") => claims.kubernetes.pod = Some(r),
            _ => claims.kubernetes.secret = Some(r),
        }
    }
    let token = api
        .sa_keys
        .sign(&claims)
        .map_err(|e| ApiError::internal(format!("signing the token: {e}")))?;
    spec["audiences"] = json!(audiences);
    spec["expirationSeconds"] = json!(seconds);
    body["apiVersion"] = json!(format!("{GROUP}/v1"));
    body["kind"] = json!("TokenRequest");
    body["metadata"] =
        json!({"name": t.name(), "namespace": ns, "creationTimestamp": now_rfc3339()});
    body["status"] = json!({"token": token, "expirationTimestamp": format_rfc3339(claims.exp)});
    Ok(crate::proto::respond(req.output, 201, &body))
}

/// The Pod or Secret a token is bound to: it must exist in the namespace, with the uid given.
async fn bound_object(api: &Api, ns: &str, bound: &Value) -> ApiResult<Ref> {
    let plural = match bound["kind"].as_str() {
        Some("Pod") => "pods",
        Some("Secret") => "secrets",
        k => {
            return Err(invalid(
                "spec.boundObjectRef.kind",
                format!("{k:?}: supported values: \"Pod\", \"Secret\""),
            ))
        }
    };
    let name = bound["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid("spec.boundObjectRef.name", "Required value"))?;
    let res = api
        .registry
        .find("", "v1", plural)
        .ok_or_else(|| ApiError::internal("no pods or secrets resource"))?;
    let obj = decode(&get_kv(api, &res, &res.key(Some(ns), name), name).await?)?;
    let uid = str_at(&obj, "/metadata/uid").unwrap_or("").to_string();
    if let Some(want) = bound["uid"].as_str().filter(|u| !u.is_empty()) {
        if want != uid {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "the UID in the bound object reference ({want}) does not match the UID in record ({uid}). The object might have been deleted and then recreated"
                ),
            ));
        }
    }
    Ok(Ref {
        name: name.to_string(),
        uid,
    })
}

/// POST `/apis/authentication.k8s.io/v1/tokenreviews`: whether a token authenticates, and as
/// whom (create-only, nothing is stored).
pub async fn token_review(api: &Arc<Api>, req: &Req) -> ApiResult<Response> {
    let mut body = parse_body(req)?;
    let token = str_at(&body, "/spec/token").unwrap_or("").to_string();
    let wanted: Vec<String> = crate::meta::strings_at(&body, "/spec/audiences");
    let audiences = if wanted.is_empty() {
        vec![api.sa_keys.issuer.clone()]
    } else {
        wanted
    };
    let mut status = json!({"authenticated": false, "user": {}});
    if !token.is_empty() && crate::auth::authorized_token(&token, &api.token) {
        status = json!({"authenticated": true, "audiences": audiences,
            "user": {"username": "admin", "groups": ["system:masters", "system:authenticated"]}});
    } else {
        for aud in &audiences {
            if let Some(id) = sa::authenticate_for(api, &token, aud).await {
                let mut extra = json!({"authentication.kubernetes.io/credential-id":
                    [format!("JTI={}", id.claims.jti)]});
                if let Some(p) = &id.claims.kubernetes.pod {
                    extra["authentication.kubernetes.io/pod-name"] = json!([p.name]);
                    extra["authentication.kubernetes.io/pod-uid"] = json!([p.uid]);
                }
                status = json!({"authenticated": true, "audiences": [aud],
                    "user": {"username": id.name, "uid": id.uid, "groups": id.groups,
                             "extra": extra}});
                break;
            }
        }
        if status["authenticated"] == false {
            status["error"] = json!("invalid bearer token");
        }
    }
    body["apiVersion"] = json!(format!("{GROUP}/v1"));
    body["kind"] = json!("TokenReview");
    body["metadata"] = json!({"creationTimestamp": Value::Null});
    body["status"] = status;
    let out = crate::proto::negotiate(req.header("accept"), true)?;
    Ok(crate::proto::respond(out, 201, &body))
}

/// GET `/.well-known/openid-configuration`.
pub fn openid_configuration(api: &Api) -> Response {
    crate::router::json(200, &api.sa_keys.discovery()).into_response()
}

/// GET `/openid/v1/jwks`.
pub fn jwks(api: &Api) -> Response {
    crate::router::bytes_response(
        200,
        "application/jwk-set+json",
        serde_json::to_vec(&api.sa_keys.jwks()).unwrap_or_default(),
    )
}
