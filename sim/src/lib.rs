//! The simulated network: a turmoil world built from a scenario, with hosts that drive the
//! sans-IO gateway, clients and relays (each relay with its real XDP program beside it, see
//! [`xdp`]), a resource responder behind each gateway's TUN link, a DNS server, links with
//! fixed latencies and explicit faults, every datagram at every hop ([`wire`]) and the
//! invariants every run must keep.
//!
//! The timing contract (what happens at which millisecond) is in `docs/harness.md`; the
//! reference model predicts from the same contract.
//!
//! Status: every path mode (direct, through the client's relay, through the gateway's relay,
//! both on one relay, two relays) with UDP, TCP, DNS resources, grants, revocations, roaming
//! (a client with a relay allocates again from its new socket), partitions, holds, `drop-next`,
//! gateway restarts and idle time. Besides flow records, the outcome lists every inner packet
//! that reached a client or a resource responder and every one a gateway or a link fault
//! dropped, in the vocabulary the model predicts in ([`observation`]).
//!
//! The modules, by concern: `world` builds the hosts and plays the steps, `runner` turns steps
//! into commands, `commands` holds each host's typed inbox, `clock` the 1 ms grid and the
//! published timers, `state` and `journal` what the hosts share and record, `faults` the link
//! faults, and one module per kind of host (docs/architecture.md has the table).

mod attacker_host;
mod client_host;
pub mod client_paths;
mod clock;
mod commands;
mod dns_forgery;
pub mod dns_server;
mod endpoint_io;
mod error_events;
pub mod faults;
mod gateway_host;
mod internet_host;
mod journal;
pub mod packets;
mod relay_host;
pub mod relay_timers;
mod resource_host;
mod runner;
mod state;
pub mod tcp;
pub mod wire;
mod world;
pub mod xdp;

pub use internet_host::NAME as INTERNET_HOST;
pub use journal::TraceLine;
pub use observation;
pub use relay_timers::RELAY_TIMERS;

/// The TURN timers whose boundaries a run notes: the relays' (`relay_timers`), then the
/// transactions of the TURN clients (`endpoint_io`).
pub const TURN_TIMERS: [&str; 6] = [
    relay_timers::ALLOCATION,
    relay_timers::ALLOCATION_MID_RUN,
    relay_timers::PERMISSION,
    relay_timers::CHANNEL,
    relay_timers::COOLDOWN,
    endpoint_io::CLIENT_TRANSACTION,
];
pub use wire::{Direction, Hop, XdpNote};
pub use world::{Outcome, RunOptions, SimError, hosts_by_ip, run};
pub use xdp::Datapath;
