//! What a run leaves behind for a person to look at: the scenario with its seed and the failure,
//! the sim's timeline, the routing trace (as text and as a diagram), the pcap of every datagram
//! and the flow records, in one directory, and the one command that replays it.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use scenario_format::Scenario;
use sim::Outcome;

use crate::{pcap, routing, routing_diagram, show};

/// The files [`write_artifacts`] wrote. The run's files are there only when it produced an
/// outcome (a simulation that failed to run leaves the scenario alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifacts {
    pub dir: PathBuf,
    /// `scenario.yaml`: the scenario, its seed and the failure as comments; replayable.
    pub scenario: PathBuf,
    /// `trace.txt`: the sim's timeline, one line per host event.
    pub trace: Option<PathBuf>,
    /// `routing.txt`: every datagram hop by hop ([`routing::render`]).
    pub routing: Option<PathBuf>,
    /// `routing.md`: the routing as a Mermaid sequence diagram ([`routing_diagram::markdown`]).
    pub routing_diagram: Option<PathBuf>,
    /// `hops.pcap`: every datagram as Ethernet + IP + UDP ([`pcap`]).
    pub pcap: Option<PathBuf>,
    /// `flows.log`: the gateways' flow records, one per line.
    pub flows: Option<PathBuf>,
}

/// Writes `scenario.yaml`, and when there is an outcome `trace.txt`, `routing.txt`,
/// `routing.md`, `hops.pcap` and `flows.log`, into `dir` (created if needed; files there are
/// replaced).
/// `failure` is what went wrong, in words (empty if nothing did).
pub fn write_artifacts(
    dir: &Path,
    scenario: &Scenario,
    seed: u64,
    outcome: Option<&Outcome>,
    failure: &str,
) -> Result<Artifacts> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", shown(dir).display()))?;
    let write = |name: &str, text: &str| -> Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .with_context(|| format!("writing {}", shown(&path).display()))?;
        Ok(path)
    };
    let mut artifacts = Artifacts {
        dir: dir.to_path_buf(),
        scenario: write("scenario.yaml", &scenario_file(scenario, seed, failure))?,
        trace: None,
        routing: None,
        routing_diagram: None,
        pcap: None,
        flows: None,
    };
    let Some(outcome) = outcome else {
        return Ok(artifacts);
    };
    artifacts.trace = Some(write("trace.txt", &trace_text(outcome))?);
    artifacts.routing = Some(write("routing.txt", &routing::render(scenario, outcome))?);
    let replay = replay_command(&artifacts.scenario);
    artifacts.routing_diagram = Some(write(
        "routing.md",
        &routing_diagram::markdown(scenario, outcome, seed, &replay, failure),
    )?);
    let pcap_path = dir.join("hops.pcap");
    pcap::write_file(&pcap_path, outcome)?;
    artifacts.pcap = Some(pcap_path);
    artifacts.flows = Some(write("flows.log", &flows_text(scenario, outcome))?);
    Ok(artifacts)
}

/// The scenario as a file that replays the run: `# seed: N`, the failure as comment lines,
/// then the scenario's YAML.
pub fn scenario_file(scenario: &Scenario, seed: u64, failure: &str) -> String {
    let mut out = format!("# seed: {seed}\n");
    let failure = failure.trim_end();
    if !failure.is_empty() {
        out.push_str("# failure:\n");
        for line in failure.lines() {
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                out.push_str("#\n");
            } else {
                let _ = writeln!(out, "#   {line}");
            }
        }
    }
    out.push_str(&scenario.to_yaml());
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// The seed a scenario file names in a `# seed: N` comment line, if any.
pub fn seed_in(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.trim().strip_prefix('#')?.trim_start();
        rest.strip_prefix("seed:")?.trim().parse().ok()
    })
}

/// The sim's timeline, one line per host event.
pub fn trace_text(outcome: &Outcome) -> String {
    outcome
        .trace
        .iter()
        .map(|line| format!("{line}\n"))
        .collect()
}

/// The flow records in the model's canonical order, one readable line each.
pub fn flows_text(scenario: &Scenario, outcome: &Outcome) -> String {
    let mut records = outcome.flows.clone();
    model::sort_flows(&mut records);
    records
        .iter()
        .map(|record| format!("{}\n", show::flow_line(scenario, record)))
        .collect()
}

/// The one command that replays a scenario file (its seed is in the file).
/// `target/vpnsim` of the workspace (or of `CARGO_TARGET_DIR`), wherever the command or test
/// runs from: failures and replays land in one place.
pub fn vpnsim_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    std::fs::canonicalize(&target)
        .unwrap_or(target)
        .join("vpnsim")
}

pub fn replay_command(path: &Path) -> String {
    format!(
        "cargo xtask replay {}",
        shell_word(&shown(path).display().to_string())
    )
}

/// `path` relative to where the person stands (the directory the command was run from), so
/// no output names a machine's absolute paths.
pub fn shown(path: &Path) -> PathBuf {
    match std::env::current_dir() {
        Ok(cwd) => relative(path, &cwd),
        Err(_) => path.to_path_buf(),
    }
}

/// `path` relative to the directory `base` (with `..` where it is not below it); either may be
/// relative to the current directory. A path on another root stays as it is.
pub fn relative(path: &Path, base: &Path) -> PathBuf {
    let absolute = |p: &Path| match std::env::current_dir() {
        Ok(cwd) if p.is_relative() => cwd.join(p),
        _ => p.to_path_buf(),
    };
    let (path, base) = (absolute(path), absolute(base));
    match pathdiff::diff_paths(&path, &base) {
        Some(relative) if relative.as_os_str().is_empty() => PathBuf::from("."),
        Some(relative) => relative,
        None => path,
    }
}

/// `text` as one shell word: as it is when it needs no quoting, else in single quotes.
fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:,=@".contains(&b));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario() -> Scenario {
        Scenario::from_file(&crate::corpus::corpus_dir().join("udp-cidr-direct.yaml"))
            .expect("a corpus story")
    }

    #[test]
    fn the_scenario_file_keeps_seed_and_failure_and_reads_back() {
        let text = scenario_file(
            &scenario(),
            42,
            "flow records differ from the model:\n  record 1:\n\n    start: expected a, got b\n",
        );
        assert!(
            text.starts_with(
                "# seed: 42\n# failure:\n#   flow records differ from the model:\n#     record 1:\n#\n#       start: expected a, got b\nname: udp-cidr-direct\n"
            ),
            "{text}"
        );
        assert_eq!(seed_in(&text), Some(42));
        let back = Scenario::from_yaml(&text, "x.yaml").expect("still a scenario");
        assert_eq!(back, scenario());
        assert_eq!(seed_in("name: x\n"), None);
        assert_eq!(seed_in("  #seed: 7\n"), Some(7));
    }

    #[test]
    fn replay_commands_quote_only_when_needed() {
        assert_eq!(
            replay_command(Path::new("target/vpnsim/failures/failure-0.yaml")),
            "cargo xtask replay target/vpnsim/failures/failure-0.yaml"
        );
        assert_eq!(
            replay_command(Path::new("my dir/it's.yaml")),
            r"cargo xtask replay 'my dir/it'\''s.yaml'"
        );
    }

    #[test]
    fn without_an_outcome_only_the_scenario_is_written() {
        let dir = std::env::temp_dir().join(format!("vpnsim-artifacts-{}", std::process::id()));
        let written =
            write_artifacts(&dir, &scenario(), 3, None, "the simulation failed").expect("writes");
        assert_eq!(written.scenario, dir.join("scenario.yaml"));
        assert_eq!(written.trace, None);
        let text = std::fs::read_to_string(&written.scenario).expect("reads");
        assert_eq!(seed_in(&text), Some(3));
        std::fs::remove_dir_all(&dir).expect("cleans up");
    }
}
