//! proptest strategies that generate whole scenarios, weighted so that the interesting cases are
//! common: both peers on one relay, DNS-resource traffic, IPv6 outside and inside the tunnel,
//! cross-family relay paths, path switches mid-flow, faults, and idle times that cross the 120 s
//! UDP timeout and the 600 s TURN lifetimes. Shrinking drops steps first (a scenario that no
//! longer validates, e.g. a TCP step whose connection was dropped, is rejected), then simplifies
//! what is left: fewer hosts, IPv4 only, shorter idles.
//!
//! The generator only writes paths the contract can carry (docs/harness.md): a `direct` path
//! needs both ends in one family, a path through the client's relay is not used after that
//! client roamed, and in mixed-family topologies every host has a (dual-stack) relay.

use std::collections::BTreeMap;

use proptest::prelude::*;
use scenario_format::{
    ClientSpec, DnsRecord, Fault, GatewaySpec, Grant, Latency, LinkLatency, PathMode, RelaySpec,
    ResourceAddress, ResourceSpec, Scenario, Side, Stack, Step, Target, Topology,
};

/// The names generated scenarios use.
const CLIENTS: [&str; 3] = ["alice", "bob", "carol"];
const GATEWAYS: [&str; 2] = ["gw", "gw2"];
const RELAYS: [&str; 3] = ["r1", "r2", "r3"];
const DOMAINS: [&str; 4] = [
    "api.example.com",
    "www.example.com",
    "db.internal.example.com",
    "cache.svc.example.net",
];

/// The filters of a filtered grant: some generated ports pass, others are denied.
const FILTERS: [&str; 4] = ["tcp/443", "tcp/80", "udp/53", "udp/5000-5999"];

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
        /// The client sends its SYN again right after the handshake (a retransmission that
        /// crossed the SYN-ACK), and an ACK after the close (a late ACK).
        retransmit_syn: bool,
        late_ack: bool,
    },
    Path {
        client: usize,
        gateway: usize,
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
    /// A fault on the link between a client and its gateway or its relay.
    Fault {
        client: usize,
        to_relay: bool,
        kind: FaultKind,
    },
    /// The resource sends on the latest connection left open, possibly much later (after an
    /// idle expiry or a restart it finds no open flow).
    LateResourceData {
        bytes: u16,
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

#[derive(Debug, Clone, Copy)]
enum FaultKind {
    /// Partition, or heal if partitioned.
    Partition,
    /// Hold, or release if held.
    Hold,
    DropNext(u32),
}

/// The address families of a topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Families {
    V4,
    V6,
    /// Dual-stack relays; clients and gateways of any stack (cross-family relay paths).
    Mixed,
}

#[derive(Debug, Clone)]
struct Shape {
    clients: usize,
    gateways: usize,
    relays: usize,
    families: Families,
    /// Per client and gateway in mixed topologies: 0 = v4, 1 = v6, 2 = dual.
    stacks: [u8; 5],
    /// Per client: its relay (index into the relays, modulo their number), or none.
    client_relay: [Option<usize>; 3],
    /// Per gateway: its relay, or none.
    gateway_relay: [Option<usize>; 2],
    /// Clients take their first gateway's relay (both peers on one relay).
    same_relay: bool,
    /// Per client: its grants carry filters (TCP 443 and 80, UDP 53 and 5000-5999).
    filtered: [bool; 3],
    latency_ms: u32,
    client_link_ms: u32,
}

fn shape() -> impl Strategy<Value = Shape> {
    let relay = || prop::option::weighted(0.65, 0usize..3);
    (
        prop_oneof![3 => Just(1usize), 4 => Just(2), 2 => Just(3)],
        prop_oneof![4 => Just(1usize), 1 => Just(2)],
        prop_oneof![2 => Just(1usize), 4 => Just(2), 1 => Just(3)],
        prop_oneof![5 => Just(Families::V4), 2 => Just(Families::V6), 3 => Just(Families::Mixed)],
        any::<[u8; 5]>().prop_map(|stacks| stacks.map(|s| s % 3)),
        [relay(), relay(), relay()],
        [prop::option::weighted(0.75, 0usize..3), relay()],
        prop::bool::weighted(0.8),
        (
            prop_oneof![Just(10u32), Just(5), 1u32..40],
            prop_oneof![Just(10u32), 1u32..60],
            [
                prop::bool::weighted(0.2),
                prop::bool::weighted(0.2),
                prop::bool::weighted(0.2),
            ],
        ),
    )
        .prop_map(
            |(
                clients,
                gateways,
                relays,
                families,
                stacks,
                client_relay,
                gateway_relay,
                same_relay,
                (latency_ms, client_link_ms, filtered),
            )| Shape {
                clients,
                gateways,
                relays,
                families,
                stacks,
                client_relay,
                gateway_relay,
                same_relay,
                filtered,
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
    let mode = prop_oneof![
        1 => Just(PathMode::Direct),
        1 => Just(PathMode::ClientRelayed),
        1 => Just(PathMode::GatewayRelayed),
        5 => Just(PathMode::SameRelay),
        1 => Just(PathMode::DifferentRelays),
    ];
    let fault = prop_oneof![
        2 => Just(FaultKind::Partition),
        1 => Just(FaultKind::Hold),
        1 => (1u32..4).prop_map(FaultKind::DropNext),
    ];
    // Resources: 0 web (CIDR v4), 1 app (DNS), 2 web6 (CIDR v6), 3 db (CIDR, gw2), 4 svc (DNS,
    // gw2); DNS resources (1, 4) come up most.
    let resource =
        || prop_oneof![2 => Just(0usize), 4 => Just(1), 1 => Just(2), 1 => Just(3), 2 => Just(4)];
    prop_oneof![
        6 => (0usize..3, resource(), prop_oneof![Just(53u16), Just(5000), 1u16..2000], 1u16..1200, prop::bool::weighted(0.3), 0usize..4)
            .prop_map(|(client, resource, port, bytes, ipv6, domain)| Action::Udp { client, resource, port, bytes, ipv6, domain }),
        5 => (0usize..3, resource(), prop_oneof![Just(443u16), Just(22), Just(80)], prop::bool::weighted(0.3), 0usize..4,
              prop::collection::vec((any::<bool>(), 1u16..1200), 0..3), tcp_end,
              (prop::bool::weighted(0.2), prop::bool::weighted(0.2)))
            .prop_map(|(client, resource, port, ipv6, domain, data, end, (retransmit_syn, late_ack))| Action::Tcp {
                client, resource, port, ipv6, domain, data, end, retransmit_syn, late_ack,
            }),
        4 => (0usize..3, 0usize..2, mode)
            .prop_map(|(client, gateway, mode)| Action::Path { client, gateway, mode }),
        1 => (0usize..3).prop_map(|client| Action::Roam { client }),
        1 => (0usize..3, resource()).prop_map(|(client, resource)| Action::Revoke { client, resource }),
        1 => (0usize..3, resource()).prop_map(|(client, resource)| Action::Grant { client, resource }),
        1 => (0usize..4, 1u8..250).prop_map(|(domain, last_octet)| Action::DnsChange { domain, last_octet }),
        2 => (0usize..3, any::<bool>(), fault).prop_map(|(client, to_relay, kind)| Action::Fault { client, to_relay, kind }),
        1 => Just(Action::Restart),
        3 => (1u16..600).prop_map(|bytes| Action::LateResourceData { bytes }),
        3 => prop_oneof![Just(5u64), Just(60), Just(119), Just(121), Just(130), Just(300), Just(590), Just(610), 1u64..200]
            .prop_map(|seconds| Action::Idle { seconds }),
    ]
}

/// A generated scenario; `prop_filter` drops the few that do not validate.
pub fn scenario() -> impl Strategy<Value = Scenario> {
    (shape(), prop::collection::vec(action(), 1..12))
        .prop_map(|(shape, actions)| build(&shape, &actions))
        .prop_filter("the scenario must validate", |scenario| {
            scenario.validate().is_ok()
        })
}

/// A resource of a generated topology.
struct ResourceChoice {
    name: &'static str,
    gateway: usize,
    address: &'static str,
    dns: bool,
}

const RESOURCES: [ResourceChoice; 5] = [
    ResourceChoice {
        name: "web",
        gateway: 0,
        address: "198.51.100.10/32",
        dns: false,
    },
    ResourceChoice {
        name: "app",
        gateway: 0,
        address: "**.example.com",
        dns: true,
    },
    ResourceChoice {
        name: "web6",
        gateway: 0,
        address: "2001:db8:100::10/128",
        dns: false,
    },
    ResourceChoice {
        name: "db",
        gateway: 1,
        address: "198.51.100.64/26",
        dns: false,
    },
    ResourceChoice {
        name: "svc",
        gateway: 1,
        address: "*.svc.example.net",
        dns: true,
    },
];

/// The scenario's hosts and how each can be reached, while steps are generated.
struct Layout {
    clients: Vec<ClientSpec>,
    gateways: Vec<GatewaySpec>,
    /// Resource indices into [`RESOURCES`] that exist (their gateway exists).
    resources: Vec<usize>,
}

impl Layout {
    fn v6(stack: Stack) -> bool {
        stack == Stack::V6
    }

    /// The path mode actually written for a wish: the wish if the contract carries it, else
    /// the closest one that works, else none.
    fn usable(
        &self,
        client: usize,
        gateway: usize,
        wish: PathMode,
        roamed: bool,
    ) -> Option<PathMode> {
        let c = &self.clients[client];
        let g = &self.gateways[gateway];
        let same_family = Self::v6(c.stack) == Self::v6(g.stack);
        let client_relay = c.relay.is_some() && !roamed;
        let gateway_relay = g.relay.is_some();
        let works = |mode: PathMode| match mode {
            PathMode::Direct => same_family,
            PathMode::ClientRelayed => client_relay,
            PathMode::GatewayRelayed => gateway_relay,
            PathMode::SameRelay => client_relay && gateway_relay && c.relay == g.relay,
            PathMode::DifferentRelays => client_relay && gateway_relay && c.relay != g.relay,
        };
        let fallbacks = match wish {
            PathMode::SameRelay | PathMode::DifferentRelays => [
                PathMode::SameRelay,
                PathMode::DifferentRelays,
                PathMode::ClientRelayed,
                PathMode::GatewayRelayed,
                PathMode::Direct,
            ],
            _ => [
                wish,
                PathMode::ClientRelayed,
                PathMode::GatewayRelayed,
                PathMode::Direct,
                PathMode::SameRelay,
            ],
        };
        std::iter::once(wish)
            .chain(fallbacks)
            .find(|mode| works(*mode))
    }
}

fn stack_of(shape: &Shape, slot: usize) -> Stack {
    match shape.families {
        Families::V4 => Stack::V4,
        Families::V6 => Stack::V6,
        Families::Mixed => match shape.stacks[slot] {
            0 => Stack::V4,
            1 => Stack::V6,
            _ => Stack::Dual,
        },
    }
}

fn layout(shape: &Shape) -> (Layout, Vec<RelaySpec>) {
    let relay_stack = match shape.families {
        Families::V4 => Stack::V4,
        Families::V6 => Stack::V6,
        Families::Mixed => Stack::Dual,
    };
    let relays: Vec<RelaySpec> = RELAYS[..shape.relays]
        .iter()
        .map(|name| RelaySpec {
            name: (*name).to_owned(),
            stack: relay_stack,
        })
        .collect();
    let relay_name = |index: usize| RELAYS[index % shape.relays].to_owned();
    // In mixed topologies every host has a relay, so that every pair has a path.
    let mixed = shape.families == Families::Mixed;
    let gateways: Vec<GatewaySpec> = (0..shape.gateways)
        .map(|index| GatewaySpec {
            name: GATEWAYS[index].to_owned(),
            stack: stack_of(shape, 3 + index),
            relay: shape.gateway_relay[index]
                .or(mixed.then_some(index))
                .map(relay_name),
        })
        .collect();
    let clients: Vec<ClientSpec> = (0..shape.clients)
        .map(|index| {
            let own = shape.client_relay[index].or(mixed.then_some(index));
            let relay = match (&gateways[0].relay, own) {
                (Some(shared), Some(_)) if shape.same_relay => Some(shared.clone()),
                (_, own) => own.map(relay_name),
            };
            ClientSpec {
                name: CLIENTS[index].to_owned(),
                stack: stack_of(shape, index),
                relay,
            }
        })
        .collect();
    let resources = (0..RESOURCES.len())
        .filter(|index| RESOURCES[*index].gateway < shape.gateways)
        .collect();
    (
        Layout {
            clients,
            gateways,
            resources,
        },
        relays,
    )
}

fn build(shape: &Shape, actions: &[Action]) -> Scenario {
    let (layout, relays) = layout(shape);
    let topology = topology(shape, &layout, relays);
    let mut writer = StepWriter::new(&layout);
    for action in actions {
        writer.write(action.clone());
    }
    Scenario {
        name: "generated".to_owned(),
        description: String::new(),
        topology,
        steps: writer.steps,
    }
}

fn topology(shape: &Shape, layout: &Layout, relays: Vec<RelaySpec>) -> Topology {
    Topology {
        clients: layout.clients.clone(),
        gateways: layout.gateways.clone(),
        relays,
        resources: resource_specs(layout),
        dns_records: dns_records(),
        grants: grants(shape, layout),
        latency: Latency {
            default_ms: shape.latency_ms,
            links: vec![LinkLatency {
                between: ["alice".to_owned(), "gw".to_owned()],
                ms: shape.client_link_ms,
            }],
        },
        idle_timeout_s: None,
    }
}

fn resource_specs(layout: &Layout) -> Vec<ResourceSpec> {
    layout
        .resources
        .iter()
        .map(|index| {
            let choice = &RESOURCES[*index];
            ResourceSpec {
                name: choice.name.to_owned(),
                gateway: GATEWAYS[choice.gateway].to_owned(),
                address: if choice.dns {
                    ResourceAddress::Dns(choice.address.to_owned())
                } else {
                    ResourceAddress::Cidr(choice.address.to_owned())
                },
            }
        })
        .collect()
}

/// One IPv4 and one IPv6 address for each of [`DOMAINS`].
fn dns_records() -> Vec<DnsRecord> {
    DOMAINS
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
        .collect()
}

/// Every client is granted every resource, with [`FILTERS`] if the shape filters its grants.
fn grants(shape: &Shape, layout: &Layout) -> Vec<Grant> {
    layout
        .clients
        .iter()
        .enumerate()
        .flat_map(|(c, client)| {
            layout.resources.iter().map(move |index| Grant {
                client: client.name.clone(),
                resource: RESOURCES[*index].name.to_owned(),
                filters: if shape.filtered[c] {
                    FILTERS.iter().map(|filter| (*filter).to_owned()).collect()
                } else {
                    Vec::new()
                },
            })
        })
        .collect()
}

/// A link between a client (by index) and the host at its other end.
type Link = (usize, String);

/// Writes the steps of actions, keeping the state that later actions depend on. Actions name
/// clients, gateways and resources by any index; the writer takes it modulo what exists.
struct StepWriter<'a> {
    layout: &'a Layout,
    steps: Vec<Step>,
    /// Per client: it roamed, so paths through its relay are no longer written.
    roamed: Vec<bool>,
    next_conn: u32,
    /// The latest connection a TCP action left open.
    open_conn: Option<u32>,
    /// Per link: partitioned, held.
    partitioned: BTreeMap<Link, bool>,
    held: BTreeMap<Link, bool>,
}

impl<'a> StepWriter<'a> {
    fn new(layout: &'a Layout) -> Self {
        let mut writer = Self {
            layout,
            steps: Vec::new(),
            roamed: vec![false; layout.clients.len()],
            next_conn: 1,
            open_conn: None,
            partitioned: BTreeMap::new(),
            held: BTreeMap::new(),
        };
        writer.leave_direct_paths_that_cannot_work();
        writer
    }

    /// Every client starts on `direct`; where the families differ it first moves to a path
    /// through a relay (mixed topologies give every host one).
    fn leave_direct_paths_that_cannot_work(&mut self) {
        for c in 0..self.layout.clients.len() {
            for g in 0..self.layout.gateways.len() {
                if let Some(mode) = self.layout.usable(c, g, PathMode::Direct, false)
                    && mode != PathMode::Direct
                {
                    self.push_path(c, g, mode);
                }
            }
        }
    }

    fn write(&mut self, action: Action) {
        match action {
            Action::Udp {
                client,
                resource,
                port,
                bytes,
                ipv6,
                domain,
            } => self.steps.push(Step::Udp {
                target: self.target(client, resource, port, ipv6, domain),
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
                retransmit_syn,
                late_ack,
            } => {
                let target = self.target(client, resource, port, ipv6, domain);
                self.write_tcp(target, data, end, retransmit_syn, late_ack);
            }
            Action::Path {
                client,
                gateway,
                mode,
            } => self.write_path(client, gateway, mode),
            Action::Roam { client } => self.write_roam(client),
            Action::Revoke { client, resource } => self.steps.push(Step::Revoke {
                client: self.client_name(client),
                resource: self.resource(resource).name.to_owned(),
            }),
            Action::Grant { client, resource } => self.steps.push(Step::Grant(Grant {
                client: self.client_name(client),
                resource: self.resource(resource).name.to_owned(),
                filters: Vec::new(),
            })),
            Action::DnsChange { domain, last_octet } => self.steps.push(Step::DnsChange {
                name: DOMAINS[domain % DOMAINS.len()].to_owned(),
                addresses: vec![format!("198.51.100.{last_octet}").parse().expect("ip")],
            }),
            Action::Fault {
                client,
                to_relay,
                kind,
            } => self.write_fault(client, to_relay, kind),
            Action::LateResourceData { bytes } => self.write_late_resource_data(bytes),
            Action::Restart => self.steps.push(Step::GatewayRestart {
                gateway: self.layout.gateways[0].name.clone(),
            }),
            Action::Idle { seconds } => self.steps.push(Step::Idle { seconds }),
        }
    }

    fn client_index(&self, client: usize) -> usize {
        client % self.layout.clients.len()
    }

    fn client_name(&self, client: usize) -> String {
        self.layout.clients[self.client_index(client)].name.clone()
    }

    fn resource(&self, resource: usize) -> &'static ResourceChoice {
        let resources = &self.layout.resources;
        &RESOURCES[resources[resource % resources.len()]]
    }

    fn target(
        &self,
        client: usize,
        resource: usize,
        port: u16,
        ipv6: bool,
        domain: usize,
    ) -> Target {
        let choice = self.resource(resource);
        Target {
            client: self.client_name(client),
            resource: choice.name.to_owned(),
            // Names under each DNS resource's pattern: three under example.com, one under
            // svc.example.net.
            domain: choice.dns.then(|| {
                if choice.name == "svc" {
                    DOMAINS[3].to_owned()
                } else {
                    DOMAINS[domain % 3].to_owned()
                }
            }),
            ipv6: (ipv6 && choice.dns) || choice.name == "web6",
            port,
        }
    }

    /// A TCP conversation: open, data either way, then a close, a reset or nothing (the
    /// connection stays open for later resource data).
    fn write_tcp(
        &mut self,
        target: Target,
        data: Vec<(bool, u16)>,
        end: TcpEnd,
        retransmit_syn: bool,
        late_ack: bool,
    ) {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.steps.push(Step::TcpOpen { conn, target });
        if retransmit_syn {
            self.steps.push(Step::TcpRetransmitSyn { conn });
        }
        for (from_client, bytes) in data {
            self.steps.push(Step::TcpData {
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
            TcpEnd::Fin(by) => self.steps.push(Step::TcpClose { conn, by }),
            TcpEnd::Rst(by) => self.steps.push(Step::TcpReset { conn, by }),
            TcpEnd::Open => self.open_conn = Some(conn),
        }
        if late_ack && !matches!(end, TcpEnd::Open) {
            self.steps.push(Step::TcpLateAck { conn });
        }
    }

    fn write_path(&mut self, client: usize, gateway: usize, wish: PathMode) {
        let (c, g) = (
            self.client_index(client),
            gateway % self.layout.gateways.len(),
        );
        if let Some(mode) = self.layout.usable(c, g, wish, self.roamed[c]) {
            self.push_path(c, g, mode);
        }
    }

    fn write_roam(&mut self, client: usize) {
        let c = self.client_index(client);
        self.roamed[c] = true;
        self.steps.push(Step::Roam {
            client: self.client_name(client),
        });
        // Paths through the client's own relay end with the roam (it would need its new
        // allocation, which the model cannot know): move them.
        for g in 0..self.layout.gateways.len() {
            if let Some(mode) = self.layout.usable(c, g, PathMode::GatewayRelayed, true) {
                self.push_path(c, g, mode);
            }
        }
    }

    /// Data from the resource on the latest connection left open, if any.
    fn write_late_resource_data(&mut self, bytes: u16) {
        if let Some(conn) = self.open_conn {
            self.steps.push(Step::TcpData {
                conn,
                from: Side::Resource,
                bytes,
            });
        }
    }

    /// The path step of client `c` and gateway `g` (indices that exist).
    fn push_path(&mut self, c: usize, g: usize, mode: PathMode) {
        self.steps.push(Step::Path {
            client: self.layout.clients[c].name.clone(),
            gateway: self.layout.gateways[g].name.clone(),
            mode,
        });
    }

    /// A fault on the link from the client to its relay (if it has one and `to_relay`) or to
    /// the first gateway. Partitions and holds alternate with heals and releases per link.
    fn write_fault(&mut self, client: usize, to_relay: bool, kind: FaultKind) {
        let c = self.client_index(client);
        let other = match (&self.layout.clients[c].relay, to_relay) {
            (Some(relay), true) => relay.clone(),
            _ => self.layout.gateways[0].name.clone(),
        };
        let link = (c, other.clone());
        let fault = match kind {
            FaultKind::Partition => {
                if toggle(&mut self.partitioned, link) {
                    Fault::Partition
                } else {
                    Fault::Heal
                }
            }
            FaultKind::Hold => {
                if toggle(&mut self.held, link) {
                    Fault::Hold
                } else {
                    Fault::Release
                }
            }
            FaultKind::DropNext(n) => Fault::DropNext(n),
        };
        self.steps.push(Step::Fault {
            between: [self.client_name(client), other],
            fault,
        });
    }
}

/// Flips a link's state (off until first flipped) and returns the new state.
fn toggle(states: &mut BTreeMap<Link, bool>, link: Link) -> bool {
    let on = states.entry(link).or_insert(false);
    *on = !*on;
    *on
}
