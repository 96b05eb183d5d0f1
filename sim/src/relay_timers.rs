//! The relay's timers as its events announce them, and the datagrams that reach a relay on a
//! timer's deadline (1 ms before, on it, 1 ms after): allocation lifetimes, permissions,
//! channel bindings and the channel cooldown. The coverage grid shows these counts; what the
//! relay does on the deadline is checked by the differential datapath (the XDP program, whose
//! maps follow the relay's events, against the userspace relay) and the invariants.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    net::SocketAddr,
    time::Instant,
};

use observation::HostFate;
use proto::relay_drop::RelayDropReason;
use relay::{CHANNEL_COOLDOWN, CHANNEL_LIFETIME, Event, PERMISSION_LIFETIME, TURN_PORT};
use scenario_format::timing::FIRST_STEP_MS;

/// Timer names in the coverage grid.
pub const ALLOCATION: &str = "turn allocation lifetime";
pub const PERMISSION: &str = "turn permission";
pub const CHANNEL: &str = "turn channel binding";
pub const COOLDOWN: &str = "turn channel cooldown";
/// The allocation lifetime again, counting only allocations made once the steps had begun
/// (a roaming client's new one, an attacker's), not during the setup.
pub const ALLOCATION_MID_RUN: &str = "turn allocation lifetime, allocated mid-run";

/// The relay timers whose boundaries a run notes.
pub const RELAY_TIMERS: [&str; 5] = [
    ALLOCATION,
    ALLOCATION_MID_RUN,
    PERMISSION,
    CHANNEL,
    COOLDOWN,
];

/// One relay's timers, in ms since the origin.
#[derive(Debug, Default)]
pub(crate) struct RelayTimers {
    /// By the client's address.
    allocations: BTreeMap<SocketAddr, u64>,
    /// By (allocation port, peer IP).
    permissions: BTreeMap<(u16, IpAddr), u64>,
    /// By (allocation port, peer): when the binding expires.
    channels: BTreeMap<(u16, SocketAddr), u64>,
    /// Allocation ports by client address (to find a client's channels).
    ports: BTreeMap<SocketAddr, u16>,
    /// Client addresses whose allocation (live or freed) was made after the setup.
    mid_run: BTreeSet<SocketAddr>,
    /// The deadlines of allocations the relay freed, by client address: a Refresh that comes
    /// on the deadline or after it still lands on it.
    freed: BTreeMap<SocketAddr, u64>,
}

fn ms(duration: std::time::Duration) -> u64 {
    duration.as_millis() as u64
}

impl RelayTimers {
    /// Follows an event the relay emitted at `now_ms` (`origin` is sim time 0).
    pub(crate) fn follow(&mut self, event: &Event, origin: Instant, now_ms: u64) {
        match event {
            Event::AllocationCreated {
                client,
                port,
                expires_at,
                ..
            } => {
                self.freed.remove(client);
                if now_ms >= FIRST_STEP_MS {
                    self.mid_run.insert(*client);
                } else {
                    self.mid_run.remove(client);
                }
                self.ports.insert(*client, *port);
                self.allocations
                    .insert(*client, ms(expires_at.saturating_duration_since(origin)));
            }
            Event::AllocationRefreshed {
                client, expires_at, ..
            } => {
                self.allocations
                    .insert(*client, ms(expires_at.saturating_duration_since(origin)));
            }
            Event::AllocationFreed { client, port, .. } => {
                if let Some(deadline) = self.allocations.remove(client) {
                    self.freed.insert(*client, deadline);
                }
                self.ports.remove(client);
                self.permissions.retain(|(p, _), _| p != port);
                self.channels.retain(|(p, _), _| p != port);
            }
            // A bind or a refresh of the binding (which refreshes its permission too).
            Event::ChannelBound(binding) | Event::ChannelRefreshed(binding) => {
                let port = binding.allocation_port;
                self.channels
                    .insert((port, binding.peer), now_ms + ms(CHANNEL_LIFETIME));
                self.permissions
                    .insert((port, binding.peer.ip()), now_ms + ms(PERMISSION_LIFETIME));
            }
            // The binding stays reserved through its cooldown: its deadline stays known.
            Event::ChannelUnbound(_) => {}
        }
    }

    /// Counts the deadlines a datagram from `from` to port `to_port`, arriving at `now_ms`,
    /// lands on.
    pub(crate) fn note_arrival(
        &self,
        from: SocketAddr,
        to_port: u16,
        now_ms: u64,
        counts: &mut BTreeMap<&'static str, [u64; 3]>,
    ) {
        if to_port == TURN_PORT {
            if let Some(deadline) = self.allocations.get(&from).or(self.freed.get(&from)) {
                self.note_allocation(&from, *deadline, now_ms, counts);
            }
            if let Some(port) = self.ports.get(&from) {
                for ((_, _), expiry) in self
                    .channels
                    .range((*port, min_peer())..=(*port, max_peer()))
                {
                    note(counts, CHANNEL, *expiry, now_ms);
                    note(counts, COOLDOWN, expiry + ms(CHANNEL_COOLDOWN), now_ms);
                }
            }
            return;
        }
        // A peer's datagram to an allocation's relayed port.
        if let Some((client, deadline)) = self
            .ports
            .iter()
            .find(|(_, port)| **port == to_port)
            .and_then(|(client, _)| Some((client, self.allocations.get(client)?)))
        {
            self.note_allocation(client, *deadline, now_ms, counts);
        }
        if let Some(deadline) = self.permissions.get(&(to_port, from.ip())) {
            note(counts, PERMISSION, *deadline, now_ms);
        }
        if let Some(expiry) = self.channels.get(&(to_port, from)) {
            note(counts, CHANNEL, *expiry, now_ms);
            note(counts, COOLDOWN, expiry + ms(CHANNEL_COOLDOWN), now_ms);
        }
    }
}

impl RelayTimers {
    /// Counts an arrival at `now_ms` on the deadline of `client`'s allocation, and again under
    /// [`ALLOCATION_MID_RUN`] when that allocation was made after the setup.
    fn note_allocation(
        &self,
        client: &SocketAddr,
        deadline: u64,
        now_ms: u64,
        counts: &mut BTreeMap<&'static str, [u64; 3]>,
    ) {
        note(counts, ALLOCATION, deadline, now_ms);
        if self.mid_run.contains(client) {
            note(counts, ALLOCATION_MID_RUN, deadline, now_ms);
        }
    }
}

/// Counts an arrival at `now_ms` under `timer` when it is 1 ms before `deadline`, on it, or
/// 1 ms after.
fn note(
    counts: &mut BTreeMap<&'static str, [u64; 3]>,
    timer: &'static str,
    deadline: u64,
    now_ms: u64,
) {
    let slot = match now_ms.cast_signed() - deadline.cast_signed() {
        -1 => 0,
        0 => 1,
        1 => 2,
        _ => return,
    };
    counts.entry(timer).or_default()[slot] += 1;
}

impl RelayTimers {
    /// Whether an allocation event at `now_ms` keeps the lifetime the relay announced for it
    /// (RFC 8656 §7): an allocation whose lifetime runs out is freed on its deadline's
    /// millisecond (its `poll_timeout`), not before and not after; a Refresh on the deadline
    /// or later finds it gone and does not bring it back. Checked before [`Self::follow`].
    pub(crate) fn allocation_kept(&self, event: &Event, now_ms: u64) -> Result<(), String> {
        match event {
            Event::AllocationFreed {
                client,
                reason: relay::FreeReason::Expired,
                ..
            } => match self.allocations.get(client) {
                Some(deadline) if *deadline != now_ms => Err(format!(
                    "the allocation of {client} expired at {now_ms} ms, its deadline was \
                     {deadline} ms"
                )),
                _ => Ok(()),
            },
            Event::AllocationRefreshed { client, .. } => match self.allocations.get(client) {
                Some(deadline) if *deadline <= now_ms => Err(format!(
                    "the allocation of {client} was refreshed at {now_ms} ms, on or after its \
                     deadline at {deadline} ms"
                )),
                None => Err(format!(
                    "the allocation of {client} was refreshed at {now_ms} ms, but it was freed \
                     (or never announced)"
                )),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// Whether the permission for `peer_ip` on allocation `port` lives at `now_ms` by RFC 8656
    /// §9 (300 s from the ChannelBind or refresh the relay announced); `None` when no event
    /// announced one.
    pub(crate) fn permission_live(&self, port: u16, peer_ip: IpAddr, now_ms: u64) -> Option<bool> {
        self.permissions
            .get(&(port, peer_ip))
            .map(|deadline| now_ms < *deadline)
    }
}

/// Whether what the relay did with a peer's data agrees with the permission's lifetime: data
/// under a live permission is not refused for want of one, and data after the permission ran
/// out is never relayed.
pub(crate) fn permission_kept(live: Option<bool>, fate: &HostFate) -> Result<(), String> {
    match (live, fate) {
        (Some(true), HostFate::RelayDropped(RelayDropReason::NoPermission)) => Err(
            "the relay refused it for want of a permission that lives for another 300 s from \
             its last ChannelBind"
                .to_owned(),
        ),
        (Some(false), HostFate::Relayed) => Err(
            "the relay relayed it after its permission ran out (300 s after its last ChannelBind)"
                .to_owned(),
        ),
        _ => Ok(()),
    }
}

/// The least and the greatest socket address, to range over one port's channels.
fn min_peer() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

fn max_peer() -> SocketAddr {
    SocketAddr::from(([0xffff; 8], u16::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(port: u16, peer: SocketAddr) -> relay::ChannelBinding {
        relay::ChannelBinding {
            client: SocketAddr::from(([203, 0, 113, 100], 51820)),
            channel: 0x4000,
            allocation_port: port,
            peer,
        }
    }

    #[test]
    fn a_bind_sets_the_permission_channel_and_cooldown_deadlines_from_the_rfc_lifetimes() {
        let origin = Instant::now();
        let peer = SocketAddr::from(([203, 0, 113, 10], 51820));
        let mut timers = RelayTimers::default();
        timers.follow(&Event::ChannelBound(binding(50000, peer)), origin, 2_000);
        assert_eq!(
            timers.permission_live(50000, peer.ip(), 301_999),
            Some(true)
        );
        assert_eq!(
            timers.permission_live(50000, peer.ip(), 302_000),
            Some(false)
        );
        assert_eq!(timers.permission_live(50001, peer.ip(), 2_000), None);
        let mut counts = BTreeMap::new();
        for at in [301_999, 302_000, 302_001, 602_000, 902_001, 500_000] {
            timers.note_arrival(peer, 50000, at, &mut counts);
        }
        assert_eq!(counts.get(PERMISSION), Some(&[1, 1, 1]));
        assert_eq!(counts.get(CHANNEL), Some(&[0, 1, 0]));
        assert_eq!(counts.get(COOLDOWN), Some(&[0, 0, 1]));
        // A refresh moves them on.
        timers.follow(
            &Event::ChannelRefreshed(binding(50000, peer)),
            origin,
            200_000,
        );
        assert_eq!(
            timers.permission_live(50000, peer.ip(), 302_000),
            Some(true)
        );
    }

    #[test]
    fn an_allocation_is_freed_on_its_deadline_and_not_refreshed_on_or_after_it() {
        let origin = Instant::now();
        let client = SocketAddr::from(([203, 0, 113, 10], 51820));
        let at = |ms: u64| origin + std::time::Duration::from_millis(ms);
        let mut timers = RelayTimers::default();
        timers.follow(
            &Event::AllocationCreated {
                client,
                port: 50000,
                relayed: Vec::new(),
                expires_at: at(600_030),
            },
            origin,
            30,
        );
        let refreshed = Event::AllocationRefreshed {
            client,
            port: 50000,
            expires_at: at(1_200_029),
        };
        assert!(timers.allocation_kept(&refreshed, 600_029).is_ok());
        assert!(timers.allocation_kept(&refreshed, 600_030).is_err());
        let expired = Event::AllocationFreed {
            client,
            port: 50000,
            reason: relay::FreeReason::Expired,
        };
        assert!(timers.allocation_kept(&expired, 600_030).is_ok());
        assert!(timers.allocation_kept(&expired, 600_029).is_err());
        assert!(timers.allocation_kept(&expired, 600_031).is_err());
        // A LIFETIME 0 Refresh frees it whenever it comes.
        let deleted = Event::AllocationFreed {
            client,
            port: 50000,
            reason: relay::FreeReason::Deleted,
        };
        assert!(timers.allocation_kept(&deleted, 10_000).is_ok());
        // Once freed, it cannot be refreshed; a Refresh that comes late still lands on it.
        timers.follow(&expired, origin, 600_030);
        assert!(timers.allocation_kept(&refreshed, 600_031).is_err());
        let mut counts = BTreeMap::new();
        timers.note_arrival(client, TURN_PORT, 600_031, &mut counts);
        assert_eq!(counts.get(ALLOCATION), Some(&[0, 0, 1]));
    }

    #[test]
    fn data_is_held_to_the_permission_lifetime_either_way() {
        let dropped = HostFate::RelayDropped(RelayDropReason::NoPermission);
        assert!(permission_kept(Some(true), &dropped).is_err());
        assert!(permission_kept(Some(false), &HostFate::Relayed).is_err());
        assert!(permission_kept(Some(true), &HostFate::Relayed).is_ok());
        assert!(permission_kept(Some(false), &dropped).is_ok());
        assert!(permission_kept(None, &HostFate::Relayed).is_ok());
    }
}
