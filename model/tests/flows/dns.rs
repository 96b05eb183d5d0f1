//! Flows to DNS resources: queued until the answer, queries ahead of traffic, record changes
//! and their TTL, failed AAAA lookups, and which pattern a name belongs to.

use std::net::SocketAddr;

use model::{
    CloseReason, DropReason, FlowRecord, GatewayDropReason, Packet, Protocol, Receiver, ResourceId,
    UtcTime,
};
use scenario_format::Scenario;

use crate::{ALICE, GW, at, client_deliveries, ip, outer, record, sa, scenario, udp};

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
