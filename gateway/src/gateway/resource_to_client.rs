//! Resource -> client: a resource packet passes only along an open flow of the client it is
//! for (source NAT back to the proxy IP; ICMP errors translated, quoted header included) and
//! goes, sealed in a tunnel frame, to the client's current outer context.

use std::time::Instant;

use proto::flow::{ClientId, OuterContext};
use proto::tunnel::{self, FrameHeader};

use super::Gateway;
use super::drops::packet_error;
use crate::drop_reason::DropReason;
use crate::flow_table::{FlowKey, Nanos};
use crate::output::{DroppedPacket, Transmit};
use crate::packet::{self, Field, IpPacket, PacketError, Transport};
use crate::tcp_tracker::Direction;

impl Gateway {
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
            self.drop_copy(reason, client, packet, DroppedPacket::Ip)
        })
    }

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
        let payload = if is_error { 0 } else { pkt.payload_len as u64 };
        let verdict = flow.count(Direction::ToClient, pkt, payload, outer_idx, t);
        self.send_frame_to_client(client_id, outer, frame);
        self.close_if_done(idx, verdict, t);
        Ok(())
    }

    /// Seals `inner` in a tunnel frame for `client_id` and queues it to `outer`.
    pub(super) fn send_to_client(
        &mut self,
        client_id: ClientId,
        outer: OuterContext,
        inner: &[u8],
    ) {
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
        tunnel::seal_in_place(
            &client.config.key,
            tunnel::Direction::ToClient,
            header,
            &mut payload,
        );
        self.transmits.push_back(Transmit::Udp {
            src: outer.local,
            dst: outer.remote,
            payload,
        });
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
