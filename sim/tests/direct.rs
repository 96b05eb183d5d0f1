//! The direct path end to end: traffic from a client reaches the resource through the gateway,
//! replies come back, and the gateway's flow records have the times docs/harness.md gives.

use proto::flow::{CloseReason, Protocol};
use scenario_format::Scenario;
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
    let outcome = run(&scenario, &RunOptions::seeded(1)).expect("runs");
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
    let first = run(&scenario, &RunOptions::seeded(7)).expect("runs");
    let second = run(&scenario, &RunOptions::seeded(7)).expect("runs");
    assert_eq!(first.trace, second.trace);
    assert_eq!(first.flows, second.flows);
}

const TCP_TO_A_DNS_RESOURCE: &str = r#"
name: tcp-dns-resource
topology:
  clients: [{ name: alice, stack: v4 }]
  gateways: [{ name: gw, stack: v4 }]
  resources: [{ name: app, gateway: gw, dns: "*.example.com" }]
  dns_records: [{ name: api.example.com, addresses: [198.51.100.42] }]
  grants: [{ client: alice, resource: app, filters: [tcp/443] }]
  latency: { default_ms: 10 }
steps:
  - tcp-open: { conn: 1, client: alice, resource: app, domain: api.example.com, port: 443 }
  - tcp-data: { conn: 1, from: client, bytes: 100 }
  - tcp-data: { conn: 1, from: resource, bytes: 300 }
  - tcp-close: { conn: 1, by: client }
"#;

#[test]
fn a_tcp_connection_to_a_dns_resource_is_one_record_with_its_domain() {
    let scenario = Scenario::from_yaml(TCP_TO_A_DNS_RESOURCE, "inline").expect("valid");
    let outcome = run(&scenario, &RunOptions::seeded(1)).expect("runs");
    for line in &outcome.trace {
        eprintln!("{line}");
    }
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(outcome.flows.len(), 1, "{:?}", outcome.flows);
    let flow = &outcome.flows[0];
    eprintln!("{flow:#?}");
    assert_eq!(flow.close_reason, CloseReason::Fin);
    assert_eq!(flow.inner_domain.as_deref(), Some("api.example.com"));
    assert_eq!(flow.inner_dst_ip.to_string(), "198.51.100.42");
    // SYN, ACK, data, ACK of the resource's data, FIN, final ACK from the client;
    // SYN-ACK, ACK of data, data, FIN-ACK from the resource.
    assert_eq!((flow.tx_packets, flow.tx_bytes), (6, 100));
    assert_eq!((flow.rx_packets, flow.rx_bytes), (4, 300));
    // The gateway starts resolving when the proxy IP is mapped (2000 ms); the SYN arrives at
    // 2010 ms and waits for the answer, which comes back at 2020 ms.
    assert_eq!(ms_of(flow.start), 2020);
    // The client's final ACK reaches the gateway at 5032 ms and closes the flow.
    assert_eq!(ms_of(flow.end), 5032);
    assert_eq!(ms_of(flow.last_packet), 5032);
}
