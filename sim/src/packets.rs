//! Inner IP packets (what travels inside the tunnel and on the gateway's TUN side) as the
//! scripted endpoints build and read them, with etherparse, checksums included. What a run
//! observes of a packet is an [`observation::Packet`].

use std::net::{IpAddr, SocketAddr};

use etherparse::{PacketBuilder, SlicedPacket, TcpOptionElement, TransportSlice};
use observation::{TcpFlags, ip_addresses};
use scenario_format::settings::TCP_MSS;

use crate::tcp::Segment;

fn ip_builder(
    src: IpAddr,
    dst: IpAddr,
) -> Option<etherparse::PacketBuilderStep<etherparse::IpHeaders>> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Some(PacketBuilder::ipv4(s.octets(), d.octets(), 64)),
        (IpAddr::V6(s), IpAddr::V6(d)) => Some(PacketBuilder::ipv6(s.octets(), d.octets(), 64)),
        _ => None,
    }
}

/// A UDP packet; empty if the families differ (the caller's scenario was validated).
pub fn udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let Some(builder) = ip_builder(src.ip(), dst.ip()) else {
        return Vec::new();
    };
    let builder = builder.udp(src.port(), dst.port());
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    // Writing into a Vec cannot fail.
    let _ = builder.write(&mut out, payload);
    out
}

/// A TCP segment whose payload is `segment.payload` bytes of `fill`.
pub fn tcp(src: SocketAddr, dst: SocketAddr, segment: Segment, fill: u8) -> Vec<u8> {
    let Some(builder) = ip_builder(src.ip(), dst.ip()) else {
        return Vec::new();
    };
    let mut builder = builder.tcp(src.port(), dst.port(), segment.seq, 64240);
    let flags = segment.flags;
    if flags.syn {
        builder = builder.syn();
    }
    let mut builder = if flags.syn {
        // A SYN announces the MSS; nothing else the scripts send carries options.
        match builder.options(&[TcpOptionElement::MaximumSegmentSize(TCP_MSS)]) {
            Ok(with_mss) => with_mss,
            Err(_) => return Vec::new(),
        }
    } else {
        builder
    };
    if flags.ack {
        builder = builder.ack(segment.ack);
    }
    if flags.fin {
        builder = builder.fin();
    }
    if flags.rst {
        builder = builder.rst();
    }
    if flags.psh {
        builder = builder.psh();
    }
    let payload = vec![fill; usize::from(segment.payload)];
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    let _ = builder.write(&mut out, &payload);
    out
}

/// What a packet is, as far as the scripts care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inner {
    Udp {
        src: SocketAddr,
        dst: SocketAddr,
        payload: Vec<u8>,
    },
    Tcp {
        src: SocketAddr,
        dst: SocketAddr,
        segment: Segment,
    },
    Icmp {
        src: IpAddr,
        dst: IpAddr,
        len: usize,
    },
    Other {
        len: usize,
    },
}

/// Reads what the scripts need of a packet (a UDP payload to echo, a TCP segment to answer).
pub fn parse(packet: &[u8]) -> Inner {
    let Ok(sliced) = SlicedPacket::from_ip(packet) else {
        return Inner::Other { len: packet.len() };
    };
    let Some((src, dst)) = ip_addresses(&sliced.net) else {
        return Inner::Other { len: packet.len() };
    };
    match &sliced.transport {
        Some(TransportSlice::Udp(udp)) => Inner::Udp {
            src: SocketAddr::new(src, udp.source_port()),
            dst: SocketAddr::new(dst, udp.destination_port()),
            payload: udp.payload().to_vec(),
        },
        Some(TransportSlice::Tcp(tcp)) => Inner::Tcp {
            src: SocketAddr::new(src, tcp.source_port()),
            dst: SocketAddr::new(dst, tcp.destination_port()),
            segment: Segment {
                flags: TcpFlags::of(tcp),
                seq: tcp.sequence_number(),
                ack: tcp.acknowledgment_number(),
                payload: tcp.payload().len() as u16,
            },
        },
        Some(TransportSlice::Icmpv4(_) | TransportSlice::Icmpv6(_)) => Inner::Icmp {
            src,
            dst,
            len: packet.len(),
        },
        _ => Inner::Other { len: packet.len() },
    }
}
