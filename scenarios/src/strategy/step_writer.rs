//! The step writer: turns actions into steps, keeping the state later actions depend on
//! (roams, the connection left open, partitioned and held links).

use std::collections::{BTreeMap, BTreeSet};

use scenario_format::{
    AttackKind, Fault, GatewayAttackKind, Grant, PathMode, Side, Stack, Step, StrayKind, Target,
    Topology, plan::AddressPlan, settings::GATEWAY_MAX_FLOWS_PER_CLIENT,
};

use super::action::{Action, Destination, FaultKind, TcpEnd};
use super::layout::Layout;
use super::names::{DOMAINS, RESOURCES, ResourceChoice};

/// A link between a client (by index) and the host at its other end.
type Link = (usize, String);

/// Writes the steps of actions, keeping the state that later actions depend on. Actions name
/// clients, gateways and resources by any index; the writer takes it modulo what exists.
pub(super) struct StepWriter<'a> {
    pub(super) layout: &'a Layout,
    pub(super) topology: &'a Topology,
    pub(super) steps: Vec<Step>,
    /// Per client: it roamed, so paths through its relay are no longer written.
    pub(super) roamed: Vec<bool>,
    /// Per client: its address index (up one per roam, down one per roam back).
    pub(super) roams: Vec<u32>,
    /// (client, gateway, the client's roams then): the gateway bound a channel to that address
    /// of the client on its relay (a `gateway-relayed` path), so a new such path binds nothing.
    pub(super) gateway_bound: BTreeSet<(usize, usize, u32)>,
    next_conn: u32,
    /// The latest connection a TCP action left open.
    open_conn: Option<u32>,
    /// Every connection opened: its target, its source port, and whether it is still open.
    pub(super) conns: BTreeMap<u32, (Target, u16, bool)>,
    /// Every target a UDP step sent to, latest last.
    pub(super) udp_targets: Vec<Target>,
    /// Per link: partitioned, held.
    partitioned: BTreeMap<Link, bool>,
    held: BTreeMap<Link, bool>,
}

impl<'a> StepWriter<'a> {
    pub(super) fn new(layout: &'a Layout, topology: &'a Topology) -> Self {
        let mut writer = Self {
            layout,
            topology,
            conns: BTreeMap::new(),
            udp_targets: Vec::new(),
            steps: Vec::new(),
            roamed: vec![false; layout.clients.len()],
            roams: vec![0; layout.clients.len()],
            gateway_bound: BTreeSet::new(),
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

    pub(super) fn write(&mut self, action: Action) {
        match action {
            Action::Udp { to, bytes } => {
                let target = self.target(to);
                self.udp_targets.push(target.clone());
                self.steps.push(Step::Udp { target, bytes });
            }
            Action::Tcp {
                to,
                data,
                end,
                retransmit_syn,
                late_ack,
                reuse,
            } => {
                let target = self.target(to);
                let opening = Opening {
                    target,
                    reuse,
                    retransmit_syn,
                };
                self.write_tcp(opening, data, end, late_ack);
            }
            Action::Path {
                client,
                gateway,
                mode,
            } => self.write_path(client, gateway, mode),
            Action::Roam { client, back } => self.write_roam(client, back),
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
            Action::Stray {
                relay,
                kind,
                ipv6,
                host,
            } => self.write_stray(
                relay,
                StrayKind::ALL[kind % StrayKind::ALL.len()],
                ipv6,
                host,
            ),
            Action::Idle { seconds } => self.steps.push(Step::Idle { seconds, ms: 0 }),
            Action::Attack {
                target,
                kind,
                ipv6,
                client,
            } => match AttackKind::ALL.get(kind) {
                Some(kind) => self.write_attack(target, *kind, ipv6),
                None => match GatewayAttackKind::ALL.get(kind - AttackKind::ALL.len()) {
                    Some(kind) => self.write_gateway_attack(target, *kind, client),
                    None if kind == AttackKind::ALL.len() + GatewayAttackKind::ALL.len() => {
                        self.write_flood();
                    }
                    None => self.write_forged_source(),
                },
            },
            Action::TimerBoundary { which, offset_ms } => {
                self.write_timer_boundary(which, offset_ms);
            }
            Action::RelayTimerBoundary {
                client,
                timer,
                offset_ms,
            } => self.write_relay_timer_boundary(client, timer, offset_ms),
        }
    }

    /// A stray datagram to a relay, in a family it has. One to an allocation goes to a host
    /// with a relay (a gateway, or a client that did not roam: the model knows only first
    /// allocations), on that host's relay.
    fn write_stray(&mut self, relay: usize, kind: StrayKind, ipv6: bool, host: usize) {
        let (relay, allocation) = if kind.needs_allocation() {
            let hosts: Vec<(&String, &String)> = self
                .layout
                .gateways
                .iter()
                .filter_map(|g| Some((&g.name, g.relay.as_ref()?)))
                .chain(
                    self.layout
                        .clients
                        .iter()
                        .zip(&self.roamed)
                        .filter(|(_, roamed)| !**roamed)
                        .filter_map(|(c, _)| Some((&c.name, c.relay.as_ref()?))),
                )
                .collect();
            let Some((name, relay)) = hosts.get(host % hosts.len().max(1)) else {
                return;
            };
            ((*relay).clone(), Some((*name).clone()))
        } else {
            let relays = &self.layout.relays;
            let Some(spec) = relays.get(relay % relays.len().max(1)) else {
                return;
            };
            (spec.name.clone(), None)
        };
        let Some(stack) = self
            .layout
            .relays
            .iter()
            .find(|r| r.name == relay)
            .map(|r| r.stack)
        else {
            return;
        };
        let ipv6 = match stack {
            Stack::V4 => false,
            Stack::V6 => true,
            Stack::Dual => ipv6,
        };
        self.steps.push(Step::Stray {
            relay,
            kind,
            ipv6,
            allocation,
        });
    }

    /// An attack on the relay `relay` (any index), in the family asked for if it has it.
    fn write_attack(&mut self, relay: usize, kind: AttackKind, ipv6: bool) {
        let relays = &self.layout.relays;
        let Some(spec) = relays.get(relay % relays.len().max(1)) else {
            return;
        };
        let ipv6 = match spec.stack {
            Stack::V4 => false,
            Stack::V6 => true,
            Stack::Dual => ipv6,
        };
        self.steps.push(Step::Attack {
            relay: spec.name.clone(),
            kind,
            ipv6,
        });
    }

    /// A flood of new flows from the client of the latest UDP step to its target, from new
    /// source ports, past the gateway's per-client cap (nothing without an earlier UDP step).
    fn write_flood(&mut self) {
        let Some(target) = self.udp_targets.last().cloned() else {
            return;
        };
        let flows = GATEWAY_MAX_FLOWS_PER_CLIENT as u16 + 8;
        self.steps.push(Step::UdpFlood { target, flows });
    }

    /// A datagram to the latest UDP target from a forged inner source (nothing without an
    /// earlier UDP step).
    fn write_forged_source(&mut self) {
        if let Some(target) = self.udp_targets.last().cloned() {
            self.steps.push(Step::ForgedSource { target });
        }
    }

    /// An attack on gateway `gateway` (any index) about client `client`'s session (any index).
    fn write_gateway_attack(&mut self, gateway: usize, kind: GatewayAttackKind, client: usize) {
        let gateways = &self.layout.gateways;
        let Some(spec) = gateways.get(gateway % gateways.len().max(1)) else {
            return;
        };
        let gateway = spec.name.clone();
        let client = self.client_name(client);
        self.steps.push(Step::GatewayAttack {
            gateway,
            client,
            kind,
        });
    }

    pub(super) fn client_index(&self, client: usize) -> usize {
        client % self.layout.clients.len()
    }

    fn client_name(&self, client: usize) -> String {
        self.layout.clients[self.client_index(client)].name.clone()
    }

    fn resource(&self, resource: usize) -> &'static ResourceChoice {
        let resources = &self.layout.resources;
        &RESOURCES[resources[resource % resources.len()]]
    }

    pub(super) fn target(&self, to: Destination) -> Target {
        let Destination {
            client,
            resource,
            port,
            ipv6,
            domain,
        } = to;
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
    fn write_tcp(&mut self, opening: Opening, data: Vec<(bool, u16)>, end: TcpEnd, late_ack: bool) {
        let conn = self.next_conn;
        self.next_conn += 1;
        let Opening {
            mut target,
            reuse,
            retransmit_syn,
        } = opening;
        // A reused port takes the latest connection's whole 5-tuple (client and target too), so
        // the new SYN meets that connection's flow at the gateway: still open, or closed by FIN,
        // RST or an idle timeout. That connection is never used again.
        let latest = self
            .conns
            .iter()
            .next_back()
            .map(|(c, (t, port, _))| (*c, t.clone(), *port));
        let src_port = match latest {
            Some((old, old_target, port)) if reuse => {
                target = old_target;
                self.conns.remove(&old);
                if self.open_conn == Some(old) {
                    self.open_conn = None;
                }
                Some(port)
            }
            _ => None,
        };
        let port = AddressPlan::tcp_source_port(conn, src_port).unwrap_or_default();
        self.conns.insert(conn, (target.clone(), port, true));
        self.steps.push(Step::TcpOpen {
            conn,
            target,
            src_port,
        });
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
            TcpEnd::SimultaneousFin => self.steps.push(Step::TcpSimultaneousClose { conn }),
            TcpEnd::HalfClose {
                by,
                bytes,
                then_reset,
            } => {
                let other = by.other();
                self.steps.push(Step::TcpHalfClose { conn, by });
                self.steps.push(Step::TcpData {
                    conn,
                    from: other,
                    bytes,
                });
                self.steps.push(if then_reset {
                    Step::TcpReset { conn, by: other }
                } else {
                    Step::TcpClose { conn, by: other }
                });
            }
            TcpEnd::Rst(by) => self.steps.push(Step::TcpReset { conn, by }),
            TcpEnd::Open => self.open_conn = Some(conn),
        }
        if !matches!(end, TcpEnd::Open) {
            if let Some(entry) = self.conns.get_mut(&conn) {
                entry.2 = false;
            }
            if late_ack {
                self.steps.push(Step::TcpLateAck { conn });
            }
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

    /// A roam to the next address, or back to the one before (the gateways then bind a
    /// channel to an address they may have bound before).
    pub(super) fn write_roam(&mut self, client: usize, back: bool) {
        let c = self.client_index(client);
        let back = back && self.roams[c] > 0;
        self.roamed[c] = true;
        if back {
            self.roams[c] -= 1;
        } else {
            self.roams[c] += 1;
        }
        self.steps.push(Step::Roam {
            client: self.client_name(client),
            back,
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
    pub(super) fn push_path(&mut self, c: usize, g: usize, mode: PathMode) {
        if mode == PathMode::GatewayRelayed {
            self.gateway_bound.insert((c, g, self.roams[c]));
        }
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

/// How a TCP action opens its connection.
struct Opening {
    target: Target,
    reuse: bool,
    retransmit_syn: bool,
}

/// Flips a link's state (off until first flipped) and returns the new state.
fn toggle(states: &mut BTreeMap<Link, bool>, link: Link) -> bool {
    let on = states.entry(link).or_insert(false);
    *on = !*on;
    *on
}
