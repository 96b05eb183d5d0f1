//! The behaviour dimensions of the coverage grid: traffic on the gateways' timer deadlines
//! (per timer, 1 ms before, on, and 1 ms after), TCP segments by the state of their flow,
//! 5-tuples reused after an earlier flow ended, and the swarm profiles the cases ran under.
//! The model says which corners each case reached (`model::coverage`); the grid adds them up.

use std::{collections::BTreeMap, fmt::Write as _};

use model::coverage::{ModelCoverage, TCP_EVENTS, TCP_STATES, TIMERS};

use crate::strategy::profile::{ActionKind, Profile};

/// TCP segments by flow state the generated cases must reach: every way a connection starts,
/// carries data and ends, a SYN on a flow that is open and on one that closed, and a late
/// segment after the close.
pub const REQUIRED_TCP: [(&str, &str); 12] = [
    ("no flow", "syn"),
    ("open", "syn-ack"),
    ("open", "syn"),
    ("open", "data"),
    ("open", "fin"),
    ("open", "rst"),
    ("fin one way", "fin"),
    ("fin one way", "data"),
    ("fin one way", "rst"),
    ("fin both ways", "ack"),
    ("closed (fin or rst)", "syn"),
    ("closed (fin or rst)", "ack"),
];

/// A client back at an address it had left (its gateways' channels to it bound again).
pub const ROAM_BACK: &str = "client back at an earlier address";

/// Ways an earlier flow ended before its 5-tuple was used again, and reuses of addresses, that
/// the cases must reach.
pub const REQUIRED_REUSE: [&str; 4] = ["after fin", "after rst", "after idle timeout", ROAM_BACK];

/// Relay timers whose deadlines the generated cases must reach.
pub const REQUIRED_RELAY_TIMERS: [&str; 4] = sim::RELAY_TIMERS;

#[derive(Debug, Default, Clone)]
pub struct Behaviour {
    /// Gateway timers (from the model) and relay timers (from the runs), per timer:
    /// datagrams 1 ms before the deadline, on it, 1 ms after.
    pub timer_boundaries: BTreeMap<&'static str, [u64; 3]>,
    pub tcp_state_events: BTreeMap<(&'static str, &'static str), u64>,
    pub reuse: BTreeMap<&'static str, u64>,
    /// Cases per profile (by its label).
    pub profiles: BTreeMap<String, u64>,
    /// Cases whose profile left a kind of action out, per kind.
    pub left_out: BTreeMap<ActionKind, u64>,
}

impl Behaviour {
    pub fn add_model(&mut self, model: &ModelCoverage) {
        for (timer, counts) in &model.timer_boundaries {
            let sum = self.timer_boundaries.entry(timer).or_default();
            for (total, count) in sum.iter_mut().zip(counts) {
                *total += count;
            }
        }
        for (key, count) in &model.tcp_state_events {
            *self.tcp_state_events.entry(*key).or_default() += count;
        }
        for (after, count) in &model.reuse {
            *self.reuse.entry(after).or_default() += count;
        }
    }

    /// Counts the datagrams a run saw on its relays' timers' deadlines (predicted or not).
    pub fn add_relay_timers(&mut self, counts: &BTreeMap<&'static str, [u64; 3]>) {
        for (timer, counts) in counts {
            let sum = self.timer_boundaries.entry(timer).or_default();
            for (total, count) in sum.iter_mut().zip(counts) {
                *total += count;
            }
        }
    }

    pub fn add_profile(&mut self, profile: &Profile) {
        *self.profiles.entry(profile.to_string()).or_default() += 1;
        for kind in ActionKind::ALL {
            if profile.weight(kind) == 0 {
                *self.left_out.entry(kind).or_default() += 1;
            }
        }
    }

    /// Required counters still at zero, by name.
    pub fn missing(&self) -> Vec<String> {
        let mut missing = Vec::new();
        for timer in TIMERS.into_iter().chain(REQUIRED_RELAY_TIMERS) {
            let counts = self
                .timer_boundaries
                .get(timer)
                .copied()
                .unwrap_or_default();
            for (count, when) in counts.iter().zip(["1 ms before", "on", "1 ms after"]) {
                if *count == 0 {
                    missing.push(format!("traffic {when} the deadline of the {timer}"));
                }
            }
        }
        for (state, event) in REQUIRED_TCP {
            if self
                .tcp_state_events
                .get(&(state, event))
                .copied()
                .unwrap_or(0)
                == 0
            {
                missing.push(format!("a TCP {event} in state {state}"));
            }
        }
        for after in REQUIRED_REUSE {
            if self.reuse.get(after).copied().unwrap_or(0) == 0 {
                missing.push(format!("a 5-tuple reused {after}"));
            }
        }
        if self.profiles.len() < 2 {
            missing.push("more than one swarm profile".to_owned());
        }
        for kind in ActionKind::ALL
            .into_iter()
            .filter(|k| *k != ActionKind::Path)
        {
            if self.left_out.get(&kind).copied().unwrap_or(0) == 0 {
                missing.push(format!("a swarm profile without {}", kind.name()));
            }
        }
        missing
    }

    pub fn grid(&self, out: &mut String) {
        let _ = writeln!(out, "timer deadlines (packets)   -1 ms     on  +1 ms");
        for timer in TIMERS.into_iter().chain(sim::RELAY_TIMERS) {
            let [before, on, after] = self
                .timer_boundaries
                .get(timer)
                .copied()
                .unwrap_or_default();
            let _ = writeln!(out, "  {timer:<25} {before:>6} {on:>6} {after:>6}");
        }
        let _ = writeln!(
            out,
            "TCP segments by flow state  {}",
            TCP_EVENTS
                .iter()
                .map(|event| format!("{event:>8}"))
                .collect::<String>()
        );
        for state in TCP_STATES {
            let row: String = TCP_EVENTS
                .iter()
                .map(|event| {
                    let count = self.tcp_state_events.get(&(state, *event)).copied();
                    format!("{:>8}", count.unwrap_or(0))
                })
                .collect();
            let _ = writeln!(out, "  {state:<25} {row}");
        }
        let reuse: Vec<String> = self
            .reuse
            .iter()
            .map(|(after, count)| format!("{after} {count}"))
            .collect();
        let _ = writeln!(out, "5-tuples reused           {}", reuse.join(", "));
        let left_out: Vec<String> = ActionKind::ALL
            .iter()
            .map(|kind| {
                format!(
                    "{} {}",
                    kind.name(),
                    self.left_out.get(kind).copied().unwrap_or(0)
                )
            })
            .collect();
        let everything = self
            .profiles
            .get(&Profile::everything().to_string())
            .copied()
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "swarm profiles            {} distinct; {} cases with everything on; cases without: {}",
            self.profiles.len(),
            everything,
            left_out.join(", ")
        );
    }
}
