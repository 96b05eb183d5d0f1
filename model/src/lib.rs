//! The reference model: an independent statement of what must happen in a scenario. From the
//! scenario alone it predicts every delivery (who receives what, from which address, translated
//! how), every drop and ICMP error, and the exact flow records. It never uses the relay, gateway
//! or XDP code it judges: it depends on the scenario vocabulary (`scenario-format`), the vocabulary of
//! what happens (`observation`, which the simulator reports in too) and the flow-record types
//! (`proto::flow`) only, and restates the rules of `docs/flows.md` and the timing of
//! `docs/harness.md` (including its `## Model assumptions` section) on its own.
//!
//! # Use
//!
//! ```
//! fn check(scenario: &scenario_format::Scenario) {
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

pub use engine::coverage;

use std::cmp::Ordering;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub use observation::{
    AttackOutcome, Delivery, DropPlace, DropReason, GatewayDropReason, HostFate, Packet,
    PacketDrop, PacketKind, Receiver, RelayDropReason, StrayArrival, TcpFlags, XdpVerdict,
};
pub use proto::flow::{
    ClientId, CloseReason, FlowRecord, OuterContext, Protocol, ResourceId, UtcTime,
};
use scenario_format::{Scenario, timing::ORIGIN_UNIX_SECS};
use serde::Serialize;

/// The UTC time of sim time `ms`, as the gateways stamp it.
pub fn utc(ms: u64) -> UtcTime {
    UtcTime::from_unix_secs(ORIGIN_UNIX_SECS).plus(Duration::from_millis(ms))
}

/// Sim milliseconds of a UTC time (the inverse of [`utc`]; 0 before the origin).
pub fn ms_of(time: UtcTime) -> u64 {
    time.unix_nanos()
        .saturating_sub(ORIGIN_UNIX_SECS * 1_000_000_000)
        / 1_000_000
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
        let plan = scenario_format::plan::AddressPlan::new(scenario);
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Prediction {
    /// Every flow record of every gateway, in [`sort_flows`] order.
    pub flows: Vec<FlowRecord>,
    /// Every inner packet that reaches a client or the resource responder, sorted.
    pub deliveries: Vec<Delivery>,
    /// Every packet dropped on a link or by a gateway, sorted.
    pub drops: Vec<PacketDrop>,
    /// Which corners of the rules the prediction went through (timer boundaries, TCP states,
    /// reused 5-tuples): for the coverage grid, never compared with a run.
    #[serde(skip)]
    pub coverage: coverage::ModelCoverage,
    /// What every relay host does with every stray datagram (a `stray` step's), sorted.
    pub strays: Vec<StrayArrival>,
    /// What the attacker host gets back from every attack (an `attack` step's), in step order.
    pub attacks: Vec<AttackOutcome>,
}

/// The model cannot (or does not yet) say what happens at this step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("unpredictable{}: {reason}", step.map(|s| format!(" at steps[{s}]")).unwrap_or_default())]
pub struct Unpredictable {
    /// The step whose traffic or action is not modelled (`None`: setup or the whole scenario).
    pub step: Option<usize>,
    pub reason: String,
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
    let mut prediction =
        engine::run(scenario, allocations).map_err(|(unpredictable, _)| unpredictable)?;
    prediction.sort();
    Ok(prediction)
}

/// What the model still knows of a scenario it cannot predict to the end: everything that
/// happened before the step where it lost track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownPart {
    /// The step where the model lost track; everything before it is known.
    pub before_step: usize,
    /// When that step starts (ms since the origin).
    pub before_ms: u64,
    /// The deliveries, drops and stray fates of the steps before it, and the flow records
    /// that ended before it starts.
    pub prediction: Prediction,
}

/// Predicts a scenario; where the model loses track at a step, says why and what happened
/// before that step (nothing when it loses track in the setup or over the whole run).
pub fn predict_known_part(
    scenario: &Scenario,
    allocations: &Allocations,
) -> Result<Prediction, (Unpredictable, Option<Box<KnownPart>>)> {
    scenario.validate().map_err(|error| {
        let unpredictable = Unpredictable {
            step: error.step,
            reason: format!("invalid scenario: {error}"),
        };
        (unpredictable, None)
    })?;
    match engine::run(scenario, allocations) {
        Ok(mut prediction) => {
            prediction.sort();
            Ok(prediction)
        }
        Err((unpredictable, mut known)) => {
            if let Some(known) = known.as_mut() {
                known.prediction.sort();
            }
            Err((unpredictable, known))
        }
    }
}

/// Keeps what a run observed before the step where the model lost track, as
/// [`KnownPart`] keeps of the prediction: the deliveries, drops and strays of the steps before
/// it, and the records written before it starts (under `topology`'s idle timeout).
pub fn observed_before(
    observed: &mut Prediction,
    known: &KnownPart,
    topology: &scenario_format::Topology,
) {
    let idle_ms = 1000
        * topology
            .idle_timeout_s
            .unwrap_or(scenario_format::settings::DEFAULT_IDLE_TIMEOUT_S);
    let k = known.before_step;
    observed.deliveries.retain(|d| d.step < k);
    observed.drops.retain(|d| d.step < k);
    observed.strays.retain(|s| s.step < k);
    observed.attacks.retain(|a| a.step < k);
    observed
        .flows
        .retain(|record| engine::written_at(record, idle_ms) < known.before_ms);
}

impl Prediction {
    fn sort(&mut self) {
        sort_flows(&mut self.flows);
        self.deliveries.sort();
        self.drops.sort();
        self.strays.sort();
        self.attacks.sort();
    }
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
