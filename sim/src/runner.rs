//! The runner: turns each scenario step into commands for the hosts at the step's start.

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    rc::Rc,
};

use proto::tunnel;
use scenario_format::settings::FLOOD_DATAGRAM_BYTES;
use scenario_format::{
    AttackKind, Fault, GatewayAttackKind, PathMode, ResourceAddress, Scenario, Side, Step,
    StrayKind, Target, attack,
    plan::{self, AddressPlan, TURN_PORT},
};
use xdp_fixtures::frame::IcmpError;

use crate::{
    commands::{
        AttackOrder, AttackPlan, ClientCommand, ClientTcpAction, GatewayCommand, Inboxes,
        RelayFrame, ResourceAction, StraySend,
    },
    faults::link_key,
    packets,
    state::Shared,
    wire,
    world::{gateway_socket, link_pairs},
};

/// Turns steps into commands for the hosts, at the step's start time.
///
/// (A `udp-flood` datagram carries `scenario_format::settings::FLOOD_DATAGRAM_BYTES`.)
pub(crate) struct Runner<'a> {
    scenario: &'a Scenario,
    plan: &'a AddressPlan,
    shared: &'a Rc<RefCell<Shared>>,
    inboxes: &'a Inboxes,
    /// (client, domain) -> the proxy index the client's stub resolver handed out.
    proxies: BTreeMap<(usize, String), usize>,
    roams: Vec<u16>,
    /// Per client: its socket index before its last roam (none before the first).
    former_roams: Vec<Option<u16>>,
}

impl<'a> Runner<'a> {
    pub(crate) fn new(
        scenario: &'a Scenario,
        plan: &'a AddressPlan,
        shared: &'a Rc<RefCell<Shared>>,
        inboxes: &'a Inboxes,
    ) -> Self {
        Self {
            scenario,
            plan,
            shared,
            inboxes,
            proxies: BTreeMap::new(),
            roams: vec![0; scenario.topology.clients.len()],
            former_roams: vec![None; scenario.topology.clients.len()],
        }
    }

    fn client_index(&self, name: &str) -> usize {
        self.scenario
            .topology
            .clients
            .iter()
            .position(|c| c.name == name)
            .unwrap_or(0)
    }

    fn resource_index(&self, name: &str) -> usize {
        self.scenario
            .topology
            .resources
            .iter()
            .position(|r| r.name == name)
            .unwrap_or(0)
    }

    fn gateway_of_resource(&self, resource: usize) -> usize {
        let name = &self.scenario.topology.resources[resource].gateway;
        self.scenario
            .topology
            .gateways
            .iter()
            .position(|g| &g.name == name)
            .unwrap_or(0)
    }

    fn tunnel_ip(&self, client: usize, ipv6: bool) -> IpAddr {
        if ipv6 {
            IpAddr::V6(self.plan.tunnel_v6[client])
        } else {
            IpAddr::V4(self.plan.tunnel_v4[client])
        }
    }

    /// The inner destination of a target: the resource's address, or the proxy IP the client's
    /// stub resolver handed out for the domain (mapping it at the gateway on first use).
    fn destination(&mut self, target: &Target) -> IpAddr {
        let client = self.client_index(&target.client);
        let resource = self.resource_index(&target.resource);
        match (
            &self.scenario.topology.resources[resource].address,
            &target.domain,
        ) {
            (ResourceAddress::Cidr(cidr), _) => plan::parse_resource_cidr(cidr)
                .map(|(ip, _)| ip)
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            (ResourceAddress::Dns(_), domain) => self
                .proxy_ip(client, domain.as_deref().unwrap_or_default(), target.ipv6)
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        }
    }

    /// The proxy IP of `domain` for `client`. The client's stub resolver answers the first query
    /// for a name with the next proxy index `n`, for both families (A and AAAA), and the control
    /// plane maps both proxy IPs at once on every gateway that serves a DNS resource matching
    /// the name (docs/harness.md).
    fn proxy_ip(&mut self, client: usize, domain: &str, ipv6: bool) -> Option<IpAddr> {
        let domain = domain.to_ascii_lowercase();
        let index = match self.proxies.get(&(client, domain.clone())) {
            Some(index) => *index,
            None => {
                let gateways: BTreeSet<usize> = self
                    .scenario
                    .topology
                    .resources
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| matches!(&r.address, ResourceAddress::Dns(pattern) if plan::domain_matches(pattern, &domain)))
                    .map(|(resource, _)| self.gateway_of_resource(resource))
                    .collect();
                if gateways.is_empty() {
                    return None;
                }
                let index = self.proxies.keys().filter(|(c, _)| *c == client).count();
                self.proxies.insert((client, domain.clone()), index);
                for gateway in gateways {
                    for v6 in [false, true] {
                        self.to_gateway(
                            gateway,
                            GatewayCommand::MapDns {
                                client,
                                proxy_ip: AddressPlan::proxy_ip(index, v6),
                                domain: domain.clone(),
                            },
                        );
                    }
                }
                index
            }
        };
        Some(AddressPlan::proxy_ip(index, ipv6))
    }

    /// The client's address of connection `conn` (a validated scenario gives it a port).
    fn tcp_src(
        &self,
        client: usize,
        conn: u32,
        chosen_port: Option<u16>,
        ipv6: bool,
    ) -> SocketAddr {
        let port = AddressPlan::tcp_source_port(conn, chosen_port).unwrap_or_default();
        SocketAddr::new(self.tunnel_ip(client, ipv6), port)
    }

    /// The client and inner address of an open connection, from the step that opened it.
    fn connection(&self, conn: u32) -> Option<(usize, SocketAddr, usize)> {
        let (target, src_port) = self.scenario.tcp_open_of(conn)?;
        let client = self.client_index(&target.client);
        let gateway = self.gateway_of_resource(self.resource_index(&target.resource));
        let src = self.tcp_src(client, conn, src_port, target.ipv6);
        Some((client, src, gateway))
    }

    fn to_client(&self, client: usize, command: ClientCommand) {
        self.inboxes.clients[client].push(command);
    }

    fn to_gateway(&self, gateway: usize, command: GatewayCommand) {
        self.inboxes.gateways[gateway].push(command);
    }

    pub(crate) fn apply(&mut self, sim: &mut turmoil::Sim<'_>, index: usize, step: &Step) {
        let at_ms = sim.elapsed().as_millis() as u64;
        self.shared.borrow_mut().journal.trace_at(
            at_ms,
            "runner",
            format!("step {index}: {step:?}"),
        );
        match step {
            Step::Udp { target, bytes } => self.udp(index, target, *bytes),
            Step::ForgedSource { target } => {
                let src_port = AddressPlan::udp_source_port(target.port);
                let src = SocketAddr::new(plan::forged_tunnel_ip(target.ipv6), src_port);
                self.udp_from(index, target, src, FLOOD_DATAGRAM_BYTES);
            }
            Step::UdpFlood { target, flows } => {
                for flow in 0..*flows {
                    let client = self.client_index(&target.client);
                    let src = SocketAddr::new(
                        self.tunnel_ip(client, target.ipv6),
                        AddressPlan::flood_source_port(flow),
                    );
                    self.udp_from(index, target, src, FLOOD_DATAGRAM_BYTES);
                }
            }
            Step::TcpOpen {
                conn,
                target,
                src_port,
            } => self.tcp_open(*conn, target, *src_port),
            Step::TcpRetransmitSyn { conn } => {
                self.client_tcp(*conn, ClientTcpAction::RetransmitSyn)
            }
            Step::TcpLateAck { conn } => self.client_tcp(*conn, ClientTcpAction::LateAck),
            Step::TcpData { conn, from, bytes } => self.tcp_action(
                *conn,
                *from,
                ClientTcpAction::Data(*bytes),
                ResourceAction::Data(*bytes),
            ),
            Step::TcpClose { conn, by } => {
                self.tcp_action(*conn, *by, ClientTcpAction::Close, ResourceAction::Close)
            }
            Step::TcpHalfClose { conn, by } => {
                // The other side first learns to keep its half open, then `by` sends its FIN.
                self.tcp_action(
                    *conn,
                    by.other(),
                    ClientTcpAction::KeepOpen,
                    ResourceAction::KeepOpen,
                );
                self.tcp_action(*conn, *by, ClientTcpAction::Close, ResourceAction::Close);
            }
            Step::TcpSimultaneousClose { conn } => {
                for by in [Side::Client, Side::Resource] {
                    self.tcp_action(*conn, by, ClientTcpAction::Close, ResourceAction::Close);
                }
            }
            Step::TcpReset { conn, by } => {
                self.tcp_action(*conn, *by, ClientTcpAction::Reset, ResourceAction::Reset)
            }
            Step::DnsQuery { client, name } => {
                let client = self.client_index(client);
                self.proxy_ip(client, name, false);
            }
            Step::Path {
                client,
                gateway,
                mode,
            } => self.path(at_ms, client, gateway, *mode),
            Step::Roam { client, back } => {
                let client = self.client_index(client);
                // The client's socket index: its port is TUNNEL_PORT plus this.
                self.former_roams[client] = Some(self.roams[client]);
                self.roams[client] = if *back {
                    self.roams[client].saturating_sub(1)
                } else {
                    self.roams[client] + 1
                };
                self.to_client(client, ClientCommand::Roam { back: *back });
            }
            Step::Grant(grant) => {
                let resource = self.resource_index(&grant.resource);
                self.to_gateway(
                    self.gateway_of_resource(resource),
                    GatewayCommand::Grant {
                        client: self.client_index(&grant.client),
                        resource,
                        filters: grant.filters.clone(),
                    },
                );
            }
            Step::Revoke { client, resource } => {
                let resource = self.resource_index(resource);
                self.to_gateway(
                    self.gateway_of_resource(resource),
                    GatewayCommand::Revoke {
                        client: self.client_index(client),
                        resource,
                    },
                );
            }
            Step::DnsChange { name, addresses } => self.dns_change(name, addresses),
            Step::Fault { between, fault } => self.fault(sim, between, fault),
            Step::GatewayRestart { gateway } => {
                let gateway = self.gateway_index(gateway);
                self.to_gateway(gateway, GatewayCommand::Restart);
            }
            Step::Stray {
                relay,
                kind,
                ipv6,
                allocation,
            } => self.stray(at_ms, relay, *kind, *ipv6, allocation.as_deref()),
            Step::Attack { relay, kind, ipv6 } => self.attack(index, relay, *kind, *ipv6),
            Step::GatewayAttack {
                gateway,
                client,
                kind,
            } => self.gateway_attack(index, gateway, client, *kind),
            Step::Idle { .. } => {}
        }
    }

    /// Relay `relay`'s address of one family, if it has one.
    fn relay_ip(&self, relay: &str, ipv6: bool) -> Option<IpAddr> {
        let index = self
            .scenario
            .topology
            .relays
            .iter()
            .position(|r| r.name == relay)?;
        let addresses = &self.plan.relays[index];
        if ipv6 {
            addresses.v6.map(IpAddr::V6)
        } else {
            addresses.v4.map(IpAddr::V4)
        }
    }

    /// The internet host sends a stray datagram of `kind` to the relay, in one family; to an
    /// allocation's relayed address, the host's first allocation's (docs/harness.md).
    fn stray(
        &self,
        at_ms: u64,
        relay: &str,
        kind: StrayKind,
        ipv6: bool,
        allocation: Option<&str>,
    ) {
        let ip = self.relay_ip(relay, ipv6);
        let relayed_port = allocation.map(|host| {
            self.shared
                .borrow()
                .relayed
                .first
                .get(host)
                .and_then(|relayed| relayed.iter().find(|a| a.is_ipv6() == ipv6))
                .map(SocketAddr::port)
        });
        let (Some(ip), Some(port)) = (ip, relayed_port.unwrap_or(Some(0))) else {
            self.shared.borrow_mut().journal.trace_at(
                at_ms,
                "runner",
                format!(
                    "stray {} to {relay} not sent: no address or allocation",
                    kind.as_str()
                ),
            );
            return;
        };
        let (src, dst) = (
            kind.source(ip),
            SocketAddr::new(ip, kind.destination_port(port)),
        );
        if kind.is_icmp() {
            // From the internet host, about the datagram dst -> src: it arrives after the
            // internet host's link latency, as its datagrams do.
            let error = match kind {
                StrayKind::IcmpTooBig => IcmpError::TooBig { mtu: 1280 },
                _ => IcmpError::PortUnreachable,
            };
            self.inboxes.relay_frames.push(RelayFrame {
                sent_ms: at_ms,
                at_ms: at_ms + u64::from(self.scenario.topology.latency.default_ms),
                to: ip,
                about: (dst, src),
                kind: kind.as_str(),
                frame: xdp_fixtures::frame::icmp_error(error, src.ip(), dst, src, &kind.payload()),
            });
            return;
        }
        self.inboxes.internet.push(StraySend {
            src,
            dst,
            payload: kind.payload(),
        });
    }

    /// The attacker host plays an attack on the relay's TURN address of one family.
    fn attack(&self, step: usize, relay: &str, kind: AttackKind, ipv6: bool) {
        let ip = self.relay_ip(relay, ipv6);
        if let Some(ip) = ip {
            self.inboxes.attacker.push(AttackOrder {
                step,
                target: format!("relay {relay}"),
                plan: AttackPlan::Relay {
                    kind,
                    server: SocketAddr::new(ip, TURN_PORT),
                },
            });
        }
    }

    /// The attacker host sends a gateway one hostile datagram about a client's session, built
    /// here: the harness holds the session keys, and sees the wire (for a frame to replay).
    fn gateway_attack(&self, step: usize, gateway: &str, client: &str, kind: GatewayAttackKind) {
        let g = self.gateway_index(gateway);
        let c = self.client_index(client);
        let to = gateway_socket(self.plan, g);
        let session = AddressPlan::session(c);
        let key = wire::session_key(c);
        let tunnel_ip = IpAddr::V4(self.plan.tunnel_v4[c]);
        let resource = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 9);
        let header = |session_id, counter| tunnel::FrameHeader {
            session_id,
            counter,
        };
        let payload = match kind {
            GatewayAttackKind::ForgedMac => {
                let inner = packets::udp(SocketAddr::new(tunnel_ip, 4444), resource, b"forged");
                let mut frame = tunnel::seal(
                    &key,
                    tunnel::Direction::ToGateway,
                    header(session.id, 1 << 40),
                    &inner,
                );
                if let Some(last) = frame.last_mut() {
                    *last ^= 0x5a;
                }
                Some(frame)
            }
            GatewayAttackKind::UnknownSession => {
                let inner = packets::udp(SocketAddr::new(tunnel_ip, 4444), resource, b"stranger");
                Some(tunnel::seal(
                    &tunnel::SessionKey::new([0xee; 32]),
                    tunnel::Direction::ToGateway,
                    header(attack::UNKNOWN_SESSION, 1),
                    &inner,
                ))
            }
            GatewayAttackKind::ReflectedFrame => {
                let inner = packets::udp(resource, SocketAddr::new(tunnel_ip, 4444), b"reflected");
                Some(tunnel::seal(
                    &key,
                    tunnel::Direction::ToClient,
                    header(session.id, 1),
                    &inner,
                ))
            }
            GatewayAttackKind::ReplayedFrame => self.last_frame_taken(gateway, session.id),
            GatewayAttackKind::ReplayFromFormerAddress => {
                let former = self.former_roams[c].unwrap_or(self.roams[c]);
                let former = self.plan.client_socket(c, former);
                let plan = AttackPlan::Gateway {
                    kind,
                    to,
                    payload: self.last_frame_taken(gateway, session.id),
                    // A client of the other family than the gateway has no address the
                    // gateway could hear from: the attacker sends from its own.
                    spoof_from: (former.is_ipv6() == to.is_ipv6()).then_some(former),
                };
                return self.order_attack(step, gateway, plan);
            }
            GatewayAttackKind::DnsWrongId
            | GatewayAttackKind::DnsWrongName
            | GatewayAttackKind::DnsWrongPort
            | GatewayAttackKind::DnsWrongSource => {
                let plan = AttackPlan::DnsForgery {
                    kind,
                    gateway: gateway.to_owned(),
                    gateway_ip: to.ip(),
                    forge_by_ms: attack::dns_race_deadline(
                        &self.shared.borrow().journal.timeline,
                        step,
                    ),
                };
                return self.order_attack(step, gateway, plan);
            }
        };
        let plan = AttackPlan::Gateway {
            kind,
            to,
            payload,
            spoof_from: None,
        };
        self.order_attack(step, gateway, plan);
    }

    /// Hands the attacker host an attack of step `step` on gateway `gateway`.
    fn order_attack(&self, step: usize, gateway: &str, plan: AttackPlan) {
        self.inboxes.attacker.push(AttackOrder {
            step,
            target: format!("gateway {gateway}"),
            plan,
        });
    }

    /// The last tunnel frame of session `session_id` that gateway `gateway`'s host took off
    /// its socket (directly or inside ChannelData) from anyone but the attacker, as it was on
    /// the wire.
    fn last_frame_taken(&self, gateway: &str, session_id: u32) -> Option<Vec<u8>> {
        let shared = self.shared.borrow();
        shared.journal.hops.iter().rev().find_map(|hop| {
            if hop.host != gateway
                || hop.direction != wire::Direction::Received
                || plan::is_attacker(hop.src.ip())
            {
                return None;
            }
            let frame = wire::tunnel_frame_in(&hop.payload)?;
            let header = tunnel::peek_header(&frame).ok()?;
            (header.session_id == session_id).then_some(frame)
        })
    }

    fn gateway_index(&self, name: &str) -> usize {
        self.scenario
            .topology
            .gateways
            .iter()
            .position(|g| g.name == name)
            .unwrap_or(0)
    }

    /// The client sends a UDP datagram of `bytes` bytes (each the step's index) to the target,
    /// from a source port the destination port fixes.
    fn udp(&mut self, index: usize, target: &Target, bytes: u16) {
        let client = self.client_index(&target.client);
        let src = SocketAddr::new(
            self.tunnel_ip(client, target.ipv6),
            AddressPlan::udp_source_port(target.port),
        );
        self.udp_from(index, target, src, bytes);
    }

    /// One UDP datagram of the target's client from the inner source `src`.
    fn udp_from(&mut self, index: usize, target: &Target, src: SocketAddr, bytes: u16) {
        let client = self.client_index(&target.client);
        let gateway = self.gateway_of_resource(self.resource_index(&target.resource));
        let dst = SocketAddr::new(self.destination(target), target.port);
        self.to_client(
            client,
            ClientCommand::Udp {
                gateway,
                src,
                dst,
                payload: vec![(index % 251) as u8; usize::from(bytes)],
            },
        );
    }

    fn tcp_open(&mut self, conn: u32, target: &Target, src_port: Option<u16>) {
        let client = self.client_index(&target.client);
        let gateway = self.gateway_of_resource(self.resource_index(&target.resource));
        let dst = SocketAddr::new(self.destination(target), target.port);
        let src = self.tcp_src(client, conn, src_port, target.ipv6);
        // On a reused source port, what the resource kept of the earlier connection is gone.
        self.to_gateway(
            gateway,
            GatewayCommand::Resource {
                client: src,
                action: ResourceAction::Forget,
            },
        );
        self.to_client(
            client,
            ClientCommand::TcpOpen {
                gateway,
                conn,
                src,
                dst,
            },
        );
    }

    /// The DNS server answers `name` with new addresses from now on, with the record's TTL.
    fn dns_change(&self, name: &str, addresses: &[IpAddr]) {
        let mut shared = self.shared.borrow_mut();
        let ttl = shared
            .dns_records
            .get(&name.to_ascii_lowercase())
            .map_or(300, |(_, ttl)| *ttl);
        shared
            .dns_records
            .insert(name.to_ascii_lowercase(), (addresses.to_vec(), ttl));
    }

    /// Partitions and drop-next act where a host sends (`Shared::link_takes`); holds use
    /// turmoil's, which keeps datagrams until the release.
    fn fault(&self, sim: &mut turmoil::Sim<'_>, between: &[String; 2], fault: &Fault) {
        {
            let mut shared = self.shared.borrow_mut();
            let faults = shared
                .links
                .faults
                .entry(link_key(&between[0], &between[1]))
                .or_default();
            faults.state.apply(fault);
            if *fault == Fault::Release {
                faults.held.clear();
            }
        }
        for (a, b) in link_pairs(self.scenario, self.plan, between) {
            match fault {
                Fault::Hold => {
                    sim.hold(a, b);
                }
                Fault::Release => {
                    sim.release(a, b);
                }
                Fault::Partition
                | Fault::Heal
                | Fault::DropNext(_)
                | Fault::DropBindingRequests => {}
            }
        }
    }

    /// Tells both ends of a client-gateway pair where to send and whether through their relay.
    fn path(&self, at_ms: u64, client: &str, gateway: &str, mode: PathMode) {
        let c = self.client_index(client);
        let g = self.gateway_index(gateway);
        let relayed = self.shared.borrow().relayed.current.clone();
        // A host's relayed address in one family (docs/harness.md, "Addresses").
        let of = |host: &str, v6: bool| -> Option<SocketAddr> {
            relayed
                .get(host)?
                .iter()
                .find(|address| address.is_ipv6() == v6)
                .copied()
        };
        let client_socket = self.plan.client_socket(c, self.roams[c]);
        let gateway_socket = gateway_socket(self.plan, g);
        // (client's target, client via its relay, address the gateway answers, gateway via relay)
        let plan = match mode {
            PathMode::Direct => Some((gateway_socket, false, client_socket, false)),
            PathMode::ClientRelayed => {
                of(client, gateway_socket.is_ipv6()).map(|cr| (gateway_socket, true, cr, false))
            }
            PathMode::GatewayRelayed => {
                of(gateway, client_socket.is_ipv6()).map(|gr| (gr, false, client_socket, true))
            }
            PathMode::SameRelay | PathMode::DifferentRelays => [false, true]
                .into_iter()
                .find_map(|v6| Some((of(client, v6)?, of(gateway, v6)?)))
                .map(|(cr, gr)| (gr, true, cr, true)),
        };
        // No allocation (lost to a fault across a refresh, say): the hosts keep their old
        // path. If the model predicted the new one, the records will show it.
        let Some((target, client_via, remote, gateway_via)) = plan else {
            self.shared.borrow_mut().journal.trace_at(
                at_ms,
                "runner",
                format!(
                    "path {mode:?} for {client} and {gateway} not taken: an allocation is missing"
                ),
            );
            return;
        };
        self.to_client(
            c,
            ClientCommand::Path {
                gateway: g,
                target,
                via_relay: client_via,
            },
        );
        self.to_gateway(
            g,
            GatewayCommand::Path {
                remote,
                via_relay: gateway_via,
            },
        );
    }

    fn client_tcp(&self, conn: u32, action: ClientTcpAction) {
        if let Some((client, src, _)) = self.connection(conn) {
            self.to_client(client, ClientCommand::Tcp { src, action });
        }
    }

    fn tcp_action(
        &self,
        conn: u32,
        side: Side,
        client_action: ClientTcpAction,
        resource_action: ResourceAction,
    ) {
        let Some((client, src, gateway)) = self.connection(conn) else {
            return;
        };
        match side {
            Side::Client => self.to_client(
                client,
                ClientCommand::Tcp {
                    src,
                    action: client_action,
                },
            ),
            Side::Resource => self.to_gateway(
                gateway,
                GatewayCommand::Resource {
                    client: src,
                    action: resource_action,
                },
            ),
        }
    }
}
