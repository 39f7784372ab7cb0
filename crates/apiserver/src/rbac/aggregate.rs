//! ClusterRole aggregation (kube's clusterrole-aggregation controller): a ClusterRole with an
//! `aggregationRule` gets the rules of every ClusterRole its label selectors pick, kept up to
//! date as those change. It runs inside the API server, off the same watch that feeds the
//! authorizer, rather than in the controller manager: the default `admin`/`edit`/`view` roles
//! are empty until aggregated, and a server run without a controller manager (`yun server`)
//! must still hand out working roles.

use serde_json::Value;
use yun_store::Store;

use super::{rules::Rule, Authorizer, PREFIX};
use crate::selectors::{label_selector_string, Selector};

/// The rules each aggregated ClusterRole should have, where they differ from what it has.
fn wanted(auth: &Authorizer) -> Vec<(String, Vec<Value>)> {
    let idx = auth.read();
    let roles: Vec<&Value> = idx
        .objects()
        .filter(|(k, _)| k.starts_with(&format!("{PREFIX}clusterroles/")))
        .map(|(_, v)| v)
        .collect();
    let mut out = Vec::new();
    for agg in &roles {
        let Some(selectors) = agg
            .pointer("/aggregationRule/clusterRoleSelectors")
            .and_then(Value::as_array)
        else {
            continue;
        };
        let name = agg
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let selectors: Vec<Selector> = selectors
            .iter()
            .filter_map(|s| Selector::parse(Some(&label_selector_string(s)), None).ok())
            .collect();
        let mut sources: Vec<&&Value> = roles
            .iter()
            .filter(|r| r.pointer("/metadata/name").and_then(Value::as_str) != Some(name))
            .filter(|r| selectors.iter().any(|s| !s.is_empty() && s.matches(r)))
            .collect();
        // Stable order, so an unchanged set of sources writes nothing.
        sources.sort_by_key(|r| {
            r.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
        });
        let mut rules: Vec<Value> = Vec::new();
        for r in sources {
            for rule in r
                .get("rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if !rules
                    .iter()
                    .any(|x| Rule::from_json(x) == Rule::from_json(rule))
                {
                    rules.push(rule.clone());
                }
            }
        }
        let have: Vec<Rule> = Rule::all_of(agg);
        let want: Vec<Rule> = rules.iter().map(Rule::from_json).collect();
        if have != want {
            out.push((name.to_string(), rules));
        }
    }
    out
}

/// Write the aggregated rules of every ClusterRole that is behind (a CAS write: a concurrent
/// change comes back through the watch and is reconciled again).
pub async fn reconcile(auth: &Authorizer, store: &dyn Store) {
    for (name, rules) in wanted(auth) {
        let key = format!("{PREFIX}clusterroles/{name}");
        let Ok(Some(kv)) = store.get(&key).await else {
            continue;
        };
        let Ok(mut obj) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        obj["rules"] = Value::Array(rules);
        let Ok(bytes) = crate::rest::encode(&obj) else {
            continue;
        };
        if let Err(e) = store.put(&key, bytes, Some(kv.mod_revision)).await {
            tracing::warn!("aggregating clusterrole {name}: {e}");
        }
    }
}
