//! Linux namespaces: which to create, which to join, and the user namespace's id maps.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

/// The kernel's short name (as in /proc/PID/ns/NAME).
pub fn name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

pub fn flag(t: LinuxNamespaceType) -> CloneFlags {
    CloneFlags::from_bits_retain(t as i32)
}

/// All types in the order the kernel wants them joined: user first (it grants the
/// capabilities for the others), mount last but one (after it, host paths are gone), and
/// cgroup last (it must see the cgroup the process was already moved into).
pub const JOIN_ORDER: [LinuxNamespaceType; 8] = [
    LinuxNamespaceType::User,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Network,
    LinuxNamespaceType::Pid,
    LinuxNamespaceType::Time,
    LinuxNamespaceType::Mount,
    LinuxNamespaceType::Cgroup,
];

const NS_GET_NSTYPE: libc::c_ulong = 0xb703; // _IO(0xb7, 0x3)

/// Check that `path` is a namespace file of type `t` (a wrong type would be joined silently).
pub fn check_ns_file(path: &Path, t: LinuxNamespaceType) -> Result<()> {
    let f = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    // SAFETY: NS_GET_NSTYPE takes no argument and only inspects the fd.
    let got = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_NSTYPE) };
    if got < 0 {
        bail!("{} is not a namespace file", path.display());
    }
    if got != t as i32 {
        bail!("{} is not a {} namespace", path.display(), name(t));
    }
    Ok(())
}

/// What the config asks for, split into namespaces to create and namespaces to join.
#[derive(Debug, Clone)]
pub struct Plan {
    /// New namespaces other than user (created together by one unshare).
    pub new: CloneFlags,
    pub new_user: bool,
    /// Existing namespaces to join, in JOIN_ORDER.
    pub join: Vec<(LinuxNamespaceType, PathBuf)>,
}

impl Plan {
    pub fn from_spec(spec: &Spec) -> Plan {
        let mut plan = Plan {
            new: CloneFlags::empty(),
            new_user: false,
            join: Vec::new(),
        };
        let list = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default();
        for t in JOIN_ORDER {
            let Some(ns) = list.iter().find(|n| n.typ() == t) else {
                continue;
            };
            match ns.path() {
                Some(p) => plan.join.push((t, p.clone())),
                None if t == LinuxNamespaceType::User => plan.new_user = true,
                None => plan.new |= flag(t),
            }
        }
        plan
    }

    pub fn creates(&self, t: LinuxNamespaceType) -> bool {
        if t == LinuxNamespaceType::User {
            self.new_user
        } else {
            self.new.contains(flag(t))
        }
    }

    /// Whether the process that calls unshare/setns must fork once more for the change to
    /// apply to itself (pid and time namespaces only apply to children).
    pub fn needs_fork(&self) -> bool {
        self.new
            .intersects(CloneFlags::CLONE_NEWPID | flag(LinuxNamespaceType::Time))
            || self
                .join
                .iter()
                .any(|(t, _)| matches!(t, LinuxNamespaceType::Pid | LinuxNamespaceType::Time))
    }
}

/// Open the namespace files first, then join them in order: once the mount namespace is
/// joined the paths may no longer resolve.
pub fn join_all(join: &[(LinuxNamespaceType, PathBuf)]) -> Result<()> {
    let mut fds: Vec<(LinuxNamespaceType, OwnedFd)> = Vec::with_capacity(join.len());
    for (t, path) in join {
        let f = File::open(path)
            .with_context(|| format!("open {} namespace {}", name(*t), path.display()))?;
        fds.push((*t, f.into()));
    }
    for (t, fd) in fds {
        nix::sched::setns(&fd, flag(t)).with_context(|| format!("join {} namespace", name(t)))?;
    }
    Ok(())
}

/// Write the id maps of the process `pid` that has just unshared its user namespace.
/// setgroups must be written before gid_map; "deny" is only required when the writer lacks
/// CAP_SETGID over the parent namespace (rootless), and denying it otherwise would stop
/// the container from setting its supplementary groups.
pub fn write_id_maps(
    pid: i32,
    uid_maps: &[LinuxIdMapping],
    gid_maps: &[LinuxIdMapping],
) -> Result<()> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let privileged =
        caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SETGID).unwrap_or(false);
    if !privileged {
        std::fs::write(proc.join("setgroups"), "deny").context("write setgroups")?;
    }
    std::fs::write(proc.join("uid_map"), format_map(uid_maps))
        .context("linux.uidMappings: write uid_map")?;
    std::fs::write(proc.join("gid_map"), format_map(gid_maps))
        .context("linux.gidMappings: write gid_map")?;
    Ok(())
}

fn format_map(maps: &[LinuxIdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// Write the time namespace's clock offsets (before any process enters it).
pub fn write_time_offsets(spec: &Spec) -> Result<()> {
    let Some(offsets) = spec.linux().as_ref().and_then(|l| l.time_offsets().clone()) else {
        return Ok(());
    };
    let mut text = String::new();
    for (clock, off) in offsets {
        text.push_str(&format!(
            "{clock} {} {}\n",
            off.secs().unwrap_or(0),
            off.nanosecs().unwrap_or(0)
        ));
    }
    std::fs::write("/proc/self/timens_offsets", text).context("linux.timeOffsets")
}

/// A new network namespace has only `lo`, and it is down; every container expects it up
/// (127.0.0.1 is how processes in one pod talk). An ioctl, no netlink needed.
pub fn loopback_up() -> Result<()> {
    // SAFETY: a plain datagram socket, closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        bail!("socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: we own the fd just created.
    let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(sock) };
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            bail!("get lo flags: {}", std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            bail!("set lo up: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_splits_new_and_joined() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {"namespaces": [
                {"type": "network", "path": "/proc/1/ns/net"},
                {"type": "pid"}, {"type": "user"}, {"type": "mount"}
            ]}
        }))
        .unwrap();
        let p = Plan::from_spec(&spec);
        assert!(p.new_user);
        assert!(p
            .new
            .contains(CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS));
        assert!(!p.new.contains(CloneFlags::CLONE_NEWNET));
        assert_eq!(p.join.len(), 1);
        assert!(p.needs_fork());
    }

    #[test]
    fn ns_file_type_is_checked() {
        check_ns_file(Path::new("/proc/self/ns/net"), LinuxNamespaceType::Network).unwrap();
        let e = check_ns_file(Path::new("/proc/self/ns/net"), LinuxNamespaceType::Pid)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a pid namespace"), "{e}");
        assert!(check_ns_file(Path::new("/etc/passwd"), LinuxNamespaceType::Pid).is_err());
    }

    #[test]
    fn maps_format() {
        let m: Vec<LinuxIdMapping> = serde_json::from_value(serde_json::json!([
            {"containerID": 0, "hostID": 100000, "size": 65536}
        ]))
        .unwrap();
        assert_eq!(format_map(&m), "0 100000 65536\n");
    }
}
