//! What the gateway hands back to its caller: datagrams and TUN packets to send
//! ([`Transmit`]) and things that happened ([`Event`]), among them every drop
//! ([`Event::PacketDropped`] with the [`DroppedPacket`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use proto::flow::{ClientId, OuterContext, Protocol, ResourceId, UtcTime};

use crate::drop_reason::DropReason;

/// Something to send. Once sent, its buffer may be handed back with
/// [`Gateway::recycle`](crate::Gateway::recycle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// A UDP datagram from `src` (a gateway address) to `dst`: a tunnel frame to a client
    /// (to the remote side of its current outer context) or a DNS query to the DNS server.
    Udp {
        /// The gateway's local address.
        src: SocketAddr,
        /// The destination.
        dst: SocketAddr,
        /// The datagram payload.
        payload: Vec<u8>,
    },
    /// An IP packet to write to the TUN device (towards a resource).
    Tun(Vec<u8>),
}

/// The start of a flow (the "flow started" log line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowStarted {
    /// The client.
    pub client: ClientId,
    /// The resource.
    pub resource: ResourceId,
    /// TCP, UDP or ICMP.
    pub protocol: Protocol,
    /// Time of the first packet.
    pub start: UtcTime,
    /// Client tunnel IP.
    pub inner_src_ip: IpAddr,
    /// Client port (ICMP: echo identifier).
    pub inner_src_port: u16,
    /// Real resource IP.
    pub inner_dst_ip: IpAddr,
    /// Resource port (ICMP: 0).
    pub inner_dst_port: u16,
    /// Domain, for DNS resources.
    pub inner_domain: Option<String>,
    /// The outer context of the first packet.
    pub outer_context: OuterContext,
}

/// What the gateway dropped, exactly as it received it. The variant says which it is: an IP
/// packet, or a datagram the gateway did not open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DroppedPacket {
    /// An IP packet (possibly one that does not parse: `malformed-packet`, `fragment`,
    /// `unsupported-protocol`): a client's inner packet exactly as the client sealed it in its
    /// frame (before DNS NAT; for a packet held for a DNS answer, as it was when held), or a
    /// packet exactly as read from the TUN device.
    Ip(Vec<u8>),
    /// A UDP payload the gateway did not open, exactly as received: a tunnel frame (header,
    /// inner packet and MAC) dropped before its MAC verified (`malformed-frame`,
    /// `unknown-session`, `bad-mac`, or `shut-down`), a datagram that is no tunnel frame
    /// (`not-tunnel-frame`), or a datagram from the DNS server (`dns-unexpected-answer`,
    /// `shut-down`). Its length is the frame's length.
    Datagram(Vec<u8>),
}

impl DroppedPacket {
    /// The bytes, whichever kind.
    pub fn bytes(&self) -> &[u8] {
        match self {
            DroppedPacket::Ip(b) | DroppedPacket::Datagram(b) => b,
        }
    }

    /// The buffer, e.g. to hand back with [`Gateway::recycle`](crate::Gateway::recycle).
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            DroppedPacket::Ip(b) | DroppedPacket::Datagram(b) => b,
        }
    }
}

/// Something that happened inside the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A flow started (only with flow logs enabled).
    FlowStarted(FlowStarted),
    /// A valid frame arrived from a new outer context: replies now go there.
    ClientRoamed {
        /// The client.
        client: ClientId,
        /// The previous outer context, if any.
        from: Option<OuterContext>,
        /// The new one.
        to: OuterContext,
    },
    /// A DNS proxy IP's domain resolved; new flows to the proxy IP go to `addr`.
    DnsResolved {
        /// The client whose mapping it is.
        client: ClientId,
        /// The proxy IP.
        proxy_ip: IpAddr,
        /// The domain.
        domain: String,
        /// The first address of the answer.
        addr: IpAddr,
        /// How long the answer is used before re-resolving.
        ttl: Duration,
    },
    /// A resolution failed (error code, no address, or no answer after every attempt); packets
    /// waiting for it were dropped.
    DnsResolutionFailed {
        /// The client whose mapping it is.
        client: ClientId,
        /// The proxy IP.
        proxy_ip: IpAddr,
        /// The domain.
        domain: String,
    },
    /// The gateway dropped something. Every increment of a drop counter
    /// ([`Gateway::drop_counters`](crate::Gateway::drop_counters)) comes with exactly one of
    /// these, in the order of the drops, and there is none without one: the drop of a call's own
    /// input (which the call also returns as `Err(reason)`, after any drop that the deadlines run
    /// first caused), and the later drops of packets held for a DNS answer (the resolution
    /// failed, the mapping was replaced or removed, the packet was denied when handled after the
    /// answer, or `shutdown`).
    PacketDropped {
        /// Why: the counter that was incremented.
        reason: DropReason,
        /// The client the packet came from or was for: for a client's packet, the client whose
        /// authenticated frame carried it; for an unopened tunnel frame, the client whose
        /// session id its header names (not authenticated: a `bad-mac` frame may be forged);
        /// for a TUN packet, the client whose tunnel IP is the destination in its IP header.
        /// `None` where the packet names no client (no readable header, an unknown session or
        /// destination, a datagram that is no tunnel frame, a DNS datagram).
        client: Option<ClientId>,
        /// What was dropped.
        packet: DroppedPacket,
    },
}
