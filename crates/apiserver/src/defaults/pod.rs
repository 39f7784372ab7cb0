//! Pod defaulting: what kube-apiserver fills in a pod spec (`SetDefaults_PodSpec` and the
//! defaulters of the types inside it), reusable on any pod template (`template.spec` of a
//! Deployment or ReplicaSet, and later Jobs and the like), plus what only a Pod gets (requests
//! from limits, service links, the service account and priority admission) and its QoS class.

use serde_json::{json, Map, Value};

/// kube's `DefaultTerminationGracePeriodSeconds`.
const GRACE_SECONDS: i64 = 30;
/// 0644: the mode of files in Secret, ConfigMap, downward API and projected volumes.
const VOLUME_FILE_MODE: i64 = 0o644;

/// Insert `value` at `key` unless the object already has a non-null value there.
pub(super) fn fill(obj: &mut Map<String, Value>, key: &str, value: Value) {
    if obj.get(key).is_none_or(Value::is_null) {
        obj.insert(key.into(), value);
    }
}

/// Defaults of a pod spec, as on every pod template: policies, grace period, scheduler, an
/// empty security context, and each container's, probe's, port's and volume's defaults.
pub fn pod_spec(spec: &mut Value) {
    let Some(s) = spec.as_object_mut() else {
        return;
    };
    fill(s, "restartPolicy", json!("Always"));
    fill(s, "dnsPolicy", json!("ClusterFirst"));
    fill(s, "terminationGracePeriodSeconds", json!(GRACE_SECONDS));
    fill(s, "schedulerName", json!("default-scheduler"));
    fill(s, "securityContext", json!({}));
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for c in s
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            container(c);
        }
    }
    for v in s
        .get_mut("volumes")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        volume(v);
    }
}

/// The image pull policy kube defaults to: Always for `:latest` or an image without a tag,
/// IfNotPresent for any other tag or a digest.
pub fn pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    // The tag follows the last ':' after the last '/' (a registry's port comes before it).
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

fn container(c: &mut Value) {
    let Some(m) = c.as_object_mut() else {
        return;
    };
    let image = m.get("image").and_then(Value::as_str).unwrap_or("");
    let policy = pull_policy(image);
    fill(m, "imagePullPolicy", json!(policy));
    fill(m, "terminationMessagePath", json!("/dev/termination-log"));
    fill(m, "terminationMessagePolicy", json!("File"));
    fill(m, "resources", json!({}));
    for p in m
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(p) = p.as_object_mut() {
            fill(p, "protocol", json!("TCP"));
        }
    }
    for probe_key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = m.get_mut(probe_key) {
            probe(p);
        }
    }
    for hook in ["postStart", "preStop"] {
        if let Some(h) = m.get_mut("lifecycle").and_then(|l| l.get_mut(hook)) {
            http_get(h);
        }
    }
    for e in m
        .get_mut("env")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(f) = e
            .pointer_mut("/valueFrom/fieldRef")
            .and_then(Value::as_object_mut)
        {
            fill(f, "apiVersion", json!("v1"));
        }
    }
}

fn probe(p: &mut Value) {
    let Some(m) = p.as_object_mut() else {
        return;
    };
    // Zero means unset here, as in kube (these fields have no meaningful zero).
    for (k, v) in [
        ("timeoutSeconds", 1),
        ("periodSeconds", 10),
        ("successThreshold", 1),
        ("failureThreshold", 3),
    ] {
        if m.get(k).and_then(Value::as_i64).unwrap_or(0) == 0 {
            m.insert(k.into(), json!(v));
        }
    }
    http_get(p);
}

fn http_get(handler: &mut Value) {
    if let Some(h) = handler.get_mut("httpGet").and_then(Value::as_object_mut) {
        if h.get("path")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            h.insert("path".into(), json!("/"));
        }
        fill(h, "scheme", json!("HTTP"));
    }
}

fn volume(v: &mut Value) {
    let Some(m) = v.as_object_mut() else {
        return;
    };
    // A volume that names no source is an emptyDir.
    if m.keys().all(|k| k == "name") {
        m.insert("emptyDir".into(), json!({}));
    }
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(s) = m.get_mut(source).and_then(Value::as_object_mut) {
            fill(s, "defaultMode", json!(VOLUME_FILE_MODE));
        }
    }
    if let Some(h) = m.get_mut("hostPath").and_then(Value::as_object_mut) {
        fill(h, "type", json!(""));
    }
}

/// The defaults only a Pod gets (not a template): requests default to limits, service links
/// are on, host-network ports are host ports, and what kube's ServiceAccount and Priority
/// admission set (the `default` service account, priority 0).
pub fn pod(obj: &mut Value) {
    if !obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"] = json!({});
    }
    let spec = &mut obj["spec"];
    pod_spec(spec);
    let Some(s) = spec.as_object_mut() else {
        return;
    };
    let host_network = s.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    for list in ["containers", "initContainers"] {
        for c in s
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            requests_from_limits(c);
            if host_network {
                let ports = c.get_mut("ports").and_then(Value::as_array_mut);
                for p in ports.into_iter().flatten().filter_map(Value::as_object_mut) {
                    if p.get("hostPort").and_then(Value::as_i64).unwrap_or(0) == 0 {
                        let port = p.get("containerPort").cloned().unwrap_or(json!(0));
                        p.insert("hostPort".into(), port);
                    }
                }
            }
        }
    }
    fill(s, "enableServiceLinks", json!(true));
    // `serviceAccount` is the deprecated name of the same field; kube keeps both in step.
    let account = ["serviceAccountName", "serviceAccount"]
        .iter()
        .find_map(|k| s.get(*k).and_then(Value::as_str).filter(|a| !a.is_empty()))
        .unwrap_or("default")
        .to_string();
    s.insert("serviceAccountName".into(), json!(account));
    s.insert("serviceAccount".into(), json!(account));
    fill(s, "priority", json!(0));
    fill(s, "preemptionPolicy", json!("PreemptLowerPriority"));
}

fn requests_from_limits(c: &mut Value) {
    let Some(limits) = c
        .pointer("/resources/limits")
        .and_then(Value::as_object)
        .cloned()
    else {
        return;
    };
    let resources = &mut c["resources"];
    if !resources.get("requests").is_some_and(Value::is_object) {
        resources["requests"] = json!({});
    }
    if let Some(requests) = resources["requests"].as_object_mut() {
        for (k, v) in limits {
            requests.entry(k).or_insert(v);
        }
    }
}

/// A quantity ("500m", "1.5", "128Mi", "1e3") in billionths of its unit, exactly enough to
/// tell equal requests and limits apart; None when it does not parse.
pub fn quantity_nanos(q: &str) -> Option<i128> {
    let q = q.trim();
    let end = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(end);
    let (mantissa, exp10, binary) = match suffix {
        "" => (number, 0, 0),
        "n" => (number, -9, 0),
        "u" => (number, -6, 0),
        "m" => (number, -3, 0),
        "k" => (number, 3, 0),
        "M" => (number, 6, 0),
        "G" => (number, 9, 0),
        "T" => (number, 12, 0),
        "P" => (number, 15, 0),
        "E" => (number, 18, 0),
        "Ki" => (number, 0, 10),
        "Mi" => (number, 0, 20),
        "Gi" => (number, 0, 30),
        "Ti" => (number, 0, 40),
        "Pi" => (number, 0, 50),
        "Ei" => (number, 0, 60),
        s if s.starts_with(['e', 'E']) => (number, s[1..].parse::<i32>().ok()?, 0),
        _ => return None,
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let negative = int.starts_with('-');
    let int = int.trim_start_matches(['+', '-']);
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let digits = format!("{int}{frac}");
    let mut value: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    // value × 10^(exp10 − len(frac) + 9) × 2^binary, in nano units.
    let scale = exp10 - frac.len() as i32 + 9;
    if scale >= 0 {
        value = value.checked_mul(10i128.checked_pow(scale as u32)?)?;
    } else {
        value /= 10i128.checked_pow((-scale) as u32)?;
    }
    value = value.checked_mul(1i128 << binary)?;
    Some(if negative { -value } else { value })
}

/// `status.qosClass` from a pod spec's requests and limits, by Kubernetes' rules: BestEffort
/// when no container asks for CPU or memory, Guaranteed when every container has CPU and
/// memory limits and requests (defaulted from limits) equal to them, else Burstable.
pub fn qos_class(spec: &Value) -> &'static str {
    use std::collections::BTreeMap;
    let mut requests: BTreeMap<&str, i128> = BTreeMap::new();
    let mut limits: BTreeMap<&str, i128> = BTreeMap::new();
    let mut guaranteed = true;
    let containers = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten();
    for c in containers {
        let amounts = |which: &str| -> BTreeMap<&'static str, i128> {
            ["cpu", "memory"]
                .into_iter()
                .filter_map(|r| {
                    let q = c.pointer(&format!("/resources/{which}/{r}"))?;
                    let n = match q {
                        Value::String(s) => quantity_nanos(s)?,
                        Value::Number(n) => quantity_nanos(&n.to_string())?,
                        _ => return None,
                    };
                    (n != 0).then_some((r, n))
                })
                .collect()
        };
        for (r, n) in amounts("requests") {
            *requests.entry(r).or_default() += n;
        }
        let lim = amounts("limits");
        if lim.len() < 2 {
            guaranteed = false;
        }
        for (r, n) in lim {
            *limits.entry(r).or_default() += n;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    let matched = requests.iter().all(|(r, n)| limits.get(r) == Some(n));
    if guaranteed && matched && requests.len() == limits.len() {
        return "Guaranteed";
    }
    "Burstable"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_by_tag() {
        for (image, want) in [
            ("busybox", "Always"),
            ("busybox:latest", "Always"),
            ("busybox:1.36", "IfNotPresent"),
            ("localhost:5000/app", "Always"),
            ("localhost:5000/app:v2", "IfNotPresent"),
            ("app@sha256:abcd", "IfNotPresent"),
        ] {
            assert_eq!(pull_policy(image), want, "{image}");
        }
    }

    #[test]
    fn quantities_compare_exactly() {
        assert_eq!(quantity_nanos("1"), quantity_nanos("1000m"));
        assert_eq!(quantity_nanos("0.5"), quantity_nanos("500m"));
        assert_eq!(quantity_nanos("1Gi"), quantity_nanos("1073741824"));
        assert_eq!(quantity_nanos("1e3"), quantity_nanos("1k"));
        assert_eq!(
            quantity_nanos("128Mi"),
            Some((128i128 << 20) * 1_000_000_000)
        );
        assert_ne!(quantity_nanos("1G"), quantity_nanos("1Gi"));
        for bad in ["", "abc", "12Q", "."] {
            assert_eq!(quantity_nanos(bad), None, "{bad}");
        }
    }

    fn with_resources(rs: &[Value]) -> Value {
        let containers: Vec<Value> = rs
            .iter()
            .map(|r| json!({"name": "c", "image": "i", "resources": r}))
            .collect();
        let mut pod = json!({"spec": {"containers": containers}});
        self::pod(&mut pod);
        pod["spec"].clone()
    }

    #[test]
    fn qos_classes_as_kubernetes_computes_them() {
        let both = json!({"limits": {"cpu": "500m", "memory": "64Mi"}});
        assert_eq!(
            qos_class(&with_resources(std::slice::from_ref(&both))),
            "Guaranteed"
        );
        let equal = json!({"limits": {"cpu": "1", "memory": "64Mi"},
                           "requests": {"cpu": "1000m", "memory": "64Mi"}});
        assert_eq!(
            qos_class(&with_resources(&[equal, both.clone()])),
            "Guaranteed"
        );
        let lower = json!({"limits": {"cpu": "1", "memory": "64Mi"}, "requests": {"cpu": "100m"}});
        assert_eq!(qos_class(&with_resources(&[lower])), "Burstable");
        let cpu_only = json!({"limits": {"cpu": "1"}});
        assert_eq!(qos_class(&with_resources(&[cpu_only])), "Burstable");
        let one_without = json!({});
        assert_eq!(
            qos_class(&with_resources(&[both, one_without.clone()])),
            "Burstable"
        );
        assert_eq!(qos_class(&with_resources(&[one_without])), "BestEffort");
        let requests_only = json!({"requests": {"memory": "1Mi"}});
        assert_eq!(qos_class(&with_resources(&[requests_only])), "Burstable");
    }

    #[test]
    fn a_pod_gets_kubes_defaults_and_keeps_what_it_set() {
        let mut pod = json!({"spec": {
            "restartPolicy": "Never",
            "serviceAccount": "robot",
            "volumes": [{"name": "scratch"}, {"name": "s", "secret": {"secretName": "x"}}],
            "containers": [{"name": "c", "image": "web:1.2", "ports": [{"containerPort": 80}],
                "readinessProbe": {"httpGet": {"port": 80}, "periodSeconds": 2}}]}});
        self::pod(&mut pod);
        let s = &pod["spec"];
        assert_eq!(s["restartPolicy"], "Never");
        assert_eq!(s["dnsPolicy"], "ClusterFirst");
        assert_eq!(s["terminationGracePeriodSeconds"], 30);
        assert_eq!(s["schedulerName"], "default-scheduler");
        assert_eq!(s["securityContext"], json!({}));
        assert_eq!(s["serviceAccountName"], "robot");
        assert_eq!(s["serviceAccount"], "robot");
        assert_eq!(s["enableServiceLinks"], true);
        assert_eq!(
            (s["priority"].clone(), s["preemptionPolicy"].clone()),
            (json!(0), json!("PreemptLowerPriority"))
        );
        assert_eq!(s["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(s["volumes"][1]["secret"]["defaultMode"], 420);
        let c = &s["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["resources"], json!({}));
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        let p = &c["readinessProbe"];
        assert_eq!(p["periodSeconds"], 2);
        assert_eq!(
            (
                p["timeoutSeconds"].clone(),
                p["successThreshold"].clone(),
                p["failureThreshold"].clone()
            ),
            (json!(1), json!(1), json!(3))
        );
        assert_eq!(p["httpGet"]["path"], "/");
        assert_eq!(p["httpGet"]["scheme"], "HTTP");
        // Defaulting twice changes nothing (an update re-defaults what was stored).
        let once = pod.clone();
        self::pod(&mut pod);
        assert_eq!(pod, once);
    }

    #[test]
    fn a_template_gets_no_pod_only_defaults() {
        let mut spec = json!({"containers": [{"name": "c", "image": "x",
            "resources": {"limits": {"cpu": "1"}}}]});
        pod_spec(&mut spec);
        assert!(spec.get("enableServiceLinks").is_none());
        assert!(spec.get("serviceAccountName").is_none());
        assert!(spec.pointer("/containers/0/resources/requests").is_none());
        assert_eq!(spec["containers"][0]["imagePullPolicy"], "Always");
    }
}
