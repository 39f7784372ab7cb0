//! Aggregated discovery (`apidiscovery.k8s.io` v2 and v2beta1): every group, version and
//! resource in one answer, so kubectl ≥1.26 makes two requests (/api, /apis) instead of one
//! per group-version. client-go treats the answer as aggregated only when the response's
//! Content-Type carries the same `g=…;v=…;as=APIGroupDiscoveryList` parameters it asked for.

use axum::response::Response;
use serde_json::{json, Value};

use super::{etagged, served};
use crate::router::Req;
use crate::Api;

/// Which aggregated version the client asked for (first acceptable entry of its Accept).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Wanted {
    V2,
    V2Beta1,
}

impl Wanted {
    fn version(self) -> &'static str {
        match self {
            Wanted::V2 => "v2",
            Wanted::V2Beta1 => "v2beta1",
        }
    }
    fn content_type(self) -> String {
        format!(
            "application/json;g=apidiscovery.k8s.io;v={};as=APIGroupDiscoveryList",
            self.version()
        )
    }
}

/// The aggregated format the Accept header prefers, if any. Entries are taken in order; a
/// plain JSON entry before any aggregated one means the legacy answer. Other media types
/// (protobuf) are skipped, as this server answers discovery in JSON only.
pub fn wanted(req: &Req) -> Option<Wanted> {
    for entry in req.header("accept").split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let base = parts.next().unwrap_or("").to_ascii_lowercase();
        if base != "application/json" {
            continue;
        }
        let (mut g, mut v, mut as_) = ("", "", "");
        for p in parts {
            match p.split_once('=') {
                Some(("g", x)) => g = x,
                Some(("v", x)) => v = x,
                Some(("as", x)) => as_ = x,
                _ => {}
            }
        }
        if g.is_empty() && as_.is_empty() {
            return None;
        }
        if g == "apidiscovery.k8s.io" && as_ == "APIGroupDiscoveryList" {
            match v {
                "v2" => return Some(Wanted::V2),
                "v2beta1" => return Some(Wanted::V2Beta1),
                _ => {}
            }
        }
    }
    None
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

/// The APIGroupDiscoveryList of the core group (`core`) or of all the others.
pub fn document(api: &Api, core: bool) -> Value {
    let items: Vec<Value> = served(api)
        .into_iter()
        .filter(|g| g.name.is_empty() == core)
        .map(|g| {
            let versions: Vec<Value> = g
                .versions
                .iter()
                .map(|(version, resources)| {
                    let rs: Vec<Value> = resources
                        .iter()
                        .map(|r| {
                            let mut v = json!({
                                "resource": r.plural,
                                "responseKind": gvk(&r.group, &r.version, &r.kind),
                                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": r.singular,
                                "verbs": r.verbs,
                            });
                            if !r.short_names.is_empty() {
                                v["shortNames"] = json!(r.short_names);
                            }
                            if r.in_all {
                                v["categories"] = json!(["all"]);
                            }
                            let subs: Vec<Value> = r
                                .subresources
                                .iter()
                                .map(|(name, sg, sv, kind, verbs)| {
                                    json!({"subresource": name,
                                           "responseKind": gvk(sg, sv, kind),
                                           "verbs": verbs})
                                })
                                .collect();
                            if !subs.is_empty() {
                                v["subresources"] = Value::Array(subs);
                            }
                            v
                        })
                        .collect();
                    json!({"version": version, "resources": rs, "freshness": "Current"})
                })
                .collect();
            let mut meta = json!({"creationTimestamp": null});
            if !g.name.is_empty() {
                meta["name"] = g.name.clone().into();
            }
            json!({"metadata": meta, "versions": versions})
        })
        .collect();
    json!({"metadata": {}, "items": items})
}

pub fn respond(api: &Api, req: &Req, wanted: Wanted, core: bool) -> Response {
    let mut doc = document(api, core);
    doc["kind"] = "APIGroupDiscoveryList".into();
    doc["apiVersion"] = format!("apidiscovery.k8s.io/{}", wanted.version()).into();
    let body = serde_json::to_vec(&doc).unwrap_or_default();
    etagged(req, &wanted.content_type(), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_picks_the_first_aggregated_json_entry() {
        let w = |accept: &str| wanted(&Req::for_test(&[], &[("accept", accept)]));
        let v2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
        let beta = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
        assert_eq!(
            w(&format!("{v2},{beta},application/json")),
            Some(Wanted::V2)
        );
        assert_eq!(
            w(&format!("{beta},application/json")),
            Some(Wanted::V2Beta1)
        );
        // Protobuf entries are skipped; a plain JSON entry first means the legacy answer.
        let pb = "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
        assert_eq!(w(&format!("{pb},{v2}")), Some(Wanted::V2));
        assert_eq!(w(&format!("application/json,{v2}")), None);
        assert_eq!(
            w("application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList"),
            None
        );
        assert_eq!(w(""), None);
    }
}
