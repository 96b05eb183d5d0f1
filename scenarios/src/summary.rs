//! What an exploration reports: the table it ends with, and `summary.json`, the same facts
//! for machines (format in docs/summary.md). Summaries of shards merge into one summary of the
//! same format ([`Summary::merge`]), so one report covers a search spread over machines.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sim::Datapath;

use crate::{
    artifacts::{self, Artifacts},
    coverage::Grid,
    explore::Report,
};

/// The `format` field of every summary this version writes and reads.
pub const FORMAT: &str = "vpnsim-explore-summary/1";

/// The file name of a summary in its directory.
pub const SUMMARY_FILE: &str = "summary.json";

/// One exploration (or shard), or several merged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub format: String,
    /// The explorations (shards) this summary adds up: one for a single run.
    pub runs: Vec<RunSummary>,
    /// Cases generated: checked, skipped and failed.
    pub cases: u64,
    /// Cases predicted to the end and checked.
    pub checked: u64,
    /// Cases the model cannot predict to the end.
    pub skipped: u64,
    /// Of those, cases checked up to the step where the model lost track.
    pub skipped_checked_before: u64,
    pub steps: u64,
    /// Datagrams sent on every hop of the checked cases.
    pub datagrams: u64,
    pub flow_records: u64,
    /// Cases run twice and compared.
    pub determinism_checked: u64,
    /// Wall time, summed over the runs.
    pub seconds: f64,
    /// Checked scenarios per second of one run (checked / seconds).
    pub scenarios_per_second: f64,
    pub datagrams_per_second: f64,
    /// Skipped cases by what the model cannot predict.
    pub skips: BTreeMap<String, u64>,
    pub coverage: Grid,
    /// Required coverage counters still at zero (see the grid's requirements).
    pub missing: Vec<String>,
    pub failures: Vec<FailureSummary>,
}

/// One exploration or shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub seed: u64,
    /// `k/n`.
    pub shard: String,
    /// `differential`, `xdp-first` or `userspace`: what the relays really ran.
    pub datapath: String,
    /// `every`, `N` or `off`.
    pub determinism: String,
    pub cases: u64,
    pub checked: u64,
    pub seconds: f64,
    pub failed: bool,
    /// Where its summary was read from, relative to where the merge ran (merged summaries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// A failing case: how it was found, what failed, and how to replay it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureSummary {
    pub exploration_seed: u64,
    pub shard: String,
    pub case_seed: u64,
    /// The case's swarm profile, in words.
    pub profile: String,
    /// The failed check of the shrunk case.
    pub error: String,
    pub steps_generated: u64,
    pub steps_shrunk: u64,
    pub simplifications: u32,
    /// The failure's directory (scenario.yaml, routing.md, trace, pcap, flow log), relative to
    /// the summary's own directory; absent when it could not be written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// Replays the shrunk case from the directory the summary was written for.
    pub replay: String,
    /// Regenerates and replays the case as generated, from anywhere.
    pub replay_case: String,
}

/// A datapath as the command line writes it.
pub fn datapath_name(datapath: Option<Datapath>) -> &'static str {
    match datapath {
        Some(Datapath::Differential) => "differential",
        Some(Datapath::XdpFirst) => "xdp-first",
        Some(Datapath::Userspace) => "userspace",
        None => "-",
    }
}

/// Whether a run's relays ran their XDP program (then its paths are required coverage).
pub fn xdp_ran(datapath: Option<Datapath>) -> bool {
    matches!(datapath, Some(Datapath::Differential | Datapath::XdpFirst))
}

impl Summary {
    /// The summary of one exploration; `failure` is where its failure was written (if any),
    /// and `out` the directory the summary goes to.
    pub fn of_report(report: &Report, failure: Option<&Artifacts>, out: &Path) -> Self {
        let coverage = &report.coverage;
        let shard = format!("{}/{}", report.shard.0, report.shard.1);
        let failures: Vec<FailureSummary> = report
            .failure
            .iter()
            .map(|failure_case| FailureSummary {
                exploration_seed: report.seed,
                shard: shard.clone(),
                case_seed: failure_case.case_seed,
                profile: failure_case.profile.clone(),
                error: failure_case.error.clone(),
                steps_generated: failure_case.original.steps.len() as u64,
                steps_shrunk: failure_case.shrunk.steps.len() as u64,
                simplifications: failure_case.shrink_steps,
                dir: failure
                    .map(|written| artifacts::relative(&written.dir, out).display().to_string()),
                replay: failure.map_or_else(
                    || replay_case(failure_case.case_seed),
                    |written| artifacts::replay_command(&written.scenario),
                ),
                replay_case: replay_case(failure_case.case_seed),
            })
            .collect();
        let cases = coverage.scenarios + report.skipped_total() + failures.len() as u64;
        let mut summary = Self {
            format: FORMAT.to_owned(),
            runs: vec![RunSummary {
                seed: report.seed,
                shard,
                datapath: datapath_name(report.datapath).to_owned(),
                determinism: report
                    .determinism
                    .map_or("off".to_owned(), |mode| mode.to_string()),
                cases,
                checked: coverage.scenarios,
                seconds: report.seconds,
                failed: !failures.is_empty(),
                from: None,
            }],
            cases,
            checked: coverage.scenarios,
            skipped: report.skipped_total(),
            skipped_checked_before: report.skipped_checked_before,
            steps: report.steps,
            datagrams: coverage.datagrams,
            flow_records: coverage.flows,
            determinism_checked: report.determinism_checked,
            seconds: report.seconds,
            scenarios_per_second: 0.0,
            datagrams_per_second: 0.0,
            skips: report.skipped.clone(),
            coverage: coverage.grid(xdp_ran(report.datapath)),
            missing: Vec::new(),
            failures,
        };
        summary.settle();
        summary
    }

    /// Recomputes what follows from the counts: speeds and missing coverage.
    fn settle(&mut self) {
        let rate = |count: u64| {
            if self.seconds > 0.0 {
                count as f64 / self.seconds
            } else {
                0.0
            }
        };
        self.scenarios_per_second = rate(self.checked);
        self.datagrams_per_second = rate(self.datagrams);
        self.missing = self.coverage.missing();
    }

    /// Adds another summary (a shard's): counts and grids added, runs and failures listed.
    /// `from` is where the other one was read; its failures' directories are made relative to
    /// `out`, where the merged summary goes.
    pub fn merge(&mut self, other: &Summary, from: &Path, out: &Path) {
        for run in &other.runs {
            let mut run = run.clone();
            run.from
                .get_or_insert_with(|| artifacts::shown(from).display().to_string());
            self.runs.push(run);
        }
        self.cases += other.cases;
        self.checked += other.checked;
        self.skipped += other.skipped;
        self.skipped_checked_before += other.skipped_checked_before;
        self.steps += other.steps;
        self.datagrams += other.datagrams;
        self.flow_records += other.flow_records;
        self.determinism_checked += other.determinism_checked;
        self.seconds += other.seconds;
        for (reason, count) in &other.skips {
            *self.skips.entry(reason.clone()).or_default() += count;
        }
        self.coverage.add(&other.coverage);
        let base = from.parent().unwrap_or(Path::new(""));
        for failure in &other.failures {
            let mut failure = failure.clone();
            if let Some(dir) = &failure.dir {
                let at = base.join(dir);
                failure.dir = Some(artifacts::relative(&at, out).display().to_string());
                failure.replay = artifacts::replay_command(&at.join("scenario.yaml"));
            }
            self.failures.push(failure);
        }
        self.settle();
    }

    /// An empty summary to merge shards into.
    pub fn empty() -> Self {
        Self {
            format: FORMAT.to_owned(),
            runs: Vec::new(),
            cases: 0,
            checked: 0,
            skipped: 0,
            skipped_checked_before: 0,
            steps: 0,
            datagrams: 0,
            flow_records: 0,
            determinism_checked: 0,
            seconds: 0.0,
            scenarios_per_second: 0.0,
            datagrams_per_second: 0.0,
            skips: BTreeMap::new(),
            coverage: Grid::default(),
            missing: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Reads a summary from a file, or from `summary.json` in a directory.
    pub fn read(path: &Path) -> Result<(Self, PathBuf)> {
        let file = if path.is_dir() {
            path.join(SUMMARY_FILE)
        } else {
            path.to_path_buf()
        };
        let shown = artifacts::shown(&file).display().to_string();
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("{shown}: cannot read the summary"))?;
        let summary: Self = serde_json::from_str(&text)
            .with_context(|| format!("{shown}: not an exploration summary"))?;
        if summary.format != FORMAT {
            bail!(
                "{shown}: summary format `{}`, this vpnsim reads `{FORMAT}`",
                summary.format
            );
        }
        Ok((summary, file))
    }

    /// Writes `summary.json` and `coverage.html` into `out` (created if needed).
    pub fn write(&self, out: &Path) -> Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(out)
            .with_context(|| format!("creating {}", artifacts::shown(out).display()))?;
        let json = out.join(SUMMARY_FILE);
        let text = serde_json::to_string_pretty(self).context("encoding the summary")?;
        std::fs::write(&json, text + "\n")
            .with_context(|| format!("writing {}", artifacts::shown(&json).display()))?;
        let html = out.join("coverage.html");
        std::fs::write(&html, crate::heatmap::page(self))
            .with_context(|| format!("writing {}", artifacts::shown(&html).display()))?;
        Ok((json, html))
    }

    /// The table an exploration ends with.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut row = |name: &str, value: String| {
            let _ = writeln!(out, "{name:<26} {value:>12}");
        };
        let mut seeds: Vec<u64> = self.runs.iter().map(|run| run.seed).collect();
        seeds.dedup();
        match (&self.runs[..], &seeds[..]) {
            ([run], _) => {
                row("exploration seed", run.seed.to_string());
                if run.shard != "1/1" {
                    row("shard", run.shard.clone());
                }
            }
            (runs, [seed]) => {
                row("exploration seed", seed.to_string());
                let shards: Vec<&str> = runs.iter().map(|run| run.shard.as_str()).collect();
                row("shards", shards.join(" "));
            }
            (runs, _) => row("explorations", runs.len().to_string()),
        }
        row("scenarios checked", self.checked.to_string());
        row("skipped (unpredictable)", self.skipped.to_string());
        row(
            "  checked up to that step",
            self.skipped_checked_before.to_string(),
        );
        row("steps", self.steps.to_string());
        row("datagrams (all hops)", self.datagrams.to_string());
        row("flow records compared", self.flow_records.to_string());
        let mut datapaths: Vec<&str> = self.runs.iter().map(|r| r.datapath.as_str()).collect();
        datapaths.dedup();
        row("datapath", datapaths.join(" "));
        let modes: Vec<&str> = self.runs.iter().map(|r| r.determinism.as_str()).collect();
        row(
            "determinism",
            if modes.iter().all(|mode| *mode == "off") {
                "off".to_owned()
            } else {
                format!("{} cases twice", self.determinism_checked)
            },
        );
        let per_run = if self.runs.len() > 1 {
            " (runs summed)"
        } else {
            ""
        };
        row(&format!("seconds{per_run}"), format!("{:.1}", self.seconds));
        if self.seconds > 0.0 {
            row(
                "scenarios per second",
                format!("{:.1}", self.scenarios_per_second),
            );
            row(
                "datagrams per second",
                format!("{:.0}", self.datagrams_per_second),
            );
        }
        for failure in &self.failures {
            let _ = writeln!(
                out,
                "\nfailed: case {} (seed {}, shard {}) of swarm profile {}\n  replay: {}",
                failure.case_seed,
                failure.exploration_seed,
                failure.shard,
                failure.profile,
                failure.replay
            );
        }
        out.push_str("\ncoverage\n");
        out.push_str(&self.coverage.text());
        if !self.skips.is_empty() {
            out.push_str("\nskipped, by what the model cannot predict\n");
            let mut skipped: Vec<(&String, &u64)> = self.skips.iter().collect();
            skipped.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            for (reason, count) in skipped.iter().take(8) {
                let _ = writeln!(out, "  {count:>6}  {reason}");
            }
        }
        out
    }
}

fn replay_case(case_seed: u64) -> String {
    format!("cargo xtask replay --case {case_seed}")
}

/// Merges the summaries in `inputs` (directories or files) into one, written to `out`.
pub fn merge_into(inputs: &[PathBuf], out: &Path) -> Result<Summary> {
    if inputs.is_empty() {
        bail!("give the directories (or summary.json files) of the shards to merge");
    }
    let mut merged = Summary::empty();
    for input in inputs {
        let (summary, file) = Summary::read(input)?;
        merged.merge(&summary, &file, out);
    }
    merged.write(out)?;
    Ok(merged)
}

/// The table of one exploration's report, before anything is written.
pub fn summary_table(report: &Report) -> String {
    Summary::of_report(report, None, Path::new(".")).table()
}
