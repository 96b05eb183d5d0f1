//! A gateway host: the sans-IO gateway behind its tunnel socket (directly, or through its own
//! relay), and its TUN link to the resource responder.

use std::{
    cell::RefCell,
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    rc::Rc,
    time::{Duration, Instant},
};

use gateway::{
    ClientConfig, DomainPattern, DropReason, DroppedPacket, Event, Filter, Gateway, GatewayConfig,
    IpCidr, PortRange, Resource, ResourceAddress as GatewayResourceAddress, Transmit,
};
use observation::{AttackAnswer, DropPlace, Packet};
use proto::flow::{ClientId, OuterContext, ResourceId, TimeOrigin, UtcTime};
use scenario_format::{
    ResourceAddress, Scenario,
    plan::{self, AddressPlan, TUNNEL_PORT},
    settings::{
        DEFAULT_IDLE_TIMEOUT_S, DNS_MAX_TTL_S, DNS_MIN_TTL_S, DNS_QUEUE_LIMIT,
        GATEWAY_MAX_FLOWS_PER_CLIENT,
    },
    timing::ORIGIN_UNIX_SECS,
};
use turmoil::net::UdpSocket;
use turn_client::{Endpoint, TurnClient};

use crate::{
    clock::{deadline_ms, end_turn, now_instant, now_ms},
    commands::{GatewayCommand, Inbox},
    endpoint_io::{flush_turn, receive_through, send_through, unspecified},
    resource_host::ResourceSide,
    state::Shared,
    wire,
    world::World,
};

/// Gateway `index` as the control plane configures it: its settings, every client's session,
/// the resources it serves and the grants on them.
pub(crate) fn build_gateway(
    scenario: &Scenario,
    plan: &AddressPlan,
    index: usize,
    origin: Instant,
    seed: u64,
) -> Gateway {
    let mut gateway = Gateway::new(gateway_config(scenario, plan, index, origin, seed));
    for client in 0..scenario.topology.clients.len() {
        let _ = gateway.add_client(ClientConfig {
            id: ClientId(client as u32),
            session_id: AddressPlan::session(client).id,
            key: wire::session_key(client),
            tunnel_v4: plan.tunnel_v4[client],
            tunnel_v6: plan.tunnel_v6[client],
        });
    }
    let name = &scenario.topology.gateways[index].name;
    add_resources(&mut gateway, scenario, name);
    add_grants(&mut gateway, scenario, name);
    gateway
}

/// The gateway's settings: every one the model predicts from is set here from the one
/// definition it uses (`scenario_format::settings`).
fn gateway_config(
    scenario: &Scenario,
    plan: &AddressPlan,
    index: usize,
    origin: Instant,
    seed: u64,
) -> GatewayConfig {
    let ip = plan.gateways[index].preferred();
    let mut config = GatewayConfig::new(
        TimeOrigin {
            instant: origin,
            unix: UtcTime::from_unix_secs(ORIGIN_UNIX_SECS),
        },
        plan::dns_server(ip),
        SocketAddr::new(ip, TUNNEL_PORT),
    );
    config.hash_seed = seed;
    config.idle_timeout = Duration::from_secs(
        scenario
            .topology
            .idle_timeout_s
            .unwrap_or(DEFAULT_IDLE_TIMEOUT_S),
    );
    config.dns_min_ttl = Duration::from_secs(DNS_MIN_TTL_S);
    config.dns_max_ttl = Duration::from_secs(DNS_MAX_TTL_S);
    config.dns_queue_limit = DNS_QUEUE_LIMIT;
    config.dns_source_ports = Some(plan::GATEWAY_DNS_PORTS);
    config.max_flows_per_client = GATEWAY_MAX_FLOWS_PER_CLIENT;
    config
}

/// The resources behind the gateway named `name` (resource ids are topology indexes).
fn add_resources(gateway: &mut Gateway, scenario: &Scenario, name: &str) {
    for (resource, spec) in scenario.topology.resources.iter().enumerate() {
        if spec.gateway != name {
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
}

/// The topology's grants on resources behind the gateway named `name`.
fn add_grants(gateway: &mut Gateway, scenario: &Scenario, name: &str) {
    let topology = &scenario.topology;
    for grant in &topology.grants {
        let client = topology.clients.iter().position(|c| c.name == grant.client);
        let resource = topology
            .resources
            .iter()
            .position(|r| r.name == grant.resource);
        if let (Some(client), Some(resource)) = (client, resource)
            && topology.resources[resource].gateway == name
        {
            let _ = gateway.grant(
                ClientId(client as u32),
                ResourceId(resource as u32),
                filters(&grant.filters),
            );
        }
    }
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

/// The gateway host: its UDP socket's endpoint, the gateway, and the TUN link to the resource
/// responder.
struct GatewayHost {
    name: String,
    index: usize,
    gateway: Gateway,
    /// What the gateway asked to send, in its order, until the end of the turn.
    outbox: VecDeque<Transmit>,
    origin: Instant,
    /// Control calls applied since the start, replayed after a restart.
    control_log: Vec<GatewayCommand>,
    resource: ResourceSide,
    endpoint: Endpoint,
    /// The sockets of the DNS source ports ([`plan::GATEWAY_DNS_PORTS`], in order).
    dns_sockets: Vec<UdpSocket>,
    /// While the gateway takes one of the attacker's datagrams: its drops are the attack's
    /// answer (`Shared::gateway_verdicts`), not drops of the traffic the model predicts.
    from_attacker: bool,
}

impl GatewayHost {
    /// Calls into the gateway, then records what the call did: every drop it reports (checked
    /// against its drop counters), its other events, and what it wants sent.
    fn call<T>(&mut self, shared: &Rc<RefCell<Shared>>, f: impl FnOnce(&mut Gateway) -> T) -> T {
        let before = self.gateway.drop_counters().clone();
        let result = f(&mut self.gateway);
        self.outbox
            .extend(std::iter::from_fn(|| self.gateway.poll_transmit()));
        let mut reported: BTreeMap<DropReason, u64> = BTreeMap::new();
        let mut shared = shared.borrow_mut();
        while let Some(event) = self.gateway.poll_event() {
            match event {
                Event::PacketDropped {
                    reason,
                    client,
                    packet,
                } => {
                    *reported.entry(reason).or_default() += 1;
                    let packet = observed_packet(&packet);
                    shared
                        .journal
                        .trace(&self.name, format!("dropped ({reason}): {packet}"));
                    let place = DropPlace::Gateway {
                        gateway: self.index as u32,
                        client,
                    };
                    if self.from_attacker {
                        continue;
                    }
                    shared.journal.dropped(
                        now_ms(),
                        place,
                        observation::DropReason::Gateway(reason),
                        packet,
                    );
                }
                // The trace shows every other event (flow started, client roamed, DNS answers).
                other => shared
                    .journal
                    .trace(&self.name, format!("event: {other:?}")),
            }
        }
        // The gateway's counters and its drop events must tell the same story.
        for (reason, count) in self.gateway.drop_counters().iter() {
            let counted = count - before.get(reason);
            let events = reported.get(&reason).copied().unwrap_or(0);
            if counted != events {
                shared.journal.errors.push(format!(
                    "{}: the gateway counted {counted} drop(s) for {reason} but reported {events}",
                    self.name
                ));
            }
        }
        result
    }

    /// A control-plane call (its refusal is an answer, not a drop).
    fn control<E: std::fmt::Display>(
        &mut self,
        shared: &Rc<RefCell<Shared>>,
        f: impl FnOnce(&mut Gateway) -> Result<(), E>,
    ) -> Result<(), String> {
        self.call(shared, |gateway| {
            f(gateway).map_err(|error| error.to_string())
        })
    }

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
            } => self.control(shared, |gateway| {
                gateway.grant(
                    ClientId(*client as u32),
                    ResourceId(*resource as u32),
                    filters(texts),
                )
            }),
            GatewayCommand::Revoke { client, resource } => self.control(shared, |gateway| {
                gateway.revoke(ClientId(*client as u32), ResourceId(*resource as u32), now)
            }),
            GatewayCommand::MapDns {
                client,
                proxy_ip,
                domain,
            } => self.control(shared, |gateway| {
                gateway.map_dns(ClientId(*client as u32), *proxy_ip, domain, now)
            }),
            GatewayCommand::Resource { client, action } => {
                self.resource.acts(*client, *action, shared);
                Ok(())
            }
            GatewayCommand::Restart | GatewayCommand::Shutdown => {
                self.call(shared, |gateway| gateway.shutdown(now));
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
            shared.borrow_mut().journal.trace(
                &self.name,
                format!("control call {command:?} refused: {error}"),
            );
        }
    }

    /// One turn, in a fixed order: deadlines, then control, then the TUN link, then the
    /// network; then everything queued goes out.
    fn take_turn(
        &mut self,
        context: &HostContext,
        socket: &UdpSocket,
        buf: &mut [u8],
        shared: &Rc<RefCell<Shared>>,
    ) {
        let now = now_instant(self.origin);
        if self
            .gateway
            .poll_timeout()
            .is_some_and(|deadline| deadline <= now)
        {
            self.call(shared, |gateway| gateway.handle_timeout(now));
        }
        if let Some(turn) = self.endpoint.turn_mut()
            && turn.poll_timeout().is_some_and(|deadline| deadline <= now)
        {
            turn.handle_timeout(now);
        }
        for command in context.inbox.take_all() {
            self.take_command(command, context, now, shared);
        }
        for (towards_resource, packet) in self.resource.due(now_ms()) {
            if towards_resource {
                self.resource.receives(&packet, shared);
            } else {
                let _ = self.call(shared, |gateway| gateway.handle_tun_packet(&packet, now));
            }
        }
        while let Ok((len, from)) = socket.try_recv_from(buf) {
            self.receive(&buf[..len], from, context, now, shared);
        }
        for (index, port) in plan::GATEWAY_DNS_PORTS.enumerate() {
            let local = SocketAddr::new(context.local.ip(), port);
            while let Ok((len, from)) = self.dns_sockets[index].try_recv_from(buf) {
                wire::received(shared, &self.name, from, local, &buf[..len], None);
                self.dns_answer(&buf[..len], from, local, now, shared);
            }
        }
        self.flush(socket, context, shared);
        // Every table the gateway bounds is within its bound after every turn.
        let breaches = self.gateway.occupancy().breaches(self.gateway.config());
        if !breaches.is_empty() {
            shared.borrow_mut().journal.errors.push(format!(
                "{} ms: {} holds {}",
                now_ms(),
                self.name,
                breaches.join("; ")
            ));
        }
    }

    fn take_command(
        &mut self,
        command: GatewayCommand,
        context: &HostContext,
        now: Instant,
        shared: &Rc<RefCell<Shared>>,
    ) {
        let restart = matches!(command, GatewayCommand::Restart);
        self.apply(command, now, shared);
        if restart {
            // A fresh gateway with the same configuration and the control calls made so far;
            // its flows start empty.
            collect_flows(&mut self.gateway, shared);
            self.gateway = build_gateway(
                &context.scenario,
                &context.plan,
                self.index,
                self.origin,
                context.seed,
            );
            for replay in self.control_log.clone() {
                self.execute(&replay, now, shared);
            }
        }
    }

    /// A datagram off the tunnel socket: the attacker's, or (through the endpoint) a tunnel
    /// frame.
    fn receive(
        &mut self,
        datagram: &[u8],
        from: SocketAddr,
        context: &HostContext,
        now: Instant,
        shared: &Rc<RefCell<Shared>>,
    ) {
        let local = context.local;
        wire::received(shared, &self.name, from, local, datagram, None);
        if let Some(attacker) = attacker_behind(shared, from, local, datagram) {
            // Straight to the gateway (the endpoint would take it for a direct frame too).
            self.take_from_attacker(datagram, attacker, from, local, now, shared);
            return;
        }
        if from == context.dns_server {
            let _ = self.call(shared, |gateway| {
                gateway.handle_input(from, local, datagram, now)
            });
            return;
        }
        let Some(arrival) =
            receive_through(&mut self.endpoint, shared, &self.name, from, datagram, now)
        else {
            return;
        };
        let outer = OuterContext {
            remote: arrival.remote,
            local: arrival.local,
        };
        shared.borrow_mut().journal.trace(
            &self.name,
            format!(
                "frame of {} bytes from {} at {}",
                arrival.payload.len(),
                outer.remote,
                outer.local
            ),
        );
        let _ = self.call(shared, |gateway| {
            gateway.handle_tunnel_frame(outer, &arrival.payload, now)
        });
    }

    /// A datagram off a DNS socket at `local`: an answer, a forgery of the attacker's (from
    /// its own address, or spoofed from the server's: `Shared::spoofed`), or stray traffic.
    fn dns_answer(
        &mut self,
        datagram: &[u8],
        from: SocketAddr,
        local: SocketAddr,
        now: Instant,
        shared: &Rc<RefCell<Shared>>,
    ) {
        match attacker_behind(shared, from, local, datagram) {
            Some(attacker) => self.take_from_attacker(datagram, attacker, from, local, now, shared),
            None => {
                let _ = self.call(shared, |gateway| {
                    gateway.handle_input(from, local, datagram, now)
                });
            }
        }
    }

    /// The gateway takes a datagram the attacker at `attacker` sent (from `from`, its own
    /// address or a spoofed one); what it did is the attack's answer.
    fn take_from_attacker(
        &mut self,
        datagram: &[u8],
        attacker: SocketAddr,
        from: SocketAddr,
        local: SocketAddr,
        now: Instant,
        shared: &Rc<RefCell<Shared>>,
    ) {
        self.from_attacker = true;
        let result = self.call(shared, |gateway| {
            gateway.handle_input(from, local, datagram, now)
        });
        self.from_attacker = false;
        let answer = match result {
            Ok(()) => AttackAnswer::GatewayAccepted,
            Err(reason) => AttackAnswer::GatewayDropped(reason),
        };
        shared
            .borrow_mut()
            .gateway_verdicts
            .push((attacker, answer));
    }

    /// Sends what the gateway queued (through its relay where the path says so) and collects
    /// its flow records.
    fn flush(&mut self, socket: &UdpSocket, context: &HostContext, shared: &Rc<RefCell<Shared>>) {
        let local = context.local;
        while let Some(transmit) = self.outbox.pop_front() {
            match transmit {
                Transmit::Udp { dst, payload, src } => {
                    if dst == context.dns_server {
                        let dns_socket = plan::GATEWAY_DNS_PORTS
                            .zip(&self.dns_sockets)
                            .find(|(port, _)| src == SocketAddr::new(local.ip(), *port));
                        match dns_socket {
                            Some((_, dns_socket)) => {
                                wire::send(dns_socket, shared, &self.name, src, dst, &payload);
                                let mut shared = shared.borrow_mut();
                                if !shared.attackers_racing.is_empty() {
                                    shared.query_to_race = true;
                                }
                            }
                            None => shared.borrow_mut().journal.errors.push(format!(
                                "{}: DNS query from {src}, not from a DNS port of {}",
                                self.name,
                                local.ip()
                            )),
                        }
                        continue;
                    }
                    let what = format!("frame of {} bytes", payload.len());
                    send_through(
                        &mut self.endpoint,
                        socket,
                        shared,
                        &self.name,
                        dst,
                        &payload,
                        &what,
                    );
                }
                Transmit::Tun(packet) => {
                    shared.borrow_mut().journal.trace(
                        &format!("{}/tun", self.name),
                        format!("to resource: {}", Packet::parse(&packet)),
                    );
                    self.resource.send(true, packet, now_ms());
                }
            }
        }
        flush_turn(&mut self.endpoint, socket, shared, &self.name);
        collect_flows(&mut self.gateway, shared);
    }

    /// The earliest of the gateway's, its TURN client's and the TUN link's timers.
    fn deadline(&mut self) -> Option<u64> {
        let turn = self
            .endpoint
            .turn_mut()
            .and_then(|turn| turn.poll_timeout());
        [self.gateway.poll_timeout(), turn]
            .into_iter()
            .flatten()
            .map(|deadline| deadline_ms(self.origin, deadline))
            .chain(self.resource.next_due())
            .min()
    }
}

/// The attacker's address behind a datagram from `from` to `local`, if it is the attacker's:
/// from its own address, or spoofed (`Shared::spoofed`).
fn attacker_behind(
    shared: &Rc<RefCell<Shared>>,
    from: SocketAddr,
    local: SocketAddr,
    datagram: &[u8],
) -> Option<SocketAddr> {
    let spoofer = shared.borrow_mut().take_spoofed(from, local, datagram);
    spoofer.or(plan::is_attacker(from.ip()).then_some(from))
}

/// A dropped packet as the run observes it: an IP packet read as it is, a tunnel frame by the
/// inner packet it carries if it opens under its client's key (the sim knows every key), and
/// anything else as unreadable bytes of its length.
fn observed_packet(dropped: &DroppedPacket) -> Packet {
    match dropped {
        DroppedPacket::Ip(bytes) => Packet::parse(bytes),
        DroppedPacket::Datagram(bytes) => match wire::open_tunnel_frame(bytes) {
            Some((_, inner)) => Packet::parse(inner),
            None => Packet::unreadable(bytes.len()),
        },
    }
}

/// What a gateway host knows of its place in the world.
struct HostContext {
    scenario: Scenario,
    plan: AddressPlan,
    seed: u64,
    inbox: Inbox<GatewayCommand>,
    local: SocketAddr,
    dns_server: SocketAddr,
}

/// Gateway `index`'s host, with its TURN client if it names a relay.
pub(crate) fn add_gateway(
    sim: &mut turmoil::Sim<'_>,
    world: &World<'_>,
    index: usize,
    turn: Option<turn_client::TurnClientConfig>,
) {
    let shared = world.shared.clone();
    let scenario = world.scenario.clone();
    let plan = world.plan.clone();
    let inbox = world.inboxes.gateways[index].clone();
    let seed = world.seed;
    let ip = plan.gateways[index].preferred();
    sim.host(ip, move || {
        let shared = shared.clone();
        let context = HostContext {
            scenario: scenario.clone(),
            plan: plan.clone(),
            seed,
            inbox: inbox.clone(),
            local: SocketAddr::new(ip, TUNNEL_PORT),
            dns_server: plan::dns_server(ip),
        };
        let turn = turn.clone();
        async move {
            let origin = shared.borrow().origin;
            let socket = UdpSocket::bind(SocketAddr::new(unspecified(ip), TUNNEL_PORT)).await?;
            let mut dns_sockets = Vec::new();
            for port in plan::GATEWAY_DNS_PORTS {
                dns_sockets.push(UdpSocket::bind(SocketAddr::new(unspecified(ip), port)).await?);
            }
            let mut turn = turn.map(TurnClient::new);
            if let Some(turn) = turn.as_mut() {
                turn.allocate(now_instant(origin));
            }
            let mut host = GatewayHost {
                name: context.scenario.topology.gateways[index].name.clone(),
                index,
                gateway: build_gateway(&context.scenario, &context.plan, index, origin, seed),
                outbox: VecDeque::new(),
                origin,
                control_log: Vec::new(),
                resource: ResourceSide::new(&context.scenario.topology.gateways[index].name, index),
                endpoint: Endpoint::new(context.local, turn),
                dns_sockets,
                from_attacker: false,
            };
            let mut buf = vec![0u8; 65536];
            loop {
                host.take_turn(&context, &socket, &mut buf, &shared);
                let deadline = host.deadline();
                end_turn(&shared, &host.name, deadline).await;
            }
        }
    });
}

fn collect_flows(gateway: &mut Gateway, shared: &Rc<RefCell<Shared>>) {
    while let Some(record) = gateway.poll_flow_record() {
        shared.borrow_mut().journal.flows.push(record);
    }
}
