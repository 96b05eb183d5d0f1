//! A gateway host: the sans-IO gateway behind its tunnel socket (directly, or through its own
//! relay), and its TUN link to the resource responder.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    rc::Rc,
    time::{Duration, Instant},
};

use gateway::{
    ClientConfig, DomainPattern, Filter, Gateway, GatewayConfig, IpCidr, PortRange, Resource,
    ResourceAddress as GatewayResourceAddress, Transmit,
};
use peer::{Endpoint, TurnClient};
use proto::flow::{ClientId, OuterContext, ResourceId, TimeOrigin, UtcTime};
use scenario::{
    ResourceAddress, Scenario,
    plan::{self, AddressPlan, TUNNEL_PORT},
};
use turmoil::net::UdpSocket;

use crate::{
    packets::{self, Inner},
    wire,
    tcp::TcpSide,
    world::{
        GatewayCommand, ORIGIN_UNIX_SECS, ResourceAction, Shared, TUN_LATENCY_MS, deadline_ms,
        end_turn, flush_turn, now_instant, now_ms, send_through, session_id, session_key,
        unspecified,
    },
};

pub(crate) fn build_gateway(
    scenario: &Scenario,
    plan: &AddressPlan,
    index: usize,
    origin: Instant,
    seed: u64,
) -> Gateway {
    let ip = plan.gateways[index].preferred();
    let dns_server = SocketAddr::new(IpAddr::V4(plan::DNS_SERVER_V4), 53);
    let mut config = GatewayConfig::new(
        TimeOrigin {
            instant: origin,
            unix: UtcTime::from_unix_secs(ORIGIN_UNIX_SECS),
        },
        dns_server,
        SocketAddr::new(ip, TUNNEL_PORT),
    );
    config.hash_seed = seed;
    if let Some(idle) = scenario.topology.idle_timeout_s {
        config.idle_timeout = Duration::from_secs(idle);
    }
    let mut gateway = Gateway::new(config);
    let name = &scenario.topology.gateways[index].name;
    for client in 0..scenario.topology.clients.len() {
        let _ = gateway.add_client(ClientConfig {
            id: ClientId(client as u32),
            session_id: session_id(client),
            key: session_key(client),
            tunnel_v4: plan.tunnel_v4[client],
            tunnel_v6: plan.tunnel_v6[client],
        });
    }
    for (resource, spec) in scenario.topology.resources.iter().enumerate() {
        if &spec.gateway != name {
            continue;
        }
        let address = match &spec.address {
            ResourceAddress::Cidr(cidr) => cidr
                .parse::<IpCidr>()
                .map(GatewayResourceAddress::Cidr)
                .ok(),
            ResourceAddress::Dns(pattern) => pattern
                .parse::<DomainPattern>()
                .map(GatewayResourceAddress::Dns)
                .ok(),
        };
        if let Some(address) = address {
            let _ = gateway.add_resource(Resource {
                id: ResourceId(resource as u32),
                address,
            });
        }
    }
    for grant in &scenario.topology.grants {
        let client = scenario
            .topology
            .clients
            .iter()
            .position(|c| c.name == grant.client);
        let resource = scenario
            .topology
            .resources
            .iter()
            .position(|r| r.name == grant.resource);
        if let (Some(client), Some(resource)) = (client, resource)
            && scenario.topology.resources[resource].gateway == *name
        {
            let _ = gateway.grant(
                ClientId(client as u32),
                ResourceId(resource as u32),
                filters(&grant.filters),
            );
        }
    }
    gateway
}

fn filters(texts: &[String]) -> Vec<Filter> {
    texts
        .iter()
        .filter_map(|text| plan::parse_filter(text).ok())
        .map(|filter| match filter {
            plan::Filter::Tcp { ports } => Filter::Tcp(PortRange {
                first: ports.0,
                last: ports.1,
            }),
            plan::Filter::Udp { ports } => Filter::Udp(PortRange {
                first: ports.0,
                last: ports.1,
            }),
            plan::Filter::Icmp => Filter::Icmp,
        })
        .collect()
}

/// The gateway host: its UDP socket, the gateway, and the TUN link to the resource responder.
struct GatewayHost {
    name: String,
    gateway: Gateway,
    origin: Instant,
    /// Control calls applied since the start, replayed after a restart.
    control_log: Vec<GatewayCommand>,
    /// Packets on the TUN link: (due ms, sequence) -> (towards the resource?, packet).
    tun_link: BTreeMap<(u64, u64), (bool, Vec<u8>)>,
    tun_sequence: u64,
    /// The resource side of each TCP connection, by the client's inner address.
    resource_tcp: BTreeMap<SocketAddr, (SocketAddr, TcpSide)>,
    endpoint: Endpoint,
}

impl GatewayHost {
    /// Executes a control call and remembers it for a restart.
    fn apply(&mut self, command: GatewayCommand, now: Instant, shared: &Rc<RefCell<Shared>>) {
        self.execute(&command, now, shared);
        if matches!(
            command,
            GatewayCommand::Grant { .. }
                | GatewayCommand::Revoke { .. }
                | GatewayCommand::MapDns { .. }
        ) {
            self.control_log.push(command);
        }
    }

    fn execute(&mut self, command: &GatewayCommand, now: Instant, shared: &Rc<RefCell<Shared>>) {
        let result = match command {
            GatewayCommand::Grant {
                client,
                resource,
                filters: texts,
            } => self
                .gateway
                .grant(
                    ClientId(*client as u32),
                    ResourceId(*resource as u32),
                    filters(texts),
                )
                .map_err(|e| e.to_string()),
            GatewayCommand::Revoke { client, resource } => self
                .gateway
                .revoke(ClientId(*client as u32), ResourceId(*resource as u32), now)
                .map_err(|e| e.to_string()),
            GatewayCommand::MapDns {
                client,
                proxy_ip,
                domain,
            } => self
                .gateway
                .map_dns(ClientId(*client as u32), *proxy_ip, domain, now)
                .map_err(|e| e.to_string()),
            GatewayCommand::Resource { client, action } => {
                self.resource_acts(*client, *action, shared);
                Ok(())
            }
            GatewayCommand::Restart | GatewayCommand::Shutdown => {
                self.gateway.shutdown(now);
                Ok(())
            }
            GatewayCommand::Path { remote, via_relay } => self
                .endpoint
                .route_via_relay(*remote, *via_relay, now)
                .map_err(|e| e.to_string()),
        };
        // A refused call (revoking a grant that is not there) is the gateway answering a
        // control plane mistake correctly: the trace shows it; nothing else changes.
        if let Err(error) = result {
            shared.borrow_mut().trace(
                &self.name,
                format!("control call {command:?} refused: {error}"),
            );
        }
    }

    fn resource_acts(
        &mut self,
        client: SocketAddr,
        action: ResourceAction,
        shared: &Rc<RefCell<Shared>>,
    ) {
        // A connection whose SYN never reached the resource (dropped, denied) has no resource
        // side: the resource has nothing to send on it.
        let Some((resource, side)) = self.resource_tcp.get_mut(&client) else {
            shared.borrow_mut().trace(
                &format!("{}/tun", self.name),
                format!("resource has no connection from {client}"),
            );
            return;
        };
        let segment = match action {
            ResourceAction::Data(bytes) => side.data(bytes),
            ResourceAction::Close => side.fin(),
            ResourceAction::Reset => side.rst(),
        };
        let packet = packets::tcp(*resource, client, segment, 0x5A);
        self.send_on_tun(false, packet, now_ms());
    }

    fn send_on_tun(&mut self, towards_resource: bool, packet: Vec<u8>, at_ms: u64) {
        self.tun_sequence += 1;
        self.tun_link.insert(
            (at_ms + TUN_LATENCY_MS, self.tun_sequence),
            (towards_resource, packet),
        );
    }

    /// The resource's script: echo UDP, answer TCP as docs/harness.md says.
    fn resource_receives(&mut self, packet: &[u8], shared: &Rc<RefCell<Shared>>) {
        let inner = packets::parse(packet);
        shared.borrow_mut().trace(
            &format!("{}/tun", self.name),
            format!("resource got {inner}"),
        );
        let reply = match inner {
            Inner::Udp { src, dst, payload } => Some(packets::udp(dst, src, &payload)),
            Inner::Tcp { src, dst, segment } => {
                let (_, side) = self
                    .resource_tcp
                    .entry(src)
                    .or_insert_with(|| (dst, TcpSide::resource()));
                if segment.flags.syn && !segment.flags.ack {
                    *side = TcpSide::resource();
                }
                side.answer(segment)
                    .map(|answer| packets::tcp(dst, src, answer, 0x5A))
            }
            _ => None,
        };
        if let Some(reply) = reply {
            self.send_on_tun(false, reply, now_ms());
        }
    }
}

pub(crate) fn add_gateway(
    sim: &mut turmoil::Sim<'_>,
    shared: &Rc<RefCell<Shared>>,
    scenario: &Scenario,
    plan: &AddressPlan,
    index: usize,
    seed: u64,
    turn: Option<peer::TurnClientConfig>,
) {
    let shared = shared.clone();
    let scenario = scenario.clone();
    let plan = plan.clone();
    let ip = plan.gateways[index].preferred();
    sim.host(ip, move || {
        let shared = shared.clone();
        let scenario = scenario.clone();
        let plan = plan.clone();
        let turn = turn.clone();
        async move {
            let origin = shared.borrow().origin;
            let local = SocketAddr::new(ip, TUNNEL_PORT);
            let socket = UdpSocket::bind(SocketAddr::new(unspecified(ip), TUNNEL_PORT)).await?;
            let name = scenario.topology.gateways[index].name.clone();
            let mut turn = turn.map(TurnClient::new);
            if let Some(turn) = turn.as_mut() {
                turn.allocate(now_instant(origin));
            }
            let dns_server = SocketAddr::new(IpAddr::V4(plan::DNS_SERVER_V4), 53);
            let mut host = GatewayHost {
                name: name.clone(),
                gateway: build_gateway(&scenario, &plan, index, origin, seed),
                origin,
                control_log: Vec::new(),
                tun_link: BTreeMap::new(),
                tun_sequence: 0,
                resource_tcp: BTreeMap::new(),
                endpoint: Endpoint::new(local, turn),
            };
            let mut buf = vec![0u8; 65536];
            loop {
                let now = now_instant(host.origin);
                // Deadlines first, then control, then the TUN link, then the network.
                if host
                    .gateway
                    .poll_timeout()
                    .is_some_and(|deadline| deadline <= now)
                {
                    host.gateway.handle_timeout(now);
                }
                if let Some(turn) = host.endpoint.turn_mut()
                    && turn.poll_timeout().is_some_and(|deadline| deadline <= now)
                {
                    turn.handle_timeout(now);
                }
                let commands: Vec<GatewayCommand> = shared.borrow_mut().gateway_commands[index]
                    .drain(..)
                    .collect();
                for command in commands {
                    let restart = matches!(command, GatewayCommand::Restart);
                    host.apply(command, now, &shared);
                    if restart {
                        // A fresh gateway with the same configuration and the control calls
                        // made so far; its flows start empty.
                        collect_flows(&mut host.gateway, &shared);
                        host.gateway = build_gateway(&scenario, &plan, index, origin, seed);
                        for replay in host.control_log.clone() {
                            host.execute(&replay, now, &shared);
                        }
                    }
                }
                let due: Vec<(u64, u64)> = host
                    .tun_link
                    .range(..=(now_ms(), u64::MAX))
                    .map(|(key, _)| *key)
                    .collect();
                for key in due {
                    let Some((towards_resource, packet)) = host.tun_link.remove(&key) else {
                        continue;
                    };
                    if towards_resource {
                        host.resource_receives(&packet, &shared);
                    } else if let Err(reason) = host.gateway.handle_tun_packet(&packet, now) {
                        shared
                            .borrow_mut()
                            .trace(&name, format!("dropped from TUN: {reason:?}"));
                    }
                }
                while let Ok((len, from)) = socket.try_recv_from(&mut buf) {
                    wire::received(&shared, &name, from, local, &buf[..len], None);
                    if from == dns_server {
                        if let Err(reason) =
                            host.gateway.handle_input(from, local, &buf[..len], now)
                        {
                            shared
                                .borrow_mut()
                                .trace(&name, format!("DNS answer dropped: {reason:?}"));
                        }
                        continue;
                    }
                    let arrival = match host.endpoint.receive(from, &buf[..len], now) {
                        Ok(Some(arrival)) => arrival,
                        Ok(None) => continue,
                        Err(error) => {
                            shared
                                .borrow_mut()
                                .trace(&name, format!("not for the tunnel from {from}: {error}"));
                            continue;
                        }
                    };
                    let outer = OuterContext {
                        remote: arrival.remote,
                        local: arrival.local,
                    };
                    shared.borrow_mut().trace(
                        &name,
                        format!(
                            "frame of {} bytes from {} at {}",
                            arrival.payload.len(),
                            outer.remote,
                            outer.local
                        ),
                    );
                    if let Err(reason) =
                        host.gateway
                            .handle_tunnel_frame(outer, &arrival.payload, now)
                    {
                        shared
                            .borrow_mut()
                            .trace(&name, format!("dropped: {reason:?}"));
                    }
                }
                flush_gateway(&mut host, &socket, local, dns_server, &shared);
                let turn = host.endpoint.turn_mut().and_then(|turn| turn.poll_timeout());
                let deadline = [host.gateway.poll_timeout(), turn]
                    .into_iter()
                    .flatten()
                    .map(|deadline| deadline_ms(origin, deadline))
                    .chain(host.tun_link.keys().next().map(|(due, _)| *due))
                    .min();
                end_turn(&shared, &name, deadline).await;
            }
        }
    });
}

fn collect_flows(gateway: &mut Gateway, shared: &Rc<RefCell<Shared>>) {
    while let Some(record) = gateway.poll_flow_record() {
        shared.borrow_mut().flows.push(record);
    }
}

/// Sends what the gateway queued (through its relay where the path says so) and collects its
/// flow records.
fn flush_gateway(
    host: &mut GatewayHost,
    socket: &UdpSocket,
    local: SocketAddr,
    dns_server: SocketAddr,
    shared: &Rc<RefCell<Shared>>,
) {
    while let Some(transmit) = host.gateway.poll_transmit() {
        match transmit {
            Transmit::Udp { dst, payload, src } => {
                if dst == dns_server {
                    if src != local {
                        shared
                            .borrow_mut()
                            .errors
                            .push(format!("{}: DNS query from {src}, not {local}", host.name));
                    }
                    wire::send(socket, shared, &host.name, local, dst, &payload);
                    continue;
                }
                let what = format!("frame of {} bytes", payload.len());
                send_through(
                    &mut host.endpoint,
                    socket,
                    shared,
                    &host.name,
                    dst,
                    &payload,
                    &what,
                );
            }
            Transmit::Tun(packet) => {
                shared.borrow_mut().trace(
                    &format!("{}/tun", host.name),
                    format!("to resource: {}", packets::parse(&packet)),
                );
                host.send_on_tun(true, packet, now_ms());
            }
        }
    }
    while host.gateway.poll_event().is_some() {}
    flush_turn(&mut host.endpoint, socket, shared, &host.name);
    collect_flows(&mut host.gateway, shared);
}
