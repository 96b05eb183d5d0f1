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
