//! The relays' XDP fast path in the two worlds: the verdicts the real relays report must be
//! those of the simulation of the same story.

use std::collections::BTreeMap;

use scenario_format::Scenario;

use crate::compare::Finding;

/// The XDP program's relaying and dropping verdicts (`tx/*`, `drop/*`) on the real relays must
/// be those of the simulation of the same story, where the same program runs on every
/// datagram through `BPF_PROG_TEST_RUN`. (`pass/*` verdicts are left out: the kernels of the
/// real world send ARP, neighbour discovery and MLD the simulation has no reason to.)
pub(crate) fn fast_path_against_the_simulation(
    played: &Scenario,
    seed: u64,
    relay_metrics: &[BTreeMap<String, f64>],
) -> FastPath {
    let mut compared = FastPath::default();
    if relay_metrics.is_empty() {
        return compared;
    }
    let fast_path = |reason: &str| reason.starts_with("tx/") || reason.starts_with("drop/");
    let mut real: BTreeMap<String, u64> = BTreeMap::new();
    for metrics in relay_metrics {
        for (sample, value) in metrics {
            if let Some(labels) = sample.strip_prefix("relay_xdp_runs_total{")
                && let Some(reason) = labels.split('"').nth(1)
                && fast_path(reason)
            {
                *real.entry(reason.to_owned()).or_default() += *value as u64;
            }
        }
    }
    compared.real.clone_from(&real);
    let simulated = match sim::run(played, &sim::RunOptions::seeded(seed)) {
        Ok(outcome) if outcome.datapath != sim::Datapath::Userspace => outcome
            .xdp_reasons
            .into_iter()
            .filter(|(reason, count)| fast_path(reason) && *count > 0)
            .map(|(reason, count)| (reason.to_owned(), count))
            .collect::<BTreeMap<_, _>>(),
        Ok(_) => {
            compared.finding = Some(Finding::content(
                "the simulation ran its relays without XDP; the fast paths cannot be compared",
            ));
            return compared;
        }
        Err(error) => {
            compared.finding = Some(Finding::content(format!(
                "the simulation of the same story failed: {error}"
            )));
            return compared;
        }
    };
    if simulated != real {
        compared.finding = Some(Finding::content(format!(
            "XDP fast-path verdicts: the simulation ran {simulated:?}, the real relays {real:?}"
        )));
    }
    compared.simulated = simulated;
    compared
}

/// The XDP program's fast-path verdicts by reason, in the simulation and on the real relays.
#[derive(Debug, Clone, Default)]
pub struct FastPath {
    pub simulated: BTreeMap<String, u64>,
    pub real: BTreeMap<String, u64>,
    pub(crate) finding: Option<Finding>,
}
