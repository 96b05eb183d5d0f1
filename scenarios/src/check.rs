//! Runs a scenario in the simulator and checks it against the reference model: the flow
//! records field by field, every inner packet delivered to a client or a resource responder,
//! every packet a gateway or a link fault dropped, and the invariants that must hold in every
//! run.

use std::{cmp::Ordering, collections::BTreeMap, fmt::Write as _, net::SocketAddr};

use model::{
    Allocations, ClientId, Delivery, DropPlace, DropReason, ExpectedDrop, OuterContext, Packet,
    PacketKind, Prediction, Receiver, RelayedAddresses, TcpFlags, Timeline, Unpredictable,
};
use proto::flow::FlowRecord;
use scenario::Scenario;
use sim::{
    DropCause, GatewayDropReason, ObservedDelivery, ObservedDrop, ObservedPlace, ObservedReceiver,
    Outcome, PacketSummary, RunOptions, SimError, SummaryKind,
};

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
    #[error("deliveries differ from the model:\n{0}")]
    Deliveries(String),
    #[error("drops differ from the model:\n{0}")]
    Drops(String),
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
    let prediction = model::predict_with(scenario, &allocations(scenario, &outcome.relayed))
        .map_err(CheckError::Model)?;
    let mut observed = outcome.flows.clone();
    model::sort_flows(&mut observed);
    let differences = compare_flows(&prediction.flows, &observed);
    if !differences.is_empty() {
        return Err(CheckError::Flows(differences));
    }
    let timeline = model::timeline(scenario);
    let (deliveries, untranslated) = deliveries(&timeline, &outcome.deliveries);
    let differences = compare_deliveries(&prediction.deliveries, &deliveries, &untranslated);
    if !differences.is_empty() {
        return Err(CheckError::Deliveries(differences));
    }
    let (drops, untranslated) = drops(&timeline, &outcome.drops);
    let differences = compare_drops(&prediction.drops, &drops, &untranslated);
    if !differences.is_empty() {
        return Err(CheckError::Drops(differences));
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

/// How many differing items a difference lists, per kind.
const SHOWN: usize = 8;

/// The step an observation at `at_ms` belongs to: the last step started at or before it. The
/// sim does not know which step's traffic a packet is; within the step grid the time says it
/// (a frame released by a `release` step counts as that step's traffic, as in the model).
pub fn step_at(timeline: &Timeline, at_ms: u64) -> usize {
    timeline
        .step_start
        .iter()
        .rposition(|start| *start <= at_ms)
        .unwrap_or(0)
}

/// An observed packet in the model's terms, if the model has words for it.
fn packet(summary: &PacketSummary) -> Option<Packet> {
    let kind = match summary.kind {
        SummaryKind::Udp { payload } => PacketKind::Udp { payload },
        SummaryKind::Tcp {
            syn,
            ack_flag,
            fin,
            rst,
            psh,
            seq,
            ack,
            payload,
        } => PacketKind::Tcp {
            flags: TcpFlags {
                syn,
                ack: ack_flag,
                fin,
                rst,
                psh,
            },
            seq,
            ack,
            payload,
        },
        SummaryKind::IcmpProhibited {
            quoted_protocol,
            quoted_src,
            quoted_dst,
        } => PacketKind::IcmpProhibited {
            quoted_protocol,
            quoted_src,
            quoted_dst,
        },
        SummaryKind::Icmp { .. } | SummaryKind::Other { .. } => return None,
    };
    Some(Packet {
        src: summary.src,
        dst: summary.dst,
        kind,
    })
}

fn receiver(to: &ObservedReceiver) -> Receiver {
    match *to {
        ObservedReceiver::Client {
            client,
            gateway,
            remote,
            local,
        } => Receiver::Client {
            client: ClientId(client as u32),
            gateway: gateway as u32,
            outer: OuterContext { remote, local },
        },
        ObservedReceiver::Resource { gateway } => Receiver::Resource {
            gateway: gateway as u32,
        },
    }
}

/// The gateway's drop reasons the model predicts (the others must never happen in a run).
fn drop_reason(cause: DropCause) -> Option<DropReason> {
    Some(match cause {
        DropCause::Partition => DropReason::Partition,
        DropCause::DropNext => DropReason::DropNext,
        DropCause::StillHeld => DropReason::StillHeld,
        DropCause::Gateway(reason) => match reason {
            GatewayDropReason::NoResource => DropReason::NoResource,
            GatewayDropReason::NotGranted => DropReason::NotGranted,
            GatewayDropReason::FilterDenied => DropReason::FilterDenied,
            GatewayDropReason::UnknownProxyIp => DropReason::UnknownProxyIp,
            GatewayDropReason::TcpWithoutSyn => DropReason::TcpWithoutSyn,
            GatewayDropReason::NoOpenFlow => DropReason::NoOpenFlow,
            GatewayDropReason::DnsQueueFull => DropReason::DnsQueueFull,
            GatewayDropReason::DnsResolutionFailed => DropReason::DnsResolutionFailed,
            _ => return None,
        },
    })
}

/// The observed deliveries in the model's terms, sorted as the model sorts them (each with the
/// step its time falls in), and a description of each the model has no words for.
pub fn deliveries(
    timeline: &Timeline,
    observed: &[ObservedDelivery],
) -> (Vec<Delivery>, Vec<String>) {
    let mut translated = Vec::new();
    let mut untranslated = Vec::new();
    for delivery in observed {
        match packet(&delivery.packet) {
            Some(packet) => translated.push(Delivery {
                at_ms: delivery.at_ms,
                to: receiver(&delivery.to),
                packet,
                step: step_at(timeline, delivery.at_ms),
            }),
            None => untranslated.push(format!(
                "{} ms: {} to {:?}",
                delivery.at_ms, delivery.packet, delivery.to
            )),
        }
    }
    translated.sort();
    (translated, untranslated)
}

/// The observed drops in the model's terms, sorted as the model sorts them, and a description
/// of each the model has no words for (a drop reason it never predicts, a packet of no client).
pub fn drops(timeline: &Timeline, observed: &[ObservedDrop]) -> (Vec<ExpectedDrop>, Vec<String>) {
    let mut translated = Vec::new();
    let mut untranslated = Vec::new();
    for drop in observed {
        let place = match &drop.place {
            ObservedPlace::Gateway {
                gateway,
                client: Some(client),
            } => Some(DropPlace::Gateway {
                gateway: *gateway as u32,
                client: ClientId(*client as u32),
            }),
            ObservedPlace::Gateway { client: None, .. } => None,
            ObservedPlace::Link { between } => Some(DropPlace::Link {
                between: between.clone(),
            }),
        };
        match (place, drop_reason(drop.cause), packet(&drop.packet)) {
            (Some(place), Some(reason), Some(packet)) => translated.push(ExpectedDrop {
                at_ms: drop.at_ms,
                place,
                reason,
                packet,
                step: step_at(timeline, drop.at_ms),
            }),
            _ => untranslated.push(format!(
                "{} ms: {} dropped at {:?} ({:?})",
                drop.at_ms, drop.packet, drop.place, drop.cause
            )),
        }
    }
    translated.sort();
    (translated, untranslated)
}

/// A readable difference between the deliveries the model expects and those observed (empty
/// if they are the same). The step is not compared: the sim cannot know which step's traffic
/// a packet is, and the time already says it.
pub fn compare_deliveries(
    expected: &[Delivery],
    observed: &[Delivery],
    untranslated: &[String],
) -> String {
    let key = |d: &Delivery| (d.at_ms, d.to.clone(), d.packet);
    difference(
        "deliveries",
        expected,
        observed,
        untranslated,
        |a, b| key(a).cmp(&key(b)),
        show_delivery,
    )
}

/// A readable difference between the drops the model expects and those observed (empty if
/// they are the same), compared without the step (see [`compare_deliveries`]).
pub fn compare_drops(
    expected: &[ExpectedDrop],
    observed: &[ExpectedDrop],
    untranslated: &[String],
) -> String {
    let key = |d: &ExpectedDrop| (d.at_ms, d.place.clone(), d.reason, d.packet);
    difference(
        "drops",
        expected,
        observed,
        untranslated,
        |a, b| key(a).cmp(&key(b)),
        show_drop,
    )
}

/// The items only one side has, by a merge of both lists in the order `order` (both sorted
/// by it), with the first few of each kind spelled out.
fn difference<T>(
    what: &str,
    expected: &[T],
    observed: &[T],
    untranslated: &[String],
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
    if missing.is_empty() && unexpected.is_empty() && untranslated.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "  the model expects {} {what}, the simulation saw {}: {} missing, {} unexpected",
        expected.len(),
        observed.len() + untranslated.len(),
        missing.len(),
        unexpected.len() + untranslated.len()
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
    list("unexpected:", untranslated.to_vec());
    out
}

fn show_delivery(delivery: &Delivery) -> String {
    let to = match &delivery.to {
        Receiver::Client {
            client,
            gateway,
            outer,
        } => format!("client {client} from gateway {gateway} over {outer}"),
        Receiver::Resource { gateway } => format!("the resource behind gateway {gateway}"),
    };
    format!(
        "{} ms (step {}): {} to {to}",
        delivery.at_ms,
        delivery.step,
        crate::show::packet_line(&delivery.packet)
    )
}

fn show_drop(drop: &ExpectedDrop) -> String {
    let place = match &drop.place {
        DropPlace::Gateway { gateway, client } => {
            format!("by gateway {gateway} (client {client})")
        }
        DropPlace::Link { between } => format!("on the link {}-{}", between[0], between[1]),
    };
    format!(
        "{} ms (step {}): {} {place}, {:?}",
        drop.at_ms,
        drop.step,
        crate::show::packet_line(&drop.packet),
        drop.reason
    )
}
