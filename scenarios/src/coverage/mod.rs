//! What a batch of checked scenarios exercised: the XDP program's twelve rewriting paths
//! (relay-to-self among them, in each family and across), flows to DNS resources, every close
//! reason and every drop reason the model predicted and the run confirmed, and every kind of
//! stray (non-TURN) datagram at relays with what XDP and the host did with it. The property test
//! fails if a default run leaves a required counter at zero, so the generator cannot quietly
//! stop reaching a case.

mod behaviour;
pub mod grid;

use std::collections::BTreeMap;

pub use behaviour::{Behaviour, REQUIRED_REUSE, REQUIRED_TCP};
pub use grid::{Grid, Requirement, Section};

use model::{DropReason, GatewayDropReason};
use observation::AttackAnswer;
use proto::flow::CloseReason;
use relay_xdp::reason;
use scenario_format::{AttackKind, GatewayAttackKind, PathMode, Scenario, Step, StrayKind, plan};

use crate::check::Checked;

/// The XDP program's rewriting paths, by reason name.
pub fn xdp_paths() -> Vec<&'static str> {
    (reason::TX_FIRST..reason::TX_END)
        .map(reason::name)
        .collect()
}

pub const CLOSE_REASONS: [CloseReason; 5] = [
    CloseReason::Fin,
    CloseReason::Rst,
    CloseReason::Idle,
    CloseReason::Shutdown,
    CloseReason::Revoked,
];

/// The drop reasons generated scenarios must reach.
pub const DROP_REASONS: [DropReason; 10] = [
    DropReason::Gateway(GatewayDropReason::NotGranted),
    DropReason::Gateway(GatewayDropReason::FilterDenied),
    DropReason::Gateway(GatewayDropReason::TcpWithoutSyn),
    DropReason::Gateway(GatewayDropReason::NoOpenFlow),
    DropReason::Gateway(GatewayDropReason::DnsResolutionFailed),
    DropReason::Gateway(GatewayDropReason::FlowTableFull),
    DropReason::Gateway(GatewayDropReason::ForgedSource),
    DropReason::Partition,
    DropReason::DropNext,
    DropReason::StillHeld,
];

/// Where the drops of input no generated host sends (malformed, forged, unsolicited) are tested.
const HOSTILE_INPUT_TESTED: &str =
    "no generated host sends malformed, forged or unsolicited input: gateway/tests/drop_events.rs";

/// Where a gateway drop reason that generated scenarios do not reach is tested instead, or
/// `None` for the reasons they must reach ([`DROP_REASONS`]). A new reason does not compile
/// until it is placed here.
pub fn tested_elsewhere(reason: GatewayDropReason) -> Option<&'static str> {
    use GatewayDropReason::*;
    match reason {
        NotGranted | FilterDenied | TcpWithoutSyn | NoOpenFlow | DnsResolutionFailed
        | FlowTableFull | ForgedSource => None,
        NoResource => Some(
            "a scenario names resources, so traffic to an address outside every resource needs \
             a hand-written packet: gateway/tests/flow_rules.rs",
        ),
        UnknownProxyIp => {
            Some("the stub resolver maps every proxy IP it hands out: gateway/tests/flow_rules.rs")
        }
        DnsQueueFull => {
            Some("needs 33 packets queued in one DNS round trip: gateway/tests/data_path.rs")
        }
        NotTunnelFrame | MalformedFrame | UnknownSession | BadMac | Replay | MalformedPacket
        | Fragment | UnsupportedProtocol | IcmpNotAllowed | UnknownDestination | NatCollision
        | DnsUnexpectedAnswer | ShutDown => Some(HOSTILE_INPUT_TESTED),
    }
}

/// Every attack kind, relay kinds first, as the scenario writes them.
fn attack_kinds() -> impl Iterator<Item = &'static str> {
    AttackKind::ALL
        .iter()
        .map(|kind| kind.as_str())
        .chain(GatewayAttackKind::ALL.iter().map(|kind| kind.as_str()))
}

/// Whether a datagram is a STUN error response with code 438 (Stale Nonce).
fn is_stale_nonce_answer(payload: &[u8]) -> bool {
    use proto::stun::{self, Attribute, MessageClass};
    stun::looks_like_stun(payload)
        && stun::decode(payload).is_ok_and(|message| {
            message.class() == MessageClass::ErrorResponse
            && message.attributes().any(
                |attribute| matches!(attribute, Attribute::ErrorCode(error) if error.code() == 438),
            )
        })
}

/// Counters over many checked scenarios.
#[derive(Debug, Default, Clone)]
pub struct Coverage {
    pub scenarios: u64,
    /// Scenarios with a `same-relay` path step.
    pub same_relay_scenarios: u64,
    /// Scenarios with a host on IPv6 outside the tunnel.
    pub ipv6_scenarios: u64,
    /// Relay datagrams the XDP program ran on, per reason name.
    pub xdp: BTreeMap<&'static str, u64>,
    pub datagrams: u64,
    pub flows: u64,
    pub dns_flows: u64,
    pub close_reasons: BTreeMap<CloseReason, u64>,
    pub drop_reasons: BTreeMap<DropReason, u64>,
    /// Timer deadlines, TCP states, reuse and swarm profiles.
    pub behaviour: Behaviour,
    /// Requests a relay answered with 438 Stale Nonce (a nonce outlived its lifetime).
    pub stale_nonces: u64,
    /// TCP connections both sides closed at once (their FINs crossed).
    pub simultaneous_closes: u64,
    /// Stray datagrams at relays by kind, XDP reason (`-` without the program) and fate.
    pub strays: BTreeMap<(StrayKind, String, String), u64>,
    /// Attacks by kind and the refusals they met: a relay's error codes (each the rejection
    /// counter it raised), `nothing` for data that got nothing through, and a gateway's drop
    /// reasons (each the drop counter it raised).
    pub attacks: BTreeMap<(&'static str, String), u64>,
}

impl Coverage {
    /// Counts one scenario that passed its checks.
    pub fn add(&mut self, scenario: &Scenario, checked: &Checked) {
        self.scenarios += 1;
        let same_relay = scenario.steps.iter().any(|step| {
            matches!(
                step,
                Step::Path {
                    mode: PathMode::SameRelay,
                    ..
                }
            )
        });
        self.same_relay_scenarios += u64::from(same_relay);
        let topology = &scenario.topology;
        let v6 = topology
            .clients
            .iter()
            .map(|c| c.stack)
            .chain(topology.gateways.iter().map(|g| g.stack))
            .any(|stack| stack != scenario_format::Stack::V4);
        self.ipv6_scenarios += u64::from(v6);
        for (name, runs) in &checked.outcome.xdp_reasons {
            *self.xdp.entry(name).or_default() += runs;
        }
        self.datagrams += checked
            .outcome
            .hops
            .iter()
            .filter(|hop| hop.direction == sim::Direction::Sent)
            .count() as u64;
        for flow in &checked.outcome.flows {
            self.flows += 1;
            self.dns_flows += u64::from(flow.inner_domain.is_some());
            *self.close_reasons.entry(flow.close_reason).or_default() += 1;
        }
        for drop in &checked.prediction.drops {
            *self.drop_reasons.entry(drop.reason).or_default() += 1;
        }
        self.behaviour.add_model(&checked.prediction.coverage);
        self.stale_nonces += checked
            .outcome
            .hops
            .iter()
            .filter(|hop| {
                // The attacker's 438s are for nonces it forged, not ones that outlived their
                // lifetime.
                hop.direction == sim::Direction::Sent
                    && !plan::is_attacker(hop.dst.ip())
                    && is_stale_nonce_answer(&hop.payload)
            })
            .count() as u64;
        self.simultaneous_closes += scenario
            .steps
            .iter()
            .filter(|step| matches!(step, Step::TcpSimultaneousClose { .. }))
            .count() as u64;
        let roams_back = scenario
            .steps
            .iter()
            .filter(|step| matches!(step, Step::Roam { back: true, .. }))
            .count() as u64;
        *self
            .behaviour
            .reuse
            .entry(behaviour::ROAM_BACK)
            .or_default() += roams_back;
        self.behaviour
            .add_turn_timers(&checked.outcome.turn_timer_boundaries);
        self.add_attacks(scenario, checked);
        for stray in &checked.outcome.strays {
            let Some(Step::Stray { kind, .. }) = scenario.steps.get(stray.step) else {
                continue;
            };
            // The XDP program's reason, from the hop (or the non-UDP frame) at the relay that
            // received it.
            let hop_note = || {
                checked
                    .outcome
                    .hops
                    .iter()
                    .find(|hop| {
                        hop.direction == sim::Direction::Received
                            && hop.at_ms == stray.at_ms
                            && (hop.src, hop.dst) == (stray.from, stray.to)
                    })
                    .and_then(|hop| hop.xdp.as_ref())
            };
            let frame_note = || {
                checked
                    .outcome
                    .frames
                    .iter()
                    .find(|frame| {
                        frame.at_ms == stray.at_ms && frame.about == (stray.to, stray.from)
                    })
                    .and_then(|frame| frame.xdp.as_ref())
            };
            let note = if kind.is_icmp() {
                frame_note()
            } else {
                hop_note()
            };
            let reason = note.map_or("-".to_owned(), |note| note.reason.clone());
            *self
                .strays
                .entry((*kind, reason, stray.fate.to_string()))
                .or_default() += 1;
        }
    }

    /// Counts the attacks of one scenario that passed its checks, by what refused them.
    fn add_attacks(&mut self, scenario: &Scenario, checked: &Checked) {
        for attack in &checked.outcome.attacks {
            let kind = match scenario.steps.get(attack.step) {
                Some(Step::Attack { kind, .. }) => kind.as_str(),
                Some(Step::GatewayAttack { kind, .. }) => kind.as_str(),
                _ => continue,
            };
            let mut refusals: Vec<(AttackAnswer, usize)> = Vec::new();
            for answer in attack.rounds.iter().flatten() {
                if !matches!(
                    answer,
                    AttackAnswer::Error(_)
                        | AttackAnswer::Nothing
                        | AttackAnswer::GatewayDropped(_)
                ) {
                    continue;
                }
                match refusals.last_mut() {
                    Some((last, times)) if last == answer => *times += 1,
                    _ => refusals.push((*answer, 1)),
                }
            }
            let refusals: Vec<String> = refusals
                .into_iter()
                .map(|(answer, times)| match times {
                    1 => answer.to_string(),
                    _ => format!("{answer} x{times}"),
                })
                .collect();
            *self.attacks.entry((kind, refusals.join(" "))).or_default() += 1;
        }
    }

    /// Counts the swarm profile of one scenario that passed its checks.
    pub fn add_profile(&mut self, profile: &crate::strategy::profile::Profile) {
        self.behaviour.add_profile(profile);
    }

    /// Required counters still at zero, by name. `xdp`: whether the relays ran their XDP
    /// program (the XDP paths are required only then).
    pub fn missing(&self, xdp: bool) -> Vec<String> {
        self.grid(xdp).missing()
    }

    /// The coverage grid: every counter, zero or not, and what must not be zero (the XDP
    /// paths only when `xdp`, the relays having run their program).
    pub fn grid(&self, xdp: bool) -> Grid {
        let mut grid = Grid::default();
        let mut scenarios = Section::new("scenarios", &["cases"]);
        scenarios
            .row("checked", vec![self.scenarios])
            .row("both peers on one relay", vec![self.same_relay_scenarios])
            .row("IPv6 outside the tunnel", vec![self.ipv6_scenarios]);
        grid.sections.push(scenarios);

        const XDP_SECTION: &str = "XDP rewrites (runs)";
        const FAMILIES: [&str; 4] = ["v4 to v4", "v4 to v6", "v6 to v4", "v6 to v6"];
        let mut rewrites = Section::new(XDP_SECTION, &FAMILIES);
        for (label, base) in [
            ("channel -> udp", reason::TX_CHAN_TO_UDP_BASE),
            ("channel -> channel (self)", reason::TX_CHAN_TO_CHAN_BASE),
            ("udp -> channel", reason::TX_UDP_TO_CHAN_BASE),
        ] {
            let runs = (base..base + 4)
                .map(|why| self.xdp.get(reason::name(why)).copied().unwrap_or(0))
                .collect();
            rewrites.row(label, runs);
            if xdp {
                for (why, column) in (base..base + 4).zip(FAMILIES) {
                    grid.requirements.push(Requirement::cell(
                        format!("XDP path {}", reason::name(why)),
                        XDP_SECTION,
                        label,
                        column,
                    ));
                }
            }
        }
        grid.sections.push(rewrites);
        let mut others = Section::new("XDP passes and drops (runs)", &["runs"]);
        for (name, runs) in self.xdp.iter().filter(|(name, _)| !name.starts_with("tx/")) {
            others.row(*name, vec![*runs]);
        }
        grid.sections.push(others);

        const FLOW_SECTION: &str = "flow records";
        let mut flows = Section::new(FLOW_SECTION, &["flows"]);
        flows
            .row("compared", vec![self.flows])
            .row("to DNS resources", vec![self.dns_flows]);
        for reason in CLOSE_REASONS {
            let closed = self.close_reasons.get(&reason).copied().unwrap_or(0);
            flows.row(format!("closed by {}", reason.as_str()), vec![closed]);
            grid.requirements.push(Requirement::cell(
                format!("close reason {}", reason.as_str()),
                FLOW_SECTION,
                &format!("closed by {}", reason.as_str()),
                "flows",
            ));
        }
        grid.sections.push(flows);
        grid.requirements.push(Requirement::cell(
            "flows to DNS resources".to_owned(),
            FLOW_SECTION,
            "to DNS resources",
            "flows",
        ));

        const DROP_SECTION: &str = "drop reasons (packets)";
        let mut drops = Section::new(DROP_SECTION, &["drops"]);
        for reason in DROP_REASONS {
            let count = self.drop_reasons.get(&reason).copied().unwrap_or(0);
            drops.row(reason.name(), vec![count]);
            grid.requirements.push(Requirement::cell(
                format!("drop reason {}", reason.name()),
                DROP_SECTION,
                reason.name(),
                "drops",
            ));
        }
        let (hostile, elsewhere): (Vec<_>, Vec<_>) = GatewayDropReason::ALL
            .iter()
            .filter_map(|reason| Some((reason.as_str(), tested_elsewhere(*reason)?)))
            .partition(|(_, place)| *place == HOSTILE_INPUT_TESTED);
        let elsewhere: Vec<&str> = elsewhere.into_iter().map(|(name, _)| name).collect();
        drops.note = Some(format!(
            "not generated: {}, and {} kinds of malformed, forged or unsolicited input (the \
             gateway's own tests)",
            elsewhere.join(", "),
            hostile.len()
        ));
        grid.sections.push(drops);

        const STRAY_SECTION: &str = "non-TURN datagrams at relays (kind: XDP verdict, then)";
        let mut strays = Section::new(STRAY_SECTION, &["datagrams"]);
        for kind in StrayKind::ALL {
            let mut seen = false;
            for ((_, reason, fate), count) in self.strays.iter().filter(|((k, _, _), _)| *k == kind)
            {
                strays.grouped_row(
                    kind.as_str(),
                    format!("{}: {reason}, {fate}", kind.as_str()),
                    *count,
                );
                seen = true;
            }
            if !seen {
                strays.grouped_row(kind.as_str(), kind.as_str(), 0);
            }
            grid.requirements.push(Requirement::group(
                format!("stray datagram {}", kind.as_str()),
                STRAY_SECTION,
                kind.as_str(),
            ));
        }
        grid.sections.push(strays);

        const ATTACK_SECTION: &str = "attacks on relays and gateways (kind: refused with)";
        let mut attacks = Section::new(ATTACK_SECTION, &["attacks"]);
        for kind in attack_kinds() {
            let mut seen = false;
            for ((_, refusals), count) in self.attacks.iter().filter(|((k, _), _)| *k == kind) {
                attacks.grouped_row(kind, format!("{kind}: {refusals}"), *count);
                seen = true;
            }
            if !seen {
                attacks.grouped_row(kind, kind, 0);
            }
            grid.requirements.push(Requirement::group(
                format!("attack {kind}"),
                ATTACK_SECTION,
                kind,
            ));
        }
        grid.sections.push(attacks);

        self.behaviour.sections(&mut grid);

        const OTHER_SECTION: &str = "other corners";
        let mut other = Section::new(OTHER_SECTION, &["times"]);
        other
            .row(STALE_NONCE, vec![self.stale_nonces])
            .row(SIMULTANEOUS_CLOSE, vec![self.simultaneous_closes]);
        grid.sections.push(other);
        grid.requirements.push(Requirement::cell(
            "a simultaneous TCP close".to_owned(),
            OTHER_SECTION,
            SIMULTANEOUS_CLOSE,
            "times",
        ));
        grid.requirements.push(Requirement::cell(
            "a request with a nonce past its lifetime (438)".to_owned(),
            OTHER_SECTION,
            STALE_NONCE,
            "times",
        ));
        grid
    }
}

const STALE_NONCE: &str = "requests answered 438 Stale Nonce";
const SIMULTANEOUS_CLOSE: &str = "simultaneous TCP closes";

#[cfg(test)]
mod tests {
    use super::*;

    /// Every gateway drop reason is either required of generated runs or named with where it
    /// is tested instead, and every link fault's is required.
    #[test]
    fn every_drop_reason_is_required_or_accounted_for() {
        for reason in GatewayDropReason::ALL {
            let required = DROP_REASONS.contains(&DropReason::Gateway(*reason));
            let elsewhere = tested_elsewhere(*reason).is_some();
            assert!(
                required != elsewhere,
                "{reason:?}: required {required}, elsewhere {elsewhere}"
            );
        }
        for link in [
            DropReason::Partition,
            DropReason::DropNext,
            DropReason::StillHeld,
        ] {
            assert!(DROP_REASONS.contains(&link), "{link}");
        }
    }

    #[test]
    fn every_stray_kind_is_required() {
        let missing = Coverage::default().missing(false);
        for kind in StrayKind::ALL {
            let name = format!("stray datagram {}", kind.as_str());
            assert!(missing.contains(&name), "{name} not required: {missing:?}");
        }
        let mut seen = Coverage::default();
        for kind in StrayKind::ALL {
            seen.strays
                .insert((kind, "-".to_owned(), "x".to_owned()), 1);
        }
        assert!(!seen.missing(false).iter().any(|m| m.starts_with("stray")));
    }

    #[test]
    fn every_attack_kind_is_required() {
        let missing = Coverage::default().missing(false);
        for kind in attack_kinds() {
            let name = format!("attack {kind}");
            assert!(missing.contains(&name), "{name} not required: {missing:?}");
        }
        assert_eq!(
            attack_kinds().count(),
            AttackKind::ALL.len() + GatewayAttackKind::ALL.len()
        );
        let mut seen = Coverage::default();
        for kind in attack_kinds() {
            seen.attacks.insert((kind, "401".to_owned()), 1);
        }
        assert!(!seen.missing(false).iter().any(|m| m.starts_with("attack")));
    }

    #[test]
    fn the_xdp_paths_are_the_twelve_rewrites() {
        let paths = xdp_paths();
        assert_eq!(paths.len(), 12);
        assert!(paths.iter().all(|path| path.starts_with("tx/")));
        assert!(paths.contains(&"tx/chan6-to-chan4"));
    }
}
