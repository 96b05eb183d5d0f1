//! The state every host and the runner share: what the run records, the links and their
//! faults, the published timers, the relayed addresses and the DNS records.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    rc::Rc,
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
    /// Datagrams the attacker forged the source of, not yet sent: the host that owns the
    /// forged source sends them for it (turmoil gives every address one host). They stand for
    /// a raw socket; on the wire they are what a spoofed datagram is.
    pub(crate) spoof_orders: Vec<Spoofed>,
    /// The attacker hosts (by address) that wait for a DNS query to race.
    pub(crate) attackers_racing: std::collections::BTreeSet<IpAddr>,
    /// A gateway sent a DNS query while an attacker races: the run goes tick by tick until
    /// the attacker has seen it, so that it sees the query the moment it leaves.
    pub(crate) query_to_race: bool,
    /// Wakes the hosts that send spoofed datagrams (they otherwise sleep on their socket).
    pub(crate) spoof_waker: Rc<tokio::sync::Notify>,
    /// Spoofed datagrams sent and not yet received, so that their receiver can hand its
    /// verdict to the attacker.
    pub(crate) spoofed: Vec<Spoofed>,
    /// The transaction deadlines each host's TURN client has had (`endpoint_io`), so that a
    /// response that arrives just after one fired still counts as on its boundary.
    pub(crate) transaction_deadlines: BTreeMap<String, std::collections::BTreeSet<Instant>>,
}

/// A datagram the attacker at `attacker` sends with the forged source `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spoofed {
    pub(crate) attacker: SocketAddr,
    pub(crate) from: SocketAddr,
    pub(crate) to: SocketAddr,
    pub(crate) payload: Vec<u8>,
}

impl Shared {
    /// The spoofed orders whose forged source has the IP `ip` (any port), in order.
    pub(crate) fn take_spoof_orders_at(&mut self, ip: IpAddr) -> Vec<Spoofed> {
        let (mine, others) = std::mem::take(&mut self.spoof_orders)
            .into_iter()
            .partition(|order| order.from.ip() == ip);
        self.spoof_orders = others;
        mine
    }

    /// The attacker behind a datagram just received, if it was a spoofed one.
    pub(crate) fn take_spoofed(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        payload: &[u8],
    ) -> Option<SocketAddr> {
        let index = self
            .spoofed
            .iter()
            .position(|s| s.from == from && s.to == to && s.payload == payload)?;
        Some(self.spoofed.remove(index).attacker)
    }
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
