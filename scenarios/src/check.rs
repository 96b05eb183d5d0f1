//! Runs a scenario in the simulator and checks it against the reference model: the flow
//! records field by field, and the invariants that must hold in every run.

use std::{collections::BTreeMap, fmt::Write as _, net::SocketAddr};

use model::{Allocations, Prediction, RelayedAddresses, Unpredictable};
use proto::flow::FlowRecord;
use scenario::Scenario;
use sim::{Outcome, RunOptions, SimError};

/// Why a run failed its checks, in words a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("the simulator cannot run this scenario: {0}")]
    Sim(#[from] SimError),
    #[error("the model cannot predict this scenario: {0}")]
    Model(Unpredictable),
    #[error("invariant broken: {0}")]
    Invariant(String),
    #[error("flow records differ from the model:\n{0}")]
    Flows(String),
}

/// A run that passed every check.
#[derive(Debug)]
pub struct Checked {
    pub outcome: Outcome,
    pub prediction: Prediction,
}

/// The relayed addresses the simulation's relays handed out, in the model's terms.
fn allocations(scenario: &Scenario, relayed: &BTreeMap<String, Vec<SocketAddr>>) -> Allocations {
    let of = |name: &str| {
        let addresses = relayed.get(name).cloned().unwrap_or_default();
        RelayedAddresses {
            v4: addresses.iter().copied().find(SocketAddr::is_ipv4),
            v6: addresses.iter().copied().find(SocketAddr::is_ipv6),
        }
    };
    Allocations {
        clients: scenario
            .topology
            .clients
            .iter()
            .map(|c| of(&c.name))
            .collect(),
        gateways: scenario
            .topology
            .gateways
            .iter()
            .map(|g| of(&g.name))
            .collect(),
    }
}

/// Runs `scenario` with `seed` and checks it.
pub fn run_and_check(scenario: &Scenario, seed: u64) -> Result<Checked, CheckError> {
    let outcome = sim::run(scenario, &RunOptions::seeded(seed))?;
    check_outcome(scenario, outcome)
}

/// Checks what a run of `scenario` produced: invariants, then every flow record.
pub fn check_outcome(scenario: &Scenario, outcome: Outcome) -> Result<Checked, CheckError> {
    if let Some(error) = outcome.errors.first() {
        return Err(CheckError::Invariant(format!(
            "{error} (and {} more)",
            outcome.errors.len() - 1
        )));
    }
    let prediction = model::predict_with(scenario, &allocations(scenario, &outcome.relayed))
        .map_err(CheckError::Model)?;
    let mut observed = outcome.flows.clone();
    model::sort_flows(&mut observed);
    let differences = compare_flows(&prediction.flows, &observed);
    if !differences.is_empty() {
        return Err(CheckError::Flows(differences));
    }
    Ok(Checked {
        outcome,
        prediction,
    })
}

/// A readable field-by-field difference between expected and observed records (empty if equal).
pub fn compare_flows(expected: &[FlowRecord], observed: &[FlowRecord]) -> String {
    let mut out = String::new();
    if expected.len() != observed.len() {
        let _ = writeln!(
            out,
            "  the model expects {} records, the gateway wrote {}",
            expected.len(),
            observed.len()
        );
    }
    for (index, (want, got)) in expected.iter().zip(observed).enumerate() {
        if want == got {
            continue;
        }
        let want_fields = fields(want);
        let got_fields = fields(got);
        let _ = writeln!(out, "  record {index}:");
        for ((name, want_value), (_, got_value)) in want_fields.iter().zip(&got_fields) {
            if want_value != got_value {
                let _ = writeln!(out, "    {name}: expected {want_value}, got {got_value}");
            }
        }
    }
    for (index, extra) in observed.iter().enumerate().skip(expected.len()) {
        let _ = writeln!(out, "  unexpected record {index}: {extra:?}");
    }
    for (index, missing) in expected.iter().enumerate().skip(observed.len()) {
        let _ = writeln!(out, "  missing record {index}: {missing:?}");
    }
    out
}

fn fields(record: &FlowRecord) -> Vec<(&'static str, String)> {
    vec![
        ("client", format!("{:?}", record.client)),
        ("resource", format!("{:?}", record.resource)),
        ("protocol", format!("{:?}", record.protocol)),
        ("start", record.start.to_string()),
        ("end", record.end.to_string()),
        ("last_packet", record.last_packet.to_string()),
        (
            "inner_src",
            format!("{}:{}", record.inner_src_ip, record.inner_src_port),
        ),
        (
            "inner_dst",
            format!("{}:{}", record.inner_dst_ip, record.inner_dst_port),
        ),
        ("inner_domain", format!("{:?}", record.inner_domain)),
        ("outer_contexts", format!("{:?}", record.outer_contexts)),
        (
            "tx",
            format!("{} packets, {} bytes", record.tx_packets, record.tx_bytes),
        ),
        (
            "rx",
            format!("{} packets, {} bytes", record.rx_packets, record.rx_bytes),
        ),
        ("close_reason", format!("{:?}", record.close_reason)),
    ]
}
