//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`) and field selectors
//! (`=`, `==`, `!=` on dotted paths such as `metadata.name`, `spec.nodeName`, `status.phase`).

use serde_json::Value;

use crate::error::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Debug, Clone, PartialEq)]
struct FieldReq {
    path: String,
    value: String,
    equal: bool,
}

/// A parsed `labelSelector` + `fieldSelector` pair; empty matches everything.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
    /// The kind the field labels are read from (see `field_labels::value`).
    kind: String,
}

/// Split on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 316
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

fn bad(sel: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!(
        "unable to parse requirement: {why} in selector {sel:?}"
    ))
}

fn parse_set(sel: &str, rest: &str) -> Result<Vec<String>, ApiError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| bad(sel, "expected a parenthesized value set"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

fn parse_label(sel: &str, part: &str) -> Result<LabelReq, ApiError> {
    let check = |k: &str| -> Result<String, ApiError> {
        if valid_key(k) {
            Ok(k.to_string())
        } else {
            Err(bad(sel, &format!("invalid label key {k:?}")))
        }
    };
    if let Some(k) = part.strip_prefix('!') {
        return Ok(LabelReq::NotExists(check(k.trim())?));
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(LabelReq::Ne(check(k.trim())?, v.trim().to_string()));
    }
    if let Some((k, v)) = part.split_once("==") {
        return Ok(LabelReq::Eq(check(k.trim())?, v.trim().to_string()));
    }
    if let Some((k, v)) = part.split_once('=') {
        return Ok(LabelReq::Eq(check(k.trim())?, v.trim().to_string()));
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let rest = words[1].trim_start();
        if let Some(r) = rest.strip_prefix("notin") {
            return Ok(LabelReq::NotIn(check(words[0])?, parse_set(sel, r)?));
        }
        if let Some(r) = rest.strip_prefix("in") {
            return Ok(LabelReq::In(check(words[0])?, parse_set(sel, r)?));
        }
        return Err(bad(sel, &format!("unknown operator in {part:?}")));
    }
    if let Some(i) = part.find('(') {
        // `env in(a,b)` without a space is accepted too.
        let (head, set) = part.split_at(i);
        if let Some(k) = head.strip_suffix("notin") {
            return Ok(LabelReq::NotIn(check(k.trim())?, parse_set(sel, set)?));
        }
        if let Some(k) = head.strip_suffix("in") {
            return Ok(LabelReq::In(check(k.trim())?, parse_set(sel, set)?));
        }
    }
    Ok(LabelReq::Exists(check(part)?))
}

impl Selector {
    pub fn parse(label: Option<&str>, field: Option<&str>) -> Result<Self, ApiError> {
        let mut s = Selector::default();
        if let Some(l) = label {
            for part in split_top(l) {
                s.labels.push(parse_label(l, part)?);
            }
        }
        if let Some(f) = field {
            for part in split_top(f) {
                let (path, value, equal) = if let Some((k, v)) = part.split_once("!=") {
                    (k, v, false)
                } else if let Some((k, v)) = part.split_once("==") {
                    (k, v, true)
                } else if let Some((k, v)) = part.split_once('=') {
                    (k, v, true)
                } else {
                    return Err(ApiError::bad_request(format!(
                        "invalid field selector {f:?}: {part:?} has no operator"
                    )));
                };
                s.fields.push(FieldReq {
                    path: path.trim().to_string(),
                    value: value.trim().to_string(),
                    equal,
                });
            }
        }
        Ok(s)
    }

    /// A request's selectors for kind `res`: a field label the kind does not have is kube's
    /// 400 (`field label not supported: …`).
    pub fn for_kind(
        res: &crate::resources::Resource,
        label: Option<&str>,
        field: Option<&str>,
    ) -> Result<Self, ApiError> {
        let mut s = Self::parse(label, field)?;
        for f in &s.fields {
            crate::field_labels::check(res, &f.path)?;
        }
        s.kind = res.kind.clone();
        Ok(s)
    }

    /// Matches everything (no label or field requirement).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|r| match r {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelReq::Ne(k, v) => label(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => label(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::NotIn(k, vs) => !label(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        });
        labels_ok
            && self.fields.iter().all(|f| {
                let actual = crate::field_labels::value(&self.kind, obj, &f.path);
                (actual == f.value) == f.equal
            })
    }
}

/// Whether a `LabelSelector` object matches `labels` (an empty selector matches everything;
/// one that does not parse, nothing).
pub fn label_selector_matches(selector: &Value, labels: &Value) -> bool {
    let text = label_selector_string(selector);
    Selector::parse(Some(&text), None)
        .map(|s| s.matches(&serde_json::json!({"metadata": {"labels": labels}})))
        .unwrap_or(false)
}

/// A `LabelSelector` object (matchLabels + matchExpressions) in the query syntax, as Scale's
/// `status.selector` and kubectl's SELECTOR column show it.
pub fn label_selector_string(sel: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e.get("key").and_then(Value::as_str).unwrap_or("");
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                "In" => parts.push(format!("{key} in ({})", values.join(","))),
                "NotIn" => parts.push(format!("{key} notin ({})", values.join(","))),
                "Exists" => parts.push(key.to_string()),
                "DoesNotExist" => parts.push(format!("!{key}")),
                _ => {}
            }
        }
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": {"app": "web", "tier": "fe"}},
               "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    }

    fn m(l: &str, f: &str) -> bool {
        let l = (!l.is_empty()).then_some(l);
        let f = (!f.is_empty()).then_some(f);
        Selector::parse(l, f).unwrap().matches(&pod())
    }

    #[test]
    fn labels() {
        assert!(m("app=web", ""));
        assert!(m("app==web,tier=fe", ""));
        assert!(!m("app!=web", ""));
        assert!(m("app in (web, db)", ""));
        assert!(m("app in(web,db),tier", ""));
        assert!(!m("app notin (web)", ""));
        assert!(m("!missing", ""));
        assert!(!m("!app", ""));
        assert!(Selector::parse(Some("app in web"), None).is_err());
    }

    #[test]
    fn fields() {
        assert!(m("", "metadata.name=a"));
        assert!(m("", "spec.nodeName=n1,status.phase!=Pending"));
        assert!(!m("", "metadata.namespace==other"));
        assert!(Selector::parse(None, Some("metadata.name")).is_err());
    }
}
