//! The behaviour dimensions of the coverage grid: traffic on the gateways' timer deadlines
//! (per timer, 1 ms before, on, and 1 ms after), TCP segments by the state of their flow,
//! 5-tuples reused after an earlier flow ended, and the swarm profiles the cases ran under.
//! The model says which corners each case reached (`model::coverage`); the grid adds them up.

use std::collections::BTreeMap;

use model::coverage::{ModelCoverage, TCP_EVENTS, TCP_STATES, TIMERS};

use super::grid::{Grid, Requirement, Section};
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
pub const REQUIRED_TURN_TIMERS: [&str; 6] = sim::TURN_TIMERS;

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
    pub fn add_turn_timers(&mut self, counts: &BTreeMap<&'static str, [u64; 3]>) {
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

    /// The behaviour sections of the grid, with what the generated cases must reach.
    pub fn sections(&self, grid: &mut Grid) {
        const TIMER_SECTION: &str = "timer deadlines (packets)";
        const WHEN: [&str; 3] = ["-1 ms", "on", "+1 ms"];
        let mut timers = Section::new(TIMER_SECTION, &WHEN);
        for timer in TIMERS.into_iter().chain(sim::TURN_TIMERS) {
            let counts = self
                .timer_boundaries
                .get(timer)
                .copied()
                .unwrap_or_default();
            timers.row(timer, counts.to_vec());
        }
        grid.sections.push(timers);
        for timer in TIMERS.into_iter().chain(REQUIRED_TURN_TIMERS) {
            for (column, when) in WHEN.iter().zip(["1 ms before", "on", "1 ms after"]) {
                grid.requirements.push(Requirement::cell(
                    format!("traffic {when} the deadline of the {timer}"),
                    TIMER_SECTION,
                    timer,
                    column,
                ));
            }
        }

        const TCP_SECTION: &str = "TCP segments by flow state";
        let mut tcp = Section::new(TCP_SECTION, &TCP_EVENTS);
        for state in TCP_STATES {
            let counts = TCP_EVENTS
                .iter()
                .map(|event| {
                    self.tcp_state_events
                        .get(&(state, *event))
                        .copied()
                        .unwrap_or(0)
                })
                .collect();
            tcp.row(state, counts);
        }
        grid.sections.push(tcp);
        for (state, event) in REQUIRED_TCP {
            grid.requirements.push(Requirement::cell(
                format!("a TCP {event} in state {state}"),
                TCP_SECTION,
                state,
                event,
            ));
        }

        const REUSE_SECTION: &str = "5-tuples and addresses reused";
        let mut reuse = Section::new(REUSE_SECTION, &["times"]);
        for after in REQUIRED_REUSE {
            reuse.row(after, vec![self.reuse.get(after).copied().unwrap_or(0)]);
        }
        for (after, count) in &self.reuse {
            if !REQUIRED_REUSE.contains(after) {
                reuse.row(*after, vec![*count]);
            }
        }
        grid.sections.push(reuse);
        for after in REQUIRED_REUSE {
            grid.requirements.push(Requirement::cell(
                format!("a 5-tuple reused {after}"),
                REUSE_SECTION,
                after,
                "times",
            ));
        }

        const PROFILE_SECTION: &str = "swarm profiles (cases)";
        let mut profiles = Section::new(PROFILE_SECTION, &["cases"]);
        profiles.top = Some(3);
        for (profile, cases) in &self.profiles {
            profiles.row(profile.clone(), vec![*cases]);
        }
        profiles.order();
        grid.sections.push(profiles);
        grid.requirements.push(Requirement::distinct_rows(
            "more than one swarm profile".to_owned(),
            PROFILE_SECTION,
            2,
        ));

        const LEFT_OUT_SECTION: &str = "cases whose profile left out";
        let mut left_out = Section::new(LEFT_OUT_SECTION, &["cases"]);
        for kind in ActionKind::ALL {
            left_out.row(
                kind.name(),
                vec![self.left_out.get(&kind).copied().unwrap_or(0)],
            );
        }
        grid.sections.push(left_out);
        for kind in ActionKind::ALL
            .into_iter()
            .filter(|k| *k != ActionKind::Path)
        {
            grid.requirements.push(Requirement::cell(
                format!("a swarm profile without {}", kind.name()),
                LEFT_OUT_SECTION,
                kind.name(),
                "cases",
            ));
        }
    }
}
