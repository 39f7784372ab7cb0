//! The pod network against the real kernel: a bridge, named namespaces, veth pairs, taps.
//! Every name starts with `yun` and carries this test's pid; guards remove it all on drop.

use std::path::Path;
use std::process::Command;

use yun_net::netns::{self, NamedNetns};
use yun_net::{BridgeNetwork, Error, Netlink};

/// Removes the bridge (and with it nothing else) when the test ends, also on failure.
struct BridgeGuard(String);

impl Drop for BridgeGuard {
    fn drop(&mut self) {
        if let Ok(nl) = Netlink::open() {
            let _ = nl.delete_link(&self.0);
        }
    }
}

fn unique(prefix: &str, n: u32) -> String {
    format!("{prefix}{:x}{n}", std::process::id() & 0xfffff)
}

fn ping_from(ns: &Path, ip: std::net::Ipv4Addr) -> bool {
    netns::run_in(ns, || {
        Ok(Command::new("busybox")
            .args(["ping", "-c", "1", "-W", "3", &ip.to_string()])
            .output()
            .expect("busybox ping")
            .status
            .success())
    })
    .unwrap()
}

#[test]
fn two_namespaces_on_a_bridge_reach_each_other_and_the_gateway() {
    let state = tempfile::tempdir().unwrap();
    let bridge = unique("yunbt", 1);
    let _guard = BridgeGuard(bridge.clone());
    let net = BridgeNetwork::new(&bridge, "10.231.7.0/24".parse().unwrap(), state.path()).unwrap();
    net.ensure().unwrap();
    net.ensure().unwrap(); // idempotent

    let ns_a = NamedNetns::create(&unique("yunna", 1), true).unwrap();
    let ns_b = NamedNetns::create(&unique("yunnb", 1), true).unwrap();
    let a = net.attach("pod-a", ns_a.path(), "eth0").unwrap();
    let b = net.attach("pod-b", ns_b.path(), "eth0").unwrap();
    assert_ne!(a.address, b.address);
    assert_eq!(
        a.gateway,
        "10.231.7.1".parse::<std::net::Ipv4Addr>().unwrap()
    );
    assert_eq!(net.address_of("pod-a").unwrap(), Some(a.address.addr));

    // Inside a namespace: eth0 carries the address, lo is up, the default route is the gateway.
    let inside = netns::run_in(ns_a.path(), || {
        let out = Command::new("ip")
            .args(["-4", "addr", "show"])
            .output()
            .unwrap();
        let routes = Command::new("ip").args(["route"]).output().unwrap();
        Ok((
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&routes.stdout).into_owned(),
        ))
    })
    .unwrap();
    assert!(
        inside.0.contains(&format!("inet {}", a.address)),
        "{}",
        inside.0
    );
    assert!(inside.0.contains("inet 127.0.0.1/8"), "{}", inside.0);
    assert!(
        inside.1.contains("default via 10.231.7.1 dev eth0"),
        "{}",
        inside.1
    );

    assert!(
        ping_from(ns_a.path(), b.address.addr),
        "pod a cannot reach pod b"
    );
    assert!(
        ping_from(ns_b.path(), net.gateway()),
        "pod b cannot reach the host"
    );

    // Detach removes the host veth and the allocation, and is idempotent.
    net.detach("pod-a").unwrap();
    net.detach("pod-a").unwrap();
    assert_eq!(
        Netlink::open().unwrap().link_index(&a.host_veth).unwrap(),
        None
    );
    assert_eq!(net.address_of("pod-a").unwrap(), None);
    net.detach("pod-b").unwrap();
    ns_a.delete().unwrap();
    drop(ns_b);
    net.remove().unwrap();
    assert_eq!(Netlink::open().unwrap().link_index(&bridge).unwrap(), None);
}

#[test]
fn a_failed_attach_leaves_no_link_and_no_address() {
    let state = tempfile::tempdir().unwrap();
    let bridge = unique("yunbt", 2);
    let _guard = BridgeGuard(bridge.clone());
    let net = BridgeNetwork::new(&bridge, "10.231.8.0/24".parse().unwrap(), state.path()).unwrap();
    net.ensure().unwrap();
    let err = net
        .attach("ghost", Path::new("/run/netns/yun-does-not-exist"), "eth0")
        .unwrap_err();
    assert!(err.to_string().contains("yun-does-not-exist"), "{err}");
    assert_eq!(
        Netlink::open()
            .unwrap()
            .link_index(&yun_net::host_veth_name("ghost"))
            .unwrap(),
        None
    );
    assert_eq!(net.address_of("ghost").unwrap(), None);
}

#[test]
fn a_tap_joins_the_bridge_and_goes_away() {
    let bridge = unique("yunbt", 3);
    let _guard = BridgeGuard(bridge.clone());
    let nl = Netlink::open().unwrap();
    nl.ensure_bridge(&bridge).unwrap();
    let tap = unique("yuntap", 3);
    yun_net::tap::create(&tap, Some(&bridge)).unwrap();
    let master = std::fs::read_link(format!("/sys/class/net/{tap}/master")).unwrap();
    assert!(master.ends_with(&bridge), "{master:?}");
    yun_net::tap::delete(&tap).unwrap();
    yun_net::tap::delete(&tap).unwrap();
    assert_eq!(nl.link_index(&tap).unwrap(), None);
}

#[test]
fn bad_names_and_missing_links_are_named_in_the_error() {
    let nl = Netlink::open().unwrap();
    for bad in ["", "this-name-is-far-too-long", "a/b", "a b"] {
        let err = nl.ensure_bridge(bad).unwrap_err();
        assert!(matches!(err, Error::InvalidName(_)), "{bad}: {err}");
    }
    let err = nl.set_up("yun-no-such-link").unwrap_err();
    assert_eq!(
        err.to_string(),
        "no network link named \"yun-no-such-link\""
    );
    // A tap on a missing bridge is refused and not left behind.
    let tap = unique("yuntap", 4);
    let err = yun_net::tap::create(&tap, Some("yun-no-bridge")).unwrap_err();
    assert!(err.to_string().contains("yun-no-bridge"), "{err}");
    assert_eq!(nl.link_index(&tap).unwrap(), None);
}
