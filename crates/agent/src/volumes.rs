//! A pod's volumes on the node: emptyDir under the pod's directory, hostPath as given,
//! configMap and secret projected into files (rewritten atomically on every sync, so updates
//! reach running pods), downwardAPI labels/annotations.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use k8s_openapi::api::core::v1::{
    DownwardAPIVolumeFile, KeyToPath, Pod, ProjectedVolumeSource, Volume,
};

use crate::PodInputs;

/// Where each of a pod's volumes lives on the host.
#[derive(Debug, Default)]
pub struct PodVolumes {
    paths: HashMap<String, (PathBuf, bool)>,
    /// The volumes that are devices (Block claims), not directories.
    devices: std::collections::HashSet<String>,
}

impl PodVolumes {
    /// Whether volume `name` is a device (a Block claim).
    pub fn is_device(&self, name: &str) -> bool {
        self.devices.contains(name)
    }

    pub fn host_path(&self, name: &str) -> Option<&Path> {
        self.paths.get(name).map(|(p, _)| p.as_path())
    }

    /// ConfigMap, Secret, downward API and projected volumes are always mounted read-only.
    pub fn read_only(&self, name: &str) -> bool {
        self.paths.get(name).is_some_and(|(_, ro)| *ro)
    }
}

/// A volume that cannot be prepared (the kubelet's FailedMount).
#[derive(Debug)]
pub struct VolumeError {
    pub index: usize,
    pub volume: String,
    pub cause: anyhow::Error,
}

impl std::fmt::Display for VolumeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "spec.volumes[{}] ({}): {:#}",
            self.index, self.volume, self.cause
        )
    }
}

impl std::error::Error for VolumeError {}

/// Make every volume of `pod` ready under `pod_dir/volumes`.
pub fn prepare(
    pod: &Pod,
    pod_dir: &Path,
    inputs: &PodInputs,
) -> std::result::Result<PodVolumes, VolumeError> {
    let mut out = PodVolumes::default();
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    for (i, v) in volumes.into_iter().flatten().enumerate() {
        let entry = prepare_one(pod, v, pod_dir, inputs).map_err(|cause| VolumeError {
            index: i,
            volume: v.name.clone(),
            cause,
        })?;
        let block = v
            .persistent_volume_claim
            .as_ref()
            .and_then(|c| inputs.claims.get(&c.claim_name))
            .is_some_and(|c| c.block);
        if block {
            out.devices.insert(v.name.clone());
        }
        out.paths.insert(v.name.clone(), entry);
    }
    Ok(out)
}

/// One volume: its host path and whether it is read-only.
fn prepare_one(
    pod: &Pod,
    v: &Volume,
    pod_dir: &Path,
    inputs: &PodInputs,
) -> Result<(PathBuf, bool)> {
    check_volume_name(&v.name)?;
    let dir = pod_dir.join("volumes").join(&v.name);
    let entry = if v.empty_dir.is_some() {
        fs::create_dir_all(&dir)?;
        // World-writable like Kubernetes' emptyDir, so non-root containers can use it.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777))?;
        (dir, false)
    } else if let Some(h) = &v.host_path {
        let path = PathBuf::from(&h.path);
        if !path.is_absolute() {
            bail!("hostPath.path {:?} must be absolute", h.path);
        }
        match h.type_.as_deref().unwrap_or("") {
            "" => {}
            "DirectoryOrCreate" => fs::create_dir_all(&path)?,
            "Directory" if path.is_dir() => {}
            "File" | "FileOrCreate" if path.is_file() => {}
            "FileOrCreate" => {
                fs::File::create(&path)?;
            }
            t => bail!("hostPath {:?} is not a {t}", h.path),
        }
        (path, false)
    } else if let Some(cm) = &v.config_map {
        let data = inputs.config_maps.get(&cm.name);
        match data {
            Some(data) => project(&dir, data, cm.items.as_deref(), cm.default_mode)?,
            None if cm.optional == Some(true) => project(&dir, &BTreeMap::new(), None, None)?,
            None => bail!("configmap {:?} not found", cm.name),
        }
        (dir, true)
    } else if let Some(sec) = &v.secret {
        let name = sec.secret_name.clone().unwrap_or_default();
        // Secrets live in memory only, never on the node's disk (the kubelet's tmpfs).
        mount_tmpfs(&dir)?;
        match inputs.secrets.get(&name) {
            Some(data) => project(
                &dir,
                data,
                sec.items.as_deref(),
                sec.default_mode.or(Some(0o644)),
            )?,
            None if sec.optional == Some(true) => project(&dir, &BTreeMap::new(), None, None)?,
            None => bail!("secret {name:?} not found"),
        }
        (dir, true)
    } else if let Some(d) = &v.downward_api {
        let mut files = BTreeMap::new();
        downward(pod, d.items.as_deref().unwrap_or(&[]), &mut files)?;
        project(&dir, &files, None, None)?;
        (dir, true)
    } else if let Some(p) = &v.projected {
        // It may hold a token or a Secret: memory only, like a secret volume.
        mount_tmpfs(&dir)?;
        let files = projected(pod, &v.name, p, inputs)?;
        project(&dir, &files, None, p.default_mode.or(Some(0o644)))?;
        (dir, true)
    } else if let Some(c) = &v.persistent_volume_claim {
        let claim = inputs
            .claims
            .get(&c.claim_name)
            .ok_or_else(|| anyhow!("persistentvolumeclaim {:?} is not ready", c.claim_name))?;
        (claim.path.clone(), c.read_only == Some(true))
    } else {
        bail!("only emptyDir, hostPath, configMap, secret, downwardAPI, projected and persistentVolumeClaim volumes are supported");
    };
    Ok(entry)
}

/// The downward API files `items` name, into `files`.
fn downward(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    files: &mut BTreeMap<String, Vec<u8>>,
) -> Result<()> {
    for item in items {
        let Some(f) = &item.field_ref else { continue };
        let render = |m: &Option<BTreeMap<String, String>>| {
            m.iter()
                .flatten()
                .map(|(k, v)| format!("{k}=\"{v}\"\n"))
                .collect::<String>()
        };
        let value = match f.field_path.as_str() {
            "metadata.labels" => render(&pod.metadata.labels),
            "metadata.annotations" => render(&pod.metadata.annotations),
            "metadata.name" => pod.metadata.name.clone().unwrap_or_default(),
            "metadata.namespace" => pod.metadata.namespace.clone().unwrap_or_default(),
            "metadata.uid" => pod.metadata.uid.clone().unwrap_or_default(),
            other => bail!("downwardAPI fieldRef {other:?} is not supported"),
        };
        files.insert(item.path.clone(), value.into_bytes());
    }
    Ok(())
}

/// The keys of `data` that `items` picks (at their paths), or all of them.
fn pick(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    files: &mut BTreeMap<String, Vec<u8>>,
) -> Result<()> {
    match items {
        Some(items) => {
            for it in items {
                let v = data
                    .get(&it.key)
                    .ok_or_else(|| anyhow!("key {:?} not found", it.key))?;
                files.insert(it.path.clone(), v.clone());
            }
        }
        None => files.extend(data.iter().map(|(k, v)| (k.clone(), v.clone()))),
    }
    Ok(())
}

/// A projected volume's files: service-account tokens (the agent requested them), ConfigMap
/// and Secret keys, downward API fields, all in one directory.
fn projected(
    pod: &Pod,
    volume: &str,
    p: &ProjectedVolumeSource,
    inputs: &PodInputs,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    for src in p.sources.iter().flatten() {
        if let Some(t) = &src.service_account_token {
            let token = inputs
                .tokens
                .get(&format!("{volume}/{}", t.path))
                .ok_or_else(|| anyhow!("no service-account token for {:?} yet", t.path))?;
            files.insert(t.path.clone(), token.clone());
        } else if let Some(c) = &src.config_map {
            match inputs.config_maps.get(&c.name) {
                Some(data) => pick(data, c.items.as_deref(), &mut files)?,
                None if c.optional == Some(true) => {}
                None => bail!("configmap {:?} not found", c.name),
            }
        } else if let Some(s) = &src.secret {
            match inputs.secrets.get(&s.name) {
                Some(data) => pick(data, s.items.as_deref(), &mut files)?,
                None if s.optional == Some(true) => {}
                None => bail!("secret {:?} not found", s.name),
            }
        } else if let Some(d) = &src.downward_api {
            downward(pod, d.items.as_deref().unwrap_or(&[]), &mut files)?;
        } else {
            bail!("projected sources: only serviceAccountToken, configMap, secret and downwardAPI are supported");
        }
    }
    Ok(files)
}

/// Secret volumes: a tmpfs per volume. The API caps a Secret at 1 MiB; the rest is room for
/// the projection's versions during an update.
const SECRET_TMPFS_SIZE: &str = "size=4m,mode=0755";

/// Mount a tmpfs on `dir` unless one is there already (the agent restarted, or this is a
/// later sync).
fn mount_tmpfs(dir: &Path) -> Result<()> {
    use nix::mount::{mount, MsFlags};
    use std::os::unix::fs::MetadataExt;
    fs::create_dir_all(dir)?;
    let parent = dir.parent().unwrap_or(dir);
    if fs::metadata(dir)?.dev() != fs::metadata(parent)?.dev() {
        return Ok(());
    }
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(SECRET_TMPFS_SIZE),
    )
    .with_context(|| format!("mounting a tmpfs on {}", dir.display()))
}

/// Unmount every mount under `dir` (a pod's secret tmpfs volumes), deepest first, so the
/// directory can be removed.
pub fn unmount_under(dir: &Path) -> Result<()> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(yun_runtime::rootfs::mountinfo::unescape)
        .filter(|p| p.starts_with(dir) && p != dir)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH)
            .with_context(|| format!("unmounting {}", p.display()))?;
    }
    Ok(())
}

fn check_volume_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        bail!("invalid volume name {name:?}");
    }
    Ok(())
}

/// Write `data` as files into `dir` (all keys, or only `items` at their paths) the way the
/// kubelet does, so a running container sees an update at once and never a half-written one:
/// the files live in a fresh hidden directory, `..data` is a symlink to it swapped by
/// rename(2), and each top-level name is a symlink through `..data`. `dir` itself never
/// changes, so bind mounts of it stay valid.
fn project(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
) -> Result<()> {
    let files: Vec<(String, &Vec<u8>, Option<i32>)> = match items {
        Some(items) => items
            .iter()
            .map(|it| {
                data.get(&it.key)
                    .map(|v| (it.path.clone(), v, it.mode))
                    .ok_or_else(|| anyhow!("key {:?} not found", it.key))
            })
            .collect::<Result<_>>()?,
        None => data.iter().map(|(k, v)| (k.clone(), v, None)).collect(),
    };
    fs::create_dir_all(dir)?;
    // The version directory is named by a hash of the content: an unchanged sync is a no-op.
    let mut h: u64 = 0xcbf29ce484222325;
    for (path, value, mode) in &files {
        for b in path
            .bytes()
            .chain([0])
            .chain(value.iter().copied())
            .chain([0])
        {
            h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
        }
        h = (h ^ mode.or(default_mode).unwrap_or(0o644) as u64).wrapping_mul(0x100000001b3);
    }
    let version = format!("..{h:016x}");
    if fs::read_link(dir.join("..data")).is_ok_and(|p| p.as_os_str() == version.as_str()) {
        return Ok(());
    }
    let staging = dir.join(&version);
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging)?;
    let mut top = std::collections::BTreeSet::new();
    for (path, value, mode) in files {
        if path.is_empty()
            || path.starts_with("..")
            || Path::new(&path).is_absolute()
            || path.split('/').any(|p| p == "..")
        {
            bail!("file path {path:?}: must be relative and stay inside the volume");
        }
        let file = staging.join(&path);
        if let Some(p) = file.parent() {
            fs::create_dir_all(p)?;
        }
        fs::write(&file, value)?;
        let mode = mode.or(default_mode).unwrap_or(0o644) as u32 & 0o777;
        fs::set_permissions(&file, fs::Permissions::from_mode(mode))?;
        top.insert(path.split('/').next().unwrap_or_default().to_string());
    }
    fs::set_permissions(&staging, fs::Permissions::from_mode(0o755))?;
    let previous = fs::read_link(dir.join("..data")).ok();
    let tmp_link = dir.join("..data_tmp");
    let _ = fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&version, &tmp_link)?;
    fs::rename(&tmp_link, dir.join("..data"))?;
    // Top-level names: add the new ones, drop those no longer present.
    for entry in fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !top.contains(&name) {
            let _ = fs::remove_file(entry.path());
        }
    }
    for name in &top {
        let link = dir.join(name);
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link)?;
        }
    }
    if let Some(old) = previous.filter(|p| p.as_os_str() != version.as_str()) {
        let _ = fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kube_api_access() -> ProjectedVolumeSource {
        serde_json::from_value(serde_json::json!({"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace",
                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}))
        .unwrap()
    }

    #[test]
    fn a_projected_volume_gathers_token_ca_and_namespace() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "team"}}))
        .unwrap();
        let mut inputs = PodInputs::default();
        inputs
            .tokens
            .insert("kube-api-access-x/token".into(), b"jwt".to_vec());
        let cm = BTreeMap::from([("ca.crt".to_string(), b"PEM".to_vec())]);
        inputs.config_maps.insert("kube-root-ca.crt".into(), cm);
        let files = projected(&pod, "kube-api-access-x", &kube_api_access(), &inputs).unwrap();
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(names, ["ca.crt", "namespace", "token"]);
        assert_eq!(files["namespace"], b"team");
        assert_eq!(files["token"], b"jwt");

        // Written the kubelet's way: 0644 files behind `..data`, in a directory any user reads.
        let dir = tempfile::tempdir().unwrap();
        project(dir.path(), &files, None, Some(0o644)).unwrap();
        assert_eq!(fs::read(dir.path().join("token")).unwrap(), b"jwt");
        let data = dir.path().join("..data");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data.join("token")), 0o644);
        assert_eq!(mode(&data), 0o755);

        // Without the token (not issued yet) or the CA (not published yet) it is not ready.
        let mut no_token = inputs.clone();
        no_token.tokens.clear();
        let e = projected(&pod, "kube-api-access-x", &kube_api_access(), &no_token);
        assert!(e.unwrap_err().to_string().contains("token"));
        let mut no_ca = inputs;
        no_ca.config_maps.clear();
        let e = projected(&pod, "kube-api-access-x", &kube_api_access(), &no_ca);
        assert!(e.unwrap_err().to_string().contains("kube-root-ca.crt"));
    }
}
