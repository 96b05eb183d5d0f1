//! Relaying data allocates nothing: a counting global allocator watches 10,000 datagrams each
//! way.

mod support;

use std::alloc::System;

use cap::Cap;
use support::*;

/// Counts every byte the process allocates.
#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

#[test]
fn relaying_channel_data_allocates_nothing() {
    let mut world = World::new(relay_config());
    let peer = addr("198.51.100.77:9000");
    let (client, relayed, channel) = world.client_with_channel(addr("198.51.100.10:40000"), peer);
    let now = world.now;
    let payload = [7u8; 100];
    let channel_data = proto::channel_data::ChannelData {
        channel,
        data: &payload,
    }
    .to_vec();
    let client_addr = world.clients[client].addr;

    let relay_both_ways = |world: &mut World| {
        let out = world
            .relay
            .handle_input(client_addr, server_v4(), &channel_data, now)
            .expect("relayed")
            .expect("data");
        let back = world
            .relay
            .handle_input(peer, relayed, &payload, now)
            .expect("relayed")
            .expect("data");
        out.len() + back.len()
    };
    // Warm up: first calls may initialise lazily (e.g. logging call sites).
    for _ in 0..100 {
        relay_both_ways(&mut world);
    }
    let before = ALLOCATOR.total_allocated();
    let mut relayed_bytes = 0;
    for _ in 0..10_000 {
        relayed_bytes += relay_both_ways(&mut world);
    }
    let allocated = ALLOCATOR.total_allocated() - before;
    assert_eq!(relayed_bytes, 10_000 * (100 + 104));
    assert_eq!(allocated, 0, "the data path allocated {allocated} bytes");
}
