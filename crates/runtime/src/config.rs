//! Loading and validating a bundle's `config.json`.
//!
//! Everything that can be checked without touching the host is checked here, before any
//! state directory, cgroup, mount or process exists: a bad config must leave nothing behind.
//! Every error names the JSON field it is about.

use std::collections::HashSet;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};

use crate::namespaces;
use crate::process::rlimits;

/// A parsed and validated bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Absolute path of the bundle directory.
    pub dir: PathBuf,
    /// Absolute path of the root filesystem.
    pub rootfs: PathBuf,
    pub spec: Spec,
}

/// Read `DIR/config.json`, reporting parse errors with the JSON path of the bad field.
pub fn load_spec(path: &Path) -> Result<Spec> {
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut de = serde_json::Deserializer::from_reader(BufReader::new(file));
    serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let field = err.path().to_string();
        let inner = err.into_inner();
        if field == "." {
            anyhow!("{}: {inner}", path.display())
        } else {
            anyhow!("{}: {field}: {inner}", path.display())
        }
    })
}

/// Load and validate the bundle at `dir`.
pub fn load_bundle(dir: &Path) -> Result<Bundle> {
    let dir = std::path::absolute(dir)
        .with_context(|| format!("bundle {}: cannot resolve path", dir.display()))?;
    if !dir.is_dir() {
        bail!("bundle {}: not a directory", dir.display());
    }
    let spec = load_spec(&dir.join("config.json"))?;
    let rootfs = validate(&spec, &dir).context("config.json")?;
    Ok(Bundle { dir, rootfs, spec })
}

/// Loads a bundle whose `config.json` holds `data` (beside an empty `rootfs/`), as `create`
/// does: the entry of the `runtime_config` fuzz target and its corpus replay test. The bundle
/// lives in a temp dir named `yun-fuzz-config-*`, removed before returning.
#[doc(hidden)]
pub fn fuzz_load_bundle(data: &[u8]) -> Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "yun-fuzz-config-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        std::fs::create_dir_all(dir.join("rootfs"))?;
        std::fs::write(dir.join("config.json"), data)?;
        load_bundle(&dir).map(drop)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Check the parts of the spec that do not depend on cgroups or seccomp (those modules validate
/// their own sections). Returns the absolute rootfs path.
pub fn validate(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    let version = spec.version();
    if !version.starts_with("1.") {
        bail!("ociVersion: {version:?} is not supported (yunc implements 1.x)");
    }
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| anyhow!("root: missing"))?;
    if root.path().as_os_str().is_empty() {
        bail!("root.path: missing");
    }
    let rootfs = bundle.join(root.path());
    if !rootfs.is_dir() {
        bail!(
            "root.path: {} does not exist or is not a directory",
            rootfs.display()
        );
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| anyhow!("process: missing"))?;
    validate_process(process, "process")?;

    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| anyhow!("linux: missing"))?;
    let ns = linux.namespaces().clone().unwrap_or_default();
    let mut seen = HashSet::new();
    for (i, n) in ns.iter().enumerate() {
        if !seen.insert(n.typ()) {
            bail!(
                "linux.namespaces[{i}]: duplicate namespace type {}",
                n.typ()
            );
        }
        if let Some(path) = n.path() {
            if !path.exists() {
                bail!(
                    "linux.namespaces[{i}].path: {} does not exist",
                    path.display()
                );
            }
            namespaces::check_ns_file(path, n.typ())
                .with_context(|| format!("linux.namespaces[{i}].path"))?;
        }
    }
    let has = |t: LinuxNamespaceType| ns.iter().any(|n| n.typ() == t);
    let new_user = ns
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none());
    let uid_maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    let gid_maps = linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    if (uid_maps || gid_maps) && !has(LinuxNamespaceType::User) {
        bail!("linux.uidMappings: mappings are set but linux.namespaces has no user namespace");
    }
    if new_user && (!uid_maps || !gid_maps) {
        bail!("linux.uidMappings: a new user namespace needs both uidMappings and gidMappings");
    }
    for (field, maps) in [
        ("linux.uidMappings", linux.uid_mappings()),
        ("linux.gidMappings", linux.gid_mappings()),
    ] {
        for (i, m) in maps.iter().flatten().enumerate() {
            if m.size() == 0 {
                bail!("{field}[{i}].size: must be at least 1");
            }
        }
    }
    if spec.hostname().as_ref().is_some_and(|h| !h.is_empty()) && !has(LinuxNamespaceType::Uts) {
        bail!("hostname: setting it needs a new uts namespace in linux.namespaces");
    }
    if spec.domainname().as_ref().is_some_and(|h| !h.is_empty()) && !has(LinuxNamespaceType::Uts) {
        bail!("domainname: setting it needs a new uts namespace in linux.namespaces");
    }
    if linux.time_offsets().as_ref().is_some_and(|t| !t.is_empty()) {
        if !has(LinuxNamespaceType::Time) {
            bail!("linux.timeOffsets: set, but linux.namespaces has no time namespace");
        }
        for clock in linux.time_offsets().iter().flatten().map(|(k, _)| k) {
            if clock != "monotonic" && clock != "boottime" {
                bail!("linux.timeOffsets: unknown clock {clock:?} (monotonic or boottime)");
            }
        }
    }
    if let Some(prop) = linux.rootfs_propagation() {
        crate::rootfs::propagation_flag(prop).context("linux.rootfsPropagation")?;
    }
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        if !m.destination().is_absolute() {
            bail!(
                "mounts[{i}].destination: {} must be an absolute path",
                m.destination().display()
            );
        }
        crate::rootfs::parse_mount_options(m.options().as_deref().unwrap_or_default())
            .with_context(|| format!("mounts[{i}].options"))?;
    }
    for (field, paths) in [
        ("linux.maskedPaths", linux.masked_paths()),
        ("linux.readonlyPaths", linux.readonly_paths()),
    ] {
        for (i, p) in paths.iter().flatten().enumerate() {
            if !p.starts_with('/') {
                bail!("{field}[{i}]: {p:?} must be an absolute path");
            }
        }
    }
    for (i, d) in linux.devices().iter().flatten().enumerate() {
        crate::rootfs::devices::validate(d).with_context(|| format!("linux.devices[{i}]"))?;
    }
    for key in linux.sysctl().iter().flat_map(|m| m.keys()) {
        let needs = sysctl_namespace(key).ok_or_else(|| {
            anyhow!("linux.sysctl[{key:?}]: not namespaced; refusing to change the host's value")
        })?;
        if !has(needs) {
            bail!(
                "linux.sysctl[{key:?}]: needs a new {} namespace in linux.namespaces",
                namespaces::name(needs)
            );
        }
    }
    Ok(rootfs)
}

/// Checks shared by `create` and `exec --process`.
pub fn validate_process(process: &Process, field: &str) -> Result<()> {
    let args = process.args().as_deref().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        bail!("{field}.args: must name a program to run");
    }
    if !process.cwd().is_absolute() {
        bail!(
            "{field}.cwd: {} must be an absolute path",
            process.cwd().display()
        );
    }
    for (i, e) in process.env().iter().flatten().enumerate() {
        if !e.contains('=') || e.starts_with('=') {
            bail!("{field}.env[{i}]: {e:?} is not KEY=VALUE");
        }
    }
    if let Some(adj) = process.oom_score_adj() {
        if !(-1000..=1000).contains(&adj) {
            bail!("{field}.oomScoreAdj: {adj} is outside -1000..1000");
        }
    }
    for (i, r) in process.rlimits().iter().flatten().enumerate() {
        rlimits::validate(r).with_context(|| format!("{field}.rlimits[{i}]"))?;
    }
    if process
        .apparmor_profile()
        .as_ref()
        .is_some_and(|p| !p.is_empty())
        && !apparmor_enabled()
    {
        tracing::warn!(
            "{field}.apparmorProfile: AppArmor is not enabled on this host; the profile is skipped"
        );
    }
    if process
        .selinux_label()
        .as_ref()
        .is_some_and(|p| !p.is_empty())
        && !selinux_enabled()
    {
        tracing::warn!(
            "{field}.selinuxLabel: SELinux is not enabled on this host; the label is skipped"
        );
    }
    Ok(())
}

/// Which namespace makes a sysctl safe to set, as runc decides it. `None`: not namespaced.
fn sysctl_namespace(key: &str) -> Option<LinuxNamespaceType> {
    const IPC: [&str; 6] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
    ];
    if IPC.contains(&key) || key == "kernel.shmmni" || key == "kernel.shm_rmid_forced" {
        return Some(LinuxNamespaceType::Ipc);
    }
    if key.starts_with("fs.mqueue.") {
        return Some(LinuxNamespaceType::Ipc);
    }
    if key.starts_with("net.") {
        return Some(LinuxNamespaceType::Network);
    }
    if key == "kernel.hostname" || key == "kernel.domainname" {
        return Some(LinuxNamespaceType::Uts);
    }
    None
}

pub fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.trim() == "Y")
}

pub fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_bundle(config: &serde_json::Value) -> tempdir::Dir {
        let dir = tempdir::Dir::new();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        dir
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"args": ["/bin/true"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]}
        })
    }

    fn error_of(config: serde_json::Value) -> String {
        let dir = write_bundle(&config);
        format!("{:#}", load_bundle(dir.path()).unwrap_err())
    }

    mod tempdir {
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static N: AtomicUsize = AtomicUsize::new(0);
                let p = std::env::temp_dir().join(format!(
                    "yun-test-config-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::SeqCst)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn a_good_config_loads() {
        let dir = write_bundle(&base());
        let b = load_bundle(dir.path()).unwrap();
        assert_eq!(b.rootfs, dir.path().join("rootfs"));
    }

    #[test]
    fn unknown_namespace_type_names_the_field() {
        let mut c = base();
        c["linux"]["namespaces"][1]["type"] = "bogus".into();
        let e = error_of(c);
        assert!(e.contains("linux.namespaces[1].type"), "{e}");
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn missing_root_path() {
        let mut c = base();
        c["root"] = serde_json::json!({"path": ""});
        assert!(error_of(c).contains("root.path: missing"));
    }

    #[test]
    fn rootfs_must_exist() {
        let mut c = base();
        c["root"]["path"] = "nope".into();
        let e = error_of(c);
        assert!(
            e.contains("root.path:") && e.contains("does not exist"),
            "{e}"
        );
    }

    #[test]
    fn mappings_need_a_user_namespace() {
        let mut c = base();
        c["linux"]["uidMappings"] =
            serde_json::json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
        assert!(error_of(c).contains("linux.uidMappings: mappings are set but"));
    }

    #[test]
    fn soft_rlimit_above_hard_is_rejected() {
        let mut c = base();
        c["process"]["rlimits"] =
            serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 5}]);
        let e = error_of(c);
        assert!(e.contains("process.rlimits[0]"), "{e}");
    }

    #[test]
    fn unknown_rlimit_type_names_the_field() {
        let mut c = base();
        c["process"]["rlimits"] = serde_json::json!([{"type": "RLIMIT_FOO", "soft": 1, "hard": 1}]);
        let e = error_of(c);
        assert!(e.contains("process.rlimits[0].type"), "{e}");
    }

    #[test]
    fn rlimit_above_host_hard_limit_names_the_limit() {
        let mut c = base();
        c["process"]["rlimits"] =
            serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": u64::MAX - 1}]);
        let e = error_of(c);
        if !caps::has_cap(
            None,
            caps::CapSet::Effective,
            caps::Capability::CAP_SYS_RESOURCE,
        )
        .unwrap()
        {
            assert!(
                e.contains("RLIMIT_NOFILE") && e.contains("hard limit"),
                "{e}"
            );
        }
    }

    #[test]
    fn hostname_needs_uts() {
        let mut c = base();
        c["hostname"] = "box".into();
        assert!(error_of(c).contains("hostname: setting it needs a new uts namespace"));
    }

    #[test]
    fn duplicate_namespace() {
        let mut c = base();
        c["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}, {"type": "pid"}]);
        assert!(error_of(c).contains("linux.namespaces[1]: duplicate namespace type"));
    }

    #[test]
    fn host_sysctl_is_refused() {
        let mut c = base();
        c["linux"]["sysctl"] = serde_json::json!({"vm.swappiness": "10"});
        assert!(error_of(c).contains("not namespaced"));
    }

    #[test]
    fn relative_mount_destination() {
        let mut c = base();
        c["mounts"] =
            serde_json::json!([{"destination": "tmp", "type": "tmpfs", "source": "tmpfs"}]);
        assert!(error_of(c).contains("mounts[0].destination"));
    }

    #[test]
    fn malformed_json_is_one_line() {
        let dir = tempdir::Dir::new();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        std::fs::write(dir.path().join("config.json"), "{\"ociVersion\": ").unwrap();
        let e = format!("{:#}", load_bundle(dir.path()).unwrap_err());
        assert!(!e.contains('\n') && e.contains("config.json"), "{e}");
    }

    #[test]
    fn empty_args() {
        let mut c = base();
        c["process"]["args"] = serde_json::json!([]);
        assert!(error_of(c).contains("process.args"));
    }
}
