//! The running world: the processes, the in-process hosts (clients, resources, DNS), the
//! links, and the scenario's bookkeeping; it plays the steps at their times.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    path::PathBuf,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use model::{Allocations, RelayedAddresses};
use proto::flow::FlowRecord;
use scenario_format::{
    PathMode, ResourceAddress, Scenario, Side, Step, Target,
    plan::{self, AddressPlan, TUNNEL_PORT},
    timing::Timeline,
};
use serde_json::json;
use turn_client::TurnClientConfig;

use crate::{
    RealError,
    client::RealClient,
    interrupt,
    launch::{credentials_for, families, gateway_config, start_relays},
    links::Links,
    netns::Namespaces,
    processes::{Child, GatewayProcess, scrape},
    punctuality::{GapMeter, Punctuality, steal_ms_so_far},
    run::RealOptions,
    servers::{DnsServer, Resources},
    topology::{Topology, resource_ips},
};

/// The running world: processes, in-process hosts, and the scenario's bookkeeping.
pub(crate) struct World {
    pub(crate) links: Links,
    relays: Vec<Child>,
    gateways: Vec<GatewayProcess>,
    pub(crate) clients: Vec<RealClient>,
    pub(crate) resources: Vec<Resources>,
    dns: DnsServer,
    origin: Instant,
    pub(crate) origin_wall: SystemTime,
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
    /// How long the run went without reading its sockets, while waiting for a step.
    polls: GapMeter,
    /// Each step's start on the timeline, and how late its work was done.
    pub(crate) steps_late: Vec<(u64, u64)>,
    /// The machine's steal time when the story began.
    steal_at_origin_ms: u64,
}

impl World {
    pub(crate) fn start(
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
            polls: GapMeter::default(),
            steps_late: Vec::new(),
            steal_at_origin_ms: steal_ms_so_far(),
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
        // A step's own work (a restart, say) is not a gap in reading.
        self.polls.restart();
        while self.now_ms() < until_ms {
            if interrupt::requested() {
                return Err(RealError::Interrupted);
            }
            self.polls.look(Instant::now());
            self.poll()?;
            std::thread::sleep(Duration::from_micros(500));
        }
        self.poll()
    }

    pub(crate) fn play(
        &mut self,
        scenario: &Scenario,
        plan: &AddressPlan,
        timeline: &Timeline,
    ) -> Result<(), RealError> {
        for (k, step) in scenario.steps.iter().enumerate() {
            self.run_until(timeline.step_start[k])?;
            self.step(scenario, plan, k, step)?;
            // Measured once the step's work is done (its packets sent, its control commands
            // written), which the model takes to be instant; a restart's work is starting a
            // process, which takes longer by design, and is left out.
            let late = match step {
                Step::GatewayRestart { .. } => 0,
                _ => self.now_ms().saturating_sub(timeline.step_start[k]),
            };
            self.steps_late.push((timeline.step_start[k], late));
        }
        self.run_until(timeline.t_end)
    }

    /// How punctual the world's own machinery has been since the story began.
    pub(crate) fn punctuality(&self) -> Punctuality {
        Punctuality {
            step_late_ms: self
                .steps_late
                .iter()
                .map(|(_, late)| *late)
                .max()
                .unwrap_or(0),
            poll_gap_ms: self.polls.longest_ms(),
            links_gap_ms: self.links.longest_gap_ms(),
            steal_ms: steal_ms_so_far().saturating_sub(self.steal_at_origin_ms),
        }
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
                self.clients[c].tcp_open(g, *conn, src, dst, now);
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
            Step::TcpSimultaneousClose { conn } => {
                let (c, src, g) = connection(scenario, plan, *conn)?;
                self.clients[c].tcp_act(src, now, sim::tcp::TcpSide::fin);
                self.resources[g].close(src);
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
        // Let the gateway take the mapping before the first packet can reach it (the packet
        // has the link's latency still to go). Waiting for the gateway's `control_applied`
        // instead would hold the step for as long as the gateway takes to apply its first
        // two mappings (15-17 ms on this machine), where the model's mapping is instant; this
        // way the mapping goes on while the packet travels.
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

    pub(crate) fn scrape_relays(
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

    /// At the story's end every gateway shuts down at once (SIGTERM: the flows still open are
    /// flushed, their `end` the moment of the shutdown, as the model's run end); clients keep
    /// receiving a moment. The relays keep running, for their metrics.
    pub(crate) fn shut_down_gateways(&mut self) -> Result<(), RealError> {
        // Signalled together, before anything else: one gateway's exit must not wait for
        // another's, nor for the relays' metrics.
        for gateway in &self.gateways {
            gateway.child.terminate();
        }
        for gateway in &mut self.gateways {
            gateway.child.wait_for_exit(Duration::from_secs(5))?;
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
        Ok(())
    }

    /// The relays stop, once their metrics are read.
    pub(crate) fn shut_down_relays(&mut self) -> Result<(), RealError> {
        for relay in &mut self.relays {
            relay.stop(Duration::from_secs(5))?;
        }
        Ok(())
    }

    /// The gateways' flow logs, put on the scenario's clock.
    pub(crate) fn flow_records(&self) -> Result<Vec<FlowRecord>, RealError> {
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

    pub(crate) fn allocations(&self, scenario: &Scenario) -> Allocations {
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

    pub(crate) fn drops(&self) -> Vec<(u32, Option<u32>, String)> {
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
