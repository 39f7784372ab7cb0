//! A node's pod network: one bridge holding the subnet's gateway address, and a veth pair per
//! network namespace with an address from [`Ipam`] — what the CNI bridge and host-local plugins
//! do for a kubelet, done in-process.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::{netns, Error, Ipam, Ipv4Cidr, Netlink, Result};

/// A bridge (e.g. `yun0`) with the first address of `subnet`, and the allocations for it.
pub struct BridgeNetwork {
    bridge: String,
    ipam: Ipam,
}

/// What [`BridgeNetwork::attach`] set up for one namespace.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attachment {
    /// The host end of the veth pair, attached to the bridge.
    pub host_veth: String,
    /// The interface inside the namespace.
    pub ifname: String,
    /// Its address, with the subnet's prefix.
    pub address: Ipv4Cidr,
    pub gateway: Ipv4Addr,
}

impl BridgeNetwork {
    /// A network on bridge `bridge` for `subnet`, keeping allocations under `state_dir`.
    /// Nothing is created until [`ensure`](Self::ensure).
    pub fn new(bridge: &str, subnet: Ipv4Cidr, state_dir: &Path) -> Result<Self> {
        crate::check_ifname(bridge)?;
        Ok(BridgeNetwork {
            bridge: bridge.to_string(),
            ipam: Ipam::new(&state_dir.join(subnet.network().to_string()), subnet)?,
        })
    }

    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.ipam.gateway()
    }

    pub fn subnet(&self) -> Ipv4Cidr {
        self.ipam.subnet()
    }

    /// Create the bridge if needed, give it the gateway address and bring it up.
    pub fn ensure(&self) -> Result<()> {
        let nl = Netlink::open()?;
        nl.ensure_bridge(&self.bridge)?;
        nl.add_address(&self.bridge, self.subnet().with_addr(self.gateway()))
    }

    /// Remove the bridge (the caller has detached everything).
    pub fn remove(&self) -> Result<()> {
        Netlink::open()?.delete_link(&self.bridge)
    }

    /// Connect the network namespace at `netns_path` (e.g. /proc/PID/ns/net) to the bridge as
    /// `ifname` with a fresh address for `owner`, loopback up and a default route via the
    /// gateway. On failure nothing is left behind: no link, no allocation.
    pub fn attach(&self, owner: &str, netns_path: &Path, ifname: &str) -> Result<Attachment> {
        crate::check_ifname(ifname)?;
        let ip = self.ipam.allocate(owner)?;
        let host_veth = host_veth_name(owner);
        let attached = self.connect(&host_veth, netns_path, ifname, ip);
        match attached {
            Ok(()) => Ok(Attachment {
                host_veth,
                ifname: ifname.to_string(),
                address: self.subnet().with_addr(ip),
                gateway: self.gateway(),
            }),
            Err(e) => {
                if let Ok(nl) = Netlink::open() {
                    let _ = nl.delete_link(&host_veth);
                }
                let _ = self.ipam.release(owner);
                Err(e)
            }
        }
    }

    fn connect(
        &self,
        host_veth: &str,
        netns_path: &Path,
        ifname: &str,
        ip: Ipv4Addr,
    ) -> Result<()> {
        // The peer gets a unique temporary name on the host (where `ifname`, usually eth0,
        // might exist) and its final name inside the namespace.
        let peer = format!("yunp{}", &host_veth[4..]);
        let nl = Netlink::open()?;
        nl.create_veth(host_veth, &peer)?;
        nl.set_master(host_veth, &self.bridge)?;
        nl.set_up(host_veth)?;
        let ns = std::fs::File::open(netns_path)
            .map_err(|e| Error::Io(format!("opening {}", netns_path.display()), e))?;
        nl.move_to_netns(&peer, ns.as_raw_fd())?;
        let address = self.subnet().with_addr(ip);
        let gateway = self.gateway();
        netns::run_in(netns_path, || {
            let inside = Netlink::open()?;
            inside.set_up("lo")?;
            inside.rename(&peer, ifname)?;
            inside.add_address(ifname, address)?;
            inside.set_up(ifname)?;
            inside.add_default_route(gateway)
        })
    }

    /// Undo [`attach`](Self::attach) for `owner`: delete its veth pair (if the namespace still
    /// lives) and release its address. Idempotent.
    pub fn detach(&self, owner: &str) -> Result<()> {
        Netlink::open()?.delete_link(&host_veth_name(owner))?;
        self.ipam.release(owner)
    }

    /// Reserve an address on this network for `owner` without a veth, for a VM that configures
    /// it inside its guest; the same owner gets the same address again.
    pub fn reserve(&self, owner: &str) -> Result<Ipv4Cidr> {
        Ok(self.subnet().with_addr(self.ipam.allocate(owner)?))
    }

    /// Give back what [`reserve`](Self::reserve) handed `owner`. Idempotent.
    pub fn unreserve(&self, owner: &str) -> Result<()> {
        self.ipam.release(owner)
    }

    /// The address `owner` holds, if attached.
    pub fn address_of(&self, owner: &str) -> Result<Option<Ipv4Addr>> {
        self.ipam.lookup(owner)
    }
}

/// `yunv` + 8 hex digits of a hash of the owner: unique per owner, within the 15-byte limit,
/// and the same after a restart so a re-adopted pod finds its link.
pub fn host_veth_name(owner: &str) -> String {
    // FNV-1a: stable across runs and Rust versions, unlike DefaultHasher.
    let mut h: u32 = 0x811c9dc5;
    for b in owner.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x01000193);
    }
    format!("yunv{h:08x}")
}
