//! A gateway host: the sans-IO gateway behind its tunnel socket (directly, or through its own
//! relay), and its TUN link to the resource responder.

use std::{
    cell::RefCell,
    collections::{BTreeMap, VecDeque},
    net::{IpAddr, SocketAddr},
    rc::Rc,
    time::{Duration, Instant},
};

use gateway::{
    ClientConfig, DomainPattern, DropCounters, DropReason, Event, Filter, Gateway, GatewayConfig,
    IpCidr, PortRange, Resource, ResourceAddress as GatewayResourceAddress, Transmit,
};
use peer::{Endpoint, TurnClient};
use proto::flow::{ClientId, OuterContext, ResourceId, TimeOrigin, UtcTime};
use scenario::{
    ResourceAddress, Scenario,
    plan::{self, AddressPlan, TUNNEL_PORT},
};
use turmoil::net::UdpSocket;

use crate::{
    observed::{
        self, DropCause, ObservedDelivery, ObservedDrop, ObservedPlace, ObservedReceiver,
        PacketSummary,
    },
    packets::{self, Inner},
    tcp::TcpSide,
    wire,
    world::{
        GatewayCommand, ORIGIN_UNIX_SECS, ResourceAction, Shared, TUN_LATENCY_MS, deadline_ms,
        end_turn, flush_turn, now_instant, now_ms, receive_through, send_through, session_id,
        session_key, unspecified,
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
    let dns_server = plan::dns_server(ip);
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

/// What a call into the gateway was given, for telling what it dropped.
enum Input {
    /// A timer, a control call, or a DNS answer: no packet of a client.
    Other,
    /// A tunnel frame, with the client whose session it names and its inner packet if it
    /// opens under that client's key.
    Frame {
        client: Option<usize>,
        inner: Option<Vec<u8>>,
        len: usize,
    },
    /// A packet from the TUN side.
    Tun(Vec<u8>),
    /// `shutdown`: packets waiting for DNS are dropped.
    Shutdown,
}

/// The gateway host: its UDP socket, the gateway, and the TUN link to the resource responder.
struct GatewayHost {
    name: String,
    index: usize,
    gateway: Gateway,
    /// What the gateway asked to send, in its order, until the end of the turn.
    outbox: VecDeque<Transmit>,
    /// The client packets the gateway holds for a DNS answer, by (client, proxy IP), in
    /// order: what a failed resolution or a shutdown drops.
    dns_queue: BTreeMap<(usize, IpAddr), VecDeque<Vec<u8>>>,
    /// Client index by tunnel IP.
    tunnel_ips: BTreeMap<IpAddr, usize>,
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
    /// Calls into the gateway, then accounts for what the call did: the drops it counted
    /// (each tied to the packet it dropped), its events, and what it wants sent.
    fn call(
        &mut self,
        input: Input,
        shared: &Rc<RefCell<Shared>>,
        f: impl FnOnce(&mut Gateway) -> Result<(), DropReason>,
    ) -> Result<(), DropReason> {
        let before = self.gateway.drop_counters().clone();
        let result = f(&mut self.gateway);
        self.account(&input, result, &before, shared);
        result
    }

    /// Ties every drop the gateway counted in one call to the packet it dropped. The gateway
    /// names the reason of the packet it was handed (the call's result); packets it held for a
    /// DNS answer are dropped or forwarded later, which its DNS events say.
    fn account(
        &mut self,
        input: &Input,
        result: Result<(), DropReason>,
        before: &DropCounters,
        shared: &Rc<RefCell<Shared>>,
    ) {
        let at_ms = now_ms();
        let mut uncounted: BTreeMap<DropReason, u64> = self
            .gateway
            .drop_counters()
            .iter()
            .map(|(reason, count)| (reason, count - before.get(reason)))
            .filter(|(_, count)| *count > 0)
            .collect();
        let take = |uncounted: &mut BTreeMap<DropReason, u64>, reason: DropReason| {
            if let Some(count) = uncounted.get_mut(&reason) {
                *count = count.saturating_sub(1);
            }
        };
        let fresh: Vec<Transmit> = std::iter::from_fn(|| self.gateway.poll_transmit()).collect();
        // What went to the TUN side in this call, not yet tied to a packet.
        let mut forwarded: Vec<PacketSummary> = fresh
            .iter()
            .filter_map(|transmit| match transmit {
                Transmit::Tun(packet) => Some(observed::summarize(packet)),
                Transmit::Udp { .. } => None,
            })
            .collect();
        let mut drops = Vec::new();
        let mut problems = Vec::new();
        match (input, result) {
            (Input::Frame { client, inner, len }, Err(reason)) => {
                take(&mut uncounted, reason);
                let packet = match inner {
                    Some(inner) => observed::summarize(inner),
                    None => observed::unreadable(*len),
                };
                drops.push((*client, reason, packet));
            }
            (
                Input::Frame {
                    client: Some(client),
                    inner: Some(inner),
                    ..
                },
                Ok(()),
            ) if forwarded.is_empty() => {
                // Accepted and not forwarded: held for a DNS answer.
                let packet = observed::summarize(inner);
                if gateway::is_proxy_ip(packet.dst.ip()) {
                    self.dns_queue
                        .entry((*client, packet.dst.ip()))
                        .or_default()
                        .push_back(inner.clone());
                } else {
                    problems.push(format!(
                        "{}: accepted {packet} without forwarding it",
                        self.name
                    ));
                }
            }
            (Input::Tun(packet), Err(reason)) => {
                take(&mut uncounted, reason);
                let packet = observed::summarize(packet);
                let client = self.tunnel_ips.get(&packet.dst.ip()).copied();
                drops.push((client, reason, packet));
            }
            // The input's own packet went to the TUN side.
            (Input::Frame { .. }, Ok(())) => forwarded.clear(),
            (_, Err(reason)) => take(&mut uncounted, reason),
            (_, Ok(())) => {}
        }
        let mut events = Vec::new();
        while let Some(event) = self.gateway.poll_event() {
            // The trace shows every flow event (flow started, client roamed, DNS answers).
            events.push(format!("event: {event:?}"));
            match event {
                Event::DnsResolutionFailed {
                    client, proxy_ip, ..
                } => {
                    let client = client.0 as usize;
                    let held = self.dns_queue.remove(&(client, proxy_ip));
                    for inner in held.unwrap_or_default() {
                        take(&mut uncounted, DropReason::DnsResolutionFailed);
                        let packet = observed::summarize(&inner);
                        drops.push((Some(client), DropReason::DnsResolutionFailed, packet));
                    }
                }
                Event::DnsResolved {
                    client, proxy_ip, ..
                } => {
                    // The held packets went through the data path again, in order: each was
                    // forwarded (translated: only its destination IP differs) or dropped.
                    let client = client.0 as usize;
                    let held = self.dns_queue.remove(&(client, proxy_ip));
                    for inner in held.unwrap_or_default() {
                        let packet = observed::summarize(&inner);
                        if let Some(at) = forwarded.iter().position(|sent| {
                            sent.src == packet.src
                                && sent.dst.port() == packet.dst.port()
                                && sent.kind == packet.kind
                        }) {
                            forwarded.remove(at);
                            continue;
                        }
                        let reason = uncounted
                            .iter()
                            .find(|(_, count)| **count > 0)
                            .map(|(reason, _)| *reason);
                        match reason {
                            Some(reason) => {
                                take(&mut uncounted, reason);
                                drops.push((Some(client), reason, packet));
                            }
                            None => problems.push(format!(
                                "{}: {packet}, held for DNS, was neither forwarded nor dropped",
                                self.name
                            )),
                        }
                    }
                }
                Event::FlowStarted(_) | Event::ClientRoamed { .. } => {}
            }
        }
        if matches!(input, Input::Shutdown) {
            for ((client, _), held) in std::mem::take(&mut self.dns_queue) {
                for inner in held {
                    take(&mut uncounted, DropReason::ShutDown);
                    let packet = observed::summarize(&inner);
                    drops.push((Some(client), DropReason::ShutDown, packet));
                }
            }
        }
        for (reason, count) in uncounted {
            if count > 0 {
                problems.push(format!(
                    "{}: the gateway counted {count} drop(s) for {reason} that the simulator \
                     cannot tie to a packet",
                    self.name
                ));
            }
        }
        let mut shared = shared.borrow_mut();
        for event in events {
            shared.trace(&self.name, event);
        }
        for (client, reason, packet) in drops {
            shared.trace(&self.name, format!("dropped ({reason}): {packet}"));
            shared.drops.push(ObservedDrop {
                at_ms,
                place: ObservedPlace::Gateway {
                    gateway: self.index,
                    client,
                },
                cause: DropCause::Gateway(reason),
                packet,
            });
        }
        shared.errors.extend(problems);
        drop(shared);
        self.outbox.extend(fresh);
    }

    /// A control-plane call (its refusal is an answer, not a drop).
    fn control<E: std::fmt::Display>(
        &mut self,
        shared: &Rc<RefCell<Shared>>,
        f: impl FnOnce(&mut Gateway) -> Result<(), E>,
    ) -> Result<(), String> {
        let mut refused = None;
        let _ = self.call(Input::Other, shared, |gateway| {
            refused = f(gateway).err().map(|error| error.to_string());
            Ok(())
        });
        refused.map_or(Ok(()), Err)
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
                self.resource_acts(*client, *action, shared);
                Ok(())
            }
            GatewayCommand::Restart | GatewayCommand::Shutdown => {
                let _ = self.call(Input::Shutdown, shared, |gateway| {
                    gateway.shutdown(now);
                    Ok(())
                });
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
        {
            let mut shared = shared.borrow_mut();
            shared.trace(
                &format!("{}/tun", self.name),
                format!("resource got {inner}"),
            );
            shared.deliveries.push(ObservedDelivery {
                at_ms: now_ms(),
                to: ObservedReceiver::Resource {
                    gateway: self.index,
                },
                packet: observed::summarize(packet),
            });
        }
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
            let dns_server = plan::dns_server(ip);
            let tunnel_ips = (plan.tunnel_v4.iter().map(|ip| IpAddr::V4(*ip)).enumerate())
                .chain(plan.tunnel_v6.iter().map(|ip| IpAddr::V6(*ip)).enumerate())
                .map(|(client, ip)| (ip, client))
                .collect();
            let mut host = GatewayHost {
                name: name.clone(),
                index,
                gateway: build_gateway(&scenario, &plan, index, origin, seed),
                outbox: VecDeque::new(),
                dns_queue: BTreeMap::new(),
                tunnel_ips,
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
                    let _ = host.call(Input::Other, &shared, |gateway| {
                        gateway.handle_timeout(now);
                        Ok(())
                    });
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
                    } else {
                        let input = Input::Tun(packet.clone());
                        let _ = host.call(input, &shared, |gateway| {
                            gateway.handle_tun_packet(&packet, now)
                        });
                    }
                }
                while let Ok((len, from)) = socket.try_recv_from(&mut buf) {
                    wire::received(&shared, &name, from, local, &buf[..len], None);
                    if from == dns_server {
                        let answer = &buf[..len];
                        if let Err(reason) = host.call(Input::Other, &shared, |gateway| {
                            gateway.handle_input(from, local, answer, now)
                        }) {
                            shared
                                .borrow_mut()
                                .trace(&name, format!("DNS answer dropped: {reason:?}"));
                        }
                        continue;
                    }
                    let Some(arrival) =
                        receive_through(&mut host.endpoint, &shared, &name, from, &buf[..len], now)
                    else {
                        continue;
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
                    let opened = observed::open_frame(&arrival.payload);
                    let input = Input::Frame {
                        client: opened.as_ref().map(|(client, _)| *client).or_else(|| {
                            proto::tunnel::peek_header(&arrival.payload)
                                .ok()
                                .and_then(|header| header.session_id.checked_sub(1000))
                                .map(|client| client as usize)
                        }),
                        inner: opened.map(|(_, inner)| inner),
                        len: arrival.payload.len(),
                    };
                    let _ = host.call(input, &shared, |gateway| {
                        gateway.handle_tunnel_frame(outer, &arrival.payload, now)
                    });
                }
                flush_gateway(&mut host, &socket, local, dns_server, &shared);
                let turn = host
                    .endpoint
                    .turn_mut()
                    .and_then(|turn| turn.poll_timeout());
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
    while let Some(transmit) = host.outbox.pop_front() {
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
    flush_turn(&mut host.endpoint, socket, shared, &host.name);
    collect_flows(&mut host.gateway, shared);
}
