//! What the running kernel's seccomp supports, asked of the kernel itself.

/// Whether seccomp(2) accepts these SECCOMP_SET_MODE_FILTER flags.
///
/// The kernel validates the flags before it reads the program, so a call with a NULL program
/// fails with EFAULT when the flags are fine and EINVAL when they are not, and installs nothing
/// either way (runc probes the same way).
pub(super) fn flag_available(flags: libc::c_ulong) -> bool {
    // SAFETY: a NULL program can never be installed: the kernel fails with EFAULT (or earlier
    // with EINVAL) without touching the calling process.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            std::ptr::null::<libc::sock_fprog>(),
        )
    };
    ret == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT)
}

/// Whether the kernel knows this SECCOMP_RET_* action (SECCOMP_GET_ACTION_AVAIL, Linux 4.14).
pub(super) fn action_available(action: u32) -> bool {
    // SAFETY: SECCOMP_GET_ACTION_AVAIL only reads the u32 the pointer refers to.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_ACTION_AVAIL,
            0,
            &action as *const u32,
        )
    };
    if ret == 0 {
        return true;
    }
    // Kernels without SECCOMP_GET_ACTION_AVAIL still have the actions of the original seccomp
    // filter design (Linux 3.5/3.8); what came later came after the probe.
    std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL)
        && matches!(
            action,
            libc::SECCOMP_RET_KILL_THREAD
                | libc::SECCOMP_RET_TRAP
                | libc::SECCOMP_RET_ERRNO
                | libc::SECCOMP_RET_TRACE
                | libc::SECCOMP_RET_ALLOW
        )
}
