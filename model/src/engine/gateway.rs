//! The gateway: its open flows and the records they close into (idle timeout, FIN, RST,
//! revocation, shutdown), the drops it decides (answering denials with ICMP), grants,
//! revocations and restarts, and the outer context it last heard each client from.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use scenario_format::Grant;
use scenario_format::settings::GATEWAY_MAX_FLOWS_PER_CLIENT;
use scenario_format::timing::TUN_LATENCY_MS;

use super::coverage;
use super::dns::Mapping;
use super::network::{Frame, Hop};
use super::{Engine, Event, Result, Traffic};
use crate::rules::{self, is_proxy_ip, seq_ge};
use crate::{
    ClientId, CloseReason, DropPlace, DropReason, FlowRecord, GatewayDropReason, OuterContext,
    Packet, PacketDrop, PacketKind, Protocol, ResourceId, utc,
};

/// Which resource a packet that opens a flow is for and, for a proxy IP, the index of its DNS
/// mapping; or why the gateway denies it.
pub(super) type Authorised = std::result::Result<(usize, Option<usize>), GatewayDropReason>;

/// The sides of a flow, as indices of its per-side arrays.
const CLIENT_SIDE: usize = 0;
const RESOURCE_SIDE: usize = 1;

#[derive(Debug)]
struct OpenFlow {
    client: usize,
    resource: usize,
    protocol: Protocol,
    src: SocketAddr,
    /// The destination IP the client uses (proxy IP for DNS resources).
    visible: IpAddr,
    real: IpAddr,
    dst_port: u16,
    domain: Option<String>,
    outer: Vec<OuterContext>,
    start: u64,
    last: u64,
    tx_packets: u64,
    tx_bytes: u64,
    rx_packets: u64,
    rx_bytes: u64,
    /// Per side (0 client, 1 resource): the acknowledgement number that covers its first FIN.
    fin: [Option<u32>; 2],
    acked: [bool; 2],
    conn: Option<u32>,
}

impl OpenFlow {
    /// The flow client `c`'s `packet` opens at `t` for `resource`, to the real IP (and name)
    /// of `destination`.
    fn new(
        c: usize,
        resource: usize,
        packet: &Packet,
        destination: (IpAddr, Option<String>),
        conn: Option<u32>,
        t: u64,
    ) -> Self {
        let (real, domain) = destination;
        OpenFlow {
            client: c,
            resource,
            protocol: rules::protocol(packet),
            src: packet.src,
            visible: packet.dst.ip(),
            real,
            dst_port: packet.dst.port(),
            domain,
            outer: Vec::new(),
            start: t,
            last: t,
            tx_packets: 0,
            tx_bytes: 0,
            rx_packets: 0,
            rx_bytes: 0,
            fin: [None; 2],
            acked: [false; 2],
            conn,
        }
    }

    /// Whether client `c`'s packet belongs to this flow (its destination as the client sees it).
    fn carries_from_client(&self, c: usize, packet: &Packet) -> bool {
        self.client == c
            && self.protocol == rules::protocol(packet)
            && self.src == packet.src
            && self.visible == packet.dst.ip()
            && self.dst_port == packet.dst.port()
    }

    /// Whether a resource packet to client `c` belongs to this flow.
    fn carries_from_resource(&self, c: usize, packet: &Packet) -> bool {
        self.client == c
            && self.protocol == rules::protocol(packet)
            && self.src == packet.dst
            && self.real == packet.src.ip()
            && self.dst_port == packet.src.port()
    }

    /// Whether two flows have the same key (client, resource, protocol, source, real
    /// destination).
    fn same_key(&self, other: &OpenFlow) -> bool {
        self.client == other.client
            && self.resource == other.resource
            && self.protocol == other.protocol
            && self.src == other.src
            && self.real == other.real
            && self.dst_port == other.dst_port
    }

    /// Counts a packet forwarded from `side` at `t` (tx from the client, rx from the
    /// resource) and notes the outer context it belongs to.
    fn count(&mut self, side: usize, packet: &Packet, context: OuterContext, t: u64) {
        let (packets, bytes) = if side == CLIENT_SIDE {
            (&mut self.tx_packets, &mut self.tx_bytes)
        } else {
            (&mut self.rx_packets, &mut self.rx_bytes)
        };
        *packets += 1;
        *bytes += packet.payload();
        self.last = t;
        self.add_context(context);
    }

    fn add_context(&mut self, context: OuterContext) {
        if !self.outer.contains(&context) && self.outer.len() < proto::flow::MAX_OUTER_CONTEXTS {
            self.outer.push(context);
        }
    }

    /// The record of the flow closed for `reason` at `end`.
    fn into_record(self, reason: CloseReason, end: u64) -> FlowRecord {
        FlowRecord {
            client: ClientId(self.client as u32),
            resource: ResourceId(self.resource as u32),
            protocol: self.protocol,
            start: utc(self.start),
            end: utc(end),
            last_packet: utc(self.last),
            inner_src_ip: self.src.ip(),
            inner_src_port: self.src.port(),
            inner_dst_ip: self.real,
            inner_dst_port: self.dst_port,
            inner_domain: self.domain,
            outer_contexts: self.outer,
            tx_packets: self.tx_packets,
            tx_bytes: self.tx_bytes,
            rx_packets: self.rx_packets,
            rx_bytes: self.rx_bytes,
            close_reason: reason,
        }
    }
}

/// A client packet at the gateway, with the outer context it came in on and the hops back to
/// the client.
#[derive(Debug)]
pub(super) struct Inbound {
    pub(super) context: OuterContext,
    pub(super) back: Vec<Hop>,
    pub(super) traffic: Traffic,
}

#[derive(Debug, Default)]
pub(super) struct GatewayState {
    pub(super) epoch: u32,
    flows: Vec<OpenFlow>,
    /// Per client: the outer context of the last accepted frame and the hops back to it.
    contexts: BTreeMap<usize, (OuterContext, Vec<Hop>)>,
    pub(super) mappings: Vec<Mapping>,
}

impl GatewayState {
    /// Whether this gateway (since its last start) took a frame of client `c`.
    pub(super) fn took_frame_of(&self, c: usize) -> bool {
        self.contexts.contains_key(&c)
    }
}

/// Whether a client packet may open a flow: anything but TCP, and of TCP only a bare SYN.
fn may_open_flow(packet: &Packet) -> bool {
    match packet.kind {
        PacketKind::Tcp { flags, .. } => flags.syn && !flags.ack && !flags.fin && !flags.rst,
        _ => true,
    }
}

/// The ICMP administratively prohibited the gateway answers a denied client packet with.
fn icmp_prohibited(denied: &Packet) -> Packet {
    Packet {
        src: SocketAddr::new(denied.dst.ip(), 0),
        dst: SocketAddr::new(denied.src.ip(), 0),
        kind: PacketKind::IcmpProhibited {
            quoted_protocol: rules::protocol(denied),
            quoted_src: denied.src,
            quoted_dst: denied.dst,
        },
    }
}

impl Engine<'_> {
    // ---------------------------------------------------------------- control plane

    /// A `grant` step (or a re-grant, replacing the filters).
    pub(super) fn grant(&mut self, grant: &Grant) -> Result<()> {
        let topology = &self.scenario.topology;
        if let Err(e) = self
            .rules
            .grant(topology, &grant.client, &grant.resource, &grant.filters)
        {
            return self.fail(e);
        }
        Ok(())
    }

    /// A `revoke` step: the resource's gateway closes the client's flows to it.
    pub(super) fn revoke(&mut self, client: &str, resource: &str, t: u64) -> Result<()> {
        let c = self.client_index(client)?;
        let r = self.resource_index(resource)?;
        let g = self.rules.resources[r].0;
        self.expire(g, t);
        self.close_where(g, t, CloseReason::Revoked, |f| {
            f.client == c && f.resource == r
        });
        self.rules.grants.remove(&(c, r));
        Ok(())
    }

    /// A `gateway-restart` step: the gateway shuts down (closing every flow), forgets its outer
    /// contexts and DNS answers, and resolves every proxy IP again.
    pub(super) fn restart_gateway(&mut self, gateway: &str, t: u64) -> Result<()> {
        let g = self.gateway_index(gateway)?;
        self.shutdown(g, t);
        self.ensure_no_dns_queue(g)?;
        let state = &mut self.gateways[g];
        state.epoch += 1;
        state.contexts.clear();
        self.resolve_all_again(g, t);
        Ok(())
    }

    // ---------------------------------------------------------------- client packets

    /// A frame from client `frame.client` reaches the gateway: it notes the outer context (and
    /// the way back to the client) and decides on the packet.
    pub(super) fn gateway_from_client(&mut self, frame: Frame, t: u64) -> Result<()> {
        let (g, c) = (frame.gateway, frame.client);
        let packet = frame.traffic.packet;
        self.note_flow_boundaries(g, t, |f| f.carries_from_client(c, &packet));
        self.expire(g, t);
        self.ensure_on_path(
            c,
            g,
            frame.context,
            "a frame from an outer context the client has already left reached the gateway",
        )?;
        // A source that is not the client's tunnel IP: the frame is not taken (no roaming, no
        // replay window move), the packet is dropped.
        if self.client_of_tunnel_ip(packet.src.ip()) != Some(c) {
            self.gateway_drop(g, c, GatewayDropReason::ForgedSource, frame.traffic, t);
            return Ok(());
        }
        let back: Vec<Hop> = frame.hops.iter().rev().cloned().collect();
        self.gateways[g]
            .contexts
            .insert(c, (frame.context, back.clone()));
        let inbound = Inbound {
            context: frame.context,
            back,
            traffic: frame.traffic,
        };
        self.client_packet(g, c, inbound, t, false)
    }

    /// The gateway's decision on a client packet: forward it on its open flow, or open a flow
    /// (once its DNS mapping has an answer), or drop it. `from_queue`: the packet waited for
    /// that answer.
    pub(super) fn client_packet(
        &mut self,
        g: usize,
        c: usize,
        inbound: Inbound,
        t: u64,
        from_queue: bool,
    ) -> Result<()> {
        let packet = inbound.traffic.packet;
        let open = self.gateways[g]
            .flows
            .iter()
            .position(|f| f.carries_from_client(c, &packet));
        let state = self.tcp_state(g, open, packet.src, packet.dst.port());
        self.coverage.note_tcp(state, &packet);
        if let Some(index) = open {
            self.ensure_same_resource(g, c, index, &packet)?;
            return self.forward_tx(g, index, inbound, t);
        }
        if !may_open_flow(&packet) {
            self.drop_client_packet(g, c, GatewayDropReason::TcpWithoutSyn, &inbound, t);
            return Ok(());
        }
        let (resource, mapping) = match self.authorise(g, c, &packet) {
            Ok(found) => found,
            Err(reason) => return self.deny(g, c, reason, inbound, t),
        };
        let destination = match mapping {
            None => (packet.dst.ip(), None),
            Some(m) => match self.mapped_destination(g, m, t, from_queue)? {
                Some(found) => found,
                None => {
                    self.queue_for_answer(g, c, m, inbound, t);
                    return Ok(());
                }
            },
        };
        let open_of_client = self.gateways[g]
            .flows
            .iter()
            .filter(|f| f.client == c)
            .count();
        if open_of_client >= GATEWAY_MAX_FLOWS_PER_CLIENT {
            self.drop_client_packet(g, c, GatewayDropReason::FlowTableFull, &inbound, t);
            return Ok(());
        }
        let flow = OpenFlow::new(c, resource, &packet, destination, inbound.traffic.conn, t);
        let index = self.open_flow(g, flow)?;
        self.forward_tx(g, index, inbound, t)
    }

    /// A packet of an open flow that a grant change would now give to another resource is not
    /// modelled.
    fn ensure_same_resource(
        &self,
        g: usize,
        c: usize,
        index: usize,
        packet: &Packet,
    ) -> Result<()> {
        if !is_proxy_ip(packet.dst.ip())
            && let Ok(r) = self.rules.authorise_cidr(g, c, packet)
            && r != self.gateways[g].flows[index].resource
        {
            return self.fail(
                "a packet of an open flow that a grant change would now give to another \
                 resource",
            );
        }
        Ok(())
    }

    fn authorise(&self, g: usize, c: usize, packet: &Packet) -> Authorised {
        if is_proxy_ip(packet.dst.ip()) {
            self.authorise_proxy(g, c, packet)
        } else {
            self.rules.authorise_cidr(g, c, packet).map(|r| (r, None))
        }
    }

    /// Drops a denied client packet and answers with ICMP administratively prohibited.
    fn deny(
        &mut self,
        g: usize,
        c: usize,
        reason: GatewayDropReason,
        inbound: Inbound,
        t: u64,
    ) -> Result<()> {
        self.drop_client_packet(g, c, reason, &inbound, t);
        let icmp = Traffic {
            packet: icmp_prohibited(&inbound.traffic.packet),
            conn: None,
            step: inbound.traffic.step,
        };
        self.send_to_client(g, c, inbound.context, inbound.back, icmp, t)
    }

    /// Adds a new flow and returns its index; two flows with one key are not modelled.
    fn open_flow(&mut self, g: usize, flow: OpenFlow) -> Result<usize> {
        if self.gateways[g].flows.iter().any(|f| f.same_key(&flow)) {
            return self.fail(
                "two destinations of one client map to the same flow key (two names with one \
                 real IP)",
            );
        }
        self.note_reuse(flow.protocol, flow.src, flow.real, flow.dst_port);
        let flows = &mut self.gateways[g].flows;
        flows.push(flow);
        Ok(flows.len() - 1)
    }

    /// Drops a client packet at the gateway.
    pub(super) fn drop_client_packet(
        &mut self,
        g: usize,
        c: usize,
        reason: GatewayDropReason,
        inbound: &Inbound,
        t: u64,
    ) {
        self.gateway_drop(g, c, reason, inbound.traffic, t);
    }

    /// Drops a packet of (or to) client `c` at gateway `g`.
    fn gateway_drop(
        &mut self,
        g: usize,
        c: usize,
        reason: GatewayDropReason,
        traffic: Traffic,
        t: u64,
    ) {
        self.lost(&traffic);
        self.out.drops.push(PacketDrop {
            at_ms: t,
            place: DropPlace::Gateway {
                gateway: g as u32,
                client: Some(ClientId(c as u32)),
            },
            reason: DropReason::Gateway(reason),
            packet: traffic.packet,
            step: traffic.step,
        });
    }

    /// Forwards a client packet on flow `index` to the resource, its destination translated to
    /// the flow's real IP.
    fn forward_tx(&mut self, g: usize, index: usize, inbound: Inbound, t: u64) -> Result<()> {
        let packet = inbound.traffic.packet;
        let flow = &mut self.gateways[g].flows[index];
        flow.count(CLIENT_SIDE, &packet, inbound.context, t);
        let translated = Packet {
            dst: SocketAddr::new(flow.real, packet.dst.port()),
            ..packet
        };
        self.schedule(
            t + TUN_LATENCY_MS,
            Event::AtResource {
                gateway: g,
                traffic: Traffic {
                    packet: translated,
                    ..inbound.traffic
                },
            },
        );
        self.tcp_progress(g, index, CLIENT_SIDE, &packet, t)
    }

    /// The FIN / RST rules of docs/flows.md for a forwarded segment from `side` (0 client,
    /// 1 resource), after it was counted.
    fn tcp_progress(
        &mut self,
        g: usize,
        index: usize,
        side: usize,
        packet: &Packet,
        t: u64,
    ) -> Result<()> {
        let PacketKind::Tcp {
            flags,
            seq,
            ack,
            payload,
        } = packet.kind
        else {
            return Ok(());
        };
        if flags.rst {
            self.close(g, index, CloseReason::Rst, t);
            return Ok(());
        }
        let flow = &self.gateways[g].flows[index];
        let fin_involved = flags.fin || flow.fin.iter().any(Option::is_some);
        if fin_involved && self.disturbed(flow.conn) {
            return self.fail(
                "a FIN exchange on a TCP connection that lost or reordered a segment (the \
                 scripted acknowledgement numbers are not pinned down)",
            );
        }
        let flow = &mut self.gateways[g].flows[index];
        if flags.fin && flow.fin[side].is_none() {
            let covers = seq
                .wrapping_add(u32::from(payload))
                .wrapping_add(1)
                .wrapping_add(u32::from(flags.syn));
            flow.fin[side] = Some(covers);
        }
        let other = 1 - side;
        if flags.ack
            && let Some(covers) = flow.fin[other]
            && seq_ge(ack, covers)
        {
            flow.acked[other] = true;
        }
        if flow.fin.iter().all(Option::is_some) && flow.acked.iter().all(|a| *a) {
            self.close(g, index, CloseReason::Fin, t);
        }
        Ok(())
    }

    // ---------------------------------------------------------------- resource packets

    /// A packet from the resource responder reaches the gateway's TUN side: forwarded to the
    /// client on its open flow, source translated back to what the client sent to, or dropped.
    pub(super) fn gateway_from_resource(
        &mut self,
        g: usize,
        traffic: Traffic,
        t: u64,
    ) -> Result<()> {
        let packet = traffic.packet;
        let to = packet.dst.ip();
        let Some(c) = self.client_of_tunnel_ip(to) else {
            return self.fail(format!("a resource packet to {to}, which is no client"));
        };
        self.note_flow_boundaries(g, t, |f| f.carries_from_resource(c, &packet));
        self.expire(g, t);
        let open = self.gateways[g]
            .flows
            .iter()
            .position(|f| f.carries_from_resource(c, &packet));
        let state = self.tcp_state(g, open, packet.dst, packet.src.port());
        self.coverage.note_tcp(state, &packet);
        let Some(index) = open else {
            self.gateway_drop(g, c, GatewayDropReason::NoOpenFlow, traffic, t);
            return Ok(());
        };
        let Some((context, back)) = self.gateways[g].contexts.get(&c).cloned() else {
            return self.fail("the gateway has a flow but no outer context for its client");
        };
        let flow = &mut self.gateways[g].flows[index];
        flow.count(RESOURCE_SIDE, &packet, context, t);
        let translated = Traffic {
            packet: Packet {
                src: SocketAddr::new(flow.visible, packet.src.port()),
                ..packet
            },
            ..traffic
        };
        self.send_to_client(g, c, context, back, translated, t)?;
        self.tcp_progress(g, index, RESOURCE_SIDE, &packet, t)
    }

    // ---------------------------------------------------------------- coverage

    /// Notes the packets that meet the idle deadline of the flow they belong to.
    fn note_flow_boundaries(&mut self, g: usize, t: u64, belongs: impl Fn(&OpenFlow) -> bool) {
        for flow in self.gateways[g].flows.iter().filter(|f| belongs(f)) {
            let timer = match flow.protocol {
                Protocol::Udp => coverage::FLOW_IDLE_UDP,
                Protocol::Tcp => coverage::FLOW_IDLE_TCP,
                _ => continue,
            };
            self.coverage
                .note_boundary(timer, t, flow.last + self.idle_ms);
        }
    }

    /// The idle deadlines of gateway `g`'s open flows.
    pub(super) fn pending_flow_timers(&self, g: usize) -> Vec<coverage::PendingDeadline> {
        self.gateways[g]
            .flows
            .iter()
            .filter_map(|flow| {
                let timer = match flow.protocol {
                    Protocol::Udp => coverage::FLOW_IDLE_UDP,
                    Protocol::Tcp => coverage::FLOW_IDLE_TCP,
                    _ => return None,
                };
                Some(coverage::PendingDeadline {
                    timer,
                    at_ms: flow.last + self.idle_ms,
                    client: flow.client,
                    ports: Some((flow.src.port(), flow.dst_port)),
                    domain: None,
                })
            })
            .collect()
    }

    /// The TCP state, for the coverage grid, of the flow at `open` (if any) of the client
    /// address `client` and resource port `port`.
    fn tcp_state(
        &self,
        g: usize,
        open: Option<usize>,
        client: SocketAddr,
        port: u16,
    ) -> &'static str {
        if let Some(index) = open {
            let flow = &self.gateways[g].flows[index];
            return match flow.fin.iter().filter(|fin| fin.is_some()).count() {
                0 => coverage::TCP_STATES[1],
                1 => coverage::TCP_STATES[2],
                _ => coverage::TCP_STATES[3],
            };
        }
        let closed_by_tcp = self.out.flows.iter().rev().find(|record| {
            record.protocol == Protocol::Tcp
                && record.inner_src_ip == client.ip()
                && record.inner_src_port == client.port()
                && record.inner_dst_port == port
        });
        match closed_by_tcp.map(|record| record.close_reason) {
            Some(CloseReason::Fin | CloseReason::Rst) => coverage::TCP_STATES[4],
            _ => coverage::TCP_STATES[0],
        }
    }

    // ---------------------------------------------------------------- closing flows

    /// Runs the idle deadlines `<= t`: a flow is closed at exactly `last + idle_timeout`.
    pub(super) fn expire(&mut self, g: usize, t: u64) {
        let idle = self.idle_ms;
        while let Some(index) = self.gateways[g]
            .flows
            .iter()
            .enumerate()
            .filter(|(_, f)| f.last + idle <= t)
            .min_by_key(|(i, f)| (f.last, *i))
            .map(|(i, _)| i)
        {
            let end = self.gateways[g].flows[index].last;
            self.close(g, index, CloseReason::Idle, end);
        }
    }

    fn close_where(
        &mut self,
        g: usize,
        t: u64,
        reason: CloseReason,
        which: impl Fn(&OpenFlow) -> bool,
    ) {
        while let Some(index) = self.gateways[g].flows.iter().position(&which) {
            self.close(g, index, reason, t);
        }
    }

    pub(super) fn shutdown(&mut self, g: usize, t: u64) {
        self.expire(g, t);
        self.close_where(g, t, CloseReason::Shutdown, |_| true);
    }

    fn close(&mut self, g: usize, index: usize, reason: CloseReason, end: u64) {
        let flow = self.gateways[g].flows.remove(index);
        self.out.flows.push(flow.into_record(reason, end));
    }
}
