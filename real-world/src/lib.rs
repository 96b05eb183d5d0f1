//! The real world for a scenario: its topology in network namespaces, its relays as
//! relay-server processes with the XDP program attached, its gateways as gateway-server on a
//! TUN device, its clients on real sockets, its resources as kernel UDP and TCP servers and its
//! DNS server on a real socket. The run is judged by the same model as the simulation
//! ([`model::predict_with`], with the relayed addresses the real relays gave): flow records
//! exact in content, deliveries to clients and to resources exact in content and order,
//! gateway drops exact, and every time within a stated tolerance. The relays' XDP fast-path
//! verdicts must also be those of the simulation of the same story.
//!
//! The links between hosts have the story's latencies and faults: the router namespace sends
//! what it forwards through a TUN device the run holds, which plays the part of netem (this
//! kernel has none) and knows the story's hosts. What differs from the simulation, on purpose,
//! is written in docs/harness.md ("Real networking"): TCP sequence numbers of the resource
//! side are Linux's own (deliveries are compared without sequence and acknowledgement
//! numbers), and the resources sit behind their gateway's TUN device with no added latency.
//!
//! Needs root, `ip` and `ethtool` (iproute2), network namespaces, `/dev/net/tun` and BPF;
//! [`missing_support`] says what is missing so a caller can skip loudly.

mod captures;
mod client;
pub mod compare;
mod fast_path;
mod interrupt;
mod launch;
mod links;
mod netns;
mod processes;
pub mod punctuality;
mod run;
mod servers;
mod topology;
mod world;

pub use client::Seen;
pub use compare::{Finding, FindingKind};
pub use fast_path::FastPath;
pub use netns::missing_support;
pub use processes::Binaries;
pub use punctuality::Punctuality;
pub use run::{MAX_REAL_SECONDS, RealOptions, RealRun, run, run_until_undisturbed};

/// Why a real run could not be made or judged.
#[derive(Debug, thiserror::Error)]
pub enum RealError {
    /// The scenario uses what the real world does not play yet.
    #[error("not supported in the real world: {0}")]
    Unsupported(String),
    /// The model does not predict the scenario.
    #[error("the model does not predict this scenario: {0}")]
    Unpredictable(String),
    /// Building the namespaces, links or sockets failed.
    #[error("setting up the real world: {0}")]
    Setup(String),
    /// A relay-server or gateway-server misbehaved (exited, did not answer).
    #[error("{0}")]
    Process(String),
    /// SIGINT or SIGTERM came during the run (everything it made is removed).
    #[error("interrupted: the run's namespaces and processes are removed")]
    Interrupted,
}

/// A namespace, a command in one or a closure inside one failed while setting up.
impl From<netns_kit::Error> for RealError {
    fn from(error: netns_kit::Error) -> Self {
        Self::Setup(error.to_string())
    }
}
