//! Stray datagrams at relays, one test per kind: what the XDP program and the relay host do
//! with each (docs/harness.md, "Stray datagrams"), in both families and every datapath.

use observation::{HostFate, RelayDropReason, StrayArrival, XdpVerdict};
use scenario_format::Scenario;
use sim::{Datapath, Direction, RunOptions, run};

/// One stray of `kind` to a dual-stack relay, with a client and a gateway allocated there.
fn story(kind: &str, ipv6: bool, allocation: Option<&str>) -> Scenario {
    let allocation = allocation.map_or(String::new(), |host| format!(", allocation: {host}"));
    Scenario::from_yaml(
        &format!(
            r#"
name: stray-{kind}
topology:
  clients: [{{ name: alice, stack: dual, relay: r1 }}]
  gateways: [{{ name: gw, stack: dual, relay: r1 }}]
  relays: [{{ name: r1, stack: dual }}]
  resources: [{{ name: web, gateway: gw, cidr: 198.51.100.10/32 }}]
  grants: [{{ client: alice, resource: web }}]
  latency: {{ default_ms: 10 }}
steps:
  - path: {{ client: alice, gateway: gw, mode: same-relay }}
  - stray: {{ relay: r1, kind: {kind}, ipv6: {ipv6}{allocation} }}
  - udp: {{ client: alice, resource: web, port: 5353, bytes: 64 }}
"#
        ),
        "inline",
    )
    .expect("valid")
}

/// Runs the story in `datapath` and returns its one stray arrival.
fn stray(kind: &str, ipv6: bool, allocation: Option<&str>, datapath: Datapath) -> StrayArrival {
    let scenario = story(kind, ipv6, allocation);
    let outcome = run(&scenario, &RunOptions { seed: 5, datapath }).expect("runs");
    for line in &outcome.trace {
        eprintln!("{line}");
    }
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    // Nothing goes back to the internet host, and the traffic after it still flows.
    assert!(
        !outcome.hops.iter().any(|hop| hop.host != "internet"
            && hop.direction == Direction::Sent
            && hop.dst.ip() == scenario_format::plan::internet_host(hop.dst.ip())),
        "something answered the stray"
    );
    assert_eq!(outcome.deliveries.len(), 2, "{:?}", outcome.deliveries);
    let [arrival] = &outcome.strays[..] else {
        panic!("one stray arrival, not {:?}", outcome.strays);
    };
    // Sent at step 1 (3000 ms), over the default 10 ms link.
    assert_eq!((arrival.at_ms, arrival.step), (3010, 1));
    assert_eq!(arrival.to.is_ipv6(), ipv6);
    if outcome.datapath.runs_xdp() {
        assert_eq!(arrival.xdp, Some(XdpVerdict::Pass));
    }
    arrival.clone()
}

fn every_datapath(kind: &str, allocation: Option<&str>, fate: HostFate, port: Option<u16>) {
    for datapath in [
        Datapath::Differential,
        Datapath::XdpFirst,
        Datapath::Userspace,
    ] {
        for ipv6 in [false, true] {
            let arrival = stray(kind, ipv6, allocation, datapath);
            assert_eq!(arrival.fate, fate, "{kind} {datapath:?} v6 {ipv6}");
            if let Some(port) = port {
                assert_eq!(arrival.to.port(), port);
            }
        }
    }
}

#[test]
fn a_dns_reply_reaches_the_relay_hosts_resolver() {
    every_datapath("dns-reply", None, HostFate::HostStack, Some(33053));
}

#[test]
fn an_ntp_reply_reaches_the_relay_hosts_ntp_client() {
    every_datapath("ntp-reply", None, HostFate::HostStack, Some(33123));
}

#[test]
fn garbage_on_the_turn_port_is_dropped_as_not_stun() {
    every_datapath(
        "turn-port-garbage",
        None,
        HostFate::RelayDropped(RelayDropReason::NotStun),
        Some(3478),
    );
}

#[test]
fn channel_data_from_a_host_without_an_allocation_is_dropped() {
    every_datapath(
        "stranger-channel-data",
        None,
        HostFate::RelayDropped(RelayDropReason::NoAllocation),
        Some(3478),
    );
}

#[test]
fn a_truncated_stun_header_is_dropped_as_not_stun() {
    every_datapath(
        "truncated-stun",
        None,
        HostFate::RelayDropped(RelayDropReason::NotStun),
        Some(3478),
    );
}

#[test]
fn data_from_a_peer_without_permission_is_dropped() {
    for host in ["gw", "alice"] {
        every_datapath(
            "unpermitted-peer",
            Some(host),
            HostFate::RelayDropped(RelayDropReason::NoPermission),
            None,
        );
    }
}
