//! The model's own discrete-event run of a scenario: an abstract network (links with latencies
//! and faults, relays that forward at once, the TUN link, the DNS server), scripted clients and
//! resource responders, and the gateway's flow rules. Events at one millisecond run in a fixed
//! order: the step's action first, then datagrams in the order they were scheduled. Wherever
//! that order could change the outcome (and the contract does not fix it), the run stops with
//! [`Unpredictable`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use scenario::plan::{AddressPlan, TUNNEL_PORT};
use scenario::{Fault, PathMode, ResourceAddress, Scenario, Side, Step, Target};

use crate::rules::{self, Rules, is_proxy_ip, seq_ge};
use crate::{
    Allocations, CLIENT_ISN, ClientId, CloseReason, DEFAULT_IDLE_TIMEOUT_S, DNS_MIN_TTL_S,
    DNS_QUEUE_LIMIT, Delivery, DropPlace, DropReason, ExpectedDrop, FlowRecord, OuterContext,
    Packet, PacketKind, Prediction, Protocol, RESOURCE_ISN, Receiver, ResourceId, TUN_MS, TcpFlags,
    Timeline, Unpredictable, timeline, utc,
};

type Result<T> = std::result::Result<T, Unpredictable>;

/// A link, by its two host names in sorted order.
type Link = (String, String);

fn link(a: &str, b: &str) -> Link {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

#[derive(Debug, Clone)]
struct Hop {
    link: Link,
    ms: u64,
    /// The address family the datagram travels in on this hop.
    v6: bool,
}

/// The time a relay takes to pass a datagram from one hop to the next: nothing, or 1 ms when
/// it leaves in the other address family (docs/harness.md, "Paths").
fn crossing_ms(arrived: &Hop, leaving: &Hop) -> u64 {
    u64::from(arrived.v6 != leaving.v6)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToGateway,
    ToClient,
}

/// A tunnel frame on its way between a client and a gateway.
#[derive(Debug, Clone)]
struct Frame {
    direction: Direction,
    client: usize,
    gateway: usize,
    /// The gateway's `(remote, local)` view of the path the frame travels.
    context: OuterContext,
    /// Hops in travel order.
    hops: Vec<Hop>,
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
        packet: Packet,
        conn: Option<u32>,
        step: usize,
    },
    /// A packet from the resource responder reaches the gateway's TUN side.
    FromResource {
        gateway: usize,
        packet: Packet,
        conn: Option<u32>,
        step: usize,
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

#[derive(Debug, Default)]
struct LinkState {
    partitioned: bool,
    holding: bool,
    held: Vec<(Frame, usize)>,
    drop_next: u32,
    /// A fault was active on this relay link during an idle step: TURN refreshes may have been
    /// lost, so later traffic over it is not modelled.
    tainted: bool,
    /// Sends per millisecond, and whether a `drop-next` budget was pending at one of them.
    sends: BTreeMap<u64, (u32, bool)>,
}

impl LinkState {
    fn active(&self) -> bool {
        self.partitioned || self.holding || !self.held.is_empty() || self.drop_next > 0
    }
}

#[derive(Debug)]
struct ClientState {
    roams: u16,
    /// Path mode per gateway.
    paths: Vec<PathMode>,
    /// Names the stub resolver handed proxy IPs for, lowercase, in order (index `n`).
    domains: Vec<String>,
}

/// One side of a scripted TCP connection.
#[derive(Debug, Default, Clone)]
struct TcpEnd {
    snd_nxt: u32,
    rcv_nxt: Option<u32>,
    fin_sent: bool,
}

#[derive(Debug)]
struct Conn {
    client: usize,
    gateway: usize,
    /// Client tunnel IP and port.
    src: SocketAddr,
    /// What the client sends to (proxy IP for DNS resources).
    dst: SocketAddr,
    client_end: TcpEnd,
    resource_end: TcpEnd,
    /// The address the resource responder saw the SYN at (set when it first arrives).
    resource_addr: Option<SocketAddr>,
    /// A segment carrying sequence space (data, FIN, SYN-ACK) was lost or held.
    disturbed: bool,
}

#[derive(Debug)]
struct OpenFlow {
    client: usize,
    resource: usize,
    protocol: Protocol,
    src: SocketAddr,
    /// The destination IP the client uses (proxy IP for DNS resources).
    visible: IpAddr,
    real: IpAddr,
    dst_port: u16,
    domain: Option<String>,
    outer: Vec<OuterContext>,
    start: u64,
    last: u64,
    tx_packets: u64,
    tx_bytes: u64,
    rx_packets: u64,
    rx_bytes: u64,
    /// Per side (0 client, 1 resource): the acknowledgement number that covers its first FIN.
    fin: [Option<u32>; 2],
    acked: [bool; 2],
    conn: Option<u32>,
}

#[derive(Debug)]
struct Queued {
    context: OuterContext,
    back: Vec<Hop>,
    packet: Packet,
    conn: Option<u32>,
    step: usize,
}

#[derive(Debug)]
struct Mapping {
    client: usize,
    proxy: IpAddr,
    domain: String,
    v6: bool,
    in_use: Option<IpAddr>,
    resolving: bool,
    generation: u64,
    queue: Vec<Queued>,
    /// Last time a client packet looked for an answer to start a flow.
    new_flow_at: Option<u64>,
    /// Last time an answer changed the real IP in use or failed.
    change_at: Option<u64>,
}

#[derive(Debug, Default)]
struct GatewayState {
    epoch: u32,
    flows: Vec<OpenFlow>,
    /// Per client: the outer context of the last accepted frame and the hops back to it.
    contexts: BTreeMap<usize, (OuterContext, Vec<Hop>)>,
    mappings: Vec<Mapping>,
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
    records: BTreeMap<String, (Vec<IpAddr>, u32)>,
    events: BTreeMap<(u64, u8, u64), Event>,
    sequence: u64,
    clients: Vec<ClientState>,
    gateways: Vec<GatewayState>,
    links: BTreeMap<Link, LinkState>,
    conns: BTreeMap<u32, Conn>,
    step: Option<usize>,
    out: Prediction,
}

pub(crate) fn run(scenario: &Scenario, allocations: &Allocations) -> Result<Prediction> {
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
    let mut records = BTreeMap::new();
    for record in &topology.dns_records {
        records.insert(
            record.name.to_ascii_lowercase(),
            (record.addresses.clone(), record.ttl_s),
        );
    }
    let mut engine = Engine {
        scenario,
        plan: AddressPlan::new(scenario),
        allocations,
        timeline: timeline(scenario),
        idle_ms: idle_s * 1000,
        dns_ms: u64::from(topology.latency.default_ms),
        rules,
        records,
        events: BTreeMap::new(),
        sequence: 0,
        clients: topology
            .clients
            .iter()
            .map(|_| ClientState {
                roams: 0,
                paths: vec![PathMode::Direct; topology.gateways.len()],
                domains: Vec::new(),
            })
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
        },
    };
    for k in 0..scenario.steps.len() {
        let at = engine.timeline.step_start[k];
        engine.schedule_class(at, 0, Event::Step(k));
    }
    engine.run_events()?;
    engine.finish()?;
    Ok(engine.out)
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
                self.within_step(frame.step, at)?;
                if index + 1 < frame.hops.len() {
                    let at = at + crossing_ms(&frame.hops[index], &frame.hops[index + 1]);
                    self.send_hop(frame, index + 1, at)
                } else {
                    match frame.direction {
                        Direction::ToGateway => self.gateway_from_client(frame, at),
                        Direction::ToClient => self.client_receive(frame, at),
                    }
                }
            }
            Event::AtResource {
                gateway,
                packet,
                conn,
                step,
            } => {
                self.within_step(step, at)?;
                self.resource_receive(gateway, packet, conn, step, at)
            }
            Event::FromResource {
                gateway,
                packet,
                conn,
                step,
            } => {
                self.within_step(step, at)?;
                self.gateway_from_resource(gateway, packet, conn, step, at)
            }
            Event::DnsAtServer {
                gateway,
                epoch,
                mapping,
            } => {
                if epoch != self.gateways[gateway].epoch {
                    return self.fail("a DNS query was in flight across a gateway restart");
                }
                let m = &self.gateways[gateway].mappings[mapping];
                let answer = self.records.get(&m.domain.to_ascii_lowercase()).and_then(
                    |(addresses, ttl)| {
                        addresses
                            .iter()
                            .find(|a| a.is_ipv6() == m.v6)
                            .map(|a| (*a, u64::from(*ttl).max(DNS_MIN_TTL_S) * 1000))
                    },
                );
                self.schedule(
                    at + self.dns_ms,
                    Event::DnsAnswer {
                        gateway,
                        epoch,
                        mapping,
                        answer,
                    },
                );
                Ok(())
            }
            Event::DnsAnswer {
                gateway,
                epoch,
                mapping,
                answer,
            } => {
                if epoch != self.gateways[gateway].epoch {
                    return self.fail("a DNS answer was in flight across a gateway restart");
                }
                self.dns_answer(gateway, mapping, answer, at)
            }
            Event::DnsExpiry {
                gateway,
                epoch,
                mapping,
                generation,
            } => {
                let m = &self.gateways[gateway].mappings[mapping];
                if epoch == self.gateways[gateway].epoch && generation == m.generation {
                    self.expire(gateway, at);
                    self.start_query(gateway, mapping, at);
                }
                Ok(())
            }
        }
    }

    // ---------------------------------------------------------------- steps

    fn client_index(&self, name: &str) -> Result<usize> {
        rules::client_index(&self.scenario.topology, name).or_else(|e| self.fail(e))
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

    fn do_step(&mut self, k: usize, t: u64) -> Result<()> {
        let step = self.scenario.steps[k].clone();
        match step {
            Step::Udp { target, bytes } => {
                let (c, g, dst) = self.target(&target, t)?;
                let src_port = 40000 + target.port % 20000;
                let packet = Packet {
                    src: SocketAddr::new(self.tunnel_ip(c, target.ipv6), src_port),
                    dst,
                    kind: PacketKind::Udp { payload: bytes },
                };
                self.send_from_client(c, g, packet, None, k, t)
            }
            Step::TcpOpen { conn, target } => {
                let (c, g, dst) = self.target(&target, t)?;
                let Some(src_port) = u16::try_from(30000 + u64::from(conn))
                    .ok()
                    .filter(|p| *p != 0)
                else {
                    return self.fail(format!(
                        "connection {conn} has no source port (30000 + conn)"
                    ));
                };
                let src = SocketAddr::new(self.tunnel_ip(c, target.ipv6), src_port);
                self.conns.insert(
                    conn,
                    Conn {
                        client: c,
                        gateway: g,
                        src,
                        dst,
                        client_end: TcpEnd {
                            snd_nxt: CLIENT_ISN.wrapping_add(1),
                            ..TcpEnd::default()
                        },
                        resource_end: TcpEnd::default(),
                        resource_addr: None,
                        disturbed: false,
                    },
                );
                self.client_syn(conn, k, t)
            }
            Step::TcpRetransmitSyn { conn } => self.client_syn(conn, k, t),
            Step::TcpData { conn, from, bytes } => {
                self.initiate(conn, from, TcpFlags::PSH_ACK, bytes, k, t, |end, bytes| {
                    end.snd_nxt = end.snd_nxt.wrapping_add(u32::from(bytes))
                })
            }
            Step::TcpClose { conn, by } => {
                self.initiate(conn, by, TcpFlags::FIN_ACK, 0, k, t, |end, _| {
                    end.snd_nxt = end.snd_nxt.wrapping_add(1);
                    end.fin_sent = true;
                })
            }
            Step::TcpReset { conn, by } => {
                self.initiate(conn, by, TcpFlags::RST_ACK, 0, k, t, |_, _| {})
            }
            Step::TcpLateAck { conn } => {
                self.initiate(conn, Side::Client, TcpFlags::ACK, 0, k, t, |_, _| {})
            }
            Step::DnsQuery { client, name } => {
                let c = self.client_index(&client)?;
                self.stub_query(c, &name, t);
                Ok(())
            }
            Step::Path {
                client,
                gateway,
                mode,
            } => {
                let c = self.client_index(&client)?;
                let g = self.gateway_index(&gateway)?;
                self.clients[c].paths[g] = mode;
                self.turn_links_clear(&client, &gateway, mode)
            }
            Step::Roam { client } => {
                let c = self.client_index(&client)?;
                let roams = self.clients[c].roams + 1;
                if u32::from(TUNNEL_PORT) + u32::from(roams) > u32::from(u16::MAX) {
                    return self.fail("the client ran out of ports to roam to");
                }
                self.clients[c].roams = roams;
                Ok(())
            }
            Step::Grant(grant) => {
                let topology = &self.scenario.topology;
                if let Err(e) =
                    self.rules
                        .grant(topology, &grant.client, &grant.resource, &grant.filters)
                {
                    return self.fail(e);
                }
                Ok(())
            }
            Step::Revoke { client, resource } => {
                let c = self.client_index(&client)?;
                let r = rules::resource_index(&self.scenario.topology, &resource)
                    .or_else(|e| self.fail(e))?;
                let g = self.rules.resources[r].0;
                self.expire(g, t);
                self.close_where(g, t, CloseReason::Revoked, |f| {
                    f.client == c && f.resource == r
                });
                self.rules.grants.remove(&(c, r));
                Ok(())
            }
            Step::DnsChange { name, addresses } => {
                let entry = self
                    .records
                    .entry(name.to_ascii_lowercase())
                    .or_insert((Vec::new(), 300));
                entry.0 = addresses;
                Ok(())
            }
            Step::Fault { between, fault } => {
                let key = link(&between[0], &between[1]);
                let state = self.links.entry(key).or_default();
                match fault {
                    Fault::Partition => state.partitioned = true,
                    Fault::Heal => state.partitioned = false,
                    Fault::Hold => state.holding = true,
                    Fault::DropNext(n) => state.drop_next = state.drop_next.saturating_add(n),
                    Fault::Release => {
                        state.holding = false;
                        let held = std::mem::take(&mut state.held);
                        for (mut frame, index) in held {
                            frame.step = k;
                            self.schedule(t, Event::Hop { frame, index });
                        }
                    }
                }
                Ok(())
            }
            Step::GatewayRestart { gateway } => {
                let g = self.gateway_index(&gateway)?;
                self.shutdown(g, t);
                let state = &mut self.gateways[g];
                if state.mappings.iter().any(|m| !m.queue.is_empty()) {
                    return self.fail("packets were queued for DNS across a gateway restart");
                }
                state.epoch += 1;
                state.contexts.clear();
                for m in &mut state.mappings {
                    m.in_use = None;
                    m.resolving = false;
                    m.generation += 1;
                    m.new_flow_at = None;
                    m.change_at = None;
                }
                for mapping in 0..self.gateways[g].mappings.len() {
                    self.start_query(g, mapping, t);
                }
                Ok(())
            }
            Step::Idle { .. } => {
                let relays: BTreeSet<&str> = self
                    .scenario
                    .topology
                    .relays
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect();
                for ((a, b), state) in &mut self.links {
                    if state.active()
                        && (relays.contains(a.as_str()) || relays.contains(b.as_str()))
                    {
                        state.tainted = true;
                    }
                }
                Ok(())
            }
        }
    }

    fn tunnel_ip(&self, client: usize, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.plan.tunnel_v6[client])
        } else {
            IpAddr::V4(self.plan.tunnel_v4[client])
        }
    }

    /// Where a traffic step goes: client, gateway, destination as the client sends it.
    fn target(&mut self, target: &Target, t: u64) -> Result<(usize, usize, SocketAddr)> {
        let scenario = self.scenario;
        let c = self.client_index(&target.client)?;
        let r = rules::resource_index(&scenario.topology, &target.resource)
            .or_else(|e| self.fail(e))?;
        let spec = &scenario.topology.resources[r];
        let g = self.gateway_index(&spec.gateway)?;
        let ip = match (&spec.address, &target.domain) {
            (ResourceAddress::Cidr(text), _) => match scenario::plan::parse_resource_cidr(text) {
                Ok((ip, _)) => ip,
                Err(e) => return self.fail(e),
            },
            (ResourceAddress::Dns(_), Some(domain)) => {
                let domain = domain.clone();
                self.stub_query(c, &domain, t);
                let lower = domain.to_ascii_lowercase();
                let Some(n) = self.clients[c].domains.iter().position(|d| *d == lower) else {
                    return self.fail(format!("`{domain}` matches no DNS resource"));
                };
                AddressPlan::proxy_ip(n, target.ipv6)
            }
            (ResourceAddress::Dns(_), None) => return self.fail("a DNS target needs a domain"),
        };
        Ok((c, g, SocketAddr::new(ip, target.port)))
    }

    /// The client's stub resolver answers a query: a name matching a DNS resource gets the next
    /// proxy index, and every gateway serving a matching DNS resource is told both proxy IPs
    /// (A and AAAA), resolving them at once.
    fn stub_query(&mut self, c: usize, name: &str, t: u64) {
        let lower = name.to_ascii_lowercase();
        if self.clients[c].domains.contains(&lower) {
            return;
        }
        let gateways: Vec<usize> = (0..self.gateways.len())
            .filter(|g| self.rules.gateway_has_domain(*g, name))
            .collect();
        if gateways.is_empty() {
            return;
        }
        let n = self.clients[c].domains.len();
        self.clients[c].domains.push(lower);
        for g in gateways {
            for v6 in [false, true] {
                self.gateways[g].mappings.push(Mapping {
                    client: c,
                    proxy: AddressPlan::proxy_ip(n, v6),
                    domain: name.to_owned(),
                    v6,
                    in_use: None,
                    resolving: false,
                    generation: 0,
                    queue: Vec::new(),
                    new_flow_at: None,
                    change_at: None,
                });
                let mapping = self.gateways[g].mappings.len() - 1;
                self.start_query(g, mapping, t);
            }
        }
    }

    fn start_query(&mut self, g: usize, mapping: usize, t: u64) {
        self.gateways[g].mappings[mapping].resolving = true;
        let epoch = self.gateways[g].epoch;
        self.schedule(
            t + self.dns_ms,
            Event::DnsAtServer {
                gateway: g,
                epoch,
                mapping,
            },
        );
    }

    fn client_syn(&mut self, conn: u32, k: usize, t: u64) -> Result<()> {
        let Some(state) = self.conns.get(&conn) else {
            return self.fail(format!("connection {conn} was never opened"));
        };
        let (c, g) = (state.client, state.gateway);
        let packet = Packet {
            src: state.src,
            dst: state.dst,
            kind: PacketKind::Tcp {
                flags: TcpFlags::SYN,
                seq: CLIENT_ISN,
                ack: 0,
                payload: 0,
            },
        };
        self.send_from_client(c, g, packet, Some(conn), k, t)
    }

    /// A TCP segment a side sends on its own (data, FIN, RST, late ACK): `seq` is the side's
    /// next sequence number, `ack` what it has received; `advance` then moves its state.
    #[allow(clippy::too_many_arguments)]
    fn initiate(
        &mut self,
        conn: u32,
        side: Side,
        flags: TcpFlags,
        payload: u16,
        k: usize,
        t: u64,
        advance: impl FnOnce(&mut TcpEnd, u16),
    ) -> Result<()> {
        let Some(state) = self.conns.get_mut(&conn) else {
            return self.fail(format!("connection {conn} was never opened"));
        };
        let (c, g) = (state.client, state.gateway);
        match side {
            Side::Client => {
                let end = &mut state.client_end;
                let packet = Packet {
                    src: state.src,
                    dst: state.dst,
                    kind: PacketKind::Tcp {
                        flags,
                        seq: end.snd_nxt,
                        ack: end.rcv_nxt.unwrap_or(0),
                        payload,
                    },
                };
                advance(end, payload);
                self.send_from_client(c, g, packet, Some(conn), k, t)
            }
            Side::Resource => {
                // The responder acts only on a connection it has seen (its SYN arrived).
                let Some(from) = state.resource_addr else {
                    return Ok(());
                };
                let end = &mut state.resource_end;
                let packet = Packet {
                    src: from,
                    dst: state.src,
                    kind: PacketKind::Tcp {
                        flags,
                        seq: end.snd_nxt,
                        ack: end.rcv_nxt.unwrap_or(0),
                        payload,
                    },
                };
                advance(end, payload);
                self.schedule(
                    t + TUN_MS,
                    Event::FromResource {
                        gateway: g,
                        packet,
                        conn: Some(conn),
                        step: k,
                    },
                );
                Ok(())
            }
        }
    }

    // ---------------------------------------------------------------- paths and links

    fn latency(&self, a: &str, b: &str) -> u64 {
        let latency = &self.scenario.topology.latency;
        latency
            .links
            .iter()
            .find(|l| {
                (l.between[0] == a && l.between[1] == b) || (l.between[0] == b && l.between[1] == a)
            })
            .map_or(latency.default_ms, |l| l.ms)
            .into()
    }

    fn hop(&self, a: &str, b: &str, v6: bool) -> Hop {
        Hop {
            link: link(a, b),
            ms: self.latency(a, b),
            v6,
        }
    }

    /// A path through a relay makes the host bind a channel (or create a permission) there at
    /// once; over a faulted link that exchange fails, and when the host's data flows again is
    /// not in the contract.
    fn turn_links_clear(&self, client: &str, gateway: &str, mode: PathMode) -> Result<()> {
        let topology = &self.scenario.topology;
        let client_relay = topology
            .clients
            .iter()
            .find(|c| c.name == client)
            .and_then(|c| c.relay.clone());
        let gateway_relay = topology
            .gateways
            .iter()
            .find(|g| g.name == gateway)
            .and_then(|g| g.relay.clone());
        let uses = match mode {
            PathMode::Direct => vec![],
            PathMode::ClientRelayed => vec![(client, client_relay)],
            PathMode::GatewayRelayed => vec![(gateway, gateway_relay)],
            PathMode::SameRelay | PathMode::DifferentRelays => {
                vec![(client, client_relay), (gateway, gateway_relay)]
            }
        };
        for (host, relay) in uses {
            let Some(relay) = relay else { continue };
            if self
                .links
                .get(&link(host, &relay))
                .is_some_and(LinkState::active)
            {
                return self.fail(format!(
                    "a {mode:?} path while the link between {host} and {relay} is faulted: the \
                     channel binding or permission cannot be made"
                ));
            }
        }
        Ok(())
    }

    fn relay_index(&self, name: &Option<String>, who: &str) -> Result<usize> {
        match name.as_ref().and_then(|n| {
            self.scenario
                .topology
                .relays
                .iter()
                .position(|r| &r.name == n)
        }) {
            Some(r) => Ok(r),
            None => self.fail(format!("{who} has no relay")),
        }
    }

    /// The client's current way to gateway `g`: the gateway's `(remote, local)` view and the
    /// hops from the client to the gateway.
    fn client_path(&self, c: usize, g: usize) -> Result<(OuterContext, Vec<Hop>)> {
        let topology = &self.scenario.topology;
        let state = &self.clients[c];
        let mode = state.paths[g];
        let client_socket = self.plan.client_socket(c, state.roams);
        let gateway_socket = SocketAddr::new(self.plan.gateways[g].preferred(), TUNNEL_PORT);
        let client_v6 = client_socket.is_ipv6();
        let gateway_v6 = gateway_socket.is_ipv6();
        let (cname, gname) = (&topology.clients[c].name, &topology.gateways[g].name);
        let client_relayed = &self.allocations.clients[c];
        let gateway_relayed = &self.allocations.gateways[g];
        let uses_client_allocation = matches!(
            mode,
            PathMode::ClientRelayed | PathMode::SameRelay | PathMode::DifferentRelays
        );
        if uses_client_allocation && state.roams > 0 {
            return self.fail(
                "a path through the client's own relay after roaming (the client must allocate \
                 again, at an address the model cannot know)",
            );
        }
        let reach = |relay: usize, ip: IpAddr, who: &str| -> Result<()> {
            if self.plan.relays[relay].matching(ip).is_none() {
                return self.fail(format!("{who} and its relay share no IP family"));
            }
            Ok(())
        };
        let missing = |what: &str| -> Result<(OuterContext, Vec<Hop>)> {
            self.fail(format!("{mode:?}: no relayed address for {what}"))
        };
        let context = |remote, local| OuterContext { remote, local };
        match mode {
            PathMode::Direct => {
                if client_v6 != gateway_v6 {
                    return self.fail(
                        "direct path between a client and a gateway whose preferred addresses \
                         differ in family",
                    );
                }
                Ok((
                    context(client_socket, gateway_socket),
                    vec![self.hop(cname, gname, client_v6)],
                ))
            }
            PathMode::ClientRelayed => {
                let r = self.relay_index(&topology.clients[c].relay, cname)?;
                reach(r, client_socket.ip(), cname)?;
                let Some(relayed) = client_relayed.family(gateway_v6) else {
                    return missing(cname);
                };
                let rname = &topology.relays[r].name;
                Ok((
                    context(relayed, gateway_socket),
                    vec![
                        self.hop(cname, rname, client_v6),
                        self.hop(rname, gname, gateway_v6),
                    ],
                ))
            }
            PathMode::GatewayRelayed => {
                let r = self.relay_index(&topology.gateways[g].relay, gname)?;
                reach(r, gateway_socket.ip(), gname)?;
                let Some(relayed) = gateway_relayed.family(client_v6) else {
                    return missing(gname);
                };
                let rname = &topology.relays[r].name;
                Ok((
                    context(client_socket, relayed),
                    vec![
                        self.hop(cname, rname, client_v6),
                        self.hop(rname, gname, gateway_v6),
                    ],
                ))
            }
            PathMode::SameRelay | PathMode::DifferentRelays => {
                let r1 = self.relay_index(&topology.clients[c].relay, cname)?;
                let r2 = self.relay_index(&topology.gateways[g].relay, gname)?;
                reach(r1, client_socket.ip(), cname)?;
                reach(r2, gateway_socket.ip(), gname)?;
                let pair = [false, true]
                    .into_iter()
                    .find_map(|v6| Some((client_relayed.family(v6)?, gateway_relayed.family(v6)?)));
                let Some((remote, local)) = pair else {
                    return missing("both peers in one family");
                };
                let (n1, n2) = (&topology.relays[r1].name, &topology.relays[r2].name);
                let hops = if mode == PathMode::SameRelay {
                    vec![
                        self.hop(cname, n1, client_v6),
                        self.hop(n1, gname, gateway_v6),
                    ]
                } else {
                    vec![
                        self.hop(cname, n1, client_v6),
                        self.hop(n1, n2, remote.is_ipv6()),
                        self.hop(n2, gname, gateway_v6),
                    ]
                };
                Ok((context(remote, local), hops))
            }
        }
    }

    fn send_from_client(
        &mut self,
        c: usize,
        g: usize,
        packet: Packet,
        conn: Option<u32>,
        step: usize,
        t: u64,
    ) -> Result<()> {
        let (context, hops) = self.client_path(c, g)?;
        let frame = Frame {
            direction: Direction::ToGateway,
            client: c,
            gateway: g,
            context,
            hops,
            packet,
            conn,
            step,
        };
        self.send_hop(frame, 0, t)
    }

    /// Marks a TCP connection disturbed when a segment carrying sequence space is lost or held
    /// (the scripted acknowledgement numbers are then not pinned down by the contract).
    fn lost(&mut self, packet: &Packet, conn: Option<u32>) {
        if let (Some(conn), PacketKind::Tcp { flags, payload, .. }) = (conn, packet.kind)
            && (payload > 0 || flags.fin || (flags.syn && flags.ack))
            && let Some(state) = self.conns.get_mut(&conn)
        {
            state.disturbed = true;
        }
    }

    fn send_hop(&mut self, frame: Frame, index: usize, t: u64) -> Result<()> {
        let hop = frame.hops[index].clone();
        let state = self.links.entry(hop.link.clone()).or_default();
        if state.tainted {
            return self.fail(format!(
                "traffic over {}-{}, where a fault was active during an idle step (TURN \
                 refreshes over it may have been lost)",
                hop.link.0, hop.link.1
            ));
        }
        let sends = state.sends.entry(t).or_default();
        sends.0 += 1;
        sends.1 |= state.drop_next > 0;
        let reason = if state.partitioned {
            Some(DropReason::Partition)
        } else if state.holding {
            state.held.push((frame.clone(), index));
            None
        } else if state.drop_next > 0 {
            state.drop_next -= 1;
            Some(DropReason::DropNext)
        } else {
            self.schedule(t + hop.ms, Event::Hop { frame, index });
            return Ok(());
        };
        self.lost(&frame.packet, frame.conn);
        if let Some(reason) = reason {
            self.out.drops.push(ExpectedDrop {
                at_ms: t,
                place: DropPlace::Link {
                    between: [hop.link.0, hop.link.1],
                },
                reason,
                packet: frame.packet,
                step: frame.step,
            });
        }
        Ok(())
    }

    // ---------------------------------------------------------------- the gateway

    fn gateway_from_client(&mut self, frame: Frame, t: u64) -> Result<()> {
        let (g, c) = (frame.gateway, frame.client);
        self.expire(g, t);
        let (current, _) = self.client_path(c, g)?;
        if current != frame.context {
            return self.fail(
                "a frame from an outer context the client has already left reached the gateway",
            );
        }
        let back: Vec<Hop> = frame.hops.iter().rev().cloned().collect();
        self.gateways[g]
            .contexts
            .insert(c, (frame.context, back.clone()));
        self.client_packet(
            g,
            c,
            frame.context,
            back,
            frame.packet,
            frame.conn,
            frame.step,
            t,
            false,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn client_packet(
        &mut self,
        g: usize,
        c: usize,
        context: OuterContext,
        back: Vec<Hop>,
        packet: Packet,
        conn: Option<u32>,
        step: usize,
        t: u64,
        from_queue: bool,
    ) -> Result<()> {
        let visible = packet.dst.ip();
        let protocol = packet.protocol();
        let open = self.gateways[g].flows.iter().position(|f| {
            f.client == c
                && f.protocol == protocol
                && f.src == packet.src
                && f.visible == visible
                && f.dst_port == packet.dst.port()
        });
        if let Some(index) = open {
            if !is_proxy_ip(visible)
                && let Ok(r) = self.rules.authorise_cidr(g, c, &packet)
                && r != self.gateways[g].flows[index].resource
            {
                return self.fail(
                    "a packet of an open flow that a grant change would now give to another \
                     resource",
                );
            }
            return self.forward_tx(g, index, context, packet, conn, step, t);
        }
        if let PacketKind::Tcp { flags, .. } = packet.kind
            && !(flags.syn && !flags.ack && !flags.fin && !flags.rst)
        {
            self.gateway_drop(g, c, DropReason::TcpWithoutSyn, packet, conn, step, t);
            return Ok(());
        }
        let authorised = if is_proxy_ip(visible) {
            match self.gateways[g]
                .mappings
                .iter()
                .position(|m| m.client == c && m.proxy == visible)
            {
                None => Err(DropReason::UnknownProxyIp),
                Some(m) => {
                    let domain = self.gateways[g].mappings[m].domain.clone();
                    self.rules
                        .authorise_dns(g, c, &domain, &packet)
                        .map(|r| (r, Some(m)))
                }
            }
        } else {
            self.rules.authorise_cidr(g, c, &packet).map(|r| (r, None))
        };
        let (resource, mapping) = match authorised {
            Ok(found) => found,
            Err(reason) => {
                self.gateway_drop(g, c, reason, packet, conn, step, t);
                let icmp = Packet {
                    src: SocketAddr::new(visible, 0),
                    dst: SocketAddr::new(packet.src.ip(), 0),
                    kind: PacketKind::IcmpProhibited {
                        quoted_protocol: protocol,
                        quoted_src: packet.src,
                        quoted_dst: packet.dst,
                    },
                };
                return self.send_to_client(g, c, context, back, icmp, None, step, t);
            }
        };
        let (real, domain) = match mapping {
            None => (visible, None),
            Some(m) => {
                let state = &mut self.gateways[g].mappings[m];
                if !from_queue {
                    state.new_flow_at = Some(t);
                    if state.change_at == Some(t) {
                        return self.fail(
                            "a new flow's first packet and a DNS answer that changes its real IP \
                             reach the gateway in the same millisecond",
                        );
                    }
                }
                match state.in_use {
                    Some(ip) => (ip, Some(state.domain.clone())),
                    None => {
                        if state.queue.len() >= DNS_QUEUE_LIMIT {
                            self.gateway_drop(
                                g,
                                c,
                                DropReason::DnsQueueFull,
                                packet,
                                conn,
                                step,
                                t,
                            );
                            return Ok(());
                        }
                        state.queue.push(Queued {
                            context,
                            back,
                            packet,
                            conn,
                            step,
                        });
                        if !state.resolving {
                            self.start_query(g, m, t);
                        }
                        return Ok(());
                    }
                }
            }
        };
        if self.gateways[g].flows.iter().any(|f| {
            f.client == c
                && f.resource == resource
                && f.protocol == protocol
                && f.src == packet.src
                && f.real == real
                && f.dst_port == packet.dst.port()
        }) {
            return self.fail(
                "two destinations of one client map to the same flow key (two names with one \
                 real IP)",
            );
        }
        self.gateways[g].flows.push(OpenFlow {
            client: c,
            resource,
            protocol,
            src: packet.src,
            visible,
            real,
            dst_port: packet.dst.port(),
            domain,
            outer: Vec::new(),
            start: t,
            last: t,
            tx_packets: 0,
            tx_bytes: 0,
            rx_packets: 0,
            rx_bytes: 0,
            fin: [None; 2],
            acked: [false; 2],
            conn,
        });
        let index = self.gateways[g].flows.len() - 1;
        self.forward_tx(g, index, context, packet, conn, step, t)
    }

    #[allow(clippy::too_many_arguments)]
    fn gateway_drop(
        &mut self,
        g: usize,
        c: usize,
        reason: DropReason,
        packet: Packet,
        conn: Option<u32>,
        step: usize,
        t: u64,
    ) {
        self.lost(&packet, conn);
        self.out.drops.push(ExpectedDrop {
            at_ms: t,
            place: DropPlace::Gateway {
                gateway: g as u32,
                client: ClientId(c as u32),
            },
            reason,
            packet,
            step,
        });
    }

    fn add_context(flow: &mut OpenFlow, context: OuterContext) {
        if !flow.outer.contains(&context) && flow.outer.len() < proto::flow::MAX_OUTER_CONTEXTS {
            flow.outer.push(context);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_tx(
        &mut self,
        g: usize,
        index: usize,
        context: OuterContext,
        packet: Packet,
        conn: Option<u32>,
        step: usize,
        t: u64,
    ) -> Result<()> {
        let flow = &mut self.gateways[g].flows[index];
        flow.tx_packets += 1;
        flow.tx_bytes += packet.payload();
        flow.last = t;
        Self::add_context(flow, context);
        let translated = Packet {
            dst: SocketAddr::new(flow.real, packet.dst.port()),
            ..packet
        };
        self.schedule(
            t + TUN_MS,
            Event::AtResource {
                gateway: g,
                packet: translated,
                conn,
                step,
            },
        );
        self.tcp_progress(g, index, 0, &packet, t)
    }

    /// The FIN / RST rules of docs/flows.md for a forwarded segment from `side` (0 client,
    /// 1 resource), after it was counted.
    fn tcp_progress(
        &mut self,
        g: usize,
        index: usize,
        side: usize,
        packet: &Packet,
        t: u64,
    ) -> Result<()> {
        let PacketKind::Tcp {
            flags,
            seq,
            ack,
            payload,
        } = packet.kind
        else {
            return Ok(());
        };
        if flags.rst {
            self.close(g, index, CloseReason::Rst, t);
            return Ok(());
        }
        let flow = &self.gateways[g].flows[index];
        let fin_involved = flags.fin || flow.fin.iter().any(Option::is_some);
        if fin_involved
            && flow
                .conn
                .and_then(|conn| self.conns.get(&conn))
                .is_some_and(|state| state.disturbed)
        {
            return self.fail(
                "a FIN exchange on a TCP connection that lost or reordered a segment (the \
                 scripted acknowledgement numbers are not pinned down)",
            );
        }
        let flow = &mut self.gateways[g].flows[index];
        if flags.fin && flow.fin[side].is_none() {
            let covers = seq
                .wrapping_add(u32::from(payload))
                .wrapping_add(1)
                .wrapping_add(u32::from(flags.syn));
            flow.fin[side] = Some(covers);
        }
        let other = 1 - side;
        if flags.ack
            && let Some(covers) = flow.fin[other]
            && seq_ge(ack, covers)
        {
            flow.acked[other] = true;
        }
        if flow.fin.iter().all(Option::is_some) && flow.acked.iter().all(|a| *a) {
            self.close(g, index, CloseReason::Fin, t);
        }
        Ok(())
    }

    fn gateway_from_resource(
        &mut self,
        g: usize,
        packet: Packet,
        conn: Option<u32>,
        step: usize,
        t: u64,
    ) -> Result<()> {
        self.expire(g, t);
        let to = packet.dst.ip();
        let client = self
            .plan
            .tunnel_v4
            .iter()
            .position(|ip| IpAddr::V4(*ip) == to)
            .or_else(|| {
                self.plan
                    .tunnel_v6
                    .iter()
                    .position(|ip| IpAddr::V6(*ip) == to)
            });
        let Some(c) = client else {
            return self.fail(format!("a resource packet to {to}, which is no client"));
        };
        let protocol = packet.protocol();
        let open = self.gateways[g].flows.iter().position(|f| {
            f.client == c
                && f.protocol == protocol
                && f.src == packet.dst
                && f.real == packet.src.ip()
                && f.dst_port == packet.src.port()
        });
        let Some(index) = open else {
            self.gateway_drop(g, c, DropReason::NoOpenFlow, packet, conn, step, t);
            return Ok(());
        };
        let Some((context, back)) = self.gateways[g].contexts.get(&c).cloned() else {
            return self.fail("the gateway has a flow but no outer context for its client");
        };
        let flow = &mut self.gateways[g].flows[index];
        flow.rx_packets += 1;
        flow.rx_bytes += packet.payload();
        flow.last = t;
        Self::add_context(flow, context);
        let translated = Packet {
            src: SocketAddr::new(flow.visible, packet.src.port()),
            ..packet
        };
        self.send_to_client(g, c, context, back, translated, conn, step, t)?;
        self.tcp_progress(g, index, 1, &packet, t)
    }

    #[allow(clippy::too_many_arguments)]
    fn send_to_client(
        &mut self,
        g: usize,
        c: usize,
        context: OuterContext,
        hops: Vec<Hop>,
        packet: Packet,
        conn: Option<u32>,
        step: usize,
        t: u64,
    ) -> Result<()> {
        // The gateway follows its control plane's path too: once the client switched path or
        // roamed, frames to its old context may leave another way (or be lost on the old
        // one) until the client is heard from again. Not in the contract.
        let (current, _) = self.client_path(c, g)?;
        if current != context {
            return self.fail(
                "the gateway sent to an outer context the client has left (roamed or switched \
                 path before the gateway heard from it)",
            );
        }
        let frame = Frame {
            direction: Direction::ToClient,
            client: c,
            gateway: g,
            context,
            hops,
            packet,
            conn,
            step,
        };
        self.send_hop(frame, 0, t)
    }

    fn dns_answer(
        &mut self,
        g: usize,
        mapping: usize,
        answer: Option<(IpAddr, u64)>,
        t: u64,
    ) -> Result<()> {
        self.expire(g, t);
        let epoch = self.gateways[g].epoch;
        let state = &mut self.gateways[g].mappings[mapping];
        state.resolving = false;
        let previous = state.in_use;
        match answer {
            Some((ip, ttl_ms)) => {
                if previous.is_some_and(|p| p != ip) {
                    state.change_at = Some(t);
                    if state.new_flow_at == Some(t) {
                        return self.fail(
                            "a DNS answer that changes the real IP and a new flow's first packet \
                             reach the gateway in the same millisecond",
                        );
                    }
                }
                state.in_use = Some(ip);
                state.generation += 1;
                let generation = state.generation;
                let queue = std::mem::take(&mut state.queue);
                self.schedule(
                    t + ttl_ms,
                    Event::DnsExpiry {
                        gateway: g,
                        epoch,
                        mapping,
                        generation,
                    },
                );
                for q in queue {
                    self.within_step(q.step, t)?;
                    let c = self.gateways[g].mappings[mapping].client;
                    self.client_packet(g, c, q.context, q.back, q.packet, q.conn, q.step, t, true)?;
                }
                Ok(())
            }
            None => {
                if previous.is_some() {
                    return self.fail(
                        "a DNS refresh found no record: what happens to the answer in use is not \
                         in the contract",
                    );
                }
                state.change_at = Some(t);
                if state.new_flow_at == Some(t) {
                    return self.fail(
                        "a failed DNS answer and a new flow's first packet reach the gateway in \
                         the same millisecond",
                    );
                }
                let c = state.client;
                let queue = std::mem::take(&mut state.queue);
                for q in queue {
                    self.gateway_drop(
                        g,
                        c,
                        DropReason::DnsResolutionFailed,
                        q.packet,
                        q.conn,
                        q.step,
                        t,
                    );
                }
                Ok(())
            }
        }
    }

    /// Runs the idle deadlines `<= t`: a flow is closed at exactly `last + idle_timeout`.
    fn expire(&mut self, g: usize, t: u64) {
        let idle = self.idle_ms;
        while let Some(index) = self.gateways[g]
            .flows
            .iter()
            .enumerate()
            .filter(|(_, f)| f.last + idle <= t)
            .min_by_key(|(i, f)| (f.last, *i))
            .map(|(i, _)| i)
        {
            let end = self.gateways[g].flows[index].last;
            self.close(g, index, CloseReason::Idle, end);
        }
    }

    fn close_where(
        &mut self,
        g: usize,
        t: u64,
        reason: CloseReason,
        which: impl Fn(&OpenFlow) -> bool,
    ) {
        while let Some(index) = self.gateways[g].flows.iter().position(&which) {
            self.close(g, index, reason, t);
        }
    }

    fn shutdown(&mut self, g: usize, t: u64) {
        self.expire(g, t);
        self.close_where(g, t, CloseReason::Shutdown, |_| true);
    }

    fn close(&mut self, g: usize, index: usize, reason: CloseReason, end: u64) {
        let f = self.gateways[g].flows.remove(index);
        self.out.flows.push(FlowRecord {
            client: ClientId(f.client as u32),
            resource: ResourceId(f.resource as u32),
            protocol: f.protocol,
            start: utc(f.start),
            end: utc(end),
            last_packet: utc(f.last),
            inner_src_ip: f.src.ip(),
            inner_src_port: f.src.port(),
            inner_dst_ip: f.real,
            inner_dst_port: f.dst_port,
            inner_domain: f.domain,
            outer_contexts: f.outer,
            tx_packets: f.tx_packets,
            tx_bytes: f.tx_bytes,
            rx_packets: f.rx_packets,
            rx_bytes: f.rx_bytes,
            close_reason: reason,
        });
    }

    // ---------------------------------------------------------------- clients and resources

    fn client_receive(&mut self, frame: Frame, t: u64) -> Result<()> {
        let (c, g) = (frame.client, frame.gateway);
        let (current, _) = self.client_path(c, g)?;
        if current != frame.context {
            return self.fail(
                "the gateway sent to an outer context the client has left (roamed or switched \
                 path before the gateway heard from it)",
            );
        }
        self.out.deliveries.push(Delivery {
            at_ms: t,
            to: Receiver::Client {
                client: ClientId(c as u32),
                gateway: g as u32,
                outer: frame.context,
            },
            packet: frame.packet,
            step: frame.step,
        });
        let Some(conn) = frame.conn else {
            return Ok(());
        };
        let Some(state) = self.conns.get_mut(&conn) else {
            return Ok(());
        };
        let Some(reply) = respond(&mut state.client_end, &frame.packet, None) else {
            return Ok(());
        };
        self.send_from_client(c, g, reply, Some(conn), frame.step, t)
    }

    fn resource_receive(
        &mut self,
        g: usize,
        packet: Packet,
        conn: Option<u32>,
        step: usize,
        t: u64,
    ) -> Result<()> {
        self.out.deliveries.push(Delivery {
            at_ms: t,
            to: Receiver::Resource { gateway: g as u32 },
            packet,
            step,
        });
        let reply = match packet.kind {
            PacketKind::Udp { payload } => Some(Packet {
                src: packet.dst,
                dst: packet.src,
                kind: PacketKind::Udp { payload },
            }),
            PacketKind::Tcp { flags, .. } => {
                let Some(state) = conn.and_then(|conn| self.conns.get_mut(&conn)) else {
                    return self.fail("a TCP segment of no connection");
                };
                if flags.syn && !flags.ack && state.resource_addr.is_none() {
                    state.resource_addr = Some(packet.dst);
                    state.resource_end.snd_nxt = RESOURCE_ISN.wrapping_add(1);
                }
                respond(&mut state.resource_end, &packet, Some(RESOURCE_ISN))
            }
            PacketKind::IcmpProhibited { .. } => None,
        };
        if let Some(reply) = reply {
            self.schedule(
                t + TUN_MS,
                Event::FromResource {
                    gateway: g,
                    packet: reply,
                    conn,
                    step,
                },
            );
        }
        Ok(())
    }

    // ---------------------------------------------------------------- the end

    fn finish(&mut self) -> Result<()> {
        let t_end = self.timeline.t_end;
        self.step = self.scenario.steps.len().checked_sub(1);
        for g in 0..self.gateways.len() {
            self.shutdown(g, t_end);
        }
        for event in self.events.values() {
            let step = match event {
                Event::Hop { frame, .. } => frame.step,
                Event::AtResource { step, .. } | Event::FromResource { step, .. } => *step,
                _ => continue,
            };
            return Err(Unpredictable {
                step: Some(step),
                reason: "traffic still in flight when the run ends".into(),
            });
        }
        for ((a, b), state) in &mut self.links {
            for (frame, _) in state.held.drain(..) {
                self.out.drops.push(ExpectedDrop {
                    at_ms: t_end,
                    place: DropPlace::Link {
                        between: [a.clone(), b.clone()],
                    },
                    reason: DropReason::StillHeld,
                    packet: frame.packet,
                    step: frame.step,
                });
            }
            if let Some((at, _)) = state
                .sends
                .iter()
                .find(|(_, (count, pending))| *count > 1 && *pending)
            {
                return Err(Unpredictable {
                    step: None,
                    reason: format!(
                        "two datagrams were sent on {a}-{b} at {at} ms while a drop-next fault \
                         was pending: which one it takes is not in the contract"
                    ),
                });
            }
        }
        Ok(())
    }
}

/// A scripted TCP end's answer to a segment that arrived: SYN -> SYN-ACK (responder), SYN-ACK ->
/// ACK, data -> ACK, FIN -> FIN-ACK (or the final ACK if this end already sent its FIN),
/// RST / pure ACK -> nothing. `isn` is the responder's initial sequence number.
fn respond(end: &mut TcpEnd, segment: &Packet, isn: Option<u32>) -> Option<Packet> {
    let PacketKind::Tcp {
        flags,
        seq,
        payload,
        ..
    } = segment.kind
    else {
        return None;
    };
    if flags.rst {
        return None;
    }
    let covers = seq
        .wrapping_add(u32::from(payload))
        .wrapping_add(u32::from(flags.syn))
        .wrapping_add(u32::from(flags.fin));
    end.rcv_nxt = Some(match end.rcv_nxt {
        Some(r) if seq_ge(r, covers) => r,
        _ => covers,
    });
    let ack = end.rcv_nxt.unwrap_or(0);
    let reply = |flags, seq| {
        Some(Packet {
            src: segment.dst,
            dst: segment.src,
            kind: PacketKind::Tcp {
                flags,
                seq,
                ack,
                payload: 0,
            },
        })
    };
    if flags.syn && !flags.ack {
        return reply(TcpFlags::SYN_ACK, isn?);
    }
    if flags.syn && flags.ack {
        return reply(TcpFlags::ACK, end.snd_nxt);
    }
    if flags.fin {
        if end.fin_sent {
            return reply(TcpFlags::ACK, end.snd_nxt);
        }
        let seq = end.snd_nxt;
        end.snd_nxt = end.snd_nxt.wrapping_add(1);
        end.fin_sent = true;
        return reply(TcpFlags::FIN_ACK, seq);
    }
    if payload > 0 {
        return reply(TcpFlags::ACK, end.snd_nxt);
    }
    None
}
