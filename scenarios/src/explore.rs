//! The main job: generate scenarios, run each in the simulator with the real gateway and relays,
//! check it against the reference model, and on a failure shrink it, write it to a file and
//! print the command that replays it.

use std::{
    cell::RefCell,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, Result, bail};
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use scenario::Scenario;

use crate::{
    check::{CheckError, check_outcome, run_and_check},
    strategy,
};

/// What an exploration covered.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub scenarios: u64,
    /// Cases the model cannot predict yet (or the simulator cannot run): skipped, not failed.
    pub skipped: u64,
    pub steps: u64,
    pub trace_lines: u64,
    pub flows: u64,
    pub relayed_paths: u64,
    /// Flow records to DNS resources (carrying their domain).
    pub dns_flows: u64,
    /// Flow records by close reason (fin, rst, idle, shutdown, revoked).
    pub close_reasons: std::collections::BTreeMap<String, u64>,
}

/// Where failures are written.
pub fn failure_dir() -> PathBuf {
    PathBuf::from("target/vpnsim/failures")
}

pub fn explore(count: u32, seed: u64, shard: (u32, u32)) -> Result<Summary> {
    let (index, total) = shard;
    if total == 0 || index == 0 || index > total {
        bail!("--shard {index}/{total}: want k/n with 1 <= k <= n");
    }
    // Shards take disjoint seeds: shard k of n explores seed * n + k - 1.
    let shard_seed = seed
        .wrapping_mul(u64::from(total))
        .wrapping_add(u64::from(index - 1));
    let config = Config {
        cases: count,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(shard_seed),
        max_global_rejects: count.saturating_mul(20).max(1000),
        ..Config::default()
    };
    let summary = RefCell::new(Summary::default());
    let started = Instant::now();
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy::scenario(), |scenario| {
        let run_seed = shard_seed ^ summary.borrow().scenarios;
        match run_and_check(&scenario, run_seed) {
            Ok(checked) => {
                let mut summary = summary.borrow_mut();
                summary.scenarios += 1;
                summary.steps += scenario.steps.len() as u64;
                summary.trace_lines += checked.outcome.trace.len() as u64;
                summary.flows += checked.outcome.flows.len() as u64;
                for flow in &checked.outcome.flows {
                    summary.dns_flows += u64::from(flow.inner_domain.is_some());
                    *summary
                        .close_reasons
                        .entry(format!("{:?}", flow.close_reason).to_lowercase())
                        .or_default() += 1;
                }
                summary.relayed_paths += scenario
                    .steps
                    .iter()
                    .filter(|step| matches!(step, scenario::Step::Path { mode, .. } if *mode != scenario::PathMode::Direct))
                    .count() as u64;
                let done = summary.scenarios;
                if done % 10 == 0 {
                    eprint!("\r  {done}/{count} scenarios, {:.1} s", started.elapsed().as_secs_f64());
                }
                Ok(())
            }
            Err(CheckError::Model(_) | CheckError::Sim(sim::SimError::Unsupported(_))) => {
                summary.borrow_mut().skipped += 1;
                Err(TestCaseError::reject("not predictable yet"))
            }
            Err(error) => Err(TestCaseError::fail(format!("seed {run_seed}: {error}"))),
        }
    });
    eprintln!();
    let summary = summary.into_inner();
    print_summary(&summary, started.elapsed().as_secs_f64());
    match result {
        Ok(()) => Ok(summary),
        Err(TestError::Fail(reason, minimal)) => {
            let path = write_failure(&minimal, &reason.to_string())?;
            bail!(
                "a generated scenario failed (shrunk to {} steps):\n{reason}\n\nwritten to {}\nreplay it with:\n  cargo xtask replay {}\nkeep it as a corpus story (once named) with:\n  cargo xtask promote {} NAME",
                minimal.steps.len(),
                path.display(),
                path.display(),
                path.display()
            )
        }
        Err(TestError::Abort(reason)) => bail!("exploration stopped: {reason}"),
    }
}

fn print_summary(summary: &Summary, seconds: f64) {
    println!("{:<28} {:>10}", "scenarios checked", summary.scenarios);
    println!(
        "{:<28} {:>10}",
        "skipped (not predictable)", summary.skipped
    );
    println!("{:<28} {:>10}", "steps", summary.steps);
    println!(
        "{:<28} {:>10}",
        "relayed path switches", summary.relayed_paths
    );
    println!(
        "{:<28} {:>10}",
        "trace lines (hops, events)", summary.trace_lines
    );
    println!("{:<28} {:>10}", "flow records compared", summary.flows);
    println!("{:<28} {:>10}", "  to DNS resources", summary.dns_flows);
    for (reason, count) in &summary.close_reasons {
        println!("{:<28} {:>10}", format!("  closed by {reason}"), count);
    }
    println!("{:<28} {:>10.1}", "seconds", seconds);
    if seconds > 0.0 {
        println!(
            "{:<28} {:>10.1}",
            "scenarios per second",
            summary.scenarios as f64 / seconds
        );
    }
}

fn write_failure(scenario: &Scenario, reason: &str) -> Result<PathBuf> {
    let dir = failure_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut named = scenario.clone();
    let stamp = (0..)
        .find(|n| !dir.join(format!("failure-{n}.yaml")).exists())
        .unwrap_or(0);
    named.name = format!("failure-{stamp}");
    named.description = format!(
        "Found by `vpnsim explore`. {}",
        reason.lines().next().unwrap_or_default()
    );
    let path = dir.join(format!("failure-{stamp}.yaml"));
    std::fs::write(&path, named.to_yaml())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Runs one scenario file, prints its timeline, and fails with the broken check in words.
pub fn replay(path: &Path, seed: u64) -> Result<()> {
    let scenario = Scenario::from_file(path)?;
    // The gateways' flow log (`flow_logs` tracing events) goes to stdout beside the timeline.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stdout)
        .with_ansi(false)
        .without_time()
        .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
        .try_init();
    println!(
        "# {} ({} steps, seed {seed})",
        scenario.name,
        scenario.steps.len()
    );
    if !scenario.description.is_empty() {
        println!("# {}", scenario.description);
    }
    let outcome = sim::run(&scenario, &sim::RunOptions::seeded(seed))?;
    for line in &outcome.trace {
        println!("{line}");
    }
    println!();
    for flow in &outcome.flows {
        println!("flow: {flow:?}");
    }
    match check_outcome(&scenario, outcome) {
        Ok(_) => {
            println!("\nall checks passed");
            Ok(())
        }
        Err(error) => bail!("{error}"),
    }
}
