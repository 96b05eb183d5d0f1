//! Cost per packet of the fast path's rewriting paths, next to a floor.
//!
//! Each path is timed as the median of many `BPF_PROG_TEST_RUN` calls with `repeat = 1`: with
//! `repeat > 1` the kernel re-runs the program on the buffer the previous repetition rewrote, so
//! later repetitions would measure something else. The floor is `floor_tx`, a program in the
//! same object that only returns `XDP_TX`, run on the same frame the same way and in the same
//! run (interleaved in batches with the path, so drift affects both alike). The kernel's
//! per-call timing includes its timer overhead; the floor carries the same overhead, so the
//! ratio is a fair comparison, and `median_ns - floor_median_ns` estimates the program's own
//! cost.
//!
//! The caller installs the relay addresses and bindings the frames need (see
//! `xdp_fixtures::Fixture::setup`) before measuring.

use aya::programs::{TestRun, TestRunOptions};
use relay_xdp_common::{FLOOR_PROGRAM_NAME, PROGRAM_NAME};

use crate::{HEADROOM, MIN_FRAME_LEN, RunError, Verdict, XdpRelay, duration_ns};

/// The calls the issue asks for at least, per path and per floor.
pub const DEFAULT_CALLS: usize = 100_000;
/// Calls per batch before switching between path and floor.
const BATCH: usize = 1_000;

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
    /// Median kernel-measured ns per call of the relay program.
    pub median_ns: u64,
    /// Median kernel-measured ns per call of the floor program on the same frame.
    pub floor_median_ns: u64,
    /// `median_ns / floor_median_ns`.
    pub ratio: f64,
}

/// Times every `(name, frame)` with [`measure`]; `calls` per path (at least 1).
pub fn measure_all<'a>(
    relay: &XdpRelay,
    frames: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    calls: usize,
) -> Result<Vec<BenchRow>, RunError> {
    frames
        .into_iter()
        .map(|(name, frame)| measure(relay, name, frame, calls))
        .collect()
}

/// Times one frame through the relay program and through the floor, `calls` times each.
pub fn measure(
    relay: &XdpRelay,
    name: &str,
    frame: &[u8],
    calls: usize,
) -> Result<BenchRow, RunError> {
    if frame.len() < MIN_FRAME_LEN {
        return Err(RunError::FrameTooShort { len: frame.len() });
    }
    let calls = calls.max(1);
    let program = relay.xdp(PROGRAM_NAME)?;
    let floor = relay.xdp(FLOOR_PROGRAM_NAME)?;
    let mut out = vec![0u8; frame.len() + HEADROOM];
    let mut once = |xdp: &aya::programs::Xdp| -> Result<(u32, u64), RunError> {
        let result = xdp.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: 1,
            ..TestRunOptions::new()
        })?;
        Ok((result.return_value, duration_ns(result.duration)))
    };

    let (action, _) = once(program)?;
    let mut samples = Vec::with_capacity(calls);
    let mut floor_samples = Vec::with_capacity(calls);
    while samples.len() < calls {
        let batch = BATCH.min(calls - samples.len());
        for _ in 0..batch {
            samples.push(once(program)?.1);
        }
        for _ in 0..batch {
            floor_samples.push(once(floor)?.1);
        }
    }
    let median_ns = median(&mut samples);
    let floor_median_ns = median(&mut floor_samples);
    Ok(BenchRow {
        path: name.to_owned(),
        bytes: frame.len(),
        verdict: Verdict::from_action(action),
        calls,
        median_ns,
        floor_median_ns,
        ratio: median_ns as f64 / floor_median_ns.max(1) as f64,
    })
}

fn median(samples: &mut [u64]) -> u64 {
    if samples.is_empty() {
        return 0;
    }
    let middle = samples.len() / 2;
    *samples.select_nth_unstable(middle).1
}

/// A plain-text table of rows.
pub fn render(rows: &[BenchRow]) -> String {
    let mut out = format!(
        "{:<28} {:>6}  {:<8} {:>10} {:>10} {:>7}\n",
        "path", "bytes", "verdict", "median ns", "floor ns", "ratio"
    );
    for row in rows {
        out.push_str(&format!(
            "{:<28} {:>6}  {:<8} {:>10} {:>10} {:>7.2}\n",
            row.path,
            row.bytes,
            row.verdict.name(),
            row.median_ns,
            row.floor_median_ns,
            row.ratio
        ));
    }
    out
}
