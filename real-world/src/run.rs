//! One real run: set the world up, play the steps on the scenario's timeline in real time,
//! shut the gateways down at its end, and judge what happened against the model.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use model::{Allocations, Prediction, RelayedAddresses};
use proto::{credentials, flow::FlowRecord};
use scenario_format::{
    PathMode, ResourceAddress, Scenario, Side, Stack, Step, Target,
    plan::{self, AddressPlan, TUNNEL_PORT},
    settings::{
        DEFAULT_IDLE_TIMEOUT_S, DNS_MAX_TTL_S, DNS_MIN_TTL_S, DNS_QUEUE_LIMIT,
        GATEWAY_MAX_FLOWS_PER_CLIENT, RELAY_ALLOCATION_QUOTA, RELAY_MAX_CHANNELS,
        RELAY_MAX_PERMISSIONS, RELAY_REALM, RELAY_SECRET, TCP_MSS,
    },
    timing::Timeline,
};
use serde_json::json;
use turn_client::{Families, TurnClientConfig};

use crate::{
    RealError,
    client::{RealClient, Seen},
    compare::{self, Finding},
    interrupt,
    links::{Links, hosts_by_address},
    netns::{Namespaces, ip},
    processes::{Binaries, Child, GatewayProcess, METRICS_PORT, scrape},
    servers::{DnsServer, Resources},
    topology::{Topology, resource_ips},
};

/// How a real run is made and judged.
#[derive(Debug, Clone)]
pub struct RealOptions {
    pub binaries: Binaries,
    /// Where the run writes its artifacts (configs, logs, flow logs, the pcap).
    pub dir: PathBuf,
    /// How far a real time may be from the model's, in ms.
    pub tolerance_ms: u64,
    /// Seeds the relays' and gateways' generators and the TURN clients.
    pub seed: u64,
}

/// What a real run did, and how it compares with the model.
#[derive(Debug)]
pub struct RealRun {
    /// The scenario as the real world played it.
    pub played: Scenario,
    pub prediction: Prediction,
    /// The gateways' flow records, on the scenario's clock.
    pub flows: Vec<FlowRecord>,
    /// Inner packets the clients received, and the packets that reached the resources.
    pub deliveries: Vec<Seen>,
    /// Drops the gateways reported: (gateway, client, reason).
    pub drops: Vec<(u32, Option<u32>, String)>,
    /// Each relay's XDP verdicts by reason (`relay_xdp_runs_total`) and datagrams its sockets
    /// relayed, scraped at the end.
    pub relay_metrics: Vec<BTreeMap<String, f64>>,
    /// The XDP program's `tx/*` and `drop/*` verdicts, in the simulation of the same story and
    /// on the real relays (they must be equal).
    pub fast_path: FastPath,
    /// The capture in the router namespace.
    pub pcap: Option<PathBuf>,
    /// Differences from the model; empty when the worlds agree.
    pub findings: Vec<Finding>,
}

/// The longest story the real world plays: it runs on the wall clock.
pub const MAX_REAL_SECONDS: u64 = 60;

/// Steps the real world plays; others make the run [`RealError::Unsupported`], as does a
/// story longer than [`MAX_REAL_SECONDS`] or a resource segment the client's MSS would split.
fn check_supported(scenario: &Scenario) -> Result<(), RealError> {
    let t_end = Timeline::of(scenario).t_end;
    if t_end > MAX_REAL_SECONDS * 1000 {
        return Err(RealError::Unsupported(format!(
            "the story lasts {} s, and the real world plays at most {MAX_REAL_SECONDS} s on the wall clock",
            t_end / 1000
        )));
    }
    for (k, step) in scenario.steps.iter().enumerate() {
        match step {
            Step::TcpData {
                from: Side::Resource,
                bytes,
                ..
            } if *bytes > TCP_MSS => {
                return Err(RealError::Unsupported(format!(
                    "step {k}: {bytes} bytes from the resource, beyond the client's MSS of \
                     {TCP_MSS}: Linux would split them into several segments"
                )));
            }
            Step::Path { .. }
            | Step::Udp { .. }
            | Step::TcpOpen { .. }
            | Step::TcpRetransmitSyn { .. }
            | Step::TcpLateAck { .. }
            | Step::TcpData { .. }
            | Step::TcpClose { .. }
            | Step::TcpReset { .. }
            | Step::DnsQuery { .. }
            | Step::DnsChange { .. }
            | Step::Grant(_)
            | Step::Revoke { .. }
            | Step::Roam { .. }
            | Step::Fault { .. }
            | Step::Idle { .. } => {}
            Step::GatewayRestart { gateway }
                if scenario
                    .topology
                    .gateway_index(gateway)
                    .is_some_and(|g| scenario.topology.gateways[g].relay.is_some()) =>
            {
                return Err(RealError::Unsupported(format!(
                    "step {k}: a restarted gateway-server allocates on its relay again, where \
                     the simulation's restarted gateway keeps its allocation"
                )));
            }
            Step::GatewayRestart { .. } => {}
            other => {
                // Externally tagged: the one key is the step's kind.
                let value = serde_json::to_value(other).unwrap_or_default();
                let kind = value
                    .as_object()
                    .and_then(|object| object.keys().next().cloned())
                    .or_else(|| value.as_str().map(str::to_owned))
                    .unwrap_or_default();
                return Err(RealError::Unsupported(format!(
                    "step {k} (`{kind}`) is not played in the real world yet"
                )));
            }
        }
    }
    Ok(())
}

static RUNS: AtomicU32 = AtomicU32::new(0);

/// Plays `scenario` in the real world and judges it. `Err` only when the run could not be
/// made; differences from the model are [`RealRun::findings`].
pub fn run(scenario: &Scenario, options: &RealOptions) -> Result<RealRun, RealError> {
    check_supported(scenario)?;
    interrupt::install();
    remove_leftovers();
    scenario
        .validate()
        .map_err(|error| RealError::Unsupported(format!("invalid scenario: {error:?}")))?;
    let played = scenario.clone();
    model::predict(&played).map_err(|e| RealError::Unpredictable(format!("{e:?}")))?;
    // A fresh directory: the flow logs are appended to.
    let _ = std::fs::remove_dir_all(&options.dir);
    std::fs::create_dir_all(&options.dir)
        .map_err(|error| RealError::Setup(format!("{}: {error}", options.dir.display())))?;
    let mut namespaces = Namespaces::new(RUNS.fetch_add(1, Ordering::Relaxed));
    let plan = AddressPlan::new(&played);
    let topology = Topology::build(&mut namespaces, &played, &plan)?;
    let links = Links::attach(
        &topology.router,
        &topology.router_links,
        &played,
        hosts_by_address(&played, &plan),
    )?;
    if !tcpdump_installed() {
        return Err(RealError::Setup(
            "tcpdump is not installed (it captures what reaches the resources)".into(),
        ));
    }
    let router_capture = start_router_capture(&topology.router, &options.dir);
    let resource_captures = topology
        .resources
        .iter()
        .enumerate()
        .map(|(index, ns)| {
            let ips = resource_ips(&played, &played.topology.gateways[index].name);
            start_resource_capture(ns, index, &ips, &options.dir)
        })
        .collect::<Result<Vec<_>, _>>()?;
    // tcpdump needs a moment before it sees the first packet.
    std::thread::sleep(Duration::from_millis(500));
    let mut world = World::start(&played, &plan, &topology, &namespaces, links, options)?;
    let timeline = Timeline::of(&played);
    world.play(&played, &plan, &timeline)?;
    let relay_metrics = world.scrape_relays(&namespaces, &plan);
    world.shut_down()?;
    world.links.finish(timeline.t_end);
    let pcap = router_capture.and_then(|mut capture| {
        capture.child.stop(Duration::from_secs(3)).ok()?;
        Some(capture.path)
    });
    let mut resource_seen = Vec::new();
    for (gateway, mut capture) in resource_captures.into_iter().enumerate() {
        capture.child.stop(Duration::from_secs(3))?;
        resource_seen.extend(resource_deliveries(
            &capture.path,
            gateway,
            world.origin_wall,
        )?);
    }
    let flows = world.flow_records()?;
    let allocations = world.allocations(&played);
    let prediction = model::predict_with(&played, &allocations)
        .map_err(|e| RealError::Unpredictable(format!("{e:?}")))?;
    let mut deliveries: Vec<Seen> = world
        .clients
        .iter()
        .flat_map(|client| client.seen.iter().cloned())
        .collect();
    deliveries.extend(resource_seen);
    let drops = world.drops();
    let tolerance = options.tolerance_ms;
    let mut findings = compare::flows(&prediction.flows, &flows, tolerance);
    findings.extend(compare::deliveries(
        &prediction.deliveries,
        &deliveries,
        tolerance,
    ));
    findings.extend(compare::gateway_drops(&prediction.drops, &drops));
    findings.extend(compare::link_drops(
        &prediction.drops,
        &world.links.drops(),
        tolerance,
    ));
    if world.links.strangers() > 0 {
        findings.push(Finding(format!(
            "the router forwarded {} datagrams between addresses that are no two hosts of the story",
            world.links.strangers()
        )));
    }
    let fast_path = fast_path_against_the_simulation(&played, options.seed, &relay_metrics);
    findings.extend(fast_path.finding.clone());
    for (index, client) in world.clients.iter().enumerate() {
        for error in &client.errors {
            findings.push(Finding(format!("client {index}: {error}")));
        }
    }
    for (index, resources) in world.resources.iter().enumerate() {
        for error in &resources.errors {
            findings.push(Finding(format!("resources of gateway {index}: {error}")));
        }
    }
    Ok(RealRun {
        played,
        prediction,
        flows,
        deliveries,
        drops,
        relay_metrics,
        fast_path,
        pcap,
        findings,
    })
}

/// The XDP program's relaying and dropping verdicts (`tx/*`, `drop/*`) on the real relays must
/// be those of the simulation of the same story, where the same program runs on every
/// datagram through `BPF_PROG_TEST_RUN`. (`pass/*` verdicts are left out: the kernels of the
/// real world send ARP, neighbour discovery and MLD the simulation has no reason to.)
fn fast_path_against_the_simulation(
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
            compared.finding = Some(Finding(
                "the simulation ran its relays without XDP; the fast paths cannot be compared"
                    .into(),
            ));
            return compared;
        }
        Err(error) => {
            compared.finding = Some(Finding(format!(
                "the simulation of the same story failed: {error}"
            )));
            return compared;
        }
    };
    if simulated != real {
        compared.finding = Some(Finding(format!(
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
    finding: Option<Finding>,
}

/// Namespaces of earlier runs whose process is gone (killed before its guards could run), and
/// the servers still running in them, are removed before a run starts.
fn remove_leftovers() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("vpnsim-real-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(output) = std::process::Command::new("ip")
            .args(["netns", "pids", &name])
            .output()
        {
            for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = ip(&["netns", "del", &name]);
        eprintln!("real world: removed {name}, left behind by a run that was killed");
    }
}

struct Capture {
    child: Child,
    path: PathBuf,
}

fn tcpdump_installed() -> bool {
    std::process::Command::new("tcpdump")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// tcpdump in namespace `ns` with `filter` (interface, direction, expression) into `path`.
fn capture(ns: &str, filter: &[String], path: PathBuf, dir: &Path) -> Result<Capture, RealError> {
    let name = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut args: Vec<String> = ["-n", "-U", "-s", "0", "-w"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.push(path.display().to_string());
    args.extend(filter.iter().cloned());
    let child = Child::spawn(
        &format!("tcpdump {name}"),
        ns,
        Path::new("tcpdump"),
        &args,
        &dir.join(format!("tcpdump-{name}.log")),
        false,
    )?;
    Ok(Capture { child, path })
}

/// Every datagram on every interface of the router namespace, for the person reading the run.
fn start_router_capture(router: &str, dir: &Path) -> Option<Capture> {
    if !tcpdump_installed() {
        return None;
    }
    capture(
        router,
        &["-i".into(), "any".into()],
        dir.join("router.pcap"),
        dir,
    )
    .ok()
}

/// What reaches the resources behind gateway `index`: IP packets in on their `eth0` for one
/// of their addresses (ARP and neighbour discovery left out). These are the deliveries to the
/// resource the model predicts.
fn start_resource_capture(
    ns: &str,
    index: usize,
    ips: &[IpAddr],
    dir: &Path,
) -> Result<Capture, RealError> {
    let hosts: Vec<String> = ips.iter().map(|ip| format!("dst host {ip}")).collect();
    let expression = format!(
        "(ip or ip6) and ({}) and not (icmp6 and ip6[40] >= 133 and ip6[40] <= 137)",
        hosts.join(" or ")
    );
    capture(
        ns,
        &[
            "-i".into(),
            "eth0".into(),
            "-Q".into(),
            "in".into(),
            expression,
        ],
        dir.join(format!("resources-{index}.pcap")),
        dir,
    )
}

/// The packets of a resource capture, as deliveries on the run's clock.
fn resource_deliveries(
    path: &Path,
    gateway: usize,
    origin_wall: SystemTime,
) -> Result<Vec<Seen>, RealError> {
    let bytes = std::fs::read(path)
        .map_err(|error| RealError::Setup(format!("{}: {error}", path.display())))?;
    let mut reader = pcap_file::pcap::PcapReader::new(&bytes[..])
        .map_err(|error| RealError::Setup(format!("{}: {error}", path.display())))?;
    let origin = origin_wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut seen = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let packet =
            packet.map_err(|error| RealError::Setup(format!("{}: {error}", path.display())))?;
        // Ethernet: the IP packet starts after 14 bytes.
        let Some(ip) = packet.data.get(14..) else {
            continue;
        };
        seen.push(Seen {
            at_ms: packet.timestamp.saturating_sub(origin).as_millis() as u64,
            to: observation::Receiver::Resource {
                gateway: gateway as u32,
            },
            packet: observation::Packet::parse(ip),
        });
    }
    Ok(seen)
}

/// The running world: processes, in-process hosts, and the scenario's bookkeeping.
struct World {
    links: Links,
    relays: Vec<Child>,
    gateways: Vec<GatewayProcess>,
    clients: Vec<RealClient>,
    resources: Vec<Resources>,
    dns: DnsServer,
    origin: Instant,
    origin_wall: SystemTime,
    /// (client, lower-case domain) -> proxy index.
    proxies: BTreeMap<(usize, String), usize>,
    /// Each client's namespace, where its sockets are opened.
    client_namespaces: Vec<String>,
    /// Each client's socket index (its port is the tunnel port plus this).
    roams: Vec<u16>,
    /// What a restart needs: each gateway's namespace, configuration and control commands so
    /// far, the binary and the run's directory.
    gateway_namespaces: Vec<String>,
    gateway_configs: Vec<String>,
    control_log: Vec<Vec<serde_json::Value>>,
    gateway_binary: PathBuf,
    dir: PathBuf,
}

fn secret() -> String {
    String::from_utf8_lossy(RELAY_SECRET).into_owned()
}

/// REST credentials valid for a day from now (real relays check the expiry with the clock).
fn credentials_for(name: &str) -> credentials::Credentials {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    credentials::rest_api_credentials(RELAY_SECRET, now + 86_400, name)
}

fn families(stack: Stack) -> Families {
    match stack {
        Stack::V4 => Families::V4,
        Stack::V6 => Families::V6,
        Stack::Dual => Families::Dual,
    }
}

impl World {
    fn start(
        scenario: &Scenario,
        plan: &AddressPlan,
        topology: &Topology,
        namespaces: &Namespaces,
        links: Links,
        options: &RealOptions,
    ) -> Result<Self, RealError> {
        let dir = &options.dir;
        let relays = start_relays(scenario, plan, topology, namespaces, options)?;
        let records = scenario
            .topology
            .dns_records
            .iter()
            .map(|r| (r.name.to_ascii_lowercase(), (r.addresses.clone(), r.ttl_s)))
            .collect();
        let dns = namespaces.inside(&topology.dns, || {
            DnsServer::bind(
                &[
                    IpAddr::V4(plan::DNS_SERVER_V4),
                    IpAddr::V6(plan::DNS_SERVER_V6),
                ],
                records,
            )
        })?;
        let (udp_ports, tcp_ports) = ports(scenario);
        let mut resources = Vec::new();
        for (index, ns) in topology.resources.iter().enumerate() {
            let ips = resource_ips(scenario, &scenario.topology.gateways[index].name);
            let udp = udp_ports.get(&index).cloned().unwrap_or_default();
            let tcp = tcp_ports.get(&index).cloned().unwrap_or_default();
            resources.push(namespaces.inside(ns, || Resources::bind(&ips, &udp, &tcp))?);
        }
        let mut gateways = Vec::new();
        let mut gateway_configs = Vec::new();
        for (index, ns) in topology.gateways.iter().enumerate() {
            let config = gateway_config(scenario, plan, index, options.seed);
            gateway_configs.push(config.clone());
            let mut gateway =
                GatewayProcess::start(index, ns, &options.binaries.gateway_server, &config, dir)?;
            gateway.wait_for("listening", Duration::from_secs(10))?;
            if scenario.topology.gateways[index].relay.is_some() {
                gateway.wait_for("relayed", Duration::from_secs(10))?;
            }
            gateways.push(gateway);
        }
        let gateway_sockets: Vec<SocketAddr> = (0..plan.gateways.len())
            .map(|g| SocketAddr::new(plan.gateways[g].preferred(), TUNNEL_PORT))
            .collect();
        let origin = Instant::now();
        let origin_wall = SystemTime::now();
        links.set_origin(origin);
        let mut clients = Vec::new();
        for (index, spec) in scenario.topology.clients.iter().enumerate() {
            let local = plan.client_socket(index, 0);
            let socket = namespaces.inside(&topology.clients[index], || UdpSocket::bind(local))?;
            let turn = spec.relay.as_ref().and_then(|relay| {
                let r = scenario
                    .topology
                    .relays
                    .iter()
                    .position(|x| &x.name == relay)?;
                Some(TurnClientConfig {
                    server: SocketAddr::new(
                        plan.relays[r]
                            .matching(local.ip())
                            .unwrap_or(plan.relays[r].preferred()),
                        plan::TURN_PORT,
                    ),
                    credentials: credentials_for(&spec.name),
                    families: families(scenario.topology.relays[r].stack),
                    lifetime: None,
                    seed: options.seed.wrapping_add(100 + index as u64),
                })
            });
            clients.push(
                RealClient::new(index, socket, &gateway_sockets, turn, origin)
                    .map_err(|error| RealError::Setup(format!("client {index}: {error}")))?,
            );
        }
        Ok(Self {
            links,
            relays,
            gateways,
            clients,
            resources,
            dns,
            origin,
            origin_wall,
            proxies: BTreeMap::new(),
            client_namespaces: topology.clients.clone(),
            roams: vec![0; scenario.topology.clients.len()],
            gateway_namespaces: topology.gateways.clone(),
            control_log: vec![Vec::new(); gateway_configs.len()],
            gateway_configs,
            gateway_binary: options.binaries.gateway_server.clone(),
            dir: options.dir.clone(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn poll(&mut self) -> Result<(), RealError> {
        let now = Instant::now();
        let at_ms = self.now_ms();
        self.dns.poll();
        for resources in &mut self.resources {
            resources.poll();
        }
        for client in &mut self.clients {
            client.poll(now, at_ms);
        }
        for gateway in &mut self.gateways {
            gateway.poll_events();
            if let Some(status) = gateway.child.exited() {
                return Err(RealError::Process(format!(
                    "{} exited during the run ({status})",
                    gateway.child.name
                )));
            }
        }
        Ok(())
    }

    /// Runs the world until the run's time `until_ms`.
    fn run_until(&mut self, until_ms: u64) -> Result<(), RealError> {
        while self.now_ms() < until_ms {
            if interrupt::requested() {
                return Err(RealError::Interrupted);
            }
            self.poll()?;
            std::thread::sleep(Duration::from_micros(500));
        }
        self.poll()
    }

    fn play(
        &mut self,
        scenario: &Scenario,
        plan: &AddressPlan,
        timeline: &Timeline,
    ) -> Result<(), RealError> {
        for (k, step) in scenario.steps.iter().enumerate() {
            self.run_until(timeline.step_start[k])?;
            self.step(scenario, plan, k, step)?;
        }
        self.run_until(timeline.t_end)
    }

    fn step(
        &mut self,
        scenario: &Scenario,
        plan: &AddressPlan,
        k: usize,
        step: &Step,
    ) -> Result<(), RealError> {
        let now = Instant::now();
        let topology = &scenario.topology;
        let client_of = |name: &str| topology.client_index(name);
        match step {
            Step::Path {
                client,
                gateway,
                mode,
            } => {
                let (Some(c), Some(g)) = (client_of(client), topology.gateway_index(gateway))
                else {
                    return Err(RealError::Unsupported(format!("step {k}: unknown host")));
                };
                self.path(plan, c, g, *mode, now)?;
            }
            Step::Udp { target, bytes } => {
                let (c, g, dst) = self.target(scenario, target)?;
                let src = SocketAddr::new(
                    tunnel_ip(plan, c, target.ipv6),
                    AddressPlan::udp_source_port(target.port),
                );
                let payload = vec![(k % 251) as u8; usize::from(*bytes)];
                self.clients[c].send_inner(g, &sim::packets::udp(src, dst, &payload), now);
            }
            Step::TcpOpen {
                conn,
                target,
                src_port,
            } => {
                let (c, g, dst) = self.target(scenario, target)?;
                let port = AddressPlan::tcp_source_port(*conn, *src_port).unwrap_or_default();
                let src = SocketAddr::new(tunnel_ip(plan, c, target.ipv6), port);
                self.clients[c].tcp_open(g, src, dst, now);
            }
            Step::TcpRetransmitSyn { conn } => {
                let (c, src, _) = connection(scenario, plan, *conn)?;
                self.clients[c].tcp_act(src, now, sim::tcp::TcpSide::syn);
            }
            Step::TcpLateAck { conn } => {
                let (c, src, _) = connection(scenario, plan, *conn)?;
                self.clients[c].tcp_act(src, now, |side| side.ack());
            }
            Step::DnsQuery { client, name } => {
                let c = client_of(client)
                    .ok_or_else(|| RealError::Unsupported(format!("step {k}: unknown client")))?;
                self.proxy_index(scenario, c, name)?;
            }
            Step::DnsChange { name, addresses } => self.dns.change(name, addresses),
            Step::Fault { between, fault } => self.links.fault(between, fault, now),
            Step::GatewayRestart { gateway } => {
                let g = topology
                    .gateway_index(gateway)
                    .ok_or_else(|| RealError::Unsupported(format!("step {k}: unknown gateway")))?;
                self.restart(g)?;
            }
            Step::Grant(grant) => {
                let (client, resource, g) =
                    self.grant_parties(scenario, &grant.client, &grant.resource)?;
                self.control(
                    g,
                    json!({"grant": {
                        "client": client, "resource": resource, "filters": grant.filters,
                    }}),
                )?;
            }
            Step::Revoke { client, resource } => {
                let (client, resource, g) = self.grant_parties(scenario, client, resource)?;
                self.control(
                    g,
                    json!({"revoke": {
                        "client": client, "resource": resource,
                    }}),
                )?;
            }
            Step::Roam { client, back } => {
                let c = client_of(client)
                    .ok_or_else(|| RealError::Unsupported(format!("step {k}: unknown client")))?;
                self.roams[c] = if *back {
                    self.roams[c].saturating_sub(1)
                } else {
                    self.roams[c] + 1
                };
                let local = plan.client_socket(c, self.roams[c]);
                let socket = self.namespaces_inside(c, || UdpSocket::bind(local))?;
                self.clients[c]
                    .roam(socket, now)
                    .map_err(|error| RealError::Setup(format!("client {c} roaming: {error}")))?;
            }
            Step::TcpData { conn, from, bytes } => {
                let (c, src, g) = connection(scenario, plan, *conn)?;
                match from {
                    Side::Client => self.clients[c].tcp_act(src, now, |side| side.data(*bytes)),
                    Side::Resource => self.resources[g].send(src, *bytes),
                }
            }
            Step::TcpClose { conn, by } => {
                let (c, src, g) = connection(scenario, plan, *conn)?;
                match by {
                    Side::Client => self.clients[c].tcp_act(src, now, sim::tcp::TcpSide::fin),
                    Side::Resource => self.resources[g].close(src),
                }
            }
            Step::TcpReset { conn, by } => {
                let (c, src, g) = connection(scenario, plan, *conn)?;
                match by {
                    Side::Client => self.clients[c].tcp_act(src, now, sim::tcp::TcpSide::rst),
                    Side::Resource => self.resources[g].reset(src),
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The client, the gateway and the inner destination of a step's target; for a DNS
    /// resource, the client's proxy IP of the name, mapped on the gateway the first time.
    fn target(
        &mut self,
        scenario: &Scenario,
        target: &Target,
    ) -> Result<(usize, usize, SocketAddr), RealError> {
        let topology = &scenario.topology;
        let unknown = || RealError::Unsupported(format!("unknown target {target:?}"));
        let c = topology.client_index(&target.client).ok_or_else(unknown)?;
        let g = topology
            .gateway_of_resource(&target.resource)
            .ok_or_else(unknown)?;
        let resource = &topology.resources[topology
            .resource_index(&target.resource)
            .ok_or_else(unknown)?];
        let ip = match (&resource.address, &target.domain) {
            (ResourceAddress::Cidr(cidr), _) => plan::parse_resource_cidr(cidr)
                .map(|(ip, _)| ip)
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            (ResourceAddress::Dns(_), domain) => {
                let index = self.proxy_index(scenario, c, domain.as_deref().unwrap_or_default())?;
                AddressPlan::proxy_ip(index, target.ipv6)
            }
        };
        Ok((c, g, SocketAddr::new(ip, target.port)))
    }

    /// The index of client `c`'s proxy IPs for `domain`: the next one the first time the
    /// client's stub resolver is asked, when the control plane maps them on the gateways.
    fn proxy_index(
        &mut self,
        scenario: &Scenario,
        c: usize,
        domain: &str,
    ) -> Result<usize, RealError> {
        let domain = domain.to_ascii_lowercase();
        if let Some(index) = self.proxies.get(&(c, domain.clone())) {
            return Ok(*index);
        }
        let index = self.proxies.keys().filter(|(x, _)| *x == c).count();
        self.proxies.insert((c, domain.clone()), index);
        self.map_proxy(scenario, c, index, &domain)?;
        Ok(index)
    }

    /// The client's and the resource's ids and the resource's gateway, for a grant.
    fn grant_parties(
        &self,
        scenario: &Scenario,
        client: &str,
        resource: &str,
    ) -> Result<(usize, usize, usize), RealError> {
        let topology = &scenario.topology;
        let unknown = || RealError::Unsupported(format!("unknown grant {client} -> {resource}"));
        let c = topology.client_index(client).ok_or_else(unknown)?;
        let r = topology.resource_index(resource).ok_or_else(unknown)?;
        let g = topology.gateway_of_resource(resource).ok_or_else(unknown)?;
        Ok((c, r, g))
    }

    /// Runs `f` inside client `c`'s namespace.
    fn namespaces_inside<T>(
        &self,
        c: usize,
        f: impl FnOnce() -> std::io::Result<T>,
    ) -> Result<T, RealError> {
        crate::netns::inside(&self.client_namespaces[c], f)
    }

    /// The control plane maps both proxy IPs of `domain` for client `c` on every gateway with
    /// a DNS resource matching it (as the simulation's runner does).
    fn map_proxy(
        &mut self,
        scenario: &Scenario,
        c: usize,
        index: usize,
        domain: &str,
    ) -> Result<(), RealError> {
        let gateways: BTreeSet<usize> = scenario
            .topology
            .resources
            .iter()
            .filter(|r| matches!(&r.address, ResourceAddress::Dns(p) if plan::domain_matches(p, domain)))
            .filter_map(|r| scenario.topology.gateways.iter().position(|g| g.name == r.gateway))
            .collect();
        for g in gateways {
            for v6 in [false, true] {
                self.control(
                    g,
                    json!({"map_dns": {
                        "client": c,
                        "proxy_ip": AddressPlan::proxy_ip(index, v6),
                        "domain": domain,
                    }}),
                )?;
            }
        }
        // Let the gateway take the mapping before the first packet can reach it.
        std::thread::sleep(Duration::from_millis(2));
        Ok(())
    }

    /// A control-plane command to gateway `g`, remembered for a restart.
    fn control(&mut self, g: usize, command: serde_json::Value) -> Result<(), RealError> {
        self.gateways[g].control(&command)?;
        self.control_log[g].push(command);
        Ok(())
    }

    /// `gateway-restart`: the gateway-server process stops (SIGTERM: its flows are flushed
    /// with `shutdown`), and a fresh one starts with the same configuration and is told again
    /// what the control plane has told the old one (grants, revocations, DNS mappings, paths),
    /// as the simulation's restarted gateway keeps them.
    fn restart(&mut self, g: usize) -> Result<(), RealError> {
        let old = &mut self.gateways[g];
        old.child.stop(Duration::from_secs(5))?;
        old.poll_events();
        let mut fresh = GatewayProcess::start(
            g,
            &self.gateway_namespaces[g],
            &self.gateway_binary,
            &self.gateway_configs[g],
            &self.dir,
        )?;
        fresh.wait_for("listening", Duration::from_secs(10))?;
        // What the old process reported stays part of the run.
        let mut seen = std::mem::take(&mut self.gateways[g].seen);
        seen.retain(|event| event.get("listening").is_none());
        fresh.seen.splice(0..0, seen);
        self.gateways[g] = fresh;
        for command in self.control_log[g].clone() {
            self.gateways[g].control(&command)?;
        }
        Ok(())
    }

    fn relayed_of_gateway(&self, g: usize) -> Vec<SocketAddr> {
        self.gateways[g].relayed()
    }

    /// Tells both ends of a client-gateway pair where to send and whether through their relay
    /// (the simulation runner's `path`).
    fn path(
        &mut self,
        plan: &AddressPlan,
        c: usize,
        g: usize,
        mode: PathMode,
        now: Instant,
    ) -> Result<(), RealError> {
        let client_relayed = self.clients[c].relayed();
        let gateway_relayed = self.relayed_of_gateway(g);
        let of = |addresses: &[SocketAddr], v6: bool| {
            addresses.iter().find(|a| a.is_ipv6() == v6).copied()
        };
        let client_socket = plan.client_socket(c, self.roams[c]);
        let gateway_socket = SocketAddr::new(plan.gateways[g].preferred(), TUNNEL_PORT);
        let chosen = match mode {
            PathMode::Direct => Some((gateway_socket, false, client_socket, false)),
            PathMode::ClientRelayed => of(&client_relayed, gateway_socket.is_ipv6())
                .map(|cr| (gateway_socket, true, cr, false)),
            PathMode::GatewayRelayed => of(&gateway_relayed, client_socket.is_ipv6())
                .map(|gr| (gr, false, client_socket, true)),
            PathMode::SameRelay | PathMode::DifferentRelays => [false, true]
                .into_iter()
                .find_map(|v6| Some((of(&client_relayed, v6)?, of(&gateway_relayed, v6)?)))
                .map(|(cr, gr)| (gr, true, cr, true)),
        };
        let Some((target, client_via, remote, gateway_via)) = chosen else {
            return Err(RealError::Process(format!(
                "path {mode:?}: an allocation is missing (client {client_relayed:?}, gateway {gateway_relayed:?})"
            )));
        };
        self.clients[c].set_path(g, target, client_via, now);
        let command = if gateway_via {
            json!({ "via_relay": remote })
        } else {
            json!({ "direct": remote })
        };
        self.control(g, command)
    }

    fn scrape_relays(
        &self,
        namespaces: &Namespaces,
        plan: &AddressPlan,
    ) -> Vec<BTreeMap<String, f64>> {
        (0..self.relays.len())
            .map(|r| {
                let ns = namespaces.name(&format!("r{r}"));
                namespaces
                    .inside(&ns, || scrape(plan.relays[r].preferred()))
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Every gateway shuts down (SIGTERM: flows flushed); clients keep receiving a moment.
    fn shut_down(&mut self) -> Result<(), RealError> {
        for gateway in &mut self.gateways {
            gateway.child.stop(Duration::from_secs(5))?;
        }
        let until = self.now_ms() + 50;
        while self.now_ms() < until {
            for client in &mut self.clients {
                client.poll(Instant::now(), self.origin.elapsed().as_millis() as u64);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        for gateway in &mut self.gateways {
            gateway.poll_events();
        }
        for relay in &mut self.relays {
            relay.stop(Duration::from_secs(5))?;
        }
        Ok(())
    }

    /// The gateways' flow logs, put on the scenario's clock.
    fn flow_records(&self) -> Result<Vec<FlowRecord>, RealError> {
        let origin_ns = self
            .origin_wall
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let on_scenario_clock = |time: proto::flow::UtcTime| {
            model::utc(time.unix_nanos().saturating_sub(origin_ns) / 1_000_000)
        };
        let mut records = Vec::new();
        for gateway in &self.gateways {
            let text = std::fs::read_to_string(&gateway.flow_log).unwrap_or_default();
            for line in text.lines().filter(|line| !line.trim().is_empty()) {
                let record: FlowRecord = serde_json::from_str(line).map_err(|error| {
                    RealError::Process(format!("{}: {error}: {line}", gateway.flow_log.display()))
                })?;
                records.push(FlowRecord {
                    start: on_scenario_clock(record.start),
                    end: on_scenario_clock(record.end),
                    last_packet: on_scenario_clock(record.last_packet),
                    ..record
                });
            }
        }
        Ok(records)
    }

    fn allocations(&self, scenario: &Scenario) -> Allocations {
        let split = |addresses: Vec<SocketAddr>| RelayedAddresses {
            v4: addresses.iter().find(|a| a.is_ipv4()).copied(),
            v6: addresses.iter().find(|a| a.is_ipv6()).copied(),
        };
        Allocations {
            clients: self.clients.iter().map(|c| split(c.relayed())).collect(),
            gateways: (0..scenario.topology.gateways.len())
                .map(|g| split(self.relayed_of_gateway(g)))
                .collect(),
        }
    }

    fn drops(&self) -> Vec<(u32, Option<u32>, String)> {
        let mut drops = Vec::new();
        for (g, gateway) in self.gateways.iter().enumerate() {
            for event in &gateway.seen {
                if let Some(drop) = event.get("drop") {
                    drops.push((
                        g as u32,
                        drop.get("client")
                            .and_then(serde_json::Value::as_u64)
                            .map(|c| c as u32),
                        drop.get("reason")
                            .and_then(serde_json::Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    ));
                }
            }
        }
        drops
    }
}

fn tunnel_ip(plan: &AddressPlan, client: usize, ipv6: bool) -> IpAddr {
    if ipv6 {
        IpAddr::V6(plan.tunnel_v6[client])
    } else {
        IpAddr::V4(plan.tunnel_v4[client])
    }
}

/// The client, its inner address and the gateway of connection `conn`, from the step that
/// opened it.
fn connection(
    scenario: &Scenario,
    plan: &AddressPlan,
    conn: u32,
) -> Result<(usize, SocketAddr, usize), RealError> {
    let topology = &scenario.topology;
    scenario
        .tcp_open_of(conn)
        .and_then(|(target, src_port)| {
            let client = topology.client_index(&target.client)?;
            let gateway = topology.gateway_of_resource(&target.resource)?;
            let port = AddressPlan::tcp_source_port(conn, src_port)?;
            Some((
                client,
                SocketAddr::new(tunnel_ip(plan, client, target.ipv6), port),
                gateway,
            ))
        })
        .ok_or_else(|| RealError::Unsupported(format!("connection {conn} is never opened")))
}

/// The UDP and TCP ports the steps use, per gateway (by the gateway of the target resource).
fn ports(scenario: &Scenario) -> (BTreeMap<usize, Vec<u16>>, BTreeMap<usize, Vec<u16>>) {
    let topology = &scenario.topology;
    let (mut udp, mut tcp) = (
        BTreeMap::<usize, Vec<u16>>::new(),
        BTreeMap::<usize, Vec<u16>>::new(),
    );
    for step in &scenario.steps {
        let (map, target) = match step {
            Step::Udp { target, .. } => (&mut udp, target),
            Step::TcpOpen { target, .. } => (&mut tcp, target),
            _ => continue,
        };
        if let Some(g) = topology.gateway_of_resource(&target.resource) {
            let ports = map.entry(g).or_default();
            if !ports.contains(&target.port) {
                ports.push(target.port);
            }
        }
    }
    (udp, tcp)
}

fn start_relays(
    scenario: &Scenario,
    plan: &AddressPlan,
    topology: &Topology,
    namespaces: &Namespaces,
    options: &RealOptions,
) -> Result<Vec<Child>, RealError> {
    let mut relays = Vec::new();
    for (r, ns) in topology.relays.iter().enumerate() {
        let addresses = plan.relays[r];
        let mut args = Vec::new();
        if let Some(v4) = addresses.v4 {
            args.extend(["--public-v4".to_owned(), v4.to_string()]);
        }
        if let Some(v6) = addresses.v6 {
            args.extend(["--public-v6".to_owned(), v6.to_string()]);
        }
        args.extend(
            [
                "--shared-secret",
                &secret(),
                "--realm",
                RELAY_REALM,
                "--xdp",
                "eth0",
                "--xdp-mode",
                "generic",
                "--metrics",
                &SocketAddr::new(addresses.preferred(), METRICS_PORT).to_string(),
                "--seed",
                &options.seed.wrapping_add(r as u64).to_string(),
                "--allocation-quota",
                &RELAY_ALLOCATION_QUOTA.to_string(),
                "--max-permissions",
                &RELAY_MAX_PERMISSIONS.to_string(),
                "--max-channels",
                &RELAY_MAX_CHANNELS.to_string(),
            ]
            .map(str::to_owned),
        );
        let mut child = Child::spawn(
            &format!("relay-server {}", scenario.topology.relays[r].name),
            ns,
            &options.binaries.relay_server,
            &args,
            &options.dir.join(format!("relay-{r}.log")),
            false,
        )?;
        // Ready once its metrics answer.
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            if namespaces
                .inside(ns, || scrape(addresses.preferred()))
                .is_ok()
            {
                break;
            }
            if let Some(status) = child.exited() {
                return Err(RealError::Process(format!(
                    "{} exited at start ({status}); see {}",
                    child.name,
                    options.dir.join(format!("relay-{r}.log")).display()
                )));
            }
            if Instant::now() >= give_up {
                return Err(RealError::Process(format!("{} did not start", child.name)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        relays.push(child);
    }
    Ok(relays)
}

/// gateway-server's configuration for gateway `index`: the settings, sessions, resources and
/// grants the simulation gives it.
fn gateway_config(scenario: &Scenario, plan: &AddressPlan, index: usize, seed: u64) -> String {
    let topology = &scenario.topology;
    let spec = &topology.gateways[index];
    let addresses = plan.gateways[index];
    let ip = addresses.preferred();
    let listen: Vec<String> = [addresses.v4.map(IpAddr::V4), addresses.v6.map(IpAddr::V6)]
        .into_iter()
        .flatten()
        .map(|ip| SocketAddr::new(ip, TUNNEL_PORT).to_string())
        .collect();
    let clients: Vec<serde_json::Value> = (0..topology.clients.len())
        .map(|c| {
            let session = AddressPlan::session(c);
            json!({
                "id": c,
                "session_id": session.id,
                "key": session.key.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                "tunnel_v4": plan.tunnel_v4[c],
                "tunnel_v6": plan.tunnel_v6[c],
            })
        })
        .collect();
    let resources: Vec<serde_json::Value> = topology
        .resources
        .iter()
        .enumerate()
        .filter(|(_, r)| r.gateway == spec.name)
        .map(|(id, r)| match &r.address {
            ResourceAddress::Cidr(cidr) => json!({ "id": id, "cidr": cidr }),
            ResourceAddress::Dns(pattern) => json!({ "id": id, "dns": pattern }),
        })
        .collect();
    let grants: Vec<serde_json::Value> = topology
        .grants
        .iter()
        .filter_map(|grant| {
            let client = topology
                .clients
                .iter()
                .position(|c| c.name == grant.client)?;
            let resource = topology
                .resources
                .iter()
                .position(|r| r.name == grant.resource)?;
            (topology.resources[resource].gateway == spec.name).then(
                || json!({ "client": client, "resource": resource, "filters": grant.filters }),
            )
        })
        .collect();
    let relay = spec.relay.as_ref().and_then(|name| {
        let r = topology.relays.iter().position(|x| &x.name == name)?;
        let credentials = credentials_for(&spec.name);
        let families = match topology.relays[r].stack {
            Stack::V4 => "v4",
            Stack::V6 => "v6",
            Stack::Dual => "both",
        };
        Some(json!({
            "server": SocketAddr::new(
                plan.relays[r].matching(ip).unwrap_or(plan.relays[r].preferred()),
                plan::TURN_PORT,
            ),
            "username": credentials.username,
            "password": credentials.password,
            "families": families,
        }))
    });
    let ports = plan::GATEWAY_DNS_PORTS;
    let mut config = json!({
        "tun": "tun0",
        "listen": listen,
        "dns_server": plan::dns_server(ip),
        "dns_source_ports": format!("{}-{}", ports.start(), ports.end()),
        "idle_timeout_s": topology.idle_timeout_s.unwrap_or(DEFAULT_IDLE_TIMEOUT_S),
        "dns_min_ttl_s": DNS_MIN_TTL_S,
        "dns_max_ttl_s": DNS_MAX_TTL_S,
        "dns_queue_limit": DNS_QUEUE_LIMIT,
        "max_flows_per_client": GATEWAY_MAX_FLOWS_PER_CLIENT,
        "seed": seed,
        "clients": clients,
        "resources": resources,
        "grants": grants,
    });
    if let Some(relay) = relay {
        config["relay"] = relay;
    }
    serde_yaml_ng::to_string(&config).unwrap_or_default()
}
