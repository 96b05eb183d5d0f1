//! The reference model: an independent statement of what must happen in a scenario. From the
//! scenario alone it predicts every delivery (who receives what, from which address, translated
//! how), every drop and ICMP error, and the exact flow records. It never uses the relay, gateway
//! or XDP code it judges: it depends on the scenario vocabulary (`scenario`) and the flow-record
//! types (`proto::flow`) only, and restates the rules of `docs/flows.md` and the timing of
//! `docs/harness.md` (including its `## Model assumptions` section) on its own.
//!
//! # Use
//!
//! ```
//! fn check(scenario: &scenario::Scenario) {
//!     match model::predict(scenario) {
//!         Ok(prediction) => { /* compare prediction.flows, .deliveries, .drops */ }
//!         Err(unpredictable) => { /* not covered: skip or report `unpredictable` */ }
//!     }
//! }
//! ```
//!
//! [`predict`] uses [`Allocations::nominal`] for the relayed (TURN allocation) addresses, which a
//! real relay picks from its seeded random generator. A harness that knows the real ones (from
//! the setup phase) passes them to [`predict_with`]; they only appear in outer contexts.
//!
//! # Identities
//!
//! A flow's [`ClientId`] is the index of the client in `topology.clients` and its
//! [`ResourceId`] the index of the resource in `topology.resources` (`ClientId(i as u32)`,
//! `ResourceId(j as u32)`); the gateway under test must be configured with the same ids.
//! Gateways are named by their index in `topology.gateways`.
//!
//! # Order
//!
//! The gateway breaks some ties by its internal slots, which the model cannot know, so the model
//! returns every list in a canonical order and the harness compares after sorting what it
//! observed the same way: flows with [`sort_flows`] (by `end`, `start`, then the key), deliveries
//! and drops with their derived `Ord` (time first).
//!
//! # What is not modelled
//!
//! Cases the contract does not pin down, or that the model does not cover yet, make
//! [`predict`] return [`Unpredictable`] naming the step and the reason, never a guess. See
//! `docs/harness.md`, "Model assumptions", for the list.

mod engine;
mod rules;

use std::cmp::Ordering;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub use proto::flow::{
    ClientId, CloseReason, FlowRecord, OuterContext, Protocol, ResourceId, UtcTime,
};
use scenario::{Scenario, Step};
use serde::Serialize;

/// Sim time 0 is 2026-01-01T00:00:00Z.
pub const ORIGIN_UNIX_SECS: u64 = 1_767_225_600;
/// Step 0 starts here (after setup).
pub const FIRST_STEP_MS: u64 = 2000;
/// A step lasts this long unless it is an `idle` step.
pub const STEP_MS: u64 = 1000;
/// The gateway's TUN link to the resource responder, each way.
pub const TUN_MS: u64 = 1;
/// Flow idle timeout when the topology does not set one.
pub const DEFAULT_IDLE_TIMEOUT_S: u64 = 120;
/// A DNS answer is kept at least this long.
pub const DNS_MIN_TTL_S: u64 = 1;
/// Client packets queued per proxy IP while its domain resolves.
pub const DNS_QUEUE_LIMIT: usize = 32;
/// Client TCP initial sequence number (the SYN's `seq`).
pub const CLIENT_ISN: u32 = 1000;
/// Resource TCP initial sequence number (the SYN-ACK's `seq`).
pub const RESOURCE_ISN: u32 = 5000;

/// The UTC time of sim time `ms`, as the gateways stamp it.
pub fn utc(ms: u64) -> UtcTime {
    UtcTime::from_unix_secs(ORIGIN_UNIX_SECS).plus(Duration::from_millis(ms))
}

/// When each step starts and when the run ends (all in sim milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timeline {
    /// `step_start[k]` is `t_k`.
    pub step_start: Vec<u64>,
    /// Every gateway shuts down here.
    pub t_end: u64,
}

impl Timeline {
    /// The start of the step after `k` (or `t_end` after the last).
    pub fn next_start(&self, k: usize) -> u64 {
        self.step_start.get(k + 1).copied().unwrap_or(self.t_end)
    }
}

/// Step times per `docs/harness.md`: `t_0 = 2000`, 1000 ms per step, `idle { s }` lasts
/// `s * 1000` ms; `t_end` is the end of the last step (2000 with no steps).
pub fn timeline(scenario: &Scenario) -> Timeline {
    let mut t = FIRST_STEP_MS;
    let mut step_start = Vec::with_capacity(scenario.steps.len());
    for step in &scenario.steps {
        step_start.push(t);
        t += match step {
            Step::Idle { seconds } => seconds * 1000,
            _ => STEP_MS,
        };
    }
    Timeline {
        step_start,
        t_end: t,
    }
}

/// A peer's TURN allocation: its relayed address in each family the relay gave it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RelayedAddresses {
    pub v4: Option<SocketAddr>,
    pub v6: Option<SocketAddr>,
}

impl RelayedAddresses {
    /// The relayed address of one family.
    pub fn family(&self, v6: bool) -> Option<SocketAddr> {
        if v6 { self.v6 } else { self.v4 }
    }
}

/// Relayed addresses of every client and gateway (index = position in the topology); empty for
/// peers without a relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Allocations {
    pub clients: Vec<RelayedAddresses>,
    pub gateways: Vec<RelayedAddresses>,
}

impl Allocations {
    /// A stand-in for the real allocations: on each relay, the clients that name it (in topology
    /// order) and then the gateways that name it get ports 49152, 49153, ...; the allocation has
    /// an address in every family the relay has, with that port. Real relays pick ports at random
    /// (seeded), so a harness comparing outer contexts of relayed paths passes the real ones to
    /// [`predict_with`].
    pub fn nominal(scenario: &Scenario) -> Self {
        let plan = scenario::plan::AddressPlan::new(scenario);
        let topology = &scenario.topology;
        let mut next_port = vec![49152u16; topology.relays.len()];
        let mut allocate = |relay: &Option<String>| {
            let Some(index) = relay
                .as_ref()
                .and_then(|name| topology.relays.iter().position(|r| &r.name == name))
            else {
                return RelayedAddresses::default();
            };
            let port = next_port[index];
            next_port[index] = port.saturating_add(1);
            let host = plan.relays[index];
            RelayedAddresses {
                v4: host.v4.map(|ip| SocketAddr::new(IpAddr::V4(ip), port)),
                v6: host.v6.map(|ip| SocketAddr::new(IpAddr::V6(ip), port)),
            }
        };
        let clients = topology
            .clients
            .iter()
            .map(|c| allocate(&c.relay))
            .collect();
        let gateways = topology
            .gateways
            .iter()
            .map(|g| allocate(&g.relay))
            .collect();
        Self { clients, gateways }
    }
}

/// Everything the model expects from a scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Prediction {
    /// Every flow record of every gateway, in [`sort_flows`] order.
    pub flows: Vec<FlowRecord>,
    /// Every inner packet that reaches a client or the resource responder, sorted.
    pub deliveries: Vec<Delivery>,
    /// Every packet dropped on a link or by a gateway, sorted.
    pub drops: Vec<ExpectedDrop>,
}

/// The model cannot (or does not yet) say what happens at this step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("unpredictable{}: {reason}", step.map(|s| format!(" at steps[{s}]")).unwrap_or_default())]
pub struct Unpredictable {
    /// The step whose traffic or action is not modelled (`None`: setup or the whole scenario).
    pub step: Option<usize>,
    pub reason: String,
}

/// TCP flags of a segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
    pub psh: bool,
}

impl TcpFlags {
    pub const SYN: TcpFlags = TcpFlags {
        syn: true,
        ack: false,
        fin: false,
        rst: false,
        psh: false,
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
    const NONE: TcpFlags = TcpFlags {
        syn: false,
        ack: false,
        fin: false,
        rst: false,
        psh: false,
    };
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
}

/// An inner IP packet, as the receiver sees it (after any DNS NAT). ICMP uses port 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Packet {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub kind: PacketKind,
}

impl Packet {
    /// The flow protocol of the packet.
    pub fn protocol(&self) -> Protocol {
        match self.kind {
            PacketKind::Udp { .. } => Protocol::Udp,
            PacketKind::Tcp { .. } => Protocol::Tcp,
            PacketKind::IcmpProhibited { .. } => Protocol::Icmp,
        }
    }

    /// Payload bytes as flows.md counts them (an ICMP error counts 0).
    pub fn payload(&self) -> u64 {
        match self.kind {
            PacketKind::Udp { payload } | PacketKind::Tcp { payload, .. } => u64::from(payload),
            PacketKind::IcmpProhibited { .. } => 0,
        }
    }
}

/// Who receives a delivered packet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Receiver {
    /// A client, in a tunnel frame from `gateway` that the gateway sent to `outer` (its
    /// `(remote, local)` view of the client).
    Client {
        client: ClientId,
        gateway: u32,
        outer: OuterContext,
    },
    /// The resource responder behind `gateway`'s TUN side.
    Resource { gateway: u32 },
}

/// One inner packet arriving at a client or the resource responder.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Delivery {
    /// Sim time of arrival.
    pub at_ms: u64,
    pub to: Receiver,
    pub packet: Packet,
    /// The step whose traffic this is.
    pub step: usize,
}

/// Where a packet was dropped.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DropPlace {
    /// By a gateway, for a packet of (or to) `client`.
    Gateway { gateway: u32, client: ClientId },
    /// On the link between two hosts (names sorted), carrying a tunnel frame.
    Link { between: [String; 2] },
}

/// Why a packet was dropped: the gateway's reasons of `docs/flows.md`, and link faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DropReason {
    /// Denied; an ICMP administratively prohibited goes back to the client.
    NoResource,
    NotGranted,
    FilterDenied,
    UnknownProxyIp,
    /// A non-SYN TCP packet from a client with no open flow (no ICMP).
    TcpWithoutSyn,
    /// A resource packet with no open flow.
    NoOpenFlow,
    DnsQueueFull,
    DnsResolutionFailed,
    /// The link was partitioned.
    Partition,
    /// A `drop-next` fault took it.
    DropNext,
    /// Held by a `hold` fault that was never released before the end of the run.
    StillHeld,
}

impl DropReason {
    /// Whether the gateway answers this drop with ICMP administratively prohibited.
    pub fn sends_icmp(self) -> bool {
        matches!(
            self,
            DropReason::NoResource
                | DropReason::NotGranted
                | DropReason::FilterDenied
                | DropReason::UnknownProxyIp
        )
    }
}

/// A packet that never reaches its destination.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ExpectedDrop {
    pub at_ms: u64,
    pub place: DropPlace,
    pub reason: DropReason,
    /// The inner packet, as it was at that point (before DNS NAT for client packets).
    pub packet: Packet,
    pub step: usize,
}

/// Predicts a scenario with [`Allocations::nominal`] relayed addresses.
pub fn predict(scenario: &Scenario) -> Result<Prediction, Unpredictable> {
    predict_with(scenario, &Allocations::nominal(scenario))
}

/// Predicts a scenario with the given relayed addresses.
pub fn predict_with(
    scenario: &Scenario,
    allocations: &Allocations,
) -> Result<Prediction, Unpredictable> {
    scenario.validate().map_err(|error| Unpredictable {
        step: error.step,
        reason: format!("invalid scenario: {error}"),
    })?;
    let mut prediction = engine::run(scenario, allocations)?;
    sort_flows(&mut prediction.flows);
    prediction.deliveries.sort();
    prediction.drops.sort();
    Ok(prediction)
}

/// The canonical order of flow records: `end`, then `start`, then client, resource, protocol,
/// inner source, inner destination, close reason.
pub fn flow_order(a: &FlowRecord, b: &FlowRecord) -> Ordering {
    let key = |r: &FlowRecord| {
        (
            r.end,
            r.start,
            r.client,
            r.resource,
            r.protocol,
            r.inner_src_ip,
            r.inner_src_port,
            r.inner_dst_ip,
            r.inner_dst_port,
            r.close_reason,
        )
    };
    key(a).cmp(&key(b))
}

/// Sorts flow records into the canonical order ([`flow_order`]).
pub fn sort_flows(records: &mut [FlowRecord]) {
    records.sort_by(flow_order);
}
