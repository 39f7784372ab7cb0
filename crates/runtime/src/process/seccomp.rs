//! Seccomp: translate the OCI config's `linux.seccomp` into a BPF filter and load it.
//!
//! The work is split the way crun splits it. [`compile`] runs in the runtime's parent, before any
//! container exists: it validates the profile, builds the filter with libseccomp and has libseccomp
//! export the finished BPF program. [`Filter::load`] runs in the container's init, a forked child
//! of a possibly multi-threaded runtime, right before execve. There it only makes one seccomp(2)
//! call on the ready program: libseccomp's own `seccomp_load` would generate the BPF at that point,
//! which allocates (unsafe after fork in a multi-threaded process) and costs time on every start.
//!
//! Semantics follow runc: unknown syscall names are skipped, rules that repeat the default action
//! are dropped, several conditions on one argument index turn a rule into one rule per condition.

mod kernel;
// The tests make raw x86_64 syscalls and build x86_64 multi-arch profiles.
#[cfg(all(test, target_arch = "x86_64"))]
mod tests;

use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use anyhow::{anyhow, bail, Result};
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
    ScmpVersion,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};

/// Syscalls take at most six arguments; `args[].index` addresses one of them.
const MAX_SYSCALL_ARGS: usize = 6;
/// The kernel refuses longer classic BPF programs (BPF_MAXINSNS).
const BPF_MAXINSNS: usize = 4096;
/// SECCOMP_RET_ERRNO values above this are clamped by the kernel, so they are config mistakes.
const MAX_ERRNO: u32 = 4095;

/// A compiled seccomp profile, ready to be loaded into the calling process.
///
/// It holds the BPF program libseccomp generated and the seccomp(2) flags to load it with; no
/// libseccomp state survives [`compile`], so a `Filter` is plain memory that a forked child can use.
#[derive(Clone)]
pub struct Filter {
    program: Vec<libc::sock_filter>,
    flags: libc::c_ulong,
    uses_notify: bool,
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Filter")
            .field("instructions", &self.program.len())
            .field("flags", &format_args!("{:#x}", self.flags))
            .field("uses_notify", &self.uses_notify)
            .finish()
    }
}

impl Filter {
    /// Load the filter into the calling thread (all threads with SECCOMP_FILTER_FLAG_TSYNC).
    ///
    /// Returns the user-notification fd when the profile uses SCMP_ACT_NOTIFY, else `None`. The
    /// no_new_privs bit is left alone: the runtime sets it itself when the config asks, and without
    /// it the kernel requires CAP_SYS_ADMIN, which the container's init still holds here. On success
    /// this makes exactly one syscall and allocates nothing, so it is safe in a child after fork.
    pub fn load(&self) -> Result<Option<OwnedFd>> {
        let prog = libc::sock_fprog {
            // compile() refused programs longer than BPF_MAXINSNS, so the length fits.
            len: self.program.len() as libc::c_ushort,
            filter: self.program.as_ptr().cast_mut(),
        };
        // SAFETY: `prog` points at `self.program`, which outlives the call; the kernel only reads
        // (copies) the program and the flags are ones compile() checked against this kernel.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if ret < 0 {
            let err = std::io::Error::last_os_error();
            let hint = match err.raw_os_error() {
                Some(libc::EACCES) => {
                    " (loading without no_new_privs needs CAP_SYS_ADMIN; drop capabilities after seccomp)"
                }
                Some(libc::ESRCH) => " (another thread could not be synchronized for TSYNC)",
                _ => "",
            };
            bail!("linux.seccomp: loading the filter failed: {err}{hint}");
        }
        if self.uses_notify {
            // SAFETY: with SECCOMP_FILTER_FLAG_NEW_LISTENER a successful seccomp(2) returns a new
            // file descriptor that nothing else owns yet.
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(ret as RawFd) }));
        }
        if ret > 0 {
            bail!(
                "linux.seccomp: SECCOMP_FILTER_FLAG_TSYNC: thread {ret} could not be synchronized"
            );
        }
        Ok(None)
    }

    /// Whether the profile uses SCMP_ACT_NOTIFY, i.e. [`Filter::load`] returns a listener fd.
    pub fn uses_notify(&self) -> bool {
        self.uses_notify
    }
}

/// Validate `linux.seccomp` and compile it into a loadable [`Filter`].
///
/// Errors are one line that starts with the offending JSON field, e.g.
/// `linux.seccomp.syscalls[1].args[0].index: 6 is out of range (0-5)`.
pub fn compile(seccomp: &LinuxSeccomp) -> Result<Filter> {
    let default_action = seccomp_action(
        seccomp.default_action(),
        seccomp.default_errno_ret(),
        "linux.seccomp.defaultErrnoRet",
    )?;
    if default_action == ScmpAction::Notify {
        // The runtime's own syscalls between load and execve would wait for an agent that has not
        // been handed the listener yet.
        bail!("linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be the default action");
    }

    // libseccomp's default layout (rules in priority order), not the binary tree runc turns on
    // for long profiles: measured with podman's profile the tree costs ~6 ms more per compile
    // and saves only tens of ns on argument-checked syscalls, since kernels with the seccomp
    // action cache (5.11+) skip the filter for unconditionally allowed syscalls anyway.
    let mut ctx = ScmpFilterContext::new(default_action)
        .map_err(|e| anyhow!("linux.seccomp.defaultAction: libseccomp: {e}"))?;
    // seccomp(2) is called by load(), not by libseccomp; the attribute only keeps the context
    // truthful about what load does: it never sets no_new_privs.
    ctx.set_ctl_nnp(false)
        .map_err(|e| anyhow!("linux.seccomp: libseccomp: {e}"))?;

    for (i, arch) in seccomp.architectures().iter().flatten().enumerate() {
        ctx.add_arch(scmp_arch(*arch)).map_err(|e| {
            anyhow!(
                "linux.seccomp.architectures[{i}]: cannot add {} to a filter for {} with libseccomp {}: {e}",
                oci_name(arch),
                native_arch_name(),
                library_version(),
            )
        })?;
    }

    let has_listener = seccomp.listener_path().is_some();
    let mut uses_notify = false;
    for (i, rule) in seccomp.syscalls().iter().flatten().enumerate() {
        uses_notify |= add_syscall_rule(&mut ctx, i, rule, default_action, has_listener)?;
    }

    let flags = load_flags(seccomp.flags().as_deref().unwrap_or_default(), uses_notify)?;
    let program = export_program(&ctx)?;
    Ok(Filter {
        program,
        flags,
        uses_notify,
    })
}

/// Every action this build supports on the running kernel, as OCI names.
pub fn supported_actions() -> Vec<String> {
    ALL_ACTIONS
        .iter()
        .filter(|action| kernel::action_available(action_ret_value(**action)))
        .map(oci_name)
        .collect()
}

/// Every argument comparison operator, as OCI names.
pub fn supported_operators() -> Vec<String> {
    ALL_OPERATORS.iter().map(oci_name).collect()
}

/// Every architecture libseccomp can add to a filter for the native architecture, as OCI names.
pub fn supported_archs() -> Vec<String> {
    let Ok(mut ctx) = ScmpFilterContext::new(ScmpAction::Allow) else {
        return Vec::new();
    };
    ALL_ARCHS
        .iter()
        .filter(|arch| **arch != Arch::ScmpArchNative)
        .filter(|arch| ctx.add_arch(scmp_arch(**arch)).is_ok())
        .map(oci_name)
        .collect()
}

/// Every `linux.seccomp.flags` value the running kernel accepts, as OCI names.
pub fn supported_flags() -> Vec<String> {
    ALL_FLAGS
        .iter()
        .filter(|flag| kernel::flag_available(flag_probe_bits(**flag)))
        .map(oci_name)
        .collect()
}

/// Add `syscalls[index]` to the filter. Returns whether the rule uses SCMP_ACT_NOTIFY.
fn add_syscall_rule(
    ctx: &mut ScmpFilterContext,
    index: usize,
    rule: &LinuxSyscall,
    default_action: ScmpAction,
    has_listener: bool,
) -> Result<bool> {
    let action = seccomp_action(
        rule.action(),
        rule.errno_ret(),
        &format!("linux.seccomp.syscalls[{index}].errnoRet"),
    )?;
    if action == ScmpAction::Notify && !has_listener {
        bail!("linux.seccomp.syscalls[{index}].action: SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath");
    }
    if rule.names().is_empty() {
        bail!("linux.seccomp.syscalls[{index}].names: must list at least one syscall");
    }
    let conditions = rule
        .args()
        .iter()
        .flatten()
        .enumerate()
        .map(|(a, arg)| condition(arg, index, a))
        .collect::<Result<Vec<_>>>()?;
    // runc's rule: conditions on distinct arguments are ANDed in one libseccomp rule; as soon as
    // one argument is compared twice, every condition becomes its own rule (ORed), because
    // libseccomp cannot compare one argument twice within a rule.
    let one_rule_per_condition = {
        let mut seen = [false; MAX_SYSCALL_ARGS];
        rule.args().iter().flatten().any(|arg| {
            std::mem::replace(&mut seen[arg.index()], true) // index checked by condition()
        })
    };

    for (n, name) in rule.names().iter().enumerate() {
        if name.is_empty() {
            bail!("linux.seccomp.syscalls[{index}].names[{n}]: empty syscall name");
        }
        if action == ScmpAction::Notify && name == "write" {
            // As in runc: init hands the listener over after load(); a notified write could
            // wait for an agent that never gets it.
            bail!("linux.seccomp.syscalls[{index}].names[{n}]: SCMP_ACT_NOTIFY cannot be used for \"write\"");
        }
        if action == default_action {
            // libseccomp refuses rules that repeat the default action; they change nothing.
            continue;
        }
        let Ok(syscall) = ScmpSyscall::from_name(name) else {
            // Profiles (podman's default among them) list syscalls newer than the library.
            tracing::debug!(syscall = %name, "seccomp: syscall unknown to libseccomp, rule skipped");
            continue;
        };
        let added = if conditions.is_empty() || !one_rule_per_condition {
            ctx.add_rule_conditional(action, syscall, &conditions)
                .map(|_| ())
        } else {
            conditions.iter().try_for_each(|condition| {
                ctx.add_rule_conditional(action, syscall, std::slice::from_ref(condition))
                    .map(|_| ())
            })
        };
        added.map_err(|e| {
            anyhow!("linux.seccomp.syscalls[{index}].names[{n}]: libseccomp refused the rule for {name:?}: {e}")
        })?;
    }
    Ok(action == ScmpAction::Notify)
}

/// The libseccomp action for an OCI action plus its optional errno/trace value.
fn seccomp_action(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    errno_field: &str,
) -> Result<ScmpAction> {
    use LinuxSeccompAction as Oci;
    let default_errno = libc::EPERM as u32;
    let scmp = match action {
        // SCMP_ACT_KILL is the historical name of kill-thread.
        Oci::ScmpActKill | Oci::ScmpActKillThread => ScmpAction::KillThread,
        Oci::ScmpActKillProcess => ScmpAction::KillProcess,
        Oci::ScmpActTrap => ScmpAction::Trap,
        Oci::ScmpActNotify => ScmpAction::Notify,
        Oci::ScmpActLog => ScmpAction::Log,
        Oci::ScmpActAllow => ScmpAction::Allow,
        Oci::ScmpActErrno => {
            let errno = errno_ret.unwrap_or(default_errno);
            if errno > MAX_ERRNO {
                bail!("{errno_field}: {errno} is out of range (0-{MAX_ERRNO})");
            }
            return Ok(ScmpAction::Errno(errno as i32));
        }
        Oci::ScmpActTrace => {
            let msg = errno_ret.unwrap_or(default_errno);
            let msg = u16::try_from(msg)
                .map_err(|_| anyhow!("{errno_field}: {msg} is out of range (0-65535)"))?;
            return Ok(ScmpAction::Trace(msg));
        }
    };
    if errno_ret.is_some() {
        bail!(
            "{errno_field}: only valid with SCMP_ACT_ERRNO/SCMP_ACT_TRACE, not {}",
            oci_name(&action)
        );
    }
    Ok(scmp)
}

/// The libseccomp condition for `syscalls[rule].args[arg]`.
fn condition(arg: &LinuxSeccompArg, rule: usize, index: usize) -> Result<ScmpArgCompare> {
    if arg.index() >= MAX_SYSCALL_ARGS {
        bail!(
            "linux.seccomp.syscalls[{rule}].args[{index}].index: {} is out of range (0-{})",
            arg.index(),
            MAX_SYSCALL_ARGS - 1
        );
    }
    let (op, datum) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, arg.value()),
        // OCI (like libseccomp's SCMP_CMP_MASKED_EQ) puts the mask in `value` and the expected
        // masked result in `valueTwo`.
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            ScmpCompareOp::MaskedEqual(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    Ok(ScmpArgCompare::new(arg.index() as u32, op, datum))
}

/// seccomp(2) flags for `linux.seccomp.flags`, checked against the running kernel.
fn load_flags(flags: &[LinuxSeccompFilterFlag], uses_notify: bool) -> Result<libc::c_ulong> {
    let mut bits = 0;
    for (i, flag) in flags.iter().enumerate() {
        if !kernel::flag_available(flag_probe_bits(*flag)) {
            bail!(
                "linux.seccomp.flags[{i}]: {} is not supported by the running kernel",
                oci_name(flag)
            );
        }
        match flag {
            // Only meaningful for a listener; the kernel rejects it without one (libseccomp, too,
            // sets it only when the filter uses notify).
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv if !uses_notify => {}
            _ => bits |= flag_bits(*flag),
        }
    }
    if uses_notify {
        bits |= libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
        if bits & libc::SECCOMP_FILTER_FLAG_TSYNC != 0 {
            // TSYNC reports failure as a positive thread id, which collides with the listener fd;
            // TSYNC_ESRCH makes it an error instead (what libseccomp does too).
            bits |= libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
        }
    }
    Ok(bits)
}

fn flag_bits(flag: LinuxSeccompFilterFlag) -> libc::c_ulong {
    match flag {
        LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
        LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
        LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
        LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
            libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
        }
    }
}

/// The flags to probe the kernel with: WAIT_KILLABLE_RECV is only accepted with a listener.
fn flag_probe_bits(flag: LinuxSeccompFilterFlag) -> libc::c_ulong {
    match flag {
        LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
            flag_bits(flag) | libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
        }
        _ => flag_bits(flag),
    }
}

/// Have libseccomp generate the BPF program and read it back as instructions.
fn export_program(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>> {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let export_error =
        |e: &dyn fmt::Display| anyhow!("linux.seccomp: exporting the BPF program: {e}");
    let fd =
        memfd_create(c"yun-seccomp-bpf", MFdFlags::MFD_CLOEXEC).map_err(|e| export_error(&e))?;
    let mut file = std::fs::File::from(fd);
    ctx.export_bpf(&file).map_err(|e| export_error(&e))?;
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(|e| export_error(&e))?;

    const INSN: usize = std::mem::size_of::<libc::sock_filter>();
    if bytes.len() % INSN != 0 {
        return Err(export_error(&format_args!(
            "{} bytes is not a whole number of instructions",
            bytes.len()
        )));
    }
    let program: Vec<libc::sock_filter> = bytes
        .chunks_exact(INSN)
        .map(|insn| libc::sock_filter {
            code: u16::from_ne_bytes([insn[0], insn[1]]),
            jt: insn[2],
            jf: insn[3],
            k: u32::from_ne_bytes([insn[4], insn[5], insn[6], insn[7]]),
        })
        .collect();
    if program.is_empty() || program.len() > BPF_MAXINSNS {
        bail!(
            "linux.seccomp: the filter compiles to {} BPF instructions; the kernel accepts 1-{BPF_MAXINSNS}",
            program.len()
        );
    }
    Ok(program)
}

/// The kernel's SECCOMP_RET_* value for an action (what SECCOMP_GET_ACTION_AVAIL takes).
fn action_ret_value(action: LinuxSeccompAction) -> u32 {
    use LinuxSeccompAction as Oci;
    match action {
        Oci::ScmpActKill | Oci::ScmpActKillThread => libc::SECCOMP_RET_KILL_THREAD,
        Oci::ScmpActKillProcess => libc::SECCOMP_RET_KILL_PROCESS,
        Oci::ScmpActTrap => libc::SECCOMP_RET_TRAP,
        Oci::ScmpActErrno => libc::SECCOMP_RET_ERRNO,
        Oci::ScmpActNotify => libc::SECCOMP_RET_USER_NOTIF,
        Oci::ScmpActTrace => libc::SECCOMP_RET_TRACE,
        Oci::ScmpActLog => libc::SECCOMP_RET_LOG,
        Oci::ScmpActAllow => libc::SECCOMP_RET_ALLOW,
    }
}

fn scmp_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

fn native_arch_name() -> String {
    let native = ScmpArch::native();
    ALL_ARCHS
        .iter()
        .find(|arch| **arch != Arch::ScmpArchNative && scmp_arch(**arch) == native)
        .map_or_else(|| format!("{native:?}"), oci_name)
}

fn library_version() -> String {
    ScmpVersion::current().map_or_else(
        |_| "(unknown version)".to_owned(),
        |v| format!("{}.{}.{}", v.major, v.minor, v.micro),
    )
}

/// The name a value has in config.json, taken from oci-spec's serde names so the two never differ.
fn oci_name<T: serde::Serialize + fmt::Debug>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => format!("{value:?}"),
    }
}

const ALL_ACTIONS: [LinuxSeccompAction; 9] = [
    LinuxSeccompAction::ScmpActKill,
    LinuxSeccompAction::ScmpActKillThread,
    LinuxSeccompAction::ScmpActKillProcess,
    LinuxSeccompAction::ScmpActTrap,
    LinuxSeccompAction::ScmpActErrno,
    LinuxSeccompAction::ScmpActNotify,
    LinuxSeccompAction::ScmpActTrace,
    LinuxSeccompAction::ScmpActLog,
    LinuxSeccompAction::ScmpActAllow,
];

const ALL_OPERATORS: [LinuxSeccompOperator; 7] = [
    LinuxSeccompOperator::ScmpCmpNe,
    LinuxSeccompOperator::ScmpCmpLt,
    LinuxSeccompOperator::ScmpCmpLe,
    LinuxSeccompOperator::ScmpCmpEq,
    LinuxSeccompOperator::ScmpCmpGe,
    LinuxSeccompOperator::ScmpCmpGt,
    LinuxSeccompOperator::ScmpCmpMaskedEq,
];

const ALL_FLAGS: [LinuxSeccompFilterFlag; 4] = [
    LinuxSeccompFilterFlag::SeccompFilterFlagTsync,
    LinuxSeccompFilterFlag::SeccompFilterFlagLog,
    LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow,
    LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv,
];

const ALL_ARCHS: [Arch; 24] = [
    Arch::ScmpArchNative,
    Arch::ScmpArchX86,
    Arch::ScmpArchX86_64,
    Arch::ScmpArchX32,
    Arch::ScmpArchArm,
    Arch::ScmpArchAarch64,
    Arch::ScmpArchMips,
    Arch::ScmpArchMips64,
    Arch::ScmpArchMips64n32,
    Arch::ScmpArchMipsel,
    Arch::ScmpArchMipsel64,
    Arch::ScmpArchMipsel64n32,
    Arch::ScmpArchPpc,
    Arch::ScmpArchPpc64,
    Arch::ScmpArchPpc64le,
    Arch::ScmpArchS390,
    Arch::ScmpArchS390x,
    Arch::ScmpArchParisc,
    Arch::ScmpArchParisc64,
    Arch::ScmpArchRiscv64,
    Arch::ScmpArchLoongarch64,
    Arch::ScmpArchM68k,
    Arch::ScmpArchSh,
    Arch::ScmpArchSheb,
];
