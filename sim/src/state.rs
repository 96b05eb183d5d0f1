//! The state every host and the runner share: what the run records, the links and their
//! faults, the published timers, the relayed addresses and the DNS records.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Instant,
};

use crate::{clock::Timers, faults::Links, journal::Journal};

/// State every host and the runner share. turmoil runs all hosts on one thread, so an
/// `Rc<RefCell<_>>` is enough, and borrows never overlap an await. Commands do not travel
/// here: each host has its own typed inbox ([`crate::commands`]).
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) origin: Instant,
    pub(crate) journal: Journal,
    pub(crate) links: Links,
    pub(crate) timers: Timers,
    pub(crate) relayed: Relayed,
    /// The DNS server's records: name (lower case) -> (addresses, TTL in seconds).
    pub(crate) dns_records: BTreeMap<String, (Vec<IpAddr>, u32)>,
    /// What gateways did with the attacker's datagrams, by the attacker's address they came
    /// from, for the attacker host to collect at the end of its round.
    pub(crate) gateway_verdicts: Vec<(SocketAddr, observation::AttackAnswer)>,
}

/// The relayed addresses the hosts' TURN clients reported, by host name.
#[derive(Debug, Default)]
pub(crate) struct Relayed {
    /// Of each host's first allocation (for the outcome).
    pub(crate) first: BTreeMap<String, Vec<SocketAddr>>,
    /// As each host's TURN client last reported them (a roamed client's new allocation):
    /// where the runner points paths.
    pub(crate) current: BTreeMap<String, Vec<SocketAddr>>,
}
