//! A blocking rtnetlink session: links, addresses and routes in the caller's network namespace.
//!
//! rtnetlink is async; network set-up happens on fork/exec paths and in VM supervisors that are
//! plain threads, so each [`Netlink`] drives its own current-thread runtime. A netlink socket
//! belongs to the namespace it was opened in: open the session inside the target namespace
//! (see [`crate::netns::run_in`]) to configure it.

use std::net::Ipv4Addr;
use std::os::fd::RawFd;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::{Error, Ipv4Cidr, Result};

/// Linux's errno for "exists", as netlink reports it.
const EEXIST: i32 = libc::EEXIST;

pub struct Netlink {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

impl Netlink {
    /// Open a session in the calling thread's network namespace.
    pub fn open() -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| Error::Io("starting the netlink runtime".into(), e))?;
        let (conn, handle, _) = rt
            .block_on(async { rtnetlink::new_connection() })
            .map_err(|e| Error::Io("opening a netlink socket".into(), e))?;
        rt.spawn(conn);
        Ok(Netlink { rt, handle })
    }

    /// Index of the link called `name`, or None.
    pub fn link_index(&self, name: &str) -> Result<Option<u32>> {
        if check_ifname(name).is_err() {
            // The kernel could not hold a link by that name (it would answer ERANGE).
            return Ok(None);
        }
        let handle = self.handle.clone();
        let name = name.to_string();
        self.rt.block_on(async move {
            let mut links = handle.link().get().match_name(name.clone()).execute();
            match links.try_next().await {
                Ok(Some(msg)) => Ok(Some(msg.header.index)),
                Ok(None) => Ok(None),
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
                Err(e) => Err(Error::netlink(format!("looking up link {name}"), e)),
            }
        })
    }

    fn index(&self, name: &str) -> Result<u32> {
        self.link_index(name)?
            .ok_or_else(|| Error::NoSuchLink(name.to_string()))
    }

    /// Names of all links whose name starts with `prefix`.
    pub fn links_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let handle = self.handle.clone();
        let msgs: Vec<LinkMessage> = self.rt.block_on(async move {
            handle
                .link()
                .get()
                .execute()
                .try_collect()
                .await
                .map_err(|e| Error::netlink("listing links".into(), e))
        })?;
        Ok(msgs
            .iter()
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) if n.starts_with(prefix) => Some(n.clone()),
                    _ => None,
                })
            })
            .collect())
    }

    fn add_link(&self, what: String, msg: LinkMessage) -> Result<()> {
        let handle = self.handle.clone();
        self.rt.block_on(async move {
            handle
                .link()
                .add(msg)
                .execute()
                .await
                .map_err(|e| Error::netlink(what, e))
        })
    }

    fn set_link(&self, what: String, msg: LinkMessage) -> Result<()> {
        let handle = self.handle.clone();
        self.rt.block_on(async move {
            handle
                .link()
                .set(msg)
                .execute()
                .await
                .map_err(|e| Error::netlink(what, e))
        })
    }

    /// Create bridge `name` unless it exists, and bring it up.
    pub fn ensure_bridge(&self, name: &str) -> Result<()> {
        check_ifname(name)?;
        if self.link_index(name)?.is_none() {
            match self.add_link(
                format!("creating bridge {name}"),
                LinkBridge::new(name).build(),
            ) {
                Ok(()) => {}
                // Someone else created it between our check and the add: fine.
                Err(Error::Netlink { code, .. }) if code == EEXIST => {}
                Err(e) => return Err(e),
            }
        }
        self.set_up(name)
    }

    /// Create a veth pair `host` <-> `peer` in this namespace.
    pub fn create_veth(&self, host: &str, peer: &str) -> Result<()> {
        check_ifname(host)?;
        check_ifname(peer)?;
        self.add_link(
            format!("creating veth pair {host}/{peer}"),
            LinkVeth::new(host, peer).build(),
        )
    }

    /// Move link `name` into the network namespace open at `netns_fd`.
    pub fn move_to_netns(&self, name: &str, netns_fd: RawFd) -> Result<()> {
        let index = self.index(name)?;
        self.set_link(
            format!("moving {name} into another network namespace"),
            LinkUnspec::new_with_index(index)
                .setns_by_fd(netns_fd)
                .build(),
        )
    }

    /// Attach link `name` to bridge `bridge`.
    pub fn set_master(&self, name: &str, bridge: &str) -> Result<()> {
        let index = self.index(name)?;
        let master = self.index(bridge)?;
        self.set_link(
            format!("attaching {name} to {bridge}"),
            LinkUnspec::new_with_index(index).controller(master).build(),
        )
    }

    /// Rename link `name` (it must be down).
    pub fn rename(&self, name: &str, new_name: &str) -> Result<()> {
        check_ifname(new_name)?;
        let index = self.index(name)?;
        self.set_link(
            format!("renaming {name} to {new_name}"),
            LinkUnspec::new_with_index(index)
                .name(new_name.to_string())
                .build(),
        )
    }

    pub fn set_up(&self, name: &str) -> Result<()> {
        let index = self.index(name)?;
        self.set_link(
            format!("bringing {name} up"),
            LinkUnspec::new_with_index(index).up().build(),
        )
    }

    /// Add `addr` to link `name`; an address already present is not an error.
    pub fn add_address(&self, name: &str, addr: Ipv4Cidr) -> Result<()> {
        let index = self.index(name)?;
        let handle = self.handle.clone();
        let res = self.rt.block_on(async move {
            handle
                .address()
                .add(index, addr.addr.into(), addr.prefix)
                .execute()
                .await
        });
        match res {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -EEXIST => Ok(()),
            Err(e) => Err(Error::netlink(format!("adding {addr} to {name}"), e)),
        }
    }

    /// Add a default route via `gateway`.
    pub fn add_default_route(&self, gateway: Ipv4Addr) -> Result<()> {
        let handle = self.handle.clone();
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .build();
        self.rt.block_on(async move {
            handle
                .route()
                .add(route)
                .execute()
                .await
                .map_err(|e| Error::netlink(format!("adding a default route via {gateway}"), e))
        })
    }

    /// Delete link `name`; a missing link is not an error (deletion is idempotent).
    pub fn delete_link(&self, name: &str) -> Result<()> {
        let Some(index) = self.link_index(name)? else {
            return Ok(());
        };
        let handle = self.handle.clone();
        let res = self
            .rt
            .block_on(async move { handle.link().del(index).execute().await });
        match res {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(()),
            Err(e) => Err(Error::netlink(format!("deleting link {name}"), e)),
        }
    }
}

/// Linux interface names: 1..=15 bytes, no '/', ':' or whitespace.
pub fn check_ifname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_string()))
    }
}
