//! Both peers allocated on one relay: each one's peer address is the other's relayed address,
//! and the relay must deliver between them itself. No datagram addressed to the relay's own
//! address may ever be produced.

mod support;

use std::net::SocketAddr;

use relay::Drop;
use support::*;
use turn_client::Families;

/// Allocates `a` and `b`, binds channels to each other's relayed address of `family_of`, sends
/// both ways and checks what each received and from where.
fn relay_to_self(
    a_addr: SocketAddr,
    a_server: SocketAddr,
    a_families: Families,
    b_addr: SocketAddr,
    b_server: SocketAddr,
    b_families: Families,
    v6_peers: bool,
) {
    let mut world = World::new(relay_config());
    let a = world.add_client(a_addr, a_server, a_families);
    let b = world.add_client(b_addr, b_server, b_families);
    world.allocate(a);
    world.allocate(b);
    let pick = |world: &World, index: usize| -> SocketAddr {
        *world.clients[index]
            .turn
            .relayed_addresses()
            .iter()
            .find(|address| address.is_ipv6() == v6_peers)
            .expect("a relayed address of the family")
    };
    let (a_relayed, b_relayed) = (pick(&world, a), pick(&world, b));
    let now = world.now;
    let a_channel = world.clients[a]
        .turn
        .bind_channel(b_relayed, now)
        .expect("bind");
    let b_channel = world.clients[b]
        .turn
        .bind_channel(a_relayed, now)
        .expect("bind");
    world.pump();

    let wire_before = world.wire.len();
    world
        .client_sends(a, b_relayed, b"from a")
        .expect("relayed to self");
    world
        .client_sends(b, a_relayed, b"from b")
        .expect("relayed to self");
    assert_eq!(
        world.clients[b].received,
        vec![(a_relayed, b"from a".to_vec())]
    );
    assert_eq!(
        world.clients[a].received,
        vec![(b_relayed, b"from b".to_vec())]
    );

    // On the wire: exactly two ChannelData datagrams, each from the relay's client-facing
    // address to the other client, on the receiver's channel.
    let sent = &world.wire[wire_before..];
    assert_eq!(sent.len(), 2);
    assert_eq!((sent[0].src, sent[0].dst), (b_server, b_addr));
    assert_eq!(
        u16::from_be_bytes([sent[0].payload[0], sent[0].payload[1]]),
        b_channel
    );
    assert_eq!((sent[1].src, sent[1].dst), (a_server, a_addr));
    assert_eq!(
        u16::from_be_bytes([sent[1].payload[0], sent[1].payload[1]]),
        a_channel
    );
    world.assert_never_sent_to_itself();
    assert_eq!(world.bindings_from_events(), world.relay.channel_bindings());
}

#[test]
fn relay_to_self_ipv4() {
    relay_to_self(
        addr("198.51.100.10:40000"),
        server_v4(),
        Families::V4,
        addr("198.51.100.11:40000"),
        server_v4(),
        Families::V4,
        false,
    );
}

#[test]
fn relay_to_self_ipv6() {
    relay_to_self(
        addr("[2001:db8:100::10]:40000"),
        server_v6(),
        Families::V6,
        addr("[2001:db8:100::11]:40000"),
        server_v6(),
        Families::V6,
        true,
    );
}

#[test]
fn relay_to_self_across_families() {
    // A talks to the relay over IPv4 with a dual-stack allocation; B over IPv6 with an IPv6
    // allocation. They reach each other through their IPv6 relayed addresses.
    relay_to_self(
        addr("198.51.100.10:40000"),
        server_v4(),
        Families::Dual,
        addr("[2001:db8:100::11]:40000"),
        server_v6(),
        Families::V6,
        true,
    );
    // And the mirror image: B over IPv6 with a dual-stack allocation reaches an IPv4 one.
    relay_to_self(
        addr("198.51.100.10:40000"),
        server_v4(),
        Families::V4,
        addr("[2001:db8:100::11]:40000"),
        server_v6(),
        Families::Dual,
        false,
    );
}

#[test]
fn relay_to_self_with_send_and_data_indications() {
    let mut world = World::new(relay_config());
    let a = world.add_client(addr("198.51.100.10:40000"), server_v4(), Families::V4);
    let b = world.add_client(addr("198.51.100.11:40000"), server_v4(), Families::V4);
    let a_relayed = world.allocate(a)[0];
    let b_relayed = world.allocate(b)[0];
    let now = world.now;
    world.clients[a]
        .turn
        .create_permission(b_relayed.ip(), now)
        .expect("permission");
    world.clients[b]
        .turn
        .create_permission(a_relayed.ip(), now)
        .expect("permission");
    world.pump();
    world
        .client_sends(a, b_relayed, b"indicated")
        .expect("delivered");
    assert_eq!(
        world.clients[b].received,
        vec![(a_relayed, b"indicated".to_vec())]
    );
    world.assert_never_sent_to_itself();
}

#[test]
fn relay_to_self_to_an_unallocated_port_or_the_turn_port_is_dropped() {
    let mut world = World::new(relay_config());
    let a = world.add_client(addr("198.51.100.10:40000"), server_v4(), Families::V4);
    world.allocate(a);
    let now = world.now;
    // A channel to a relayed-looking address where nothing is allocated, and to port 3478.
    for target in [addr("203.0.113.1:65000"), server_v4()] {
        world.clients[a]
            .turn
            .bind_channel(target, now)
            .expect("bind");
        world.pump();
        let sent = world.wire.len();
        assert_eq!(
            world.client_sends(a, target, b"void"),
            Err(Drop::SelfDestinationUnreachable)
        );
        assert_eq!(world.wire.len(), sent);
    }
    world.assert_never_sent_to_itself();
}

#[test]
fn without_permission_at_the_receiver_relay_to_self_is_dropped() {
    let mut world = World::new(relay_config());
    let a = world.add_client(addr("198.51.100.10:40000"), server_v4(), Families::V4);
    let b = world.add_client(addr("198.51.100.11:40000"), server_v4(), Families::V4);
    world.allocate(a);
    let b_relayed = world.allocate(b)[0];
    let now = world.now;
    world.clients[a]
        .turn
        .bind_channel(b_relayed, now)
        .expect("bind");
    world.pump();
    assert_eq!(
        world.client_sends(a, b_relayed, b"knock"),
        Err(Drop::NoPermission)
    );
    assert!(world.clients[b].received.is_empty());
}
