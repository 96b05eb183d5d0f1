//! The gateway's clock and deadlines: `advance` moves the clock (never backwards) and runs what
//! is due (idle flows close, DNS queries are retried, expired answers re-resolved); every entry
//! point calls it first, and [`Gateway::poll_timeout`] says when the next deadline is.

use std::time::{Duration, Instant};

use proto::flow::{CloseReason, MAX_OUTER_CONTEXTS};

use super::Gateway;
use crate::flow_table::{Nanos, nanos_of};

impl Gateway {
    /// Runs every deadline that is due at `now` (idle flows, DNS retries and expiries). Every
    /// other entry point does this first too, so the order of calls at one instant does not
    /// matter.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
    }

    /// When [`Gateway::handle_timeout`] must be called next (it may be early: nothing
    /// happens then but re-arming). `None` when nothing is pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.shut_down {
            return None;
        }
        let next = match (self.flows.next_deadline(), self.dns.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }?;
        let origin = self.config.time_origin.instant;
        Some(origin + Duration::from_nanos(next))
    }

    fn nanos(&self, now: Instant) -> Nanos {
        nanos_of(now.saturating_duration_since(self.config.time_origin.instant))
    }

    /// Moves the clock to `now` (never backwards) and runs what is due.
    #[inline]
    pub(crate) fn advance(&mut self, now: Instant) -> Nanos {
        // Hosts hand a batch of datagrams the same `now`: convert it once per batch (for the
        // same instant as the previous call, `max(nanos(now), self.now)` is `self.now`).
        let t = if self.last_instant == Some(now) {
            self.now
        } else {
            self.last_instant = Some(now);
            self.nanos(now).max(self.now)
        };
        self.now = t;
        while self.flows.next_deadline().is_some_and(|d| d <= t)
            && let Some(idx) = self.flows.pop_idle(t)
        {
            let end = self.flows.get(idx).map_or(t, |f| f.last_packet);
            self.close_flow(idx, CloseReason::Idle, end);
        }
        if self.dns.poll_timeout().is_some_and(|d| d <= t) {
            self.dns.handle_timeout(t);
            self.run_dns_actions(t);
        }
        self.prune_outers();
        t
    }

    /// Forgets the outer contexts no open flow and no client refers to any more, once they
    /// outnumber the live ones twice over (so the cost is amortised over the closes that made
    /// them dead). Runs only here, at the start of an entry point, before any interned index
    /// is held in a local.
    fn prune_outers(&mut self) {
        let live_bound = self.flows.len() * MAX_OUTER_CONTEXTS + self.clients.len();
        if self.outers.len() <= 2 * live_bound + PRUNE_SLACK {
            return;
        }
        let flows = self
            .flows
            .open_slots()
            .into_iter()
            .filter_map(|idx| self.flows.get(idx))
            .flat_map(|flow| flow.outers().collect::<Vec<_>>());
        let clients = self
            .clients
            .values()
            .filter(|client| client.outer.is_some())
            .map(|client| client.outer_idx);
        let live: Vec<u32> = flows.chain(clients).collect();
        let renumbered = self.outers.compact(live);
        let map = |old: u32| renumbered.get(&old).copied().unwrap_or(0);
        self.flows.remap_outers(map);
        for client in self.clients.values_mut() {
            client.outer_idx = map(client.outer_idx);
        }
    }
}

/// Dead outer contexts tolerated before pruning, beside twice the live ones.
const PRUNE_SLACK: usize = 1024;
