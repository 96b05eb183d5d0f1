//! Just enough IPv4/IPv6 + TCP/UDP/ICMP parsing for the data path, the in-place address
//! rewrites of DNS NAT (with checksums fixed incrementally), and the ICMP messages the gateway
//! builds or translates. Every parser checks lengths first and returns an error rather than
//! panicking.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proto::flow::Protocol;

use crate::checksum;

/// TCP flag bits (RFC 9293).
pub(crate) const TCP_FIN: u8 = 0x01;
pub(crate) const TCP_SYN: u8 = 0x02;
pub(crate) const TCP_RST: u8 = 0x04;
pub(crate) const TCP_ACK: u8 = 0x10;

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;

/// Bytes of the invoking packet quoted in an ICMPv6 error the gateway builds, so the whole
/// message fits the IPv6 minimum MTU (1280 - 40 - 8).
const ICMPV6_QUOTE_MAX: usize = 1232;

/// What the transport layer of a packet is, as far as the gateway cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Tcp {
        src_port: u16,
        dst_port: u16,
        seq: u32,
        ack: u32,
        flags: u8,
    },
    Udp {
        src_port: u16,
        dst_port: u16,
    },
    /// ICMP / ICMPv6 echo request or reply.
    Echo {
        request: bool,
        id: u16,
    },
    /// An ICMP error (destination unreachable, time exceeded, parameter problem, ICMPv6 packet
    /// too big); the quoted packet starts 8 bytes into the ICMP message.
    IcmpError,
    /// Any other ICMP message.
    IcmpOther,
}

/// A parsed IP packet: offsets into the buffer it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpPacket {
    pub(crate) src: IpAddr,
    pub(crate) dst: IpAddr,
    /// Length of the packet proper (bytes after it, e.g. link padding, are not part of it).
    pub(crate) len: usize,
    /// Offset of the transport header.
    pub(crate) l4: usize,
    /// IP protocol / next header number.
    pub(crate) ip_proto: u8,
    pub(crate) transport: Transport,
    /// Transport payload bytes: TCP segment data, UDP payload, ICMP body after 8 bytes.
    pub(crate) payload_len: usize,
}

/// Why a packet could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PacketError {
    Malformed,
    Fragment,
    Unsupported,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn v4_at(b: &[u8], at: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]))
}

fn v6_at(b: &[u8], at: usize) -> IpAddr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[at..at + 16]);
    IpAddr::V6(Ipv6Addr::from(o))
}

impl IpPacket {
    pub(crate) fn is_v4(&self) -> bool {
        self.src.is_ipv4()
    }

    /// The flow protocol and the (source, destination) ports used in flow keys: TCP/UDP ports,
    /// or for ICMP echo the identifier on the client's side and 0 on the resource's side.
    /// `None` for ICMP errors and other ICMP.
    pub(crate) fn flow_ports(&self) -> Option<(Protocol, u16, u16)> {
        match self.transport {
            Transport::Tcp {
                src_port, dst_port, ..
            } => Some((Protocol::Tcp, src_port, dst_port)),
            Transport::Udp { src_port, dst_port } => Some((Protocol::Udp, src_port, dst_port)),
            Transport::Echo { request: true, id } => Some((Protocol::Icmp, id, 0)),
            Transport::Echo { request: false, id } => Some((Protocol::Icmp, 0, id)),
            Transport::IcmpError | Transport::IcmpOther => None,
        }
    }
}

/// The destination address in the IP header of `p`, if the version nibble is 4 or 6 and the
/// fixed header is all there (nothing else is checked): for telling which client a packet that
/// does not parse was for.
pub(crate) fn peek_dst(p: &[u8]) -> Option<IpAddr> {
    match p.first()? >> 4 {
        4 if p.len() >= 20 => Some(v4_at(p, 16)),
        6 if p.len() >= 40 => Some(v6_at(p, 24)),
        _ => None,
    }
}

/// Parses an IPv4 or IPv6 packet (no IPv4 fragments, no IPv6 extension headers).
pub(crate) fn parse(p: &[u8]) -> Result<IpPacket, PacketError> {
    let first = *p.first().ok_or(PacketError::Malformed)?;
    let (src, dst, l4, len, ip_proto) = match first >> 4 {
        4 => {
            if p.len() < 20 {
                return Err(PacketError::Malformed);
            }
            let ihl = usize::from(first & 0x0F) * 4;
            let total = usize::from(be16(p, 2));
            if ihl < 20 || total < ihl || total > p.len() {
                return Err(PacketError::Malformed);
            }
            if checksum::of(&p[..ihl]) != 0 {
                return Err(PacketError::Malformed);
            }
            if be16(p, 6) & 0x3FFF != 0 {
                return Err(PacketError::Fragment);
            }
            (v4_at(p, 12), v4_at(p, 16), ihl, total, p[9])
        }
        6 => {
            if p.len() < 40 {
                return Err(PacketError::Malformed);
            }
            let total = 40 + usize::from(be16(p, 4));
            if total > p.len() {
                return Err(PacketError::Malformed);
            }
            (v6_at(p, 8), v6_at(p, 24), 40, total, p[6])
        }
        _ => return Err(PacketError::Malformed),
    };
    let seg = &p[l4..len];
    let v4 = src.is_ipv4();
    let (transport, payload_len) = match ip_proto {
        IPPROTO_TCP => {
            if seg.len() < 20 {
                return Err(PacketError::Malformed);
            }
            let doff = usize::from(seg[12] >> 4) * 4;
            if doff < 20 || doff > seg.len() {
                return Err(PacketError::Malformed);
            }
            let t = Transport::Tcp {
                src_port: be16(seg, 0),
                dst_port: be16(seg, 2),
                seq: be32(seg, 4),
                ack: be32(seg, 8),
                flags: seg[13],
            };
            (t, seg.len() - doff)
        }
        IPPROTO_UDP => {
            if seg.len() < 8 || usize::from(be16(seg, 4)) != seg.len() {
                return Err(PacketError::Malformed);
            }
            let t = Transport::Udp {
                src_port: be16(seg, 0),
                dst_port: be16(seg, 2),
            };
            (t, seg.len() - 8)
        }
        IPPROTO_ICMP if v4 => (icmp_transport(seg, [8, 0], &[3, 11, 12])?, seg.len() - 8),
        IPPROTO_ICMPV6 if !v4 => (
            icmp_transport(seg, [128, 129], &[1, 2, 3, 4])?,
            seg.len() - 8,
        ),
        _ => return Err(PacketError::Unsupported),
    };
    Ok(IpPacket {
        src,
        dst,
        len,
        l4,
        ip_proto,
        transport,
        payload_len,
    })
}

fn icmp_transport(seg: &[u8], echo: [u8; 2], errors: &[u8]) -> Result<Transport, PacketError> {
    if seg.len() < 8 {
        return Err(PacketError::Malformed);
    }
    let ty = seg[0];
    Ok(if ty == echo[0] || ty == echo[1] {
        Transport::Echo {
            request: ty == echo[0],
            id: be16(seg, 4),
        }
    } else if errors.contains(&ty) {
        Transport::IcmpError
    } else {
        Transport::IcmpOther
    })
}

/// The packet quoted inside an ICMP error: the original client -> resource packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quoted {
    pub(crate) src: IpAddr,
    pub(crate) dst: IpAddr,
    pub(crate) protocol: Protocol,
    /// Client-side port (echo: identifier).
    pub(crate) src_port: u16,
    /// Resource-side port (echo: 0).
    pub(crate) dst_port: u16,
}

/// Parses the quoted packet of an ICMP error in `p` (an error of the same IP family as the
/// quote): the quoted IP header and at least 8 bytes of its transport header.
pub(crate) fn parse_quoted(p: &[u8], pkt: &IpPacket) -> Result<Quoted, PacketError> {
    let q = p.get(pkt.l4 + 8..pkt.len).ok_or(PacketError::Malformed)?;
    let (src, dst, hl, proto) = if pkt.is_v4() {
        if q.len() < 20 || q[0] >> 4 != 4 {
            return Err(PacketError::Malformed);
        }
        let ihl = usize::from(q[0] & 0x0F) * 4;
        if ihl < 20 {
            return Err(PacketError::Malformed);
        }
        (v4_at(q, 12), v4_at(q, 16), ihl, q[9])
    } else {
        if q.len() < 40 || q[0] >> 4 != 6 {
            return Err(PacketError::Malformed);
        }
        (v6_at(q, 8), v6_at(q, 24), 40, q[6])
    };
    let t = q.get(hl..hl + 8).ok_or(PacketError::Malformed)?;
    let (protocol, src_port, dst_port) = match proto {
        IPPROTO_TCP => (Protocol::Tcp, be16(t, 0), be16(t, 2)),
        IPPROTO_UDP => (Protocol::Udp, be16(t, 0), be16(t, 2)),
        IPPROTO_ICMP if pkt.is_v4() && t[0] == 8 => (Protocol::Icmp, be16(t, 4), 0),
        IPPROTO_ICMPV6 if !pkt.is_v4() && t[0] == 128 => (Protocol::Icmp, be16(t, 4), 0),
        _ => return Err(PacketError::Unsupported),
    };
    Ok(Quoted {
        src,
        dst,
        protocol,
        src_port,
        dst_port,
    })
}

/// Which address of a header to rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Src,
    Dst,
}

fn addr_range(v4: bool, field: Field) -> std::ops::Range<usize> {
    match (v4, field) {
        (true, Field::Src) => 12..16,
        (true, Field::Dst) => 16..20,
        (false, Field::Src) => 8..24,
        (false, Field::Dst) => 24..40,
    }
}

fn ip_octets(ip: IpAddr) -> ([u8; 16], usize) {
    match ip {
        IpAddr::V4(v4) => {
            let mut o = [0u8; 16];
            o[..4].copy_from_slice(&v4.octets());
            (o, 4)
        }
        IpAddr::V6(v6) => (v6.octets(), 16),
    }
}

/// Offset (from the transport header) of a checksum that covers the pseudo-header, if any
/// and if `available` bytes of transport header hold it. UDP over IPv4 with checksum 0 (none)
/// is left alone by the caller.
fn pseudo_checksum_offset(v4: bool, ip_proto: u8) -> Option<usize> {
    match ip_proto {
        IPPROTO_TCP => Some(16),
        IPPROTO_UDP => Some(6),
        IPPROTO_ICMPV6 if !v4 => Some(2),
        _ => None,
    }
}

/// Rewrites one address of the IP header at `ip` (header length `hl`, transport header at
/// `ip + hl`, `seg_end` the end of what is present) and fixes the IPv4 header checksum and the
/// transport checksum incrementally, when that checksum lies inside the buffer.
fn rewrite_header_addr(
    p: &mut [u8],
    ip: usize,
    hl: usize,
    seg_end: usize,
    ip_proto: u8,
    field: Field,
    new: IpAddr,
) {
    let v4 = new.is_ipv4();
    let range = addr_range(v4, field);
    let at = ip + range.start..ip + range.end;
    // The change of the address, computed once, fixes both checksums that cover it.
    let delta = match new {
        IpAddr::V4(new) => {
            let slot = &mut p[at];
            let old = [slot[0], slot[1], slot[2], slot[3]];
            let new = new.octets();
            if old == new {
                return;
            }
            slot.copy_from_slice(&new);
            checksum::delta4(old, new)
        }
        IpAddr::V6(new) => {
            let slot = &mut p[at];
            let mut old = [0u8; 16];
            old.copy_from_slice(slot);
            let new = new.octets();
            if old == new {
                return;
            }
            slot.copy_from_slice(&new);
            checksum::delta(&old, &new)
        }
    };
    if v4 {
        let c = be16(p, ip + 10);
        p[ip + 10..ip + 12].copy_from_slice(&checksum::apply(c, delta).to_be_bytes());
    }
    if let Some(off) = pseudo_checksum_offset(v4, ip_proto) {
        let at = ip + hl + off;
        if at + 2 <= seg_end {
            let c = be16(p, at);
            let is_udp = ip_proto == IPPROTO_UDP;
            if !(is_udp && v4 && c == 0) {
                let mut n = checksum::apply(c, delta);
                if is_udp && n == 0 {
                    n = 0xFFFF;
                }
                p[at..at + 2].copy_from_slice(&n.to_be_bytes());
            }
        }
    }
}

/// Rewrites the source or destination of a parsed packet, checksums fixed.
pub(crate) fn rewrite(p: &mut [u8], pkt: &IpPacket, field: Field, new: IpAddr) {
    rewrite_header_addr(p, 0, pkt.l4, pkt.len, pkt.ip_proto, field, new);
}

/// Translates an ICMP error from a DNS-NATed resource back to the proxy IP: the outer source
/// (if it is the real IP) and the quoted destination become `proxy`, the quoted IPv4 header
/// checksum and quoted transport checksum (when quoted whole) are fixed, and the ICMP checksum
/// is recomputed. `p` must hold a packet that `parse` and `parse_quoted` accepted.
pub(crate) fn translate_icmp_error(p: &mut [u8], pkt: &IpPacket, real: IpAddr, proxy: IpAddr) {
    if pkt.src == real {
        rewrite(p, pkt, Field::Src, proxy);
    }
    let q = pkt.l4 + 8;
    let (hl, proto) = if pkt.is_v4() {
        (usize::from(p[q] & 0x0F) * 4, p[q + 9])
    } else {
        (40, p[q + 6])
    };
    rewrite_header_addr(p, q, hl, pkt.len, proto, Field::Dst, proxy);
    // The ICMP checksum covers the (changed) quote; recompute it whole.
    p[pkt.l4 + 2..pkt.l4 + 4].copy_from_slice(&[0, 0]);
    let mut sum = 0;
    if !pkt.is_v4() {
        let src = v6_at(p, 8);
        sum = checksum::pseudo_header(src, pkt.dst, IPPROTO_ICMPV6, pkt.len - pkt.l4);
    }
    let c = checksum::finish(checksum::add(sum, &p[pkt.l4..pkt.len]));
    p[pkt.l4 + 2..pkt.l4 + 4].copy_from_slice(&c.to_be_bytes());
}

/// Builds the ICMP "administratively prohibited" error for a denied client packet
/// (`original`, parsed as `pkt`): ICMPv4 type 3 code 13 quoting the IP header and 8 bytes,
/// or ICMPv6 type 1 code 1 quoting as much as fits in 1280 bytes. It comes from the address
/// the client tried to reach and goes to the client.
pub(crate) fn admin_prohibited(original: &[u8], pkt: &IpPacket) -> Vec<u8> {
    if pkt.is_v4() {
        let quote = &original[..pkt.len.min(pkt.l4 + 8)];
        let total = 20 + 8 + quote.len();
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0, 0, 64]);
        out.extend_from_slice(&[IPPROTO_ICMP, 0, 0]);
        out.extend_from_slice(&ip_octets(pkt.dst).0[..4]);
        out.extend_from_slice(&ip_octets(pkt.src).0[..4]);
        let c = checksum::of(&out[..20]);
        out[10..12].copy_from_slice(&c.to_be_bytes());
        out.extend_from_slice(&[3, 13, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(quote);
        let c = checksum::of(&out[20..]);
        out[22..24].copy_from_slice(&c.to_be_bytes());
        out
    } else {
        let quote = &original[..pkt.len.min(ICMPV6_QUOTE_MAX)];
        let plen = 8 + quote.len();
        let mut out = Vec::with_capacity(40 + plen);
        out.extend_from_slice(&[
            0x60,
            0,
            0,
            0,
            (plen >> 8) as u8,
            plen as u8,
            IPPROTO_ICMPV6,
            64,
        ]);
        out.extend_from_slice(&ip_octets(pkt.dst).0);
        out.extend_from_slice(&ip_octets(pkt.src).0);
        out.extend_from_slice(&[1, 1, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(quote);
        let sum = checksum::pseudo_header(pkt.dst, pkt.src, IPPROTO_ICMPV6, plen);
        let c = checksum::finish(checksum::add(sum, &out[40..]));
        out[42..44].copy_from_slice(&c.to_be_bytes());
        out
    }
}
