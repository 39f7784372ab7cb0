//! Resource limits (`process.rlimits`).

use anyhow::{bail, Result};
use oci_spec::runtime::{PosixRlimit, PosixRlimitType};

/// The kernel's number for an OCI rlimit type.
pub fn resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    use PosixRlimitType::*;
    match t {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

fn current(res: libc::__rlimit_resource_t) -> libc::rlimit {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    unsafe { libc::getrlimit(res, &mut lim) };
    lim
}

/// Soft must not exceed hard, and raising a hard limit above the runtime's own needs
/// CAP_SYS_RESOURCE, which the container init could not get either: say so now rather
/// than failing inside the container.
pub fn validate(r: &PosixRlimit) -> Result<()> {
    let name = r.typ().to_string();
    if r.soft() > r.hard() {
        bail!(
            "{name}: soft limit {} is above the hard limit {}",
            r.soft(),
            r.hard()
        );
    }
    let host = current(resource(r.typ()));
    let unlimited = libc::RLIM_INFINITY;
    let above = host.rlim_max != unlimited && (r.hard() > host.rlim_max || r.hard() == unlimited);
    if above
        && !caps::has_cap(
            None,
            caps::CapSet::Effective,
            caps::Capability::CAP_SYS_RESOURCE,
        )
        .unwrap_or(false)
    {
        bail!(
            "{name}: hard limit {} exceeds this host's hard limit {} (raising it needs CAP_SYS_RESOURCE)",
            r.hard(),
            host.rlim_max
        );
    }
    Ok(())
}

/// Apply every limit to the calling process (the container's init before exec).
pub fn apply(limits: &[PosixRlimit]) -> Result<()> {
    for r in limits {
        let lim = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(resource(r.typ()), &lim) } != 0 {
            bail!("setrlimit {}: {}", r.typ(), std::io::Error::last_os_error());
        }
    }
    Ok(())
}
