//! The [`Gateway`] state machine: its state, the sans-IO entry points, the data path, and the
//! one place drops are counted and reported (`record_drop`). The control plane is in
//! `control.rs`; DNS resolution is the [`DnsResolver`] in `dns_resolver.rs`, which the gateway
//! calls and whose [`DnsAction`]s it carries out (`run_dns_actions`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::fast::FixedState;
use proto::flow::{ClientId, CloseReason, FlowRecord, OuterContext, Protocol, ResourceId};
use proto::tunnel::{self, FrameHeader};

use crate::cidr::is_proxy_ip;
use crate::config::{ClientConfig, GatewayConfig, Resource, ResourceAddress};
use crate::dns_resolver::{DnsAction, DnsLookup, DnsResolver, HeldPacket};
use crate::drop_reason::{DropCounters, DropReason};
use crate::filter::{Filter, grant_allows};
use crate::flow_log::{self, OuterInterner};
use crate::flow_table::{DnsFlow, Flow, FlowKey, FlowTable, Nanos, nanos_of};
use crate::output::{DroppedPacket, Event, Transmit};
use crate::packet::{
    self, Field, IpPacket, PacketError, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Transport,
};
use crate::replay_window::ReplayWindow;
use crate::tcp_tracker::{Direction, TcpVerdict};

/// A client's session state (its DNS mappings are the resolver's).
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) config: ClientConfig,
    replay: ReplayWindow,
    /// Counter of the next frame the gateway sends to this client.
    tx_counter: u64,
    /// Where replies go: the outer context of the latest accepted frame.
    outer: Option<OuterContext>,
    /// `outer`'s index in the outer-context interner.
    outer_idx: u32,
    pub(crate) grants: BTreeMap<ResourceId, Vec<Filter>>,
}

impl Client {
    /// A new session: no frame seen or sent, no grants.
    pub(crate) fn new(config: ClientConfig) -> Self {
        Self {
            config,
            replay: ReplayWindow::default(),
            tx_counter: 0,
            outer: None,
            outer_idx: 0,
            grants: BTreeMap::new(),
        }
    }
}

/// A tunnel frame's drop, and how far the frame got: not opened (the frame is all the gateway
/// has), or opened (the client and its inner packet, borrowed from the frame).
#[derive(Debug, Clone, Copy)]
struct FrameDrop<'f> {
    reason: DropReason,
    opened: Option<(ClientId, &'f [u8])>,
}

/// What a packet that starts a flow gets.
enum NewFlow {
    Create {
        resource: ResourceId,
        real_ip: IpAddr,
        dns: Option<Arc<DnsFlow>>,
    },
    Deny(DropReason),
    AwaitDns,
}

/// A flow about to start: its client-side key and where it goes.
struct NewFlowStart {
    client_id: ClientId,
    key: FlowKey,
    resource: ResourceId,
    real_ip: IpAddr,
    dns: Option<Arc<DnsFlow>>,
}

/// The sans-IO VPN gateway. See the crate docs for the contract.
#[derive(Debug)]
pub struct Gateway {
    config: GatewayConfig,
    /// The latest `now` seen, as nanoseconds since the time origin (never goes back).
    now: Nanos,
    /// The `now` argument of the latest call.
    last_instant: Option<Instant>,
    pub(crate) clients: BTreeMap<ClientId, Client>,
    /// Lookup only: session id -> client.
    pub(crate) sessions: HashMap<u32, ClientId, FixedState>,
    /// Lookup only: tunnel IP -> client.
    pub(crate) tunnel_ips: HashMap<IpAddr, ClientId, FixedState>,
    pub(crate) resources: BTreeMap<ResourceId, Resource>,
    flows: FlowTable,
    outers: OuterInterner,
    /// DNS mappings, queries and held packets.
    pub(crate) dns: DnsResolver,
    transmits: VecDeque<Transmit>,
    /// Buffers of sent transmits handed back with [`Gateway::recycle`], reused for the next
    /// ones (at most [`SPARE_BUFFERS`]).
    spare: Vec<Vec<u8>>,
    /// Not drained by the gateway: it holds what the host has not polled yet. What one call
    /// adds is bounded (see `poll_event`).
    events: VecDeque<Event>,
    records: VecDeque<FlowRecord>,
    drops: DropCounters,
    pub(crate) shut_down: bool,
}

/// How many returned buffers [`Gateway::recycle`] keeps.
const SPARE_BUFFERS: usize = 64;
/// Returned buffers larger than this are dropped rather than kept.
const SPARE_MAX_CAPACITY: usize = 64 * 1024;

fn packet_error(e: PacketError) -> DropReason {
    match e {
        PacketError::Malformed => DropReason::MalformedPacket,
        PacketError::Fragment => DropReason::Fragment,
        PacketError::Unsupported => DropReason::UnsupportedProtocol,
    }
}

impl Gateway {
    /// A gateway with no clients, resources or flows.
    pub fn new(config: GatewayConfig) -> Self {
        let idle_timeout = nanos_of(config.idle_timeout);
        let seed = config.hash_seed;
        Self {
            flows: FlowTable::new(seed, idle_timeout),
            dns: DnsResolver::new(&config),
            config,
            now: 0,
            last_instant: None,
            clients: BTreeMap::new(),
            sessions: HashMap::with_hasher(FixedState::with_seed(seed)),
            tunnel_ips: HashMap::with_hasher(FixedState::with_seed(seed)),
            resources: BTreeMap::new(),
            outers: OuterInterner::default(),
            transmits: VecDeque::new(),
            spare: Vec::new(),
            events: VecDeque::new(),
            records: VecDeque::new(),
            drops: DropCounters::default(),
            shut_down: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    // ---------------------------------------------------------------- sans-IO entry points

    /// A UDP datagram arrived at the gateway's address `to` from `from`: a DNS answer if it is
    /// from the configured DNS server, else a direct tunnel frame from a client (its outer
    /// context is `(from, to)`).
    pub fn handle_input(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        payload: &[u8],
        now: Instant,
    ) -> Result<(), DropReason> {
        if from == self.config.dns_server {
            let t = self.advance(now);
            let r = if self.shut_down {
                Err(DropReason::ShutDown)
            } else {
                self.dns_answer(payload, t)
            };
            return r.map_err(|reason| self.drop_datagram(reason, None, payload));
        }
        if !tunnel::is_tunnel_frame(payload) {
            self.advance(now);
            return Err(self.drop_datagram(DropReason::NotTunnelFrame, None, payload));
        }
        self.handle_tunnel_frame(
            OuterContext {
                remote: from,
                local: to,
            },
            payload,
            now,
        )
    }

    /// A tunnel frame arrived over `outer`: directly (from [`Gateway::handle_input`]) or
    /// through a relay, already unwrapped from ChannelData by the caller, which names the outer
    /// 4-tuple replies should use.
    pub fn handle_tunnel_frame(
        &mut self,
        outer: OuterContext,
        frame: &[u8],
        now: Instant,
    ) -> Result<(), DropReason> {
        let t = self.advance(now);
        match self.tunnel_frame(outer, frame, t) {
            Ok(()) => Ok(()),
            Err(FrameDrop {
                reason,
                opened: Some((client, inner)),
            }) => Err(self.drop_ip(reason, Some(client), inner)),
            Err(FrameDrop {
                reason,
                opened: None,
            }) => {
                let client = tunnel::peek_header(frame)
                    .ok()
                    .and_then(|h| self.sessions.get(&h.session_id).copied());
                Err(self.drop_datagram(reason, client, frame))
            }
        }
    }

    /// An IP packet arrived on the TUN side (from a resource).
    pub fn handle_tun_packet(&mut self, packet: &[u8], now: Instant) -> Result<(), DropReason> {
        let t = self.advance(now);
        let r = if self.shut_down {
            Err(DropReason::ShutDown)
        } else {
            self.tun_packet(packet, t)
        };
        r.map_err(|reason| {
            let client =
                packet::peek_dst(packet).and_then(|dst| self.tunnel_ips.get(&dst).copied());
            self.drop_ip(reason, client, packet)
        })
    }

    /// Runs every deadline that is due at `now` (idle flows, DNS retries and expiries). Every
    /// other entry point does this first too, so the order of calls at one instant does not
    /// matter.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
    }

    /// The next thing to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Hands back the buffer of a sent [`Transmit`] (a `Udp` payload or a `Tun` packet), or of
    /// a [`DroppedPacket`] ([`DroppedPacket::into_bytes`]), so a later transmit (or drop
    /// report) can reuse its allocation. Optional: a host that drops its transmits
    /// instead only pays one allocation per transmit. Keeps at most 64 buffers of at most
    /// 64 KiB; the contents are never read.
    pub fn recycle(&mut self, buffer: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS && buffer.capacity() <= SPARE_MAX_CAPACITY {
            self.spare.push(buffer);
        }
    }

    /// An empty buffer with room for `capacity` bytes: a recycled one if there is one.
    fn take_buffer(&mut self, capacity: usize) -> Vec<u8> {
        match self.spare.pop() {
            Some(mut buffer) => {
                buffer.clear();
                buffer.reserve(capacity);
                buffer
            }
            None => Vec::with_capacity(capacity),
        }
    }

    /// The next event.
    ///
    /// The queue is unbounded but fills only as fast as calls feed it: one call adds at most
    /// one [`Event::PacketDropped`] for its own input, one per packet held for DNS that it
    /// releases (at most `dns_queue_limit` per mapping), and one event per flow started,
    /// roaming, or DNS answer or failure. A host that drains it after every call keeps it
    /// that small; one that never drains it grows it like an undrained transmit queue.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next completed flow record (only with flow logs enabled).
    pub fn poll_flow_record(&mut self) -> Option<FlowRecord> {
        self.records.pop_front()
    }

    /// When [`Gateway::handle_timeout`] must be called next (it may be early: nothing
    /// happens then but re-arming). `None` when nothing is pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.shut_down {
            return None;
        }
        let next = match (self.flows.next_deadline(), self.dns.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }?;
        let origin = self.config.time_origin.instant;
        Some(origin + Duration::from_nanos(next))
    }

    /// Closes every open flow with reason `shutdown` (end = `now`, after first closing those
    /// already idle at `now`), drops pending DNS work (packets held for an answer are dropped
    /// with reason `shut-down`, in (client, proxy IP, arrival) order), and refuses all later
    /// input.
    pub fn shutdown(&mut self, now: Instant) {
        let t = self.advance(now);
        if self.shut_down {
            return;
        }
        for idx in self.flows_in_start_order(|_| true) {
            self.close_flow(idx, CloseReason::Shutdown, t);
        }
        self.dns.shutdown();
        self.run_dns_actions(t);
        self.shut_down = true;
    }

    // ---------------------------------------------------------------- inspection

    /// Drop counters, one per reason.
    pub fn drop_counters(&self) -> &DropCounters {
        &self.drops
    }

    /// How many flows are open.
    pub fn open_flow_count(&self) -> usize {
        self.flows.len()
    }

    /// Where replies to `client` go now.
    pub fn client_outer_context(&self, client: ClientId) -> Option<OuterContext> {
        self.clients.get(&client).and_then(|c| c.outer)
    }

    // ---------------------------------------------------------------- time

    fn nanos(&self, now: Instant) -> Nanos {
        nanos_of(now.saturating_duration_since(self.config.time_origin.instant))
    }

    /// Moves the clock to `now` (never backwards) and runs what is due.
    #[inline]
    pub(crate) fn advance(&mut self, now: Instant) -> Nanos {
        // Hosts hand a batch of datagrams the same `now`: convert it once per batch (for the
        // same instant as the previous call, `max(nanos(now), self.now)` is `self.now`).
        let t = if self.last_instant == Some(now) {
            self.now
        } else {
            self.last_instant = Some(now);
            self.nanos(now).max(self.now)
        };
        self.now = t;
        while self.flows.next_deadline().is_some_and(|d| d <= t)
            && let Some(idx) = self.flows.pop_idle(t)
        {
            let end = self.flows.get(idx).map_or(t, |f| f.last_packet);
            self.close_flow(idx, CloseReason::Idle, end);
        }
        if self.dns.poll_timeout().is_some_and(|d| d <= t) {
            self.dns.handle_timeout(t);
            self.run_dns_actions(t);
        }
        t
    }

    // ---------------------------------------------------------------- drops

    /// Counts a drop and reports it with [`Event::PacketDropped`]: the only place a drop
    /// counter moves, so counters and events agree by construction. Returns `reason`.
    #[cold]
    #[inline(never)]
    fn record_drop(
        &mut self,
        reason: DropReason,
        client: Option<ClientId>,
        packet: DroppedPacket,
    ) -> DropReason {
        self.drops.bump(reason);
        tracing::debug!(%reason, "gateway dropped input");
        self.events.push_back(Event::PacketDropped {
            reason,
            client,
            packet,
        });
        reason
    }

    /// Drops an IP packet the gateway was handed (copied, into a recycled buffer if any).
    #[cold]
    fn drop_ip(
        &mut self,
        reason: DropReason,
        client: Option<ClientId>,
        bytes: &[u8],
    ) -> DropReason {
        let copy = self.copy_of(bytes);
        self.record_drop(reason, client, DroppedPacket::Ip(copy))
    }

    /// Drops a datagram the gateway did not open (copied, into a recycled buffer if any).
    #[cold]
    fn drop_datagram(
        &mut self,
        reason: DropReason,
        client: Option<ClientId>,
        bytes: &[u8],
    ) -> DropReason {
        let copy = self.copy_of(bytes);
        self.record_drop(reason, client, DroppedPacket::Datagram(copy))
    }

    /// Drops packets held for a DNS answer, in order.
    fn drop_held(&mut self, reason: DropReason, client: ClientId, held: Vec<HeldPacket>) {
        for h in held {
            self.record_drop(reason, Some(client), DroppedPacket::Ip(h.packet));
        }
    }

    fn copy_of(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut copy = self.take_buffer(bytes.len());
        copy.extend_from_slice(bytes);
        copy
    }

    // ---------------------------------------------------------------- DNS

    /// A datagram from the DNS server.
    fn dns_answer(&mut self, payload: &[u8], t: Nanos) -> Result<(), DropReason> {
        self.dns.handle_answer(payload, t)?;
        self.run_dns_actions(t);
        Ok(())
    }

    /// Carries out what the resolver asks for, in order: queries go to the DNS server; a
    /// resolution is reported and the packets held for it go through the data path again
    /// (each forwarded or dropped); a failure is reported and its held packets dropped; held
    /// packets of a mapping that went away are dropped. Called after every resolver call.
    pub(crate) fn run_dns_actions(&mut self, t: Nanos) {
        while let Some(action) = self.dns.poll_action() {
            match action {
                DnsAction::Query(payload) => self.transmits.push_back(Transmit::Udp {
                    src: self.config.dns_local,
                    dst: self.config.dns_server,
                    payload,
                }),
                DnsAction::Resolved {
                    client,
                    proxy_ip,
                    domain,
                    addr,
                    ttl,
                    held,
                } => {
                    self.events.push_back(Event::DnsResolved {
                        client,
                        proxy_ip,
                        domain: domain.to_string(),
                        addr,
                        ttl,
                    });
                    for h in held {
                        self.route_held(client, h, t);
                    }
                }
                DnsAction::Failed {
                    client,
                    proxy_ip,
                    domain,
                    held,
                } => {
                    self.events.push_back(Event::DnsResolutionFailed {
                        client,
                        proxy_ip,
                        domain: domain.to_string(),
                    });
                    self.drop_held(DropReason::DnsResolutionFailed, client, held);
                }
                DnsAction::Discarded {
                    client,
                    reason,
                    held,
                } => self.drop_held(reason, client, held),
            }
        }
    }

    /// A packet held for a DNS answer that has arrived: handled like a new client packet at
    /// time `t` (the client's authorisation is checked again), dropped if refused.
    fn route_held(&mut self, client_id: ClientId, held: HeldPacket, t: Nanos) {
        let r = match packet::parse(&held.packet) {
            Ok(pkt) => self.route_to_resource(client_id, &held.packet, &pkt, &held.outer, None, t),
            Err(e) => Err(packet_error(e)),
        };
        if let Err(reason) = r {
            self.record_drop(reason, Some(client_id), DroppedPacket::Ip(held.packet));
        }
    }

    // ---------------------------------------------------------------- client -> resource

    /// Tunnel header, session, MAC, replay window, inner packet, source; then the packet is
    /// routed, and the accepted frame moves the replay window and (roaming) the client.
    fn tunnel_frame<'f>(
        &mut self,
        outer: OuterContext,
        frame: &'f [u8],
        t: Nanos,
    ) -> Result<(), FrameDrop<'f>> {
        let unopened = |reason| FrameDrop {
            reason,
            opened: None,
        };
        if self.shut_down {
            return Err(unopened(DropReason::ShutDown));
        }
        let header =
            tunnel::peek_header(frame).map_err(|_| unopened(DropReason::MalformedFrame))?;
        let client_id = *self
            .sessions
            .get(&header.session_id)
            .ok_or(unopened(DropReason::UnknownSession))?;
        let client = self
            .clients
            .get(&client_id)
            .ok_or(unopened(DropReason::UnknownSession))?;
        let inner =
            tunnel::verify(&client.config.key, frame).map_err(|_| unopened(DropReason::BadMac))?;
        let opened = |reason| FrameDrop {
            reason,
            opened: Some((client_id, inner)),
        };
        client
            .replay
            .check(header.counter)
            .map_err(|_| opened(DropReason::Replay))?;
        let pkt = packet::parse(inner).map_err(|e| opened(packet_error(e)))?;
        if pkt.src != client.config.tunnel_ip(pkt.is_v4()) {
            return Err(opened(DropReason::ForgedSource));
        }
        // The interned index of `outer`, when it is already the client's (no roaming).
        let known_outer = (client.outer == Some(outer)).then_some(client.outer_idx);
        let routed = self.route_to_resource(client_id, inner, &pkt, &outer, known_outer, t);
        // The frame is accepted (MAC, replay window and source passed) whatever becomes of its
        // packet: it moves the replay window and the client to its outer context even when the
        // packet is denied (docs/flows.md, "Roaming"), as an authenticated frame proves where
        // the client is.
        let client = self
            .clients
            .get_mut(&client_id)
            .ok_or(opened(DropReason::UnknownSession))?;
        client.replay.commit(header.counter);
        if known_outer.is_none() {
            client.outer_idx = self.outers.intern(outer);
            let from = client.outer.replace(outer);
            self.events.push_back(Event::ClientRoamed {
                client: client_id,
                from,
                to: outer,
            });
        }
        routed.map_err(opened)
    }

    /// Forwards (or holds, for a pending DNS answer) an authenticated client packet whose
    /// source is the client's tunnel IP: along its open flow, or as the start of a new one.
    /// `known_outer` is `outer`'s interned index if the caller has it at hand (saves a lookup
    /// per packet), else `None`.
    fn route_to_resource(
        &mut self,
        client_id: ClientId,
        inner: &[u8],
        pkt: &IpPacket,
        outer: &OuterContext,
        known_outer: Option<u32>,
        t: Nanos,
    ) -> Result<(), DropReason> {
        let (protocol, src_port, dst_port) = match pkt.transport {
            Transport::Echo { request: false, .. }
            | Transport::IcmpError
            | Transport::IcmpOther => {
                return Err(DropReason::IcmpNotAllowed);
            }
            _ => pkt.flow_ports().ok_or(DropReason::IcmpNotAllowed)?,
        };
        let key = FlowKey {
            protocol,
            src: pkt.src,
            src_port,
            dst: pkt.dst,
            dst_port,
        };
        if let Some(idx) = self.flows.find_client_side(&key) {
            self.forward_to_resource(idx, inner, pkt, outer, known_outer, t);
            return Ok(());
        }
        if let Transport::Tcp { flags, .. } = pkt.transport
            && flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) != TCP_SYN
        {
            return Err(DropReason::TcpWithoutSyn);
        }
        match self.plan_new_flow(client_id, pkt.dst, protocol, dst_port)? {
            NewFlow::Create {
                resource,
                real_ip,
                dns,
            } => {
                let start = NewFlowStart {
                    client_id,
                    key,
                    resource,
                    real_ip,
                    dns,
                };
                self.start_flow(start, inner, pkt, outer, known_outer, t)
            }
            NewFlow::Deny(reason) => self.deny(client_id, inner, pkt, *outer, reason),
            NewFlow::AwaitDns => {
                self.dns.hold(client_id, pkt.dst, inner, *outer, t)?;
                self.run_dns_actions(t);
                Ok(())
            }
        }
    }

    /// Opens the flow a packet starts (unless its return path would collide with an open
    /// flow's), reports it, and forwards the packet.
    fn start_flow(
        &mut self,
        start: NewFlowStart,
        inner: &[u8],
        pkt: &IpPacket,
        outer: &OuterContext,
        known_outer: Option<u32>,
        t: Nanos,
    ) -> Result<(), DropReason> {
        let NewFlowStart {
            client_id,
            key,
            resource,
            real_ip,
            dns,
        } = start;
        let resource_key = FlowKey {
            protocol: key.protocol,
            src: real_ip,
            src_port: key.dst_port,
            dst: key.src,
            dst_port: key.src_port,
        };
        if self.flows.find_resource_side(&resource_key).is_some() {
            return Err(DropReason::NatCollision);
        }
        let outer_idx = known_outer.unwrap_or_else(|| self.outers.intern(*outer));
        let flow = Flow::new(
            client_id,
            resource,
            key.protocol,
            (key.src, key.src_port),
            (real_ip, key.dst_port),
            dns,
            t,
            outer_idx,
        );
        let idx = self.flows.insert(flow);
        if self.config.flow_logs
            && let Some(flow) = self.flows.get(idx)
        {
            let started = flow_log::started(&self.config.time_origin, &self.outers, flow);
            flow_log::emit_started(&started);
            self.events.push_back(Event::FlowStarted(started));
        }
        self.forward_to_resource(idx, inner, pkt, outer, Some(outer_idx), t);
        Ok(())
    }

    /// Decides what a packet that starts a new flow gets: which resource and real IP, or a
    /// denial, or a wait for the DNS answer.
    fn plan_new_flow(
        &self,
        client_id: ClientId,
        dst: IpAddr,
        protocol: Protocol,
        dst_port: u16,
    ) -> Result<NewFlow, DropReason> {
        let client = self
            .clients
            .get(&client_id)
            .ok_or(DropReason::UnknownSession)?;
        if !is_proxy_ip(dst) {
            return Ok(
                match self.select_cidr_resource(client, dst, protocol, dst_port) {
                    Ok(resource) => NewFlow::Create {
                        resource,
                        real_ip: dst,
                        dns: None,
                    },
                    Err(reason) => NewFlow::Deny(reason),
                },
            );
        }
        let Some(mapping) = self.dns.lookup(client_id, dst) else {
            return Ok(NewFlow::Deny(DropReason::UnknownProxyIp));
        };
        let resource = match self.select_dns_resource(client, mapping.domain(), protocol, dst_port)
        {
            Ok(r) => r,
            Err(reason) => return Ok(NewFlow::Deny(reason)),
        };
        Ok(match mapping {
            DnsLookup::Resolved { real_ip, flow, .. } => NewFlow::Create {
                resource,
                real_ip,
                dns: Some(flow.clone()),
            },
            DnsLookup::Pending { .. } => NewFlow::AwaitDns,
        })
    }

    fn forward_to_resource(
        &mut self,
        idx: u32,
        inner: &[u8],
        pkt: &IpPacket,
        outer: &OuterContext,
        known_outer: Option<u32>,
        t: Nanos,
    ) {
        let outer_idx = known_outer.unwrap_or_else(|| self.outers.intern(*outer));
        let mut out = self.take_buffer(pkt.len);
        let Some(flow) = self.flows.get_mut(idx) else {
            return;
        };
        out.extend_from_slice(&inner[..pkt.len]);
        if flow.dns.is_some() {
            packet::rewrite(&mut out, pkt, Field::Dst, flow.resource_ip);
        }
        flow.tx_packets += 1;
        flow.tx_bytes += pkt.payload_len as u64;
        flow.last_packet = t;
        flow.add_outer(outer_idx);
        let verdict = match pkt.transport {
            Transport::Tcp {
                flags, seq, ack, ..
            } => flow
                .tcp
                .on_packet(Direction::ToResource, flags, seq, ack, pkt.payload_len),
            _ => TcpVerdict::Open,
        };
        self.transmits.push_back(Transmit::Tun(out));
        self.close_if_done(idx, verdict, t);
    }

    /// Refuses a client packet: ICMP administratively prohibited back to where the frame came
    /// from, and the drop reason.
    fn deny(
        &mut self,
        client_id: ClientId,
        inner: &[u8],
        pkt: &IpPacket,
        outer: OuterContext,
        reason: DropReason,
    ) -> Result<(), DropReason> {
        let icmp = packet::admin_prohibited(inner, pkt);
        self.send_to_client(client_id, outer, &icmp);
        Err(reason)
    }

    fn select_cidr_resource(
        &self,
        client: &Client,
        dst: IpAddr,
        protocol: Protocol,
        dst_port: u16,
    ) -> Result<ResourceId, DropReason> {
        let mut reason = DropReason::NoResource;
        let mut best: Option<(u8, ResourceId)> = None;
        for (id, resource) in &self.resources {
            let ResourceAddress::Cidr(cidr) = &resource.address else {
                continue;
            };
            if !cidr.contains(dst) {
                continue;
            }
            if !Self::granted(client, *id, protocol, dst_port, &mut reason) {
                continue;
            }
            // Longest prefix wins; on a tie the lowest id (the first in BTreeMap order).
            if best.is_none_or(|(p, _)| cidr.prefix() > p) {
                best = Some((cidr.prefix(), *id));
            }
        }
        best.map(|(_, id)| id).ok_or(reason)
    }

    /// Whether `client` may reach resource `id` with this protocol and port; if not, raises
    /// `reason` to the most telling drop reason seen so far.
    fn granted(
        client: &Client,
        id: ResourceId,
        protocol: Protocol,
        dst_port: u16,
        reason: &mut DropReason,
    ) -> bool {
        let Some(filters) = client.grants.get(&id) else {
            *reason = (*reason).max(DropReason::NotGranted);
            return false;
        };
        if !grant_allows(filters, protocol, dst_port) {
            *reason = DropReason::FilterDenied;
            return false;
        }
        true
    }

    fn select_dns_resource(
        &self,
        client: &Client,
        domain: &str,
        protocol: Protocol,
        dst_port: u16,
    ) -> Result<ResourceId, DropReason> {
        let mut reason = DropReason::NoResource;
        let mut best: Option<((u8, usize), ResourceId)> = None;
        for (id, resource) in &self.resources {
            let ResourceAddress::Dns(pattern) = &resource.address else {
                continue;
            };
            if !pattern.matches(domain) {
                continue;
            }
            if !Self::granted(client, *id, protocol, dst_port, &mut reason) {
                continue;
            }
            let rank = pattern.specificity();
            if best.is_none_or(|(r, _)| rank > r) {
                best = Some((rank, *id));
            }
        }
        best.map(|(_, id)| id).ok_or(reason)
    }

    // ---------------------------------------------------------------- resource -> client

    /// A resource packet: it must belong to an open flow of the client it is for, and goes
    /// to that client.
    fn tun_packet(&mut self, packet: &[u8], t: Nanos) -> Result<(), DropReason> {
        let pkt = packet::parse(packet).map_err(packet_error)?;
        let client_id = *self
            .tunnel_ips
            .get(&pkt.dst)
            .ok_or(DropReason::UnknownDestination)?;
        let key = resource_side_key(packet, &pkt)?;
        let idx = self
            .flows
            .find_resource_side(&key)
            .ok_or(DropReason::NoOpenFlow)?;
        self.forward_to_client(idx, client_id, packet, &pkt, t)
    }

    /// Forwards a resource packet along open flow `idx` (source NAT back to the proxy IP, ICMP
    /// errors translated), counts it, and sends it to the client's current outer context.
    #[inline]
    fn forward_to_client(
        &mut self,
        idx: u32,
        client_id: ClientId,
        packet: &[u8],
        pkt: &IpPacket,
        t: Nanos,
    ) -> Result<(), DropReason> {
        let (outer, outer_idx) = self
            .clients
            .get(&client_id)
            .and_then(|c| Some((c.outer?, c.outer_idx)))
            .ok_or(DropReason::NoOpenFlow)?;
        // The frame is built in one buffer: header room, the packet (NATed in place), MAC.
        let mut frame = self.take_buffer(tunnel::HEADER_LEN + pkt.len + tunnel::MAC_LEN);
        let Some(flow) = self.flows.get_mut(idx) else {
            return Err(DropReason::NoOpenFlow);
        };
        frame.resize(tunnel::HEADER_LEN, 0);
        frame.extend_from_slice(&packet[..pkt.len]);
        let out = &mut frame[tunnel::HEADER_LEN..];
        let is_error = pkt.transport == Transport::IcmpError;
        if let Some(dns) = &flow.dns {
            if is_error {
                packet::translate_icmp_error(out, pkt, flow.resource_ip, dns.proxy_ip);
            } else {
                packet::rewrite(out, pkt, Field::Src, dns.proxy_ip);
            }
        }
        flow.rx_packets += 1;
        if !is_error {
            flow.rx_bytes += pkt.payload_len as u64;
        }
        flow.last_packet = t;
        flow.add_outer(outer_idx);
        let verdict = match pkt.transport {
            Transport::Tcp {
                flags, seq, ack, ..
            } => flow
                .tcp
                .on_packet(Direction::ToClient, flags, seq, ack, pkt.payload_len),
            _ => TcpVerdict::Open,
        };
        self.send_frame_to_client(client_id, outer, frame);
        self.close_if_done(idx, verdict, t);
        Ok(())
    }

    /// Seals `inner` in a tunnel frame for `client_id` and queues it to `outer`.
    fn send_to_client(&mut self, client_id: ClientId, outer: OuterContext, inner: &[u8]) {
        let mut frame = self.take_buffer(tunnel::HEADER_LEN + inner.len() + tunnel::MAC_LEN);
        frame.resize(tunnel::HEADER_LEN, 0);
        frame.extend_from_slice(inner);
        self.send_frame_to_client(client_id, outer, frame);
    }

    /// Seals `frame` ([`tunnel::HEADER_LEN`] bytes of room, then the inner packet) for
    /// `client_id` and queues it to `outer`.
    fn send_frame_to_client(&mut self, client_id: ClientId, outer: OuterContext, frame: Vec<u8>) {
        let Some(client) = self.clients.get_mut(&client_id) else {
            return;
        };
        let header = FrameHeader {
            session_id: client.config.session_id,
            counter: client.tx_counter,
        };
        client.tx_counter += 1;
        let mut payload = frame;
        tunnel::seal_in_place(&client.config.key, header, &mut payload);
        self.transmits.push_back(Transmit::Udp {
            src: outer.local,
            dst: outer.remote,
            payload,
        });
    }

    // ---------------------------------------------------------------- closing flows

    fn close_if_done(&mut self, idx: u32, verdict: TcpVerdict, t: Nanos) {
        match verdict {
            TcpVerdict::Open => {}
            TcpVerdict::ClosedByFin => self.close_flow(idx, CloseReason::Fin, t),
            TcpVerdict::ClosedByRst => self.close_flow(idx, CloseReason::Rst, t),
        }
    }

    /// Removes a flow and, with flow logs on, emits its record.
    pub(crate) fn close_flow(&mut self, idx: u32, reason: CloseReason, end: Nanos) {
        let Some(flow) = self.flows.remove(idx) else {
            return;
        };
        if !self.config.flow_logs {
            return;
        }
        let record = flow_log::record(&self.config.time_origin, &self.outers, &flow, reason, end);
        flow_log::emit_completed(&record);
        self.records.push_back(record);
    }

    /// Slots of the open flows that satisfy `pred`, ordered by start time, then slot.
    pub(crate) fn flows_in_start_order(&self, pred: impl Fn(&Flow) -> bool) -> Vec<u32> {
        let mut v: Vec<(Nanos, u32)> = self
            .flows
            .open_slots()
            .into_iter()
            .filter_map(|i| self.flows.get(i).filter(|f| pred(f)).map(|f| (f.start, i)))
            .collect();
        v.sort_unstable();
        v.into_iter().map(|(_, i)| i).collect()
    }
}

/// The key of a resource packet's flow (resource side): the packet's own endpoints, or for an
/// ICMP error, those of the packet it quotes (which must be from the packet's destination).
#[inline]
fn resource_side_key(packet: &[u8], pkt: &IpPacket) -> Result<FlowKey, DropReason> {
    match pkt.transport {
        Transport::IcmpError => {
            let q = packet::parse_quoted(packet, pkt).map_err(|e| match e {
                PacketError::Unsupported => DropReason::IcmpNotAllowed,
                _ => DropReason::MalformedPacket,
            })?;
            if q.src != pkt.dst {
                return Err(DropReason::NoOpenFlow);
            }
            Ok(FlowKey {
                protocol: q.protocol,
                src: q.dst,
                src_port: q.dst_port,
                dst: q.src,
                dst_port: q.src_port,
            })
        }
        Transport::Echo { request: true, .. } | Transport::IcmpOther => {
            Err(DropReason::IcmpNotAllowed)
        }
        _ => {
            let (protocol, src_port, dst_port) =
                pkt.flow_ports().ok_or(DropReason::IcmpNotAllowed)?;
            Ok(FlowKey {
                protocol,
                src: pkt.src,
                src_port,
                dst: pkt.dst,
                dst_port,
            })
        }
    }
}
