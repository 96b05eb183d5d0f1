//! What the gateway hands back to its caller: datagrams and TUN packets to send
//! ([`Transmit`]) and things that happened ([`Event`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use proto::flow::{ClientId, OuterContext, Protocol, ResourceId, UtcTime};

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
}
