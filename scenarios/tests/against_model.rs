//! Whole scenarios run in the simulator with the real gateway and relays, and checked against
//! the reference model: every flow record, field by field.

use scenario::Scenario;
use scenarios::check::run_and_check;

fn check(yaml: &str) {
    let scenario = Scenario::from_yaml(yaml, "inline").expect("valid scenario");
    match run_and_check(&scenario, 11) {
        Ok(checked) => assert!(
            !checked.prediction.flows.is_empty(),
            "{}: a story that predicts no flow checks nothing",
            scenario.name
        ),
        Err(error) => panic!("{}: {error}", scenario.name),
    }
}

const HEADER: &str = r#"
topology:
  clients: [{ name: alice, stack: v4, relay: r1 }, { name: bob, stack: v4 }]
  gateways: [{ name: gw, stack: v4, relay: r1 }]
  relays: [{ name: r1, stack: v4 }, { name: r2, stack: v4 }]
  resources:
    - { name: web, gateway: gw, cidr: 198.51.100.10/32 }
    - { name: app, gateway: gw, dns: "*.example.com" }
  dns_records: [{ name: api.example.com, addresses: [198.51.100.42], ttl_s: 30 }]
  grants:
    - { client: alice, resource: web }
    - { client: alice, resource: app, filters: [tcp/443] }
    - { client: bob, resource: web, filters: [udp] }
  latency: { default_ms: 10, links: [{ between: [alice, r1], ms: 25 }] }
"#;

fn story(name: &str, steps: &str) -> String {
    format!("name: {name}\n{HEADER}steps:\n{steps}")
}

#[test]
fn udp_direct_then_idle_expiry() {
    check(&story(
        "udp-idle",
        "  - udp: { client: bob, resource: web, port: 53, bytes: 40 }\n  - idle: { seconds: 125 }\n",
    ));
}

#[test]
fn tcp_to_a_dns_resource_closed_by_fin() {
    check(&story(
        "tcp-dns-fin",
        "  - tcp-open: { conn: 1, client: alice, resource: app, domain: api.example.com, port: 443 }\n  - tcp-data: { conn: 1, from: client, bytes: 100 }\n  - tcp-data: { conn: 1, from: resource, bytes: 300 }\n  - tcp-close: { conn: 1, by: resource }\n",
    ));
}

#[test]
fn both_peers_on_one_relay() {
    check(&story(
        "same-relay",
        "  - path: { client: alice, gateway: gw, mode: same-relay }\n  - udp: { client: alice, resource: web, port: 5000, bytes: 64 }\n  - tcp-open: { conn: 2, client: alice, resource: web, port: 80 }\n  - tcp-reset: { conn: 2, by: client }\n",
    ));
}

#[test]
fn a_path_switch_mid_flow_is_one_record_with_two_contexts() {
    check(&story(
        "path-switch",
        "  - udp: { client: alice, resource: web, port: 5000, bytes: 64 }\n  - path: { client: alice, gateway: gw, mode: client-relayed }\n  - udp: { client: alice, resource: web, port: 5000, bytes: 64 }\n  - path: { client: alice, gateway: gw, mode: gateway-relayed }\n  - udp: { client: alice, resource: web, port: 5000, bytes: 64 }\n",
    ));
}

#[test]
fn roaming_revocation_and_restart() {
    check(&story(
        "roam-revoke-restart",
        "  - udp: { client: bob, resource: web, port: 53, bytes: 40 }\n  - roam: { client: bob }\n  - udp: { client: bob, resource: web, port: 53, bytes: 40 }\n  - tcp-open: { conn: 3, client: alice, resource: web, port: 22 }\n  - revoke: { client: alice, resource: web }\n  - udp: { client: bob, resource: web, port: 54, bytes: 10 }\n  - gateway-restart: { gateway: gw }\n  - udp: { client: bob, resource: web, port: 53, bytes: 40 }\n",
    ));
}

#[test]
fn a_partition_that_heals() {
    check(&story(
        "partition-heals",
        "  - udp: { client: bob, resource: web, port: 53, bytes: 40 }\n  - fault: { between: [bob, gw], fault: partition }\n  - udp: { client: bob, resource: web, port: 53, bytes: 40 }\n  - fault: { between: [bob, gw], fault: heal }\n  - udp: { client: bob, resource: web, port: 53, bytes: 40 }\n",
    ));
}
