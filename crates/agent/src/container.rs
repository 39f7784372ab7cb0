//! A pod's container spec → the engine's run options: command and args, env (with
//! `$(VAR)` expansion and valueFrom), working dir, user, limits, volume mounts, and the
//! sandbox's namespaces to join.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use k8s_openapi::api::core::v1::{Container, Pod};
use oci_spec::runtime::LinuxNamespaceType;
use yun_engine::RunOptions;

use crate::quantity;
use crate::volumes::PodVolumes;
use crate::PodInputs;

/// Expand `$(NAME)` references from `vars`; `$$(NAME)` is a literal `$(NAME)`; unknown
/// references stay as written (Kubernetes' rules).
pub fn expand(s: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$$") {
            out.push('$');
            rest = t;
        } else if let Some(t) = tail.strip_prefix("$(") {
            match t.find(')') {
                Some(end) if vars.contains_key(&t[..end]) => {
                    out.push_str(&vars[&t[..end]]);
                    rest = &t[end + 1..];
                }
                _ => {
                    out.push_str("$(");
                    rest = t;
                }
            }
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The container's environment, in order: `envFrom` sources first (a later source wins over
/// an earlier one), then `env` (which wins over every source), with `valueFrom` resolved and
/// `$(VAR)` expanded against what came before, as the kubelet does.
fn environment(pod: &Pod, c: &Container, inputs: &PodInputs) -> Result<Vec<(String, String)>> {
    let mut vars: HashMap<String, String> = HashMap::new();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut set = |name: String, value: String, vars: &mut HashMap<String, String>| {
        vars.insert(name.clone(), value.clone());
        out.retain(|(n, _)| *n != name);
        out.push((name, value));
    };
    // Service variables come first: the pod's own may override or refer to them.
    for (name, value) in &inputs.service_env {
        set(name.clone(), value.clone(), &mut vars);
    }
    for (name, value) in env_from(c, inputs)?.vars {
        set(name, value, &mut vars);
    }
    for (i, e) in c.env.iter().flatten().enumerate() {
        let field = || format!("env[{i}] ({})", e.name);
        let value = if let Some(v) = &e.value {
            expand(v, &vars)
        } else if let Some(from) = &e.value_from {
            if let Some(r) = &from.field_ref {
                field_value(pod, &r.field_path, inputs).with_context(field)?
            } else if let Some(r) = &from.config_map_key_ref {
                match lookup(&inputs.config_maps, &r.name, &r.key) {
                    Some(v) => v,
                    None if r.optional == Some(true) => continue,
                    None => bail!(
                        "{}: configmap {:?} key {:?} not found",
                        field(),
                        r.name,
                        r.key
                    ),
                }
            } else if let Some(r) = &from.secret_key_ref {
                match lookup(&inputs.secrets, &r.name, &r.key) {
                    Some(v) => v,
                    None if r.optional == Some(true) => continue,
                    None => bail!("{}: secret {:?} key {:?} not found", field(), r.name, r.key),
                }
            } else if let Some(r) = &from.resource_field_ref {
                resource_value(c, &r.resource).with_context(field)?
            } else {
                bail!("{}: valueFrom names no source", field());
            }
        } else {
            String::new()
        };
        set(e.name.clone(), value, &mut vars);
    }
    Ok(out)
}

/// What a container's `envFrom` sources give: the variables in order, and the keys skipped
/// because they are not valid variable names (one message per source, for a warning Event).
#[derive(Debug, Default, PartialEq)]
pub struct EnvFrom {
    pub vars: Vec<(String, String)>,
    pub invalid: Vec<String>,
}

/// Resolve `envFrom`. A missing source that is not optional is an error (the container does
/// not start: CreateContainerConfigError); keys that are not valid names are skipped.
pub fn env_from(c: &Container, inputs: &PodInputs) -> Result<EnvFrom> {
    let mut got = EnvFrom::default();
    for (i, src) in c.env_from.iter().flatten().enumerate() {
        let prefix = src.prefix.as_deref().unwrap_or("");
        let (kind, name, optional, maps) = if let Some(r) = &src.config_map_ref {
            ("configmap", &r.name, r.optional, &inputs.config_maps)
        } else if let Some(r) = &src.secret_ref {
            ("secret", &r.name, r.optional, &inputs.secrets)
        } else {
            bail!("envFrom[{i}]: names neither configMapRef nor secretRef");
        };
        let Some(data) = maps.get(name) else {
            if optional == Some(true) {
                continue;
            }
            bail!("envFrom[{i}]: {kind} {name:?} not found");
        };
        let mut skipped = Vec::new();
        for (key, value) in data {
            let var = format!("{prefix}{key}");
            if is_env_var_name(&var) {
                got.vars
                    .push((var, String::from_utf8_lossy(value).into_owned()));
            } else {
                skipped.push(var);
            }
        }
        if !skipped.is_empty() {
            got.invalid.push(format!(
                "Keys [{}] from the EnvFrom {kind} {name} were skipped since they are considered \
                 invalid environment variable names.",
                skipped.join(", ")
            ));
        }
    }
    Ok(got)
}

/// Kubernetes' rule for variable names from envFrom: `[-._a-zA-Z][-._a-zA-Z0-9]*`.
fn is_env_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || "-._".contains(c))
        && chars.all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
}

fn lookup(
    maps: &HashMap<String, BTreeMap<String, Vec<u8>>>,
    name: &str,
    key: &str,
) -> Option<String> {
    maps.get(name)
        .and_then(|m| m.get(key))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The downward API fields a container may read from its env.
fn field_value(pod: &Pod, path: &str, inputs: &PodInputs) -> Result<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" => inputs.pod_ip.clone().unwrap_or_default(),
        "status.hostIP" => inputs.host_ip.clone().unwrap_or_default(),
        p => {
            let label = |map: &Option<BTreeMap<String, String>>, key: &str| {
                map.as_ref()
                    .and_then(|m| m.get(key))
                    .cloned()
                    .unwrap_or_default()
            };
            if let Some(key) = p
                .strip_prefix("metadata.labels['")
                .and_then(|k| k.strip_suffix("']"))
            {
                label(&meta.labels, key)
            } else if let Some(key) = p
                .strip_prefix("metadata.annotations['")
                .and_then(|k| k.strip_suffix("']"))
            {
                label(&meta.annotations, key)
            } else {
                bail!("fieldRef {p:?} is not supported")
            }
        }
    })
}

fn resource_value(c: &Container, resource: &str) -> Result<String> {
    let res = c.resources.as_ref();
    let get = |limits: bool, key: &str| {
        res.and_then(|r| {
            if limits {
                r.limits.as_ref()
            } else {
                r.requests.as_ref()
            }
        })
        .and_then(|m| m.get(key))
        .map(|q| q.0.clone())
    };
    let (limits, key) = resource
        .split_once('.')
        .map(|(kind, key)| (kind == "limits", key))
        .ok_or_else(|| anyhow!("resourceFieldRef {resource:?}: expected limits.X or requests.X"))?;
    let q = get(limits, key).unwrap_or_else(|| "0".into());
    Ok(match key {
        "cpu" => ((quantity::millicores(&q)? + 999) / 1000)
            .max(1)
            .to_string(),
        _ => quantity::bytes(&q)?.to_string(),
    })
}

/// Everything the engine needs to start `c` as the pod's container, attempt `attempt`.
pub fn run_options(
    pod: &Pod,
    c: &Container,
    inputs: &PodInputs,
    volumes: &PodVolumes,
    sandbox_pid: i32,
    labels: BTreeMap<String, String>,
    name: String,
) -> Result<RunOptions> {
    let env = environment(pod, c, inputs)?;
    let vars: HashMap<String, String> = env.iter().cloned().collect();
    let expand_all = |list: &Option<Vec<String>>| {
        list.iter()
            .flatten()
            .map(|s| expand(s, &vars))
            .collect::<Vec<_>>()
    };
    // `command` replaces the image's entrypoint (and drops its cmd); `args` replace the cmd.
    let (entrypoint, command) = match &c.command {
        Some(cmd) if !cmd.is_empty() => {
            let mut argv = expand_all(&c.command);
            argv.extend(expand_all(&c.args));
            (Some(String::new()), argv)
        }
        _ => (None, expand_all(&c.args)),
    };
    let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
    let memory = limits
        .and_then(|l| l.get("memory"))
        .map(|q| quantity::bytes(&q.0))
        .transpose()
        .context("resources.limits.memory")?;
    let cpus = limits
        .and_then(|l| l.get("cpu"))
        .map(|q| quantity::millicores(&q.0))
        .transpose()
        .context("resources.limits.cpu")?
        .map(|m| m as f64 / 1000.0);
    // Requests weigh the container under contention, the kubelet's way: a CPU's worth is 1024
    // shares, and a container that requests nothing gets the minimum, 2 (or its limit when it
    // gives only a limit, as the API server defaults requests from limits).
    let cpu_request = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref().and_then(|m| m.get("cpu")))
        .or_else(|| limits.and_then(|l| l.get("cpu")))
        .map(|q| quantity::millicores(&q.0))
        .transpose()
        .context("resources.requests.cpu")?;
    let cpu_shares = Some(cpu_request.map_or(2, |m| (m.max(0) as u64 * 1024 / 1000).max(2)));
    let security = c.security_context.as_ref();
    let pod_security = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let uid = security
        .and_then(|s| s.run_as_user)
        .or_else(|| pod_security.and_then(|s| s.run_as_user));
    let gid = security
        .and_then(|s| s.run_as_group)
        .or_else(|| pod_security.and_then(|s| s.run_as_group));
    let user = match (uid, gid) {
        (Some(u), Some(g)) => Some(format!("{u}:{g}")),
        (Some(u), None) => Some(u.to_string()),
        (None, Some(g)) => Some(format!("0:{g}")),
        (None, None) => None,
    };
    let mut mounts = Vec::new();
    let mut devices = Vec::new();
    for (i, d) in c.volume_devices.iter().flatten().enumerate() {
        let src = volumes
            .host_path(&d.name)
            .ok_or_else(|| anyhow!("volumeDevices[{i}].name: no volume {:?} in the pod", d.name))?;
        if !volumes.is_device(&d.name) {
            bail!(
                "volumeDevices[{i}]: volume {:?} is not a Block volume",
                d.name
            );
        }
        devices.push((src.to_path_buf(), d.device_path.clone()));
    }
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let src = volumes
            .host_path(&m.name)
            .ok_or_else(|| anyhow!("volumeMounts[{i}].name: no volume {:?} in the pod", m.name))?;
        if volumes.is_device(&m.name) {
            bail!(
                "volumeMounts[{i}]: volume {:?} is a Block volume: use volumeDevices",
                m.name
            );
        }
        let src = match m.sub_path.as_deref().filter(|p| !p.is_empty()) {
            Some(sub) => {
                if Path::new(sub).is_absolute() || sub.split('/').any(|p| p == "..") {
                    bail!("volumeMounts[{i}].subPath {sub:?}: must be a relative path inside the volume");
                }
                let p = src.join(sub);
                if !p.exists() {
                    std::fs::create_dir_all(&p)?;
                }
                p
            }
            None => src.to_path_buf(),
        };
        if !m.mount_path.starts_with('/') {
            bail!(
                "volumeMounts[{i}].mountPath {:?}: must be absolute",
                m.mount_path
            );
        }
        let ro = m.read_only == Some(true) || volumes.read_only(&m.name);
        mounts.push(format!(
            "{}:{}{}",
            src.display(),
            m.mount_path,
            if ro { ":ro" } else { "" }
        ));
    }
    let hostname = pod_hostname(pod);
    let extra_hosts = pod_hosts(pod, inputs);
    let ns =
        |t: LinuxNamespaceType, n: &str| (t, PathBuf::from(format!("/proc/{sandbox_pid}/ns/{n}")));
    Ok(RunOptions {
        name: Some(name),
        detach: true,
        // A pod's output goes to its log; `stdin: true` keeps stdin open for attach, and
        // `tty: true` gives it a terminal (the engine's relay logs it and hands it to attach).
        interactive: c.stdin == Some(true),
        tty: c.tty == Some(true),
        stdin_once: c.stdin_once == Some(true),
        env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        volumes: mounts,
        workdir: c.working_dir.clone().filter(|w| !w.is_empty()),
        user,
        memory,
        cpus,
        cpu_shares,
        command,
        entrypoint,
        hostname,
        extra_hosts,
        join_namespaces: vec![
            ns(LinuxNamespaceType::Network, "net"),
            ns(LinuxNamespaceType::Ipc, "ipc"),
            ns(LinuxNamespaceType::Uts, "uts"),
        ],
        labels,
        devices,
        ..Default::default()
    })
}

/// The pod's hostname: `spec.hostname`, else its name (the kubelet's rule).
pub fn pod_hostname(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())
}

/// The kubelet's /etc/hosts lines for a pod: its IP with its fully qualified name (when it
/// has a `subdomain`) and its hostname, then its `hostAliases`.
fn pod_hosts(pod: &Pod, inputs: &PodInputs) -> Vec<(String, Vec<String>)> {
    let mut lines = Vec::new();
    let spec = pod.spec.as_ref();
    if let (Some(ip), Some(host)) = (&inputs.pod_ip, pod_hostname(pod)) {
        let mut names = Vec::new();
        let subdomain = spec
            .and_then(|s| s.subdomain.as_deref())
            .filter(|s| !s.is_empty());
        if let Some(sub) = subdomain {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            names.push(format!("{host}.{sub}.{ns}.svc.{CLUSTER_DOMAIN}"));
        }
        names.push(host);
        lines.push((ip.clone(), names));
    }
    for alias in spec
        .and_then(|s| s.host_aliases.as_ref())
        .into_iter()
        .flatten()
    {
        let names = alias.hostnames.clone().unwrap_or_default();
        if !names.is_empty() {
            lines.push((alias.ip.clone(), names));
        }
    }
    lines
}

/// The cluster's DNS domain (the kubelet's --cluster-domain default).
pub const CLUSTER_DOMAIN: &str = "cluster.local";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_like_kubernetes() {
        let vars: HashMap<String, String> =
            [("A".to_string(), "1".to_string())].into_iter().collect();
        assert_eq!(expand("x$(A)y", &vars), "x1y");
        assert_eq!(expand("$(B)", &vars), "$(B)");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("$A $(A", &vars), "$A $(A");
    }

    #[test]
    fn env_from_precedence_prefix_optional_and_invalid_keys() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "envFrom": [
                {"configMapRef": {"name": "cm"}},
                {"secretRef": {"name": "s"}, "prefix": "S_"},
                {"configMapRef": {"name": "cm2"}},
                {"configMapRef": {"name": "absent", "optional": true}},
            ],
            "env": [{"name": "A", "value": "env-$(B)"}],
        }))
        .unwrap();
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, Vec<u8>> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect()
        };
        let mut inputs = PodInputs::default();
        inputs
            .config_maps
            .insert("cm".into(), map(&[("A", "cm"), ("B", "cm"), ("1bad", "x")]));
        inputs
            .config_maps
            .insert("cm2".into(), map(&[("B", "cm2")]));
        inputs.secrets.insert("s".into(), map(&[("TOKEN", "t")]));
        let pod = Pod::default();
        let env = environment(&pod, &c, &inputs).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("B"), Some("cm2"), "a later source wins");
        assert_eq!(
            get("A"),
            Some("env-cm2"),
            "env wins and expands envFrom vars"
        );
        assert_eq!(get("S_TOKEN"), Some("t"), "prefix");
        assert_eq!(get("1bad"), None);
        assert_eq!(env.iter().filter(|(n, _)| n == "A").count(), 1);
        let from = env_from(&c, &inputs).unwrap();
        assert_eq!(from.invalid.len(), 1);
        assert!(from.invalid[0].contains("[1bad]") && from.invalid[0].contains("configmap cm"));

        let missing: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "envFrom": [{"secretRef": {"name": "nope"}}],
        }))
        .unwrap();
        let err = environment(&pod, &missing, &inputs)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "envFrom[0]: secret \"nope\" not found");
    }
}
