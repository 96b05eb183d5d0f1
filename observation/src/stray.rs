//! What a relay host did with a stray datagram (a `stray` step's, from the internet host):
//! what its XDP program decided, and what became of what the program passed.

use std::{fmt, net::SocketAddr};

pub use proto::relay_drop::RelayDropReason;
use serde::Serialize;

/// The XDP program's verdict on a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum XdpVerdict {
    /// To the kernel's stack, unchanged.
    Pass,
    /// Rewritten and sent back out.
    Tx,
    Drop,
    Aborted,
}

/// What became of the datagram past the XDP program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostFate {
    /// Delivered to one of the relay host's own sockets (its resolver, its NTP client): the
    /// host stack has it, the relay never sees it.
    HostStack,
    /// The userspace relay dropped it, and its drop counter of this reason (and no other) rose
    /// by one.
    RelayDropped(RelayDropReason),
    /// The userspace relay relayed it: data went on to a client or a peer.
    Relayed,
    /// The userspace relay took it without a drop: it answered it or changed state.
    RelayTook,
    /// Never reached the host: the XDP program sent it back out itself (`xdp-first`).
    XdpTook,
}

impl fmt::Display for HostFate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostFate::HostStack => f.write_str("to the host stack"),
            HostFate::RelayDropped(reason) => {
                write!(f, "dropped by the relay ({})", reason.as_str())
            }
            HostFate::Relayed => f.write_str("relayed"),
            HostFate::RelayTook => f.write_str("taken by the relay"),
            HostFate::XdpTook => f.write_str("sent out by XDP"),
        }
    }
}

/// One stray datagram arriving at a relay, and what the relay host did with it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct StrayArrival {
    /// Sim time of arrival, in ms since the scenario's origin.
    pub at_ms: u64,
    /// The relay's index in `topology.relays`.
    pub relay: u32,
    pub from: SocketAddr,
    pub to: SocketAddr,
    /// The XDP program's verdict; `None` when the relays run userspace only.
    pub xdp: Option<XdpVerdict>,
    pub fate: HostFate,
    /// The step whose datagram this is (the simulator names the step whose time it falls in).
    pub step: usize,
}

impl fmt::Display for StrayArrival {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ms (step {}): relay {} {} > {}: ",
            self.at_ms, self.step, self.relay, self.from, self.to
        )?;
        if let Some(verdict) = self.xdp {
            write!(f, "XDP {verdict:?}, ")?;
        }
        write!(f, "{}", self.fate)
    }
}
