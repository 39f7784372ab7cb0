//! Persistent tap devices, the host end of a VM's virtio-net.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::{check_ifname, Error, Ipv4Cidr, Netlink, Result};

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

nix::ioctl_write_int!(tun_set_iff, b'T', 202);
nix::ioctl_write_int!(tun_set_persist, b'T', 203);

/// Attach to tap `name` (creating it when missing, as TUNSETIFF does): the fd that moves its
/// frames. QEMU gets such an fd (`-netdev tap,fd=N`) so that it needs no CAP_NET_ADMIN.
pub fn open(name: &str) -> Result<OwnedFd> {
    check_ifname(name)?;
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| Error::Io("opening /dev/net/tun".into(), e))?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads (and may write back) one ifreq, which `req` is, laid out as the
    // kernel's struct ifreq (16-byte name, then the flags in a 24-byte union).
    unsafe { tun_set_iff(tun.as_raw_fd(), &mut req as *mut IfReq as u64) }
        .map_err(|e| Error::Io(format!("attaching to tap {name}"), e.into()))?;
    Ok(OwnedFd::from(tun))
}

/// Create a persistent tap called `name` (it outlives this process until [`delete`]) and, when
/// `bridge` is given, attach it to that bridge; the tap is brought up.
pub fn create(name: &str, bridge: Option<&str>) -> Result<()> {
    let tun = open(name)?;
    // SAFETY: TUNSETPERSIST takes an integer argument on the tun fd configured above.
    unsafe { tun_set_persist(tun.as_raw_fd(), 1) }
        .map_err(|e| Error::Io(format!("making tap {name} persistent"), e.into()))?;
    drop(tun);
    let configured = (|| {
        let nl = Netlink::open()?;
        if let Some(bridge) = bridge {
            nl.set_master(name, bridge)?;
        }
        nl.set_up(name)
    })();
    if let Err(e) = configured {
        let _ = delete(name);
        return Err(e);
    }
    Ok(())
}

/// Remove tap `name`; a missing tap is not an error.
pub fn delete(name: &str) -> Result<()> {
    Netlink::open()?.delete_link(name)
}

/// Create tap `name` on `bridge`, first making the bridge (up, holding `gateway`) if it is
/// missing, and replacing a stale tap of that name that a killed process left. On failure no
/// tap remains.
pub fn plug(name: &str, bridge: &str, gateway: Ipv4Cidr) -> Result<()> {
    let nl = Netlink::open()?;
    nl.ensure_bridge(bridge)?;
    nl.add_address(bridge, gateway)?;
    delete(name)?;
    create(name, Some(bridge))
}
