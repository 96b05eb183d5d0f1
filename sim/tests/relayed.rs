//! Relayed paths end to end: both peers on one relay (the relay delivers to itself), and two
//! relays; the flow records name the relayed addresses as outer contexts.

use proto::flow::CloseReason;
use scenario_format::Scenario;
use sim::{Datapath, Direction, RunOptions, run};

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
    run_with(mode, gateway_relay, Datapath::Differential)
}

fn run_with(mode: &str, gateway_relay: &str, datapath: Datapath) -> sim::Outcome {
    let scenario = Scenario::from_yaml(&story(mode, gateway_relay), "inline").expect("valid");
    let options = RunOptions { seed: 3, datapath };
    let outcome = run(&scenario, &options).expect("runs");
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
    // Both data datagrams each way went through the XDP program beside the relay, which sent
    // them to the other client itself (relay-to-self), agreeing with userspace (no error).
    if xdp_ran(&outcome) {
        assert_eq!(
            outcome.xdp_reasons.get("tx/chan4-to-chan4"),
            Some(&4),
            "{:?}",
            outcome.xdp_reasons
        );
    }
}

/// Whether the relays ran their XDP program (not where BPF is unavailable and not required).
fn xdp_ran(outcome: &sim::Outcome) -> bool {
    if outcome.datapath == Datapath::Userspace {
        assert!(
            !relay_xdp::bpf_required(),
            "BPF is required but relays ran userspace only"
        );
        return false;
    }
    true
}

#[test]
fn xdp_first_sends_what_the_program_rewrites_and_gives_the_same_records() {
    let differential = run_with("same-relay", "r1", Datapath::Differential);
    let xdp_first = run_with("same-relay", "r1", Datapath::XdpFirst);
    if !xdp_ran(&xdp_first) {
        return;
    }
    assert_eq!(differential.flows, xdp_first.flows);
    // The program, not userspace, sent the data datagrams: they are traced as XDP's.
    let by_xdp = xdp_first
        .trace
        .iter()
        .filter(|line| line.host == "r1" && line.event.contains("(XDP)"))
        .count();
    assert_eq!(by_xdp, 4, "{:#?}", xdp_first.trace);
    // Every datagram the relay received carries the program's verdict.
    let received = xdp_first
        .hops
        .iter()
        .filter(|hop| hop.host == "r1" && hop.direction == Direction::Received);
    for hop in received {
        assert!(hop.xdp.is_some(), "{hop:?}");
    }
}

#[test]
fn peers_on_two_relays() {
    let outcome = run_story("different-relays", "r2");
    assert_eq!(outcome.flows.len(), 1, "{:?}", outcome.flows);
    let flow = &outcome.flows[0];
    // client -> r1 -> r2 -> gateway: three 10 ms links.
    assert_eq!(ms_of(flow.start), 3030);
    if xdp_ran(&outcome) {
        // r1 turns the client's ChannelData into UDP to r2's allocation, r2 turns it into
        // ChannelData for the gateway (and back): two datagrams each way per relay.
        for path in ["tx/chan4-to-udp4", "tx/udp4-to-chan4"] {
            assert_eq!(
                outcome.xdp_reasons.get(path),
                Some(&4),
                "{:?}",
                outcome.xdp_reasons
            );
        }
    }
    assert_eq!(
        flow.outer_contexts[0].remote.ip().to_string(),
        "203.0.113.1"
    );
    assert_eq!(flow.outer_contexts[0].local.ip().to_string(), "203.0.113.2");
}
