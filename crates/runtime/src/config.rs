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
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Process, Spec};

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

/// The largest config.json (and `exec --process` file) yunc reads. Real ones are a few KiB
/// (a big seccomp profile ~100 KiB); the config is copied into state.json, which every later
/// command reads, and into the hooks' input. A limit gives a clear error instead of a slow
/// create or an obscure failure further on.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Refuse a file above [`MAX_CONFIG_BYTES`] before reading it.
pub fn check_size(path: &Path, file: &File) -> Result<()> {
    let len = file
        .metadata()
        .with_context(|| format!("{}: cannot stat", path.display()))?
        .len();
    if len > MAX_CONFIG_BYTES {
        bail!(
            "{}: {len} bytes is too large (the limit is {MAX_CONFIG_BYTES} bytes, {} MiB)",
            path.display(),
            MAX_CONFIG_BYTES >> 20
        );
    }
    Ok(())
}

/// Read `DIR/config.json`, reporting parse errors with the JSON path of the bad field.
pub fn load_spec(path: &Path) -> Result<Spec> {
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    check_size(path, &file)?;
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
        check_id_maps(field, maps.as_deref().unwrap_or_default())?;
    }
    if new_user {
        // Unmapped ids fail setresuid/setgroups with a bare EINVAL deep in create.
        let user = process.user();
        let mapped = |maps: &Option<Vec<LinuxIdMapping>>, id: u32| {
            maps.iter().flatten().any(|m| {
                id >= m.container_id()
                    && u64::from(id) < u64::from(m.container_id()) + u64::from(m.size())
            })
        };
        if !mapped(linux.uid_mappings(), user.uid()) {
            bail!(
                "process.user.uid {} is not mapped by linux.uidMappings",
                user.uid()
            );
        }
        let gids = std::iter::once(("process.user.gid".to_string(), user.gid())).chain(
            user.additional_gids()
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, g)| (format!("process.user.additionalGids[{i}]"), *g)),
        );
        for (field, gid) in gids {
            if !mapped(linux.gid_mappings(), gid) {
                bail!("{field} {gid} is not mapped by linux.gidMappings");
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

/// The largest id the kernel accepts from user space. `(uid_t)-1` (4294967295) means "leave
/// unchanged" to setresuid, setresgid and chown, so such an id would keep the runtime's own
/// (root); ids above 2^31-1 are refused like runc and the kernel's own tools do.
pub const MAX_ID: u32 = i32::MAX as u32;

/// One id from the config: `field` names it in the error.
pub fn check_id(field: &str, id: u32) -> Result<()> {
    if id > MAX_ID {
        bail!("{field} {id} is out of range 0..{MAX_ID}");
    }
    Ok(())
}

/// The kernel takes at most 340 lines per map (it rejects the whole write otherwise); ranges
/// must not wrap past 2^32 or overlap on either side (an overlap is rejected by the kernel with
/// a bare EPERM/EINVAL on write, after the namespace already exists).
const MAX_MAP_LINES: usize = 340;

fn check_id_maps(field: &str, maps: &[LinuxIdMapping]) -> Result<()> {
    if maps.len() > MAX_MAP_LINES {
        bail!(
            "{field}: {} ranges, the kernel takes at most {MAX_MAP_LINES}",
            maps.len()
        );
    }
    let end = |start: u32, size: u32| u64::from(start) + u64::from(size);
    for (i, m) in maps.iter().enumerate() {
        if m.size() == 0 {
            bail!("{field}[{i}].size: must be at least 1");
        }
        for (what, start) in [("containerID", m.container_id()), ("hostID", m.host_id())] {
            if end(start, m.size()) > u64::from(u32::MAX) {
                bail!(
                    "{field}[{i}]: {what} {start} + size {} goes past 4294967294",
                    m.size()
                );
            }
        }
        for (j, other) in maps[..i].iter().enumerate() {
            // Both ends were checked above not to pass 2^32, so u64 sums are exact.
            let overlaps =
                |a: u32, b: u32| a < end(b, other.size()) as u32 && b < end(a, m.size()) as u32;
            if overlaps(m.container_id(), other.container_id()) {
                bail!("{field}[{i}]: containerID range overlaps {field}[{j}]");
            }
            if overlaps(m.host_id(), other.host_id()) {
                bail!("{field}[{i}]: hostID range overlaps {field}[{j}]");
            }
        }
    }
    Ok(())
}

/// Checks shared by `create` and `exec --process`.
pub fn validate_process(process: &Process, field: &str) -> Result<()> {
    let user = process.user();
    check_id(&format!("{field}.user.uid"), user.uid())?;
    check_id(&format!("{field}.user.gid"), user.gid())?;
    for (i, g) in user.additional_gids().iter().flatten().enumerate() {
        check_id(&format!("{field}.user.additionalGids[{i}]"), *g)?;
    }
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
    fn ids_that_mean_unchanged_to_the_kernel_are_refused() {
        // setresuid(-1) keeps the caller's id: this would have run the process as root.
        let mut c = base();
        c["process"]["user"]["uid"] = u32::MAX.into();
        assert_eq!(
            error_of(c),
            "config.json: process.user.uid 4294967295 is out of range 0..2147483647"
        );
        let mut c = base();
        c["process"]["user"]["gid"] = (1u64 << 31).into();
        assert!(error_of(c).ends_with("process.user.gid 2147483648 is out of range 0..2147483647"));
        let mut c = base();
        c["process"]["user"]["additionalGids"] = serde_json::json!([10, u32::MAX]);
        assert!(error_of(c).contains("process.user.additionalGids[1] 4294967295 is out of range"));
        let mut c = base();
        c["process"]["user"]["uid"] = MAX_ID.into();
        assert!(load_bundle(write_bundle(&c).path()).is_ok());
    }

    #[test]
    fn device_owner_out_of_range() {
        let mut c = base();
        c["linux"]["devices"] = serde_json::json!([
            {"path": "/dev/yunnull", "type": "c", "major": 1, "minor": 3, "uid": u32::MAX}
        ]);
        assert!(error_of(c).contains("linux.devices[0]: uid 4294967295 is out of range"));
    }

    fn with_userns(maps: serde_json::Value) -> serde_json::Value {
        let mut c = base();
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "user"}));
        c["linux"]["uidMappings"] = maps;
        c["linux"]["gidMappings"] =
            serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        c
    }

    #[test]
    fn id_maps_must_not_wrap_or_overlap() {
        let e = error_of(with_userns(
            serde_json::json!([{"containerID": 0, "hostID": 4294967000u32, "size": 65536}]),
        ));
        assert!(
            e.contains("linux.uidMappings[0]: hostID 4294967000 + size 65536 goes past"),
            "{e}"
        );
        let e = error_of(with_userns(serde_json::json!([
            {"containerID": 0, "hostID": 100000, "size": 1000},
            {"containerID": 999, "hostID": 300000, "size": 10}
        ])));
        assert!(
            e.contains("linux.uidMappings[1]: containerID range overlaps linux.uidMappings[0]"),
            "{e}"
        );
        let e = error_of(with_userns(serde_json::json!([
            {"containerID": 0, "hostID": 100000, "size": 1000},
            {"containerID": 1000, "hostID": 100999, "size": 10}
        ])));
        assert!(
            e.contains("linux.uidMappings[1]: hostID range overlaps"),
            "{e}"
        );
        let mut c =
            with_userns(serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 1000}]));
        c["process"]["user"]["uid"] = 1000.into();
        let e = error_of(c);
        assert!(
            e.ends_with("process.user.uid 1000 is not mapped by linux.uidMappings"),
            "{e}"
        );
        let mut c =
            with_userns(serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 1000}]));
        c["process"]["user"]["additionalGids"] = serde_json::json!([70000]);
        let e = error_of(c);
        assert!(
            e.ends_with("process.user.additionalGids[0] 70000 is not mapped by linux.gidMappings"),
            "{e}"
        );
        let ok = with_userns(serde_json::json!([
            {"containerID": 0, "hostID": 100000, "size": 1000},
            {"containerID": 1000, "hostID": 101000, "size": 10}
        ]));
        assert!(load_bundle(write_bundle(&ok).path()).is_ok());
    }

    #[test]
    fn a_config_above_the_limit_is_refused_by_size() {
        let dir = write_bundle(&base());
        let path = dir.path().join("config.json");
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(MAX_CONFIG_BYTES + 1).unwrap();
        let e = format!("{:#}", load_bundle(dir.path()).unwrap_err());
        assert!(
            e.ends_with(
                "config.json: 16777217 bytes is too large (the limit is 16777216 bytes, 16 MiB)"
            ),
            "{e}"
        );
    }

    #[test]
    fn empty_args() {
        let mut c = base();
        c["process"]["args"] = serde_json::json!([]);
        assert!(error_of(c).contains("process.args"));
    }
}
