//! Service virtual IPs on a node, as kube-proxy's nftables mode does it: one table per pod
//! bridge, rewritten whole (one atomic `nft -f` transaction) whenever Services or their
//! endpoints change.
//!
//! - `nat` hooks (prerouting for the pods of this bridge, output for the host) send
//!   `clusterIP:port` to a chain per service port, which picks one ready endpoint at random
//!   (`numgen random`) and DNATs. Only this bridge's pods: two nodes or clusters on one host
//!   (tests run several `yun up` at once, all with the default service CIDR) would otherwise
//!   send each other's pods to their own Services, the kubernetes Service included.
//! - Traffic DNATed out through the bridge is masqueraded to the bridge's address, so replies
//!   come back through the host's conntrack even when client and endpoint share the bridge.
//! - A service port without endpoints is rejected at once (as kube-proxy does) instead of
//!   following the default route off the machine.
//! - Forwarding is enabled on the bridge only, and forwarded traffic from the bridge may only
//!   leave through the bridge: pods still have no route off the node.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::{check_ifname, Error, Result};

const NFT: &str = "nft";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One port of one Service and the endpoints behind it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServicePort {
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    /// Ready endpoints: address and target port.
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

/// The service rules for the pods on one bridge.
#[derive(Debug, Clone)]
pub struct ServiceProxy {
    bridge: String,
    table: String,
}

impl ServiceProxy {
    pub fn new(bridge: &str) -> Result<ServiceProxy> {
        check_ifname(bridge)?;
        // nft identifiers are letters, digits and '_'; interface names may hold more.
        let safe: String = bridge
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        Ok(ServiceProxy {
            bridge: bridge.to_string(),
            table: format!("yunproxy_{safe}"),
        })
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// The whole table for `ports`, as one nft script that replaces the previous one.
    pub fn render(&self, ports: &[ServicePort]) -> String {
        let (t, br) = (&self.table, &self.bridge);
        let mut s = String::new();
        // Declaring the table first makes the delete succeed on the first run.
        let _ = writeln!(s, "table ip {t}\ndelete table ip {t}\ntable ip {t} {{");
        let _ = writeln!(
            s,
            "  chain prerouting {{ type nat hook prerouting priority dstnat; policy accept; iifname \"{br}\" jump services; }}"
        );
        let _ = writeln!(
            s,
            "  chain output {{ type nat hook output priority -100; policy accept; jump services; }}"
        );
        let _ = writeln!(
            s,
            "  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept; ct status dnat oifname \"{br}\" masquerade; }}"
        );
        let _ = writeln!(
            s,
            "  chain forward {{ type filter hook forward priority filter; policy accept; iifname \"{br}\" oifname != \"{br}\" drop; iifname \"{br}\" jump no_endpoints; }}"
        );
        let _ = writeln!(
            s,
            "  chain local_out {{ type filter hook output priority filter; policy accept; jump no_endpoints; }}"
        );
        let mut services = String::new();
        let mut no_endpoints = String::new();
        let mut chains = String::new();
        for (i, p) in ports.iter().enumerate() {
            let proto = p.protocol.nft();
            let matcher = format!("ip daddr {} {proto} dport {}", p.cluster_ip, p.port);
            if p.endpoints.is_empty() {
                let how = match p.protocol {
                    Protocol::Tcp => "reject with tcp reset",
                    Protocol::Udp => "reject",
                };
                let _ = writeln!(no_endpoints, "    {matcher} {how};");
                continue;
            }
            let _ = writeln!(services, "    {matcher} jump svc{i};");
            let n = p.endpoints.len();
            let picks: Vec<String> = (0..n).map(|e| format!("{e} : jump svc{i}ep{e}")).collect();
            let _ = writeln!(
                chains,
                "  chain svc{i} {{ numgen random mod {n} vmap {{ {} }}; }}",
                picks.join(", ")
            );
            for (e, (addr, port)) in p.endpoints.iter().enumerate() {
                let _ = writeln!(
                    chains,
                    "  chain svc{i}ep{e} {{ {proto} dport {} dnat to {addr}:{port}; }}",
                    p.port
                );
            }
        }
        let _ = write!(s, "  chain services {{\n{services}  }}\n");
        let _ = write!(s, "  chain no_endpoints {{\n{no_endpoints}  }}\n");
        s.push_str(&chains);
        s.push_str("}\n");
        s
    }

    /// Replace the node's service rules with `ports` (and let the bridge forward).
    pub fn apply(&self, ports: &[ServicePort]) -> Result<()> {
        let fwd = format!("/proc/sys/net/ipv4/conf/{}/forwarding", self.bridge);
        std::fs::write(&fwd, "1").map_err(|e| Error::Io(format!("writing {fwd}"), e))?;
        nft(&self.render(ports))
    }

    /// Remove the table; a missing one is not an error.
    pub fn remove(&self) -> Result<()> {
        let t = &self.table;
        nft(&format!("table ip {t}\ndelete table ip {t}\n"))
    }
}

fn nft(script: &str) -> Result<()> {
    let mut child = Command::new(NFT)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Io(format!("running {NFT} (install nftables)"), e))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())
        .map_err(|e| Error::Io(format!("writing to {NFT}"), e))?;
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Io(format!("waiting for {NFT}"), e))?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        let line = why
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("failed");
        return Err(Error::Io(
            format!("{NFT}: {line}"),
            std::io::Error::other("ruleset rejected"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_dnat_for_endpoints_and_reject_without() {
        let p = ServiceProxy::new("yun0").unwrap();
        assert_eq!(p.table(), "yunproxy_yun0");
        let s = p.render(&[
            ServicePort {
                cluster_ip: "10.43.0.10".parse().unwrap(),
                port: 80,
                protocol: Protocol::Tcp,
                endpoints: vec![
                    ("10.42.0.5".parse().unwrap(), 8080),
                    ("10.42.0.6".parse().unwrap(), 8080),
                ],
            },
            ServicePort {
                cluster_ip: "10.43.0.11".parse().unwrap(),
                port: 53,
                protocol: Protocol::Udp,
                endpoints: vec![],
            },
        ]);
        assert!(s.starts_with("table ip yunproxy_yun0\ndelete table ip yunproxy_yun0\n"));
        assert!(s.contains("ip daddr 10.43.0.10 tcp dport 80 jump svc0;"));
        assert!(s.contains("numgen random mod 2 vmap { 0 : jump svc0ep0, 1 : jump svc0ep1 }"));
        assert!(s.contains("chain svc0ep1 { tcp dport 80 dnat to 10.42.0.6:8080; }"));
        assert!(s.contains("ip daddr 10.43.0.11 udp dport 53 reject;"));
        assert!(s.contains("ct status dnat oifname \"yun0\" masquerade"));
        // Only this bridge's pods reach this node's Services (another cluster on the host
        // keeps its own).
        assert!(s.contains("priority dstnat; policy accept; iifname \"yun0\" jump services;"));
        assert!(s.contains("iifname \"yun0\" jump no_endpoints;"));
        assert_eq!(
            ServiceProxy::new("yun-a.b").unwrap().table(),
            "yunproxy_yun_a_b"
        );
    }
}
