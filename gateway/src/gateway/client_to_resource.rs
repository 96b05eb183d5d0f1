//! Client -> resource: a tunnel frame from a client is opened (tunnel header, session, MAC,
//! replay window, inner packet, source = the client's tunnel IP), and its packet goes along its
//! open flow (DNS NAT: proxy IP -> real IP) or starts a new one, waits for a DNS answer, or is
//! denied with an ICMP error. The accepted frame moves the replay window and, roaming, the
//! client.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use proto::flow::{ClientId, OuterContext, ResourceId};
use proto::tunnel;

use super::Gateway;
use super::drops::packet_error;
use super::flow_admission::NewFlow;
use crate::drop_reason::DropReason;
use crate::flow_log;
use crate::flow_table::{DnsFlow, Flow, FlowKey, Nanos};
use crate::output::{DroppedPacket, Event, Transmit};
use crate::packet::{self, Field, IpPacket, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Transport};
use crate::tcp_tracker::Direction;

/// A tunnel frame's drop, and how far the frame got: not opened (the frame is all the gateway
/// has), or opened (the client and its inner packet, borrowed from the frame).
#[derive(Debug, Clone, Copy)]
struct FrameDrop<'f> {
    reason: DropReason,
    opened: Option<(ClientId, &'f [u8])>,
}

/// A flow about to start: its client-side key and where it goes.
struct NewFlowStart {
    client_id: ClientId,
    key: FlowKey,
    resource: ResourceId,
    real_ip: IpAddr,
    dns: Option<Arc<DnsFlow>>,
}

impl Gateway {
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
            }) => Err(self.drop_copy(reason, Some(client), inner, DroppedPacket::Ip)),
            Err(FrameDrop {
                reason,
                opened: None,
            }) => {
                let client = tunnel::peek_header(frame)
                    .ok()
                    .and_then(|h| self.sessions.get(&h.session_id).copied());
                Err(self.drop_copy(reason, client, frame, DroppedPacket::Datagram))
            }
        }
    }

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
        let inner = tunnel::verify(&client.config.key, tunnel::Direction::ToGateway, frame)
            .map_err(|_| unopened(DropReason::BadMac))?;
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
    pub(super) fn route_to_resource(
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
        if self.flows.len() >= self.config.max_flows
            || self.flows.open_of(client_id) >= self.config.max_flows_per_client
        {
            return Err(DropReason::FlowTableFull);
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
        let verdict = flow.count(
            Direction::ToResource,
            pkt,
            pkt.payload_len as u64,
            outer_idx,
            t,
        );
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
}
