//! The runtime config for a container, made from the image's config and `yun run`'s flags the
//! way Docker and podman do it: entrypoint + cmd, env, working dir, user, volumes, limits.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use oci_spec::image::Config as ImageConfig;
use oci_spec::runtime::{
    Capability, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder,
    LinuxResourcesBuilder, Mount, MountBuilder, Spec, UserBuilder,
};

/// What `yun run` was asked for.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub name: Option<String>,
    pub detach: bool,
    pub auto_remove: bool,
    pub tty: bool,
    pub interactive: bool,
    /// With `detach` and `interactive`: stdin stays open for attach; closed after the first
    /// attach ends.
    pub stdin_once: bool,
    pub env: Vec<String>,
    /// HOST:CTR[:ro] or NAME:CTR[:ro] (a named volume under the data dir).
    pub volumes: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// Bytes.
    pub memory: Option<i64>,
    /// CPUs, e.g. 0.5.
    pub cpus: Option<f64>,
    /// Relative CPU weight under contention (cgroup v1 cpu.shares, 1024 = one CPU's worth).
    pub cpu_shares: Option<u64>,
    /// Replaces the image's Cmd (and is appended to its Entrypoint).
    pub command: Vec<String>,
    pub entrypoint: Option<String>,
    /// `--security-opt seccomp=unconfined`: no default seccomp profile.
    pub seccomp_unconfined: bool,
    /// The hostname (default: the first 12 digits of the id).
    pub hostname: Option<String>,
    /// More /etc/hosts lines, `IP NAME...` (Docker's `--add-host`; a pod's own IP and names,
    /// its hostAliases).
    pub extra_hosts: Vec<(String, Vec<String>)>,
    /// Join these existing namespaces instead of creating new ones (a pod's containers share
    /// the network, IPC and UTS namespaces of its sandbox), e.g. (Network, /proc/PID/ns/net).
    pub join_namespaces: Vec<(oci_spec::runtime::LinuxNamespaceType, PathBuf)>,
    /// Recorded with the container, for finding it again.
    pub labels: std::collections::BTreeMap<String, String>,
    /// How big a detached container's log may grow (default: 10 MiB × 5 files).
    pub log_rotation: Option<crate::logfile::Rotation>,
    /// Host devices given to the container (Docker's `--device HOST:CTR`): (host path,
    /// path in the container).
    pub devices: Vec<(PathBuf, String)>,
}

/// The default seccomp profile: allow everything but the syscalls Docker's profile denies that
/// the dropped capabilities do not already stop (the kernel keyring is not namespaced;
/// userfaultfd, bpf and perf_event_open widen the kernel's attack surface), plus the ones
/// that reach host-global state. A deny-list compiles in well under a millisecond, where an
/// allow-list of ~400 names takes ~10 ms on every start.
pub const DEFAULT_DENIED_SYSCALLS: [&str; 24] = [
    "add_key",
    "keyctl",
    "request_key",
    "userfaultfd",
    "bpf",
    "perf_event_open",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "open_by_handle_at",
    "name_to_handle_at",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "quotactl",
    "lookup_dcookie",
    "fanotify_init",
];

/// Docker's default capability set: what a containerized root may do.
const DEFAULT_CAPS: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Files the engine generates per container and binds into it.
pub struct Generated {
    pub hosts: PathBuf,
    pub hostname: PathBuf,
    pub resolv: PathBuf,
}

impl Generated {
    /// Write `dir/{hosts,hostname,resolv.conf}` for a container named `hostname`, with
    /// `extra` lines in /etc/hosts. The hostname maps to 127.0.1.1 unless an extra line
    /// names it (a pod's hostname maps to the pod's IP, as the kubelet writes it).
    pub fn write(dir: &Path, hostname: &str, extra: &[(String, Vec<String>)]) -> Result<Generated> {
        std::fs::create_dir_all(dir)?;
        let files = Generated {
            hosts: dir.join("hosts"),
            hostname: dir.join("hostname"),
            resolv: dir.join("resolv.conf"),
        };
        std::fs::write(&files.hosts, hosts_file(hostname, extra))?;
        std::fs::write(&files.hostname, format!("{hostname}\n"))?;
        std::fs::write(
            &files.resolv,
            std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        )?;
        Ok(files)
    }
}

fn hosts_file(hostname: &str, extra: &[(String, Vec<String>)]) -> String {
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if !extra
        .iter()
        .any(|(_, names)| names.iter().any(|n| n == hostname))
    {
        s.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    for (ip, names) in extra {
        s.push_str(&format!("{ip}\t{}\n", names.join("\t")));
    }
    s
}

pub struct Input<'a> {
    pub image: &'a ImageConfig,
    pub opts: &'a RunOptions,
    pub rootfs: &'a Path,
    pub hostname: &'a str,
    pub files: &'a Generated,
    /// Where named volumes live.
    pub volumes_dir: &'a Path,
}

/// The process args: entrypoint + cmd, each overridable.
pub fn command(image: &ImageConfig, opts: &RunOptions) -> Result<Vec<String>> {
    let entrypoint: Vec<String> = match &opts.entrypoint {
        Some(e) if e.is_empty() => Vec::new(),
        Some(e) => vec![e.clone()],
        None => image.entrypoint().clone().unwrap_or_default(),
    };
    let cmd = if opts.command.is_empty() {
        image.cmd().clone().unwrap_or_default()
    } else {
        opts.command.clone()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        bail!("no command: the image has no Entrypoint or Cmd and none was given");
    }
    Ok(args)
}

pub fn generate(input: &Input) -> Result<Spec> {
    let opts = input.opts;
    let img = input.image;
    let args = command(img, opts)?;
    let mut spec = yun_runtime::bundle::default_spec(&args, false)?;

    let mut env: Vec<String> = img.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    env.push(format!("HOSTNAME={}", input.hostname));
    if opts.tty {
        env.push("TERM=xterm".into());
    }
    for kv in &opts.env {
        let kv = if kv.contains('=') {
            kv.clone()
        } else {
            // `-e NAME` passes the caller's value, like docker.
            format!("{kv}={}", std::env::var(kv).unwrap_or_default())
        };
        let key = kv.split('=').next().unwrap_or_default().to_string();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(kv);
    }
    let cwd = opts
        .workdir
        .clone()
        .or_else(|| img.working_dir().clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        bail!("-w {cwd:?}: the working directory must be an absolute path");
    }
    let user_spec = opts
        .user
        .clone()
        .or_else(|| img.user().clone().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "0".into());
    let field = if opts.user.is_some() {
        "--user"
    } else {
        "the image config's User"
    };
    let (uid, gid, groups) =
        resolve_user(input.rootfs, &user_spec).with_context(|| format!("{field} {user_spec:?}"))?;

    let caps: std::collections::HashSet<Capability> = DEFAULT_CAPS.into_iter().collect();
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(args));
    process.set_env(Some(env));
    process.set_cwd(PathBuf::from(cwd));
    process.set_terminal(Some(opts.tty));
    process.set_user(
        UserBuilder::default()
            .uid(uid)
            .gid(gid)
            .additional_gids(groups)
            .build()?,
    );
    process.set_capabilities(Some(
        LinuxCapabilitiesBuilder::default()
            .bounding(caps.clone())
            .effective(caps.clone())
            .permitted(caps.clone())
            .ambient(std::collections::HashSet::new())
            .inheritable(std::collections::HashSet::new())
            .build()?,
    ));
    process.set_no_new_privileges(Some(false));
    spec.set_process(Some(process));
    spec.set_hostname(Some(input.hostname.to_string()));
    let mut root = spec.root().clone().unwrap_or_default();
    root.set_path(input.rootfs.to_path_buf());
    spec.set_root(Some(root));

    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for (src, dst) in [
        (&input.files.hosts, "/etc/hosts"),
        (&input.files.hostname, "/etc/hostname"),
        (&input.files.resolv, "/etc/resolv.conf"),
    ] {
        mounts.push(bind(src, dst, false)?);
    }
    for v in &opts.volumes {
        mounts.push(volume(v, input.volumes_dir)?);
    }
    spec.set_mounts(Some(mounts));

    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut rules = linux
        .resources()
        .as_ref()
        .and_then(|r| r.devices().clone())
        .unwrap_or_default();
    let mut devices = linux.devices().clone().unwrap_or_default();
    for (host, ctr) in &opts.devices {
        let (device, rule) = host_device(host, ctr)?;
        devices.push(device);
        rules.push(rule);
    }
    if !devices.is_empty() {
        linux.set_devices(Some(devices));
    }
    let mut res = LinuxResourcesBuilder::default().devices(rules);
    if let Some(m) = opts.memory {
        res = res.memory(LinuxMemoryBuilder::default().limit(m).swap(m).build()?);
    }
    if opts.cpus.is_some() || opts.cpu_shares.is_some() {
        let mut cpu = LinuxCpuBuilder::default();
        if let Some(c) = opts.cpus {
            if c <= 0.0 {
                bail!("--cpus {c}: must be above 0");
            }
            let period: u64 = 100_000;
            cpu = cpu.period(period).quota((c * period as f64) as i64);
        }
        if let Some(s) = opts.cpu_shares {
            cpu = cpu.shares(s);
        }
        res = res.cpu(cpu.build()?);
    }
    linux.set_resources(Some(res.build()?));
    if !opts.join_namespaces.is_empty() {
        let mut namespaces = linux.namespaces().clone().unwrap_or_default();
        for (typ, path) in &opts.join_namespaces {
            namespaces.retain(|n| n.typ() != *typ);
            namespaces.push(
                oci_spec::runtime::LinuxNamespaceBuilder::default()
                    .typ(*typ)
                    .path(path.clone())
                    .build()?,
            );
        }
        linux.set_namespaces(Some(namespaces));
    }
    if !opts.seccomp_unconfined {
        linux.set_seccomp(Some(serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": DEFAULT_DENIED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM}],
        }))?));
    }
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// A host device node as the container's `ctr` (same numbers, read-write for root), and the
/// cgroup rule that lets the container use it.
fn host_device(
    host: &Path,
    ctr: &str,
) -> Result<(
    oci_spec::runtime::LinuxDevice,
    oci_spec::runtime::LinuxDeviceCgroup,
)> {
    use oci_spec::runtime::{LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType};
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if !ctr.starts_with('/') {
        bail!("device {ctr:?}: the path in the container must be absolute");
    }
    let meta = std::fs::metadata(host).with_context(|| format!("device {}", host.display()))?;
    let typ = if meta.file_type().is_block_device() {
        LinuxDeviceType::B
    } else if meta.file_type().is_char_device() {
        LinuxDeviceType::C
    } else {
        bail!("device {}: not a block or character device", host.display());
    };
    let (major, minor) = (
        nix::sys::stat::major(meta.rdev()) as i64,
        nix::sys::stat::minor(meta.rdev()) as i64,
    );
    let device = LinuxDeviceBuilder::default()
        .path(PathBuf::from(ctr))
        .typ(typ)
        .major(major)
        .minor(minor)
        .file_mode(0o660u32)
        .uid(0u32)
        .gid(0u32)
        .build()?;
    let rule = LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(typ)
        .major(major)
        .minor(minor)
        .access("rwm")
        .build()?;
    Ok((device, rule))
}

fn bind(src: &Path, dst: &str, ro: bool) -> Result<Mount> {
    let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
    if ro {
        options.push("ro".into());
    }
    Ok(MountBuilder::default()
        .destination(dst)
        .typ("bind")
        .source(src)
        .options(options)
        .build()?)
}

/// `-v HOST:CTR[:ro|rw]`; a source without '/' is a named volume kept under the data dir.
fn volume(v: &str, volumes_dir: &Path) -> Result<Mount> {
    let parts: Vec<&str> = v.split(':').collect();
    let (src, dst, ro) = match parts.as_slice() {
        [s, d] => (*s, *d, false),
        [s, d, "ro"] => (*s, *d, true),
        [s, d, "rw"] => (*s, *d, false),
        _ => bail!("-v {v:?}: expected HOST:CONTAINER[:ro]"),
    };
    if !dst.starts_with('/') {
        bail!("-v {v:?}: the container path must be absolute");
    }
    let src_path = if src.starts_with('/') {
        PathBuf::from(src)
    } else {
        if src.is_empty() || src.contains("..") {
            bail!("-v {v:?}: invalid volume name");
        }
        volumes_dir.join(src).join("_data")
    };
    // Like docker: a missing host directory is created.
    if !src_path.exists() {
        std::fs::create_dir_all(&src_path)
            .with_context(|| format!("-v {v:?}: create {}", src_path.display()))?;
    }
    bind(&src_path, dst, ro)
}

/// The highest uid or gid a container process may get. Ids are signed in much of the
/// kernel's and libc's interfaces (to setresuid and chown, 4294967295 is -1: "leave it
/// unchanged"), so runc and Docker stop at 2^31-1 too.
pub const MAX_ID: u32 = i32::MAX as u32;

/// `s` as a uid or gid when it is a number (None for a name); a number outside
/// 0..=[`MAX_ID`] (negative ones too) is an error naming `kind` ("uid", "gid").
fn numeric_id(kind: &str, s: &str) -> Result<Option<u32>> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    match s.parse::<i64>() {
        Ok(n) if (0..=i64::from(MAX_ID)).contains(&n) => Ok(Some(n as u32)),
        _ => bail!("{kind} {s} is out of range (0 to {MAX_ID})"),
    }
}

/// Check the numeric parts of a "user[:group]" spec before anything is made for a
/// container; `field` names where the spec came from (`--user`, the image's `User`).
pub fn check_user_ids(field: &str, spec: &str) -> Result<()> {
    let (user, group) = spec.split_once(':').unwrap_or((spec, ""));
    numeric_id("uid", user)
        .and_then(|_| numeric_id("gid", group))
        .with_context(|| format!("{field} {spec:?}"))?;
    Ok(())
}

/// The largest /etc/passwd or /etc/group read from an image.
const MAX_ID_FILE: u64 = 4 << 20;

/// A file of the image as its container sees it: resolved inside the rootfs
/// (`RESOLVE_IN_ROOT`), so an image whose `etc/passwd` is a symlink to `/etc/shadow` names
/// its own file, never the host's. A missing file reads as empty.
fn read_in_root(rootfs: &Path, path: &str) -> Result<String> {
    use std::io::Read;
    let root = yun_runtime::rootfs::path::Root::open(rootfs)?;
    let fd = match root.open_with(Path::new(path), nix::fcntl::OFlag::O_RDONLY) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(String::new()),
        Err(e) => bail!("{path} in the image: {e}"),
    };
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(MAX_ID_FILE + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("{path} in the image"))?;
    if text.len() as u64 > MAX_ID_FILE {
        bail!("{path} in the image is larger than {MAX_ID_FILE} bytes");
    }
    Ok(text)
}

/// "uid[:gid]" or "name[:group]", names looked up in the image's /etc/passwd and /etc/group.
/// Every id, given or looked up, must be within 0..=[`MAX_ID`].
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<(u32, u32, Vec<u32>)> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let from_file = |kind: &str, file: &str, s: &str| -> Result<u32> {
        numeric_id(kind, s)?.ok_or_else(|| anyhow!("{file}: {kind} {s:?} is not a number"))
    };
    let passwd = read_in_root(rootfs, "/etc/passwd")?;
    let groups = read_in_root(rootfs, "/etc/group")?;
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == user || f[2] == user));
    let uid: u32 = match (numeric_id("uid", user)?, &entry) {
        (Some(n), _) => n,
        (None, Some(f)) => from_file("uid", "/etc/passwd", f[2])?,
        (None, None) => bail!("unable to find user {user}: no matching entries in passwd file"),
    };
    let gid: u32 = match group {
        Some(g) => match numeric_id("gid", g)? {
            Some(n) => n,
            None => {
                let f = groups
                    .lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.len() >= 3 && f[0] == g)
                    .ok_or_else(|| {
                        anyhow!("unable to find group {g}: no matching entries in group file")
                    })?;
                from_file("gid", "/etc/group", f[2])?
            }
        },
        None => match &entry {
            Some(f) => from_file("gid", "/etc/passwd", f[3])?,
            None => 0,
        },
    };
    // Supplementary groups: those that list the user by name.
    let name = entry.as_ref().map(|f| f[0]).unwrap_or(user);
    let extra: Vec<u32> = groups
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4 && f[3].split(',').any(|m| m == name))
        .filter_map(|f| f[2].parse().ok().filter(|g| *g <= MAX_ID))
        .filter(|g| *g != gid)
        .collect();
    Ok((uid, gid, extra))
}

/// "64m", "1g", "512k", "1048576" → bytes.
pub fn parse_memory(s: &str) -> Result<i64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s);
    let (num, mult) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], 1i64 << 10),
        Some('m') => (&s[..s.len() - 1], 1 << 20),
        Some('g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow!("-m {s:?}: expected a size like 64m or 1g"))?;
    if n <= 0.0 {
        bail!("-m {s:?}: must be above 0");
    }
    Ok((n * mult as f64) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_maps_to_its_own_line_or_loopback() {
        let plain = hosts_file("box", &[]);
        assert!(plain.ends_with("127.0.1.1\tbox\n"), "{plain}");
        let pod = hosts_file(
            "web-0",
            &[(
                "10.42.0.5".into(),
                vec!["web-0.svc.ns.svc.cluster.local".into(), "web-0".into()],
            )],
        );
        assert!(!pod.contains("127.0.1.1"), "{pod}");
        assert!(
            pod.ends_with("10.42.0.5\tweb-0.svc.ns.svc.cluster.local\tweb-0\n"),
            "{pod}"
        );
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("64m").unwrap(), 64 << 20);
        assert_eq!(parse_memory("1G").unwrap(), 1 << 30);
        assert_eq!(parse_memory("512k").unwrap(), 512 << 10);
        assert_eq!(parse_memory("1000").unwrap(), 1000);
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("0").is_err());
    }

    #[test]
    fn id_files_are_read_inside_the_image() {
        let base = std::env::temp_dir().join(format!("yun-test-idlink-{}", std::process::id()));
        let host_file = base.join("host-passwd");
        std::fs::create_dir_all(base.join("rootfs/etc")).unwrap();
        std::fs::write(&host_file, "hostonly:x:4242:4242::/:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink(&host_file, base.join("rootfs/etc/passwd")).unwrap();
        let found = resolve_user(&base.join("rootfs"), "hostonly");
        std::fs::remove_dir_all(&base).unwrap();
        let err = found.expect_err("a symlink out of the image must not reach the host file");
        assert!(
            err.to_string().contains("unable to find user hostonly"),
            "{err}"
        );
    }

    #[test]
    fn users_from_the_image() {
        let dir = std::env::temp_dir().join(format!("yun-test-users-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nyun:x:1000:1000::/home/yun:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("etc/group"),
            "root:x:0:\nyun:x:1000:\nwheel:x:10:yun\n",
        )
        .unwrap();
        assert_eq!(resolve_user(&dir, "yun").unwrap(), (1000, 1000, vec![10]));
        assert_eq!(
            resolve_user(&dir, "1000:wheel").unwrap(),
            (1000, 10, vec![])
        );
        assert_eq!(resolve_user(&dir, "0").unwrap(), (0, 0, vec![]));
        assert_eq!(
            resolve_user(&dir, "4242:4243").unwrap(),
            (4242, 4243, vec![])
        );
        assert!(resolve_user(&dir, "nobody-here")
            .unwrap_err()
            .to_string()
            .contains("unable to find user"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ids_outside_0_to_2_pow_31_are_refused() {
        let dir = std::env::temp_dir().join(format!("yun-test-ids-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(
            dir.join("etc/passwd"),
            "big:x:4294967295:0::/:/bin/sh\nok:x:2147483647:4294967294::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.join("etc/group"), "huge:x:3000000000:\n").unwrap();
        let err = |spec: &str| format!("{:#}", resolve_user(&dir, spec).unwrap_err());
        assert_eq!(
            err("4294967295"),
            "uid 4294967295 is out of range (0 to 2147483647)"
        );
        assert_eq!(err("-1"), "uid -1 is out of range (0 to 2147483647)");
        assert_eq!(err("0:-1"), "gid -1 is out of range (0 to 2147483647)");
        assert_eq!(
            err("99999999999999999999999"),
            "uid 99999999999999999999999 is out of range (0 to 2147483647)"
        );
        assert_eq!(
            err("big"),
            "uid 4294967295 is out of range (0 to 2147483647)"
        );
        assert_eq!(
            err("ok"),
            "gid 4294967294 is out of range (0 to 2147483647)"
        );
        assert_eq!(
            err("0:huge"),
            "gid 3000000000 is out of range (0 to 2147483647)"
        );
        assert_eq!(
            resolve_user(&dir, "2147483647:0").unwrap(),
            (MAX_ID, 0, vec![])
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            format!("{:#}", check_user_ids("--user", "4294967295").unwrap_err()),
            "--user \"4294967295\": uid 4294967295 is out of range (0 to 2147483647)"
        );
        assert!(check_user_ids("--user", "nobody:1000").is_ok());
    }

    #[test]
    fn entrypoint_and_cmd() {
        let img: ImageConfig = serde_json::from_value(
            serde_json::json!({"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"]}),
        )
        .unwrap();
        let mut o = RunOptions::default();
        assert_eq!(command(&img, &o).unwrap(), ["/bin/sh", "-c", "echo hi"]);
        o.command = vec!["echo bye".into()];
        assert_eq!(command(&img, &o).unwrap(), ["/bin/sh", "-c", "echo bye"]);
        o.entrypoint = Some(String::new());
        assert_eq!(command(&img, &o).unwrap(), ["echo bye"]);
        let empty: ImageConfig = serde_json::from_value(serde_json::json!({})).unwrap();
        assert!(command(&empty, &RunOptions::default()).is_err());
    }
}
