//! The scenario's time grid (docs/harness.md, "Time"): when sim time 0 is, when each step
//! starts and how long it lasts. The simulator drives its hosts on this grid and the model
//! predicts on it; both take every number from here.

use crate::{Scenario, Step};

/// Sim time 0 is 2026-01-01T00:00:00Z.
pub const ORIGIN_UNIX_SECS: u64 = 1_767_225_600;
/// Step 0 starts here, after the setup (allocations, first paths).
pub const FIRST_STEP_MS: u64 = 2000;
/// A step lasts this long unless it is an `idle` step.
pub const STEP_MS: u64 = 1000;
/// The gateway's TUN link to the resource responder, each way.
pub const TUN_LATENCY_MS: u64 = 1;

/// How long a step lasts: `idle { seconds, ms }` lasts that long, every other step
/// [`STEP_MS`].
pub fn step_duration_ms(step: &Step) -> u64 {
    match step {
        Step::Idle { seconds, ms } => seconds * 1000 + ms,
        _ => STEP_MS,
    }
}

/// When each step starts and when the run ends (all in sim milliseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeline {
    /// `step_start[k]` is `t_k`.
    pub step_start: Vec<u64>,
    /// Every gateway shuts down here.
    pub t_end: u64,
}

impl Timeline {
    /// Step times per `docs/harness.md`: `t_0` is [`FIRST_STEP_MS`], each step lasts
    /// [`step_duration_ms`]; `t_end` is the end of the last step ([`FIRST_STEP_MS`] with no
    /// steps).
    pub fn of(scenario: &Scenario) -> Self {
        let mut t = FIRST_STEP_MS;
        let mut step_start = Vec::with_capacity(scenario.steps.len());
        for step in &scenario.steps {
            step_start.push(t);
            t += step_duration_ms(step);
        }
        Timeline {
            step_start,
            t_end: t,
        }
    }

    /// The start of the step after `k` (or `t_end` after the last).
    pub fn next_start(&self, k: usize) -> u64 {
        self.step_start.get(k + 1).copied().unwrap_or(self.t_end)
    }

    /// The step an observation at `at_ms` belongs to: the last step started at or before it
    /// (step 0 for what happens during the setup).
    pub fn step_at(&self, at_ms: u64) -> usize {
        self.step_start
            .iter()
            .rposition(|start| *start <= at_ms)
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_start_after_setup_and_idles_last_their_seconds() {
        let scenario = Scenario::from_yaml(
            "name: t\n\
             topology:\n  \
               clients: [{ name: alice, stack: v4 }]\n  \
               gateways: [{ name: gw, stack: v4 }]\n  \
               resources: [{ name: web, gateway: gw, cidr: 198.51.100.10/32 }]\n\
             steps:\n  \
               - udp: { client: alice, resource: web, port: 53, bytes: 1 }\n  \
               - idle: { seconds: 120 }\n  \
               - udp: { client: alice, resource: web, port: 53, bytes: 1 }\n",
            "t.yaml",
        )
        .expect("a valid scenario");
        let timeline = Timeline::of(&scenario);
        assert_eq!(timeline.step_start, vec![2_000, 3_000, 123_000]);
        assert_eq!(timeline.t_end, 124_000);
        assert_eq!(timeline.next_start(1), 123_000);
        assert_eq!(timeline.next_start(2), 124_000);
        // During the setup, step 0; on a step's first millisecond, that step; the last
        // millisecond of a step, still that step.
        assert_eq!(timeline.step_at(0), 0);
        assert_eq!(timeline.step_at(2_999), 0);
        assert_eq!(timeline.step_at(3_000), 1);
        assert_eq!(timeline.step_at(122_999), 1);
        assert_eq!(timeline.step_at(123_000), 2);
        assert_eq!(timeline.step_at(200_000), 2);
    }
}
