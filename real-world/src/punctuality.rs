//! How punctual the real world's own machinery was while a story played. The run plays steps
//! and reads its sockets on the wall clock, and the links put each datagram back after its
//! latency. When the machine takes the CPU from under them (another busy process, or the host
//! of a virtual machine: steal time), they run late, and every time measured after that moves
//! with them although the systems under test did nothing wrong. A run says how late its
//! machinery was, so that a time finding can be told from a stalled machine.

use std::time::{Duration, Instant};

use crate::compare::{Finding, FindingKind};

/// The world's own lateness during one run, in ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Punctuality {
    /// The latest a step's work (its packets sent, its control commands written) was done
    /// after its time on the timeline.
    pub step_late_ms: u64,
    /// The longest the run went without reading its sockets (it reads every 0.5 ms).
    pub poll_gap_ms: u64,
    /// The longest the links went without moving datagrams (they look every 0.2 ms).
    pub links_gap_ms: u64,
    /// CPU time the hypervisor took from this machine while the story played (`steal` in
    /// `/proc/stat`, summed over the CPUs; 0 on bare metal).
    pub steal_ms: u64,
}

impl Punctuality {
    /// The worst of the four: how far the world's own times may have moved.
    pub fn worst_ms(&self) -> u64 {
        self.step_late_ms
            .max(self.poll_gap_ms)
            .max(self.links_gap_ms)
            .max(self.steal_ms)
    }
}

impl std::fmt::Display for Punctuality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "steps done up to {} ms late, sockets read at most {} ms apart, links moved at \
             most {} ms apart, {} ms of CPU steal",
            self.step_late_ms, self.poll_gap_ms, self.links_gap_ms, self.steal_ms
        )
    }
}

/// The longest gap between a loop's consecutive looks; a fresh [`GapMeter::restart`] leaves
/// out the time in between (a step's own work, for instance).
#[derive(Debug, Default)]
pub struct GapMeter {
    last: Option<Instant>,
    longest: Duration,
}

impl GapMeter {
    /// The loop looks now.
    pub fn look(&mut self, now: Instant) {
        if let Some(last) = self.last {
            self.longest = self.longest.max(now.saturating_duration_since(last));
        }
        self.last = Some(now);
    }

    /// The next look starts a new measure.
    pub fn restart(&mut self) {
        self.last = None;
    }

    /// The longest gap, in whole ms.
    pub fn longest_ms(&self) -> u64 {
        self.longest.as_millis() as u64
    }
}

/// The machine's CPU steal time since boot, in ms; 0 where `/proc/stat` does not say.
pub(crate) fn steal_ms_so_far() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| steal_ms_of(&stat))
        .unwrap_or(0)
}

/// The `steal` column (the eighth number) of the `cpu` line, in USER_HZ ticks of 10 ms.
pub fn steal_ms_of(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let ticks: u64 = line.split_whitespace().nth(8)?.parse().ok()?;
    Some(ticks * 10)
}

/// Why a run's `findings` measure the machine rather than the systems under test: every one of
/// them is about time alone (what happened agrees with the model), and the world's own
/// machinery ran late by at least half the tolerance while the story played, enough to carry
/// a time that was on time past the tolerance. `None` when the findings stand, or there are
/// none. `worst_offset_ms` is the run's largest difference from the model's times.
pub fn disturbed(
    findings: &[Finding],
    worst_offset_ms: u64,
    punctuality: &Punctuality,
    tolerance_ms: u64,
) -> Option<String> {
    let all_about_time = !findings.is_empty()
        && findings
            .iter()
            .all(|finding| finding.kind == FindingKind::Time);
    let late = punctuality.worst_ms();
    (all_about_time && late * 2 >= tolerance_ms).then(|| {
        format!(
            "{} findings about time alone (the largest difference {worst_offset_ms} ms), while \
             the world itself ran up to {late} ms late: {punctuality}",
            findings.len(),
        )
    })
}
