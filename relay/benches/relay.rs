//! Userspace relaying cost: ChannelData client -> peer and UDP peer -> client with a 100-byte
//! payload, and a full authenticated Allocate.

use std::{
    hint::black_box,
    net::SocketAddr,
    time::{Duration, Instant},
};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use proto::{channel_data::ChannelData, credentials};
use relay::{Relay, RelayConfig};
use turn_client::{Families, TurnClient, TurnClientConfig};

const SECRET: &[u8] = b"bench secret";

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

criterion_group!(benches, relaying, allocate);
criterion_main!(benches);
