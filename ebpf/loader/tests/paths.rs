//! The fast path's twelve rewriting paths and every PASS reason, run in the kernel through
//! BPF_PROG_TEST_RUN: each fixture's output is compared byte for byte with a frame etherparse
//! built independently, every output checksum is recomputed from scratch, the bindings API
//! round-trips through the maps, and random frames aimed at the relay never abort.

mod common;

use std::collections::BTreeMap;

use common::{hex, install, run_fixture};
use proptest::prelude::*;
use relay_xdp::{
    BindingError, ChannelBinding, Verdict, XdpRelay, bench, load_or_skip, own_cost, reason,
};
use xdp_fixtures::{Fixture, Setup, all_fixtures, edge_fixtures, frame, path_fixtures, world};

#[test]
fn the_twelve_paths_rewrite_exactly_as_expected() {
    let Some(mut relay) = load_or_skip("the_twelve_paths_rewrite_exactly_as_expected") else {
        return;
    };
    install(&mut relay, &world::setup());
    let fixtures = path_fixtures();
    assert_eq!(fixtures.len(), 12);
    for fixture in &fixtures {
        assert_eq!(fixture.setup, world::setup());
        run_fixture(&relay, fixture);
    }
}

#[test]
fn every_edge_fixture_gets_its_verdict_reason_and_exact_output() {
    let Some(mut relay) =
        load_or_skip("every_edge_fixture_gets_its_verdict_reason_and_exact_output")
    else {
        return;
    };
    let fixtures = edge_fixtures();
    assert!(fixtures.len() >= 30);
    for fixture in &fixtures {
        install(&mut relay, &fixture.setup);
        run_fixture(&relay, fixture);
    }
}

#[test]
fn all_fixtures_in_one_run_count_every_reason_they_expect() {
    let Some(mut relay) = load_or_skip("all_fixtures_in_one_run_count_every_reason_they_expect")
    else {
        return;
    };
    let before = relay.reason_counters().expect("counters");
    let mut expected = BTreeMap::new();
    let mut installed: Option<Setup> = None;
    for fixture in all_fixtures() {
        if installed.as_ref() != Some(&fixture.setup) {
            install(&mut relay, &fixture.setup);
            installed = Some(fixture.setup.clone());
        }
        run_fixture(&relay, &fixture);
        *expected.entry(reason::name(fixture.reason)).or_insert(0u64) += 1;
    }
    let counted = relay.reason_counters().expect("counters").since(&before);
    assert_eq!(
        counted.non_zero().into_iter().collect::<BTreeMap<_, _>>(),
        expected
    );
}

#[test]
fn a_removed_binding_passes_the_next_packet_in_both_directions() {
    let Some(mut relay) = load_or_skip("a_removed_binding_passes_the_next_packet") else {
        return;
    };
    install(&mut relay, &world::setup());
    let channel = path_fixture("chan4-to-udp6");
    let allocation = path_fixture("udp6-to-chan4");
    run_fixture(&relay, &channel);
    run_fixture(&relay, &allocation);

    let binding = ChannelBinding {
        client: world::client(false),
        channel: world::peer_channel(true),
        allocation_port: world::client_allocation(false),
        peer: world::peer(true),
    };
    relay.remove_channel(&binding).expect("remove");
    for (fixture, why) in [
        (&channel, reason::PASS_NO_CHANNEL_BINDING),
        (&allocation, reason::PASS_NO_PEER_BINDING),
    ] {
        let outcome = relay.run(&fixture.frame).expect("run");
        assert_eq!(
            outcome.verdict,
            Verdict::Pass,
            "{} after removal",
            fixture.name
        );
        assert_eq!(outcome.frame_out, fixture.frame);
        run_fixture(&relay, &passed(fixture, why));
    }

    // Installed again, it rewrites again.
    relay.install_channel(&binding).expect("install");
    run_fixture(&relay, &channel);
    run_fixture(&relay, &allocation);
}

#[test]
fn relay_to_self_passes_once_the_other_side_is_removed() {
    let Some(mut relay) = load_or_skip("relay_to_self_passes_once_the_other_side_is_removed")
    else {
        return;
    };
    install(&mut relay, &world::setup());
    let fixture = path_fixture("chan4-to-chan6");
    run_fixture(&relay, &fixture);
    // B's channel back to A's allocation: the second lookup of the relay-to-self path.
    let [_, back] = world::self_route(false, true).bindings();
    relay.remove_channel(&back).expect("remove");
    run_fixture(&relay, &passed(&fixture, reason::PASS_SELF_NO_BINDING));
}

/// The channel path resolves relay-to-self with one lookup: each `CHANNELS` value carries the
/// `ALLOCATIONS` entry of its reverse binding. It must follow changes on either side, in any
/// order, and conflicting replacements.
#[test]
fn relay_to_self_routes_follow_changes_on_either_side() {
    let Some(mut relay) = load_or_skip("relay_to_self_routes_follow_changes_on_either_side") else {
        return;
    };
    let route = RouteAToB::new();
    // Each part goes on from the bindings the part before left installed.
    route.either_side_comes_and_goes_first(&mut relay);
    route.another_client_takes_over_the_reverse_binding(&mut relay);
    route.the_sender_rebinds_to_an_external_peer(&mut relay);
    a_binding_to_its_own_allocation_is_its_own_reverse(&mut relay);
}

/// The relay-to-self route from A (IPv4) to B (IPv6), its frame, and its two bindings.
struct RouteAToB {
    /// Relayed: ChannelData from A to B.
    fixture: Fixture,
    /// The same frame, passed for want of B's binding back.
    passed: Fixture,
    /// A's channel to B's allocation.
    forth: ChannelBinding,
    /// B's channel back to A's allocation.
    back: ChannelBinding,
}

impl RouteAToB {
    fn new() -> Self {
        let fixture = path_fixture("chan4-to-chan6");
        let [forth, back] = world::self_route(false, true).bindings();
        Self {
            passed: passed(&fixture, reason::PASS_SELF_NO_BINDING),
            fixture,
            forth,
            back,
        }
    }

    /// Starting from the sender's binding alone, then leaving both installed.
    fn either_side_comes_and_goes_first(&self, relay: &mut XdpRelay) {
        let setup = world::setup();
        relay
            .configure(setup.relay_v4, setup.relay_v6, &[self.forth])
            .expect("configure");
        run_fixture(relay, &self.passed);
        assert_no_stale_routes(relay);
        // The other side arrives after the sender's binding.
        relay.install_channel(&self.back).expect("install");
        assert_no_stale_routes(relay);
        run_fixture(relay, &self.fixture);
        // ... and leaves.
        relay.remove_channel(&self.back).expect("remove");
        assert_no_stale_routes(relay);
        run_fixture(relay, &self.passed);
        // The other side first, then the sender's binding.
        relay.remove_channel(&self.forth).expect("remove");
        relay.install_channel(&self.back).expect("install");
        relay.install_channel(&self.forth).expect("install");
        assert_no_stale_routes(relay);
        run_fixture(relay, &self.fixture);
        // Refreshing either side changes nothing.
        relay.install_channel(&self.back).expect("refresh");
        relay.install_channel(&self.forth).expect("refresh");
        assert_no_stale_routes(relay);
        run_fixture(relay, &self.fixture);
    }

    /// Another client takes over the other allocation's (allocation, peer): the data goes to
    /// it.
    fn another_client_takes_over_the_reverse_binding(&self, relay: &mut XdpRelay) {
        let usurper = ChannelBinding {
            client: frame::addr(world::D),
            channel: 0x4FF0,
            ..self.back
        };
        relay.install_channel(&usurper).expect("install");
        assert_no_stale_routes(relay);
        let outcome = relay.run(&self.fixture.frame).expect("run");
        assert_eq!(outcome.verdict, Verdict::Tx);
        let offset = frame::udp_offset(&outcome.frame_out);
        assert_eq!(
            frame::udp_header(&outcome.frame_out).destination_port,
            world::D.rsplit(':').next().unwrap().parse::<u16>().unwrap()
        );
        assert_eq!(outcome.frame_out[offset + 8..offset + 10], [0x4F, 0xF0]);
        assert!(frame::verify_checksums(&outcome.frame_out).is_ok());
        // When it goes, `ALLOCATIONS` has no entry there any more (B's binding lost it): pass.
        relay.remove_channel(&usurper).expect("remove");
        assert_no_stale_routes(relay);
        run_fixture(relay, &self.passed);
        // B's binding, installed again, takes its entry back.
        relay.install_channel(&self.back).expect("install");
        assert_no_stale_routes(relay);
        run_fixture(relay, &self.fixture);
    }

    /// The sender's channel re-bound to an external peer: no relay-to-self any more.
    fn the_sender_rebinds_to_an_external_peer(&self, relay: &mut XdpRelay) {
        let external = ChannelBinding {
            peer: frame::addr("[2001:db8::99]:40000"),
            ..self.forth
        };
        relay.install_channel(&external).expect("rebind");
        assert_no_stale_routes(relay);
        assert_eq!(
            relay.run(&self.fixture.frame).expect("run").verdict,
            Verdict::Tx
        );
        assert_eq!(
            relay
                .reason_counters()
                .expect("counters")
                .get(reason::TX_CHAN4_TO_UDP6),
            1
        );
    }
}

/// A binding of an allocation to the relay's address at its own port is its own reverse.
fn a_binding_to_its_own_allocation_is_its_own_reverse(relay: &mut XdpRelay) {
    let own = ChannelBinding {
        client: frame::addr(world::C),
        channel: 0x4FF1,
        allocation_port: world::C_ALLOCATION,
        peer: world::relay(false, world::C_ALLOCATION),
    };
    relay.install_channel(&own).expect("install");
    assert_no_stale_routes(relay);
    relay.remove_channel(&own).expect("remove");
    assert_no_stale_routes(relay);
}

/// The path fixture named `name`.
fn path_fixture(name: &str) -> Fixture {
    path_fixtures()
        .into_iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("fixture {name}"))
}

/// `fixture`'s frame, passed unchanged for reason `why`.
fn passed(fixture: &Fixture, why: u32) -> Fixture {
    let mut passed = fixture.clone();
    passed.verdict = relay_xdp::action::PASS;
    passed.reason = why;
    passed.expected = fixture.frame.clone();
    passed
}

fn assert_no_stale_routes(relay: &XdpRelay) {
    assert_eq!(
        relay.stale_relay_to_self_routes().expect("read routes"),
        vec![],
        "stale relay-to-self routes"
    );
}

/// Random installs and removals over a small set of clients, channels, allocations and peers
/// (so that bindings conflict and replace each other): after every operation each channel's
/// relay-to-self destination equals the `ALLOCATIONS` entry of its reverse binding.
#[test]
fn relay_to_self_routes_stay_equal_to_the_reverse_lookup() {
    let Some(relay) = load_or_skip("relay_to_self_routes_stay_equal_to_the_reverse_lookup") else {
        return;
    };
    let relay = std::cell::RefCell::new(relay);
    let clients = [world::A, world::B, world::C, world::D];
    let allocations = [
        world::A_ALLOCATION,
        world::B_ALLOCATION,
        world::C_ALLOCATION,
        world::D_ALLOCATION,
    ];
    let binding = (0..4usize, 0..3u16, 0..4usize, 0..5usize, any::<bool>()).prop_map(
        move |(client, channel, allocation, peer, peer_v6)| ChannelBinding {
            client: frame::addr(clients[client]),
            channel: 0x4000 + channel,
            allocation_port: allocations[allocation],
            peer: match peer {
                4 => frame::addr("198.51.100.20:50011"),
                port => world::relay(peer_v6, allocations[port]),
            },
        },
    );
    let config = ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in prop::collection::vec((any::<bool>(), binding), 1..40))| {
        let relay: &mut XdpRelay = &mut relay.borrow_mut();
        relay
            .configure(Some(world::RELAY_V4), Some(world::RELAY_V6), &[])
            .expect("configure");
        for (step, (install, binding)) in ops.iter().enumerate() {
            if *install {
                relay.install_channel(binding).expect("install");
            } else {
                // Often not installed (exactly): that is an error and changes nothing.
                let _ = relay.remove_channel(binding);
            }
            let stale = relay.stale_relay_to_self_routes().expect("read routes");
            prop_assert!(stale.is_empty(), "after step {}: stale routes {:?}", step, stale);
        }
    });
}

#[test]
fn bindings_read_back_sorted_and_errors_are_typed() {
    let Some(mut relay) = load_or_skip("bindings_read_back_sorted_and_errors_are_typed") else {
        return;
    };
    assert_eq!(relay.channel_bindings().expect("read"), vec![]);
    assert_eq!(relay.relay_addresses().expect("read"), (None, None));
    install(&mut relay, &world::setup());
    assert_eq!(
        relay.relay_addresses().expect("read"),
        (Some(world::RELAY_V4), Some(world::RELAY_V6))
    );
    let mut installed = relay.channel_bindings().expect("read");
    assert_eq!(installed, world::bindings());
    assert!(installed.is_sorted());
    assert_eq!(relay.allocation_entries().expect("count"), installed.len());

    let first = installed.remove(0);
    relay.remove_channel(&first).expect("remove");
    assert_eq!(relay.channel_bindings().expect("read"), installed);
    assert_eq!(relay.allocation_entries().expect("count"), installed.len());
    assert!(matches!(
        relay.remove_channel(&first),
        Err(BindingError::NotInstalled(b)) if b == first
    ));
    // A binding whose peer differs from the installed one is not removed.
    let mut other = installed[0];
    other.peer = frame::addr("198.51.100.7:9");
    assert!(matches!(
        relay.remove_channel(&other),
        Err(BindingError::NotInstalled(_))
    ));
    assert_eq!(relay.channel_bindings().expect("read"), installed);

    let mut bad = first;
    bad.channel = 0x8000;
    let error = relay
        .install_channel(&bad)
        .expect_err("channel out of range");
    assert!(matches!(error, BindingError::InvalidChannel(0x8000)));
    assert_eq!(
        error.to_string(),
        "channel number 0x8000 is outside 0x4000-0x7fff"
    );
    bad = first;
    bad.allocation_port = 3478;
    assert!(matches!(
        relay.install_channel(&bad),
        Err(BindingError::InvalidAllocationPort(3478))
    ));

    relay.clear_channels().expect("clear");
    assert_eq!(relay.channel_bindings().expect("read"), vec![]);
    assert_eq!(relay.allocation_entries().expect("count"), 0);
}

#[test]
fn the_floor_program_and_bench_rows_work() {
    let Some(mut relay) = load_or_skip("the_floor_program_and_bench_rows_work") else {
        return;
    };
    install(&mut relay, &world::setup());
    let fixtures = path_fixtures();
    // A few calls only: this checks the machinery; `cargo xtask bench` measures.
    let rows = bench::measure_all(
        &relay,
        fixtures.iter().map(|f| (f.name, f.frame.as_slice())),
        200,
    )
    .expect("bench");
    assert_eq!(rows.len(), 12);
    for row in &rows {
        assert_eq!(row.verdict, Verdict::Tx, "{}", row.path);
        assert!(row.median_ns > 0 && row.floor_median_ns > 0, "{row:?}");
        assert!(
            row.p25_ns <= row.median_ns && row.median_ns <= row.p75_ns,
            "{row:?}"
        );
        assert!(row.floor_p25_ns <= row.floor_median_ns, "{row:?}");
        assert!(row.floor_median_ns <= row.floor_p75_ns, "{row:?}");
        assert_eq!((row.calls, row.rounds), (200, 1));
        assert!(row.ratio > 0.0);
        assert!(row.ratio_p25 <= row.ratio_p75, "{row:?}");
    }
    let table = bench::render(&rows);
    assert!(table.contains("chan6-to-chan4"));
}

#[test]
fn own_cost_charges_each_path_and_its_floor_their_own_runs() {
    let Some(mut relay) = load_or_skip("own_cost_charges_each_path_and_its_floor_their_own_runs")
    else {
        return;
    };
    install(&mut relay, &world::setup());
    let fixtures = path_fixtures();
    // Sixteen rounds, four per quarter: the machinery, not a measurement. A round that an
    // interrupt inflated (the suite runs tests side by side) can make a quarter or a mean
    // anything, so only the median over the rounds is held to a sign.
    let rows = own_cost::measure_all(
        &relay,
        fixtures.iter().map(|f| (f.name, f.frame.as_slice())),
        16 * bench::ROUND_PAIRS,
    )
    .expect("own cost");
    assert_eq!(rows.len(), 12);
    for row in &rows {
        assert!(row.floor_ns > 0.0 && row.program_ns > 0.0, "{row:?}");
        // A rewrite parses, looks up a map and rewrites headers: it costs more than returning.
        assert!(row.own_ns > 0.0, "{row:?}");
        assert!(row.parts_ns.iter().all(|part| *part != 0.0), "{row:?}");
    }
    let table = own_cost::render(&rows);
    assert!(table.contains("udp6-to-chan6") && table.contains('%'));
}

/// Random payloads behind real headers, aimed at the relay: to 3478 (random ChannelData
/// headers, mostly on bound channels, sometimes with a consistent length and padding), to bound
/// and unbound allocation ports, from bound and random peers and clients, both families, random
/// UDP checksums (including zero), sometimes an Ethernet trailer.
fn relay_bound_frame() -> impl Strategy<Value = Vec<u8>> {
    let bindings = world::bindings();
    let endpoints = prop_oneof![
        // A client on one of its channels to 3478.
        (0..bindings.len(), any::<bool>()).prop_map({
            let bindings = bindings.clone();
            move |(i, dst_v6)| {
                let b = bindings[i];
                (b.client, world::relay(dst_v6, 3478), Some(b.channel))
            }
        }),
        // A peer to its allocation.
        (0..bindings.len(), any::<bool>()).prop_map({
            let bindings = bindings.clone();
            move |(i, dst_v6)| {
                (
                    b_peer(&bindings[i]),
                    world::relay(dst_v6, bindings[i].allocation_port),
                    None,
                )
            }
        }),
        // Anyone to a random relay port.
        (any::<bool>(), any::<[u8; 4]>(), any::<u16>(), any::<u16>()).prop_map(
            |(v6, ip, src_port, dst_port)| {
                let src = if v6 {
                    std::net::SocketAddr::new(
                        std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, ip[0].into()).into(),
                        src_port,
                    )
                } else {
                    std::net::SocketAddr::new(std::net::Ipv4Addr::from(ip).into(), src_port)
                };
                (src, world::relay(v6, dst_port), None)
            }
        ),
    ];
    (
        endpoints,
        prop::collection::vec(any::<u8>(), 0..600),
        any::<u16>(),
        0usize..4,
        prop_oneof![3 => Just(None), 1 => any::<u16>().prop_map(Some)],
        prop_oneof![4 => Just(0usize), 1 => 0usize..80],
    )
        .prop_map(
            |((src, dst, channel), data, raw_channel, pad, checksum, trailer)| {
                // Families must match; pick the relay's address of the source's family.
                let dst = world::relay(src.is_ipv6(), dst.port());
                let payload = match channel {
                    // A bound channel: a consistent ChannelData message half the time.
                    Some(channel) if raw_channel % 2 == 0 => {
                        frame::channel_data(channel, &data, &vec![0xC3; pad])
                    }
                    // A random ChannelData-ish header.
                    Some(_) => {
                        let mut payload = raw_channel.to_be_bytes().to_vec();
                        payload.extend_from_slice(&data);
                        payload
                    }
                    None => data,
                };
                let mut out = frame::udp(src, dst, &payload);
                if let Some(checksum) = checksum {
                    let offset = frame::udp_offset(&out);
                    out[offset + 6..offset + 8].copy_from_slice(&checksum.to_be_bytes());
                }
                let len = out.len() + trailer;
                frame::ethernet_padded(out, len)
            },
        )
}

fn b_peer(binding: &ChannelBinding) -> std::net::SocketAddr {
    binding.peer
}

#[test]
fn random_relay_bound_frames_never_abort_and_counters_add_up() {
    let Some(mut relay) = load_or_skip("random_relay_bound_frames_never_abort") else {
        return;
    };
    install(&mut relay, &world::setup());
    let before = relay.reason_counters().expect("counters");
    let runs = std::cell::Cell::new(0u64);
    let tx = std::cell::Cell::new(0u64);
    let relay_ref: &XdpRelay = &relay;
    let config = ProptestConfig {
        cases: 10_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(input in relay_bound_frame())| {
        let outcome = relay_ref.run(&input).expect("a frame of 14+ bytes always runs");
        runs.set(runs.get() + 1);
        prop_assert!(
            matches!(outcome.verdict, Verdict::Pass | Verdict::Tx),
            "verdict {} for\n{}", outcome.verdict, hex(&input)
        );
        match outcome.verdict {
            Verdict::Pass => prop_assert_eq!(&outcome.frame_out, &input),
            _ => {
                tx.set(tx.get() + 1);
                // Only frames with a correct (or, over IPv4, absent) checksum are rewritten
                // with a correct one; a corrupt input checksum stays corrupt, which the
                // receiver detects as it would have without the relay.
                if frame::verify_checksums(&input).is_ok() {
                    let checked = frame::verify_checksums(&outcome.frame_out);
                    prop_assert!(checked.is_ok(), "{:?} for\n{}", checked, hex(&input));
                }
            }
        }
    });
    let counted = relay.reason_counters().expect("counters").since(&before);
    assert_eq!(runs.get(), 10_000);
    assert_eq!(counted.total(), runs.get(), "one reason counted per run");
    let tx_counted: u64 = (reason::TX_FIRST..reason::TX_END)
        .map(|why| counted.get(why))
        .sum();
    assert_eq!(
        tx_counted,
        tx.get(),
        "every TX is counted under a TX reason"
    );
    assert!(
        tx.get() > 500,
        "the generator reaches the rewriting paths: {counted:?}"
    );
    eprintln!("random relay-bound frames: {:?}", counted.non_zero());
}
