//! Runs every XDP fixture through the kernel and prints a table: verdict, reason, whether both
//! match the fixture's expectation, and the cost per packet.

use anyhow::{Context, Result, bail};
use relay_xdp::{Verdict, XdpRelay, reason};
use xdp_fixtures::{Setup, all_fixtures};

/// One fixture's measured row.
#[derive(Debug, Clone)]
pub struct Row {
    pub fixture: &'static str,
    pub bytes: usize,
    pub verdict: Verdict,
    pub reason: &'static str,
    pub as_expected: bool,
    pub median_ns: u64,
    pub p99_ns: u64,
}

/// Percentile of sorted samples (nearest rank).
fn percentile(sorted: &[u64], pct: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (sorted.len() * pct).div_ceil(100).max(1);
    sorted[rank - 1]
}

pub fn measure(relay: &mut XdpRelay, runs: u32) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut installed: Option<Setup> = None;
    for fixture in all_fixtures() {
        // Each fixture carries the relay addresses and bindings its expectation assumes; most
        // share one, installed once.
        let setup = &fixture.setup;
        if installed.as_ref() != Some(setup) {
            relay.configure(setup.relay_v4, setup.relay_v6, &setup.bindings)?;
            installed = Some(setup.clone());
        }
        let before = relay.reason_counters()?;
        let first = relay
            .run(&fixture.frame)
            .with_context(|| format!("fixture {}", fixture.name))?;
        let counted = relay.reason_counters()?.since(&before);
        let reason = counted.non_zero().first().map_or("none", |(name, _)| name);
        let mut samples = vec![first.duration_ns];
        for _ in 1..runs.max(1) {
            samples.push(relay.run(&fixture.frame)?.duration_ns);
        }
        samples.sort_unstable();
        rows.push(Row {
            fixture: fixture.name,
            bytes: fixture.frame.len(),
            verdict: first.verdict,
            reason,
            as_expected: first.verdict == Verdict::from_action(fixture.verdict)
                && reason == reason::name(fixture.reason),
            median_ns: percentile(&samples, 50),
            p99_ns: percentile(&samples, 99),
        });
    }
    Ok(rows)
}

pub fn render(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<36} {:>6}  {:<10} {:<32} {:<8} {:>10} {:>8}\n",
        "fixture", "bytes", "verdict", "reason", "expected", "median ns", "p99 ns"
    );
    for row in rows {
        out.push_str(&format!(
            "{:<36} {:>6}  {:<10} {:<32} {:<8} {:>10} {:>8}\n",
            row.fixture,
            row.bytes,
            row.verdict.to_string(),
            row.reason,
            if row.as_expected { "yes" } else { "NO" },
            row.median_ns,
            row.p99_ns
        ));
    }
    out
}

pub fn run(runs: u32) -> Result<()> {
    let mut relay = XdpRelay::load().context("loading the XDP program")?;
    let verified = relay
        .verified_instruction_count()
        .map_or_else(|| "unknown".to_owned(), |count| count.to_string());
    println!(
        "XDP relay program: loaded, {verified} instructions verified; {runs} BPF_PROG_TEST_RUN \
         calls per fixture (repeat = 1, kernel-measured ns including the timer)\n"
    );
    let rows = measure(&mut relay, runs)?;
    print!("{}", render(&rows));
    let wrong: Vec<_> = rows.iter().filter(|row| !row.as_expected).collect();
    if !wrong.is_empty() {
        bail!(
            "{} fixture(s) did not get their expected verdict and reason: {}",
            wrong.len(),
            wrong
                .iter()
                .map(|row| row.fixture)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
