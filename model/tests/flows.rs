//! Hand-computed expectations: small scenarios whose flow records, deliveries and drops are
//! worked out in the comments from docs/harness.md and docs/flows.md alone (never by running the
//! model twice). Times are sim milliseconds; t_0 = 2000, a step lasts 1000 ms, TUN 1 ms each way.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use model::{
    Allocations, ClientId, CloseReason, Delivery, DropPlace, DropReason, FlowRecord,
    GatewayDropReason, OuterContext, Packet, PacketKind, Protocol, Receiver, RelayedAddresses,
    ResourceId, TcpFlags, UtcTime,
};
use scenario_format::Scenario;

/// 2026-01-01T00:00:00Z plus `ms`.
fn at(ms: u64) -> UtcTime {
    UtcTime::from_unix_secs(1_767_225_600).plus(Duration::from_millis(ms))
}

fn sa(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn outer(remote: &str, local: &str) -> OuterContext {
    OuterContext {
        remote: sa(remote),
        local: sa(local),
    }
}

const ALICE: &str = "203.0.113.100:51820";
const GW: &str = "203.0.113.10:51820";

/// A record with the fields most tests share; callers override the rest.
#[allow(clippy::too_many_arguments)]
fn record(
    protocol: Protocol,
    (start, last, end): (u64, u64, u64),
    src: &str,
    dst: &str,
    contexts: Vec<OuterContext>,
    (tx_packets, tx_bytes, rx_packets, rx_bytes): (u64, u64, u64, u64),
    close_reason: CloseReason,
) -> FlowRecord {
    let (src, dst) = (sa(src), sa(dst));
    FlowRecord {
        client: ClientId(0),
        resource: ResourceId(0),
        protocol,
        start: at(start),
        end: at(end),
        last_packet: at(last),
        inner_src_ip: src.ip(),
        inner_src_port: src.port(),
        inner_dst_ip: dst.ip(),
        inner_dst_port: dst.port(),
        inner_domain: None,
        outer_contexts: contexts,
        tx_packets,
        tx_bytes,
        rx_packets,
        rx_bytes,
        close_reason,
    }
}

/// One v4 client `alice`, one v4 gateway `gw`, CIDR resource `web` (198.51.100.10/32, id 0),
/// DNS resource `app` (`*.example.com`, id 1), both granted, 10 ms links; `extra` is appended
/// to the topology, then the steps.
fn scenario(extra_topology: &str, steps: &str) -> Scenario {
    let text = format!(
        r#"
name: hand-computed
topology:
  clients:
    - {{ name: alice, stack: v4, relay: r1 }}
  gateways:
    - {{ name: gw, stack: v4, relay: r2 }}
  relays:
    - {{ name: r1, stack: v4 }}
    - {{ name: r2, stack: v4 }}
  resources:
    - {{ name: web, gateway: gw, cidr: 198.51.100.10/32 }}
    - {{ name: app, gateway: gw, dns: "*.example.com" }}
  dns_records:
    - {{ name: a.example.com, addresses: [198.51.100.20], ttl_s: 5 }}
  grants:
    - {{ client: alice, resource: web }}
    - {{ client: alice, resource: app }}
{extra_topology}
steps:
{steps}
"#
    );
    Scenario::from_yaml(&text, "test.yaml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn udp(payload: u16) -> PacketKind {
    PacketKind::Udp { payload }
}

fn tcp(flags: TcpFlags, seq: u32, ack: u32, payload: u16) -> PacketKind {
    PacketKind::Tcp {
        flags,
        seq,
        ack,
        payload,
    }
}

fn to_client(
    at_ms: u64,
    context: OuterContext,
    src: &str,
    dst: &str,
    kind: PacketKind,
) -> Delivery {
    Delivery {
        at_ms,
        to: Receiver::Client {
            client: ClientId(0),
            gateway: 0,
            outer: context,
        },
        packet: Packet {
            src: sa(src),
            dst: sa(dst),
            kind,
        },
        step: 0,
    }
}

fn client_deliveries(p: &model::Prediction) -> Vec<(u64, Packet)> {
    p.deliveries
        .iter()
        .filter(|d| matches!(d.to, Receiver::Client { .. }))
        .map(|d| (d.at_ms, d.packet))
        .collect()
}

#[test]
fn udp_direct_closes_by_idle_timeout() {
    // Datagram sent at 2000, 10 ms link: at the gateway (start) 2010, resource 2011, echo back
    // at the gateway 2012 (last_packet), at alice 2022. Idle closes at 2012 + 120 s = 122012,
    // before t_end = 3000 + 130 000, with end = last_packet.
    let s = scenario(
        "",
        "  - udp: { client: alice, resource: web, port: 5353, bytes: 64 }\n  - idle: { seconds: 130 }",
    );
    let p = model::predict(&s).unwrap();
    let ctx = outer(ALICE, GW);
    assert_eq!(
        p.flows,
        vec![record(
            Protocol::Udp,
            (2010, 2012, 2012),
            "100.64.0.2:45353",
            "198.51.100.10:5353",
            vec![ctx],
            (1, 64, 1, 64),
            CloseReason::Idle,
        )]
    );
    assert_eq!(
        p.deliveries,
        vec![
            Delivery {
                at_ms: 2011,
                to: Receiver::Resource { gateway: 0 },
                packet: Packet {
                    src: sa("100.64.0.2:45353"),
                    dst: sa("198.51.100.10:5353"),
                    kind: udp(64),
                },
                step: 0,
            },
            to_client(2022, ctx, "198.51.100.10:5353", "100.64.0.2:45353", udp(64)),
        ]
    );
    assert!(p.drops.is_empty());
    // Timestamps print as RFC 3339 with nine digits.
    assert_eq!(
        p.flows[0].start.to_string(),
        "2026-01-01T00:00:02.010000000Z"
    );
}

#[test]
fn custom_idle_timeout_and_shutdown_at_the_end() {
    // idle_timeout_s: 2. First datagram at 2000: flow 2010..2012, idle at 4012 (during the
    // idle step 3000..8000), end 2012. Second datagram at 8000: new flow 8010..8012, still
    // open at t_end = 9000: shutdown, end 9000.
    let s = scenario(
        "  idle_timeout_s: 2",
        "  - udp: { client: alice, resource: web, port: 7, bytes: 3 }\n  - idle: { seconds: 5 }\n  - udp: { client: alice, resource: web, port: 7, bytes: 4 }",
    );
    let p = model::predict(&s).unwrap();
    let ctx = outer(ALICE, GW);
    assert_eq!(
        p.flows,
        vec![
            record(
                Protocol::Udp,
                (2010, 2012, 2012),
                "100.64.0.2:40007",
                "198.51.100.10:7",
                vec![ctx],
                (1, 3, 1, 3),
                CloseReason::Idle,
            ),
            record(
                Protocol::Udp,
                (8010, 8012, 9000),
                "100.64.0.2:40007",
                "198.51.100.10:7",
                vec![ctx],
                (1, 4, 1, 4),
                CloseReason::Shutdown,
            ),
        ]
    );
}

#[test]
fn tcp_life_closed_by_the_client_with_fin() {
    // open at 2000: SYN at gw 2010 (start), SYN-ACK at gw 2012, at alice 2022, ACK at gw 2032.
    // client data (100) at 3000: gw 3010, resource ACK at gw 3012.
    // resource data (50) at 4000: gw 4001, alice 4011, her ACK at gw 4021.
    // close by client at 5000: FIN gw 5010, FIN-ACK gw 5012, final ACK gw 5032 = end (fin).
    // tx: SYN ACK data ACK FIN ACK = 6 / 100 bytes; rx: SYN-ACK ACK data FIN-ACK = 4 / 50.
    let s = scenario(
        "",
        "  - tcp-open: { conn: 1, client: alice, resource: web, port: 443 }\n  - tcp-data: { conn: 1, from: client, bytes: 100 }\n  - tcp-data: { conn: 1, from: resource, bytes: 50 }\n  - tcp-close: { conn: 1, by: client }",
    );
    let p = model::predict(&s).unwrap();
    let ctx = outer(ALICE, GW);
    assert_eq!(
        p.flows,
        vec![record(
            Protocol::Tcp,
            (2010, 5032, 5032),
            "100.64.0.2:30001",
            "198.51.100.10:443",
            vec![ctx],
            (6, 100, 4, 50),
            CloseReason::Fin,
        )]
    );
    // What alice receives: SYN-ACK (5000, ack 1001) at 2022; ACK of her data (ack 1101) at
    // 3022; data seq 5001 at 4011; FIN-ACK seq 5051 ack 1102 at 5022.
    let web = "198.51.100.10:443";
    let me = "100.64.0.2:30001";
    let expected: Vec<(u64, Packet)> = [
        (2022, tcp(TcpFlags::SYN_ACK, 5000, 1001, 0)),
        (3022, tcp(TcpFlags::ACK, 5001, 1101, 0)),
        (4011, tcp(TcpFlags::PSH_ACK, 5001, 1101, 50)),
        (5022, tcp(TcpFlags::FIN_ACK, 5051, 1102, 0)),
    ]
    .into_iter()
    .map(|(t, kind)| {
        (
            t,
            Packet {
                src: sa(web),
                dst: sa(me),
                kind,
            },
        )
    })
    .collect();
    assert_eq!(client_deliveries(&p), expected);
}

#[test]
fn tcp_closed_by_the_resource_then_a_late_ack_is_dropped() {
    // open: SYN 2010, SYN-ACK 2012, ACK 2032. close by resource at 3000: FIN at gw 3001 (rx),
    // alice 3011, her FIN-ACK at gw 3021 (tx), resource 3022, final ACK at gw 3023 (rx): fin.
    // late ACK at 4000 reaches the gateway at 4010 with no open flow: tcp-without-syn.
    let s = scenario(
        "",
        "  - tcp-open: { conn: 2, client: alice, resource: web, port: 80 }\n  - tcp-close: { conn: 2, by: resource }\n  - tcp-late-ack: { conn: 2 }",
    );
    let p = model::predict(&s).unwrap();
    assert_eq!(
        p.flows,
        vec![record(
            Protocol::Tcp,
            (2010, 3023, 3023),
            "100.64.0.2:30002",
            "198.51.100.10:80",
            vec![outer(ALICE, GW)],
            (3, 0, 3, 0),
            CloseReason::Fin,
        )]
    );
    assert_eq!(p.drops.len(), 1);
    let drop = &p.drops[0];
    assert_eq!(drop.at_ms, 4010);
    assert_eq!(
        drop.reason,
        DropReason::Gateway(GatewayDropReason::TcpWithoutSyn)
    );
    assert_eq!(
        drop.place,
        DropPlace::Gateway {
            gateway: 0,
            client: Some(ClientId(0))
        }
    );
    // The final ACK (ack 1002) reached alice at 3033.
    assert!(client_deliveries(&p).contains(&(
        3033,
        Packet {
            src: sa("198.51.100.10:80"),
            dst: sa("100.64.0.2:30002"),
            kind: tcp(TcpFlags::ACK, 5002, 1002, 0),
        }
    )));
}

#[test]
fn tcp_reset_by_either_side() {
    // Client RST at 3000 reaches the gateway at 3010: rst, end 3010; tx SYN ACK RST, rx SYN-ACK.
    // Resource RST at 3000 (second scenario) reaches the gateway at 3001: end 3001, rx 2.
    let by_client = scenario(
        "",
        "  - tcp-open: { conn: 1, client: alice, resource: web, port: 22 }\n  - tcp-reset: { conn: 1, by: client }",
    );
    let by_resource = scenario(
        "",
        "  - tcp-open: { conn: 1, client: alice, resource: web, port: 22 }\n  - tcp-reset: { conn: 1, by: resource }",
    );
    let ctx = outer(ALICE, GW);
    let expected = |end, counts| {
        vec![record(
            Protocol::Tcp,
            (2010, end, end),
            "100.64.0.2:30001",
            "198.51.100.10:22",
            vec![ctx],
            counts,
            CloseReason::Rst,
        )]
    };
    assert_eq!(
        model::predict(&by_client).unwrap().flows,
        expected(3010, (3, 0, 1, 0))
    );
    assert_eq!(
        model::predict(&by_resource).unwrap().flows,
        expected(3001, (2, 0, 2, 0))
    );
}

#[test]
fn a_retransmitted_syn_stays_in_one_record() {
    // open at 2000 (SYN 2010, SYN-ACK 2012, ACK 2032); the same SYN again at 3000: gw 3010,
    // SYN-ACK 3012, ACK 3032. One record, tx 4 rx 2, shutdown at t_end 4000.
    let s = scenario(
        "",
        "  - tcp-open: { conn: 1, client: alice, resource: web, port: 443 }\n  - tcp-retransmit-syn: { conn: 1 }",
    );
    let p = model::predict(&s).unwrap();
    assert_eq!(
        p.flows,
        vec![record(
            Protocol::Tcp,
            (2010, 3032, 4000),
            "100.64.0.2:30001",
            "198.51.100.10:443",
            vec![outer(ALICE, GW)],
            (4, 0, 2, 0),
            CloseReason::Shutdown,
        )]
    );
}

#[test]
fn a_lost_syn_then_its_retransmission_starts_the_flow() {
    // drop-next 1 on alice-gw at 2000; SYN sent at 3000 is dropped on the link (no flow).
    // Retransmitted at 4000: start 4010, SYN-ACK 4012, ACK 4032; shutdown at 5000.
    let s = scenario(
        "",
        "  - fault: { between: [alice, gw], fault: { drop-next: 1 } }\n  - tcp-open: { conn: 1, client: alice, resource: web, port: 443 }\n  - tcp-retransmit-syn: { conn: 1 }",
    );
    let p = model::predict(&s).unwrap();
    assert_eq!(
        p.flows,
        vec![record(
            Protocol::Tcp,
            (4010, 4032, 5000),
            "100.64.0.2:30001",
            "198.51.100.10:443",
            vec![outer(ALICE, GW)],
            (2, 0, 1, 0),
            CloseReason::Shutdown,
        )]
    );
    assert_eq!(p.drops.len(), 1);
    assert_eq!(p.drops[0].at_ms, 3000);
    assert_eq!(p.drops[0].reason, DropReason::DropNext);
    assert_eq!(
        p.drops[0].place,
        DropPlace::Link {
            between: ["alice".into(), "gw".into()]
        }
    );
}

#[test]
fn dns_flow_to_a_wildcard_resource_waits_for_the_answer() {
    // At 2000 the stub hands out 100.96.0.1 for a.example.com; the gateway asks the DNS server
    // (10 ms each way): answer at 2020. The datagram reaches the gateway at 2010, is queued and
    // forwarded at 2020 (start) to 198.51.100.20; echo at the gateway 2022, at alice 2032 from
    // the proxy IP. Shutdown at 3000.
    let s = scenario(
        "",
        "  - udp: { client: alice, resource: app, domain: a.example.com, port: 53, bytes: 20 }",
    );
    let p = model::predict(&s).unwrap();
    let mut expected = record(
        Protocol::Udp,
        (2020, 2022, 3000),
        "100.64.0.2:40053",
        "198.51.100.20:53",
        vec![outer(ALICE, GW)],
        (1, 20, 1, 20),
        CloseReason::Shutdown,
    );
    expected.resource = ResourceId(1);
    expected.inner_domain = Some("a.example.com".into());
    assert_eq!(p.flows, vec![expected]);
    assert_eq!(
        client_deliveries(&p),
        vec![(
            2032,
            Packet {
                src: sa("100.96.0.1:53"),
                dst: sa("100.64.0.2:40053"),
                kind: udp(20),
            }
        )]
    );
    // The resource saw the real IP.
    assert!(p.deliveries.iter().any(|d| d.at_ms == 2021
        && d.to == Receiver::Resource { gateway: 0 }
        && d.packet.dst == sa("198.51.100.20:53")));
}

#[test]
fn dns_query_ahead_of_traffic_and_a_slow_link() {
    // dns-query at 2000: answer at 2020. UDP at 3000 over a 30 ms link: gateway 3030, the
    // answer is in use, so the flow starts on arrival; echo at 3032.
    let s = scenario(
        "  latency:\n    default_ms: 10\n    links:\n      - { between: [alice, gw], ms: 30 }",
        "  - dns-query: { client: alice, name: a.example.com }\n  - udp: { client: alice, resource: app, domain: a.example.com, port: 53, bytes: 1 }",
    );
    let p = model::predict(&s).unwrap();
    assert_eq!(p.flows.len(), 1);
    assert_eq!(p.flows[0].start, at(3030));
    assert_eq!(p.flows[0].last_packet, at(3032));
    assert_eq!(p.flows[0].inner_dst_ip, ip("198.51.100.20"));
}

#[test]
fn a_dns_change_reaches_new_flows_only_after_the_ttl() {
    // ttl 5 s. Answer .20 at 2020; refreshes: expiry 7020, query at the server 7030 (after the
    // change at 3000) so .21 is in use from 7040.
    // UDP at 2000: flow A (real .20) 2020..2022. Change at 3000. UDP at 4000: flow A again
    // (open flows keep their real IP), gateway 4010, echo 4012. Idle 130 s from 5000: A closes
    // idle at 4012 + 120 000, end 4012. UDP at 135000: new flow B with .21, 135010..135012,
    // shutdown at 136000.
    let s = scenario(
        "",
        "  - udp: { client: alice, resource: app, domain: a.example.com, port: 53, bytes: 8 }\n  - dns-change: { name: a.example.com, addresses: [198.51.100.21] }\n  - udp: { client: alice, resource: app, domain: a.example.com, port: 53, bytes: 8 }\n  - idle: { seconds: 130 }\n  - udp: { client: alice, resource: app, domain: a.example.com, port: 53, bytes: 8 }",
    );
    let p = model::predict(&s).unwrap();
    let ctx = outer(ALICE, GW);
    let dns = |mut r: FlowRecord| {
        r.resource = ResourceId(1);
        r.inner_domain = Some("a.example.com".into());
        r
    };
    assert_eq!(
        p.flows,
        vec![
            dns(record(
                Protocol::Udp,
                (2020, 4012, 4012),
                "100.64.0.2:40053",
                "198.51.100.20:53",
                vec![ctx],
                (2, 16, 2, 16),
                CloseReason::Idle,
            )),
            dns(record(
                Protocol::Udp,
                (135010, 135012, 136000),
                "100.64.0.2:40053",
                "198.51.100.21:53",
                vec![ctx],
                (1, 8, 1, 8),
                CloseReason::Shutdown,
            )),
        ]
    );
}

fn relayed_allocations() -> Allocations {
    Allocations {
        clients: vec![RelayedAddresses {
            v4: Some(sa("203.0.113.1:50000")),
            v6: None,
        }],
        gateways: vec![RelayedAddresses {
            v4: Some(sa("203.0.113.2:60000")),
            v6: None,
        }],
    }
}

#[test]
fn relayed_paths_give_their_outer_contexts_and_latencies() {
    // Each path is set at 2000 (step 0); the datagram leaves at 3000.
    // client-relayed: alice-r1 10 + r1-gw 10: gw at 3020, echo 3022, alice 3042;
    //   context (alice's relayed address, gw socket).
    // gateway-relayed: alice-r2 + r2-gw = 20: same times; context (alice socket, gw relayed).
    // different-relays: alice-r1 + r1-r2 (25 ms here) + r2-gw = 45: gw 3045, echo 3047, alice
    //   3092; context (alice relayed, gw relayed).
    let latency =
        "  latency:\n    default_ms: 10\n    links:\n      - { between: [r1, r2], ms: 25 }";
    let cases = [
        ("client-relayed", 3020, outer("203.0.113.1:50000", GW), 3042),
        (
            "gateway-relayed",
            3020,
            outer(ALICE, "203.0.113.2:60000"),
            3042,
        ),
        (
            "different-relays",
            3045,
            outer("203.0.113.1:50000", "203.0.113.2:60000"),
            3092,
        ),
    ];
    for (mode, start, ctx, back) in cases {
        let s = scenario(
            latency,
            &format!(
                "  - path: {{ client: alice, gateway: gw, mode: {mode} }}\n  - udp: {{ client: alice, resource: web, port: 9, bytes: 5 }}"
            ),
        );
        let p = model::predict_with(&s, &relayed_allocations()).unwrap();
        assert_eq!(
            p.flows,
            vec![record(
                Protocol::Udp,
                (start, start + 2, 4000),
                "100.64.0.2:40009",
                "198.51.100.10:9",
                vec![ctx],
                (1, 5, 1, 5),
                CloseReason::Shutdown,
            )],
            "{mode}"
        );
        assert_eq!(client_deliveries(&p)[0].0, back, "{mode}");
    }
}

#[test]
fn same_relay_outer_context_is_both_relayed_addresses() {
    // alice and gw both on r1. Path at 2000; datagram at 3000: alice-r1 10 ms, relay-to-self,
    // r1-gw 10 ms: gw at 3020, echo 3022; context (alice relayed, gw relayed), both on r1.
    let text = r#"
name: same-relay
topology:
  clients: [{ name: alice, stack: v4, relay: r1 }]
  gateways: [{ name: gw, stack: v4, relay: r1 }]
  relays: [{ name: r1, stack: v4 }]
  resources: [{ name: web, gateway: gw, cidr: 198.51.100.0/24 }]
  grants: [{ client: alice, resource: web, filters: [udp/9] }]
steps:
  - path: { client: alice, gateway: gw, mode: same-relay }
  - udp: { client: alice, resource: web, port: 9, bytes: 5 }
"#;
    let s = Scenario::from_yaml(text, "same-relay.yaml").unwrap();
    let allocations = Allocations {
        clients: vec![RelayedAddresses {
            v4: Some(sa("203.0.113.1:50001")),
            v6: None,
        }],
        gateways: vec![RelayedAddresses {
            v4: Some(sa("203.0.113.1:50002")),
            v6: None,
        }],
    };
    let p = model::predict_with(&s, &allocations).unwrap();
    // A /24 resource is addressed at the address written in its CIDR.
    assert_eq!(
        p.flows,
        vec![record(
            Protocol::Udp,
            (3020, 3022, 4000),
            "100.64.0.2:40009",
            "198.51.100.0:9",
            vec![outer("203.0.113.1:50001", "203.0.113.1:50002")],
            (1, 5, 1, 5),
            CloseReason::Shutdown,
        )]
    );
}

#[test]
fn roaming_mid_flow_adds_a_second_outer_context() {
    // UDP at 2000 from :51820 (flow 2010..2012); roam at 3000; UDP at 4000 from :51821 reaches
    // the gateway at 4010, echo 4012 to the new socket. One flow, two contexts.
    let s = scenario(
        "",
        "  - udp: { client: alice, resource: web, port: 9, bytes: 5 }\n  - roam: { client: alice }\n  - udp: { client: alice, resource: web, port: 9, bytes: 6 }",
    );
    let p = model::predict(&s).unwrap();
    assert_eq!(
        p.flows,
        vec![record(
            Protocol::Udp,
            (2010, 4012, 5000),
            "100.64.0.2:40009",
            "198.51.100.10:9",
            vec![outer(ALICE, GW), outer("203.0.113.100:51821", GW)],
            (2, 11, 2, 11),
            CloseReason::Shutdown,
        )]
    );
}

#[test]
fn a_path_switch_mid_flow_adds_its_context() {
    // UDP at 2000 direct; switch to client-relayed at 3000; UDP at 4000 via r1: gw 4020, echo
    // 4022. Contexts: direct, then (alice relayed, gw socket).
    let s = scenario(
        "",
        "  - udp: { client: alice, resource: web, port: 9, bytes: 5 }\n  - path: { client: alice, gateway: gw, mode: client-relayed }\n  - udp: { client: alice, resource: web, port: 9, bytes: 5 }",
    );
    let p = model::predict_with(&s, &relayed_allocations()).unwrap();
    assert_eq!(
        p.flows[0].outer_contexts,
        vec![outer(ALICE, GW), outer("203.0.113.1:50000", GW)]
    );
    assert_eq!(p.flows[0].last_packet, at(4022));
    assert_eq!(p.flows.len(), 1);
}

#[test]
fn revoking_mid_flow_closes_it_and_denies_what_follows() {
    // UDP at 2000 (flow 2010..2012); revoke at 3000: closed revoked, end 3000. UDP at 4000
    // reaches the gateway at 4010: not granted, dropped; ICMP prohibited from 198.51.100.10 to
    // alice at 4020. No second flow.
    let s = scenario(
        "",
        "  - udp: { client: alice, resource: web, port: 9, bytes: 5 }\n  - revoke: { client: alice, resource: web }\n  - udp: { client: alice, resource: web, port: 9, bytes: 5 }",
    );
    let p = model::predict(&s).unwrap();
    assert_eq!(
        p.flows,
        vec![record(
            Protocol::Udp,
            (2010, 2012, 3000),
            "100.64.0.2:40009",
            "198.51.100.10:9",
            vec![outer(ALICE, GW)],
            (1, 5, 1, 5),
            CloseReason::Revoked,
        )]
    );
    assert_eq!(p.drops.len(), 1);
    assert_eq!(p.drops[0].at_ms, 4010);
    assert_eq!(
        p.drops[0].reason,
        DropReason::Gateway(GatewayDropReason::NotGranted)
    );
    let icmp = client_deliveries(&p).pop().unwrap();
    assert_eq!(
        icmp,
        (
            4020,
            Packet {
                src: sa("198.51.100.10:0"),
                dst: sa("100.64.0.2:0"),
                kind: PacketKind::IcmpProhibited {
                    quoted_protocol: Protocol::Udp,
                    quoted_src: sa("100.64.0.2:40009"),
                    quoted_dst: sa("198.51.100.10:9"),
                },
            }
        )
    );
}

#[test]
fn revoking_a_tcp_connection_then_its_packets_are_dropped() {
    // open at 2000; revoke at 3000 (end 3000, tx 2 rx 1); client data at 4000 reaches the
    // gateway at 4010 as non-SYN TCP with no flow: tcp-without-syn (no ICMP); resource data at
    // 5000 reaches it at 5001: no-open-flow.
    let s = scenario(
        "",
        "  - tcp-open: { conn: 1, client: alice, resource: web, port: 443 }\n  - revoke: { client: alice, resource: web }\n  - tcp-data: { conn: 1, from: client, bytes: 10 }\n  - tcp-data: { conn: 1, from: resource, bytes: 10 }",
    );
    let p = model::predict(&s).unwrap();
    assert_eq!(p.flows.len(), 1);
    assert_eq!(p.flows[0].close_reason, CloseReason::Revoked);
    assert_eq!(p.flows[0].end, at(3000));
    let drops: Vec<(u64, DropReason)> = p.drops.iter().map(|d| (d.at_ms, d.reason)).collect();
    assert_eq!(
        drops,
        vec![
            (4010, DropReason::Gateway(GatewayDropReason::TcpWithoutSyn)),
            (5001, DropReason::Gateway(GatewayDropReason::NoOpenFlow))
        ]
    );
}

#[test]
fn filters_and_missing_grants_deny_with_icmp() {
    // web is granted for tcp/443 only: UDP to it is filter-denied. A resource with no grant
    // for alice (other, id 2) is not-granted. Neither creates a flow.
    let text = r#"
name: denied
topology:
  clients: [{ name: alice, stack: v4 }]
  gateways: [{ name: gw, stack: v4 }]
  resources:
    - { name: web, gateway: gw, cidr: 198.51.100.10/32 }
    - { name: other, gateway: gw, cidr: 198.51.100.11/32 }
  grants: [{ client: alice, resource: web, filters: [tcp/443] }]
steps:
  - udp: { client: alice, resource: web, port: 53, bytes: 1 }
  - udp: { client: alice, resource: other, port: 53, bytes: 1 }
"#;
    let p = model::predict(&Scenario::from_yaml(text, "denied.yaml").unwrap()).unwrap();
    assert!(p.flows.is_empty());
    let drops: Vec<(u64, DropReason)> = p.drops.iter().map(|d| (d.at_ms, d.reason)).collect();
    assert_eq!(
        drops,
        vec![
            (2010, DropReason::Gateway(GatewayDropReason::FilterDenied)),
            (3010, DropReason::Gateway(GatewayDropReason::NotGranted))
        ]
    );
    let icmp_times: Vec<u64> = client_deliveries(&p).iter().map(|d| d.0).collect();
    assert_eq!(icmp_times, vec![2020, 3020]);
}

#[test]
fn the_longest_granted_prefix_wins() {
    // wide (id 0, /24) and narrow (id 1, /32) both cover 198.51.100.0... only when the /32 is
    // that address: narrow 198.51.100.0/32. Both granted: the flow belongs to narrow (id 1).
    let text = r#"
name: prefixes
topology:
  clients: [{ name: alice, stack: v4 }]
  gateways: [{ name: gw, stack: v4 }]
  resources:
    - { name: wide, gateway: gw, cidr: 198.51.100.0/24 }
    - { name: narrow, gateway: gw, cidr: 198.51.100.0/32 }
  grants: [{ client: alice, resource: wide }, { client: alice, resource: narrow }]
steps:
  - udp: { client: alice, resource: wide, port: 9, bytes: 1 }
"#;
    let p = model::predict(&Scenario::from_yaml(text, "prefixes.yaml").unwrap()).unwrap();
    assert_eq!(p.flows.len(), 1);
    assert_eq!(p.flows[0].resource, ResourceId(1));
}

#[test]
fn a_gateway_restart_flushes_and_starts_afresh() {
    // UDP at 2000 (2010..2012); restart at 3000: shutdown, end 3000. UDP at 4000: new flow
    // 4010..4012; final shutdown at 5000.
    let s = scenario(
        "",
        "  - udp: { client: alice, resource: web, port: 9, bytes: 5 }\n  - gateway-restart: { gateway: gw }\n  - udp: { client: alice, resource: web, port: 9, bytes: 5 }",
    );
    let p = model::predict(&s).unwrap();
    let ends: Vec<(UtcTime, UtcTime, CloseReason)> = p
        .flows
        .iter()
        .map(|f| (f.start, f.end, f.close_reason))
        .collect();
    assert_eq!(
        ends,
        vec![
            (at(2010), at(3000), CloseReason::Shutdown),
            (at(4010), at(5000), CloseReason::Shutdown)
        ]
    );
}

#[test]
fn partition_drops_until_heal_and_hold_delivers_at_release() {
    // partition at 2000: UDP at 3000 is dropped on the link (no flow). heal at 4000.
    // hold at 5000: UDP at 6000 is held; release at 7000 delivers it to the gateway at 7000
    // (start), echo 7002, alice 7012. Shutdown at 8000.
    let s = scenario(
        "",
        "  - fault: { between: [gw, alice], fault: partition }\n  - udp: { client: alice, resource: web, port: 9, bytes: 5 }\n  - fault: { between: [gw, alice], fault: heal }\n  - fault: { between: [alice, gw], fault: hold }\n  - udp: { client: alice, resource: web, port: 9, bytes: 7 }\n  - fault: { between: [alice, gw], fault: release }",
    );
    let p = model::predict(&s).unwrap();
    assert_eq!(
        p.flows,
        vec![record(
            Protocol::Udp,
            (7000, 7002, 8000),
            "100.64.0.2:40009",
            "198.51.100.10:9",
            vec![outer(ALICE, GW)],
            (1, 7, 1, 7),
            CloseReason::Shutdown,
        )]
    );
    assert_eq!(p.drops.len(), 1);
    assert_eq!(p.drops[0].reason, DropReason::Partition);
    assert_eq!(p.drops[0].at_ms, 3000);
    assert_eq!(client_deliveries(&p)[0].0, 7012);
}

#[test]
fn a_reply_lost_on_the_way_back_is_still_counted() {
    // open at 2000; drop-next 1 at 3000; resource data at 4000: the gateway forwards it at 4001
    // (rx counted) and the link drops it, so alice never ACKs. Shutdown at 5000: tx 2 (SYN, ACK),
    // rx 2 (SYN-ACK, data 30 bytes).
    let s = scenario(
        "",
        "  - tcp-open: { conn: 1, client: alice, resource: web, port: 443 }\n  - fault: { between: [alice, gw], fault: { drop-next: 1 } }\n  - tcp-data: { conn: 1, from: resource, bytes: 30 }",
    );
    let p = model::predict(&s).unwrap();
    assert_eq!(
        p.flows,
        vec![record(
            Protocol::Tcp,
            (2010, 4001, 5000),
            "100.64.0.2:30001",
            "198.51.100.10:443",
            vec![outer(ALICE, GW)],
            (2, 0, 2, 30),
            CloseReason::Shutdown,
        )]
    );
    assert_eq!(p.drops.len(), 1);
    assert_eq!(p.drops[0].at_ms, 4001);
}

#[test]
fn ipv6_inside_the_tunnel() {
    // A v6 CIDR resource reached with ipv6: true: the inner source is alice's v6 tunnel IP.
    let text = r#"
name: v6-inner
topology:
  clients: [{ name: alice, stack: v4 }]
  gateways: [{ name: gw, stack: v4 }]
  resources: [{ name: six, gateway: gw, cidr: "2001:db8:100::5/128" }]
  grants: [{ client: alice, resource: six }]
steps:
  - udp: { client: alice, resource: six, port: 9, ipv6: true, bytes: 2 }
"#;
    let p = model::predict(&Scenario::from_yaml(text, "v6.yaml").unwrap()).unwrap();
    assert_eq!(
        p.flows,
        vec![record(
            Protocol::Udp,
            (2010, 2012, 3000),
            "[fd00:2021:1111::2]:40009",
            "[2001:db8:100::5]:9",
            vec![outer(ALICE, GW)],
            (1, 2, 1, 2),
            CloseReason::Shutdown,
        )]
    );
}

#[test]
fn what_the_model_does_not_cover_is_unpredictable() {
    // Roaming while on a path through the client's own relay.
    let roam = scenario(
        "",
        "  - path: { client: alice, gateway: gw, mode: client-relayed }\n  - roam: { client: alice }\n  - udp: { client: alice, resource: web, port: 9, bytes: 1 }",
    );
    let error = model::predict(&roam).unwrap_err();
    assert_eq!(error.step, Some(2), "{error}");

    // A fault on a relay link that stays active through an idle step.
    let tainted = scenario(
        "",
        "  - path: { client: alice, gateway: gw, mode: client-relayed }\n  - fault: { between: [alice, r1], fault: partition }\n  - idle: { seconds: 300 }\n  - fault: { between: [alice, r1], fault: heal }\n  - udp: { client: alice, resource: web, port: 9, bytes: 1 }",
    );
    assert_eq!(model::predict(&tainted).unwrap_err().step, Some(4));

    // Latencies too large for the 1 s step grid.
    let slow = scenario(
        "  latency: { default_ms: 600 }",
        "  - udp: { client: alice, resource: web, port: 9, bytes: 1 }",
    );
    assert!(model::predict(&slow).is_err());

    // A FIN exchange after a data segment was lost.
    let lossy = scenario(
        "",
        "  - tcp-open: { conn: 1, client: alice, resource: web, port: 443 }\n  - fault: { between: [alice, gw], fault: { drop-next: 1 } }\n  - tcp-data: { conn: 1, from: client, bytes: 10 }\n  - tcp-close: { conn: 1, by: client }",
    );
    assert_eq!(model::predict(&lossy).unwrap_err().step, Some(3));
}

#[test]
fn a_prediction_serialises() {
    let s = scenario(
        "",
        "  - udp: { client: alice, resource: web, port: 9, bytes: 5 }",
    );
    let json = serde_json::to_string(&model::predict(&s).unwrap()).unwrap();
    assert!(
        json.contains(r#""start":"2026-01-01T00:00:02.010000000Z""#),
        "{json}"
    );
    assert!(json.contains(r#""close_reason":"shutdown""#), "{json}");
}

#[test]
fn an_aaaa_lookup_without_a_record_drops_the_queued_packet() {
    // The stub maps both proxy IPs at 2000; the AAAA answer (no IPv6 address for the name)
    // arrives at 2020. The IPv6 datagram reached the gateway at 2010 and was queued: dropped
    // with dns-resolution-failed at 2020, no flow. Next step (3000): a new resolution starts
    // when the packet arrives at 3010, fails at 3030.
    let s = scenario(
        "",
        "  - udp: { client: alice, resource: app, domain: a.example.com, port: 53, ipv6: true, bytes: 1 }\n  - udp: { client: alice, resource: app, domain: a.example.com, port: 53, ipv6: true, bytes: 1 }",
    );
    let p = model::predict(&s).unwrap();
    assert!(p.flows.is_empty());
    let drops: Vec<(u64, DropReason, SocketAddr)> = p
        .drops
        .iter()
        .map(|d| (d.at_ms, d.reason, d.packet.dst))
        .collect();
    let proxy = sa("[fd00:2021:1111:8000::1]:53");
    assert_eq!(
        drops,
        vec![
            (
                2020,
                DropReason::Gateway(GatewayDropReason::DnsResolutionFailed),
                proxy
            ),
            (
                3030,
                DropReason::Gateway(GatewayDropReason::DnsResolutionFailed),
                proxy
            )
        ]
    );
}

#[test]
fn exact_names_beat_one_label_wildcards_which_beat_any_depth() {
    // Three DNS resources match a.b.example.com / x.example.com differently:
    //   deep (id 0) `**.example.com`, one (id 1) `*.b.example.com`, exact (id 2)
    //   `a.b.example.com`. TCP to a.b.example.com belongs to exact (id 2); after revoking
    //   exact, a new connection belongs to one (id 1). Proxy IPs: a.b.example.com is alice's
    //   first name (100.96.0.1), so both SYNs wait for nothing after the first answer (2020).
    let text = r#"
name: ranking
topology:
  clients: [{ name: alice, stack: v4 }]
  gateways: [{ name: gw, stack: v4 }]
  resources:
    - { name: deep, gateway: gw, dns: "**.example.com" }
    - { name: one, gateway: gw, dns: "*.b.example.com" }
    - { name: exact, gateway: gw, dns: a.b.example.com }
  dns_records: [{ name: a.b.example.com, addresses: [198.51.100.30] }]
  grants:
    - { client: alice, resource: deep }
    - { client: alice, resource: one }
    - { client: alice, resource: exact }
steps:
  - tcp-open: { conn: 1, client: alice, resource: deep, domain: a.b.example.com, port: 443 }
  - revoke: { client: alice, resource: exact }
  - tcp-open: { conn: 2, client: alice, resource: deep, domain: a.b.example.com, port: 443 }
"#;
    let p = model::predict(&Scenario::from_yaml(text, "ranking.yaml").unwrap()).unwrap();
    // conn 1: SYN queued at 2010, forwarded at 2020 (start), SYN-ACK 2022, alice 2032, ACK at
    // the gateway 2042. Revoked at 3000. conn 2: SYN at 4010, SYN-ACK 4012, ACK 4032;
    // shutdown at 5000.
    let summary: Vec<(ResourceId, UtcTime, UtcTime, UtcTime, CloseReason, u16)> = p
        .flows
        .iter()
        .map(|f| {
            (
                f.resource,
                f.start,
                f.last_packet,
                f.end,
                f.close_reason,
                f.inner_src_port,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                ResourceId(2),
                at(2020),
                at(2042),
                at(3000),
                CloseReason::Revoked,
                30001
            ),
            (
                ResourceId(1),
                at(4010),
                at(4032),
                at(5000),
                CloseReason::Shutdown,
                30002
            ),
        ]
    );
    assert!(p.flows.iter().all(|f| f.inner_dst_ip == ip("198.51.100.30")
        && f.inner_domain.as_deref() == Some("a.b.example.com")));
}

#[test]
fn a_new_connection_on_the_same_ports_after_a_close_is_a_new_record() {
    // conn 1 opened at 2000 and reset by the resource at 3000 (gw 3001, rst). Opened again at
    // 4000: same 5-tuple, new record 4010..4032, shutdown at 5000.
    let s = scenario(
        "",
        "  - tcp-open: { conn: 1, client: alice, resource: web, port: 443 }\n  - tcp-reset: { conn: 1, by: resource }\n  - tcp-open: { conn: 1, client: alice, resource: web, port: 443 }",
    );
    let p = model::predict(&s).unwrap();
    let summary: Vec<(UtcTime, UtcTime, CloseReason, u64, u64)> = p
        .flows
        .iter()
        .map(|f| (f.start, f.end, f.close_reason, f.tx_packets, f.rx_packets))
        .collect();
    assert_eq!(
        summary,
        vec![
            (at(2010), at(3001), CloseReason::Rst, 2, 2),
            (at(4010), at(5000), CloseReason::Shutdown, 2, 1)
        ]
    );
}
