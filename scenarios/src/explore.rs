//! The main job: generate scenarios, run each in the simulator with the real gateway and relays
//! (the relays' XDP program beside them), check it against the reference model and the
//! invariants, and count what was covered. A failure is shrunk (proptest's value tree:
//! dropping steps first, then simplifying them) and reported with its case seed.
//!
//! Every case has its own seed, derived from the exploration seed and the case's index: it
//! draws the case's swarm profile, seeds the generator (so `replay --case <seed>` regenerates
//! the scenario) and the run (turmoil and every system under test). Shard `k/n` takes the
//! indices `k-1, k-1+n, ...`, so shards never overlap. Without a seed, an exploration draws a
//! fresh one, so each run explores new cases; the same seed repeats a run exactly.
//!
//! By default every case runs twice (the second run on a thread of its own) and the two runs
//! must be the same run ([`crate::determinism`]).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use proptest::{
    strategy::{Strategy, ValueTree},
    test_runner::{Config, RngSeed, TestRunner},
};
use proto::rng::SplitMix64;
use scenario_format::Scenario;
use sim::Datapath;

use crate::{
    check::{CheckError, Checked, check_outcome},
    coverage::Coverage,
    determinism::{Determinism, TwinRunner},
    strategy::{self, profile::Profile},
    watchdog::Watchdog,
};

pub use crate::summary::summary_table;

/// Where an exploration writes its summary, heat map and failures by default:
/// `target/vpnsim`.
pub fn default_out_dir() -> PathBuf {
    crate::artifacts::vpnsim_dir()
}

/// Where the failures of an exploration writing to `out` go.
pub fn failure_dir(out: &Path) -> PathBuf {
    out.join("failures")
}

/// What to explore.
#[derive(Debug, Clone)]
pub struct ExploreOptions {
    /// Stop after this many cases (checked or skipped).
    pub count: Option<u64>,
    /// Stop after this much wall time.
    pub budget: Option<Duration>,
    pub seed: u64,
    /// Shard `k` of `n` (1-based).
    pub shard: (u32, u32),
    pub datapath: Datapath,
    /// Which cases run twice to check that one seed is one run.
    pub determinism: Determinism,
    /// Draw a progress bar on stderr (hidden when stderr is not a terminal).
    pub progress: bool,
    /// Where failures (and, by the command line, the summary) are written.
    pub out: PathBuf,
}

impl ExploreOptions {
    pub fn new(count: u64, seed: u64) -> Self {
        Self {
            count: Some(count),
            budget: None,
            seed,
            shard: (1, 1),
            datapath: Datapath::Differential,
            determinism: Determinism::Every,
            progress: false,
            out: default_out_dir(),
        }
    }
}

/// A seed for an exploration nobody gave one: from the process's hash keys, which the
/// standard library draws from the operating system's random source.
pub fn fresh_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos()),
    );
    hasher.finish()
}

/// A generated case that failed, before and after shrinking.
#[derive(Debug, Clone)]
pub struct Failure {
    pub case_seed: u64,
    /// The exploration's seed (the case seed is derived from it).
    pub exploration_seed: u64,
    /// The case's swarm profile, in words.
    pub profile: String,
    pub original: Scenario,
    pub shrunk: Scenario,
    /// The failed check of the shrunk case, in words.
    pub error: String,
    /// Simplifications that kept the case failing.
    pub shrink_steps: u32,
}

/// What an exploration did.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// The exploration's seed and shard.
    pub seed: u64,
    pub shard: (u32, u32),
    pub determinism: Option<Determinism>,
    /// Cases run twice and compared.
    pub determinism_checked: u64,
    pub coverage: Coverage,
    /// Cases the model cannot predict to the end, by reason: skipped, not failed.
    pub skipped: BTreeMap<String, u64>,
    /// Of those, cases checked against the model up to the step where it lost track (at least
    /// one step).
    pub skipped_checked_before: u64,
    pub steps: u64,
    pub seconds: f64,
    /// The datapath the relays really ran (userspace only if XDP could not load and was not
    /// required).
    pub datapath: Option<Datapath>,
    pub failure: Option<Failure>,
}

impl Report {
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }
}

/// The seed of case `index` of shard `k/n` of an exploration with `seed`.
pub fn case_seed(seed: u64, shard: (u32, u32), index: u64) -> u64 {
    let (k, n) = shard;
    let global = index
        .wrapping_mul(u64::from(n))
        .wrapping_add(u64::from(k.saturating_sub(1)));
    SplitMix64::new(seed ^ global.wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64()
}

/// The generator's value tree for a case seed: its current value is the generated scenario,
/// under the case's swarm profile (which shrinking keeps).
fn case_tree(case_seed: u64) -> Result<impl ValueTree<Value = Scenario>> {
    let mut runner = TestRunner::new(Config {
        rng_seed: RngSeed::Fixed(case_seed),
        failure_persistence: None,
        ..Config::default()
    });
    strategy::scenario(&Profile::of_case(case_seed))
        .new_tree(&mut runner)
        .map_err(|reason| anyhow::anyhow!("the generator gave up on case {case_seed}: {reason}"))
}

/// The scenario a case seed generates (before any shrinking).
pub fn generated_case(case_seed: u64) -> Result<Scenario> {
    Ok(case_tree(case_seed)?.current())
}

/// How one case went.
#[derive(Debug)]
pub enum CaseResult {
    Passed(Box<Checked>),
    /// The model cannot predict it (`Unpredictable`): why. The run still held to every
    /// invariant; what it reached of the relays' timers still counts.
    Skipped {
        reason: String,
        turn_timers: TurnTimerCounts,
        /// The model's prediction held for every step before this one.
        checked_before: Option<usize>,
    },
    Failed(String),
}

/// Datagrams on relay timers' deadlines, per timer (`sim::Outcome::turn_timer_boundaries`).
pub type TurnTimerCounts = BTreeMap<&'static str, [u64; 3]>;

/// Runs and checks one scenario with `seed`.
pub fn check_case(scenario: &Scenario, seed: u64, datapath: Datapath) -> CaseResult {
    Checker {
        datapath,
        twin: None,
        watchdog: None,
    }
    .check(scenario, seed)
}

/// How explore runs a case: the datapath, the twin that runs it a second time (if it does),
/// and the watchdog that reports a case that never ends.
struct Checker<'a> {
    datapath: Datapath,
    twin: Option<&'a TwinRunner>,
    watchdog: Option<&'a Watchdog>,
}

impl Checker<'_> {
    fn check(&self, scenario: &Scenario, seed: u64) -> CaseResult {
        if let Some(watchdog) = self.watchdog {
            watchdog.case(seed, scenario);
        }
        check_case_with(scenario, seed, self.datapath, self.twin)
    }
}

/// Runs and checks one scenario with `seed`; with a twin, runs it a second time at once and
/// fails the case if the two runs differ.
fn check_case_with(
    scenario: &Scenario,
    seed: u64,
    datapath: Datapath,
    twin: Option<&TwinRunner>,
) -> CaseResult {
    let options = sim::RunOptions { seed, datapath };
    let Some(twin) = twin else {
        return judge(scenario, sim::run(scenario, &options));
    };
    // The twin's run goes on while this thread runs and checks its own; a difference between
    // the two outweighs what the check found.
    let second = twin.start_second_run(scenario, &options);
    let first = sim::run(scenario, &options);
    let kept = first.clone();
    let result = judge(scenario, first);
    match twin.difference_from(second, &kept) {
        Some(difference) => CaseResult::Failed(format!("not deterministic: {difference}")),
        None => result,
    }
}

/// What one run of `scenario` says: passed, skipped where the model cannot predict it, or
/// failed.
fn judge(scenario: &Scenario, run: Result<sim::Outcome, sim::SimError>) -> CaseResult {
    let outcome = match run {
        Ok(outcome) => outcome,
        Err(sim::SimError::Unsupported(reason)) => {
            return CaseResult::Skipped {
                reason,
                turn_timers: TurnTimerCounts::new(),
                checked_before: None,
            };
        }
        Err(error) => return CaseResult::Failed(error.to_string()),
    };
    let turn_timers = outcome.turn_timer_boundaries.clone();
    match check_outcome(scenario, outcome) {
        Ok(checked) => CaseResult::Passed(Box::new(checked)),
        Err(CheckError::Model {
            unpredictable,
            checked_before,
        }) => CaseResult::Skipped {
            reason: unpredictable.reason,
            turn_timers,
            checked_before,
        },
        Err(error) => CaseResult::Failed(error.to_string()),
    }
}

/// Generates and checks cases until the count or the time budget is reached, or one fails
/// (then shrinks it).
pub fn explore(options: &ExploreOptions) -> Result<Report> {
    let (k, n) = options.shard;
    if n == 0 || k == 0 || k > n {
        bail!("--shard {k}/{n}: want k/n with 1 <= k <= n");
    }
    if options.count.is_none() && options.budget.is_none() {
        bail!("give a count or a time budget");
    }
    let progress = progress_bar(options);
    let started = Instant::now();
    let mut report = Report {
        seed: options.seed,
        shard: options.shard,
        determinism: Some(options.determinism),
        ..Report::default()
    };
    let twin = (options.determinism != Determinism::Off).then(TwinRunner::start);
    let failures = failure_dir(&options.out);
    let watchdog =
        Watchdog::start(move |seed, scenario| hung_case_report(&failures, seed, scenario));
    for index in 0.. {
        if options.count.is_some_and(|count| index >= count)
            || options
                .budget
                .is_some_and(|budget| started.elapsed() >= budget)
        {
            break;
        }
        let seed = case_seed(options.seed, options.shard, index);
        let mut tree = case_tree(seed)?;
        let scenario = tree.current();
        let twice = twin.as_ref().filter(|_| options.determinism.checks(index));
        report.determinism_checked += u64::from(twice.is_some());
        let checker = Checker {
            datapath: options.datapath,
            twin: twice,
            watchdog: Some(&watchdog),
        };
        match checker.check(&scenario, seed) {
            CaseResult::Passed(checked) => {
                report.steps += scenario.steps.len() as u64;
                report.coverage.add(&scenario, &checked);
                report.coverage.add_profile(&Profile::of_case(seed));
                report.datapath = Some(match report.datapath {
                    Some(Datapath::Userspace) => Datapath::Userspace,
                    _ => checked.outcome.datapath,
                });
            }
            CaseResult::Skipped {
                reason,
                turn_timers,
                checked_before,
            } => {
                *report.skipped.entry(skip_kind(&reason)).or_default() += 1;
                report.skipped_checked_before +=
                    u64::from(checked_before.is_some_and(|step| step > 0));
                report.coverage.behaviour.add_turn_timers(&turn_timers);
            }
            CaseResult::Failed(error) => {
                progress.set_message("shrinking");
                let mut failure = shrink(&mut tree, seed, &checker, scenario, error);
                failure.exploration_seed = options.seed;
                report.failure = Some(failure);
                break;
            }
        }
        progress.inc(1);
        if index % 16 == 0 {
            progress.set_message(format!(
                "{} checked, {} skipped, {} datagrams",
                report.coverage.scenarios,
                report.skipped_total(),
                report.coverage.datagrams
            ));
        }
    }
    progress.finish_and_clear();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn progress_bar(options: &ExploreOptions) -> indicatif::ProgressBar {
    if !options.progress {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match options.count {
        Some(count) => indicatif::ProgressBar::new(count),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let template = if options.count.is_some() {
        "{elapsed_precise} [{bar:30}] {pos}/{len} cases ({per_sec}) {msg}"
    } else {
        "{elapsed_precise} {pos} cases ({per_sec}) {msg}"
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// The first clause of an `Unpredictable` reason, to group skips.
fn skip_kind(reason: &str) -> String {
    let words: Vec<&str> = reason
        .split([':', '(', ','])
        .next()
        .unwrap_or(reason)
        .split_whitespace()
        .collect();
    words.join(" ")
}

/// Simplifies a failing case as long as it keeps failing (a skip or a pass stops that branch).
fn shrink(
    tree: &mut impl ValueTree<Value = Scenario>,
    seed: u64,
    checker: &Checker<'_>,
    original: Scenario,
    error: String,
) -> Failure {
    let mut failure = Failure {
        case_seed: seed,
        exploration_seed: seed,
        profile: Profile::of_case(seed).to_string(),
        shrunk: original.clone(),
        original,
        error,
        shrink_steps: 0,
    };
    // proptest's protocol: `simplify` proposes a simpler value; if it still fails, keep it and
    // simplify further, else `complicate` backs off towards the last failing one.
    let mut budget = 2_000;
    if !tree.simplify() {
        return failure;
    }
    while budget > 0 {
        budget -= 1;
        let candidate = tree.current();
        let still_fails = if candidate.validate().is_ok() {
            match checker.check(&candidate, seed) {
                CaseResult::Failed(error) => Some(error),
                _ => None,
            }
        } else {
            None
        };
        let moved = match still_fails {
            Some(error) => {
                failure.shrunk = candidate;
                failure.error = error;
                failure.shrink_steps += 1;
                tree.simplify()
            }
            None => tree.complicate(),
        };
        if !moved {
            break;
        }
    }
    prune_topology(&mut failure, seed, checker);
    failure
}

/// After the steps are shrunk, drops what the topology no longer needs (resources, grants,
/// DNS records, link latencies, relays, clients), one at a time, as long as the case still
/// validates and fails: the written case names only what matters.
fn prune_topology(failure: &mut Failure, seed: u64, checker: &Checker<'_>) {
    let mut budget = 200;
    'again: while budget > 0 {
        for candidate in topology_removals(&failure.shrunk) {
            budget -= 1;
            if budget == 0 {
                return;
            }
            if candidate.validate().is_err() {
                continue;
            }
            if let CaseResult::Failed(error) = checker.check(&candidate, seed) {
                failure.shrunk = candidate;
                failure.error = error;
                failure.shrink_steps += 1;
                continue 'again;
            }
        }
        return;
    }
}

/// Every scenario with one thing less in its topology (and what refers to it in the topology).
fn topology_removals(scenario: &Scenario) -> Vec<Scenario> {
    let topology = &scenario.topology;
    let mut out = Vec::new();
    let mut with = |change: &dyn Fn(&mut scenario_format::Topology)| {
        let mut smaller = scenario.clone();
        change(&mut smaller.topology);
        out.push(smaller);
    };
    for name in topology.resources.iter().map(|r| r.name.clone()) {
        with(&|t| {
            t.resources.retain(|r| r.name != name);
            t.grants.retain(|g| g.resource != name);
        });
    }
    for index in 0..topology.grants.len() {
        with(&|t| {
            t.grants.remove(index);
        });
    }
    for index in 0..topology.dns_records.len() {
        with(&|t| {
            t.dns_records.remove(index);
        });
    }
    for index in 0..topology.latency.links.len() {
        with(&|t| {
            t.latency.links.remove(index);
        });
    }
    for name in topology.relays.iter().map(|r| r.name.clone()) {
        with(&|t| t.relays.retain(|r| r.name != name));
    }
    for name in topology.clients.iter().map(|c| c.name.clone()) {
        with(&|t| {
            t.clients.retain(|c| c.name != name);
            t.grants.retain(|g| g.client != name);
            t.latency.links.retain(|l| !l.between.contains(&name));
        });
    }
    out
}

/// Writes a case that never ended where a person can replay it, and says how.
fn hung_case_report(root: &Path, seed: u64, scenario: &Scenario) -> String {
    let stamp = (0..)
        .find(|n| !root.join(format!("failure-{n}")).exists())
        .unwrap_or(0);
    let mut named = scenario.clone();
    named.name = format!("failure-{stamp}");
    named.description = format!("A case that never ended (case seed {seed}).");
    let failure = format!(
        "the case ran for {} s without ending: a system under test hangs",
        crate::watchdog::CASE_TIME_LIMIT.as_secs()
    );
    match crate::artifacts::write_artifacts(
        &root.join(format!("failure-{stamp}")),
        &named,
        seed,
        None,
        &failure,
    ) {
        Ok(written) => format!(
            "written to {}\nreplay it (it will hang again; a debugger shows where) with:\n  {}",
            crate::artifacts::shown(&written.scenario).display(),
            crate::artifacts::replay_command(&written.scenario)
        ),
        Err(error) => format!(
            "could not write it ({error:#}); regenerate it with: cargo xtask replay --case {seed}"
        ),
    }
}

/// Writes a failing case where a person can replay it, under `out/failures/failure-N/`: the
/// shrunk scenario with its seed, and its run's trace, routing, pcap and flow log.
pub fn write_failure(
    failure: &Failure,
    datapath: Datapath,
    out: &Path,
) -> Result<crate::artifacts::Artifacts> {
    let root = failure_dir(out);
    let stamp = (0..)
        .find(|n| !root.join(format!("failure-{n}")).exists())
        .unwrap_or(0);
    let mut named = failure.shrunk.clone();
    named.name = format!("failure-{stamp}");
    named.description = format!(
        "Found by `vpnsim explore --seed {}` (case seed {}, swarm profile: {}).",
        failure.exploration_seed, failure.case_seed, failure.profile
    );
    let options = sim::RunOptions {
        seed: failure.case_seed,
        datapath,
    };
    let outcome = sim::run(&named, &options).ok();
    crate::artifacts::write_artifacts(
        &root.join(format!("failure-{stamp}")),
        &named,
        failure.case_seed,
        outcome.as_ref(),
        &failure.error,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topology_removal_takes_away_one_thing_and_what_refers_to_it() {
        let scenario = Scenario::from_yaml(
            r#"
name: prune-me
topology:
  clients: [{ name: alice, stack: v4, relay: r1 }, { name: bob, stack: v4 }]
  gateways: [{ name: gw, stack: v4 }]
  relays: [{ name: r1, stack: v4 }]
  resources:
    - { name: web, gateway: gw, cidr: 198.51.100.10/32 }
    - { name: app, gateway: gw, dns: "*.example.com" }
  dns_records: [{ name: api.example.com, addresses: [198.51.100.42] }]
  grants: [{ client: alice, resource: web }, { client: bob, resource: app }]
  latency: { default_ms: 10, links: [{ between: [bob, gw], ms: 5 }] }
steps:
  - udp: { client: alice, resource: web, port: 53, bytes: 1 }
"#,
            "inline",
        )
        .expect("valid");
        let removals = topology_removals(&scenario);
        // 2 resources, 2 grants, 1 DNS record, 1 link, 1 relay, 2 clients.
        assert_eq!(removals.len(), 9);
        let size = |s: &Scenario| {
            let t = &s.topology;
            t.resources.len()
                + t.grants.len()
                + t.dns_records.len()
                + t.latency.links.len()
                + t.relays.len()
                + t.clients.len()
        };
        for smaller in &removals {
            assert!(size(smaller) < size(&scenario), "{:?}", smaller.topology);
            assert_eq!(smaller.steps, scenario.steps);
        }
        // Removing bob takes his grant and his link too, and still validates.
        let without_bob = removals
            .iter()
            .find(|s| s.topology.clients.iter().all(|c| c.name != "bob"))
            .expect("a removal of bob");
        assert!(
            without_bob
                .topology
                .grants
                .iter()
                .all(|g| g.client != "bob")
        );
        assert!(without_bob.topology.latency.links.is_empty());
        assert!(without_bob.validate().is_ok());
        // Removing the relay alice uses does not validate: the pruner skips it.
        let without_relay = removals
            .iter()
            .find(|s| s.topology.relays.is_empty())
            .expect("a removal of r1");
        assert!(without_relay.validate().is_err());
    }

    #[test]
    fn shards_take_disjoint_cases() {
        let seeds = |k: u32| -> Vec<u64> { (0..50).map(|i| case_seed(7, (k, 3), i)).collect() };
        let (a, b, c) = (seeds(1), seeds(2), seeds(3));
        for seed in &a {
            assert!(!b.contains(seed) && !c.contains(seed));
        }
        // Shard 2/3's first case is the unsharded run's second case.
        assert_eq!(case_seed(7, (2, 3), 0), case_seed(7, (1, 1), 1));
    }
}
