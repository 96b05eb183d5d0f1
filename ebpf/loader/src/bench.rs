//! Cost per packet of the fast path's rewriting paths, next to a floor.
//!
//! The floor is `floor_tx`, a program in the same object that only returns `XDP_TX`. Every
//! sample is one `BPF_PROG_TEST_RUN` call with `repeat = 1`: with `repeat > 1` the kernel re-runs
//! the program on the buffer the previous repetition rewrote, so later repetitions would measure
//! something else. The kernel's duration of one call includes its timer and the test run's own
//! per-call work; the floor carries the same overhead, so the ratio compares like with like.
//!
//! The machine's state drifts (other work on the host, cache pressure), and a drifting state
//! makes the program slower by a larger factor than the floor. So the measurement is
//! interleaved as finely as it can be: floor and path alternate call by call (which one goes
//! first alternates too), and the paths take turns in short rounds of [`ROUND_PAIRS`] pairs
//! each, over the whole run, so every path and its floor sample the same mixture of states.
//!
//! The kernel's clock on these machines advances in steps of about 10 ns, so a median moves by
//! a whole step at a time (100 -> 110 ns is 10% of the floor). The ratio is therefore taken
//! between *mid-means* (the mean of the middle half of the samples, between the 25th and 75th
//! percentiles): it resolves below one step and, like the median, ignores calls that an
//! interrupt or a preemption inflated. Its spread is reported as the 25th and 75th percentile of
//! the same ratio computed per round.
//!
//! The kernel's own run-time statistics (`BPF_ENABLE_STATS`, `run_time_ns / run_cnt`) are not
//! used: they time every run with two more clock reads, which on these machines cost about as
//! much as the floor itself and made the program's share look larger still, and they are a
//! plain mean over every run, interrupted ones included.
//!
//! The caller installs the relay addresses and bindings the frames need (see
//! `xdp_fixtures::Fixture::setup`) before measuring.

use aya::programs::{TestRun, TestRunOptions, Xdp};
use relay_xdp_common::{FLOOR_PROGRAM_NAME, PROGRAM_NAME};

use crate::{HEADROOM, MIN_FRAME_LEN, RunError, Verdict, XdpRelay, duration_ns};

/// Calls per path by default, and as many calls of the floor beside it.
pub const DEFAULT_CALLS: usize = 300_000;
/// Pairs of calls (one of the floor, one of the path) per path and round.
pub const ROUND_PAIRS: usize = 500;

/// How [`measure_all`] measures, for the header of a printed table (a few lines, no trailing
/// newline).
pub fn method(calls: usize) -> String {
    format!(
        "Method: {calls} BPF_PROG_TEST_RUN calls per path with repeat = 1 (each on the original \
         frame),\nalternating call by call with as many calls of floor_tx (returns XDP_TX only) \
         on the same frame;\nthe paths take turns in rounds of {ROUND_PAIRS} pairs over the \
         whole run. ns: kernel-measured per call, its timer\nincluded (in the floor too). \
         ratio: mid-mean of the path / mid-mean of the floor, the mid-mean being\nthe mean of \
         the middle half of the calls (the clock steps by ~10 ns, so a median jumps a step at \
         a\ntime). rounds: 25th-75th percentile of the ratio computed per round."
    )
}

/// One measured path.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchRow {
    /// The path's name (the fixture's).
    pub path: String,
    /// Frame length in bytes.
    pub bytes: usize,
    /// What the relay program did with the frame (a benchmark of a PASS measures the wrong
    /// thing; the caller should check this).
    pub verdict: Verdict,
    /// Calls made for each of the program and the floor.
    pub calls: usize,
    /// Rounds the calls were spread over.
    pub rounds: usize,
    /// Median kernel-measured ns per call of the relay program.
    pub median_ns: u64,
    /// 25th and 75th percentile of the relay program's calls.
    pub p25_ns: u64,
    pub p75_ns: u64,
    /// Mean of the middle half (25th to 75th percentile) of the relay program's calls.
    pub mid_mean_ns: f64,
    /// Median kernel-measured ns per call of the floor program on the same frame.
    pub floor_median_ns: u64,
    /// 25th and 75th percentile of the floor's calls.
    pub floor_p25_ns: u64,
    pub floor_p75_ns: u64,
    /// Mean of the middle half of the floor's calls.
    pub floor_mid_mean_ns: f64,
    /// `mid_mean_ns / floor_mid_mean_ns`.
    pub ratio: f64,
    /// 25th and 75th percentile of the same ratio computed in each round.
    pub ratio_p25: f64,
    pub ratio_p75: f64,
}

/// Times every `(name, frame)`: `calls` calls per path (at least 1) and as many of the floor,
/// interleaved as the module docs describe.
pub fn measure_all<'a>(
    relay: &XdpRelay,
    frames: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    calls: usize,
) -> Result<Vec<BenchRow>, RunError> {
    let frames: Vec<(&str, &[u8])> = frames.into_iter().collect();
    let calls = calls.max(1);
    let mut caller = Caller::new(relay, &frames)?;
    let program = caller.program;

    let mut paths: Vec<PathSamples> = Vec::with_capacity(frames.len());
    for (_, frame) in &frames {
        let (action, _) = caller.call(program, frame)?;
        paths.push(PathSamples {
            verdict: Verdict::from_action(action),
            program: Vec::with_capacity(calls),
            floor: Vec::with_capacity(calls),
            round_ratios: Vec::new(),
        });
    }
    caller.warm_up(&frames, ROUND_PAIRS.min(calls))?;

    let rounds = calls.div_ceil(ROUND_PAIRS);
    let mut round_program = Vec::with_capacity(ROUND_PAIRS);
    let mut round_floor = Vec::with_capacity(ROUND_PAIRS);
    for round in 0..rounds {
        let pairs = ROUND_PAIRS.min(calls - round * ROUND_PAIRS);
        // The first path of a round rotates, so that no path always follows the same one.
        for turn in 0..frames.len() {
            let index = (round + turn) % frames.len();
            let frame = frames[index].1;
            round_program.clear();
            round_floor.clear();
            caller.pairs(frame, pairs, |side, ns| match side {
                Side::Floor => round_floor.push(ns),
                Side::Program => round_program.push(ns),
            })?;
            let samples = &mut paths[index];
            samples.program.extend_from_slice(&round_program);
            samples.floor.extend_from_slice(&round_floor);
            let ratio = Spread::of(&mut round_program).mid_mean
                / Spread::of(&mut round_floor).mid_mean.max(1.0);
            samples.round_ratios.push(ratio);
        }
    }

    Ok(frames
        .iter()
        .zip(paths)
        .map(|((name, frame), mut samples)| {
            let program = Spread::of(&mut samples.program);
            let floor = Spread::of(&mut samples.floor);
            samples.round_ratios.sort_unstable_by(f64::total_cmp);
            BenchRow {
                path: (*name).to_owned(),
                bytes: frame.len(),
                verdict: samples.verdict,
                calls,
                rounds,
                median_ns: program.median,
                p25_ns: program.p25,
                p75_ns: program.p75,
                mid_mean_ns: program.mid_mean,
                floor_median_ns: floor.median,
                floor_p25_ns: floor.p25,
                floor_p75_ns: floor.p75,
                floor_mid_mean_ns: floor.mid_mean,
                ratio: program.mid_mean / floor.mid_mean.max(1.0),
                ratio_p25: percentile(&samples.round_ratios, 25),
                ratio_p75: percentile(&samples.round_ratios, 75),
            }
        })
        .collect())
}

/// Which program a call of [`Caller::pairs`] ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Floor,
    Program,
}

/// The relay program and the floor, with an output buffer for the longest frame: one
/// `BPF_PROG_TEST_RUN` call at a time, `repeat = 1`.
pub(crate) struct Caller<'r> {
    pub(crate) program: &'r Xdp,
    pub(crate) floor: &'r Xdp,
    out: Vec<u8>,
}

impl<'r> Caller<'r> {
    /// Fails on a frame the kernel would refuse.
    pub(crate) fn new(relay: &'r XdpRelay, frames: &[(&str, &[u8])]) -> Result<Self, RunError> {
        if let Some((_, short)) = frames.iter().find(|(_, frame)| frame.len() < MIN_FRAME_LEN) {
            return Err(RunError::FrameTooShort { len: short.len() });
        }
        let longest = frames.iter().map(|(_, frame)| frame.len()).max();
        Ok(Self {
            program: relay.xdp(PROGRAM_NAME)?,
            floor: relay.xdp(FLOOR_PROGRAM_NAME)?,
            out: vec![0u8; longest.unwrap_or(0) + HEADROOM],
        })
    }

    /// `pairs` pairs of calls on `frame`, one of the floor and one of the program each, which
    /// of the two goes first alternating pair by pair; `record` gets each call's kernel ns.
    pub(crate) fn pairs(
        &mut self,
        frame: &[u8],
        pairs: usize,
        mut record: impl FnMut(Side, u64),
    ) -> Result<(), RunError> {
        let (program, floor) = (self.program, self.floor);
        for pair in 0..pairs {
            let order = if pair % 2 == 0 {
                [(Side::Floor, floor), (Side::Program, program)]
            } else {
                [(Side::Program, program), (Side::Floor, floor)]
            };
            for (side, xdp) in order {
                record(side, self.call(xdp, frame)?.1);
            }
        }
        Ok(())
    }

    /// A round that is not recorded, `pairs` pairs per frame: caches, branch predictors and
    /// the map's buckets warm up.
    pub(crate) fn warm_up(
        &mut self,
        frames: &[(&str, &[u8])],
        pairs: usize,
    ) -> Result<(), RunError> {
        for (_, frame) in frames {
            self.pairs(frame, pairs, |_, _| {})?;
        }
        Ok(())
    }

    /// Runs `xdp` once on `frame`: its return value and the kernel's ns for the call.
    pub(crate) fn call(&mut self, xdp: &Xdp, frame: &[u8]) -> Result<(u32, u64), RunError> {
        let result = xdp.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut self.out),
            repeat: 1,
            ..TestRunOptions::new()
        })?;
        Ok((result.return_value, duration_ns(result.duration)))
    }
}

/// Times one frame through the relay program and through the floor, `calls` times each.
pub fn measure(
    relay: &XdpRelay,
    name: &str,
    frame: &[u8],
    calls: usize,
) -> Result<BenchRow, RunError> {
    let mut rows = measure_all(relay, [(name, frame)], calls)?;
    Ok(rows.remove(0))
}

/// The samples of one path and of its floor.
struct PathSamples {
    verdict: Verdict,
    program: Vec<u64>,
    floor: Vec<u64>,
    round_ratios: Vec<f64>,
}

/// Quartiles and mid-mean of a set of samples.
struct Spread {
    p25: u64,
    median: u64,
    p75: u64,
    mid_mean: f64,
}

impl Spread {
    /// Sorts `samples` (at least one) and summarises them.
    fn of(samples: &mut [u64]) -> Self {
        samples.sort_unstable();
        let len = samples.len();
        // The middle half: a quarter off each end (everything when there are fewer than 4).
        let middle = &samples[len / 4..len - len / 4];
        let mid_mean = middle.iter().sum::<u64>() as f64 / middle.len().max(1) as f64;
        Self {
            p25: percentile(samples, 25),
            median: percentile(samples, 50),
            p75: percentile(samples, 75),
            mid_mean,
        }
    }
}

/// Nearest-rank percentile of sorted samples; the default value for none.
fn percentile<T: Copy + Default>(sorted: &[T], pct: usize) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = (sorted.len() * pct).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// A plain-text table of rows.
pub fn render(rows: &[BenchRow]) -> String {
    let mut out = format!(
        "{:<16} {:>5}  {:<7} {:>6} {:>9} {:>6} {:>9} {:>6}  {:>9}\n",
        "path", "bytes", "verdict", "median", "p25-p75", "floor", "p25-p75", "ratio", "rounds"
    );
    for row in rows {
        out.push_str(&format!(
            "{:<16} {:>5}  {:<7} {:>6} {:>9} {:>6} {:>9} {:>6.2}  {:>9}\n",
            row.path,
            row.bytes,
            row.verdict.name().trim_start_matches("XDP_"),
            row.median_ns,
            format!("{}-{}", row.p25_ns, row.p75_ns),
            row.floor_median_ns,
            format!("{}-{}", row.floor_p25_ns, row.floor_p75_ns),
            row.ratio,
            format!("{:.2}-{:.2}", row.ratio_p25, row.ratio_p75),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_quartiles_and_the_mean_of_the_middle_half() {
        let mut samples = vec![100, 110, 100, 110, 100, 110, 900, 10];
        let spread = Spread::of(&mut samples);
        assert_eq!(samples, vec![10, 100, 100, 100, 110, 110, 110, 900]);
        assert_eq!((spread.p25, spread.median, spread.p75), (100, 100, 110));
        // The middle half is 100, 100, 110, 110: the outliers at both ends are left out.
        assert_eq!(spread.mid_mean, 105.0);

        let mut one = vec![42];
        let spread = Spread::of(&mut one);
        assert_eq!((spread.p25, spread.median, spread.p75), (42, 42, 42));
        assert_eq!(spread.mid_mean, 42.0);
    }

    #[test]
    fn percentiles_of_nothing_are_zero() {
        assert_eq!(percentile::<u64>(&[], 50), 0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 25), 1.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 75), 3.0);
    }
}
