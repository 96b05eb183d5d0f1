//! The loader mirrors the userspace relay's channel-binding events into the XDP maps: a real
//! relay, driven by real TURN clients through random operations (allocations in every family
//! combination, channels to external peers and relay-to-self, permissions, releases,
//! partitions that let bindings expire, waits across the 300 s / 600 s lifetimes), and after
//! every step the maps read back from the kernel equal the relay's own table.

mod support;

use std::time::Duration;

use proptest::{prelude::*, test_runner::RngSeed};
use relay_xdp::{XdpRelay, load_or_skip, relay_table};
use support::{CLIENTS, Op, PEERS, PeerRef, World, mirror_and_check, perform, world_with_clients};

fn peer_ref() -> impl Strategy<Value = PeerRef> {
    prop_oneof![
        2 => (0..PEERS.len()).prop_map(PeerRef::External),
        1 => (0..CLIENTS.len(), any::<bool>()).prop_map(|(client, v6)| PeerRef::Relayed { client, v6 }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let client = 0..CLIENTS.len();
    prop_oneof![
        2 => client.clone().prop_map(Op::Allocate),
        4 => (client.clone(), peer_ref()).prop_map(|(client, peer)| Op::Bind { client, peer }),
        2 => (client.clone(), client.clone(), any::<bool>()).prop_map(|(a, b, v6)| Op::BindPair { a, b, v6 }),
        1 => (client.clone(), peer_ref()).prop_map(|(client, peer)| Op::Permit { client, peer }),
        1 => client.clone().prop_map(Op::Release),
        1 => client.prop_map(Op::TogglePartition),
        // Waits across the 240 s refresh, 300 s permission and 600 s channel lifetimes.
        2 => prop_oneof![Just(1u64), Just(240), Just(299), Just(300), Just(301), Just(600), 0..900u64]
            .prop_map(|seconds| Op::Wait(Duration::from_secs(seconds))),
    ]
}

#[test]
fn the_maps_mirror_the_relays_channel_table_after_every_operation() {
    let Some(xdp) = load_or_skip("the_maps_mirror_the_relays_channel_table_after_every_operation")
    else {
        return;
    };
    let xdp = std::cell::RefCell::new(xdp);
    let config = ProptestConfig {
        cases: 64,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x5EED_0005),
        ..ProptestConfig::default()
    };
    let most_bindings = std::cell::Cell::new(0usize);
    let removals = std::cell::Cell::new(0usize);
    proptest!(config, |(seed in 0u64..1_000, ops in prop::collection::vec(op(), 1..60))| {
        let xdp: &mut XdpRelay = &mut xdp.borrow_mut();
        let mut world = world_with_clients(seed);
        xdp.configure_for(world.relay.config()).expect("configure");
        for index in 0..CLIENTS.len() {
            perform(&mut world, Op::Allocate(index));
        }
        mirror_and_check(&mut world, xdp).map_err(TestCaseError::fail)?;
        for (step, op) in ops.iter().enumerate() {
            let before = relay_table(&world.relay).len();
            perform(&mut world, *op);
            mirror_and_check(&mut world, xdp)
                .map_err(|error| TestCaseError::fail(format!("after step {step} ({op:?}): {error}")))?;
            let after = relay_table(&world.relay).len();
            most_bindings.set(most_bindings.get().max(after));
            if after < before {
                removals.set(removals.get() + 1);
            }
        }
    });
    // The generator reaches interesting tables: several bindings at once, and removals.
    assert!(
        most_bindings.get() >= 6,
        "at most {} bindings",
        most_bindings.get()
    );
    assert!(
        removals.get() >= 10,
        "only {} steps removed bindings",
        removals.get()
    );
}

/// Clients 0 and 1 allocate; client 0 binds a channel to external peer `peer`, and the two
/// bind to each other's relayed address (relay-to-self, IPv4): three bindings, mirrored.
fn three_bindings(seed: u64, peer: usize, xdp: &mut XdpRelay) -> World {
    let mut world = world_with_clients(seed);
    xdp.configure_for(world.relay.config()).expect("configure");
    perform(&mut world, Op::Allocate(0));
    perform(&mut world, Op::Allocate(1));
    perform(
        &mut world,
        Op::Bind {
            client: 0,
            peer: PeerRef::External(peer),
        },
    );
    perform(
        &mut world,
        Op::BindPair {
            a: 0,
            b: 1,
            v6: false,
        },
    );
    mirror_and_check(&mut world, xdp).expect("mirrored");
    world
}

#[test]
fn events_install_refresh_and_remove_bindings() {
    let Some(mut xdp) = load_or_skip("events_install_refresh_and_remove_bindings") else {
        return;
    };
    let mut world = three_bindings(7, 4, &mut xdp);
    assert_eq!(xdp.channel_bindings().expect("read").len(), 3);

    // The clients refresh their channels every 240 s: the relay announces ChannelRefreshed,
    // and the maps keep exactly the same bindings.
    let table = relay_table(&world.relay);
    perform(&mut world, Op::Wait(Duration::from_secs(250)));
    assert!(
        world
            .take_events()
            .iter()
            .any(|event| matches!(event, relay::Event::ChannelRefreshed(_))),
        "a refresh happened"
    );
    // Those events were taken without applying them: refreshes change nothing in the maps.
    mirror_and_check(&mut world, &mut xdp).expect("refreshes need no map change");
    assert_eq!(xdp.channel_bindings().expect("read"), table);

    // Client 1 is cut off: its channel to client 0 expires with its permission (300 s after the
    // last refresh); client 0's channels live on.
    perform(&mut world, Op::TogglePartition(1));
    perform(&mut world, Op::Wait(Duration::from_secs(301)));
    mirror_and_check(&mut world, &mut xdp).expect("mirrored");
    assert_eq!(xdp.channel_bindings().expect("read").len(), 2);

    // Client 0 releases its allocation: every channel of it goes.
    perform(&mut world, Op::Release(0));
    mirror_and_check(&mut world, &mut xdp).expect("mirrored");
    assert_eq!(xdp.channel_bindings().expect("read"), vec![]);
    assert_eq!(xdp.allocation_entries().expect("count"), 0);
}

#[test]
fn an_unbound_event_for_a_binding_not_installed_is_an_error() {
    let Some(mut xdp) = load_or_skip("an_unbound_event_for_a_binding_not_installed_is_an_error")
    else {
        return;
    };
    let binding = relay::ChannelBinding {
        client: support::addr("198.51.100.10:40000"),
        channel: 0x4000,
        allocation_port: 50_000,
        peer: support::addr("198.51.100.70:9000"),
    };
    xdp.configure_for(&support::relay_config(1))
        .expect("configure");
    assert!(matches!(
        xdp.apply(&relay::Event::ChannelUnbound(binding)),
        Err(relay_xdp::BindingError::NotInstalled(_))
    ));
    xdp.apply(&relay::Event::ChannelBound(binding))
        .expect("install");
    xdp.apply(&relay::Event::ChannelRefreshed(binding))
        .expect("refresh");
    assert_eq!(
        xdp.channel_bindings().expect("read"),
        vec![relay_xdp::binding_from_relay(&binding)]
    );
    xdp.apply(&relay::Event::AllocationFreed {
        client: binding.client,
        port: binding.allocation_port,
        reason: relay::FreeReason::Deleted,
    })
    .expect("allocation events change nothing");
    xdp.apply(&relay::Event::ChannelUnbound(binding))
        .expect("remove");
    assert_eq!(xdp.channel_bindings().expect("read"), vec![]);
}

#[test]
fn lookups_at_the_bindings_keys_read_what_a_walk_reads_and_clearing_them_empties_the_maps() {
    let Some(mut xdp) = load_or_skip(
        "lookups_at_the_bindings_keys_read_what_a_walk_reads_and_clearing_them_empties_the_maps",
    ) else {
        return;
    };
    let world = three_bindings(11, 2, &mut xdp);
    let table = relay_table(&world.relay);
    assert_eq!(xdp.channel_bindings().expect("walk"), table);
    assert_eq!(table.len(), 3);
    let mut relay_to_self = 0;
    for binding in &table {
        let (route, allocation) = xdp.entries_at(binding).expect("lookups");
        let route = route.expect("a CHANNELS entry at every bound (client, channel)");
        assert_eq!(route.binding, binding.allocation_peer());
        assert_eq!(allocation, Some(binding.client_channel()));
        // A relay-to-self binding's route names the client bound back to it.
        let back = table
            .iter()
            .find(|other| other.allocation_peer() == binding.allocation_peer().reverse());
        assert_eq!(
            route.relay_to_self,
            back.map(|other| other.client_channel()).unwrap_or_default()
        );
        relay_to_self += usize::from(back.is_some());
    }
    assert_eq!(relay_to_self, 2, "the pair binds both ways");
    assert!(!xdp.bindings_are_empty().expect("walk"));
    xdp.clear_channels_of(&table).expect("clear");
    assert!(xdp.bindings_are_empty().expect("walk"));
    assert_eq!(xdp.entries_at(&table[0]).expect("lookups"), (None, None));
    // Keys with nothing there are no error.
    xdp.clear_channels_of(&table).expect("clear again");
}
