//! Where inner packets ended: delivered to a client or a resource, or dropped by a gateway or
//! a link fault.

use std::fmt;

use proto::flow::{ClientId, DropReason as GatewayDropReason, OuterContext};
use serde::Serialize;

use crate::Packet;

/// Who received a delivered packet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Receiver {
    /// A client, in a tunnel frame from `gateway` that the gateway sent to `outer` (its
    /// `(remote, local)` view of the client: the client's socket or relayed address, and the
    /// gateway's socket or relayed address the frame came from).
    Client {
        client: ClientId,
        gateway: u32,
        outer: OuterContext,
    },
    /// The resource responder behind `gateway`'s TUN side.
    Resource { gateway: u32 },
}

impl fmt::Display for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Receiver::Client {
                client,
                gateway,
                outer,
            } => write!(f, "client {client} from gateway {gateway} over {outer}"),
            Receiver::Resource { gateway } => write!(f, "the resource behind gateway {gateway}"),
        }
    }
}

/// One inner packet arriving at a client or the resource responder.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Delivery {
    /// Sim time of arrival, in ms since the scenario's origin.
    pub at_ms: u64,
    pub to: Receiver,
    pub packet: Packet,
    /// The step whose traffic this is (the simulator names the step whose time it falls in).
    pub step: usize,
}

/// Where a packet was dropped.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DropPlace {
    /// By a gateway, for a packet of (or to) `client` (none when the packet names no client
    /// the gateway knows).
    Gateway {
        gateway: u32,
        client: Option<ClientId>,
    },
    /// On the link between two hosts (names sorted), carrying a tunnel frame.
    Link { between: [String; 2] },
}

impl fmt::Display for DropPlace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropPlace::Gateway {
                gateway,
                client: Some(client),
            } => write!(f, "by gateway {gateway} (client {client})"),
            DropPlace::Gateway {
                gateway,
                client: None,
            } => write!(f, "by gateway {gateway} (no client)"),
            DropPlace::Link { between } => write!(f, "on the link {}-{}", between[0], between[1]),
        }
    }
}

/// Why a packet was dropped: the gateway's own reason (`docs/flows.md`), or a link fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DropReason {
    /// The gateway decided it.
    Gateway(GatewayDropReason),
    /// The link was partitioned.
    Partition,
    /// A `drop-next` fault took it.
    DropNext,
    /// Held by a `hold` fault that was never released before the end of the run.
    StillHeld,
}

impl DropReason {
    /// The reason as the docs and the coverage grid name it (`tcp-without-syn`, `partition`).
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Gateway(reason) => reason.as_str(),
            DropReason::Partition => "partition",
            DropReason::DropNext => "drop-next",
            DropReason::StillHeld => "still-held",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One inner packet that never reached its destination.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PacketDrop {
    /// Sim time, in ms since the scenario's origin.
    pub at_ms: u64,
    pub place: DropPlace,
    pub reason: DropReason,
    /// The inner packet at that point (for a client packet at a gateway: as the client sent
    /// it, before DNS NAT).
    pub packet: Packet,
    /// The step whose traffic this is.
    pub step: usize,
}
