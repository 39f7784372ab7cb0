//! Host networking for yun: bridges, veth pairs, taps and address management.
//!
//! - [`Netlink`]: a blocking rtnetlink session (links, addresses, routes) in one namespace.
//! - [`netns`]: run code inside a network namespace; named namespaces like `ip netns add`.
//! - [`tap`]: persistent tap devices for VMs.
//! - [`Ipam`]: host-local address allocation from a subnet, one file per address.
//! - [`BridgeNetwork`]: a bridge with a gateway address and veth-attached namespaces — the pod
//!   network of a node (like the CNI bridge + host-local plugins).
//!
//! Everything created on the host is named with the prefix `yun`.

mod bridge;
mod cidr;
mod ipam;
mod netlink;
pub mod netns;
pub mod proxy;
pub mod tap;

pub use bridge::{host_veth_name, Attachment, BridgeNetwork};
pub use cidr::{CidrError, Ipv4Cidr};
pub use ipam::Ipam;
pub use netlink::{check_ifname, Netlink};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("{what}: {message}")]
    Netlink {
        what: String,
        /// The errno netlink reported (positive), 0 when it was not an errno.
        code: i32,
        message: String,
    },
    #[error("no network link named {0:?}")]
    NoSuchLink(String),
    #[error("invalid interface name {0:?}: 1 to 15 bytes without '/', ':' or spaces")]
    InvalidName(String),
    #[error("no free address left in {0}")]
    Exhausted(Ipv4Cidr),
    #[error(transparent)]
    Cidr(#[from] CidrError),
}

impl Error {
    pub(crate) fn netlink(what: String, e: rtnetlink::Error) -> Error {
        let code = match &e {
            rtnetlink::Error::NetlinkError(m) => m.raw_code().abs(),
            _ => 0,
        };
        let message = match code {
            0 => e.to_string(),
            c => std::io::Error::from_raw_os_error(c).to_string(),
        };
        Error::Netlink {
            what,
            code,
            message,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
