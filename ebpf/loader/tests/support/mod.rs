//! The mirror and differential tests' support: the shared in-process world
//! (`relay_test_support`), whose real relay's channel-binding events the tests mirror into the
//! XDP maps, on the fixtures' relay addresses; the clients, peers and client operations both
//! tests draw from; and the check that the maps mirror the relay.
#![allow(dead_code)]

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use relay::RelayConfig;
pub use relay_test_support::{World, addr};
use relay_xdp::{ChannelBinding, XdpRelay, relay_table};
use turn_client::Families;
use xdp_fixtures::world::{RELAY_V4, RELAY_V6};

/// The shared world's relay configuration on the fixtures' addresses (`world::RELAY_V4`,
/// `world::RELAY_V6`), to which the frames run through the program are addressed, drawing its
/// ports from `seed`.
pub fn relay_config(seed: u64) -> RelayConfig {
    let mut config = relay_test_support::relay_config();
    config.public_v4 = Some(RELAY_V4);
    config.public_v6 = Some(RELAY_V6);
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

/// A world with every client of [`CLIENTS`], each talking to the relay's address of its own
/// family; none has allocated yet.
pub fn world_with_clients(seed: u64) -> World {
    let mut world = World::new(relay_config(seed));
    for (address, families) in CLIENTS {
        let client = addr(address);
        world.add_client(client, relay_addr(client.ip(), relay::TURN_PORT), families);
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
