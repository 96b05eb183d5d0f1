//! Runs a scenario in the simulator and checks it against the reference model: the flow
//! records field by field, every inner packet delivered to a client or a resource responder,
//! every packet a gateway or a link fault dropped, what relay hosts did with every stray
//! datagram, and the invariants that must hold in every run.

use std::{cmp::Ordering, collections::BTreeMap, fmt::Write as _, net::SocketAddr};

use model::{Allocations, Prediction, RelayedAddresses, Unpredictable};
use observation::{Delivery, FlowRecord, PacketDrop, StrayArrival};
use scenario_format::Scenario;
use sim::{Outcome, RunOptions, SimError};

/// Why a run failed its checks, in words a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("the simulator cannot run this scenario: {0}")]
    Sim(#[from] SimError),
    /// The model lost track at a step; what happened before it matched the model
    /// (`checked_before`: that step), or there was nothing before it to compare.
    #[error("the model cannot predict this scenario: {unpredictable}")]
    Model {
        unpredictable: Unpredictable,
        checked_before: Option<usize>,
    },
    #[error("invariant broken: {0}")]
    Invariant(String),
    #[error("flow records differ from the model:\n{0}")]
    Flows(String),
    #[error("deliveries differ from the model:\n{0}")]
    Deliveries(String),
    #[error("drops differ from the model:\n{0}")]
    Drops(String),
    #[error("stray datagrams at relays differ from the model:\n{0}")]
    Strays(String),
    /// What an attacker got back differs from what a relay that holds answers: an accepted
    /// forgery, a missing refusal, a refusal with the wrong code.
    #[error("attacks got other answers than the model's:\n{0}")]
    Attacks(String),
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

/// Checks what a run of `scenario` produced: invariants, then every flow record, every
/// delivery and every drop.
pub fn check_outcome(scenario: &Scenario, outcome: Outcome) -> Result<Checked, CheckError> {
    if let Some(first) = outcome.errors.first() {
        // The first broken invariant, then (indented) the next few, which often tell the rest
        // of the story (the relay addressing itself after XDP and userspace disagreed).
        let mut text = first.clone();
        for error in outcome.errors.iter().skip(1).take(4) {
            let _ = write!(text, "\n  then: {error}");
        }
        if outcome.errors.len() > 5 {
            let _ = write!(text, "\n  ... and {} more", outcome.errors.len() - 5);
        }
        return Err(CheckError::Invariant(text));
    }
    let allocations = allocations(scenario, &outcome.relayed);
    let prediction = match model::predict_known_part(scenario, &allocations) {
        Ok(prediction) => prediction,
        Err((unpredictable, known)) => {
            // What happened before the step where the model lost track is still held to it.
            let checked_before = known.as_ref().map(|known| known.before_step);
            if let Some(known) = known {
                let mut observed = observed_part(&outcome);
                model::observed_before(&mut observed, &known, &scenario.topology);
                compare(&known.prediction, &observed, outcome.datapath.runs_xdp())
                    .map_err(|error| error.before_step(known.before_step, &unpredictable.reason))?;
            }
            return Err(CheckError::Model {
                unpredictable,
                checked_before,
            });
        }
    };
    compare(
        &prediction,
        &observed_part(&outcome),
        outcome.datapath.runs_xdp(),
    )?;
    Ok(Checked {
        outcome,
        prediction,
    })
}

/// What a run produced that the model predicts, in the model's terms.
fn observed_part(outcome: &Outcome) -> Prediction {
    Prediction {
        flows: outcome.flows.clone(),
        deliveries: outcome.deliveries.clone(),
        drops: outcome.drops.clone(),
        strays: outcome.strays.clone(),
        attacks: outcome.attacks.clone(),
        coverage: model::coverage::ModelCoverage::default(),
    }
}

/// Compares records, deliveries, drops and stray fates (XDP verdicts only if `xdp` ran).
fn compare(expected: &Prediction, observed: &Prediction, xdp: bool) -> Result<(), CheckError> {
    let mut flows = observed.flows.clone();
    model::sort_flows(&mut flows);
    let differences = compare_flows(&expected.flows, &flows);
    if !differences.is_empty() {
        return Err(CheckError::Flows(differences));
    }
    let differences = compare_deliveries(&expected.deliveries, &observed.deliveries);
    if !differences.is_empty() {
        return Err(CheckError::Deliveries(differences));
    }
    let differences = compare_drops(&expected.drops, &observed.drops);
    if !differences.is_empty() {
        return Err(CheckError::Drops(differences));
    }
    let differences = compare_strays(&expected.strays, &observed.strays, xdp);
    if !differences.is_empty() {
        return Err(CheckError::Strays(differences));
    }
    let differences = difference(
        "attacks",
        &expected.attacks,
        &observed.attacks,
        Ord::cmp,
        ToString::to_string,
    );
    if !differences.is_empty() {
        return Err(CheckError::Attacks(differences));
    }
    Ok(())
}

impl CheckError {
    /// The same difference, said of the steps before `step`, where the model lost track.
    fn before_step(self, step: usize, reason: &str) -> Self {
        let prefix = |text: String| {
            format!(
                "  (compared before steps[{step}], where the model cannot predict: {reason})\n{text}"
            )
        };
        match self {
            CheckError::Flows(text) => CheckError::Flows(prefix(text)),
            CheckError::Deliveries(text) => CheckError::Deliveries(prefix(text)),
            CheckError::Drops(text) => CheckError::Drops(prefix(text)),
            CheckError::Strays(text) => CheckError::Strays(prefix(text)),
            CheckError::Attacks(text) => CheckError::Attacks(prefix(text)),
            other => other,
        }
    }
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

/// How many differing items a difference lists, per kind.
const SHOWN: usize = 8;

/// A readable difference between the deliveries the model expects and those observed (empty
/// if they are the same). The step is not compared: the sim names the step whose time a
/// packet falls in, the model the step whose traffic it is, and the time already says it.
pub fn compare_deliveries(expected: &[Delivery], observed: &[Delivery]) -> String {
    let key = |d: &Delivery| (d.at_ms, d.to.clone(), d.packet);
    difference(
        "deliveries",
        expected,
        observed,
        |a, b| key(a).cmp(&key(b)),
        show_delivery,
    )
}

/// A readable difference between the drops the model expects and those observed (empty if
/// they are the same), compared without the step (see [`compare_deliveries`]).
pub fn compare_drops(expected: &[PacketDrop], observed: &[PacketDrop]) -> String {
    let key = |d: &PacketDrop| (d.at_ms, d.place.clone(), d.reason, d.packet);
    difference(
        "drops",
        expected,
        observed,
        |a, b| key(a).cmp(&key(b)),
        show_drop,
    )
}

/// A readable difference between what the model expects relay hosts to do with stray
/// datagrams and what they did (empty if the same), compared without the step (see
/// [`compare_deliveries`]). The XDP verdict is compared when the relays ran their program
/// (`xdp`).
pub fn compare_strays(expected: &[StrayArrival], observed: &[StrayArrival], xdp: bool) -> String {
    let key = |s: &StrayArrival| {
        (
            s.at_ms,
            s.relay,
            s.from,
            s.to,
            s.xdp.filter(|_| xdp),
            s.fate,
        )
    };
    difference(
        "stray datagrams",
        expected,
        observed,
        |a, b| key(a).cmp(&key(b)),
        |stray| stray.to_string(),
    )
}

/// The items only one side has, by a merge of both lists in the order `order` (both sorted
/// by it), with the first few of each kind spelled out.
fn difference<T>(
    what: &str,
    expected: &[T],
    observed: &[T],
    order: impl Fn(&T, &T) -> Ordering,
    show: impl Fn(&T) -> String,
) -> String {
    let mut expected = expected.iter().collect::<Vec<_>>();
    let mut observed = observed.iter().collect::<Vec<_>>();
    expected.sort_by(|a, b| order(a, b));
    observed.sort_by(|a, b| order(a, b));
    let (mut missing, mut unexpected) = (Vec::new(), Vec::new());
    let (mut e, mut o) = (0, 0);
    while e < expected.len() || o < observed.len() {
        let ordering = match (expected.get(e), observed.get(o)) {
            (Some(want), Some(got)) => order(want, got),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match ordering {
            Ordering::Equal => {
                e += 1;
                o += 1;
            }
            Ordering::Less => {
                missing.push(expected[e]);
                e += 1;
            }
            Ordering::Greater => {
                unexpected.push(observed[o]);
                o += 1;
            }
        }
    }
    let mut out = String::new();
    if missing.is_empty() && unexpected.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "  the model expects {} {what}, the simulation saw {}: {} missing, {} unexpected",
        expected.len(),
        observed.len(),
        missing.len(),
        unexpected.len()
    );
    let mut list = |label: &str, items: Vec<String>| {
        for item in items.iter().take(SHOWN) {
            let _ = writeln!(out, "  {label} {item}");
        }
        if items.len() > SHOWN {
            let _ = writeln!(out, "  ... and {} more {label}", items.len() - SHOWN);
        }
    };
    list("missing:   ", missing.into_iter().map(&show).collect());
    list("unexpected:", unexpected.into_iter().map(&show).collect());
    out
}

fn show_delivery(delivery: &Delivery) -> String {
    format!(
        "{} ms (step {}): {} to {}",
        delivery.at_ms, delivery.step, delivery.packet, delivery.to
    )
}

fn show_drop(drop: &PacketDrop) -> String {
    format!(
        "{} ms (step {}): {} {}, {}",
        drop.at_ms, drop.step, drop.packet, drop.place, drop.reason
    )
}
