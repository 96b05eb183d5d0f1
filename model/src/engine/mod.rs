//! The model's own discrete-event run of a scenario: an abstract network (links with latencies
//! and faults, relays that forward at once, the TUN link, the DNS server), scripted clients and
//! resource responders, and the gateway's flow rules. Events at one millisecond run in a fixed
//! order: the step's action first, then datagrams in the order they were scheduled. Wherever
//! that order could change the outcome (and the contract does not fix it), the run stops with
//! [`Unpredictable`].
//!
//! This module holds the engine's state, its event queue and the dispatch of steps and events;
//! the concerns live in the submodules:
//!
//! - [`network`]: links, latencies, faults and the paths (direct or through relays) that tunnel
//!   frames travel between a client and a gateway;
//! - [`gateway`]: the gateway's flows, the drops it decides, grants, revocations and restarts;
//! - [`dns`]: the gateway's DNS NAT (proxy IP mappings, queries, answers, the packets queued
//!   for them), the clients' stub resolver and the DNS server;
//! - [`endpoints`]: the scripted clients and resource responders and their TCP conversations;
//! - [`strays`]: datagrams that are not TURN at relays, and what the relay host does with them.

mod attacks;
pub mod coverage;
mod dns;
mod endpoints;
mod gateway;
mod network;
mod strays;

use std::collections::BTreeMap;
use std::net::IpAddr;

use scenario_format::plan::AddressPlan;
use scenario_format::settings::{DEFAULT_IDLE_TIMEOUT_S, FLOOD_DATAGRAM_BYTES};
use scenario_format::timing::Timeline;
use scenario_format::{Scenario, Side, Step};

use crate::rules::{self, Rules};
use crate::{Allocations, FlowRecord, KnownPart, Packet, Prediction, Unpredictable};

use dns::Records;
use endpoints::{ClientState, Conn};
use gateway::GatewayState;
use network::{Frame, Link, LinkState};

type Result<T> = std::result::Result<T, Unpredictable>;

/// An inner packet in flight, with the scripted TCP connection it belongs to (if any) and the
/// step whose traffic it is.
#[derive(Debug, Clone, Copy)]
struct Traffic {
    packet: Packet,
    conn: Option<u32>,
    step: usize,
}

#[derive(Debug)]
enum Event {
    Step(usize),
    /// A frame arrives at the far end of `hops[index]`.
    Hop {
        frame: Frame,
        index: usize,
    },
    /// A packet the gateway forwarded reaches the resource responder.
    AtResource {
        gateway: usize,
        traffic: Traffic,
    },
    /// A packet from the resource responder reaches the gateway's TUN side.
    FromResource {
        gateway: usize,
        traffic: Traffic,
    },
    DnsAtServer {
        gateway: usize,
        epoch: u32,
        mapping: usize,
    },
    DnsAnswer {
        gateway: usize,
        epoch: u32,
        mapping: usize,
        answer: Option<(IpAddr, u64)>,
    },
    DnsExpiry {
        gateway: usize,
        epoch: u32,
        mapping: usize,
        generation: u64,
    },
}

struct Engine<'a> {
    scenario: &'a Scenario,
    plan: AddressPlan,
    allocations: &'a Allocations,
    timeline: Timeline,
    idle_ms: u64,
    dns_ms: u64,
    rules: Rules,
    /// The DNS server's records: lowercase name -> (addresses, ttl seconds).
    records: Records,
    events: BTreeMap<(u64, u8, u64), Event>,
    sequence: u64,
    clients: Vec<ClientState>,
    gateways: Vec<GatewayState>,
    links: BTreeMap<Link, LinkState>,
    conns: BTreeMap<u32, Conn>,
    step: Option<usize>,
    out: Prediction,
    coverage: coverage::ModelCoverage,
}

/// The prediction, or why the model lost track and, when that was at a step, what happened
/// before it (`KnownPart`).
pub(crate) fn run(
    scenario: &Scenario,
    allocations: &Allocations,
) -> std::result::Result<Prediction, (Unpredictable, Option<Box<KnownPart>>)> {
    let mut engine = Engine::new(scenario, allocations).map_err(|setup| (setup, None))?;
    for k in 0..scenario.steps.len() {
        let at = engine.timeline.step_start[k];
        engine.schedule_class(at, 0, Event::Step(k));
    }
    if let Err(unpredictable) = engine.run_events().and_then(|()| engine.finish()) {
        let known = unpredictable
            .step
            .map(|step| Box::new(engine.known_before(step)));
        return Err((unpredictable, known));
    }
    engine.out.coverage = engine.coverage;
    Ok(engine.out)
}

impl<'a> Engine<'a> {
    /// The engine before step 0, or why the setup is not modelled.
    fn new(scenario: &'a Scenario, allocations: &'a Allocations) -> Result<Self> {
        let topology = &scenario.topology;
        let setup = |reason: String| Unpredictable { step: None, reason };
        if allocations.clients.len() != topology.clients.len()
            || allocations.gateways.len() != topology.gateways.len()
        {
            return Err(setup(
                "the allocations do not list every client and gateway".into(),
            ));
        }
        let idle_s = topology.idle_timeout_s.unwrap_or(DEFAULT_IDLE_TIMEOUT_S);
        if idle_s == 0 {
            return Err(setup("an idle timeout of 0 s is not modelled".into()));
        }
        let rules = Rules::new(topology).map_err(setup)?;
        Ok(Engine {
            scenario,
            plan: AddressPlan::new(scenario),
            allocations,
            timeline: Timeline::of(scenario),
            idle_ms: idle_s * 1000,
            dns_ms: u64::from(topology.latency.default_ms),
            rules,
            records: dns::server_records(topology),
            events: BTreeMap::new(),
            sequence: 0,
            clients: topology
                .clients
                .iter()
                .map(|_| ClientState::new(topology.gateways.len()))
                .collect(),
            gateways: topology
                .gateways
                .iter()
                .map(|_| GatewayState::default())
                .collect(),
            links: BTreeMap::new(),
            conns: BTreeMap::new(),
            step: None,
            out: Prediction {
                flows: Vec::new(),
                deliveries: Vec::new(),
                drops: Vec::new(),
                coverage: coverage::ModelCoverage::default(),
                strays: Vec::new(),
                attacks: Vec::new(),
            },
            coverage: coverage::ModelCoverage::default(),
        })
    }
}

impl Engine<'_> {
    fn fail<T>(&self, reason: impl Into<String>) -> Result<T> {
        Err(Unpredictable {
            step: self.step,
            reason: reason.into(),
        })
    }

    fn schedule_class(&mut self, at: u64, class: u8, event: Event) {
        self.sequence += 1;
        self.events.insert((at, class, self.sequence), event);
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.schedule_class(at, 1, event);
    }

    fn run_events(&mut self) -> Result<()> {
        while let Some(entry) = self.events.first_entry() {
            let (at, _, _) = *entry.key();
            if at >= self.timeline.t_end {
                break;
            }
            let event = entry.remove();
            self.handle(at, event)?;
        }
        Ok(())
    }

    /// A datagram of step `step` must be handled before the next step starts
    /// (docs/harness.md: "all its replies arrive long before t_{k+1}").
    fn within_step(&self, step: usize, at: u64) -> Result<()> {
        if at >= self.timeline.next_start(step) {
            return Err(Unpredictable {
                step: Some(step),
                reason: format!(
                    "traffic of this step is still in flight at {at} ms, when the next step \
                     starts: latencies too large for the step grid"
                ),
            });
        }
        Ok(())
    }

    fn handle(&mut self, at: u64, event: Event) -> Result<()> {
        match event {
            Event::Step(k) => {
                self.step = Some(k);
                self.do_step(k, at)
            }
            Event::Hop { frame, index } => {
                self.within_step(frame.traffic.step, at)?;
                self.hop_arrived(frame, index, at)
            }
            Event::AtResource { gateway, traffic } => {
                self.within_step(traffic.step, at)?;
                self.resource_receive(gateway, traffic, at)
            }
            Event::FromResource { gateway, traffic } => {
                self.within_step(traffic.step, at)?;
                self.gateway_from_resource(gateway, traffic, at)
            }
            Event::DnsAtServer {
                gateway,
                epoch,
                mapping,
            } => self.dns_at_server(gateway, epoch, mapping, at),
            Event::DnsAnswer {
                gateway,
                epoch,
                mapping,
                answer,
            } => self.dns_answer(gateway, epoch, mapping, answer, at),
            Event::DnsExpiry {
                gateway,
                epoch,
                mapping,
                generation,
            } => {
                self.dns_expiry(gateway, epoch, mapping, generation, at);
                Ok(())
            }
        }
    }

    // ---------------------------------------------------------------- steps

    fn client_index(&self, name: &str) -> Result<usize> {
        rules::client_index(&self.scenario.topology, name).or_else(|e| self.fail(e))
    }

    fn resource_index(&self, name: &str) -> Result<usize> {
        rules::resource_index(&self.scenario.topology, name).or_else(|e| self.fail(e))
    }

    fn gateway_index(&self, name: &str) -> Result<usize> {
        match self
            .scenario
            .topology
            .gateways
            .iter()
            .position(|g| g.name == name)
        {
            Some(g) => Ok(g),
            None => self.fail(format!("no gateway {name}")),
        }
    }

    /// Runs step `k`, which starts at `t`, handing it to the part of the model it concerns.
    fn do_step(&mut self, k: usize, t: u64) -> Result<()> {
        let step = self.scenario.steps[k].clone();
        match step {
            Step::Udp { target, bytes } => self.send_udp(&target, bytes, k, t),
            Step::ForgedSource { target } => {
                let src = (
                    Some(scenario_format::plan::forged_tunnel_ip(target.ipv6)),
                    AddressPlan::udp_source_port(target.port),
                );
                self.send_udp_from(&target, src, FLOOD_DATAGRAM_BYTES, k, t)
            }
            Step::UdpFlood { target, flows } => {
                for flow in 0..flows {
                    let src_port = AddressPlan::flood_source_port(flow);
                    self.send_udp_from(&target, (None, src_port), FLOOD_DATAGRAM_BYTES, k, t)?;
                }
                Ok(())
            }
            Step::TcpOpen {
                conn,
                target,
                src_port,
            } => self.tcp_open(conn, &target, src_port, k, t),
            Step::TcpRetransmitSyn { conn } => self.client_syn(conn, k, t),
            Step::TcpData { conn, from, bytes } => self.tcp_data(conn, from, bytes, k, t),
            Step::TcpClose { conn, by } => self.tcp_close(conn, by, k, t),
            Step::TcpHalfClose { conn, by } => self.tcp_half_close(conn, by, k, t),
            Step::TcpSimultaneousClose { conn } => {
                self.tcp_close(conn, Side::Client, k, t)?;
                self.tcp_close(conn, Side::Resource, k, t)
            }
            Step::TcpReset { conn, by } => self.tcp_reset(conn, by, k, t),
            Step::TcpLateAck { conn } => self.tcp_late_ack(conn, k, t),
            Step::DnsQuery { client, name } => {
                let c = self.client_index(&client)?;
                self.stub_query(c, &name, t);
                Ok(())
            }
            Step::Path {
                client,
                gateway,
                mode,
            } => self.set_path(&client, &gateway, mode),
            Step::Roam { client, back } => self.roam(&client, back),
            Step::Grant(grant) => self.grant(&grant),
            Step::Revoke { client, resource } => self.revoke(&client, &resource, t),
            Step::DnsChange { name, addresses } => {
                self.change_record(&name, addresses);
                Ok(())
            }
            Step::Fault { between, fault } => {
                self.apply_fault(&between, fault, k, t);
                Ok(())
            }
            Step::GatewayRestart { gateway } => self.restart_gateway(&gateway, t),
            Step::Stray {
                relay,
                kind,
                ipv6,
                allocation,
            } => self.stray(&relay, kind, ipv6, allocation.as_deref(), (k, t)),
            Step::Attack { relay, kind, .. } => self.attack(&relay, kind, k),
            Step::GatewayAttack {
                gateway,
                client,
                kind,
            } => self.gateway_attack(&gateway, &client, kind, k),
            Step::Idle { .. } => {
                self.taint_faulted_relay_links();
                Ok(())
            }
        }
    }

    // ---------------------------------------------------------------- the end

    /// What happened before step `k`: its deliveries, drops and strays, and the records the
    /// gateways wrote before `t_k` (idle deadlines before `t_k` run first: the model runs them
    /// lazily, a gateway on its timer).
    fn known_before(&mut self, k: usize) -> KnownPart {
        let before_ms = self.timeline.step_start[k];
        for g in 0..self.gateways.len() {
            self.expire(g, before_ms.saturating_sub(1));
        }
        let idle_ms = self.idle_ms;
        let mut prediction = std::mem::take(&mut self.out);
        prediction.deliveries.retain(|d| d.step < k);
        prediction.drops.retain(|d| d.step < k);
        prediction.strays.retain(|s| s.step < k);
        prediction.attacks.retain(|a| a.step < k);
        prediction
            .flows
            .retain(|record| written_at(record, idle_ms) < before_ms);
        KnownPart {
            before_step: k,
            before_ms,
            prediction,
        }
    }

    fn finish(&mut self) -> Result<()> {
        let t_end = self.timeline.t_end;
        self.step = self.scenario.steps.len().checked_sub(1);
        self.note_pending_timers();
        for g in 0..self.gateways.len() {
            self.shutdown(g, t_end);
        }
        self.ensure_nothing_in_flight()?;
        self.drop_still_held(t_end);
        self.ensure_drop_next_unambiguous()
    }

    /// Every datagram must have arrived by the end of the run.
    fn ensure_nothing_in_flight(&self) -> Result<()> {
        let in_flight = self.events.values().find_map(|event| match event {
            Event::Hop { frame, .. } => Some(frame.traffic.step),
            Event::AtResource { traffic, .. } | Event::FromResource { traffic, .. } => {
                Some(traffic.step)
            }
            _ => None,
        });
        if let Some(step) = in_flight {
            return Err(Unpredictable {
                step: Some(step),
                reason: "traffic still in flight when the run ends".into(),
            });
        }
        Ok(())
    }
}

/// When a gateway writes a record, in ms since the origin: at its end, or for an idle timeout
/// (whose end is the last packet) when the timeout runs out.
pub(crate) fn written_at(record: &FlowRecord, idle_ms: u64) -> u64 {
    let end = crate::ms_of(record.end);
    match record.close_reason {
        proto::flow::CloseReason::Idle => end + idle_ms,
        _ => end,
    }
}
