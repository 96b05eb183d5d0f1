//! Property tests: random bytes never panic or change state; random client operations keep the
//! relay's invariants, and the bindings rebuilt from its events always equal its own table.

mod support;

use std::time::Duration;

use proptest::prelude::*;
use support::*;
use turn_client::Families;

/// A snapshot of everything observable about the relay's state.
fn state_of(
    world: &World,
) -> (
    usize,
    Vec<relay::ChannelBinding>,
    Option<std::time::Instant>,
) {
    (
        world.relay.allocation_count(),
        world.relay.channel_bindings(),
        world.relay.poll_timeout(),
    )
}

/// A world with one allocated client and one bound channel, so random input meets real state.
fn populated_world() -> (World, std::net::SocketAddr) {
    let mut world = World::new(relay_config());
    let client = world.add_client(addr("198.51.100.10:40000"), server_v4(), Families::Dual);
    let relayed = world.allocate(client)[0];
    let now = world.now;
    world.clients[client]
        .turn
        .bind_channel(addr("198.51.100.77:9000"), now)
        .expect("bind");
    world.pump();
    (world, relayed)
}

fn arbitrary_datagram() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..120),
        // ChannelData-looking.
        (0x40u8..0x80, prop::collection::vec(any::<u8>(), 0..60)).prop_map(|(first, rest)| {
            let mut bytes = vec![first];
            bytes.extend(rest);
            bytes
        }),
        // STUN-looking: a plausible header, random attributes.
        (any::<u16>(), prop::collection::vec(any::<u8>(), 0..80)).prop_map(|(kind, rest)| {
            let mut bytes = (kind & 0x3FFF).to_be_bytes().to_vec();
            bytes.extend_from_slice(&(rest.len() as u16).to_be_bytes());
            bytes.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
            bytes.extend_from_slice(&[9; 12]);
            bytes.extend(rest);
            bytes
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_and_change_no_state(
        datagrams in prop::collection::vec(arbitrary_datagram(), 1..8),
        to_allocation in any::<bool>(),
        from_client in any::<bool>(),
    ) {
        let (mut world, relayed) = populated_world();
        let before = state_of(&world);
        let from = if from_client { addr("198.51.100.10:40000") } else { addr("198.51.100.200:5555") };
        let to = if to_allocation { relayed } else { server_v4() };
        for datagram in &datagrams {
            let now = world.now;
            let _ = world.relay.handle_input(from, to, datagram, now);
            while world.relay.poll_transmit().is_some() {}
            while let Some(event) = world.relay.poll_event() {
                prop_assert!(false, "random input caused an event: {event:?}");
            }
        }
        prop_assert_eq!(state_of(&world), before);
    }
}

/// One thing a client may do.
#[derive(Debug, Clone)]
enum Op {
    Allocate(usize),
    Bind {
        client: usize,
        peer: usize,
    },
    Permit {
        client: usize,
        peer: usize,
    },
    Release(usize),
    Send {
        client: usize,
        peer: usize,
    },
    PeerSends {
        peer: usize,
        client: usize,
    },
    Wait(u64),
    /// Cuts a client off from the relay, or reconnects it.
    TogglePartition(usize),
}

const CLIENTS: usize = 3;
const PEERS: usize = 4;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..CLIENTS).prop_map(Op::Allocate),
        3 => (0..CLIENTS, 0..PEERS).prop_map(|(client, peer)| Op::Bind { client, peer }),
        1 => (0..CLIENTS, 0..PEERS).prop_map(|(client, peer)| Op::Permit { client, peer }),
        1 => (0..CLIENTS).prop_map(Op::Release),
        3 => (0..CLIENTS, 0..PEERS).prop_map(|(client, peer)| Op::Send { client, peer }),
        2 => (0..PEERS, 0..CLIENTS).prop_map(|(peer, client)| Op::PeerSends { peer, client }),
        1 => (0..CLIENTS).prop_map(Op::TogglePartition),
        // Waits that cross the 240 s refresh, 300 s permission and 600 s lifetimes.
        2 => prop_oneof![Just(1u64), Just(59), Just(240), Just(299), Just(300), Just(600), 0..900u64].prop_map(Op::Wait),
    ]
}

/// Peer `index`: external hosts, plus (for index 3) client 0's relayed address: relay-to-self.
fn peer_address(world: &World, index: usize) -> Option<std::net::SocketAddr> {
    match index {
        0 => Some(addr("198.51.100.70:9000")),
        1 => Some(addr("198.51.100.71:9001")),
        2 => Some(addr("198.51.100.72:9002")),
        _ => world.clients[0].turn.relayed_addresses().first().copied(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_client_operations_keep_the_invariants(ops in prop::collection::vec(op(), 1..40)) {
        let mut world = World::new(relay_config());
        for index in 0..CLIENTS {
            world.add_client(addr(&format!("198.51.100.{}:40000", 10 + index)), server_v4(), Families::V4);
        }
        let mut ever_partitioned = false;
        for op in ops {
            let now = world.now;
            match op {
                Op::Allocate(client) => world.clients[client].turn.allocate(now),
                Op::Bind { client, peer } => {
                    if let Some(peer) = peer_address(&world, peer) {
                        let _ = world.clients[client].turn.bind_channel(peer, now);
                    }
                }
                Op::Permit { client, peer } => {
                    if let Some(peer) = peer_address(&world, peer) {
                        let _ = world.clients[client].turn.create_permission(peer.ip(), now);
                    }
                }
                Op::Release(client) => world.clients[client].turn.release(now),
                Op::Send { client, peer } => {
                    if let Some(peer) = peer_address(&world, peer)
                        && let Ok(transmit) = world.clients[client].turn.send_to(peer, b"data", now)
                    {
                        let from = world.clients[client].addr;
                        let _ = world.send_to_relay(from, transmit.dst, &transmit.payload);
                    }
                }
                Op::PeerSends { peer, client } => {
                    if let (Some(peer), Some(&relayed)) = (
                        peer_address(&world, peer),
                        world.clients[client].turn.relayed_addresses().first(),
                    ) && !world.relay.is_own_ip(peer.ip())
                    {
                        let _ = world.send_to_relay(peer, relayed, b"back");
                    }
                }
                Op::Wait(seconds) => world.advance(Duration::from_secs(seconds)),
                Op::TogglePartition(client) => {
                    let client = &mut world.clients[client];
                    client.partitioned = !client.partitioned;
                    ever_partitioned = true;
                }
            }
            world.pump();
            // The table rebuilt from events alone is the relay's own table.
            prop_assert_eq!(world.bindings_from_events(), world.relay.channel_bindings());
            // The clients' own view (channels the relay confirmed, refreshed in time) against
            // the relay's table: datagrams move instantly here, so without partitions the two
            // agree to the instant. A partitioned client may forget what the relay still holds
            // (a lost release, a failed refresh), but never believes in a channel the relay
            // does not have.
            let mut expected: Vec<relay::ChannelBinding> = world
                .clients
                .iter()
                .flat_map(|client| {
                    let port = client.turn.relayed_addresses().first().map(|a| a.port());
                    client.turn.live_channels(world.now).into_iter().filter_map(move |(peer, channel)| {
                        Some(relay::ChannelBinding { client: client.addr, channel, allocation_port: port?, peer })
                    })
                })
                .collect();
            expected.sort();
            let table = world.relay.channel_bindings();
            if ever_partitioned {
                for binding in &expected {
                    prop_assert!(table.contains(binding), "client believes in {binding:?}, relay has {table:?}");
                }
            } else {
                prop_assert_eq!(table, expected);
            }
            // Every deadline is in the future.
            if let Some(deadline) = world.relay.poll_timeout() {
                prop_assert!(deadline > world.now, "deadline {:?} not after now", deadline - world.start);
            }
            // Every binding belongs to a live allocation of that client.
            for binding in world.relay.channel_bindings() {
                prop_assert!(world.relay.relayed_addresses(binding.allocation_port).iter().any(|a| a.is_ipv4() == binding.peer.is_ipv4()));
            }
            world.assert_never_sent_to_itself();
        }
    }
}
