//! Filters are loaded for real, each in a forked child that reports through its exit status.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};

use libseccomp::{ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::*;

mod profiles;

/// Exit code of a child whose `Filter::load` failed.
const LOAD_FAILED: i32 = 200;

fn profile(json: &str) -> LinuxSeccomp {
    serde_json::from_str(json).expect("profile JSON")
}

fn compiled(json: &str) -> Filter {
    compile(&profile(json)).expect("profile compiles")
}

fn rejection(json: &str) -> String {
    compile(&profile(json))
        .expect_err("profile is rejected")
        .to_string()
}

/// A forked child; killed and reaped on drop unless it was waited for.
struct Child {
    pid: Option<Pid>,
}

impl Child {
    fn wait(mut self) -> WaitStatus {
        let pid = self.pid.take().expect("not waited yet");
        waitpid(pid, None).expect("waitpid")
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }
}

/// Fork a child that loads `filter` and exits with what `body` returns.
///
/// The test harness is multi-threaded, so the child keeps to raw syscalls: `Filter::load` makes
/// one syscall and allocates nothing on success, and the bodies below only make syscalls.
fn spawn(filter: &Filter, body: impl FnOnce(Option<OwnedFd>) -> i32) -> Child {
    // SAFETY: the child only makes syscalls and leaves through `_exit`, never returning into the
    // harness or touching locks another thread could have held at fork time.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: plain syscalls on values owned by this frame; `_exit` does not return.
            unsafe {
                // SIGSYS deaths below would otherwise leave core files behind.
                libc::setrlimit(libc::RLIMIT_CORE, &no_core);
                let code = match filter.load() {
                    Ok(listener) => body(listener),
                    Err(_) => LOAD_FAILED,
                };
                libc::_exit(code)
            }
        }
        ForkResult::Parent { child } => Child { pid: Some(child) },
    }
}

fn run(filter: &Filter, body: impl FnOnce() -> i32) -> WaitStatus {
    spawn(filter, |_| body()).wait()
}

fn exited(status: WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, code) => code,
        other => panic!("child did not exit normally: {other:?}"),
    }
}

fn assert_sigsys(status: WaitStatus) {
    assert!(
        matches!(status, WaitStatus::Signaled(_, Signal::SIGSYS, _)),
        "expected death by SIGSYS, got {status:?}"
    );
}

/// errno of a raw syscall's result, 0 on success.
fn errno_of(ret: libc::c_long) -> i32 {
    if ret == -1 {
        nix::errno::Errno::last_raw()
    } else {
        0
    }
}

/// mkdir("/"): EEXIST when it reaches the kernel, whatever the filter says otherwise.
fn mkdir_root() -> i32 {
    // SAFETY: raw syscall with a valid NUL-terminated path; "/" always exists, nothing is created.
    errno_of(unsafe { libc::syscall(libc::SYS_mkdir, c"/".as_ptr(), 0o755) })
}

fn personality(persona: u64) -> i32 {
    // SAFETY: raw syscall with a scalar argument; a denied call changes nothing.
    errno_of(unsafe { libc::syscall(libc::SYS_personality, persona) })
}

/// getpriority(which, who): returns 20 - nice on success, so any non-(-1) value is success.
fn getpriority(which: u64, who: u64) -> i32 {
    // SAFETY: raw syscall with scalar arguments; it only reads a scheduling attribute.
    errno_of(unsafe { libc::syscall(libc::SYS_getpriority, which, who) })
}

#[test]
fn errno_rule_returns_errno_ret() {
    let filter = compiled(
        r#"{"defaultAction":"SCMP_ACT_ALLOW",
            "syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":42}]}"#,
    );
    assert!(!filter.uses_notify());
    assert_eq!(exited(run(&filter, mkdir_root)), 42);
}

#[test]
fn errno_rule_defaults_to_eperm() {
    let filter = compiled(
        r#"{"defaultAction":"SCMP_ACT_ALLOW",
            "syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#,
    );
    assert_eq!(exited(run(&filter, mkdir_root)), libc::EPERM);
}

#[test]
fn default_errno_action_with_and_without_errno_ret() {
    // An allow-list: only what the child needs after load() (exiting) is allowed.
    let allow_exit = r#"[{"names":["exit_group","exit"],"action":"SCMP_ACT_ALLOW"}]"#;
    let eperm = compiled(&format!(
        r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":{allow_exit}}}"#
    ));
    assert_eq!(exited(run(&eperm, mkdir_root)), libc::EPERM);

    let custom = compiled(&format!(
        r#"{{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":55,"syscalls":{allow_exit}}}"#
    ));
    assert_eq!(exited(run(&custom, mkdir_root)), 55);
}

#[test]
fn kill_actions_end_the_child_with_sigsys() {
    for action in [
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_TRAP",
    ] {
        let filter = compiled(&format!(
            r#"{{"defaultAction":"SCMP_ACT_ALLOW",
                "syscalls":[{{"names":["mkdir"],"action":"{action}"}}]}}"#
        ));
        let status = run(&filter, || {
            mkdir_root();
            0
        });
        assert_sigsys(status);
    }
}

#[test]
fn trace_without_a_tracer_fails_with_enosys() {
    // With no tracer attached the kernel fails SECCOMP_RET_TRACE calls with ENOSYS.
    let filter = compiled(
        r#"{"defaultAction":"SCMP_ACT_ALLOW",
            "syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_TRACE","errnoRet":7}]}"#,
    );
    assert_eq!(exited(run(&filter, mkdir_root)), libc::ENOSYS);
}

#[test]
fn log_and_allow_let_the_call_through() {
    let log = compiled(
        r#"{"defaultAction":"SCMP_ACT_ERRNO",
            "syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_LOG"},
                        {"names":["exit_group"],"action":"SCMP_ACT_ALLOW"}]}"#,
    );
    assert_eq!(exited(run(&log, mkdir_root)), libc::EEXIST);

    let allow = compiled(
        r#"{"defaultAction":"SCMP_ACT_KILL_PROCESS",
            "syscalls":[{"names":["mkdir","exit_group"],"action":"SCMP_ACT_ALLOW"}]}"#,
    );
    assert_eq!(exited(run(&allow, mkdir_root)), libc::EEXIST);
}

#[test]
fn argument_condition_narrows_the_rule() {
    // Deny personality(0xffffffff) (the query form) only; personality(PER_LINUX) goes through.
    let filter = compiled(
        r#"{"defaultAction":"SCMP_ACT_ALLOW",
            "syscalls":[{"names":["personality"],"action":"SCMP_ACT_ERRNO","errnoRet":42,
                         "args":[{"index":0,"value":4294967295,"op":"SCMP_CMP_EQ"}]}]}"#,
    );
    let status = run(&filter, || {
        let denied = personality(0xffff_ffff) == 42;
        let allowed = personality(0) == 0;
        i32::from(denied) | i32::from(allowed) << 1
    });
    assert_eq!(exited(status), 0b11);
}

#[test]
fn conditions_on_one_index_are_ored() {
    let filter = compiled(
        r#"{"defaultAction":"SCMP_ACT_ALLOW",
            "syscalls":[{"names":["personality"],"action":"SCMP_ACT_ERRNO","errnoRet":42,
                         "args":[{"index":0,"value":4294967295,"op":"SCMP_CMP_EQ"},
                                 {"index":0,"value":4294967294,"op":"SCMP_CMP_EQ"}]}]}"#,
    );
    let status = run(&filter, || {
        let first = personality(0xffff_ffff) == 42;
        let second = personality(0xffff_fffe) == 42;
        let other = personality(0) == 0;
        i32::from(first) | i32::from(second) << 1 | i32::from(other) << 2
    });
    assert_eq!(exited(status), 0b111);
}

#[test]
fn conditions_on_different_indexes_are_anded() {
    // getpriority(PRIO_PROCESS, 0) is denied; changing either argument lets the call through.
    let filter = compiled(
        r#"{"defaultAction":"SCMP_ACT_ALLOW",
            "syscalls":[{"names":["getpriority"],"action":"SCMP_ACT_ERRNO","errnoRet":43,
                         "args":[{"index":0,"value":0,"op":"SCMP_CMP_EQ"},
                                 {"index":1,"value":0,"op":"SCMP_CMP_EQ"}]}]}"#,
    );
    let status = run(&filter, || {
        let both = getpriority(0, 0) == 43;
        // SAFETY: getpid has no preconditions.
        let own_pid = unsafe { libc::getpid() } as u64;
        let arg1_differs = getpriority(0, own_pid) == 0;
        let arg0_differs = getpriority(libc::PRIO_PGRP as u64, 0) == 0;
        i32::from(both) | i32::from(arg1_differs) << 1 | i32::from(arg0_differs) << 2
    });
    assert_eq!(exited(status), 0b111);
}

#[test]
fn masked_eq_and_ordering_operators() {
    // MASKED_EQ: `value` is the mask, `valueTwo` the expected masked result.
    let filter = compiled(
        r#"{"defaultAction":"SCMP_ACT_ALLOW",
            "syscalls":[{"names":["getpriority"],"action":"SCMP_ACT_ERRNO","errnoRet":44,
                         "args":[{"index":1,"value":240,"valueTwo":16,"op":"SCMP_CMP_MASKED_EQ"}]},
                        {"names":["personality"],"action":"SCMP_ACT_ERRNO","errnoRet":45,
                         "args":[{"index":0,"value":4294967280,"op":"SCMP_CMP_GE"}]}]}"#,
    );
    let status = run(&filter, || {
        let masked_match = getpriority(0, 0x1f) == 44;
        let masked_miss = getpriority(0, 0) == 0;
        let ge_match = personality(0xffff_ffff) == 45;
        let ge_miss = personality(0) == 0;
        i32::from(masked_match)
            | i32::from(masked_miss) << 1
            | i32::from(ge_match) << 2
            | i32::from(ge_miss) << 3
    });
    assert_eq!(exited(status), 0b1111);
}

#[test]
fn unknown_syscall_names_are_skipped() {
    let filter = compiled(
        r#"{"defaultAction":"SCMP_ACT_ALLOW",
            "syscalls":[{"names":["yun_no_such_syscall","mkdir"],"action":"SCMP_ACT_ERRNO",
                         "errnoRet":42}]}"#,
    );
    assert_eq!(exited(run(&filter, mkdir_root)), 42);
}

#[test]
fn rules_repeating_the_default_action_are_skipped() {
    // libseccomp itself refuses these; runc drops them, so do we. A different errno is a
    // different action and stays.
    let filter = compiled(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,
            "syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ERRNO","errnoRet":38},
                        {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":42},
                        {"names":["exit_group"],"action":"SCMP_ACT_ALLOW"}]}"#,
    );
    assert_eq!(exited(run(&filter, mkdir_root)), 42);
    compiled(
        r#"{"defaultAction":"SCMP_ACT_ALLOW",
            "syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ALLOW"}]}"#,
    );
}

#[test]
fn architectures_and_flags_are_applied() {
    let native = compiled(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":42}]}"#,
    );
    let multi = compiled(
        r#"{"defaultAction":"SCMP_ACT_ALLOW",
            "architectures":["SCMP_ARCH_NATIVE","SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
            "flags":["SECCOMP_FILTER_FLAG_TSYNC","SECCOMP_FILTER_FLAG_LOG",
                     "SECCOMP_FILTER_FLAG_SPEC_ALLOW","SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
            "syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":42}]}"#,
    );
    // Every added architecture gets its own section of the program.
    assert!(
        multi.program.len() > native.program.len(),
        "{native:?} vs {multi:?}"
    );
    let expected = libc::SECCOMP_FILTER_FLAG_TSYNC
        | libc::SECCOMP_FILTER_FLAG_LOG
        | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW;
    // WAIT_KILLABLE_RECV only means something with a listener; without one it is not passed.
    assert_eq!(multi.flags, expected);
    assert_eq!(exited(run(&multi, mkdir_root)), 42);
}

#[test]
fn notify_hands_out_a_listener_an_agent_can_answer() {
    let filter = compiled(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/yun-test/agent.sock",
            "flags":["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV","SECCOMP_FILTER_FLAG_TSYNC"],
            "syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#,
    );
    assert!(filter.uses_notify());
    assert_ne!(
        filter.flags & libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
        0
    );

    let (read_end, write_end) = nix::unistd::pipe().expect("pipe");
    let child = spawn(&filter, |listener| {
        let Some(listener) = listener else { return 201 };
        // Tell the parent the listener's number, then make the call the agent will answer.
        let number = listener.as_raw_fd().to_ne_bytes();
        // SAFETY: writes four bytes from a live buffer to a pipe this process owns.
        let written = unsafe { libc::write(write_end.as_raw_fd(), number.as_ptr().cast(), 4) };
        if written != 4 {
            return 202;
        }
        mkdir_root()
    });
    drop(write_end);
    let mut number = [0u8; 4];
    std::fs::File::from(read_end)
        .read_exact(&mut number)
        .expect("child reports its listener fd");
    let pid = child.pid.expect("running").as_raw();

    // Stand in for the seccomp agent: take the listener out of the child (pidfd_getfd).
    // SAFETY: pidfd_open and pidfd_getfd take scalars and return new fds we own and close.
    let listener = unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        assert!(
            pidfd >= 0,
            "pidfd_open: {}",
            std::io::Error::last_os_error()
        );
        let fd = libc::syscall(libc::SYS_pidfd_getfd, pidfd, i32::from_ne_bytes(number), 0);
        let getfd_error = std::io::Error::last_os_error();
        libc::close(pidfd as i32);
        assert!(fd >= 0, "pidfd_getfd: {getfd_error}");
        OwnedFd::from_raw_fd(fd as i32)
    };
    let request = ScmpNotifReq::receive(listener.as_raw_fd()).expect("notification");
    assert_eq!(
        request.data.syscall,
        ScmpSyscall::from_name("mkdir").unwrap()
    );
    ScmpNotifResp::new_error(request.id, -77, ScmpNotifRespFlags::empty())
        .respond(listener.as_raw_fd())
        .expect("respond");
    assert_eq!(exited(child.wait()), 77);
}

#[test]
fn invalid_profiles_are_rejected_naming_the_field() {
    let cases = [
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["getpid"],"action":"SCMP_ACT_ERRNO"},
                {"names":["personality"],"action":"SCMP_ACT_ERRNO",
                 "args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
            "linux.seccomp.syscalls[1].args[0].index: 6 is out of range (0-5)",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","defaultErrnoRet":1}"#,
            "linux.seccomp.defaultErrnoRet: only valid with SCMP_ACT_ERRNO/SCMP_ACT_TRACE",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW",
                "syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_KILL","errnoRet":1}]}"#,
            "linux.seccomp.syscalls[0].errnoRet: only valid with SCMP_ACT_ERRNO/SCMP_ACT_TRACE",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW",
                "syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":5000}]}"#,
            "linux.seccomp.syscalls[0].errnoRet: 5000 is out of range (0-4095)",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["getpid"],"action":"SCMP_ACT_ERRNO"},
                {"names":["getppid"],"action":"SCMP_ACT_ERRNO"},
                {"names":["getuid"],"action":"SCMP_ACT_ERRNO"},
                {"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#,
            "linux.seccomp.syscalls[3].action: SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_NOTIFY","listenerPath":"/run/yun-test/agent.sock"}"#,
            "linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be the default action",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/yun-test/agent.sock",
                "syscalls":[{"names":["mkdir","write"],"action":"SCMP_ACT_NOTIFY"}]}"#,
            "linux.seccomp.syscalls[0].names[1]: SCMP_ACT_NOTIFY cannot be used for \"write\"",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW",
                "syscalls":[{"names":[],"action":"SCMP_ACT_ERRNO"}]}"#,
            "linux.seccomp.syscalls[0].names: must list at least one syscall",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW",
                "syscalls":[{"names":["mkdir",""],"action":"SCMP_ACT_ERRNO"}]}"#,
            "linux.seccomp.syscalls[0].names[1]: empty syscall name",
        ),
        (
            // A big-endian architecture cannot share a filter with little-endian x86_64.
            r#"{"defaultAction":"SCMP_ACT_ALLOW",
                "architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_S390X"]}"#,
            "linux.seccomp.architectures[1]: cannot add SCMP_ARCH_S390X to a filter for",
        ),
    ];
    for (json, expected) in cases {
        let message = rejection(json);
        assert!(
            message.starts_with(expected),
            "expected {expected:?}, got {message:?}"
        );
        assert!(!message.contains('\n'), "one line: {message:?}");
    }
}

#[test]
fn unknown_names_are_rejected_when_the_config_is_read() {
    // oci-spec's enums refuse unknown strings during deserialization, before compile() runs.
    for json in [
        r#"{"defaultAction":"SCMP_ACT_FOO"}"#,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_FOO"]}"#,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_FOO"]}"#,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],
            "action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":0,"op":"SCMP_CMP_FOO"}]}]}"#,
    ] {
        let error = serde_json::from_str::<LinuxSeccomp>(json).expect_err(json);
        assert!(error.to_string().contains("_FOO"), "{error}");
    }
}

#[test]
fn features_list_what_this_host_supports() {
    let actions = supported_actions();
    for action in [
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_TRAP",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_LOG",
        "SCMP_ACT_NOTIFY",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
    let operators = supported_operators();
    assert_eq!(operators.len(), 7);
    assert!(operators.iter().any(|o| o == "SCMP_CMP_MASKED_EQ"));
    let archs = supported_archs();
    assert!(archs.iter().any(|a| a == &native_arch_name()), "{archs:?}");
    // Every listed architecture really compiles into a filter.
    let all = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": archs});
    compile(&serde_json::from_value(all).unwrap()).expect("all listed architectures compile");
    let flags = supported_flags();
    // Linux 4.17 has these three; this host runs something newer.
    for flag in [
        "SECCOMP_FILTER_FLAG_TSYNC",
        "SECCOMP_FILTER_FLAG_LOG",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    ] {
        assert!(flags.iter().any(|f| f == flag), "{flag} in {flags:?}");
    }
}
