//! A VM on a yun bridge network: an address from the bridge's IPAM — the same allocations the
//! node agent's pods on that bridge draw from, so pods and VMs reach each other — and a tap on
//! the bridge that exists only while the VM's QEMU runs. The guest's /init configures `eth0`
//! from `yun.ip=` and `yun.gw=` on the kernel command line.

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use yun_net::{BridgeNetwork, Ipv4Cidr};

/// The node network `yun up`'s agent uses by default: VMs join it unless told otherwise.
pub const DEFAULT_BRIDGE: &str = "yun0";
pub const DEFAULT_SUBNET: &str = "10.42.0.0/24";

/// Which network a VM joins (what `--net`, `--bridge` and `--subnet` ask for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetRequest {
    pub bridge: String,
    pub subnet: Ipv4Cidr,
}

impl Default for NetRequest {
    fn default() -> Self {
        NetRequest {
            bridge: DEFAULT_BRIDGE.into(),
            subnet: DEFAULT_SUBNET.parse().expect("valid default subnet"),
        }
    }
}

/// A VM's place on its network, fixed when the address is reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmNet {
    pub bridge: String,
    pub subnet: Ipv4Cidr,
    /// The guest's address, with the subnet's prefix.
    pub address: Ipv4Cidr,
    pub gateway: Ipv4Addr,
    /// The host end: a tap on `bridge`, present while the VM runs.
    pub tap: String,
    /// Who holds the address in the IPAM.
    pub owner: String,
}

fn network(data_dir: &Path, bridge: &str, subnet: Ipv4Cidr) -> Result<BridgeNetwork> {
    // The agent keeps its IPAM under DATA/net too: one data dir, one set of allocations.
    BridgeNetwork::new(bridge, subnet, &data_dir.join("net"))
        .with_context(|| format!("network on {bridge}"))
}

/// Reserve an address for `owner`, whose tap will be `tap`.
pub(crate) fn reserve(data_dir: &Path, req: &NetRequest, owner: &str, tap: &str) -> Result<VmNet> {
    let net = network(data_dir, &req.bridge, req.subnet)?;
    let address = net
        .reserve(owner)
        .with_context(|| format!("address on {} ({})", req.bridge, req.subnet))?;
    Ok(VmNet {
        bridge: req.bridge.clone(),
        subnet: req.subnet,
        address,
        gateway: net.gateway(),
        tap: tap.to_string(),
        owner: owner.to_string(),
    })
}

/// Give the address back. Idempotent.
pub(crate) fn release(data_dir: &Path, vm: &VmNet) -> Result<()> {
    network(data_dir, &vm.bridge, vm.subnet)?.unreserve(&vm.owner)?;
    Ok(())
}

/// Create the VM's tap on its bridge (and the bridge with its gateway address, if missing).
pub(crate) fn plug(vm: &VmNet) -> Result<()> {
    yun_net::tap::plug(&vm.tap, &vm.bridge, vm.subnet.with_addr(vm.gateway))
        .with_context(|| format!("tap {}: cannot create on bridge {}", vm.tap, vm.bridge))
}

/// Remove the VM's tap. Idempotent.
pub(crate) fn unplug(vm: &VmNet) {
    if let Err(e) = yun_net::tap::delete(&vm.tap) {
        tracing::warn!("tap {}: {e}", vm.tap);
    }
}

/// The guest's side, for the kernel command line.
pub(crate) fn guest_params(vm: &VmNet) -> String {
    format!("yun.ip={} yun.gw={}", vm.address, vm.gateway)
}

/// `yuntap` + 8 hex digits of a hash of `key` (e.g. the VM's directory): unique per VM on the
/// host, stable across restarts, within the 15-byte interface name limit.
pub(crate) fn tap_name(key: &str) -> String {
    // FNV-1a: stable across runs and Rust versions.
    let mut h: u32 = 0x811c9dc5;
    for b in key.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x01000193);
    }
    format!("yuntap{h:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_fit_and_differ() {
        let a = tap_name("/var/lib/yun/vm/machines/a");
        let b = tap_name("/var/lib/yun/vm/machines/b");
        assert_ne!(a, b);
        assert_eq!(a.len(), 14);
        assert!(a.starts_with("yuntap"));
        assert_eq!(a, tap_name("/var/lib/yun/vm/machines/a"));
    }

    #[test]
    fn reserve_is_stable_and_release_frees() {
        let dir = tempfile::tempdir().unwrap();
        let req = NetRequest {
            bridge: "yuntestbr".into(),
            subnet: "10.213.90.0/29".parse().unwrap(),
        };
        let a = reserve(dir.path(), &req, "vm-a", "yuntapa").unwrap();
        assert_eq!(a.address.to_string(), "10.213.90.2/29");
        assert_eq!(a.gateway.to_string(), "10.213.90.1");
        assert_eq!(reserve(dir.path(), &req, "vm-a", "yuntapa").unwrap(), a);
        let b = reserve(dir.path(), &req, "vm-b", "yuntapb").unwrap();
        assert_ne!(a.address, b.address);
        assert_eq!(guest_params(&a), "yun.ip=10.213.90.2/29 yun.gw=10.213.90.1");
        release(dir.path(), &a).unwrap();
        release(dir.path(), &a).unwrap();
    }
}
