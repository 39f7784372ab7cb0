//! Real-sized profiles: compile time is printed (never asserted), the filters are loaded.

use std::time::Instant;

use super::*;

/// A podman-sized profile: ~400 names in one allow rule, three architectures, argument rules.
fn large_profile() -> serde_json::Value {
    let mut names: Vec<String> = (0..1024)
        .filter_map(|nr| ScmpSyscall::from(nr).get_name_by_arch(ScmpArch::X8664).ok())
        .filter(|name| name != "personality")
        .collect();
    // Names only 32-bit x86 has, and names newer than any libseccomp, as real profiles list.
    names.extend(
        [
            "_llseek",
            "_newselect",
            "socketcall",
            "waitpid",
            "sigreturn",
        ]
        .map(String::from),
    );
    names.extend((0..60).map(|i| format!("yun_future_syscall_{i}")));
    names.truncate(400);
    serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 38,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": names, "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 4294967295u64, "op": "SCMP_CMP_EQ"}]},
        ]
    })
}

/// Compile `profile` a few times and print how long it takes (timing is never asserted).
fn time_compile(label: &str, profile: &LinuxSeccomp) -> Filter {
    let mut times = Vec::new();
    let mut filter = None;
    for _ in 0..10 {
        let start = Instant::now();
        filter = Some(compile(profile).expect("profile compiles"));
        times.push(start.elapsed());
    }
    times.sort();
    let filter = filter.expect("compiled");
    let rules: usize = profile
        .syscalls()
        .iter()
        .flatten()
        .map(|rule| rule.names().len())
        .sum();
    println!(
        "seccomp compile, {label} ({rules} names): min {:?}, median {:?}, max {:?}; {} BPF instructions",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1],
        filter.program.len()
    );
    filter
}

#[test]
fn large_profile_compiles_and_loads() {
    let profile: LinuxSeccomp = serde_json::from_value(large_profile()).unwrap();
    let filter = time_compile("generated podman-sized profile", &profile);
    let status = run(&filter, || {
        let mkdir = mkdir_root() == libc::EEXIST;
        let persona_allowed = personality(0xffff_ffff) == 0;
        let persona_denied = personality(0x0400_0000) == libc::ENOSYS;
        i32::from(mkdir) | i32::from(persona_allowed) << 1 | i32::from(persona_denied) << 2
    });
    assert_eq!(exited(status), 0b111);
}

/// podman's default profile as installed by containers-common, turned into OCI form the way
/// podman does for an x86_64 container with its default capabilities.
fn containers_default_profile(path: &str) -> Option<LinuxSeccomp> {
    let text = std::fs::read_to_string(path).ok()?;
    let docker: serde_json::Value = serde_json::from_str(&text).expect("seccomp.json parses");
    let caps = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
        "CAP_SETFCAP",
        "CAP_SETGID",
        "CAP_SETPCAP",
        "CAP_SETUID",
        "CAP_SYS_CHROOT",
    ];
    let strings = |value: &serde_json::Value| -> Vec<String> {
        value
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| item.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let applies = |rule: &serde_json::Value| {
        let includes_caps = strings(&rule["includes"]["caps"]);
        let includes_arches = strings(&rule["includes"]["arches"]);
        let excludes_caps = strings(&rule["excludes"]["caps"]);
        let excludes_arches = strings(&rule["excludes"]["arches"]);
        includes_caps.iter().all(|cap| caps.contains(&cap.as_str()))
            && (includes_arches.is_empty() || includes_arches.iter().any(|a| a == "amd64"))
            && !excludes_caps.iter().any(|cap| caps.contains(&cap.as_str()))
            && !excludes_arches.iter().any(|a| a == "amd64")
    };
    let syscalls: Vec<serde_json::Value> = docker["syscalls"]
        .as_array()?
        .iter()
        .filter(|rule| applies(rule))
        .map(|rule| {
            let mut rule = rule.clone();
            let object = rule.as_object_mut().expect("rule object");
            for docker_only in ["includes", "excludes", "comment"] {
                object.remove(docker_only);
            }
            rule
        })
        .collect();
    let oci = serde_json::json!({
        "defaultAction": docker["defaultAction"],
        "defaultErrnoRet": docker["defaultErrnoRet"],
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": syscalls,
    });
    Some(serde_json::from_value(oci).expect("converted profile"))
}

#[test]
fn containers_default_profile_compiles_and_loads() {
    let path = "/usr/share/containers/seccomp.json";
    let Some(profile) = containers_default_profile(path) else {
        println!("{path} is not installed; skipped");
        return;
    };
    let filter = time_compile("containers-common seccomp.json", &profile);
    let status = run(&filter, || {
        let mkdir = mkdir_root() == libc::EEXIST;
        // SAFETY: raw syscall with scalar arguments; the profile denies it with EPERM.
        let denied = errno_of(unsafe { libc::syscall(libc::SYS_kexec_load, 0, 0, 0, 0) });
        i32::from(mkdir) | i32::from(denied == libc::EPERM) << 1
    });
    assert_eq!(exited(status), 0b11);
}
