//! `vpnsim real FILE`: a scenario played on real Linux networking ([`real_world`]) and judged
//! by the model; a summary on stdout, artifacts under `target/vpnsim/real/<name>/`.

use std::path::Path;

use anyhow::{Context, Result, bail};
use real_world::{Binaries, RealOptions};
use scenario_format::Scenario;

use crate::artifacts::{shown, vpnsim_dir};

/// Plays the scenario in `file` and prints how the real world compares with the model.
pub fn run_file(file: &Path, tolerance_ms: u64, seed: u64, attempts: u32) -> Result<()> {
    let scenario = Scenario::from_file(file)?;
    run_scenario(&scenario, &scenario.name, tolerance_ms, seed, attempts)
}

/// Plays `scenario` and prints how the real world compares with the model; its artifacts go
/// to `target/vpnsim/real/<dir_name>/`. A play that measured a stalled machine is played
/// again, up to `attempts` plays ([`real_world::run_until_undisturbed`]).
pub fn run_scenario(
    scenario: &Scenario,
    dir_name: &str,
    tolerance_ms: u64,
    seed: u64,
    attempts: u32,
) -> Result<()> {
    if let Some(missing) = real_world::missing_support() {
        bail!(
            "the real world cannot run here: {missing} (it needs root, iproute2, ethtool, network namespaces, /dev/net/tun and BPF)"
        );
    }
    let dir = vpnsim_dir().join("real").join(dir_name);
    let options = RealOptions {
        binaries: Binaries::find()?,
        dir: dir.clone(),
        tolerance_ms,
        seed,
    };
    println!(
        "playing {} in the real world ({} steps, on the wall clock)",
        scenario.name,
        scenario.steps.len()
    );
    let run =
        real_world::run_until_undisturbed(scenario, &options, attempts).context("the real run")?;
    for disturbed in &run.disturbed_runs {
        println!("played again: {disturbed}");
    }
    println!(
        "flow records: {} real, {} predicted; deliveries: {} real, {} predicted; gateway drops: {} real, {} predicted",
        run.flows.len(),
        run.prediction.flows.len(),
        run.deliveries.len(),
        run.prediction.deliveries.len(),
        run.drops.len(),
        run.prediction
            .drops
            .iter()
            .filter(|d| matches!(d.place, observation::DropPlace::Gateway { .. }))
            .count()
    );
    if !run.relay_metrics.is_empty() {
        let shown = |verdicts: &std::collections::BTreeMap<String, u64>| {
            if verdicts.is_empty() {
                "none".to_owned()
            } else {
                verdicts
                    .iter()
                    .map(|(reason, count)| format!("{reason} {count}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        println!(
            "XDP fast path on the real relays: {}; in the simulation: {}",
            shown(&run.fast_path.real),
            shown(&run.fast_path.simulated)
        );
    }
    println!("artifacts in {}", shown(&dir).display());
    if let Some(pcap) = &run.pcap {
        println!("router capture: {}", shown(pcap).display());
    }
    println!("the world's own punctuality: {}", run.punctuality);
    if run.findings.is_empty() {
        println!("the real world agrees with the model: {}", run.how_close());
        return Ok(());
    }
    for finding in &run.findings {
        println!("FINDING: {finding}");
    }
    if let Some(why) = run.disturbed() {
        println!(
            "{} disturbed, the last with {why}: the times may say more about this machine than \
             about the systems",
            match attempts {
                1 => "the play was".to_owned(),
                n => format!("all {n} plays were"),
            }
        );
    }
    bail!(
        "{} findings: the real world and the model disagree",
        run.findings.len()
    )
}
