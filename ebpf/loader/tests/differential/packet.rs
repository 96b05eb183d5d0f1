//! A datagram sent to the relay, how it is framed, and the relay addresses it is sent to.

use std::net::{IpAddr, SocketAddr};

use support::relay_addr;
use xdp_fixtures::frame::{self, PEER_MAC, RELAY_MAC};

use crate::support;

/// How a datagram is put into a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Ethernet + IP + UDP with a correct checksum, random TOS and TTL.
    Plain { tos: u8, ttl: u8 },
    /// IPv4 with a zero (absent) UDP checksum.
    ZeroChecksum,
    /// Padded with zeros to the 60-byte Ethernet minimum (a no-op for longer frames).
    Trailer,
    /// IPv4 options or an IPv6 hop-by-hop header.
    Options,
    /// IPv4 with more-fragments set, or IPv6 behind a fragment header.
    Fragment,
}

/// One datagram sent to the relay.
#[derive(Debug, Clone)]
pub(crate) struct Packet {
    /// What the generator meant it to be, for hit counts and failure reports.
    pub(crate) kind: &'static str,
    pub(crate) from: SocketAddr,
    pub(crate) to: SocketAddr,
    pub(crate) payload: Vec<u8>,
    pub(crate) framing: Framing,
}

impl Packet {
    /// A datagram in `framing`; an IPv6 one without a UDP checksum (mandatory over IPv6) is
    /// framed plainly instead.
    pub(crate) fn new(
        kind: &'static str,
        from: SocketAddr,
        to: SocketAddr,
        payload: Vec<u8>,
        framing: Framing,
    ) -> Self {
        let framing = if framing == Framing::ZeroChecksum && from.is_ipv6() {
            Framing::Plain { tos: 0, ttl: 64 }
        } else {
            framing
        };
        Self {
            kind,
            from,
            to,
            payload,
            framing,
        }
    }

    pub(crate) fn frame(&self) -> Vec<u8> {
        let (from, to, payload) = (self.from, self.to, &self.payload[..]);
        match self.framing {
            Framing::Plain { tos, ttl } => {
                frame::udp_frame(PEER_MAC, RELAY_MAC, from, to, tos, ttl, payload)
            }
            Framing::ZeroChecksum => {
                let mut out = frame::udp(from, to, payload);
                frame::clear_udp_checksum(&mut out);
                out
            }
            Framing::Trailer => frame::ethernet_padded(frame::udp(from, to, payload), 60),
            Framing::Options if from.is_ipv4() => frame::ipv4_with_options(from, to, payload),
            Framing::Options => frame::ipv6_with_hop_by_hop(from, to, payload),
            Framing::Fragment if from.is_ipv4() => {
                let mut out = frame::udp(from, to, payload);
                frame::set_ipv4_more_fragments(&mut out);
                out
            }
            Framing::Fragment => frame::ipv6_fragment(from, to, payload),
        }
    }

    pub(crate) fn tos(&self) -> u8 {
        match self.framing {
            Framing::Plain { tos, .. } => tos,
            _ => 0,
        }
    }

    pub(crate) fn describe(&self) -> String {
        let shown = self.payload.len().min(24);
        format!(
            "{} {} -> {} framing {:?}, {} payload bytes {}{}",
            self.kind,
            self.from,
            self.to,
            self.framing,
            self.payload.len(),
            hex(&self.payload[..shown]),
            if shown < self.payload.len() { ".." } else { "" }
        )
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn channel_data(channel: u16, data: &[u8], padding: &[u8]) -> Vec<u8> {
    frame::channel_data(channel, data, padding)
}

pub(crate) fn is_relay_ip(ip: IpAddr) -> bool {
    ip == IpAddr::from(xdp_fixtures::world::RELAY_V4)
        || ip == IpAddr::from(xdp_fixtures::world::RELAY_V6)
}

/// The relay's TURN address of `client`'s family.
pub(crate) fn turn_server_of(client: SocketAddr) -> SocketAddr {
    relay_addr(client.ip(), relay::TURN_PORT)
}
