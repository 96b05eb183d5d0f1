//! Differential test: the XDP fast path against the userspace relay, packet by packet.
//!
//! A real `relay::Relay` is driven by real TURN clients (`turn_client::TurnClient`, on IPv4 and IPv6,
//! with IPv4, IPv6 and dual-stack allocations) through random operations: allocations,
//! channels to external peers of both families, relay-to-self pairs (two clients binding
//! channels to each other's relayed addresses), permissions, releases, partitions and waits
//! that let permissions (300 s), channels (600 s) and allocations expire. The relay's events are
//! mirrored into the XDP maps with `XdpRelay::apply` after every operation, and the maps are
//! checked against the relay's table.
//!
//! Between operations, random datagrams arrive at the relay: ChannelData from clients (bound
//! channels, channels whose binding was removed, unbound and out-of-range channel numbers,
//! wrong lengths, padding), UDP from peers to allocation ports (bound, unbound, permitted
//! only, unused ports, spoofed from the relay's own address), STUN from clients, junk; framed
//! with random TOS/TTL, sometimes without a UDP checksum, with an Ethernet trailer, IPv4
//! options, an IPv6 extension header or as a fragment. Each one is framed
//! (Ethernet/IP/UDP, `xdp_fixtures::frame`, source = sender, destination = the relay address it
//! was sent to), run through the XDP program (`BPF_PROG_TEST_RUN`), and its (from, to, payload)
//! fed to the userspace relay at the same instant. Then:
//!
//! - The program never returns XDP_DROP or XDP_ABORTED, and counts exactly one reason, whose
//!   action is the verdict.
//! - **XDP_TX**: the userspace relay relayed the datagram (`Ok(Some(Relayed))`), and the output
//!   frame decoded with etherparse has the relayed source and destination (address and port)
//!   and exactly its bytes (ChannelData header + data, or data) as UDP payload; the reason is
//!   the path that the families and kinds of input and output name; every checksum in the
//!   output is correct, recomputed from scratch (a zero UDP checksum only where the input had
//!   none and both sides are IPv4); MACs are swapped, TTL is 64, TOS is carried over.
//! - **XDP_PASS**: the frame is unchanged, and the userspace relay handles it. If userspace
//!   relays it as data, the pass must have one of the reasons in [`check::ALLOWED_PASS`], each
//!   backed by a property of the packet that the test knows independently.
//!
//! Deterministic: seeded SplitMix64, fixed seeds. `DIFFERENTIAL_SEEDS=a,b,c` replaces them,
//! `DIFFERENTIAL_PACKETS=n` sets the packets per seed. Every disagreement is collected with the
//! seed, the step and the packet, one example per kind, and reported together at the end.
//!
//! Here: the two tests and the run's parameters. `seed_run` runs one seed, `rng` and
//! `generate` draw the client operations and the packets (`packet`), `run` sends a packet
//! through both, `decode` and `check` judge the outcome, and `tally` counts and reports.

#[path = "../support/mod.rs"]
mod support;

mod check;
mod decode;
mod generate;
mod packet;
mod rng;
mod run;
mod seed_run;
mod tally;

use check::check_packet;
use packet::{Framing, Packet, channel_data, turn_server_of};
use relay_xdp::load_or_skip;
use seed_run::SeedRun;
use support::{Op, PeerRef, mirror_and_check, perform, world_with_clients};
use tally::{Tally, assert_no_disagreements, assert_the_default_run_covers_enough, report};

/// Seeds of the default run; each is one world (a fresh relay, fresh maps).
const SEEDS: [u64; 8] = [1, 2, 3, 4, 5, 6, 7, 8];
/// Packets per seed in the default run: 8 x 1,500 = 12,000.
const PACKETS_PER_SEED: usize = 1_500;

fn env_list(name: &str) -> Option<Vec<u64>> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .split(',')
            .map(|item| item.trim().parse().expect("a number"))
            .collect(),
    )
}

#[test]
fn xdp_and_the_userspace_relay_agree_on_every_packet() {
    let Some(mut xdp) = load_or_skip("xdp_and_the_userspace_relay_agree_on_every_packet") else {
        return;
    };
    let seeds = env_list("DIFFERENTIAL_SEEDS").unwrap_or_else(|| SEEDS.to_vec());
    let per_seed = env_list("DIFFERENTIAL_PACKETS")
        .and_then(|n| n.first().copied())
        .map_or(PACKETS_PER_SEED, |n| n as usize);
    let default_run = seeds == SEEDS && per_seed == PACKETS_PER_SEED;

    let mut tally = Tally::default();
    for &seed in &seeds {
        SeedRun::start(&mut xdp, seed).run(&mut xdp, per_seed, &mut tally);
    }
    eprintln!("{}", report(&tally, seeds.len()));
    assert_no_disagreements(&tally);
    if default_run {
        assert_the_default_run_covers_enough(&tally);
    }
}

/// The disagreement this test found first, kept as a regression test: 0-3 bytes may follow
/// ChannelData's data whatever its length (`proto::channel_data`, RFC 8656 §12.5), and the
/// program used to pass (`pass/channel-data-length`) anything beyond the next multiple of 4,
/// such as 4 data bytes followed by 1 byte, which the userspace relay relays.
#[test]
fn one_byte_after_four_data_bytes_is_relayed_by_both() {
    let Some(mut xdp) = load_or_skip("one_byte_after_four_data_bytes_is_relayed_by_both") else {
        return;
    };
    let mut world = world_with_clients(1);
    xdp.configure_for(world.relay.config()).expect("configure");
    perform(&mut world, Op::Allocate(0));
    perform(
        &mut world,
        Op::Bind {
            client: 0,
            peer: PeerRef::External(0),
        },
    );
    mirror_and_check(&mut world, &mut xdp).expect("mirrored");
    let binding = world.relay.channel_bindings()[0];
    let mut counters = xdp.reason_counters().expect("counters");
    let mut tally = Tally::default();
    for (data, padding) in [
        (&[1u8, 2, 3, 4][..], &[0xEE][..]),
        (&[1, 2, 3, 4], &[1, 2, 3]),
        (&[], &[7]),
    ] {
        let packet = Packet {
            kind: "chan/aligned-then-padding",
            from: binding.client,
            to: turn_server_of(binding.client),
            payload: channel_data(binding.channel, data, padding),
            framing: Framing::Plain { tos: 0, ttl: 64 },
        };
        check_packet(
            &xdp,
            &mut world,
            &mut counters,
            &packet,
            "regression",
            &mut tally,
        );
    }
    assert!(tally.failures.is_empty(), "{:#?}", tally.failures);
    assert_eq!(
        tally.reasons.get("tx/chan4-to-udp4"),
        Some(&3),
        "{:?}",
        tally.reasons
    );
}
