//! Every datagram on the simulated wire, as the hosts put it there and took it off: the raw
//! material of the routing trace, the pcap and the invariants about addresses.

use std::net::SocketAddr;

/// Whether a host put a datagram on the wire or took it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    Sent,
    Received,
}

/// What the relay's XDP program did with a datagram the relay received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpNote {
    /// `XDP_TX`, `XDP_PASS`, ...
    pub verdict: String,
    /// The program's reason counter, e.g. `tx-chan-to-udp-v4-v4`.
    pub reason: String,
}

/// One datagram at one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// Sim time, in ms since the scenario's origin.
    pub at_ms: u64,
    /// The host that sent or received it.
    pub host: String,
    pub direction: Direction,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
    /// Set on datagrams a relay received while its XDP program ran beside it.
    pub xdp: Option<XdpNote>,
}

/// A frame that is not UDP at a relay host (an ICMP error from the internet host), which the
/// wire of UDP datagrams does not carry: recorded beside the hops, with the XDP program's note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameArrival {
    /// When the internet host sent it, in ms since the scenario's origin.
    pub sent_ms: u64,
    /// When it arrived, in ms since the scenario's origin.
    pub at_ms: u64,
    /// The relay host that received it.
    pub host: String,
    /// What it is (the stray kind, e.g. `icmp-port-unreachable`).
    pub kind: String,
    /// The source and destination of the datagram it quotes.
    pub about: (SocketAddr, SocketAddr),
    /// Its length, Ethernet header included.
    pub len: usize,
    pub xdp: Option<XdpNote>,
}
