//! The direct path end to end: traffic from a client reaches the resource through the gateway,
//! replies come back, and the gateway's flow records have the times docs/harness.md gives.

use proto::flow::{CloseReason, Protocol};
use scenario::Scenario;
use sim::{RunOptions, run};

const UDP_THEN_IDLE: &str = r#"
name: udp-cidr-direct
topology:
  clients: [{ name: alice, stack: v4 }]
  gateways: [{ name: gw, stack: v4 }]
  resources: [{ name: web, gateway: gw, cidr: 198.51.100.10/32 }]
  grants: [{ client: alice, resource: web }]
  latency: { default_ms: 10 }
steps:
  - udp: { client: alice, resource: web, port: 5353, bytes: 64 }
  - idle: { seconds: 130 }
"#;

fn ms_of(time: proto::flow::UtcTime) -> u64 {
    (time.unix_nanos() / 1_000_000) - 1_767_225_600_000
}

#[test]
fn a_udp_datagram_is_echoed_and_its_flow_idles_out_exactly() {
    let scenario = Scenario::from_yaml(UDP_THEN_IDLE, "inline").expect("valid");
    let outcome = run(&scenario, &RunOptions { seed: 1 }).expect("runs");
    for line in &outcome.trace {
        eprintln!("{line}");
    }
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(outcome.flows.len(), 1, "{:?}", outcome.flows);
    let flow = &outcome.flows[0];
    assert_eq!(flow.protocol, Protocol::Udp);
    // Sent at 2000 ms, 10 ms to the gateway, 1 ms to the resource and back.
    assert_eq!(ms_of(flow.start), 2010);
    assert_eq!(ms_of(flow.last_packet), 2012);
    assert_eq!(ms_of(flow.end), 2012);
    assert_eq!(flow.close_reason, CloseReason::Idle);
    assert_eq!(
        (
            flow.tx_packets,
            flow.tx_bytes,
            flow.rx_packets,
            flow.rx_bytes
        ),
        (1, 64, 1, 64)
    );
    assert_eq!(flow.inner_src_port, 40000 + 5353);
    assert!(
        outcome.trace.iter().any(|line| line.host == "alice"
            && line.event.starts_with("received UDP 198.51.100.10:5353"))
    );
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let scenario = Scenario::from_yaml(UDP_THEN_IDLE, "inline").expect("valid");
    let first = run(&scenario, &RunOptions { seed: 7 }).expect("runs");
    let second = run(&scenario, &RunOptions { seed: 7 }).expect("runs");
    assert_eq!(first.trace, second.trace);
    assert_eq!(first.flows, second.flows);
}
