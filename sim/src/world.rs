//! Building the turmoil world from a scenario and driving it step by step.

use std::{
    cell::RefCell,
    collections::{BTreeMap, VecDeque},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    rc::Rc,
    time::{Duration, Instant, SystemTime},
};

use gateway::{
    ClientConfig, DomainPattern, Filter, Gateway, GatewayConfig, IpCidr, PortRange, Resource,
    ResourceAddress as GatewayResourceAddress, Transmit,
};
use proto::{
    flow::{ClientId, FlowRecord, ResourceId, TimeOrigin, UtcTime},
    tunnel::{self, FrameHeader, SessionKey},
};
use scenario::{
    Fault, PathMode, ResourceAddress, Scenario, Side, Step, Target,
    plan::{self, AddressPlan, TUNNEL_PORT},
};
use turmoil::net::UdpSocket;

use crate::{
    dns_server,
    packets::{self, Inner},
    tcp::TcpSide,
};

/// Sim time 0, as docs/harness.md fixes it: 2026-01-01T00:00:00Z.
pub const ORIGIN_UNIX_SECS: u64 = 1_767_225_600;
/// Steps start after 2 s of setup.
pub const SETUP_MS: u64 = 2000;
/// Every step but `idle` lasts 1 s.
pub const STEP_MS: u64 = 1000;
/// The gateway's TUN link to the resource responder.
const TUN_LATENCY_MS: u64 = 1;

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Seeds turmoil and every system under test.
    pub seed: u64,
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
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("the simulator does not run this yet: {0}")]
    Unsupported(String),
    #[error("the simulation failed: {0}")]
    Turmoil(String),
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
        gateway: SocketAddr,
        src: SocketAddr,
        dst: SocketAddr,
        payload: Vec<u8>,
    },
    TcpOpen {
        gateway: SocketAddr,
        src: SocketAddr,
        dst: SocketAddr,
    },
    Tcp {
        src: SocketAddr,
        action: ClientTcpAction,
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
    origin: Instant,
    trace: Vec<TraceLine>,
    flows: Vec<FlowRecord>,
    errors: Vec<String>,
    gateway_commands: Vec<VecDeque<GatewayCommand>>,
    client_commands: Vec<VecDeque<ClientCommand>>,
    pub(crate) dns_records: BTreeMap<String, (Vec<IpAddr>, u32)>,
}

impl Shared {
    /// Records what a host did now (inside the simulation).
    fn trace(&mut self, host: &str, event: String) {
        self.trace_at(now_ms(), host, event);
    }

    fn trace_at(&mut self, at_ms: u64, host: &str, event: String) {
        self.trace.push(TraceLine {
            at_ms,
            host: host.to_owned(),
            event,
        });
    }
}

fn now_ms() -> u64 {
    turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64
}

fn now_instant(origin: Instant) -> Instant {
    origin + Duration::from_millis(now_ms())
}

fn session_key(client: usize) -> SessionKey {
    SessionKey::new([client as u8 + 1; 32])
}

fn session_id(client: usize) -> u32 {
    1000 + client as u32
}

/// Runs a scenario to its end and returns what happened.
pub fn run(scenario: &Scenario, options: &RunOptions) -> Result<Outcome, SimError> {
    check_supported(scenario)?;
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
        gateway_commands: vec![VecDeque::new(); scenario.topology.gateways.len()],
        client_commands: vec![VecDeque::new(); scenario.topology.clients.len()],
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

    add_dns_server(&mut sim, &shared);
    for index in 0..scenario.topology.gateways.len() {
        add_gateway(&mut sim, &shared, scenario, &plan, index, options.seed);
    }
    for index in 0..scenario.topology.clients.len() {
        add_client(&mut sim, &shared, scenario, &plan, index);
    }
    for link in &scenario.topology.latency.links {
        let (a, b) = (
            host_ip(scenario, &plan, &link.between[0]),
            host_ip(scenario, &plan, &link.between[1]),
        );
        if let (Some(a), Some(b)) = (a, b) {
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
    run_until(&mut sim, at)?;
    for (index, step) in scenario.steps.iter().enumerate() {
        runner.apply(&mut sim, index, step);
        at += durations[index];
        run_until(&mut sim, at)?;
    }
    for queue in &mut shared.borrow_mut().gateway_commands {
        queue.push_back(GatewayCommand::Shutdown);
    }
    run_until(&mut sim, end_ms + 2)?;
    let shared = shared.borrow();
    Ok(Outcome {
        flows: shared.flows.clone(),
        trace: shared.trace.clone(),
        errors: shared.errors.clone(),
    })
}

fn check_supported(scenario: &Scenario) -> Result<(), SimError> {
    for (index, step) in scenario.steps.iter().enumerate() {
        match step {
            Step::Path { mode, .. } if *mode != PathMode::Direct => {
                return Err(SimError::Unsupported(format!(
                    "steps[{index}]: path mode {mode:?} (relayed paths)"
                )));
            }
            Step::Fault {
                fault: Fault::DropNext(_),
                ..
            } => {
                return Err(SimError::Unsupported(format!(
                    "steps[{index}]: drop-next faults"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

fn step_duration_ms(step: &Step) -> u64 {
    match step {
        Step::Idle { seconds } => seconds * 1000,
        _ => STEP_MS,
    }
}

fn run_until(sim: &mut turmoil::Sim<'_>, at_ms: u64) -> Result<(), SimError> {
    while (sim.elapsed().as_millis() as u64) < at_ms {
        sim.step()
            .map_err(|error| SimError::Turmoil(error.to_string()))?;
    }
    Ok(())
}

/// The turmoil address of a host named in the scenario (its preferred address).
fn host_ip(scenario: &Scenario, plan: &AddressPlan, name: &str) -> Option<IpAddr> {
    let topology = &scenario.topology;
    if let Some(i) = topology.clients.iter().position(|c| c.name == name) {
        return Some(plan.clients[i].preferred());
    }
    if let Some(i) = topology.gateways.iter().position(|g| g.name == name) {
        return Some(plan.gateways[i].preferred());
    }
    if let Some(i) = topology.relays.iter().position(|r| r.name == name) {
        return Some(plan.relays[i].preferred());
    }
    None
}

fn gateway_socket(plan: &AddressPlan, gateway: usize) -> SocketAddr {
    SocketAddr::new(plan.gateways[gateway].preferred(), TUNNEL_PORT)
}

/// Turns steps into commands for the hosts, at the step's start time.
struct Runner<'a> {
    scenario: &'a Scenario,
    plan: &'a AddressPlan,
    shared: &'a Rc<RefCell<Shared>>,
    /// (client, domain, ipv6) -> proxy IP handed out by the client's stub resolver.
    proxies: BTreeMap<(usize, String, bool), IpAddr>,
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
            (ResourceAddress::Dns(_), domain) => {
                let domain = domain.clone().unwrap_or_default().to_ascii_lowercase();
                self.proxy_ip(
                    client,
                    &domain,
                    target.ipv6,
                    self.gateway_of_resource(resource),
                )
            }
        }
    }

    fn proxy_ip(&mut self, client: usize, domain: &str, ipv6: bool, gateway: usize) -> IpAddr {
        let key = (client, domain.to_owned(), ipv6);
        if let Some(ip) = self.proxies.get(&key) {
            return *ip;
        }
        let handed_out = self.proxies.keys().filter(|(c, _, _)| *c == client).count();
        let ip = AddressPlan::proxy_ip(handed_out, ipv6);
        self.proxies.insert(key, ip);
        self.shared.borrow_mut().gateway_commands[gateway].push_back(GatewayCommand::MapDns {
            client,
            proxy_ip: ip,
            domain: domain.to_owned(),
        });
        ip
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
        self.shared.borrow_mut().trace_at(
            at_ms,
            "runner",
            format!("step {index}: {}", step_summary(step)),
        );
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
                        gateway: gateway_socket(self.plan, gateway),
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
                self.to_client(
                    client,
                    ClientCommand::TcpOpen {
                        gateway: gateway_socket(self.plan, gateway),
                        src,
                        dst,
                    },
                );
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
                let resource = self.scenario.topology.resources.iter().position(|r| {
                    matches!(&r.address, ResourceAddress::Dns(pattern) if plan::domain_matches(pattern, name))
                });
                if let Some(resource) = resource {
                    let gateway = self.gateway_of_resource(resource);
                    self.proxy_ip(client, &name.to_ascii_lowercase(), false, gateway);
                }
            }
            Step::Path { .. } => {}
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
                let a = host_ip(self.scenario, self.plan, &between[0]);
                let b = host_ip(self.scenario, self.plan, &between[1]);
                if let (Some(a), Some(b)) = (a, b) {
                    match fault {
                        Fault::Partition => sim.partition(a, b),
                        Fault::Heal => sim.repair(a, b),
                        Fault::Hold => sim.hold(a, b),
                        Fault::Release => sim.release(a, b),
                        Fault::DropNext(_) => {}
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

fn step_summary(step: &Step) -> String {
    format!("{step:?}")
}

fn add_dns_server(sim: &mut turmoil::Sim<'_>, shared: &Rc<RefCell<Shared>>) {
    let shared = shared.clone();
    sim.host(IpAddr::V4(plan::DNS_SERVER_V4), move || {
        let shared = shared.clone();
        async move {
            let socket = UdpSocket::bind("0.0.0.0:53").await?;
            let mut buf = vec![0u8; 2048];
            loop {
                let (len, from) = socket.recv_from(&mut buf).await?;
                let reply = dns_server::answer(&buf[..len], &shared);
                if let Some(reply) = reply {
                    shared
                        .borrow_mut()
                        .trace("dns", format!("answer {} bytes to {from}", reply.len()));
                    socket.send_to(&reply, from).await?;
                }
            }
        }
    });
}

fn build_gateway(
    scenario: &Scenario,
    plan: &AddressPlan,
    index: usize,
    origin: Instant,
    seed: u64,
) -> Gateway {
    let ip = plan.gateways[index].preferred();
    let dns_server = SocketAddr::new(IpAddr::V4(plan::DNS_SERVER_V4), 53);
    let mut config = GatewayConfig::new(
        TimeOrigin {
            instant: origin,
            unix: UtcTime::from_unix_secs(ORIGIN_UNIX_SECS),
        },
        dns_server,
        SocketAddr::new(ip, TUNNEL_PORT),
    );
    config.hash_seed = seed;
    if let Some(idle) = scenario.topology.idle_timeout_s {
        config.idle_timeout = Duration::from_secs(idle);
    }
    let mut gateway = Gateway::new(config);
    let name = &scenario.topology.gateways[index].name;
    for client in 0..scenario.topology.clients.len() {
        let _ = gateway.add_client(ClientConfig {
            id: ClientId(client as u32),
            session_id: session_id(client),
            key: session_key(client),
            tunnel_v4: plan.tunnel_v4[client],
            tunnel_v6: plan.tunnel_v6[client],
        });
    }
    for (resource, spec) in scenario.topology.resources.iter().enumerate() {
        if &spec.gateway != name {
            continue;
        }
        let address = match &spec.address {
            ResourceAddress::Cidr(cidr) => cidr
                .parse::<IpCidr>()
                .map(GatewayResourceAddress::Cidr)
                .ok(),
            ResourceAddress::Dns(pattern) => pattern
                .parse::<DomainPattern>()
                .map(GatewayResourceAddress::Dns)
                .ok(),
        };
        if let Some(address) = address {
            let _ = gateway.add_resource(Resource {
                id: ResourceId(resource as u32),
                address,
            });
        }
    }
    for grant in &scenario.topology.grants {
        let client = scenario
            .topology
            .clients
            .iter()
            .position(|c| c.name == grant.client);
        let resource = scenario
            .topology
            .resources
            .iter()
            .position(|r| r.name == grant.resource);
        if let (Some(client), Some(resource)) = (client, resource)
            && scenario.topology.resources[resource].gateway == *name
        {
            let _ = gateway.grant(
                ClientId(client as u32),
                ResourceId(resource as u32),
                filters(&grant.filters),
            );
        }
    }
    gateway
}

fn filters(texts: &[String]) -> Vec<Filter> {
    texts
        .iter()
        .filter_map(|text| plan::parse_filter(text).ok())
        .map(|filter| match filter {
            plan::Filter::Tcp { ports } => Filter::Tcp(PortRange {
                first: ports.0,
                last: ports.1,
            }),
            plan::Filter::Udp { ports } => Filter::Udp(PortRange {
                first: ports.0,
                last: ports.1,
            }),
            plan::Filter::Icmp => Filter::Icmp,
        })
        .collect()
}

/// The gateway host: its UDP socket, the gateway, and the TUN link to the resource responder.
struct GatewayHost {
    name: String,
    gateway: Gateway,
    origin: Instant,
    /// Control calls applied since the start, replayed after a restart.
    control_log: Vec<GatewayCommand>,
    /// Packets on the TUN link: (due ms, sequence) -> (towards the resource?, packet).
    tun_link: BTreeMap<(u64, u64), (bool, Vec<u8>)>,
    tun_sequence: u64,
    /// The resource side of each TCP connection, by the client's inner address.
    resource_tcp: BTreeMap<SocketAddr, (SocketAddr, TcpSide)>,
}

impl GatewayHost {
    /// Executes a control call and remembers it for a restart.
    fn apply(&mut self, command: GatewayCommand, now: Instant, shared: &Rc<RefCell<Shared>>) {
        self.execute(&command, now, shared);
        if matches!(
            command,
            GatewayCommand::Grant { .. }
                | GatewayCommand::Revoke { .. }
                | GatewayCommand::MapDns { .. }
        ) {
            self.control_log.push(command);
        }
    }

    fn execute(&mut self, command: &GatewayCommand, now: Instant, shared: &Rc<RefCell<Shared>>) {
        let result = match command {
            GatewayCommand::Grant {
                client,
                resource,
                filters: texts,
            } => self
                .gateway
                .grant(
                    ClientId(*client as u32),
                    ResourceId(*resource as u32),
                    filters(texts),
                )
                .map_err(|e| e.to_string()),
            GatewayCommand::Revoke { client, resource } => self
                .gateway
                .revoke(ClientId(*client as u32), ResourceId(*resource as u32), now)
                .map_err(|e| e.to_string()),
            GatewayCommand::MapDns {
                client,
                proxy_ip,
                domain,
            } => self
                .gateway
                .map_dns(ClientId(*client as u32), *proxy_ip, domain, now)
                .map_err(|e| e.to_string()),
            GatewayCommand::Resource { client, action } => {
                self.resource_acts(*client, *action, shared);
                Ok(())
            }
            GatewayCommand::Restart | GatewayCommand::Shutdown => {
                self.gateway.shutdown(now);
                Ok(())
            }
        };
        if let Err(error) = result {
            shared
                .borrow_mut()
                .errors
                .push(format!("{}: {command:?} refused: {error}", self.name));
        }
    }

    fn resource_acts(
        &mut self,
        client: SocketAddr,
        action: ResourceAction,
        shared: &Rc<RefCell<Shared>>,
    ) {
        let Some((resource, side)) = self.resource_tcp.get_mut(&client) else {
            shared
                .borrow_mut()
                .errors
                .push(format!("{}: no connection from {client}", self.name));
            return;
        };
        let segment = match action {
            ResourceAction::Data(bytes) => side.data(bytes),
            ResourceAction::Close => side.fin(),
            ResourceAction::Reset => side.rst(),
        };
        let packet = packets::tcp(*resource, client, segment, 0x5A);
        self.send_on_tun(false, packet, now_ms());
    }

    fn send_on_tun(&mut self, towards_resource: bool, packet: Vec<u8>, at_ms: u64) {
        self.tun_sequence += 1;
        self.tun_link.insert(
            (at_ms + TUN_LATENCY_MS, self.tun_sequence),
            (towards_resource, packet),
        );
    }

    /// The resource's script: echo UDP, answer TCP as docs/harness.md says.
    fn resource_receives(&mut self, packet: &[u8], shared: &Rc<RefCell<Shared>>) {
        let inner = packets::parse(packet);
        shared.borrow_mut().trace(
            &format!("{}/tun", self.name),
            format!("resource got {inner}"),
        );
        let reply = match inner {
            Inner::Udp { src, dst, payload } => Some(packets::udp(dst, src, &payload)),
            Inner::Tcp { src, dst, segment } => {
                let (_, side) = self
                    .resource_tcp
                    .entry(src)
                    .or_insert_with(|| (dst, TcpSide::resource()));
                if segment.flags.syn && !segment.flags.ack {
                    *side = TcpSide::resource();
                }
                side.answer(segment)
                    .map(|answer| packets::tcp(dst, src, answer, 0x5A))
            }
            _ => None,
        };
        if let Some(reply) = reply {
            self.send_on_tun(false, reply, now_ms());
        }
    }
}

fn add_gateway(
    sim: &mut turmoil::Sim<'_>,
    shared: &Rc<RefCell<Shared>>,
    scenario: &Scenario,
    plan: &AddressPlan,
    index: usize,
    seed: u64,
) {
    let shared = shared.clone();
    let scenario = scenario.clone();
    let plan = plan.clone();
    let ip = plan.gateways[index].preferred();
    sim.host(ip, move || {
        let shared = shared.clone();
        let scenario = scenario.clone();
        let plan = plan.clone();
        async move {
            let origin = shared.borrow().origin;
            let local = SocketAddr::new(ip, TUNNEL_PORT);
            let socket = UdpSocket::bind(SocketAddr::new(unspecified(ip), TUNNEL_PORT)).await?;
            let name = scenario.topology.gateways[index].name.clone();
            let mut host = GatewayHost {
                name: name.clone(),
                gateway: build_gateway(&scenario, &plan, index, origin, seed),
                origin,
                control_log: Vec::new(),
                tun_link: BTreeMap::new(),
                tun_sequence: 0,
                resource_tcp: BTreeMap::new(),
            };
            let mut buf = vec![0u8; 65536];
            loop {
                let now = now_instant(host.origin);
                // Deadlines first, then control, then what the TUN link delivers now.
                if host.gateway.poll_timeout().is_some_and(|deadline| deadline <= now) {
                    host.gateway.handle_timeout(now);
                }
                let commands: Vec<GatewayCommand> = shared.borrow_mut().gateway_commands[index].drain(..).collect();
                for command in commands {
                    let restart = matches!(command, GatewayCommand::Restart);
                    host.apply(command, now, &shared);
                    if restart {
                        // A fresh gateway with the same configuration and the control calls
                        // made so far; its flows and TURN state start empty.
                        collect_flows(&mut host.gateway, &shared);
                        host.gateway = build_gateway(&scenario, &plan, index, origin, seed);
                        for replay in host.control_log.clone() {
                            host.execute(&replay, now, &shared);
                        }
                    }
                }
                let due: Vec<(u64, u64)> = host.tun_link.range(..=(now_ms(), u64::MAX)).map(|(key, _)| *key).collect();
                for key in due {
                    let Some((towards_resource, packet)) = host.tun_link.remove(&key) else {
                        continue;
                    };
                    if towards_resource {
                        host.resource_receives(&packet, &shared);
                    } else if let Err(reason) = host.gateway.handle_tun_packet(&packet, now) {
                        shared.borrow_mut().trace(&name, format!("dropped from TUN: {reason:?}"));
                    }
                }
                flush_gateway(&mut host, &socket, local, &shared).await?;
                tokio::select! {
                    biased;
                    received = socket.recv_from(&mut buf) => {
                        let (len, from) = received?;
                        let now = now_instant(host.origin);
                        if host.gateway.poll_timeout().is_some_and(|deadline| deadline <= now) {
                            host.gateway.handle_timeout(now);
                        }
                        shared.borrow_mut().trace(&name, format!("received {len} bytes from {from}"));
                        if let Err(reason) = host.gateway.handle_input(from, local, &buf[..len], now) {
                            shared.borrow_mut().trace(&name, format!("dropped: {reason:?}"));
                        }
                        flush_gateway(&mut host, &socket, local, &shared).await?;
                    }
                    _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                }
            }
        }
    });
}

fn unspecified(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

fn collect_flows(gateway: &mut Gateway, shared: &Rc<RefCell<Shared>>) {
    while let Some(record) = gateway.poll_flow_record() {
        shared.borrow_mut().flows.push(record);
    }
}

/// Sends what the gateway queued and collects its flow records.
async fn flush_gateway(
    host: &mut GatewayHost,
    socket: &UdpSocket,
    local: SocketAddr,
    shared: &Rc<RefCell<Shared>>,
) -> std::io::Result<()> {
    while let Some(transmit) = host.gateway.poll_transmit() {
        match transmit {
            Transmit::Udp { dst, payload, src } => {
                if src != local {
                    shared
                        .borrow_mut()
                        .errors
                        .push(format!("{}: send from {src}, not {local}", host.name));
                }
                shared
                    .borrow_mut()
                    .trace(&host.name, format!("sent {} bytes to {dst}", payload.len()));
                socket.send_to(&payload, dst).await?;
            }
            Transmit::Tun(packet) => {
                shared.borrow_mut().trace(
                    &format!("{}/tun", host.name),
                    format!("to resource: {}", packets::parse(&packet)),
                );
                host.send_on_tun(true, packet, now_ms());
            }
        }
    }
    while host.gateway.poll_event().is_some() {}
    collect_flows(&mut host.gateway, shared);
    Ok(())
}

/// A client: its tunnel socket, its frames' counter, and its side of each TCP connection.
struct ClientHost {
    name: String,
    index: usize,
    counter: u64,
    tcp: BTreeMap<SocketAddr, (SocketAddr, SocketAddr, TcpSide)>,
}

impl ClientHost {
    async fn send_inner(
        &mut self,
        socket: &UdpSocket,
        gateway: SocketAddr,
        inner: Vec<u8>,
        shared: &Rc<RefCell<Shared>>,
    ) -> std::io::Result<()> {
        self.counter += 1;
        let frame = tunnel::seal(
            &session_key(self.index),
            FrameHeader {
                session_id: session_id(self.index),
                counter: self.counter,
            },
            &inner,
        );
        shared.borrow_mut().trace(
            &self.name,
            format!("sent {} to {gateway}", packets::parse(&inner)),
        );
        socket.send_to(&frame, gateway).await.map(|_| ())
    }
}

fn add_client(
    sim: &mut turmoil::Sim<'_>,
    shared: &Rc<RefCell<Shared>>,
    scenario: &Scenario,
    plan: &AddressPlan,
    index: usize,
) {
    let shared = shared.clone();
    let name = scenario.topology.clients[index].name.clone();
    let ip = plan.clients[index].preferred();
    sim.host(ip, move || {
        let shared = shared.clone();
        let name = name.clone();
        async move {
            let mut port = TUNNEL_PORT;
            let mut socket = UdpSocket::bind(SocketAddr::new(unspecified(ip), port)).await?;
            let mut host = ClientHost {
                name: name.clone(),
                index,
                counter: 0,
                tcp: BTreeMap::new(),
            };
            let mut buf = vec![0u8; 65536];
            loop {
                let commands: Vec<ClientCommand> = shared.borrow_mut().client_commands[index].drain(..).collect();
                for command in commands {
                    match command {
                        ClientCommand::Udp { gateway, src, dst, payload } => {
                            host.send_inner(&socket, gateway, packets::udp(src, dst, &payload), &shared).await?;
                        }
                        ClientCommand::TcpOpen { gateway, src, dst } => {
                            let mut side = TcpSide::client();
                            let syn = side.syn();
                            host.tcp.insert(src, (dst, gateway, side));
                            host.send_inner(&socket, gateway, packets::tcp(src, dst, syn, 0xC1), &shared).await?;
                        }
                        ClientCommand::Tcp { src, action } => {
                            let Some((dst, gateway, side)) = host.tcp.get_mut(&src) else {
                                continue;
                            };
                            let (dst, gateway) = (*dst, *gateway);
                            let segment = match action {
                                ClientTcpAction::RetransmitSyn => side.syn(),
                                ClientTcpAction::Data(bytes) => side.data(bytes),
                                ClientTcpAction::Close => side.fin(),
                                ClientTcpAction::Reset => side.rst(),
                                ClientTcpAction::LateAck => side.ack(),
                            };
                            host.send_inner(&socket, gateway, packets::tcp(src, dst, segment, 0xC1), &shared).await?;
                        }
                        ClientCommand::Roam => {
                            port += 1;
                            socket = UdpSocket::bind(SocketAddr::new(unspecified(ip), port)).await?;
                            shared.borrow_mut().trace(&name, format!("roamed to port {port}"));
                        }
                    }
                }
                tokio::select! {
                    biased;
                    received = socket.recv_from(&mut buf) => {
                        let (len, from) = received?;
                        let Ok((_, inner)) = tunnel::open(&session_key(index), &buf[..len]) else {
                            shared.borrow_mut().errors.push(format!("{name}: a datagram from {from} is not a frame for us"));
                            continue;
                        };
                        let parsed = packets::parse(inner);
                        shared.borrow_mut().trace(&name, format!("received {parsed} from {from}"));
                        if let Inner::Tcp { src, dst, segment } = parsed
                            && let Some((_, gateway, side)) = host.tcp.get_mut(&dst)
                        {
                            let gateway = *gateway;
                            if let Some(answer) = side.answer(segment) {
                                let packet = packets::tcp(dst, src, answer, 0xC1);
                                host.send_inner(&socket, gateway, packet, &shared).await?;
                            }
                        }
                    }
                    _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                }
            }
        }
    });
}
