//! proptest strategies that generate whole scenarios, weighted so that the interesting cases are
//! common: both peers on one relay, DNS-resource traffic, IPv6 inside the tunnel, path switches
//! mid-flow, and idle times that cross the 120 s UDP timeout. Shrinking drops steps first (a
//! scenario that no longer validates, e.g. a TCP step whose connection was dropped, is
//! rejected), then simplifies what is left.

use proptest::prelude::*;
use scenario::{
    ClientSpec, DnsRecord, GatewaySpec, Grant, Latency, LinkLatency, PathMode, RelaySpec,
    ResourceAddress, ResourceSpec, Scenario, Side, Stack, Step, Target, Topology,
};

/// The names generated scenarios use.
const CLIENTS: [&str; 2] = ["alice", "bob"];
const DOMAINS: [&str; 3] = [
    "api.example.com",
    "www.example.com",
    "db.internal.example.com",
];

/// One thing that happens, before it becomes steps (a TCP conversation is several steps).
#[derive(Debug, Clone)]
enum Action {
    Udp {
        client: usize,
        resource: usize,
        port: u16,
        bytes: u16,
        ipv6: bool,
        domain: usize,
    },
    Tcp {
        client: usize,
        resource: usize,
        port: u16,
        ipv6: bool,
        domain: usize,
        data: Vec<(bool, u16)>,
        end: TcpEnd,
    },
    Path {
        client: usize,
        mode: PathMode,
    },
    Roam {
        client: usize,
    },
    Revoke {
        client: usize,
        resource: usize,
    },
    Grant {
        client: usize,
        resource: usize,
    },
    DnsChange {
        domain: usize,
        last_octet: u8,
    },
    Partition {
        client: usize,
    },
    Restart,
    Idle {
        seconds: u64,
    },
}

#[derive(Debug, Clone, Copy)]
enum TcpEnd {
    Fin(Side),
    Rst(Side),
    Open,
}

#[derive(Debug, Clone)]
struct Shape {
    clients: usize,
    client_on_relay: [bool; 2],
    gateway_on_relay: bool,
    /// The client's relay is the gateway's (both peers on one relay) or another one.
    same_relay: bool,
    latency_ms: u32,
    client_link_ms: u32,
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        1usize..=2,
        any::<[bool; 2]>(),
        prop::bool::weighted(0.7),
        prop::bool::weighted(0.6),
        prop_oneof![Just(10u32), Just(5), 1u32..40],
        prop_oneof![Just(10u32), 1u32..60],
    )
        .prop_map(
            |(
                clients,
                client_on_relay,
                gateway_on_relay,
                same_relay,
                latency_ms,
                client_link_ms,
            )| Shape {
                clients,
                client_on_relay,
                gateway_on_relay,
                same_relay,
                latency_ms,
                client_link_ms,
            },
        )
}

fn action() -> impl Strategy<Value = Action> {
    let tcp_end = prop_oneof![
        3 => any::<bool>().prop_map(|by_client| TcpEnd::Fin(if by_client { Side::Client } else { Side::Resource })),
        1 => any::<bool>().prop_map(|by_client| TcpEnd::Rst(if by_client { Side::Client } else { Side::Resource })),
        1 => Just(TcpEnd::Open),
    ];
    prop_oneof![
        6 => (0usize..2, 0usize..2, prop_oneof![Just(53u16), Just(5000), 1u16..2000], 1u16..1200, prop::bool::weighted(0.25), 0usize..3)
            .prop_map(|(client, resource, port, bytes, ipv6, domain)| Action::Udp { client, resource, port, bytes, ipv6, domain }),
        5 => (0usize..2, 0usize..2, prop_oneof![Just(443u16), Just(22), Just(80)], prop::bool::weighted(0.25), 0usize..3,
              prop::collection::vec((any::<bool>(), 1u16..1200), 0..3), tcp_end)
            .prop_map(|(client, resource, port, ipv6, domain, data, end)| Action::Tcp { client, resource, port, ipv6, domain, data, end }),
        3 => (0usize..2, prop_oneof![Just(PathMode::Direct), Just(PathMode::ClientRelayed), Just(PathMode::GatewayRelayed), Just(PathMode::SameRelay), Just(PathMode::DifferentRelays)])
            .prop_map(|(client, mode)| Action::Path { client, mode }),
        1 => (0usize..2).prop_map(|client| Action::Roam { client }),
        1 => (0usize..2, 0usize..2).prop_map(|(client, resource)| Action::Revoke { client, resource }),
        1 => (0usize..2, 0usize..2).prop_map(|(client, resource)| Action::Grant { client, resource }),
        1 => (0usize..3, 1u8..250).prop_map(|(domain, last_octet)| Action::DnsChange { domain, last_octet }),
        1 => (0usize..2).prop_map(|client| Action::Partition { client }),
        1 => Just(Action::Restart),
        3 => prop_oneof![Just(5u64), Just(60), Just(119), Just(121), Just(130), 1u64..200].prop_map(|seconds| Action::Idle { seconds }),
    ]
}

/// A generated scenario; `prop_filter` drops the few that do not validate.
pub fn scenario() -> impl Strategy<Value = Scenario> {
    (shape(), prop::collection::vec(action(), 1..10))
        .prop_map(|(shape, actions)| build(&shape, &actions))
        .prop_filter("the scenario must validate", |scenario| {
            scenario.validate().is_ok()
        })
}

fn build(shape: &Shape, actions: &[Action]) -> Scenario {
    let client_relay = |index: usize| {
        shape.client_on_relay[index].then(|| {
            if shape.same_relay || !shape.gateway_on_relay {
                "r1"
            } else {
                "r2"
            }
            .to_owned()
        })
    };
    let clients: Vec<ClientSpec> = (0..shape.clients)
        .map(|index| ClientSpec {
            name: CLIENTS[index].to_owned(),
            stack: Stack::V4,
            relay: client_relay(index),
        })
        .collect();
    let topology = Topology {
        clients: clients.clone(),
        gateways: vec![GatewaySpec {
            name: "gw".to_owned(),
            stack: Stack::V4,
            relay: shape.gateway_on_relay.then(|| "r1".to_owned()),
        }],
        relays: vec![
            RelaySpec {
                name: "r1".to_owned(),
                stack: Stack::V4,
            },
            RelaySpec {
                name: "r2".to_owned(),
                stack: Stack::V4,
            },
        ],
        resources: vec![
            ResourceSpec {
                name: "web".to_owned(),
                gateway: "gw".to_owned(),
                address: ResourceAddress::Cidr("198.51.100.10/32".to_owned()),
            },
            ResourceSpec {
                name: "app".to_owned(),
                gateway: "gw".to_owned(),
                address: ResourceAddress::Dns("**.example.com".to_owned()),
            },
        ],
        dns_records: DOMAINS
            .iter()
            .enumerate()
            .map(|(index, name)| DnsRecord {
                name: (*name).to_owned(),
                addresses: vec![
                    format!("198.51.100.{}", 40 + index).parse().expect("ip"),
                    format!("2001:db8:100::{}", 40 + index).parse().expect("ip"),
                ],
                ttl_s: 30,
            })
            .collect(),
        grants: clients
            .iter()
            .flat_map(|client| {
                ["web", "app"].map(|resource| Grant {
                    client: client.name.clone(),
                    resource: resource.to_owned(),
                    filters: Vec::new(),
                })
            })
            .collect(),
        latency: Latency {
            default_ms: shape.latency_ms,
            links: vec![LinkLatency {
                between: ["alice".to_owned(), "gw".to_owned()],
                ms: shape.client_link_ms,
            }],
        },
        idle_timeout_s: None,
    };
    let mut steps = Vec::new();
    let mut next_conn = 1;
    let mut partitioned = [false; 2];
    for action in actions {
        let client_name = |client: usize| CLIENTS[client.min(shape.clients - 1)].to_owned();
        let target =
            |client: usize, resource: usize, port: u16, ipv6: bool, domain: usize| Target {
                client: client_name(client),
                resource: ["web", "app"][resource].to_owned(),
                domain: (resource == 1).then(|| DOMAINS[domain].to_owned()),
                ipv6: ipv6 && resource == 1,
                port,
            };
        match action.clone() {
            Action::Udp {
                client,
                resource,
                port,
                bytes,
                ipv6,
                domain,
            } => steps.push(Step::Udp {
                target: target(client, resource, port, ipv6, domain),
                bytes,
            }),
            Action::Tcp {
                client,
                resource,
                port,
                ipv6,
                domain,
                data,
                end,
            } => {
                let conn = next_conn;
                next_conn += 1;
                steps.push(Step::TcpOpen {
                    conn,
                    target: target(client, resource, port, ipv6, domain),
                });
                for (from_client, bytes) in data {
                    steps.push(Step::TcpData {
                        conn,
                        from: if from_client {
                            Side::Client
                        } else {
                            Side::Resource
                        },
                        bytes,
                    });
                }
                match end {
                    TcpEnd::Fin(by) => steps.push(Step::TcpClose { conn, by }),
                    TcpEnd::Rst(by) => steps.push(Step::TcpReset { conn, by }),
                    TcpEnd::Open => {}
                }
            }
            Action::Path { client, mode } => steps.push(Step::Path {
                client: client_name(client),
                gateway: "gw".to_owned(),
                mode,
            }),
            // Roaming a client that uses a relay would need a new allocation (not simulated yet).
            Action::Roam { client } => {
                if !shape.client_on_relay[client.min(shape.clients - 1)] {
                    steps.push(Step::Roam {
                        client: client_name(client),
                    });
                }
            }
            Action::Revoke { client, resource } => steps.push(Step::Revoke {
                client: client_name(client),
                resource: ["web", "app"][resource].to_owned(),
            }),
            Action::Grant { client, resource } => steps.push(Step::Grant(Grant {
                client: client_name(client),
                resource: ["web", "app"][resource].to_owned(),
                filters: Vec::new(),
            })),
            Action::DnsChange { domain, last_octet } => steps.push(Step::DnsChange {
                name: DOMAINS[domain].to_owned(),
                addresses: vec![format!("198.51.100.{last_octet}").parse().expect("ip")],
            }),
            Action::Partition { client } => {
                let client = client.min(shape.clients - 1);
                partitioned[client] = !partitioned[client];
                steps.push(Step::Fault {
                    between: [client_name(client), "gw".to_owned()],
                    fault: if partitioned[client] {
                        scenario::Fault::Partition
                    } else {
                        scenario::Fault::Heal
                    },
                });
            }
            Action::Restart => steps.push(Step::GatewayRestart {
                gateway: "gw".to_owned(),
            }),
            Action::Idle { seconds } => steps.push(Step::Idle { seconds }),
        }
    }
    Scenario {
        name: "generated".to_owned(),
        description: String::new(),
        topology,
        steps,
    }
}
