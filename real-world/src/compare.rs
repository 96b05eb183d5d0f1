//! The real run against the model's prediction: flow records, deliveries to clients and
//! gateway drops, each exact in content and order, with times within the tolerance.

use std::collections::BTreeMap;

use observation::{Packet, PacketKind, Receiver};
use proto::flow::FlowRecord;

use crate::client::Seen;

/// One difference between the real world and the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub what: String,
    pub kind: FindingKind,
}

/// Whether a finding is about what happened or only about when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingKind {
    /// Something happened that the model does not predict, or did not happen: a record, a
    /// packet, a drop or a verdict differs.
    Content,
    /// What happened agrees, but at a time beyond the tolerance of the model's.
    Time,
}

impl Finding {
    pub fn content(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            kind: FindingKind::Content,
        }
    }

    pub fn time(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            kind: FindingKind::Time,
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)
    }
}

fn ms(time: proto::flow::UtcTime) -> u64 {
    model::ms_of(time)
}

/// The tolerance the real world's times are held to, and the largest difference from the
/// model's times it saw: how close a run that agrees came to disagreeing.
///
/// A step the run did late moves everything it sets off by as much, so a real time may come
/// after the model's by the tolerance plus the lateness of the step in effect at the model's
/// time (the last step begun by then): the run's own delay, not the systems'.
#[derive(Debug)]
pub struct Timing {
    pub tolerance_ms: u64,
    /// (step start on the timeline, how late the run did the step's work), in step order.
    steps_late: Vec<(u64, u64)>,
    worst_ms: std::cell::Cell<u64>,
}

impl Timing {
    pub fn new(tolerance_ms: u64) -> Self {
        Self::with_steps_late(tolerance_ms, Vec::new())
    }

    /// `steps_late`: each step's start on the timeline and how late its work was done.
    pub fn with_steps_late(tolerance_ms: u64, steps_late: Vec<(u64, u64)>) -> Self {
        Self {
            tolerance_ms,
            steps_late,
            worst_ms: std::cell::Cell::new(0),
        }
    }

    /// How late the step in effect at the model's time `model_ms` was done.
    fn step_late_at(&self, model_ms: u64) -> u64 {
        self.steps_late
            .iter()
            .take_while(|(start, _)| *start <= model_ms)
            .last()
            .map_or(0, |(_, late)| *late)
    }

    /// Whether the real time is within the tolerance of the model's (a late one, within the
    /// tolerance plus the lateness of its step); every time compared counts towards
    /// [`Timing::worst_ms`].
    fn within(&self, model_ms: u64, real_ms: u64) -> bool {
        let offset = model_ms.abs_diff(real_ms);
        self.worst_ms.set(self.worst_ms.get().max(offset));
        let allowed = if real_ms > model_ms {
            self.tolerance_ms + self.step_late_at(model_ms)
        } else {
            self.tolerance_ms
        };
        offset <= allowed
    }

    /// How a time finding states what was allowed.
    fn allowed(&self, model_ms: u64) -> String {
        match self.step_late_at(model_ms) {
            0 => format!("tolerance {} ms", self.tolerance_ms),
            late => format!(
                "tolerance {} ms, and {late} ms more after its step, which the run did {late} ms late",
                self.tolerance_ms
            ),
        }
    }

    /// The largest difference between a real time and the model's, in ms.
    pub fn worst_ms(&self) -> u64 {
        self.worst_ms.get()
    }
}

/// A record without its times, for matching.
fn content(record: &FlowRecord) -> FlowRecord {
    let zero = model::utc(0);
    FlowRecord {
        start: zero,
        end: zero,
        last_packet: zero,
        ..record.clone()
    }
}

/// Records are paired in order of their 5-tuple and start (the gateway's `end` order may tie
/// differently under real timing); each pair must be equal but for times, which must be within
/// the tolerance of `timing`.
pub fn flows(predicted: &[FlowRecord], observed: &[FlowRecord], timing: &Timing) -> Vec<Finding> {
    let key = |r: &FlowRecord| {
        (
            r.client,
            r.resource,
            r.protocol,
            r.inner_src_ip,
            r.inner_src_port,
            r.inner_dst_ip,
            r.inner_dst_port,
            ms(r.start),
        )
    };
    let mut predicted = predicted.to_vec();
    let mut observed = observed.to_vec();
    predicted.sort_by_key(key);
    observed.sort_by_key(key);
    let mut findings = Vec::new();
    if predicted.len() != observed.len() {
        findings.push(Finding::content(format!(
            "flow records: the model predicts {}, the real gateways wrote {}",
            predicted.len(),
            observed.len()
        )));
    }
    for (expected, got) in predicted.iter().zip(&observed) {
        if content(expected) != content(got) {
            findings.push(Finding::content(format!(
                "flow record differs:\n  model: {}\n  real:  {}",
                serde_json::to_string(expected).unwrap_or_default(),
                serde_json::to_string(got).unwrap_or_default()
            )));
            continue;
        }
        for (what, a, b) in [
            ("start", expected.start, got.start),
            ("end", expected.end, got.end),
            ("last_packet", expected.last_packet, got.last_packet),
        ] {
            if !timing.within(ms(a), ms(b)) {
                findings.push(Finding::time(format!(
                    "flow {}:{} -> {}:{}: {what} at {} ms, the model says {} ms ({})",
                    got.inner_src_ip,
                    got.inner_src_port,
                    got.inner_dst_ip,
                    got.inner_dst_port,
                    ms(b),
                    ms(a),
                    timing.allowed(ms(a))
                )));
            }
        }
    }
    for extra in predicted.iter().skip(observed.len()) {
        findings.push(Finding::content(format!(
            "flow record missing: {}",
            serde_json::to_string(extra).unwrap_or_default()
        )));
    }
    for extra in observed.iter().skip(predicted.len()) {
        findings.push(Finding::content(format!(
            "flow record not predicted: {}",
            serde_json::to_string(extra).unwrap_or_default()
        )));
    }
    findings
}

/// A packet as the two worlds can agree on it: TCP sequence and acknowledgement numbers are
/// the resource kernel's own in the real world.
fn comparable(packet: &Packet) -> Packet {
    let kind = match packet.kind {
        PacketKind::Tcp { flags, payload, .. } => PacketKind::Tcp {
            flags,
            seq: 0,
            ack: 0,
            payload,
        },
        other => other,
    };
    Packet { kind, ..*packet }
}

/// Deliveries to clients and to resources, per receiver, in order.
pub fn deliveries(
    predicted: &[observation::Delivery],
    observed: &[Seen],
    timing: &Timing,
) -> Vec<Finding> {
    let mut expected: BTreeMap<&Receiver, Vec<(u64, Packet)>> = BTreeMap::new();
    for delivery in predicted {
        expected
            .entry(&delivery.to)
            .or_default()
            .push((delivery.at_ms, comparable(&delivery.packet)));
    }
    let mut got: BTreeMap<&Receiver, Vec<(u64, Packet)>> = BTreeMap::new();
    for seen in observed {
        got.entry(&seen.to)
            .or_default()
            .push((seen.at_ms, comparable(&seen.packet)));
    }
    let mut findings = Vec::new();
    let receivers: std::collections::BTreeSet<&Receiver> =
        expected.keys().chain(got.keys()).copied().collect();
    for receiver in receivers {
        let empty = Vec::new();
        let want = expected.get(receiver).unwrap_or(&empty);
        let have = got.get(receiver).unwrap_or(&empty);
        for index in 0..want.len().max(have.len()) {
            match (want.get(index), have.get(index)) {
                (Some((at, packet)), Some((real_at, real))) => {
                    if packet != real {
                        findings.push(Finding::content(format!(
                            "{receiver}, delivery {index}: the model says {packet} at {at} ms, the real world delivered {real} at {real_at} ms"
                        )));
                    } else if !timing.within(*at, *real_at) {
                        findings.push(Finding::time(format!(
                            "{receiver}, delivery {index} ({packet}): at {real_at} ms, the model says {at} ms ({})",
                            timing.allowed(*at)
                        )));
                    }
                }
                (Some((at, packet)), None) => findings.push(Finding::content(format!(
                    "{receiver}: {packet} predicted at {at} ms never arrived"
                ))),
                (None, Some((real_at, real))) => findings.push(Finding::content(format!(
                    "{receiver}: {real} arrived at {real_at} ms, not predicted"
                ))),
                (None, None) => {}
            }
        }
    }
    findings
}

/// Tunnel frames a link fault took: on which link, why and when, with the inner packet they
/// carried, in the order the model predicts them.
pub fn link_drops(
    predicted: &[observation::PacketDrop],
    observed: &[observation::PacketDrop],
    timing: &Timing,
) -> Vec<Finding> {
    let on_links = |drops: &[observation::PacketDrop]| -> Vec<(String, u64, Packet)> {
        let mut list: Vec<(String, u64, Packet)> = drops
            .iter()
            .filter(|drop| matches!(drop.place, observation::DropPlace::Link { .. }))
            .map(|drop| {
                (
                    format!("{} ({})", drop.place, drop.reason),
                    drop.at_ms,
                    comparable(&drop.packet),
                )
            })
            .collect();
        list.sort_by_key(|(_, at, _)| *at);
        list
    };
    let (want, have) = (on_links(predicted), on_links(observed));
    let mut findings = Vec::new();
    for index in 0..want.len().max(have.len()) {
        match (want.get(index), have.get(index)) {
            (Some((place, at, packet)), Some((real_place, real_at, real))) => {
                if place != real_place || packet != real {
                    findings.push(Finding::content(format!(
                        "link drop {index}: the model says {packet} {place} at {at} ms, the real world dropped {real} {real_place} at {real_at} ms"
                    )));
                } else if !timing.within(*at, *real_at) {
                    findings.push(Finding::time(format!(
                        "link drop {index} ({packet} {place}): at {real_at} ms, the model says {at} ms ({})",
                        timing.allowed(*at)
                    )));
                }
            }
            (Some((place, at, packet)), None) => findings.push(Finding::content(format!(
                "link drop of {packet} {place} predicted at {at} ms did not happen"
            ))),
            (None, Some((place, at, packet))) => findings.push(Finding::content(format!(
                "{packet} dropped {place} at {at} ms, not predicted"
            ))),
            (None, None) => {}
        }
    }
    findings
}

/// Gateway drops: (gateway, client, reason), as many of each as predicted.
pub fn gateway_drops(
    predicted: &[observation::PacketDrop],
    observed: &[(u32, Option<u32>, String)],
) -> Vec<Finding> {
    let mut expected: Vec<(u32, Option<u32>, String)> = predicted
        .iter()
        .filter_map(|drop| match &drop.place {
            observation::DropPlace::Gateway { gateway, client } => match drop.reason {
                observation::DropReason::Gateway(reason) => {
                    Some((*gateway, client.map(|c| c.0), reason.as_str().to_owned()))
                }
                _ => None,
            },
            observation::DropPlace::Link { .. } => None,
        })
        .collect();
    let mut got = observed.to_vec();
    expected.sort();
    got.sort();
    if expected == got {
        Vec::new()
    } else {
        vec![Finding::content(format!(
            "gateway drops (gateway, client, reason): the model says {expected:?}, the real gateways reported {got:?}"
        ))]
    }
}
