//! Datagrams that are not TURN (docs/harness.md, "Other steps", `stray`): the relay drops each
//! with one count under its reason, answers nothing, and keeps relaying.

mod support;

use std::net::SocketAddr;

use relay::Drop;
use support::*;

/// Feeds one datagram and checks it is dropped for `reason`, counted once, with nothing sent.
fn dropped(world: &mut World, from: SocketAddr, to: SocketAddr, payload: &[u8], reason: Drop) {
    let before = world.relay.drop_counts().clone();
    let now = world.now;
    let result = world.relay.handle_input(from, to, payload, now);
    assert_eq!(result, Err(reason), "{payload:02x?}");
    let mut expected = before;
    *expected.entry(reason).or_default() += 1;
    assert_eq!(world.relay.drop_counts(), &expected);
    assert_eq!(
        world.relay.poll_transmit(),
        None,
        "the relay answered a stray"
    );
}

#[test]
fn strays_are_dropped_and_counted_and_the_channel_keeps_relaying() {
    let mut world = World::new(relay_config());
    let peer = addr("198.51.100.77:9000");
    let (client, relayed, channel) = world.client_with_channel(addr("198.51.100.10:40000"), peer);
    let stranger = addr("192.0.2.1:40000");
    let turn = server_v4();
    // First bits 0b10 (an RTP header): neither STUN nor ChannelData.
    let rtp = [
        0x80, 0x60, 0, 1, 0, 0, 0, 0xa0, 0x12, 0x34, 0x56, 0x78, 1, 2, 3, 4,
    ];
    dropped(&mut world, stranger, turn, &rtp, Drop::NotStun);
    // ChannelData on channel 0x7fff (in range) from an address without an allocation, and
    // from the client, which never bound it.
    let unbound = [0x7f, 0xff, 0, 4, 1, 2, 3, 4];
    dropped(&mut world, stranger, turn, &unbound, Drop::NoAllocation);
    let client_addr = world.clients[client].addr;
    dropped(
        &mut world,
        client_addr,
        turn,
        &unbound,
        Drop::UnboundChannel,
    );
    // ChannelData whose length field promises more than follows.
    dropped(
        &mut world,
        stranger,
        turn,
        &[0x7f, 0xff, 0, 8, 1, 2, 3, 4],
        Drop::MalformedChannelData,
    );
    // A Binding request header (with the magic cookie) cut at 12 bytes.
    let truncated = [0, 1, 0, 8, 0x21, 0x12, 0xa4, 0x42, 0xde, 0xad, 0xbe, 0xef];
    dropped(&mut world, stranger, turn, &truncated, Drop::NotStun);
    // Fewer bytes than any header.
    dropped(&mut world, stranger, turn, &[], Drop::NotStun);
    dropped(
        &mut world,
        stranger,
        turn,
        &[0x40],
        Drop::MalformedChannelData,
    );
    // Data to the allocation from an address without a permission.
    dropped(
        &mut world,
        stranger,
        relayed,
        &[0xa5; 32],
        Drop::NoPermission,
    );
    // Replies to the host's own resolver and NTP client, had they reached the relay.
    let own = |port| SocketAddr::new(turn.ip(), port);
    dropped(
        &mut world,
        addr("192.0.2.1:53"),
        own(33053),
        &[0x1d; 12],
        Drop::NotForRelay,
    );
    dropped(
        &mut world,
        addr("192.0.2.1:123"),
        own(33123),
        &[0x24; 48],
        Drop::NotForRelay,
    );

    // The channel still relays both ways.
    let now = world.now;
    let data = proto::channel_data::ChannelData {
        channel,
        data: b"hello",
    }
    .to_vec();
    let out = world.relay.handle_input(client_addr, turn, &data, now);
    assert!(matches!(out, Ok(Some(relayed)) if relayed.dst == peer));
    let back = world.relay.handle_input(peer, relayed, b"hi", now);
    assert!(matches!(back, Ok(Some(relayed)) if relayed.dst == client_addr));
}
