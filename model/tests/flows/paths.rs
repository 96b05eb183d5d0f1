//! Outer contexts of relayed paths, the same relay, roaming and path switches mid-flow.

use model::{Allocations, CloseReason, Protocol, RelayedAddresses};
use scenario_format::Scenario;

use crate::{ALICE, GW, at, client_deliveries, outer, record, sa, scenario};

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
