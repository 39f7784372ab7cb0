//! The container process: user, capabilities, rlimits, seccomp, and the final execve.
//!
//! `prepare` does everything that can fail while a caller is still waiting for an answer
//! (create, exec), so a bad cwd or a missing program is reported instead of a dead container;
//! `exec` does what must come last (no_new_privs and seccomp when asked, signals, fds).

pub mod caps;
pub mod rlimits;
pub mod seccomp;

use std::convert::Infallible;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::Process;

/// The result of `prepare`: what `exec` needs.
pub struct Prepared<'a> {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    late_seccomp: Option<&'a seccomp::Filter>,
    no_new_privs: bool,
    preserve_fds: u32,
}

/// Options that do not come from the config.
pub struct Options<'a> {
    pub seccomp: Option<&'a seccomp::Filter>,
    /// In a user namespace whose setgroups file says "deny", setgroups(2) fails.
    pub setgroups_allowed: bool,
    pub preserve_fds: u32,
    /// Called with the seccomp notify fd, if the profile uses SCMP_ACT_NOTIFY.
    pub on_notify_fd: &'a dyn Fn(std::os::fd::OwnedFd) -> Result<()>,
}

pub fn prepare<'a>(process: &Process, opts: &Options<'a>) -> Result<Prepared<'a>> {
    // cwd: chdir, then make sure the kernel still resolves it inside our root. A cwd reached
    // through a leaked host fd (/proc/self/fd/N, CVE-2024-21626) shows up as "(unreachable)".
    let cwd = process.cwd();
    nix::unistd::chdir(cwd).with_context(|| format!("process.cwd: chdir {}", cwd.display()))?;
    match nix::unistd::getcwd() {
        Ok(p) if p.is_absolute() => {}
        _ => bail!(
            "process.cwd: {} is outside the container's root",
            cwd.display()
        ),
    }

    let env: Vec<String> = process.env().clone().unwrap_or_default();
    let args = process.args().as_deref().unwrap_or_default();
    let path = find_executable(&args[0], &env)?;
    let to_c = |s: &str| CString::new(s).map_err(|_| anyhow!("{s:?} contains a NUL byte"));
    let argv = args.iter().map(|a| to_c(a)).collect::<Result<Vec<_>>>()?;
    let envp = env.iter().map(|e| to_c(e)).collect::<Result<Vec<_>>>()?;

    if let Some(limits) = process.rlimits() {
        rlimits::apply(limits)?;
    }
    let sets = caps::Sets::from_spec(process.capabilities().as_ref())?;
    caps::drop_bounding(&sets)?;

    let no_new_privs = process.no_new_privileges().unwrap_or(false);
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it before dropping.
    let mut late_seccomp = None;
    if let Some(filter) = opts.seccomp {
        if no_new_privs {
            late_seccomp = Some(filter);
        } else if let Some(fd) = filter.load().context("linux.seccomp: load filter")? {
            (opts.on_notify_fd)(fd)?;
        }
    }

    set_user(process, opts.setgroups_allowed)?;
    caps::apply(&sets)?;
    Ok(Prepared {
        path: CString::new(path.as_os_str().as_bytes())?,
        argv,
        envp,
        late_seccomp,
        no_new_privs,
        preserve_fds: opts.preserve_fds,
    })
}

fn set_user(process: &Process, setgroups_allowed: bool) -> Result<()> {
    let user = process.user();
    if setgroups_allowed {
        let groups: Vec<Gid> = user
            .additional_gids()
            .iter()
            .flatten()
            .map(|g| Gid::from_raw(*g))
            .collect();
        nix::unistd::setgroups(&groups).context("process.user.additionalGids: setgroups")?;
    } else if user
        .additional_gids()
        .as_ref()
        .is_some_and(|g| !g.is_empty())
    {
        bail!("process.user.additionalGids: setgroups is denied in this user namespace");
    }
    let gid = Gid::from_raw(user.gid());
    nix::unistd::setresgid(gid, gid, gid)
        .with_context(|| format!("process.user.gid: setgid {gid}"))?;
    // Keep the permitted capabilities across the uid change; caps::apply sets them exactly.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    let uid = Uid::from_raw(user.uid());
    nix::unistd::setresuid(uid, uid, uid)
        .with_context(|| format!("process.user.uid: setuid {uid}"))?;
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    if let Some(mask) = user.umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    Ok(())
}

/// Resolve the program like execvp would, but with the container's PATH, inside the
/// container, before exec: "not found" becomes an error the caller sees.
pub fn find_executable(name: &str, env: &[String]) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        if is_exec(Path::new(name)) {
            return Ok(PathBuf::from(name));
        }
        bail!("process.args[0]: {name:?}: no such executable file");
    }
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(name);
        if is_exec(&candidate) {
            return Ok(candidate);
        }
    }
    bail!("process.args[0]: {name:?}: executable file not found in $PATH")
}

/// The last steps, then execve. Returns only on failure.
pub fn exec(
    p: Prepared<'_>,
    on_notify_fd: &dyn Fn(std::os::fd::OwnedFd) -> Result<()>,
) -> Result<Infallible> {
    if p.no_new_privs {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            bail!("set no_new_privs: {}", std::io::Error::last_os_error());
        }
    }
    reset_signals();
    // Nothing of ours may reach the container: every fd above stdio and the preserved ones
    // is closed at exec.
    let first = 3 + p.preserve_fds;
    // SAFETY: close_range only changes flags of fds in the given range.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if let Some(filter) = p.late_seccomp {
        if let Some(fd) = filter.load().context("linux.seccomp: load filter")? {
            on_notify_fd(fd)?;
        }
    }
    let err = nix::unistd::execve(&p.path, &p.argv, &p.envp).unwrap_err();
    bail!("exec {:?}: {err}", p.path)
}

/// Rust ignores SIGPIPE and the runtime may have blocked signals: an ignored or blocked
/// signal survives execve, so give the container the defaults.
pub fn reset_signals() {
    // SAFETY: restoring default dispositions and an empty mask is always valid.
    unsafe {
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}
