//! Userspace relaying cost: ChannelData client -> peer and UDP peer -> client with a 100-byte
//! payload, a full authenticated Allocate, and the cost and memory of an allocation at a
//! permission cap of 10,000 beside one with a single permission.

use std::{
    hint::black_box,
    net::SocketAddr,
    time::{Duration, Instant},
};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use proto::{channel_data::ChannelData, credentials};
use relay::{Relay, RelayConfig};
use turn_client::{Families, TurnClient, TurnClientConfig};

const SECRET: &[u8] = b"bench shared secret";

#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("address literal")
}

fn config() -> RelayConfig {
    let mut config = RelayConfig::new("bench", SECRET);
    config.public_v4 = Some("203.0.113.1".parse().expect("ip"));
    config.unix_time_at_start = 1_800_000_000;
    config
}

/// Moves datagrams between one client and the relay until both are quiet.
fn pump(relay: &mut Relay, client: &mut TurnClient, client_addr: SocketAddr, now: Instant) {
    loop {
        let mut progressed = false;
        while let Some(transmit) = client.poll_transmit() {
            progressed = true;
            let _ = relay.handle_input(client_addr, transmit.dst, &transmit.payload, now);
        }
        while let Some(transmit) = relay.poll_transmit() {
            progressed = true;
            let _ = client.handle_input(transmit.src, &transmit.payload, now);
        }
        if !progressed {
            return;
        }
    }
}

struct Setup {
    relay: Relay,
    now: Instant,
    client: SocketAddr,
    server: SocketAddr,
    relayed: SocketAddr,
    peer: SocketAddr,
    channel: u16,
}

fn allocated_with_channel() -> Setup {
    let now = Instant::now();
    let mut relay = Relay::new(config(), now).expect("config");
    let client_addr = addr("198.51.100.10:40000");
    let server = addr("203.0.113.1:3478");
    let mut client = TurnClient::new(TurnClientConfig {
        server,
        credentials: credentials::rest_api_credentials(SECRET, 1_900_000_000, "bench"),
        families: Families::V4,
        lifetime: None,
        seed: 1,
    });
    client.allocate(now);
    pump(&mut relay, &mut client, client_addr, now);
    let peer = addr("198.51.100.77:9000");
    let channel = client.bind_channel(peer, now).expect("bind");
    pump(&mut relay, &mut client, client_addr, now);
    let relayed = client.relayed_addresses()[0];
    Setup {
        relay,
        now: now + Duration::from_secs(1),
        client: client_addr,
        server,
        relayed,
        peer,
        channel,
    }
}

fn relaying(c: &mut Criterion) {
    let mut setup = allocated_with_channel();
    let payload = [0xA5u8; 100];
    let channel_data = ChannelData {
        channel: setup.channel,
        data: &payload,
    }
    .to_vec();
    let mut group = c.benchmark_group("relay");
    group.bench_function("channel_data_client_to_peer_100B", |b| {
        b.iter(|| {
            let relayed = setup
                .relay
                .handle_input(
                    setup.client,
                    setup.server,
                    black_box(&channel_data),
                    setup.now,
                )
                .expect("relayed");
            black_box(relayed);
        })
    });
    group.bench_function("udp_peer_to_client_100B", |b| {
        b.iter(|| {
            let relayed = setup
                .relay
                .handle_input(setup.peer, setup.relayed, black_box(&payload), setup.now)
                .expect("relayed");
            black_box(relayed);
        })
    });
    group.finish();
}

fn allocate(c: &mut Criterion) {
    // The signed Allocate a client sends after the challenge; every fresh relay with the same
    // config and clock issues the same nonce, so the bytes stay valid.
    let now = Instant::now();
    let client_addr = addr("198.51.100.10:40000");
    let server = addr("203.0.113.1:3478");
    let mut template = Relay::new(config(), now).expect("config");
    let mut client = TurnClient::new(TurnClientConfig {
        server,
        credentials: credentials::rest_api_credentials(SECRET, 1_900_000_000, "bench"),
        families: Families::V4,
        lifetime: None,
        seed: 1,
    });
    client.allocate(now);
    let unsigned = client.poll_transmit().expect("allocate");
    let _ = template.handle_input(client_addr, server, &unsigned.payload, now);
    let challenge = template.poll_transmit().expect("401");
    let _ = client.handle_input(challenge.src, &challenge.payload, now);
    let signed = client.poll_transmit().expect("signed allocate").payload;

    c.bench_function("relay/authenticated_allocate", |b| {
        b.iter_batched(
            || Relay::new(config(), now).expect("config"),
            |mut relay| {
                relay
                    .handle_input(client_addr, server, &signed, now)
                    .expect("accepted");
                let response = relay.poll_transmit().expect("success response");
                black_box(response);
                relay
            },
            BatchSize::SmallInput,
        )
    });
}

/// An allocation of an attacker-made client holding `permissions` peer permissions (the cap
/// raised to match), made with raw signed requests of 50 peers each; returns the relay, the
/// client, its relayed address, a permitted peer and a nonce to sign more requests with.
fn allocation_with_permissions(
    permissions: u32,
    now: Instant,
) -> (Relay, SocketAddr, SocketAddr, SocketAddr, String) {
    use relay_test_support::hostile;
    let mut config = config();
    config.max_permissions = permissions as usize;
    let mut relay = Relay::new(config, now).expect("config");
    let client = addr("198.51.100.10:40000");
    let server = addr("203.0.113.1:3478");
    let credentials = credentials::rest_api_credentials(SECRET, 1_900_000_000, "bench");
    let ask = |relay: &mut Relay, payload: Vec<u8>| {
        let _ = relay.handle_input(client, server, &payload, now);
        relay.poll_transmit().expect("an answer").payload
    };
    let challenge = ask(&mut relay, hostile::unsigned(hostile::allocate(1, false)));
    let (nonce, realm) = hostile::challenge_of(&challenge).expect("a challenge");
    let allocated = ask(
        &mut relay,
        hostile::signed(hostile::allocate(2, false), &credentials, &realm, &nonce),
    );
    let relayed = hostile::relayed_address_of(&allocated).expect("allocated");
    let peer = |n: u32| SocketAddr::from(((0xC612_0000u32 + n).to_be_bytes(), 7));
    for batch in 0..permissions.div_ceil(50) {
        let peers: Vec<SocketAddr> = (batch * 50..((batch + 1) * 50).min(permissions))
            .map(peer)
            .collect();
        let request = hostile::create_permission(u64::from(batch) + 10, &peers);
        let answer = ask(
            &mut relay,
            hostile::signed(request, &credentials, &realm, &nonce),
        );
        assert_eq!(hostile::Answer::of(&answer), hostile::Answer::Success);
    }
    (relay, client, relayed, peer(permissions / 2), nonce)
}

/// Per-packet cost of a Data indication, and of refreshing one permission, with 1 and with
/// 10,000 permissions on the allocation; the heap each allocation holds is printed.
fn bounded(c: &mut Criterion) {
    use relay_test_support::hostile;
    let mut group = c.benchmark_group("relay/permissions");
    for permissions in [1u32, 10_000] {
        let now = Instant::now();
        let before = ALLOCATOR.allocated();
        let (mut relay, client, relayed, peer, nonce) =
            allocation_with_permissions(permissions, now);
        println!(
            "relay with {permissions} permission(s) on one allocation: {} heap bytes",
            ALLOCATOR.allocated().saturating_sub(before)
        );
        let payload = [0xA5u8; 100];
        group.bench_function(format!("data_indication_100B_{permissions}"), |b| {
            b.iter(|| {
                let relayed = relay
                    .handle_input(peer, relayed, black_box(&payload), now)
                    .expect("permitted");
                black_box(relayed);
                black_box(relay.poll_transmit());
            })
        });
        let credentials = credentials::rest_api_credentials(SECRET, 1_900_000_000, "bench");
        let refresh = hostile::signed(
            hostile::create_permission(99, &[peer]),
            &credentials,
            "bench",
            &nonce,
        );
        let server = addr("203.0.113.1:3478");
        group.bench_function(format!("refresh_one_permission_{permissions}"), |b| {
            b.iter(|| {
                let _ = relay.handle_input(client, server, black_box(&refresh), now);
                black_box(relay.poll_transmit().expect("answered"));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, relaying, allocate, bounded);
criterion_main!(benches);
