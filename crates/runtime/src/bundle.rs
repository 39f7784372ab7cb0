//! The built-in offline base image: an OCI bundle whose root filesystem is the host's static
//! busybox, so a first container never needs a registry.
//!
//! [`default_spec`] is yun's `runc spec` (and `runc spec --rootless`); [`build_busybox_rootfs`]
//! builds the image; [`create_busybox_bundle`] puts both together in a bundle directory.

mod busybox;
mod ordered_json;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use oci_spec::runtime::{RootBuilder, Spec};
use serde_json::{json, Value};

use ordered_json::OrderedJson;

pub use busybox::{build_busybox_rootfs, HOST_BUSYBOX, MARKER, YUN_UID};

/// `PATH` of the default process, as in `runc spec`.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Hostname of the default spec.
pub const DEFAULT_HOSTNAME: &str = "yun";

/// Marks yun's temp files and dirs: `.<name>.yun-tmp.<pid>.<n>` beside the final `<name>`.
const TEMP_INFIX: &str = ".yun-tmp.";

/// The default spec for a bundle, equivalent to `runc spec`: `args` (or `["sh"]` when empty)
/// run as 0:0 in `/` without a terminal, with runc's default capabilities (AUDIT_WRITE, KILL,
/// NET_BIND_SERVICE), RLIMIT_NOFILE 1024, noNewPrivileges, root `rootfs` (writable), hostname
/// `yun`, runc's mounts, namespaces, masked and read-only paths, and all devices denied.
///
/// `rootless` gives the `runc spec --rootless` variant: a user namespace mapping the current
/// euid/egid to root, no network namespace, /sys as a read-only rbind of the host's /sys, no
/// cgroup mount, no `gid=`/`uid=` mount options and no resources.
pub fn default_spec(args: &[String], rootless: bool) -> Result<Spec> {
    let args: Vec<String> = if args.is_empty() {
        vec!["sh".to_string()]
    } else {
        args.to_vec()
    };
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);

    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
    ];
    let mut namespaces = vec!["pid", "network", "ipc", "uts", "mount", "cgroup"];
    let mut linux = json!({
        "maskedPaths": [
            "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
            "/proc/scsi"
        ],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    });

    if rootless {
        // A user namespace can map only the caller's own ids, so gid=5 on devpts and the
        // cgroup mount are gone, and sysfs (owned by the host's network namespace) is bound.
        for mount in &mut mounts {
            if let Some(Value::Array(options)) = mount.get_mut("options") {
                options.retain(|o| {
                    let o = o.as_str().unwrap_or_default();
                    !o.starts_with("gid=") && !o.starts_with("uid=")
                });
            }
        }
        mounts.push(
            json!({"destination": "/sys", "type": "none", "source": "/sys",
                           "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}),
        );
        namespaces.retain(|ns| *ns != "network");
        namespaces.push("user");
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        linux["uidMappings"] = json!([{"containerID": 0, "hostID": uid, "size": 1}]);
        linux["gidMappings"] = json!([{"containerID": 0, "hostID": gid, "size": 1}]);
    } else {
        mounts.push(
            json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                           "options": ["nosuid", "noexec", "nodev", "ro"]}),
        );
        mounts.push(
            json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                           "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
        );
        linux["resources"] = json!({"devices": [{"allow": false, "access": "rwm"}]});
    }
    linux["namespaces"] = namespaces.iter().map(|ns| json!({"type": ns})).collect();

    let spec = json!({
        "ociVersion": oci_spec::runtime::VERSION,
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": [DEFAULT_PATH, "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": DEFAULT_HOSTNAME,
        "mounts": mounts,
        "linux": linux,
    });
    serde_json::from_value(spec).context("building the default spec")
}

/// Write `bundle/config.json` (atomically) with [`default_spec`] for `args`, and the busybox
/// image with [`build_busybox_rootfs`].
///
/// The spec is the rootless variant when the caller is not root (the only kind an unprivileged
/// user can run). With `shared_rootfs`, the image is built there (once; later calls find it
/// complete) and `root.path` is that absolute path, so many bundles share one image; otherwise
/// the image goes to `bundle/rootfs`. The image is built before config.json is written, so a
/// bundle with a config.json is complete. On error, a bundle directory this call created is
/// removed again. Returns the spec written.
pub fn create_busybox_bundle(
    bundle: &Path,
    args: &[String],
    shared_rootfs: Option<&Path>,
) -> Result<Spec> {
    let rootless = !nix::unistd::geteuid().is_root();
    let mut spec = default_spec(args, rootless)?;
    let created_bundle = !bundle.exists();
    fs::create_dir_all(bundle)
        .with_context(|| format!("creating bundle directory {}", bundle.display()))?;

    let result = (|| {
        match shared_rootfs {
            Some(shared) => {
                build_busybox_rootfs(shared)?;
                let path = std::path::absolute(shared)
                    .with_context(|| format!("making {} absolute", shared.display()))?;
                spec.set_root(Some(
                    RootBuilder::default().path(path).readonly(false).build()?,
                ));
            }
            None => build_busybox_rootfs(&bundle.join("rootfs"))?,
        }
        write_config(bundle, &spec)
    })();
    if let Err(e) = result {
        if created_bundle {
            let _ = fs::remove_dir_all(bundle);
        }
        return Err(e);
    }
    Ok(spec)
}

/// Write `spec` to `bundle/config.json` like runc does (JSON, 2-space indent), atomically.
/// Capability sets are sorted so the file is the same on every run.
pub fn write_config(bundle: &Path, spec: &Spec) -> Result<()> {
    let text = serde_json::to_string(spec).context("serializing the spec")?;
    let mut tree: OrderedJson = serde_json::from_str(&text).context("serializing the spec")?;
    if let Some(caps) = tree
        .get_mut("process")
        .and_then(|p| p.get_mut("capabilities"))
    {
        caps.sort_string_arrays();
    }
    let mut json = serde_json::to_vec_pretty(&tree).context("serializing the spec")?;
    json.push(b'\n');
    write_atomically(&bundle.join("config.json"), &json)
}

/// Write a file through a temp file beside it: write, fsync, rename, fsync the directory. On
/// error the temp file is removed and the old file (if any) is untouched.
fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let temp = temp_sibling(path)?;
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&temp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    sync_dir(
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )
}

/// A unique, hidden temp path beside `path`: `.<name>.yun-tmp.<pid>.<n>`.
fn temp_sibling(path: &Path) -> Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .with_context(|| format!("{} has no final name", path.display()))?;
    let mut temp = OsString::from(".");
    temp.push(name);
    temp.push(format!(
        "{TEMP_INFIX}{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    Ok(path.with_file_name(temp))
}

/// fsync a directory so the entries created or renamed in it survive a crash.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}
