//! The simulated network: a turmoil world built from a scenario, with hosts that drive the
//! sans-IO gateway and clients, a resource responder behind each gateway's TUN link, a DNS
//! server, links with fixed latencies and explicit faults, and a trace of every datagram.
//!
//! The timing contract (what happens at which millisecond) is in `docs/harness.md`; the
//! reference model predicts from the same contract.
//!
//! Status: the direct path (client <-> gateway) with UDP, TCP, DNS resources, grants,
//! revocations, roaming, partitions, holds, gateway restarts and idle time. Relayed paths and
//! `drop-next` faults are refused with [`SimError::Unsupported`] until the TURN hosts land.

mod dns_server;
pub mod packets;
pub mod tcp;
mod world;

pub use world::{Outcome, RunOptions, SimError, TraceLine, run};
