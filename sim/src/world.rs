//! Building the turmoil world from a scenario and driving it step by step.

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet, VecDeque},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    rc::Rc,
    time::{Duration, Instant, SystemTime},
};

use peer::{Families, TurnClientConfig};
use proto::{credentials, flow::FlowRecord, tunnel::SessionKey};
use scenario::{
    Fault, PathMode, ResourceAddress, Scenario, Side, Stack, Step, Target,
    plan::{self, AddressPlan, TUNNEL_PORT},
};

use crate::{
    client_host, dns_server,
    error_events::ErrorEvents,
    gateway_host,
    observed::{self, DropCause, ObservedDelivery, ObservedDrop, ObservedPlace},
    relay_host,
    wire::{self, Hop},
    xdp::Datapath,
};

/// Sim time 0, as docs/harness.md fixes it: 2026-01-01T00:00:00Z.
pub const ORIGIN_UNIX_SECS: u64 = 1_767_225_600;
/// Steps start after 2 s of setup.
pub const SETUP_MS: u64 = 2000;
/// Every step but `idle` lasts 1 s.
pub const STEP_MS: u64 = 1000;
/// The gateway's TUN link to the resource responder.
pub(crate) const TUN_LATENCY_MS: u64 = 1;
/// The TURN REST API secret and realm every relay of the simulation uses.
pub(crate) const RELAY_SECRET: &[u8] = b"vpnsim relay secret";
pub(crate) const RELAY_REALM: &str = "vpnsim";

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

/// One line of the trace: what a host did at which millisecond.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceLine {
    pub at_ms: u64,
    pub host: String,
    pub event: String,
}

impl std::fmt::Display for TraceLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>9}.{:03}s {:<10} {}",
            self.at_ms / 1000,
            self.at_ms % 1000,
            self.host,
            self.event
        )
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
    /// Every inner packet that reached a client or a resource responder, in order of arrival.
    pub deliveries: Vec<ObservedDelivery>,
    /// Every inner packet a gateway dropped or a link fault took, in the order it happened
    /// (frames still held at the end last, at the end's time).
    pub drops: Vec<ObservedDrop>,
    /// Runs of the relays' XDP program per reason (empty when relays ran userspace only).
    pub xdp_reasons: BTreeMap<&'static str, u64>,
    /// The datapath the relays really ran: userspace only if the XDP program could not load
    /// where BPF is not required (said loudly on stderr).
    pub datapath: Datapath,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("the simulator does not run this yet: {0}")]
    Unsupported(String),
    #[error("the simulation failed: {0}")]
    Turmoil(String),
    #[error("the XDP program cannot run beside the relays: {0}")]
    Xdp(String),
}

#[derive(Debug, Clone)]
pub(crate) enum GatewayCommand {
    Grant {
        client: usize,
        resource: usize,
        filters: Vec<String>,
    },
    Revoke {
        client: usize,
        resource: usize,
    },
    MapDns {
        client: usize,
        proxy_ip: IpAddr,
        domain: String,
    },
    /// The resource side of a TCP connection acts (`client` is the client's inner address).
    Resource {
        client: SocketAddr,
        action: ResourceAction,
    },
    /// Reach `remote` (a client's address as the relay sees it) through the gateway's own
    /// relay, or directly.
    Path {
        remote: SocketAddr,
        via_relay: bool,
    },
    Restart,
    Shutdown,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum ResourceAction {
    Data(u16),
    Close,
    Reset,
}

#[derive(Debug, Clone)]
pub(crate) enum ClientCommand {
    Udp {
        gateway: usize,
        src: SocketAddr,
        dst: SocketAddr,
        payload: Vec<u8>,
    },
    TcpOpen {
        gateway: usize,
        src: SocketAddr,
        dst: SocketAddr,
    },
    Tcp {
        src: SocketAddr,
        action: ClientTcpAction,
    },
    /// Send frames for `gateway` to `target`, through the client's own relay or directly.
    Path {
        gateway: usize,
        target: SocketAddr,
        via_relay: bool,
    },
    Roam,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum ClientTcpAction {
    RetransmitSyn,
    Data(u16),
    Close,
    Reset,
    LateAck,
}

/// State every host and the runner share. turmoil runs all hosts on one thread, so an
/// `Rc<RefCell<_>>` is enough, and borrows never overlap an await.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) origin: Instant,
    trace: Vec<TraceLine>,
    pub(crate) flows: Vec<FlowRecord>,
    pub(crate) errors: Vec<String>,
    pub(crate) hops: Vec<Hop>,
    pub(crate) deliveries: Vec<ObservedDelivery>,
    pub(crate) drops: Vec<ObservedDrop>,
    pub(crate) gateway_commands: Vec<VecDeque<GatewayCommand>>,
    pub(crate) client_commands: Vec<VecDeque<ClientCommand>>,
    /// Each host's relayed addresses of its first allocation (for the outcome).
    pub(crate) relayed: BTreeMap<String, Vec<SocketAddr>>,
    /// Each host's relayed addresses, as its TURN client last reported them (a roamed client's
    /// new allocation): where the runner points paths.
    pub(crate) current_relayed: BTreeMap<String, Vec<SocketAddr>>,
    /// The scenario's host name of every address a host has (relays: both families).
    pub(crate) hosts_by_ip: BTreeMap<IpAddr, String>,
    /// Faults on links between named hosts (names sorted).
    pub(crate) faults: BTreeMap<[String; 2], LinkFaults>,
    pub(crate) dns_records: BTreeMap<String, (Vec<IpAddr>, u32)>,
    /// Each host's earliest timer, in ms since the start, as it published it at the end of its
    /// last turn (absent: none).
    deadlines: BTreeMap<String, u64>,
    /// While the runner crosses a quiet stretch in one long step, the instant it ends; hosts
    /// sleep until then instead of waking every millisecond.
    quiet_until_ms: u64,
}

/// The faults on one link between two named hosts (docs/harness.md, "Faults").
#[derive(Debug, Default)]
pub(crate) struct LinkFaults {
    partitioned: bool,
    holding: bool,
    /// Tunnel frames the `drop-next` faults still take.
    drop_next: u32,
    /// Tunnel frames sent while the link holds (turmoil keeps them until a release): when they
    /// were sent and what they carry.
    held: Vec<(u64, observed::PacketSummary)>,
}

impl LinkFaults {
    fn active(&self) -> bool {
        self.partitioned || self.holding || self.drop_next > 0
    }
}

/// The key of the link between two named hosts: the names, sorted.
pub(crate) fn link_key(a: &str, b: &str) -> [String; 2] {
    let (a, b) = if a <= b { (a, b) } else { (b, a) };
    [a.to_owned(), b.to_owned()]
}

impl Shared {
    /// Whether the faults on the link from `host` to the host at `dst` take a datagram `host`
    /// sends now (it is then not sent). Faults act on each hop when the datagram is sent on
    /// it: a partition takes every datagram; a held link keeps it (turmoil holds it; a tunnel
    /// frame is remembered until `release`); a `drop-next` fault takes the next tunnel frames
    /// only (TURN control traffic passes). Taken tunnel frames are recorded as drops.
    pub(crate) fn link_takes(&mut self, host: &str, dst: IpAddr, payload: &[u8]) -> bool {
        let Some(peer) = self.hosts_by_ip.get(&dst) else {
            return false;
        };
        let between = link_key(host, peer);
        let Some(faults) = self.faults.get_mut(&between) else {
            return false;
        };
        if !faults.active() {
            return false;
        }
        let at_ms = now_ms();
        let packet = observed::tunnel_packet_in(payload);
        let cause = if faults.partitioned {
            DropCause::Partition
        } else if faults.holding {
            if let Some(packet) = packet {
                faults.held.push((at_ms, packet));
            }
            return false;
        } else if packet.is_some() && faults.drop_next > 0 {
            faults.drop_next -= 1;
            DropCause::DropNext
        } else {
            return false;
        };
        let what = match packet {
            Some(packet) => {
                self.drops.push(ObservedDrop {
                    at_ms,
                    place: ObservedPlace::Link {
                        between: between.clone(),
                    },
                    cause,
                    packet,
                });
                format!("frame with {packet}")
            }
            None => format!("{} bytes", payload.len()),
        };
        self.trace_at(
            at_ms,
            host,
            format!(
                "lost on the link {}-{} ({cause:?}): {what}",
                between[0], between[1]
            ),
        );
        true
    }

    /// Records what a host did now (inside the simulation).
    pub(crate) fn trace(&mut self, host: &str, event: String) {
        self.trace_at(now_ms(), host, event);
    }

    /// Publishes (or withdraws) a timer the runner must not step over, besides the hosts'
    /// own: e.g. datagrams crossing between a relay's two sides.
    pub(crate) fn set_deadline(&mut self, key: &str, at: Option<u64>) {
        match at {
            Some(at) => self.deadlines.insert(key.to_owned(), at),
            None => self.deadlines.remove(key),
        };
    }

    fn trace_at(&mut self, at_ms: u64, host: &str, event: String) {
        self.trace.push(TraceLine {
            at_ms,
            host: host.to_owned(),
            event,
        });
    }
}

pub(crate) fn now_ms() -> u64 {
    turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64
}

pub(crate) fn now_instant(origin: Instant) -> Instant {
    origin + Duration::from_millis(now_ms())
}

/// A deadline of a system under test in ms since the start, rounded up to the tick that will
/// see it due.
pub(crate) fn deadline_ms(origin: Instant, deadline: Instant) -> u64 {
    let since = deadline.saturating_duration_since(origin);
    let whole = since.as_millis() as u64;
    if since > Duration::from_millis(whole) {
        whole + 1
    } else {
        whole
    }
}

/// Ends a host's turn: publishes its earliest timer for the runner, then sleeps until the next
/// tick, or to the end of the quiet stretch the runner is crossing.
pub(crate) async fn end_turn(shared: &Rc<RefCell<Shared>>, name: &str, deadline: Option<u64>) {
    let now = now_ms();
    let quiet_until = {
        let mut shared = shared.borrow_mut();
        // The invariant "every poll_timeout is in the future": after a turn that handled what
        // was due, a deadline at or before now would make the host spin.
        if let Some(at) = deadline
            && at <= now
        {
            shared.errors.push(format!(
                "{name}: poll_timeout is {at} ms after the start, not after now ({now} ms)"
            ));
        }
        match deadline {
            Some(at) => shared.deadlines.insert(name.to_owned(), at),
            None => shared.deadlines.remove(name),
        };
        shared.quiet_until_ms
    };
    let sleep_ms = if quiet_until > now + 1 {
        quiet_until - now
    } else {
        1
    };
    tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
}

pub(crate) fn session_key(client: usize) -> SessionKey {
    SessionKey::new([client as u8 + 1; 32])
}

pub(crate) fn session_id(client: usize) -> u32 {
    1000 + client as u32
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
    let durations: Vec<u64> = scenario.steps.iter().map(step_duration_ms).collect();
    let end_ms = SETUP_MS + durations.iter().sum::<u64>();
    let default_latency = Duration::from_millis(u64::from(scenario.topology.latency.default_ms));
    let mut sim = turmoil::Builder::new()
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(default_latency)
        .max_message_latency(default_latency)
        .simulation_duration(Duration::from_millis(end_ms + 10_000))
        .epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(ORIGIN_UNIX_SECS))
        .udp_capacity(4096)
        .rng_seed(options.seed)
        .build();
    let shared = Rc::new(RefCell::new(Shared {
        origin: Instant::now(),
        trace: Vec::new(),
        flows: Vec::new(),
        errors: Vec::new(),
        hops: Vec::new(),
        deliveries: Vec::new(),
        drops: Vec::new(),
        gateway_commands: vec![VecDeque::new(); scenario.topology.gateways.len()],
        client_commands: vec![VecDeque::new(); scenario.topology.clients.len()],
        relayed: BTreeMap::new(),
        current_relayed: BTreeMap::new(),
        hosts_by_ip: hosts_by_ip(scenario, &plan),
        faults: BTreeMap::new(),
        deadlines: BTreeMap::new(),
        quiet_until_ms: 0,
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
    }));

    dns_server::add_dns_server(&mut sim, &shared);
    let topology = &scenario.topology;
    let mut xdp_reasons = Vec::new();
    let mut datapath = options.datapath;
    for (index, relay) in topology.relays.iter().enumerate() {
        let seed = options.seed.wrapping_add(index as u64 + 1);
        let (reasons, ran) = relay_host::add_relay(
            &mut sim,
            &shared,
            relay.name.clone(),
            &plan.relays[index],
            seed,
            options.datapath,
        )?;
        xdp_reasons.push(reasons);
        if ran == Datapath::Userspace {
            datapath = Datapath::Userspace;
        }
    }
    for (index, gateway) in topology.gateways.iter().enumerate() {
        let turn = turn_config(
            scenario,
            &plan,
            gateway.relay.as_deref(),
            &gateway.name,
            plan.gateways[index].preferred(),
            options.seed.wrapping_add(1000 + index as u64),
        );
        gateway_host::add_gateway(
            &mut sim,
            &shared,
            scenario,
            &plan,
            index,
            options.seed,
            turn,
        );
    }
    for (index, client) in topology.clients.iter().enumerate() {
        let turn = turn_config(
            scenario,
            &plan,
            client.relay.as_deref(),
            &client.name,
            plan.clients[index].preferred(),
            options.seed.wrapping_add(2000 + index as u64),
        );
        let gateways = (0..topology.gateways.len())
            .map(|g| gateway_socket(&plan, g))
            .collect();
        client_host::add_client(
            &mut sim,
            &shared,
            client.name.clone(),
            index,
            plan.client_socket(index, 0),
            turn,
            gateways,
        );
    }
    for link in &scenario.topology.latency.links {
        for (a, b) in link_pairs(scenario, &plan, &link.between) {
            sim.set_link_latency(a, b, Duration::from_millis(u64::from(link.ms)));
        }
    }

    let mut runner = Runner {
        scenario,
        plan: &plan,
        shared: &shared,
        proxies: BTreeMap::new(),
        roams: vec![0; scenario.topology.clients.len()],
    };
    let mut at = SETUP_MS;
    run_until(&mut sim, &shared, at)?;
    for (index, step) in scenario.steps.iter().enumerate() {
        runner.apply(&mut sim, index, step);
        at += durations[index];
        run_until(&mut sim, &shared, at)?;
    }
    for queue in &mut shared.borrow_mut().gateway_commands {
        queue.push_back(GatewayCommand::Shutdown);
    }
    run_until(&mut sim, &shared, end_ms + 2)?;
    let mut shared = shared.borrow_mut();
    // Frames still held when the run ends never arrive.
    let still_held: Vec<ObservedDrop> = shared
        .faults
        .iter_mut()
        .flat_map(|(between, faults)| {
            std::mem::take(&mut faults.held)
                .into_iter()
                .map(|(_, packet)| ObservedDrop {
                    at_ms: end_ms,
                    place: ObservedPlace::Link {
                        between: between.clone(),
                    },
                    cause: DropCause::StillHeld,
                    packet,
                })
        })
        .collect();
    shared.drops.extend(still_held);
    Ok(Outcome {
        flows: shared.flows.clone(),
        trace: shared.trace.clone(),
        errors: shared.errors.clone(),
        relayed: shared.relayed.clone(),
        hops: shared.hops.clone(),
        deliveries: shared.deliveries.clone(),
        drops: shared.drops.clone(),
        xdp_reasons: xdp_reasons
            .iter()
            .flat_map(|reasons| reasons.borrow().clone())
            .fold(BTreeMap::new(), |mut total, (why, runs)| {
                *total.entry(relay_xdp::reason::name(why)).or_default() += runs;
                total
            }),
        datapath,
    })
}

/// The TURN client of a host that names a relay: credentials valid for a day, the relayed
/// families the relay offers, and a seed of the host's own.
fn turn_config(
    scenario: &Scenario,
    plan: &AddressPlan,
    relay: Option<&str>,
    name: &str,
    host: IpAddr,
    seed: u64,
) -> Option<TurnClientConfig> {
    let index = scenario
        .topology
        .relays
        .iter()
        .position(|r| Some(r.name.as_str()) == relay)?;
    let families = match scenario.topology.relays[index].stack {
        Stack::V4 => Families::V4,
        Stack::V6 => Families::V6,
        Stack::Dual => Families::Dual,
    };
    Some(TurnClientConfig {
        // The relay's address in the host's family (the model refuses a pair with none).
        server: SocketAddr::new(
            plan.relays[index]
                .matching(host)
                .unwrap_or(plan.relays[index].preferred()),
            relay::TURN_PORT,
        ),
        credentials: credentials::rest_api_credentials(
            RELAY_SECRET,
            ORIGIN_UNIX_SECS + 86_400,
            name,
        ),
        families,
        lifetime: None,
        seed,
    })
}

fn step_duration_ms(step: &Step) -> u64 {
    match step {
        Step::Idle { seconds } => seconds * 1000,
        _ => STEP_MS,
    }
}

/// Advances the simulation to `at_ms`: across every quiet stretch in one step that ends a tick
/// before the next host timer or datagram arrival (or `at_ms`), and tick by tick from there, so
/// that every timer fires and every datagram arrives on its own millisecond.
fn run_until(
    sim: &mut turmoil::Sim<'_>,
    shared: &Rc<RefCell<Shared>>,
    at_ms: u64,
) -> Result<(), SimError> {
    loop {
        let now = sim.elapsed().as_millis() as u64;
        if now >= at_ms {
            return Ok(());
        }
        // Every host takes its first turn (and publishes its timers) in the first tick.
        let jump = (now > 0)
            .then(|| quiet_until(sim, shared, now, at_ms))
            .flatten()
            .map(|next| next.saturating_sub(now + 1))
            .filter(|jump| *jump >= 2);
        let result = match jump {
            Some(jump) => {
                shared.borrow_mut().quiet_until_ms = now + jump;
                sim.step_by(Duration::from_millis(jump))
            }
            None => sim.step(),
        };
        result.map_err(|error| SimError::Turmoil(error.to_string()))?;
    }
}

/// When the next thing can happen: the earliest host timer, the earliest datagram due off
/// the wire (one held on a link moves only at a `release`, which is a step), or `limit`.
/// `None` while a command waits for its host.
fn quiet_until(
    sim: &turmoil::Sim<'_>,
    shared: &Rc<RefCell<Shared>>,
    now: u64,
    limit: u64,
) -> Option<u64> {
    let shared = shared.borrow();
    let waiting = shared
        .gateway_commands
        .iter()
        .any(|queue| !queue.is_empty())
        || shared.client_commands.iter().any(|queue| !queue.is_empty());
    if waiting {
        return None;
    }
    let delivery = sim
        .next_delivery()
        .map(|due_in| now + due_in.as_millis() as u64);
    Some(
        shared
            .deadlines
            .values()
            .copied()
            .chain(delivery)
            .fold(limit, u64::min),
    )
}

/// The scenario's host name of every address of every host (the DNS server is `dns`).
fn hosts_by_ip(scenario: &Scenario, plan: &AddressPlan) -> BTreeMap<IpAddr, String> {
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
fn link_pairs(
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

fn gateway_socket(plan: &AddressPlan, gateway: usize) -> SocketAddr {
    SocketAddr::new(plan.gateways[gateway].preferred(), TUNNEL_PORT)
}

/// Turns steps into commands for the hosts, at the step's start time.
struct Runner<'a> {
    scenario: &'a Scenario,
    plan: &'a AddressPlan,
    shared: &'a Rc<RefCell<Shared>>,
    /// (client, domain) -> the proxy index the client's stub resolver handed out.
    proxies: BTreeMap<(usize, String), usize>,
    roams: Vec<u16>,
}

impl Runner<'_> {
    fn client_index(&self, name: &str) -> usize {
        self.scenario
            .topology
            .clients
            .iter()
            .position(|c| c.name == name)
            .unwrap_or(0)
    }

    fn resource_index(&self, name: &str) -> usize {
        self.scenario
            .topology
            .resources
            .iter()
            .position(|r| r.name == name)
            .unwrap_or(0)
    }

    fn gateway_of_resource(&self, resource: usize) -> usize {
        let name = &self.scenario.topology.resources[resource].gateway;
        self.scenario
            .topology
            .gateways
            .iter()
            .position(|g| &g.name == name)
            .unwrap_or(0)
    }

    fn tunnel_ip(&self, client: usize, ipv6: bool) -> IpAddr {
        if ipv6 {
            IpAddr::V6(self.plan.tunnel_v6[client])
        } else {
            IpAddr::V4(self.plan.tunnel_v4[client])
        }
    }

    /// The inner destination of a target: the resource's address, or the proxy IP the client's
    /// stub resolver handed out for the domain (mapping it at the gateway on first use).
    fn destination(&mut self, target: &Target) -> IpAddr {
        let client = self.client_index(&target.client);
        let resource = self.resource_index(&target.resource);
        match (
            &self.scenario.topology.resources[resource].address,
            &target.domain,
        ) {
            (ResourceAddress::Cidr(cidr), _) => plan::parse_resource_cidr(cidr)
                .map(|(ip, _)| ip)
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            (ResourceAddress::Dns(_), domain) => self
                .proxy_ip(client, domain.as_deref().unwrap_or_default(), target.ipv6)
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        }
    }

    /// The proxy IP of `domain` for `client`. The client's stub resolver answers the first query
    /// for a name with the next proxy index `n`, for both families (A and AAAA), and the control
    /// plane maps both proxy IPs at once on every gateway that serves a DNS resource matching
    /// the name (docs/harness.md).
    fn proxy_ip(&mut self, client: usize, domain: &str, ipv6: bool) -> Option<IpAddr> {
        let domain = domain.to_ascii_lowercase();
        let index = match self.proxies.get(&(client, domain.clone())) {
            Some(index) => *index,
            None => {
                let gateways: BTreeSet<usize> = self
                    .scenario
                    .topology
                    .resources
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| matches!(&r.address, ResourceAddress::Dns(pattern) if plan::domain_matches(pattern, &domain)))
                    .map(|(resource, _)| self.gateway_of_resource(resource))
                    .collect();
                if gateways.is_empty() {
                    return None;
                }
                let index = self.proxies.keys().filter(|(c, _)| *c == client).count();
                self.proxies.insert((client, domain.clone()), index);
                for gateway in gateways {
                    for v6 in [false, true] {
                        self.to_gateway(
                            gateway,
                            GatewayCommand::MapDns {
                                client,
                                proxy_ip: AddressPlan::proxy_ip(index, v6),
                                domain: domain.clone(),
                            },
                        );
                    }
                }
                index
            }
        };
        Some(AddressPlan::proxy_ip(index, ipv6))
    }

    fn tcp_src(&self, client: usize, conn: u32, ipv6: bool) -> SocketAddr {
        SocketAddr::new(self.tunnel_ip(client, ipv6), 30000 + conn as u16)
    }

    /// The client and inner address of an open connection, from the step that opened it.
    fn connection(&self, conn: u32) -> Option<(usize, SocketAddr, usize)> {
        self.scenario
            .steps
            .iter()
            .rev()
            .find_map(|step| match step {
                Step::TcpOpen { conn: c, target } if *c == conn => {
                    let client = self.client_index(&target.client);
                    let gateway = self.gateway_of_resource(self.resource_index(&target.resource));
                    Some((client, self.tcp_src(client, conn, target.ipv6), gateway))
                }
                _ => None,
            })
    }

    fn to_client(&self, client: usize, command: ClientCommand) {
        self.shared.borrow_mut().client_commands[client].push_back(command);
    }

    fn to_gateway(&self, gateway: usize, command: GatewayCommand) {
        self.shared.borrow_mut().gateway_commands[gateway].push_back(command);
    }

    fn apply(&mut self, sim: &mut turmoil::Sim<'_>, index: usize, step: &Step) {
        let at_ms = sim.elapsed().as_millis() as u64;
        self.shared
            .borrow_mut()
            .trace_at(at_ms, "runner", format!("step {index}: {step:?}"));
        match step {
            Step::Udp { target, bytes } => {
                let client = self.client_index(&target.client);
                let gateway = self.gateway_of_resource(self.resource_index(&target.resource));
                let dst = SocketAddr::new(self.destination(target), target.port);
                let src = SocketAddr::new(
                    self.tunnel_ip(client, target.ipv6),
                    40000 + target.port % 20000,
                );
                self.to_client(
                    client,
                    ClientCommand::Udp {
                        gateway,
                        src,
                        dst,
                        payload: vec![(index % 251) as u8; usize::from(*bytes)],
                    },
                );
            }
            Step::TcpOpen { conn, target } => {
                let client = self.client_index(&target.client);
                let gateway = self.gateway_of_resource(self.resource_index(&target.resource));
                let dst = SocketAddr::new(self.destination(target), target.port);
                let src = self.tcp_src(client, *conn, target.ipv6);
                self.to_client(client, ClientCommand::TcpOpen { gateway, src, dst });
            }
            Step::TcpRetransmitSyn { conn } => {
                self.client_tcp(*conn, ClientTcpAction::RetransmitSyn)
            }
            Step::TcpLateAck { conn } => self.client_tcp(*conn, ClientTcpAction::LateAck),
            Step::TcpData { conn, from, bytes } => self.tcp_action(
                *conn,
                *from,
                ClientTcpAction::Data(*bytes),
                ResourceAction::Data(*bytes),
            ),
            Step::TcpClose { conn, by } => {
                self.tcp_action(*conn, *by, ClientTcpAction::Close, ResourceAction::Close)
            }
            Step::TcpReset { conn, by } => {
                self.tcp_action(*conn, *by, ClientTcpAction::Reset, ResourceAction::Reset)
            }
            Step::DnsQuery { client, name } => {
                let client = self.client_index(client);
                self.proxy_ip(client, name, false);
            }
            Step::Path {
                client,
                gateway,
                mode,
            } => self.path(at_ms, client, gateway, *mode),
            Step::Roam { client } => {
                let client = self.client_index(client);
                self.roams[client] += 1;
                self.to_client(client, ClientCommand::Roam);
            }
            Step::Grant(grant) => {
                let resource = self.resource_index(&grant.resource);
                self.to_gateway(
                    self.gateway_of_resource(resource),
                    GatewayCommand::Grant {
                        client: self.client_index(&grant.client),
                        resource,
                        filters: grant.filters.clone(),
                    },
                );
            }
            Step::Revoke { client, resource } => {
                let resource = self.resource_index(resource);
                self.to_gateway(
                    self.gateway_of_resource(resource),
                    GatewayCommand::Revoke {
                        client: self.client_index(client),
                        resource,
                    },
                );
            }
            Step::DnsChange { name, addresses } => {
                let mut shared = self.shared.borrow_mut();
                let ttl = shared
                    .dns_records
                    .get(&name.to_ascii_lowercase())
                    .map_or(300, |(_, ttl)| *ttl);
                shared
                    .dns_records
                    .insert(name.to_ascii_lowercase(), (addresses.clone(), ttl));
            }
            Step::Fault { between, fault } => {
                // Partitions and drop-next act where a host sends (`Shared::link_takes`); holds
                // use turmoil's, which keeps datagrams until the release.
                {
                    let mut shared = self.shared.borrow_mut();
                    let faults = shared
                        .faults
                        .entry(link_key(&between[0], &between[1]))
                        .or_default();
                    match fault {
                        Fault::Partition => faults.partitioned = true,
                        Fault::Heal => faults.partitioned = false,
                        Fault::Hold => faults.holding = true,
                        Fault::Release => {
                            faults.holding = false;
                            faults.held.clear();
                        }
                        Fault::DropNext(n) => {
                            faults.drop_next = faults.drop_next.saturating_add(*n)
                        }
                    }
                }
                for (a, b) in link_pairs(self.scenario, self.plan, between) {
                    match fault {
                        Fault::Hold => {
                            sim.hold(a, b);
                        }
                        Fault::Release => {
                            sim.release(a, b);
                        }
                        Fault::Partition | Fault::Heal | Fault::DropNext(_) => {}
                    }
                }
            }
            Step::GatewayRestart { gateway } => {
                let gateway = self
                    .scenario
                    .topology
                    .gateways
                    .iter()
                    .position(|g| &g.name == gateway)
                    .unwrap_or(0);
                self.to_gateway(gateway, GatewayCommand::Restart);
            }
            Step::Idle { .. } => {}
        }
    }

    /// Tells both ends of a client-gateway pair where to send and whether through their relay.
    fn path(&self, at_ms: u64, client: &str, gateway: &str, mode: PathMode) {
        let c = self.client_index(client);
        let g = self
            .scenario
            .topology
            .gateways
            .iter()
            .position(|x| x.name == gateway)
            .unwrap_or(0);
        let relayed = self.shared.borrow().current_relayed.clone();
        // A host's relayed address in one family (docs/harness.md, "Addresses").
        let of = |host: &str, v6: bool| -> Option<SocketAddr> {
            relayed
                .get(host)?
                .iter()
                .find(|address| address.is_ipv6() == v6)
                .copied()
        };
        let client_socket = self.plan.client_socket(c, self.roams[c]);
        let gateway_socket = gateway_socket(self.plan, g);
        // (client's target, client via its relay, address the gateway answers, gateway via relay)
        let plan = match mode {
            PathMode::Direct => Some((gateway_socket, false, client_socket, false)),
            PathMode::ClientRelayed => {
                of(client, gateway_socket.is_ipv6()).map(|cr| (gateway_socket, true, cr, false))
            }
            PathMode::GatewayRelayed => {
                of(gateway, client_socket.is_ipv6()).map(|gr| (gr, false, client_socket, true))
            }
            PathMode::SameRelay | PathMode::DifferentRelays => [false, true]
                .into_iter()
                .find_map(|v6| Some((of(client, v6)?, of(gateway, v6)?)))
                .map(|(cr, gr)| (gr, true, cr, true)),
        };
        // No allocation (lost to a fault across a refresh, say): the hosts keep their old
        // path. If the model predicted the new one, the records will show it.
        let Some((target, client_via, remote, gateway_via)) = plan else {
            self.shared.borrow_mut().trace_at(
                at_ms,
                "runner",
                format!(
                    "path {mode:?} for {client} and {gateway} not taken: an allocation is missing"
                ),
            );
            return;
        };
        self.to_client(
            c,
            ClientCommand::Path {
                gateway: g,
                target,
                via_relay: client_via,
            },
        );
        self.to_gateway(
            g,
            GatewayCommand::Path {
                remote,
                via_relay: gateway_via,
            },
        );
    }

    fn client_tcp(&self, conn: u32, action: ClientTcpAction) {
        if let Some((client, src, _)) = self.connection(conn) {
            self.to_client(client, ClientCommand::Tcp { src, action });
        }
    }

    fn tcp_action(
        &self,
        conn: u32,
        side: Side,
        client_action: ClientTcpAction,
        resource_action: ResourceAction,
    ) {
        let Some((client, src, gateway)) = self.connection(conn) else {
            return;
        };
        match side {
            Side::Client => self.to_client(
                client,
                ClientCommand::Tcp {
                    src,
                    action: client_action,
                },
            ),
            Side::Resource => self.to_gateway(
                gateway,
                GatewayCommand::Resource {
                    client: src,
                    action: resource_action,
                },
            ),
        }
    }
}

/// The wildcard address of `ip`'s family, for binding.
pub(crate) fn unspecified(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

/// Sends what a host's TURN client queued, traces its events, and publishes its relayed
/// addresses for the runner.
pub(crate) fn flush_turn(
    endpoint: &mut peer::Endpoint,
    socket: &turmoil::net::UdpSocket,
    shared: &Rc<RefCell<Shared>>,
    name: &str,
) {
    let local = endpoint.socket();
    let Some(turn) = endpoint.turn_mut() else {
        return;
    };
    while let Some(transmit) = turn.poll_transmit() {
        wire::send(socket, shared, name, local, transmit.dst, &transmit.payload);
    }
    let mut shared = shared.borrow_mut();
    while let Some(event) = turn.poll_event() {
        shared.trace(name, format!("TURN: {event:?}"));
    }
    let addresses = turn.relayed_addresses().to_vec();
    let first = shared.relayed.entry(name.to_owned()).or_default();
    if first.is_empty() {
        first.clone_from(&addresses);
    }
    shared.current_relayed.insert(name.to_owned(), addresses);
}

/// Takes a datagram through the host's endpoint: tunnel data (directly, or out of its relay's
/// ChannelData or Data indication), or `None` for what the endpoint keeps (TURN responses) or
/// refuses (a late duplicate of a TURN response after a held link released, say: nothing
/// changes, the trace says why).
pub(crate) fn receive_through<'p>(
    endpoint: &mut peer::Endpoint,
    shared: &Rc<RefCell<Shared>>,
    name: &str,
    from: SocketAddr,
    payload: &'p [u8],
    now: Instant,
) -> Option<peer::Arrival<'p>> {
    match endpoint.receive(from, payload, now) {
        Ok(arrival) => arrival,
        Err(error) => {
            shared
                .borrow_mut()
                .trace(name, format!("ignored a datagram from {from}: {error}"));
            None
        }
    }
}

/// Sends `payload` to `remote` the way the host's endpoint routes it (directly or as
/// ChannelData through its relay).
pub(crate) fn send_through(
    endpoint: &mut peer::Endpoint,
    socket: &turmoil::net::UdpSocket,
    shared: &Rc<RefCell<Shared>>,
    name: &str,
    remote: SocketAddr,
    payload: &[u8],
    what: &str,
) {
    let now = now_instant(shared.borrow().origin);
    match endpoint.send(remote, payload, now) {
        Ok(datagram) => {
            shared
                .borrow_mut()
                .trace(name, format!("{what} to {remote} via {}", datagram.dst));
            wire::send(
                socket,
                shared,
                name,
                endpoint.socket(),
                datagram.dst,
                &datagram.payload,
            );
        }
        // The endpoint has no way there yet (a channel binding that a fault held up): the
        // host drops the frame, as a real one would. The model calls such cases unpredictable.
        Err(error) => shared.borrow_mut().trace(
            name,
            format!("dropped {what} to {remote}: cannot send: {error}"),
        ),
    }
}
