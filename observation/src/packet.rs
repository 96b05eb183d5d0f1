//! Inner IP packets: what travels inside the tunnel and on a gateway's TUN side, as the
//! receiver sees it (after any DNS NAT).

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
};

use etherparse::{NetSlice, SlicedPacket, TcpSlice, TransportSlice};
use proto::flow::Protocol;
use serde::Serialize;

/// TCP flags of a segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
    pub psh: bool,
}

/// `a >= b` in TCP sequence space (RFC 9293, modulo 2^32).
pub fn seq_ge(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

impl TcpFlags {
    pub const NONE: TcpFlags = TcpFlags {
        syn: false,
        ack: false,
        fin: false,
        rst: false,
        psh: false,
    };
    pub const SYN: TcpFlags = TcpFlags {
        syn: true,
        ..TcpFlags::NONE
    };
    pub const SYN_ACK: TcpFlags = TcpFlags {
        syn: true,
        ack: true,
        ..TcpFlags::NONE
    };
    pub const ACK: TcpFlags = TcpFlags {
        ack: true,
        ..TcpFlags::NONE
    };
    pub const PSH_ACK: TcpFlags = TcpFlags {
        ack: true,
        psh: true,
        ..TcpFlags::NONE
    };
    pub const FIN_ACK: TcpFlags = TcpFlags {
        ack: true,
        fin: true,
        ..TcpFlags::NONE
    };
    pub const RST_ACK: TcpFlags = TcpFlags {
        ack: true,
        rst: true,
        ..TcpFlags::NONE
    };

    /// The flags of a TCP header read with etherparse.
    pub fn of(tcp: &TcpSlice<'_>) -> Self {
        TcpFlags {
            syn: tcp.syn(),
            ack: tcp.ack(),
            fin: tcp.fin(),
            rst: tcp.rst(),
            psh: tcp.psh(),
        }
    }

    /// The flags as tcpdump writes them: `S`, `F`, `R`, `P`, `.` for ACK (`S.` is a SYN-ACK).
    pub fn letters(self) -> String {
        [
            (self.syn, 'S'),
            (self.fin, 'F'),
            (self.rst, 'R'),
            (self.psh, 'P'),
            (self.ack, '.'),
        ]
        .into_iter()
        .filter_map(|(set, letter)| set.then_some(letter))
        .collect()
    }
}

/// What an inner packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PacketKind {
    Udp {
        payload: u16,
    },
    Tcp {
        flags: TcpFlags,
        seq: u32,
        ack: u32,
        payload: u16,
    },
    /// ICMP administratively prohibited (IPv4 type 3 code 13, IPv6 type 1 code 1), quoting the
    /// denied packet.
    IcmpProhibited {
        quoted_protocol: Protocol,
        quoted_src: SocketAddr,
        quoted_dst: SocketAddr,
    },
    /// Any other ICMP or ICMPv6 message (the model never predicts one).
    Icmp {
        icmp_type: u8,
        code: u8,
    },
    /// Bytes that are not an IP packet this vocabulary reads (the model never predicts one).
    Unreadable {
        len: usize,
    },
}

/// An inner IP packet. ICMP messages and unreadable bytes use port 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Packet {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub kind: PacketKind,
}

impl Packet {
    /// `len` bytes that are not an IP packet (or not readable as one).
    pub fn unreadable(len: usize) -> Self {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        Packet {
            src: unspecified,
            dst: unspecified,
            kind: PacketKind::Unreadable { len },
        }
    }

    /// Reads an inner IPv4 or IPv6 packet (etherparse, independently of the code under test).
    pub fn parse(bytes: &[u8]) -> Self {
        let unreadable = Self::unreadable(bytes.len());
        let Ok(sliced) = SlicedPacket::from_ip(bytes) else {
            return unreadable;
        };
        let Some((src, dst)) = ip_addresses(&sliced.net) else {
            return unreadable;
        };
        let addressed = |src_port, dst_port, kind| Packet {
            src: SocketAddr::new(src, src_port),
            dst: SocketAddr::new(dst, dst_port),
            kind,
        };
        match &sliced.transport {
            Some(TransportSlice::Udp(udp)) => addressed(
                udp.source_port(),
                udp.destination_port(),
                PacketKind::Udp {
                    payload: udp.payload().len() as u16,
                },
            ),
            Some(TransportSlice::Tcp(tcp)) => addressed(
                tcp.source_port(),
                tcp.destination_port(),
                PacketKind::Tcp {
                    flags: TcpFlags::of(tcp),
                    seq: tcp.sequence_number(),
                    ack: tcp.acknowledgment_number(),
                    payload: tcp.payload().len() as u16,
                },
            ),
            Some(TransportSlice::Icmpv4(message)) => {
                let (icmp_type, code) = (message.type_u8(), message.code_u8());
                let prohibited = (icmp_type, code) == (3, 13);
                addressed(
                    0,
                    0,
                    icmp_kind(icmp_type, code, message.payload(), prohibited),
                )
            }
            Some(TransportSlice::Icmpv6(message)) => {
                let (icmp_type, code) = (message.type_u8(), message.code_u8());
                let prohibited = (icmp_type, code) == (1, 1);
                addressed(
                    0,
                    0,
                    icmp_kind(icmp_type, code, message.payload(), prohibited),
                )
            }
            _ => unreadable,
        }
    }

    /// The flow protocol of the packet (`None` for what is not UDP, TCP or ICMP).
    pub fn protocol(&self) -> Option<Protocol> {
        match self.kind {
            PacketKind::Udp { .. } => Some(Protocol::Udp),
            PacketKind::Tcp { .. } => Some(Protocol::Tcp),
            PacketKind::IcmpProhibited { .. } | PacketKind::Icmp { .. } => Some(Protocol::Icmp),
            PacketKind::Unreadable { .. } => None,
        }
    }

    /// Payload bytes as flows.md counts them (an ICMP message counts 0).
    pub fn payload(&self) -> u64 {
        match self.kind {
            PacketKind::Udp { payload } | PacketKind::Tcp { payload, .. } => u64::from(payload),
            _ => 0,
        }
    }
}

/// A packet as the trace, the routing timeline, `show` and the checks print it:
/// `TCP a > b [S.] seq 5000 ack 1001 len 0`.
impl fmt::Display for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (src, dst) = (self.src, self.dst);
        match self.kind {
            PacketKind::Udp { payload } => write!(f, "UDP {src} > {dst} len {payload}"),
            PacketKind::Tcp {
                flags,
                seq,
                ack,
                payload,
            } => write!(
                f,
                "TCP {src} > {dst} [{}] seq {seq} ack {ack} len {payload}",
                flags.letters()
            ),
            PacketKind::IcmpProhibited {
                quoted_protocol,
                quoted_src,
                quoted_dst,
            } => write!(
                f,
                "ICMP {} > {} prohibited, quoting {} {} > {}",
                src.ip(),
                dst.ip(),
                quoted_protocol.as_str().to_uppercase(),
                bare_port_zero(quoted_src),
                bare_port_zero(quoted_dst)
            ),
            PacketKind::Icmp { icmp_type, code } => write!(
                f,
                "ICMP {} > {} type {icmp_type} code {code}",
                src.ip(),
                dst.ip()
            ),
            PacketKind::Unreadable { len } => write!(f, "unreadable packet of {len} bytes"),
        }
    }
}

/// An address quoted in an ICMP error: `ip:port`, or the bare IP for port 0.
fn bare_port_zero(addr: SocketAddr) -> String {
    if addr.port() == 0 {
        addr.ip().to_string()
    } else {
        addr.to_string()
    }
}

/// The source and destination addresses of a parsed IPv4 or IPv6 packet.
pub fn ip_addresses(net: &Option<NetSlice<'_>>) -> Option<(IpAddr, IpAddr)> {
    match net {
        Some(NetSlice::Ipv4(ip)) => Some((
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        )),
        Some(NetSlice::Ipv6(ip)) => Some((
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        )),
        _ => None,
    }
}

/// An ICMP message: administratively prohibited with the packet it quotes, or any other.
fn icmp_kind(icmp_type: u8, code: u8, quoted: &[u8], prohibited: bool) -> PacketKind {
    match quoted_addresses(quoted) {
        Some((quoted_protocol, quoted_src, quoted_dst)) if prohibited => {
            PacketKind::IcmpProhibited {
                quoted_protocol,
                quoted_src,
                quoted_dst,
            }
        }
        _ => PacketKind::Icmp { icmp_type, code },
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
