//! Device access rules (`linux.resources.devices`) for the v1 devices controller.
//!
//! cgroup v2 has no devices files: access is checked by an eBPF program attached to the cgroup,
//! which yun does not build yet, so on v2 the rules are reported as not enforced (the container
//! still only sees the device nodes its config creates).

use anyhow::{bail, Result};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::{set, Manager};

/// Devices every container may use on top of its config rules: the OCI runtime spec's default
/// devices plus /dev/net/tun, as runc allows.
pub const DEFAULT_DEVICE_RULES: [&str; 10] = [
    "c 1:3 rwm",    // /dev/null
    "c 1:5 rwm",    // /dev/zero
    "c 1:7 rwm",    // /dev/full
    "c 1:8 rwm",    // /dev/random
    "c 1:9 rwm",    // /dev/urandom
    "c 5:0 rwm",    // /dev/tty
    "c 5:1 rwm",    // /dev/console
    "c 5:2 rwm",    // /dev/ptmx
    "c 136:* rwm",  // /dev/pts/*
    "c 10:200 rwm", // /dev/net/tun
];

/// The devices cgroup lines for one config rule, each `(allow, "c 1:3 rwm")`.
///
/// The kernel reads any line starting with "a" as "every device, every access", whatever
/// follows. So only a wildcard rule becomes "a"; a type-"a" rule that names a major or minor is
/// spelled out for both character and block devices, so it cannot widen to everything. FIFOs
/// ("p") yield nothing: the devices controller never checks them.
pub fn rule_lines(rule: &LinuxDeviceCgroup) -> Vec<(bool, String)> {
    let types: &[&str] = match rule.typ().unwrap_or_default() {
        LinuxDeviceType::A => &["c", "b"],
        LinuxDeviceType::B => &["b"],
        // 'u' (unbuffered character device) is a character device to the kernel.
        LinuxDeviceType::C | LinuxDeviceType::U => &["c"],
        LinuxDeviceType::P => return Vec::new(),
    };
    // -1 is how Go runtimes spell the wildcard.
    let major = rule.major().filter(|n| *n >= 0);
    let minor = rule.minor().filter(|n| *n >= 0);
    let allow = rule.allow();
    if rule.typ().unwrap_or_default() == LinuxDeviceType::A && major.is_none() && minor.is_none() {
        return vec![(allow, "a".to_string())];
    }
    let num = |n: Option<i64>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
    let access = rule
        .access()
        .as_deref()
        .filter(|a| !a.is_empty())
        .unwrap_or("rwm");
    types
        .iter()
        .map(|t| (allow, format!("{t} {}:{} {access}", num(major), num(minor))))
        .collect()
}

/// Write the config rules in order, then always allow the default devices.
pub fn apply_v1(m: &Manager, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    let Some(h) = m.hierarchy("devices") else {
        if !rules.is_empty() {
            bail!("linux.resources.devices: the devices controller is not available on this host");
        }
        return Ok(());
    };
    for (i, rule) in rules.iter().enumerate() {
        let field = format!("linux.resources.devices[{i}]");
        for (allow, line) in rule_lines(rule) {
            let file = if allow {
                "devices.allow"
            } else {
                "devices.deny"
            };
            set(&h.dir, file, &line, &field)?;
        }
    }
    for line in DEFAULT_DEVICE_RULES {
        set(&h.dir, "devices.allow", line, "default device rules")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    fn rule(
        allow: bool,
        typ: LinuxDeviceType,
        major: Option<i64>,
        minor: Option<i64>,
        access: &str,
    ) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().unwrap()
    }

    fn lines(r: LinuxDeviceCgroup) -> Vec<(bool, String)> {
        rule_lines(&r)
    }

    #[test]
    fn rule_formatting() {
        use LinuxDeviceType::*;
        let one = |allow: bool, s: &str| vec![(allow, s.to_string())];
        assert_eq!(lines(rule(false, A, None, None, "rwm")), one(false, "a"));
        assert_eq!(lines(rule(true, A, None, None, "rwm")), one(true, "a"));
        assert_eq!(
            lines(rule(true, C, Some(1), Some(3), "rwm")),
            one(true, "c 1:3 rwm")
        );
        assert_eq!(
            lines(rule(true, C, Some(136), None, "rw")),
            one(true, "c 136:* rw")
        );
        assert_eq!(
            lines(rule(false, B, None, Some(-1), "m")),
            one(false, "b *:* m")
        );
        // Unbuffered character devices are character devices; no access means all access.
        assert_eq!(
            lines(rule(true, U, Some(4), Some(1), "")),
            one(true, "c 4:1 rwm")
        );
        assert_eq!(lines(rule(true, P, Some(4), Some(1), "r")), vec![]);
        // Never "a 4:* r": the kernel would read that as allow-everything.
        assert_eq!(
            lines(rule(true, A, Some(4), None, "r")),
            vec![(true, "c 4:* r".to_string()), (true, "b 4:* r".to_string())]
        );
    }

    #[test]
    fn default_rules_cover_the_oci_devices() {
        for want in ["c 1:3 rwm", "c 5:2 rwm", "c 136:* rwm", "c 10:200 rwm"] {
            assert!(DEFAULT_DEVICE_RULES.contains(&want));
        }
    }
}
