//! Grants: revoking mid-flow, filters and missing grants (denied with ICMP), and the longest
//! granted prefix.

use model::{CloseReason, DropReason, GatewayDropReason, Packet, PacketKind, Protocol, ResourceId};
use scenario_format::Scenario;

use crate::{ALICE, GW, at, client_deliveries, outer, record, sa, scenario};

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
