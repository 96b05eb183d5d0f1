//! An in-process world for driving the userspace relay with real TURN clients
//! (`peer::TurnClient`) and a fake clock, so that the relay's channel-binding events are real;
//! the tests mirror them into the XDP maps. Datagrams between clients and relay move instantly
//! and time moves only when a test says so (a trimmed copy of `relay/tests/support`).
//!
//! Also the clients, peers and client operations that the mirror and differential tests share.
#![allow(dead_code)]

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use peer::{Families, TurnClient, TurnClientConfig};
use proto::credentials;
use relay::{Event, Relay, RelayConfig};
use relay_xdp::{ChannelBinding, XdpRelay, relay_table};
use xdp_fixtures::world::{RELAY_V4, RELAY_V6};

pub const SECRET: &[u8] = b"correct horse battery staple";
pub const REALM: &str = "vpnsim.test";
/// Unix time at the start of every world.
pub const START_UNIX: u64 = 1_800_000_000;

pub fn addr(text: &str) -> SocketAddr {
    text.parse().expect("socket address literal")
}

/// A relay on the fixtures' addresses (`world::RELAY_V4`, `world::RELAY_V6`).
pub fn relay_config(seed: u64) -> RelayConfig {
    let mut config = RelayConfig::new(REALM, SECRET);
    config.public_v4 = Some(RELAY_V4);
    config.public_v6 = Some(RELAY_V6);
    config.unix_time_at_start = START_UNIX;
    config.seed = seed;
    config
}

/// The relay's address of `ip`'s family, on `port`.
pub fn relay_addr(ip: IpAddr, port: u16) -> SocketAddr {
    match ip {
        IpAddr::V4(_) => SocketAddr::new(RELAY_V4.into(), port),
        IpAddr::V6(_) => SocketAddr::new(RELAY_V6.into(), port),
    }
}

pub struct Client {
    pub addr: SocketAddr,
    pub turn: TurnClient,
    /// Cut off from the relay: what it sends and what is sent to it is lost.
    pub partitioned: bool,
}

pub struct World {
    pub start: Instant,
    pub now: Instant,
    pub relay: Relay,
    pub clients: Vec<Client>,
    /// Relay events not yet taken by [`World::take_events`].
    events: Vec<Event>,
    /// Every binding the relay ever announced (`ChannelBound`), in order, without repeats.
    pub ever_bound: Vec<relay::ChannelBinding>,
}

impl World {
    pub fn new(config: RelayConfig) -> Self {
        let start = Instant::now();
        Self {
            start,
            now: start,
            relay: Relay::new(config, start).expect("valid relay config"),
            clients: Vec::new(),
            events: Vec::new(),
            ever_bound: Vec::new(),
        }
    }

    /// Adds a client at `addr` (talking to the relay's address of its own family, port 3478)
    /// asking for relayed addresses of `families`, with credentials valid for a week.
    pub fn add_client(&mut self, addr: SocketAddr, families: Families) -> usize {
        let credentials = credentials::rest_api_credentials(
            SECRET,
            START_UNIX + 7 * 86_400,
            &format!("c{}", self.clients.len()),
        );
        let turn = TurnClient::new(TurnClientConfig {
            server: relay_addr(addr.ip(), relay::TURN_PORT),
            credentials,
            families,
            lifetime: None,
            seed: 1000 + self.clients.len() as u64,
        });
        self.clients.push(Client {
            addr,
            turn,
            partitioned: false,
        });
        self.clients.len() - 1
    }

    /// Whether the relay emitted events not yet taken.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Takes the relay events since the last call, in the order the relay emitted them.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    fn collect_events(&mut self) {
        while let Some(event) = self.relay.poll_event() {
            if let Event::ChannelBound(binding) = &event
                && !self.ever_bound.contains(binding)
            {
                self.ever_bound.push(*binding);
            }
            self.events.push(event);
        }
    }

    /// Moves datagrams between clients and relay until nobody has anything to send. Data the
    /// relay relays (`Relayed`) and control datagrams to anyone but a client are dropped: the
    /// peers here are addresses only.
    pub fn pump(&mut self) {
        loop {
            let mut progressed = false;
            let now = self.now;
            for index in 0..self.clients.len() {
                while let Some(transmit) = self.clients[index].turn.poll_transmit() {
                    progressed = true;
                    if self.clients[index].partitioned {
                        continue;
                    }
                    let from = self.clients[index].addr;
                    let _ = self
                        .relay
                        .handle_input(from, transmit.dst, &transmit.payload, now);
                }
                while self.clients[index].turn.poll_event().is_some() {}
            }
            while let Some(transmit) = self.relay.poll_transmit() {
                progressed = true;
                if let Some(client) = self
                    .clients
                    .iter_mut()
                    .find(|client| client.addr == transmit.dst && !client.partitioned)
                {
                    let _ = client
                        .turn
                        .handle_input(transmit.src, &transmit.payload, now);
                }
            }
            self.collect_events();
            if !progressed {
                return;
            }
        }
    }

    /// Drops whatever the relay queued (replies to junk, Data indications) and collects its
    /// events, after a datagram fed to it directly.
    pub fn discard_transmits(&mut self) {
        while self.relay.poll_transmit().is_some() {}
        self.collect_events();
    }

    /// Advances the clock by `by`, firing every timeout of the relay and the clients on the
    /// way, in order.
    pub fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        let mut last_deadline = None;
        loop {
            let next = self
                .clients
                .iter()
                .filter_map(|client| client.turn.poll_timeout())
                .chain(self.relay.poll_timeout())
                .filter(|&deadline| deadline <= target)
                .min();
            let Some(next) = next else {
                break;
            };
            assert!(
                next > self.now || last_deadline != Some(next),
                "a deadline at {:?} does not move after handle_timeout",
                next - self.start
            );
            last_deadline = Some(next);
            self.now = self.now.max(next);
            self.fire_timeouts();
        }
        self.now = target;
        self.fire_timeouts();
    }

    fn fire_timeouts(&mut self) {
        let now = self.now;
        self.relay.handle_timeout(now);
        for client in &mut self.clients {
            client.turn.handle_timeout(now);
        }
        self.pump();
    }

    /// The relayed address of client `index`'s allocation in a family, if it has one.
    pub fn relayed(&self, index: usize, v6: bool) -> Option<SocketAddr> {
        self.clients[index]
            .turn
            .relayed_addresses()
            .iter()
            .copied()
            .find(|relayed| relayed.is_ipv6() == v6)
    }
}

/// The clients: every combination of client family and relayed families.
pub const CLIENTS: [(&str, Families); 6] = [
    ("198.51.100.10:40000", Families::Dual),
    ("[2001:db8:1::11]:40001", Families::Dual),
    ("198.51.100.12:40002", Families::V6),
    ("[2001:db8:1::13]:40003", Families::V4),
    ("198.51.100.14:40004", Families::V4),
    ("[2001:db8:1::15]:40005", Families::V6),
];

/// External peers, both families; some share an IP (a permission for one is a permission for
/// the other); one sends from port 53 (its datagrams to an allocation are DNS replies to XDP).
pub const PEERS: [&str; 9] = [
    "198.51.100.70:9000",
    "198.51.100.71:9001",
    "198.51.100.70:9005",
    "198.51.100.72:53",
    "[2001:db8:2::70]:9000",
    "[2001:db8:2::71]:9001",
    "[2001:db8:2::70]:9005",
    "[2001:db8:2::72]:9002",
    "192.0.2.200:7000",
];

pub fn world_with_clients(seed: u64) -> World {
    let mut world = World::new(relay_config(seed));
    for (address, families) in CLIENTS {
        world.add_client(addr(address), families);
    }
    world
}

/// A peer of a channel or permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRef {
    /// `PEERS[i]`.
    External(usize),
    /// Client `client`'s relayed address of a family: relay-to-self.
    Relayed { client: usize, v6: bool },
}

impl PeerRef {
    pub fn resolve(self, world: &World) -> Option<SocketAddr> {
        match self {
            PeerRef::External(index) => Some(addr(PEERS[index % PEERS.len()])),
            PeerRef::Relayed { client, v6 } => world.relayed(client % world.clients.len(), v6),
        }
    }
}

/// One thing a client (or the clock) may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Allocate(usize),
    Bind {
        client: usize,
        peer: PeerRef,
    },
    /// Relay-to-self both ways: `a` binds a channel to `b`'s relayed address of a family, and
    /// `b` to `a`'s.
    BindPair {
        a: usize,
        b: usize,
        v6: bool,
    },
    Permit {
        client: usize,
        peer: PeerRef,
    },
    /// Refresh with LIFETIME 0: the allocation and its channels go at once.
    Release(usize),
    /// Cuts a client off from the relay, or reconnects it: a cut-off client's refreshes are
    /// lost, so its permissions (300 s), channels (600 s) and allocation expire.
    TogglePartition(usize),
    Wait(Duration),
}

/// Performs `op` and pumps until quiet.
pub fn perform(world: &mut World, op: Op) {
    let now = world.now;
    let clients = world.clients.len();
    match op {
        Op::Allocate(client) => world.clients[client % clients].turn.allocate(now),
        Op::Bind { client, peer } => {
            if let Some(peer) = peer.resolve(world) {
                let _ = world.clients[client % clients].turn.bind_channel(peer, now);
            }
        }
        Op::BindPair { a, b, v6 } => {
            let (a, b) = (a % clients, b % clients);
            if let (Some(relayed_a), Some(relayed_b)) = (world.relayed(a, v6), world.relayed(b, v6))
            {
                let _ = world.clients[a].turn.bind_channel(relayed_b, now);
                let _ = world.clients[b].turn.bind_channel(relayed_a, now);
            }
        }
        Op::Permit { client, peer } => {
            if let Some(peer) = peer.resolve(world) {
                let _ = world.clients[client % clients]
                    .turn
                    .create_permission(peer.ip(), now);
            }
        }
        Op::Release(client) => world.clients[client % clients].turn.release(now),
        Op::TogglePartition(client) => {
            let client = &mut world.clients[client % clients];
            client.partitioned = !client.partitioned;
        }
        Op::Wait(by) => world.advance(by),
    }
    world.pump();
}

/// Applies the relay's pending events to the maps, in order, and checks that the maps (read
/// back from the kernel) hold exactly the relay's own table of active channels.
pub fn mirror_and_check(world: &mut World, xdp: &mut XdpRelay) -> Result<(), String> {
    for event in world.take_events() {
        xdp.apply(&event)
            .map_err(|error| format!("applying {event:?}: {error}"))?;
    }
    let in_maps: Vec<ChannelBinding> = xdp
        .channel_bindings()
        .map_err(|error| format!("reading the maps back: {error}"))?;
    let in_relay = relay_table(&world.relay);
    if in_maps != in_relay {
        return Err(format!(
            "the maps differ from the relay's table\n  maps:  {in_maps:?}\n  relay: {in_relay:?}"
        ));
    }
    let reverse = xdp
        .allocation_entries()
        .map_err(|error| format!("counting ALLOCATIONS: {error}"))?;
    if reverse != in_relay.len() {
        return Err(format!(
            "ALLOCATIONS holds {reverse} entries for {} bindings",
            in_relay.len()
        ));
    }
    let stale = xdp
        .stale_relay_to_self_routes()
        .map_err(|error| format!("reading the relay-to-self routes: {error}"))?;
    if !stale.is_empty() {
        return Err(format!(
            "these channels' relay-to-self destinations differ from ALLOCATIONS: {stale:?}"
        ));
    }
    Ok(())
}
