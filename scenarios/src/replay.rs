//! `vpnsim replay FILE`: one scenario run again, for a person. It prints the routing trace as a
//! timeline (a header per step, one line per datagram per hop) and the flow records, writes
//! the scenario, the sim's trace, the routing trace and its diagram, a pcap and the flow log
//! under `target/vpnsim/replay/<scenario name>/` (in the workspace's target directory, like
//! `target/vpnsim/failures/`), runs every check, and fails with the broken one in words.
//!
//! The seed is `--seed`, else the file's `# seed: N` comment line (files that `explore` and
//! [`crate::artifacts`] write carry one), else 1.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use scenario_format::Scenario;
use sim::{Datapath, Outcome, RunOptions};

use crate::{
    artifacts::{self, Artifacts},
    check::check_outcome,
    routing,
};

/// The seed when neither `--seed` nor the file names one.
pub const DEFAULT_SEED: u64 = 1;

/// Where a replay of the scenario named `name` writes its files:
/// `target/vpnsim/replay/<name>/` (characters other than letters, digits, `.`, `_` and `-`
/// become `-`).
pub fn replay_dir(name: &str) -> PathBuf {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let safe = match safe.trim_matches('.') {
        "" => "unnamed".to_owned(),
        _ => safe,
    };
    artifacts::vpnsim_dir().join("replay").join(safe)
}

/// Replays the scenario file at `path` with `seed`, or the seed its `# seed: N` line names,
/// or [`DEFAULT_SEED`].
pub fn replay(path: &Path, seed: Option<u64>, datapath: Datapath) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", artifacts::shown(path).display()))?;
    let scenario = Scenario::from_yaml(&text, &path.display().to_string())?;
    let seed = seed
        .or_else(|| artifacts::seed_in(&text))
        .unwrap_or(DEFAULT_SEED);
    replay_scenario(&scenario, seed, datapath)
}

/// Replays `scenario` (a generated case, say) with `seed`, printing to stdout and writing its
/// files under [`replay_dir`].
pub fn replay_scenario(scenario: &Scenario, seed: u64, datapath: Datapath) -> Result<()> {
    let dir = replay_dir(&scenario.name);
    let stdout = std::io::stdout();
    replay_into(scenario, seed, datapath, &dir, &mut stdout.lock()).map(|_| ())
}

/// Replays `scenario` with `seed`, prints to `out` and writes the files into `dir`; returns
/// them, or the failed check in words.
pub fn replay_into(
    scenario: &Scenario,
    seed: u64,
    datapath: Datapath,
    dir: &Path,
    out: &mut dyn Write,
) -> Result<Artifacts> {
    writeln!(
        out,
        "# {} ({} steps, seed {seed}, datapath {datapath:?})",
        scenario.name,
        scenario.steps.len()
    )?;
    if !scenario.description.is_empty() {
        writeln!(out, "# {}", scenario.description)?;
    }
    let outcome = match sim::run(scenario, &RunOptions { seed, datapath }) {
        Ok(outcome) => outcome,
        Err(error) => {
            let failure = format!("the simulation did not run: {error}");
            let written = artifacts::write_artifacts(dir, scenario, seed, None, &failure)?;
            bail!(
                "{failure}\n(scenario written to {})",
                artifacts::shown(&written.scenario).display()
            );
        }
    };
    if outcome.datapath != datapath {
        writeln!(
            out,
            "# the relays ran {:?}: the XDP program could not run here",
            outcome.datapath
        )?;
    }
    report(scenario, seed, outcome, dir, out)
}

/// Prints a run's routing trace and flow records to `out`, checks it, and writes its files
/// into `dir`; returns them, or the failed check in words.
pub fn report(
    scenario: &Scenario,
    seed: u64,
    outcome: Outcome,
    dir: &Path,
    out: &mut dyn Write,
) -> Result<Artifacts> {
    writeln!(out)?;
    out.write_all(routing::render(scenario, &outcome).as_bytes())?;
    writeln!(out, "\nflow records ({}):", outcome.flows.len())?;
    out.write_all(artifacts::flows_text(scenario, &outcome).as_bytes())?;
    let result = check_outcome(scenario, outcome.clone());
    let failure = match &result {
        Ok(_) => String::new(),
        Err(error) => error.to_string(),
    };
    let written = artifacts::write_artifacts(dir, scenario, seed, Some(&outcome), &failure)?;
    writeln!(
        out,
        "\nwritten to {}/:",
        artifacts::shown(&written.dir).display()
    )?;
    writeln!(
        out,
        "  scenario.yaml (replay: {})",
        artifacts::replay_command(&written.scenario)
    )?;
    writeln!(
        out,
        "  trace.txt (every host event), routing.txt, routing.md (its diagram), hops.pcap, flows.log"
    )?;
    match result {
        Ok(_) => {
            writeln!(out, "\nall checks passed")?;
            Ok(written)
        }
        Err(error) => bail!("seed {seed}: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_dirs_are_one_safe_name() {
        let root = artifacts::vpnsim_dir().join("replay");
        // Under the workspace's target directory, or the one CARGO_TARGET_DIR names.
        match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => {
                let dir = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.into());
                assert_eq!(root, dir.join("vpnsim/replay"));
            }
            None => assert!(root.ends_with("target/vpnsim/replay"), "{}", root.display()),
        }
        assert_eq!(replay_dir("same-relay-v4"), root.join("same-relay-v4"));
        assert_eq!(replay_dir("../x y"), root.join("..-x-y"));
        assert_eq!(replay_dir(".."), root.join("unnamed"));
        assert_eq!(replay_dir(""), root.join("unnamed"));
    }

    /// A corpus story replays, passes, and leaves every file behind; its scenario file names
    /// the seed and reads back as the same scenario.
    #[test]
    fn a_story_replays_and_leaves_its_files() {
        let path = crate::corpus::corpus_dir().join("udp-cidr-direct.yaml");
        let scenario = Scenario::from_file(&path).expect("a corpus story");
        let dir = std::env::temp_dir().join(format!("vpnsim-replay-{}", std::process::id()));
        let mut printed = Vec::new();
        let written = replay_into(&scenario, 5, Datapath::Userspace, &dir, &mut printed)
            .expect("the story passes");
        let printed = String::from_utf8(printed).expect("text");
        assert!(printed.contains("# step 0 at 2.000s"), "{printed}");
        assert!(printed.contains("\nall checks passed\n"), "{printed}");
        for file in [
            Some(&written.scenario),
            written.trace.as_ref(),
            written.routing.as_ref(),
            written.routing_diagram.as_ref(),
            written.pcap.as_ref(),
            written.flows.as_ref(),
        ] {
            let file = file.expect("written");
            assert!(
                std::fs::metadata(file).expect("exists").len() > 0,
                "{}",
                file.display()
            );
        }
        let text = std::fs::read_to_string(&written.scenario).expect("reads");
        assert_eq!(artifacts::seed_in(&text), Some(5));
        assert_eq!(
            Scenario::from_yaml(&text, "x").expect("a scenario"),
            scenario
        );
        let flows =
            std::fs::read_to_string(written.flows.as_ref().expect("written")).expect("reads");
        assert!(
            flows.lines().count() >= 1 && flows.contains("closed by"),
            "{flows}"
        );
        std::fs::remove_dir_all(&dir).expect("cleans up");
    }

    /// A run that breaks a check fails with it in words, and the failure lands in the file.
    #[test]
    fn a_failing_check_is_explained_and_written_down() {
        let path = crate::corpus::corpus_dir().join("udp-cidr-direct.yaml");
        let scenario = Scenario::from_file(&path).expect("a corpus story");
        let mut outcome = sim::run(&scenario, &RunOptions::seeded(1)).expect("the story runs");
        // One record the gateway wrote goes missing.
        outcome.flows.pop().expect("a record");
        let dir = std::env::temp_dir().join(format!("vpnsim-replay-fail-{}", std::process::id()));
        let mut printed = Vec::new();
        let error = report(&scenario, 1, outcome, &dir, &mut printed).expect_err("a check fails");
        let text = std::fs::read_to_string(dir.join("scenario.yaml")).expect("written");
        std::fs::remove_dir_all(&dir).expect("cleans up");
        let error = error.to_string();
        assert!(
            error.starts_with("seed 1: flow records differ from the model:"),
            "{error}"
        );
        assert!(
            text.starts_with(
                "# seed: 1\n# failure:\n#   flow records differ from the model:\n#     "
            ),
            "{text}"
        );
    }
}
