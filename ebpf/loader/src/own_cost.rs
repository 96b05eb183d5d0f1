//! The program's own cost per packet, from the kernel's run-time statistics.
//!
//! [`bench`](crate::bench) times whole `BPF_PROG_TEST_RUN` calls: the test run's fixed work and
//! the kernel clock's coarse steps sit in every sample, and the ratio to the floor moves with
//! the machine's load from run to run. This measures the other way: with `BPF_ENABLE_STATS`
//! on, the kernel times every run of a program around the program alone (one `sched_clock`
//! read before and after) and adds it to the program's `run_time_ns` and `run_cnt`. A path's
//! mean minus the floor's mean (same clock reads, a program that only returns) is the program's
//! own cost: the clock reads cancel, and the means over hundreds of thousands of runs are
//! steady to well under a nanosecond.
//!
//! The calls are made as in `bench` (repeat = 1, so every run starts from the original frame;
//! path and floor alternate call by call, the paths take turns in rounds), and the statistics
//! are read before and after each path's turn in a round, so each path and its floor are
//! charged exactly their own runs. The rounds are split into quarters in order, and the own
//! cost of each quarter is reported too: how far the quarters stray from the whole run is the
//! measurement's own noise.
//!
//! Statistics stay enabled only while the returned measurement runs (the file descriptor of
//! `BPF_ENABLE_STATS` is closed at the end): enabled, they slow every BPF program on the host.

use aya::{
    programs::Xdp,
    sys::{Stats, enable_stats},
};

use crate::{
    RunError, XdpRelay,
    bench::{Caller, ROUND_PAIRS},
};

/// Quarters of the run whose own costs are compared with the whole run's.
const PARTS: usize = 4;

/// One path's own cost.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnCost {
    /// The path's name.
    pub path: String,
    /// Mean kernel-timed ns per run of the relay program on this path, over the whole run.
    pub program_ns: f64,
    /// Mean kernel-timed ns per run of the floor on the same frame, over the whole run.
    pub floor_ns: f64,
    /// What the program itself costs: the median over rounds of the round's program mean
    /// minus its floor mean (a median, so that a round an interrupt or another process
    /// inflated does not move it).
    pub own_ns: f64,
    /// The same median over each quarter of the rounds, in order.
    pub parts_ns: [f64; PARTS],
}

impl OwnCost {
    /// The largest relative distance of a quarter's own cost from the whole run's.
    pub fn spread(&self) -> f64 {
        self.parts_ns
            .iter()
            .map(|part| (part - self.own_ns).abs() / self.own_ns.abs().max(f64::EPSILON))
            .fold(0.0, f64::max)
    }
}

#[derive(Default, Clone, Copy)]
struct Tally {
    nanos: u64,
    runs: u64,
}

impl Tally {
    fn mean(self) -> f64 {
        self.nanos as f64 / self.runs.max(1) as f64
    }

    fn add(&mut self, before: (u64, u64), after: (u64, u64)) {
        self.nanos += after.0.saturating_sub(before.0);
        self.runs += after.1.saturating_sub(before.1);
    }

    fn add_tally(&mut self, other: Tally) {
        self.nanos += other.nanos;
        self.runs += other.runs;
    }
}

/// The kernel's (run time in ns, run count) of a program so far.
fn stats(xdp: &Xdp) -> Result<(u64, u64), RunError> {
    let info = xdp.info().map_err(RunError::StatsRead)?;
    let nanos = u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX);
    Ok((nanos, info.run_count()))
}

/// Measures every `(name, frame)` with `calls` runs of the program and as many of the floor.
pub fn measure_all<'a>(
    relay: &XdpRelay,
    frames: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    calls: usize,
) -> Result<Vec<OwnCost>, RunError> {
    let frames: Vec<(&str, &[u8])> = frames.into_iter().collect();
    let mut caller = Caller::new(relay, &frames)?;
    let (program, floor) = (caller.program, caller.floor);
    let _stats_on = enable_stats(Stats::RunTime).map_err(RunError::Stats)?;

    caller.warm_up(&frames, ROUND_PAIRS)?;
    let rounds = calls.max(1).div_ceil(ROUND_PAIRS);
    // Per path: the totals, and the own cost of each round in order.
    let mut totals = vec![(Tally::default(), Tally::default()); frames.len()];
    let mut per_round = vec![Vec::with_capacity(rounds); frames.len()];
    for round in 0..rounds {
        for turn in 0..frames.len() {
            let index = (round + turn) % frames.len();
            let frame = frames[index].1;
            let (program_before, floor_before) = (stats(program)?, stats(floor)?);
            // The kernel's statistics time these runs; the calls' own times are not needed.
            caller.pairs(frame, ROUND_PAIRS, |_, _| {})?;
            let mut program_round = Tally::default();
            let mut floor_round = Tally::default();
            program_round.add(program_before, stats(program)?);
            floor_round.add(floor_before, stats(floor)?);
            per_round[index].push(program_round.mean() - floor_round.mean());
            let (program_total, floor_total) = &mut totals[index];
            program_total.add_tally(program_round);
            floor_total.add_tally(floor_round);
        }
    }

    Ok(frames
        .iter()
        .zip(totals)
        .zip(per_round)
        .map(|(((name, _), (program, floor)), rounds)| {
            let part_len = rounds.len().div_ceil(PARTS).max(1);
            let mut parts_ns = [0.0; PARTS];
            for (part, chunk) in parts_ns.iter_mut().zip(rounds.chunks(part_len)) {
                *part = median(chunk.to_vec());
            }
            OwnCost {
                path: (*name).to_owned(),
                program_ns: program.mean(),
                floor_ns: floor.mean(),
                own_ns: median(rounds),
                parts_ns,
            }
        })
        .collect())
}

/// The median of some values (0 for none).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        len if len % 2 == 1 => values[len / 2],
        len => (values[len / 2 - 1] + values[len / 2]) / 2.0,
    }
}

/// A plain-text table of own costs.
pub fn render(rows: &[OwnCost]) -> String {
    let mut out = format!(
        "{:<16} {:>8} {:>8} {:>8}  {:<27} {:>7}\n",
        "path", "program", "floor", "own ns", "own ns by quarter of the run", "spread"
    );
    for row in rows {
        let parts: Vec<String> = row.parts_ns.iter().map(|ns| format!("{ns:.1}")).collect();
        out.push_str(&format!(
            "{:<16} {:>8.1} {:>8.1} {:>8.1}  {:<27} {:>6.1}%\n",
            row.path,
            row.program_ns,
            row.floor_ns,
            row.own_ns,
            parts.join(" "),
            100.0 * row.spread(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_no_values() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
    }

    #[test]
    fn spread_is_the_farthest_quarter_relative_to_the_whole() {
        let row = OwnCost {
            path: "p".to_owned(),
            program_ns: 150.0,
            floor_ns: 50.0,
            own_ns: 100.0,
            parts_ns: [98.0, 103.0, 100.0, 99.0],
        };
        assert!((row.spread() - 0.03).abs() < 1e-9);
    }
}
