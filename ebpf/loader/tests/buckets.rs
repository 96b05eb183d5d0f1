//! The binding tables' buckets and overflow maps, through the program in the kernel: keys that
//! crowd one bucket spill into the overflow map and still take the fast path both ways, a
//! removed binding's slot is taken by the next key of its bucket, and a binding rewritten in
//! place routes to its new peer at once.

use relay_xdp::{ChannelBinding, RunOutcome, Verdict, XdpRelay, load_or_skip};
use relay_xdp_common::table::{SLOTS_PER_BUCKET, TableKey, bucket_index};
use xdp_fixtures::{frame, world};

/// Where a binding's two keys may vary: one of its ports, and the channel number or the
/// allocation port.
#[derive(Debug, Clone, Copy)]
struct Spot {
    port: u16,
    other: u16,
}

/// `count` spots, in order, at which `key_of` falls in the same bucket as at the first.
fn crowding_spots<K: TableKey>(count: usize, key_of: impl Fn(Spot) -> K) -> Vec<Spot> {
    let spots =
        (0..16u16).flat_map(|other| (1024..=u16::MAX).map(move |port| Spot { port, other }));
    let first = bucket_index(
        &key_of(Spot {
            port: 1024,
            other: 0,
        })
        .words(),
    );
    let crowding: Vec<Spot> = spots
        .filter(|&spot| bucket_index(&key_of(spot).words()) == first)
        .take(count)
        .collect();
    assert_eq!(crowding.len(), count, "not enough keys share a bucket");
    crowding
}

/// A binding of `world::client(false)` at the client spot's port, on channel 0x4000 plus its
/// other, to `world::peer(false)` at the peer spot's port, through allocation 50001 plus its
/// other.
fn binding(client: Spot, peer: Spot) -> ChannelBinding {
    let mut client_addr = world::client(false);
    client_addr.set_port(client.port);
    let mut peer_addr = world::peer(false);
    peer_addr.set_port(peer.port);
    ChannelBinding {
        client: client_addr,
        channel: 0x4000 + client.other,
        allocation_port: 50001 + peer.other,
        peer: peer_addr,
    }
}

fn channel_data_from(relay: &XdpRelay, binding: &ChannelBinding) -> RunOutcome {
    let payload = frame::channel_data(binding.channel, &frame::data(32), &[]);
    let input = frame::udp(binding.client, world::relay(false, 3478), &payload);
    relay.run(&input).expect("test run")
}

fn datagram_from_peer(relay: &XdpRelay, binding: &ChannelBinding) -> RunOutcome {
    let input = frame::udp(
        binding.peer,
        world::relay(false, binding.allocation_port),
        &frame::data(32),
    );
    relay.run(&input).expect("test run")
}

fn destination(outcome: &RunOutcome) -> u16 {
    frame::udp_header(&outcome.frame_out).destination_port
}

/// Both directions of `binding` take the fast path to the right port.
fn assert_fast_path(relay: &XdpRelay, binding: &ChannelBinding) {
    let to_peer = channel_data_from(relay, binding);
    assert_eq!(to_peer.verdict, Verdict::Tx, "{binding:?}: client to peer");
    assert_eq!(destination(&to_peer), binding.peer.port(), "{binding:?}");
    let to_client = datagram_from_peer(relay, binding);
    assert_eq!(
        to_client.verdict,
        Verdict::Tx,
        "{binding:?}: peer to client"
    );
    assert_eq!(
        destination(&to_client),
        binding.client.port(),
        "{binding:?}"
    );
}

#[test]
fn a_crowded_bucket_spills_into_the_overflow_map_and_every_binding_stays_fast() {
    let Some(mut relay) =
        load_or_skip("a_crowded_bucket_spills_into_the_overflow_map_and_every_binding_stays_fast")
    else {
        return;
    };
    relay
        .set_relay_addresses(Some(world::RELAY_V4), Some(world::RELAY_V6))
        .expect("addresses");
    let spill = 2;
    let count = SLOTS_PER_BUCKET + spill;
    // Clients whose (client, channel) keys share a bucket, and peers whose (allocation, peer)
    // keys share one.
    let any = Spot { port: 1, other: 0 };
    let clients = crowding_spots(count + 1, |spot| binding(spot, any).client_channel());
    let peers = crowding_spots(count + 1, |spot| binding(any, spot).allocation_peer());
    let bindings: Vec<ChannelBinding> =
        (0..=count).map(|i| binding(clients[i], peers[i])).collect();
    let (installed, spare) = bindings.split_at(count);

    for binding in installed {
        relay.install_channel(binding).expect("install");
    }
    assert_eq!(relay.overflow_entries(), (spill, spill));
    let mut expected = installed.to_vec();
    expected.sort_unstable();
    assert_eq!(relay.channel_bindings().expect("read back"), expected);
    assert_eq!(relay.allocation_entries().expect("count"), count);
    for binding in installed {
        assert_fast_path(&relay, binding);
    }

    // A removed binding passes to userspace, and its slot goes to the next key of the bucket.
    relay.remove_channel(&installed[0]).expect("remove");
    assert_eq!(
        channel_data_from(&relay, &installed[0]).verdict,
        Verdict::Pass
    );
    assert_eq!(
        datagram_from_peer(&relay, &installed[0]).verdict,
        Verdict::Pass
    );
    relay
        .install_channel(&spare[0])
        .expect("install into the freed slot");
    assert_eq!(relay.overflow_entries(), (spill, spill));
    assert_fast_path(&relay, &spare[0]);

    // The same (client, channel) bound to another peer: rewritten in place, routed at once.
    let moved = ChannelBinding {
        peer: installed[0].peer,
        allocation_port: installed[0].allocation_port,
        ..installed[1]
    };
    relay.install_channel(&moved).expect("rebind");
    assert_eq!(
        destination(&channel_data_from(&relay, &moved)),
        moved.peer.port()
    );
    assert_eq!(
        relay.entries_at(&moved).expect("read").0.map(|r| r.binding),
        Some(moved.allocation_peer())
    );

    // Overflowed keys are removed from the overflow map, and nothing is left behind.
    relay.clear_channels().expect("clear");
    assert!(relay.bindings_are_empty().expect("read back"));
    assert_eq!(relay.overflow_entries(), (0, 0));
    for binding in &bindings {
        assert_eq!(channel_data_from(&relay, binding).verdict, Verdict::Pass);
    }
}
