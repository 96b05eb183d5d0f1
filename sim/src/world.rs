//! Building the turmoil world from a scenario and driving it step by step.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    rc::Rc,
    time::{Duration, Instant, SystemTime},
};

use observation::{
    AttackOutcome, Delivery, DropPlace, DropReason, FlowRecord, FrameArrival, Hop, PacketDrop,
    StrayArrival,
};
use proto::credentials;
use scenario_format::{
    Scenario, Stack,
    plan::{self, AddressPlan, TUNNEL_PORT},
    settings::RELAY_SECRET,
    timing::{FIRST_STEP_MS, ORIGIN_UNIX_SECS, Timeline},
};
use turn_client::{Families, TurnClientConfig};

use crate::{
    attacker_host, client_host,
    clock::{Timers, run_until},
    commands::{GatewayCommand, Inboxes},
    dns_server,
    error_events::ErrorEvents,
    faults::Links,
    gateway_host, internet_host,
    journal::{Journal, TraceLine},
    relay_host::{self, RelayAtEnd},
    runner::Runner,
    state::{Relayed, Shared},
    xdp::Datapath,
};

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Seeds turmoil and every system under test.
    pub seed: u64,
    /// How relays move data: userspace only, XDP first, or both compared on every datagram.
    pub datapath: Datapath,
}

impl RunOptions {
    /// The default run (differential datapath) with `seed`.
    pub fn seeded(seed: u64) -> Self {
        Self {
            seed,
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Flow records in the order the gateways emitted them.
    pub flows: Vec<FlowRecord>,
    pub trace: Vec<TraceLine>,
    /// Things that must never happen (a control-plane call refused, an unexpected drop).
    pub errors: Vec<String>,
    /// Each host's relayed addresses (by host name) of its first allocation, as its TURN
    /// client reported them (a client that roams allocates again; this keeps the first).
    pub relayed: BTreeMap<String, Vec<SocketAddr>>,
    /// Every datagram every host sent and received, in order.
    pub hops: Vec<Hop>,
    /// Frames that are not UDP (ICMP errors) at relay hosts, in order of arrival.
    pub frames: Vec<FrameArrival>,
    /// Every inner packet that reached a client or a resource responder, in order of arrival.
    pub deliveries: Vec<Delivery>,
    /// Every inner packet a gateway dropped or a link fault took, in the order it happened
    /// (frames still held at the end last, at the end's time).
    pub drops: Vec<PacketDrop>,
    /// Every stray datagram (a `stray` step's) a relay host received, with the XDP verdict and
    /// what became of it, in order of arrival.
    pub strays: Vec<StrayArrival>,
    /// Every attack of an `attack` step, with what the attacker got back.
    pub attacks: Vec<AttackOutcome>,
    /// Runs of the relays' XDP program per reason (empty when relays ran userspace only).
    pub xdp_reasons: BTreeMap<&'static str, u64>,
    /// Datagrams that reached a relay on one of its timers' deadlines, or a TURN client on one
    /// of its transactions' deadlines, per timer ([`TURN_TIMERS`](crate::TURN_TIMERS)):
    /// `[1 ms before, on it, 1 ms after]`.
    pub turn_timer_boundaries: BTreeMap<&'static str, [u64; 3]>,
    /// The datapath the relays really ran: userspace only if the XDP program could not load
    /// where BPF is not required (said loudly on stderr).
    pub datapath: Datapath,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SimError {
    #[error("the simulator does not run this yet: {0}")]
    Unsupported(String),
    #[error("the simulation failed: {0}")]
    Turmoil(String),
    #[error("the XDP program cannot run beside the relays: {0}")]
    Xdp(String),
}

/// Runs a scenario to its end and returns what happened.
pub fn run(scenario: &Scenario, options: &RunOptions) -> Result<Outcome, SimError> {
    use tracing_subscriber::{Layer as _, filter::LevelFilter, layer::SubscriberExt as _};
    let collector = ErrorEvents::default();
    let subscriber =
        tracing_subscriber::registry().with(collector.clone().with_filter(LevelFilter::ERROR));
    let mut outcome =
        tracing::subscriber::with_default(subscriber, || run_world(scenario, options))?;
    if let Ok(events) = collector.0.lock() {
        outcome.errors.extend(events.iter().cloned());
    }
    Ok(outcome)
}

fn run_world(scenario: &Scenario, options: &RunOptions) -> Result<Outcome, SimError> {
    let plan = AddressPlan::new(scenario);
    let timeline = Timeline::of(scenario);
    let mut sim = new_sim(scenario, options.seed, timeline.t_end);
    let world = World {
        scenario,
        plan: &plan,
        shared: new_shared(scenario, &plan, &timeline),
        inboxes: Inboxes::new(
            scenario.topology.gateways.len(),
            scenario.topology.clients.len(),
        ),
        seed: options.seed,
    };
    dns_server::add_dns_server(&mut sim, &world.shared);
    // Only runs with stray steps have the internet host: it would only wake every tick.
    if scenario
        .steps
        .iter()
        .any(|step| matches!(step, scenario_format::Step::Stray { .. }))
    {
        internet_host::add_internet_host(&mut sim, &world.shared, &world.inboxes.internet);
    }
    // Likewise the attacker host, only with attack steps.
    if scenario.steps.iter().any(|step| {
        matches!(
            step,
            scenario_format::Step::Attack { .. } | scenario_format::Step::GatewayAttack { .. }
        )
    }) {
        attacker_host::add_attacker_host(
            &mut sim,
            &world.shared,
            &world.inboxes.attacker,
            scenario.topology.latency.default_ms,
            scenario
                .topology
                .latency
                .links
                .iter()
                .map(|link| link.ms)
                .fold(scenario.topology.latency.default_ms, u32::max),
        );
    }
    let relays = world.add_relays(&mut sim, options.datapath)?;
    world.add_gateways(&mut sim);
    world.add_clients(&mut sim);
    for link in &scenario.topology.latency.links {
        for (a, b) in link_pairs(scenario, &plan, &link.between) {
            sim.set_link_latency(a, b, Duration::from_millis(u64::from(link.ms)));
        }
    }
    world.play_steps(&mut sim, &timeline)?;
    Ok(take_outcome(&world.shared, timeline.t_end, relays))
}

/// What the hosts of one run are built from and share.
pub(crate) struct World<'a> {
    pub(crate) scenario: &'a Scenario,
    pub(crate) plan: &'a AddressPlan,
    pub(crate) shared: Rc<RefCell<Shared>>,
    pub(crate) inboxes: Inboxes,
    /// The run's seed: turmoil's, and (offset per host) every system under test's.
    pub(crate) seed: u64,
}

/// A turmoil simulation on the 1 ms grid, its clock at the scenario's origin, with the
/// topology's default latency and time enough for every gateway to shut down after `end_ms`.
fn new_sim(scenario: &Scenario, seed: u64, end_ms: u64) -> turmoil::Sim<'static> {
    let default_latency = Duration::from_millis(u64::from(scenario.topology.latency.default_ms));
    turmoil::Builder::new()
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(default_latency)
        .max_message_latency(default_latency)
        .simulation_duration(Duration::from_millis(end_ms + 10_000))
        .epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(ORIGIN_UNIX_SECS))
        .udp_capacity(4096)
        .rng_seed(seed)
        .build()
}

fn new_shared(scenario: &Scenario, plan: &AddressPlan, timeline: &Timeline) -> Rc<RefCell<Shared>> {
    Rc::new(RefCell::new(Shared {
        origin: Instant::now(),
        journal: Journal {
            timeline: timeline.clone(),
            ..Journal::default()
        },
        links: Links {
            hosts_by_ip: hosts_by_ip(scenario, plan),
            faults: BTreeMap::new(),
        },
        timers: Timers::default(),
        relayed: Relayed::default(),
        gateway_verdicts: Vec::new(),
        spoof_orders: Vec::new(),
        spoof_waker: Rc::default(),
        attackers_racing: Default::default(),
        transaction_deadlines: BTreeMap::new(),
        query_to_race: false,
        spoofed: Vec::new(),
        dns_records: scenario
            .topology
            .dns_records
            .iter()
            .map(|record| {
                (
                    record.name.to_ascii_lowercase(),
                    (record.addresses.clone(), record.ttl_s),
                )
            })
            .collect(),
    }))
}

/// The relays' hosts, with what their XDP programs counted and the datapath they really ran.
struct Relays {
    at_end: Vec<RelayAtEnd>,
    datapath: Datapath,
}

impl World<'_> {
    fn add_relays(
        &self,
        sim: &mut turmoil::Sim<'_>,
        datapath: Datapath,
    ) -> Result<Relays, SimError> {
        let mut relays = Relays {
            at_end: Vec::new(),
            datapath,
        };
        for (index, relay) in self.scenario.topology.relays.iter().enumerate() {
            let seed = self.seed.wrapping_add(index as u64 + 1);
            let (xdp, ran) = relay_host::add_relay(
                sim,
                &self.shared,
                (index as u32, relay.name.clone()),
                &self.plan.relays[index],
                seed,
                datapath,
                &self.inboxes.relay_frames,
            )?;
            relays.at_end.push(xdp);
            if ran == Datapath::Userspace {
                relays.datapath = Datapath::Userspace;
            }
        }
        Ok(relays)
    }

    fn add_gateways(&self, sim: &mut turmoil::Sim<'_>) {
        let plan = self.plan;
        for (index, gateway) in self.scenario.topology.gateways.iter().enumerate() {
            let turn = self.turn_config(
                gateway.relay.as_deref(),
                &gateway.name,
                plan.gateways[index].preferred(),
                1000 + index as u64,
            );
            gateway_host::add_gateway(sim, self, index, turn);
        }
    }

    fn add_clients(&self, sim: &mut turmoil::Sim<'_>) {
        let (topology, plan) = (&self.scenario.topology, self.plan);
        for (index, client) in topology.clients.iter().enumerate() {
            let turn = self.turn_config(
                client.relay.as_deref(),
                &client.name,
                plan.clients[index].preferred(),
                2000 + index as u64,
            );
            client_host::add_client(sim, self, index, turn);
        }
    }

    /// The TURN client of a host that names a relay: credentials valid for a day, the relayed
    /// families the relay offers, and a seed of the host's own (the run's seed plus
    /// `seed_offset`).
    fn turn_config(
        &self,
        relay: Option<&str>,
        name: &str,
        host: IpAddr,
        seed_offset: u64,
    ) -> Option<TurnClientConfig> {
        let relays = &self.scenario.topology.relays;
        let index = relays.iter().position(|r| Some(r.name.as_str()) == relay)?;
        let families = match relays[index].stack {
            Stack::V4 => Families::V4,
            Stack::V6 => Families::V6,
            Stack::Dual => Families::Dual,
        };
        Some(TurnClientConfig {
            // The relay's address in the host's family (the model refuses a pair with none).
            server: SocketAddr::new(
                self.plan.relays[index]
                    .matching(host)
                    .unwrap_or(self.plan.relays[index].preferred()),
                relay::TURN_PORT,
            ),
            credentials: credentials::rest_api_credentials(
                RELAY_SECRET,
                ORIGIN_UNIX_SECS + 86_400,
                name,
            ),
            families,
            lifetime: None,
            seed: self.seed.wrapping_add(seed_offset),
        })
    }

    /// Runs the setup, then every step from its start to the next one's, then shuts every
    /// gateway down at the end and lets the last records out.
    fn play_steps(&self, sim: &mut turmoil::Sim<'_>, timeline: &Timeline) -> Result<(), SimError> {
        let (shared, inboxes) = (&self.shared, &self.inboxes);
        let mut runner = Runner::new(self.scenario, self.plan, shared, inboxes);
        run_until(sim, shared, inboxes, FIRST_STEP_MS)?;
        for (index, step) in self.scenario.steps.iter().enumerate() {
            runner.apply(sim, index, step);
            run_until(sim, shared, inboxes, timeline.next_start(index))?;
        }
        for inbox in &inboxes.gateways {
            inbox.push(GatewayCommand::Shutdown);
        }
        run_until(sim, shared, inboxes, timeline.t_end + 2)
    }
}

/// What the run recorded, with the frames still held at the end (they never arrive) as drops
/// at `end_ms`.
fn take_outcome(shared: &Rc<RefCell<Shared>>, end_ms: u64, relays: Relays) -> Outcome {
    let mut shared = shared.borrow_mut();
    let shared = &mut *shared;
    for (between, faults) in &mut shared.links.faults {
        for packet in std::mem::take(&mut faults.held) {
            let place = DropPlace::Link {
                between: between.clone(),
            };
            shared
                .journal
                .dropped(end_ms, place, DropReason::StillHeld, packet);
        }
    }
    let mut xdp_reasons = BTreeMap::new();
    for relay in &relays.at_end {
        let (reasons, problems) = relay.finish();
        for (why, runs) in reasons {
            *xdp_reasons.entry(relay_xdp::reason::name(why)).or_default() += runs;
        }
        shared.journal.errors.extend(problems);
    }
    let journal = std::mem::take(&mut shared.journal);
    Outcome {
        flows: journal.flows,
        trace: journal.trace,
        errors: journal.errors,
        relayed: std::mem::take(&mut shared.relayed.first),
        hops: journal.hops,
        frames: journal.frames,
        deliveries: journal.deliveries,
        drops: journal.drops,
        turn_timer_boundaries: journal.turn_timer_boundaries,
        strays: journal.strays,
        attacks: journal.attacks,
        xdp_reasons,
        datapath: relays.datapath,
    }
}

/// The scenario's host name of every address of every host (the DNS server is `dns`, the
/// internet host `internet`, the attacker `attacker`).
pub fn hosts_by_ip(scenario: &Scenario, plan: &AddressPlan) -> BTreeMap<IpAddr, String> {
    let topology = &scenario.topology;
    let named = topology
        .clients
        .iter()
        .map(|c| &c.name)
        .zip(&plan.clients)
        .chain(
            topology
                .gateways
                .iter()
                .map(|g| &g.name)
                .zip(&plan.gateways),
        )
        .chain(topology.relays.iter().map(|r| &r.name).zip(&plan.relays));
    let mut hosts = BTreeMap::new();
    for (name, addresses) in named {
        for ip in [addresses.v4.map(IpAddr::V4), addresses.v6.map(IpAddr::V6)]
            .into_iter()
            .flatten()
        {
            hosts.insert(ip, name.clone());
        }
    }
    hosts.insert(IpAddr::V4(plan::DNS_SERVER_V4), "dns".to_owned());
    hosts.insert(IpAddr::V6(plan::DNS_SERVER_V6), "dns".to_owned());
    for ip in [IpAddr::V4(plan::ATTACKER_V4), IpAddr::V6(plan::ATTACKER_V6)] {
        hosts.insert(ip, attacker_host::NAME.to_owned());
    }
    for ip in [IpAddr::V4(plan::INTERNET_V4), IpAddr::V6(plan::INTERNET_V6)] {
        hosts.insert(ip, internet_host::NAME.to_owned());
    }
    hosts
}

/// The turmoil hosts of a host named in the scenario: its preferred address, or for a relay
/// every address it has (one turmoil host per family).
fn host_ips(scenario: &Scenario, plan: &AddressPlan, name: &str) -> Vec<IpAddr> {
    let topology = &scenario.topology;
    if let Some(i) = topology.clients.iter().position(|c| c.name == name) {
        return vec![plan.clients[i].preferred()];
    }
    if let Some(i) = topology.gateways.iter().position(|g| g.name == name) {
        return vec![plan.gateways[i].preferred()];
    }
    if let Some(i) = topology.relays.iter().position(|r| r.name == name) {
        let relay = &plan.relays[i];
        return [relay.v4.map(IpAddr::V4), relay.v6.map(IpAddr::V6)]
            .into_iter()
            .flatten()
            .collect();
    }
    Vec::new()
}

/// The turmoil links between two named hosts: every pair of their addresses in one family.
pub(crate) fn link_pairs(
    scenario: &Scenario,
    plan: &AddressPlan,
    between: &[String; 2],
) -> Vec<(IpAddr, IpAddr)> {
    let ends = host_ips(scenario, plan, &between[1]);
    host_ips(scenario, plan, &between[0])
        .into_iter()
        .flat_map(|a| ends.iter().map(move |b| (a, *b)))
        .filter(|(a, b)| a.is_ipv4() == b.is_ipv4())
        .collect()
}

pub(crate) fn gateway_socket(plan: &AddressPlan, gateway: usize) -> SocketAddr {
    SocketAddr::new(plan.gateways[gateway].preferred(), TUNNEL_PORT)
}
