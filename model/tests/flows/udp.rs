//! UDP flows: idle timeouts, shutdown at the end, IPv6 inside the tunnel, and the prediction
//! as JSON.

use model::{CloseReason, Delivery, Packet, Protocol, Receiver};
use scenario_format::Scenario;

use crate::{ALICE, GW, outer, record, sa, scenario, to_client, udp};

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
