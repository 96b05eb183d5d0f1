//! Sim time: the millisecond grid every host and the runner share, the timers hosts publish
//! at the end of each turn, and advancing turmoil across quiet stretches in one step.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    rc::Rc,
    time::{Duration, Instant},
};

use crate::{commands::Inboxes, state::Shared, world::SimError};

/// The timers the runner must not step over: each host's earliest, as it published it at the
/// end of its last turn, and any other the hosts publish (datagrams crossing inside a relay).
#[derive(Debug, Default)]
pub(crate) struct Timers {
    /// In ms since the start, by host (or other key); absent: none.
    deadlines: BTreeMap<String, u64>,
    /// While the runner crosses a quiet stretch in one long step, the instant it ends; hosts
    /// sleep until then instead of waking every millisecond.
    quiet_until_ms: u64,
}

impl Timers {
    /// Publishes (or withdraws) a timer the runner must not step over, besides the hosts'
    /// own: e.g. datagrams crossing between a relay's two sides.
    pub(crate) fn set_deadline(&mut self, key: &str, at: Option<u64>) {
        match at {
            Some(at) => self.deadlines.insert(key.to_owned(), at),
            None => self.deadlines.remove(key),
        };
    }

    /// The earliest published timer, if any is before `limit`, else `limit`.
    fn earliest(&self, limit: u64) -> u64 {
        self.deadlines.values().copied().fold(limit, u64::min)
    }
}

pub(crate) fn now_ms() -> u64 {
    turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64
}

pub(crate) fn now_instant(origin: Instant) -> Instant {
    origin + Duration::from_millis(now_ms())
}

/// A deadline of a system under test in ms since the start, rounded up to the tick that will
/// see it due.
pub(crate) fn deadline_ms(origin: Instant, deadline: Instant) -> u64 {
    let since = deadline.saturating_duration_since(origin);
    let whole = since.as_millis() as u64;
    if since > Duration::from_millis(whole) {
        whole + 1
    } else {
        whole
    }
}

/// Ends a host's turn: publishes its earliest timer for the runner, then sleeps until the next
/// tick, or to the end of the quiet stretch the runner is crossing.
pub(crate) async fn end_turn(shared: &Rc<RefCell<Shared>>, name: &str, deadline: Option<u64>) {
    let now = now_ms();
    let quiet_until = {
        let mut shared = shared.borrow_mut();
        // The invariant "every poll_timeout is in the future": after a turn that handled what
        // was due, a deadline at or before now would make the host spin.
        if let Some(at) = deadline
            && at <= now
        {
            shared.journal.errors.push(format!(
                "{name}: poll_timeout is {at} ms after the start, not after now ({now} ms)"
            ));
        }
        shared.timers.set_deadline(name, deadline);
        shared.timers.quiet_until_ms
    };
    let sleep_ms = if quiet_until > now + 1 {
        quiet_until - now
    } else {
        1
    };
    tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
}

/// Advances the simulation to `at_ms`: across every quiet stretch in one step that ends a tick
/// before the next host timer or datagram arrival (or `at_ms`), and tick by tick from there, so
/// that every timer fires and every datagram arrives on its own millisecond.
pub(crate) fn run_until(
    sim: &mut turmoil::Sim<'_>,
    shared: &Rc<RefCell<Shared>>,
    inboxes: &Inboxes,
    at_ms: u64,
) -> Result<(), SimError> {
    loop {
        let now = sim.elapsed().as_millis() as u64;
        if now >= at_ms {
            return Ok(());
        }
        // Every host takes its first turn (and publishes its timers) in the first tick.
        let jump = (now > 0)
            .then(|| quiet_until(sim, shared, inboxes, now, at_ms))
            .flatten()
            .map(|next| next.saturating_sub(now + 1))
            .filter(|jump| *jump >= 2);
        let result = match jump {
            Some(jump) => {
                shared.borrow_mut().timers.quiet_until_ms = now + jump;
                sim.step_by(Duration::from_millis(jump))
            }
            None => sim.step(),
        };
        result.map_err(|error| SimError::Turmoil(error.to_string()))?;
    }
}

/// When the next thing can happen: the earliest host timer, the earliest datagram due off
/// the wire (one held on a link moves only at a `release`, which is a step), or `limit`.
/// `None` while a command or a spoofed datagram waits for its host, or a DNS query waits for
/// the attacker racing it to see it.
fn quiet_until(
    sim: &turmoil::Sim<'_>,
    shared: &Rc<RefCell<Shared>>,
    inboxes: &Inboxes,
    now: u64,
    limit: u64,
) -> Option<u64> {
    // A spoofed datagram waits for the host that owns its source, like a command.
    let shared_state = shared.borrow();
    if inboxes.any_waiting() || !shared_state.spoof_orders.is_empty() || shared_state.query_to_race
    {
        return None;
    }
    let delivery = sim
        .next_delivery()
        .map(|due_in| now + due_in.as_millis() as u64);
    let timers = shared_state.timers.earliest(limit);
    Some(delivery.map_or(timers, |delivery| delivery.min(timers)))
}
