//! The [`Gateway`] state machine: its state, its construction, the datagram entry point
//! ([`Gateway::handle_input`]) and inspection. The rest of its `impl` is spread over the child
//! modules, one concern each:
//!
//! - `client_to_resource`: tunnel frames from clients, opened and routed to resources;
//! - `flow_admission`: whether a packet may start a flow, and to which resource;
//! - `resource_to_client`: resource packets, sealed in tunnel frames to their client;
//! - `drops`: the one place drops are counted and reported (`record_drop`);
//! - `dns_actions`: DNS answers, and the resolver's [`DnsAction`]s carried out
//!   (`run_dns_actions`);
//! - `clock`: the clock and the deadlines (`advance`, run first by every entry point);
//! - `flow_close`: the end of flows (TCP close, idle, revoke, shutdown) and their records;
//! - `queues`: what the host drains (transmits, events, flow records) and recycled buffers.
//!
//! The control plane is in `control.rs`; DNS resolution is the [`DnsResolver`] in
//! `dns_resolver.rs`, which the gateway calls and whose actions it carries out.
//!
//! [`DnsAction`]: crate::dns_resolver::DnsAction

mod client_to_resource;
mod clock;
mod dns_actions;
mod drops;
mod flow_admission;
mod flow_close;
mod queues;
mod resource_to_client;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use foldhash::fast::FixedState;
use proto::flow::{ClientId, FlowRecord, OuterContext, ResourceId};
use proto::tunnel;

use crate::config::{ClientConfig, GatewayConfig, Occupancy, Resource};
use crate::dns_resolver::DnsResolver;
use crate::drop_reason::{DropCounters, DropReason};
use crate::filter::Filter;
use crate::flow_log::OuterInterner;
use crate::flow_table::{FlowTable, Nanos, nanos_of};
use crate::output::{DroppedPacket, Event, Transmit};
use crate::replay_window::ReplayWindow;

/// A client's session state (its DNS mappings are the resolver's).
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) config: ClientConfig,
    replay: ReplayWindow,
    /// Counter of the next frame the gateway sends to this client.
    tx_counter: u64,
    /// Where replies go: the outer context of the latest accepted frame.
    outer: Option<OuterContext>,
    /// `outer`'s index in the outer-context interner.
    outer_idx: u32,
    pub(crate) grants: BTreeMap<ResourceId, Vec<Filter>>,
}

impl Client {
    /// A new session: no frame seen or sent, no grants.
    pub(crate) fn new(config: ClientConfig) -> Self {
        Self {
            config,
            replay: ReplayWindow::default(),
            tx_counter: 0,
            outer: None,
            outer_idx: 0,
            grants: BTreeMap::new(),
        }
    }
}

/// The sans-IO VPN gateway. See the crate docs for the contract.
#[derive(Debug)]
pub struct Gateway {
    config: GatewayConfig,
    /// The latest `now` seen, as nanoseconds since the time origin (never goes back).
    now: Nanos,
    /// The `now` argument of the latest call.
    last_instant: Option<Instant>,
    pub(crate) clients: BTreeMap<ClientId, Client>,
    /// Lookup only: session id -> client.
    pub(crate) sessions: HashMap<u32, ClientId, FixedState>,
    /// Lookup only: tunnel IP -> client.
    pub(crate) tunnel_ips: HashMap<IpAddr, ClientId, FixedState>,
    pub(crate) resources: BTreeMap<ResourceId, Resource>,
    flows: FlowTable,
    outers: OuterInterner,
    /// DNS mappings, queries and held packets.
    pub(crate) dns: DnsResolver,
    transmits: VecDeque<Transmit>,
    /// Buffers of sent transmits handed back with [`Gateway::recycle`], reused for the next
    /// ones (at most [`SPARE_BUFFERS`](queues::SPARE_BUFFERS)).
    spare: Vec<Vec<u8>>,
    /// Not drained by the gateway: it holds what the host has not polled yet. What one call
    /// adds is bounded (see `poll_event`).
    events: VecDeque<Event>,
    records: VecDeque<FlowRecord>,
    drops: DropCounters,
    pub(crate) shut_down: bool,
}

impl Gateway {
    /// A gateway with no clients, resources or flows.
    pub fn new(config: GatewayConfig) -> Self {
        let idle_timeout = nanos_of(config.idle_timeout);
        let seed = config.hash_seed;
        Self {
            flows: FlowTable::new(seed, idle_timeout),
            dns: DnsResolver::new(&config),
            config,
            now: 0,
            last_instant: None,
            clients: BTreeMap::new(),
            sessions: HashMap::with_hasher(FixedState::with_seed(seed)),
            tunnel_ips: HashMap::with_hasher(FixedState::with_seed(seed)),
            resources: BTreeMap::new(),
            outers: OuterInterner::default(),
            transmits: VecDeque::new(),
            spare: Vec::new(),
            events: VecDeque::new(),
            records: VecDeque::new(),
            drops: DropCounters::default(),
            shut_down: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    // ---------------------------------------------------------------- datagrams

    /// A UDP datagram arrived at the gateway's address `to` from `from`: a DNS answer if it
    /// arrived at a DNS source port (or, without those, came from the configured DNS server),
    /// else a direct tunnel frame from a client (its outer context is `(from, to)`).
    pub fn handle_input(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        payload: &[u8],
        now: Instant,
    ) -> Result<(), DropReason> {
        let dns_port = self
            .config
            .dns_source_ports
            .as_ref()
            .map(|ports| ports.contains(&to.port()));
        // With source ports of its own, DNS is told apart by where the datagram arrived;
        // without, by where it came from.
        if dns_port.unwrap_or(from == self.config.dns_server) {
            let t = self.advance(now);
            let r = if self.shut_down {
                Err(DropReason::ShutDown)
            } else if from != self.config.dns_server {
                // An answer from anyone but the configured server (spoofed from elsewhere).
                Err(DropReason::DnsUnexpectedAnswer)
            } else {
                self.dns_answer(payload, dns_port.map(|_| to.port()), t)
            };
            return r
                .map_err(|reason| self.drop_copy(reason, None, payload, DroppedPacket::Datagram));
        }
        if !tunnel::is_tunnel_frame(payload) {
            self.advance(now);
            return Err(self.drop_copy(
                DropReason::NotTunnelFrame,
                None,
                payload,
                DroppedPacket::Datagram,
            ));
        }
        self.handle_tunnel_frame(
            OuterContext {
                remote: from,
                local: to,
            },
            payload,
            now,
        )
    }

    // ---------------------------------------------------------------- inspection

    /// Drop counters, one per reason.
    pub fn drop_counters(&self) -> &DropCounters {
        &self.drops
    }

    /// How many flows are open.
    pub fn open_flow_count(&self) -> usize {
        self.flows.len()
    }

    /// How full the gateway's bounded tables are.
    pub fn occupancy(&self) -> Occupancy {
        Occupancy {
            flows: self.flows.len(),
            most_flows_of_one_client: self.flows.most_of_one_client(),
            most_held_for_dns: self.dns.most_held(),
        }
    }

    /// Outer contexts the gateway remembers, live or not yet pruned (for the bounds tests).
    pub fn interned_outer_contexts(&self) -> usize {
        self.outers.len()
    }

    /// Where replies to `client` go now.
    pub fn client_outer_context(&self, client: ClientId) -> Option<OuterContext> {
        self.clients.get(&client).and_then(|c| c.outer)
    }
}
