//! What the simulation saw happen to inner packets, in the simulator's own terms: every packet
//! that reached a client or a resource responder, and every packet a gateway dropped or a link
//! fault took. The harness translates these into the reference model's vocabulary; the sim
//! itself never depends on the model.

use std::net::{IpAddr, SocketAddr};

use etherparse::{SlicedPacket, TransportSlice};
use proto::{
    channel_data::{self, ChannelData},
    flow::Protocol,
    stun::{self, Attribute, MessageClass},
    tunnel,
};

pub use gateway::DropReason as GatewayDropReason;

use crate::tcp::Flags;

/// An inner packet as its receiver sees it (ports are 0 for ICMP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PacketSummary {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub kind: SummaryKind,
}

/// What an inner packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SummaryKind {
    Udp {
        payload: u16,
    },
    Tcp {
        syn: bool,
        ack_flag: bool,
        fin: bool,
        rst: bool,
        psh: bool,
        seq: u32,
        ack: u32,
        payload: u16,
    },
    /// ICMP administratively prohibited (IPv4 type 3 code 13, IPv6 type 1 code 1) and the
    /// packet it quotes.
    IcmpProhibited {
        quoted_protocol: Protocol,
        quoted_src: SocketAddr,
        quoted_dst: SocketAddr,
    },
    /// Any other ICMP or ICMPv6 message.
    Icmp {
        icmp_type: u8,
        code: u8,
    },
    /// Not an IP packet the summary understands.
    Other {
        len: usize,
    },
}

impl SummaryKind {
    /// The TCP flags of a TCP summary.
    pub fn tcp_flags(&self) -> Option<Flags> {
        match *self {
            SummaryKind::Tcp {
                syn,
                ack_flag,
                fin,
                rst,
                psh,
                ..
            } => Some(Flags {
                syn,
                ack: ack_flag,
                fin,
                rst,
                psh,
            }),
            _ => None,
        }
    }
}

impl std::fmt::Display for PacketSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (src, dst) = (self.src, self.dst);
        match self.kind {
            SummaryKind::Udp { payload } => write!(f, "UDP {src} > {dst} len {payload}"),
            SummaryKind::Tcp {
                seq, ack, payload, ..
            } => {
                let flags = self.kind.tcp_flags().unwrap_or_default();
                let names = flags.letters();
                write!(
                    f,
                    "TCP {src} > {dst} [{names}] seq {seq} ack {ack} len {payload}"
                )
            }
            SummaryKind::IcmpProhibited {
                quoted_protocol,
                quoted_src,
                quoted_dst,
            } => write!(
                f,
                "ICMP prohibited {} > {} quoting {quoted_protocol:?} {quoted_src} > {quoted_dst}",
                src.ip(),
                dst.ip()
            ),
            SummaryKind::Icmp { icmp_type, code } => write!(
                f,
                "ICMP type {icmp_type} code {code} {} > {}",
                src.ip(),
                dst.ip()
            ),
            SummaryKind::Other { len } => write!(f, "IP len {len}"),
        }
    }
}

/// Who received a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObservedReceiver {
    /// Client `client` took a tunnel frame from gateway `gateway` off its socket; `remote` and
    /// `local` are the outer context as the gateway names it: the client's end (its socket, or
    /// its relayed address for a frame that came through its relay) and the gateway's end (its
    /// socket or relayed address) the frame came from.
    Client {
        client: usize,
        gateway: usize,
        remote: SocketAddr,
        local: SocketAddr,
    },
    /// The resource responder behind gateway `gateway`'s TUN side.
    Resource { gateway: usize },
}

/// One inner packet that arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObservedDelivery {
    pub at_ms: u64,
    pub to: ObservedReceiver,
    pub packet: PacketSummary,
}

/// Where a packet was lost.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObservedPlace {
    /// Gateway `gateway` dropped it; `client` is the client it came from or was for (none
    /// when the packet names no client).
    Gateway {
        gateway: usize,
        client: Option<usize>,
    },
    /// A fault on the link between two named hosts (names sorted) took a tunnel frame.
    Link { between: [String; 2] },
}

/// Why a packet was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropCause {
    /// The gateway's own drop reason.
    Gateway(GatewayDropReason),
    /// Sent on a partitioned link.
    Partition,
    /// Taken by a `drop-next` fault.
    DropNext,
    /// Held by a `hold` fault and never released before the run ended (`at_ms` is the end).
    StillHeld,
}

/// One inner packet that never arrived.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObservedDrop {
    pub at_ms: u64,
    pub place: ObservedPlace,
    pub cause: DropCause,
    /// The inner packet at that point (for a client packet at a gateway: as the client sent
    /// it, before DNS NAT).
    pub packet: PacketSummary,
}

/// What a packet of `len` bytes that cannot be read is summarised as.
pub fn unreadable(len: usize) -> PacketSummary {
    let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
    PacketSummary {
        src: unspecified,
        dst: unspecified,
        kind: SummaryKind::Other { len },
    }
}

/// Summarises an inner IP packet.
pub fn summarize(packet: &[u8]) -> PacketSummary {
    let other = unreadable(packet.len());
    let Ok(sliced) = SlicedPacket::from_ip(packet) else {
        return other;
    };
    let Some((src, dst)) = crate::packets::ip_addresses(&sliced.net) else {
        return other;
    };
    let icmp = |icmp_type: u8, code: u8, quoted: &[u8], prohibited: bool| {
        let kind = match quoted_addresses(quoted) {
            Some((quoted_protocol, quoted_src, quoted_dst)) if prohibited => {
                SummaryKind::IcmpProhibited {
                    quoted_protocol,
                    quoted_src,
                    quoted_dst,
                }
            }
            _ => SummaryKind::Icmp { icmp_type, code },
        };
        PacketSummary {
            src: SocketAddr::new(src, 0),
            dst: SocketAddr::new(dst, 0),
            kind,
        }
    };
    match &sliced.transport {
        Some(TransportSlice::Udp(udp)) => PacketSummary {
            src: SocketAddr::new(src, udp.source_port()),
            dst: SocketAddr::new(dst, udp.destination_port()),
            kind: SummaryKind::Udp {
                payload: udp.payload().len() as u16,
            },
        },
        Some(TransportSlice::Tcp(tcp)) => PacketSummary {
            src: SocketAddr::new(src, tcp.source_port()),
            dst: SocketAddr::new(dst, tcp.destination_port()),
            kind: SummaryKind::Tcp {
                syn: tcp.syn(),
                ack_flag: tcp.ack(),
                fin: tcp.fin(),
                rst: tcp.rst(),
                psh: tcp.psh(),
                seq: tcp.sequence_number(),
                ack: tcp.acknowledgment_number(),
                payload: tcp.payload().len() as u16,
            },
        },
        Some(TransportSlice::Icmpv4(message)) => {
            let (icmp_type, code) = (message.type_u8(), message.code_u8());
            icmp(
                icmp_type,
                code,
                message.payload(),
                (icmp_type, code) == (3, 13),
            )
        }
        Some(TransportSlice::Icmpv6(message)) => {
            let (icmp_type, code) = (message.type_u8(), message.code_u8());
            icmp(
                icmp_type,
                code,
                message.payload(),
                (icmp_type, code) == (1, 1),
            )
        }
        _ => other,
    }
}

/// The protocol and both ends of the packet an ICMP error quotes (its IP header and at least
/// the first 4 bytes of its transport header).
fn quoted_addresses(quoted: &[u8]) -> Option<(Protocol, SocketAddr, SocketAddr)> {
    let (protocol, src, dst, transport) = match quoted.first()? >> 4 {
        4 => {
            let header_len = usize::from(quoted[0] & 0x0f) * 4;
            let src: [u8; 4] = quoted.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = quoted.get(16..20)?.try_into().ok()?;
            (
                *quoted.get(9)?,
                IpAddr::from(src),
                IpAddr::from(dst),
                quoted.get(header_len..)?,
            )
        }
        6 => {
            let src: [u8; 16] = quoted.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = quoted.get(24..40)?.try_into().ok()?;
            (
                *quoted.get(6)?,
                IpAddr::from(src),
                IpAddr::from(dst),
                quoted.get(40..)?,
            )
        }
        _ => return None,
    };
    let ports = |transport: &[u8]| -> Option<(u16, u16)> {
        Some((
            u16::from_be_bytes([*transport.first()?, *transport.get(1)?]),
            u16::from_be_bytes([*transport.get(2)?, *transport.get(3)?]),
        ))
    };
    let (protocol, (src_port, dst_port)) = match protocol {
        6 => (Protocol::Tcp, ports(transport)?),
        17 => (Protocol::Udp, ports(transport)?),
        1 | 58 => (Protocol::Icmp, (0, 0)),
        _ => return None,
    };
    Some((
        protocol,
        SocketAddr::new(src, src_port),
        SocketAddr::new(dst, dst_port),
    ))
}

/// The tunnel frame a datagram carries: the datagram itself, or the data of a ChannelData
/// message or of a TURN Send or Data indication.
pub(crate) fn tunnel_frame_in(datagram: &[u8]) -> Option<Vec<u8>> {
    if tunnel::is_tunnel_frame(datagram) {
        return Some(datagram.to_vec());
    }
    if channel_data::looks_like_channel_data(datagram) {
        let message = ChannelData::parse(datagram).ok()?;
        return tunnel::is_tunnel_frame(message.data).then(|| message.data.to_vec());
    }
    if stun::looks_like_stun(datagram) {
        let message = stun::decode(datagram).ok()?;
        if message.class() != MessageClass::Indication {
            return None;
        }
        return message.attributes().find_map(|attribute| match attribute {
            Attribute::Data(data) if tunnel::is_tunnel_frame(data.data()) => {
                Some(data.data().to_vec())
            }
            _ => None,
        });
    }
    None
}

/// The client whose session a tunnel frame belongs to, and the inner packet (if the frame
/// opens under that client's key).
pub(crate) fn open_frame(frame: &[u8]) -> Option<(usize, Vec<u8>)> {
    crate::wire::open_tunnel_frame(frame).map(|(client, inner)| (client, inner.to_vec()))
}

/// The inner packet of a tunnel frame a datagram carries, if it carries one.
pub(crate) fn tunnel_packet_in(datagram: &[u8]) -> Option<PacketSummary> {
    let frame = tunnel_frame_in(datagram)?;
    let (_, inner) = open_frame(&frame)?;
    Some(summarize(&inner))
}
