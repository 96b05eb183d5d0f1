//! Relayed paths end to end: both peers on one relay (the relay delivers to itself), and two
//! relays; the flow records name the relayed addresses as outer contexts.

use proto::flow::CloseReason;
use scenario::Scenario;
use sim::{RunOptions, run};

fn story(mode: &str, gateway_relay: &str) -> String {
    format!(
        r#"
name: relayed-{mode}
topology:
  clients: [{{ name: alice, stack: v4, relay: r1 }}]
  gateways: [{{ name: gw, stack: v4, relay: {gateway_relay} }}]
  relays: [{{ name: r1, stack: v4 }}, {{ name: r2, stack: v4 }}]
  resources: [{{ name: web, gateway: gw, cidr: 198.51.100.10/32 }}]
  grants: [{{ client: alice, resource: web }}]
  latency: {{ default_ms: 10 }}
steps:
  - path: {{ client: alice, gateway: gw, mode: {mode} }}
  - udp: {{ client: alice, resource: web, port: 5353, bytes: 64 }}
  - udp: {{ client: alice, resource: web, port: 5353, bytes: 64 }}
"#
    )
}

fn ms_of(time: proto::flow::UtcTime) -> u64 {
    (time.unix_nanos() / 1_000_000) - 1_767_225_600_000
}

fn run_story(mode: &str, gateway_relay: &str) -> sim::Outcome {
    let scenario = Scenario::from_yaml(&story(mode, gateway_relay), "inline").expect("valid");
    let outcome = run(&scenario, &RunOptions { seed: 3 }).expect("runs");
    for line in &outcome.trace {
        eprintln!("{line}");
    }
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    outcome
}

#[test]
fn both_peers_on_one_relay() {
    let outcome = run_story("same-relay", "r1");
    assert_eq!(outcome.flows.len(), 1, "{:?}", outcome.flows);
    let flow = &outcome.flows[0];
    // The path step is step 0 (2000 ms); the first datagram leaves at 3000 ms and crosses two
    // 10 ms links (client -> relay -> gateway), the relay delivering to itself in between.
    assert_eq!(ms_of(flow.start), 3020);
    assert_eq!((flow.tx_packets, flow.rx_packets), (2, 2));
    assert_eq!(flow.close_reason, CloseReason::Shutdown);
    let relay_ip = "203.0.113.1".parse::<std::net::IpAddr>().unwrap();
    assert_eq!(flow.outer_contexts.len(), 1);
    assert_eq!(
        flow.outer_contexts[0].remote.ip(),
        relay_ip,
        "{:?}",
        flow.outer_contexts
    );
    assert_eq!(
        flow.outer_contexts[0].local.ip(),
        relay_ip,
        "{:?}",
        flow.outer_contexts
    );
    assert!(
        outcome
            .trace
            .iter()
            .any(|line| line.host == "r1" && line.event.starts_with("ChannelData"))
    );
}

#[test]
fn peers_on_two_relays() {
    let outcome = run_story("different-relays", "r2");
    assert_eq!(outcome.flows.len(), 1, "{:?}", outcome.flows);
    let flow = &outcome.flows[0];
    // client -> r1 -> r2 -> gateway: three 10 ms links.
    assert_eq!(ms_of(flow.start), 3030);
    assert_eq!(
        flow.outer_contexts[0].remote.ip().to_string(),
        "203.0.113.1"
    );
    assert_eq!(flow.outer_contexts[0].local.ip().to_string(), "203.0.113.2");
}
