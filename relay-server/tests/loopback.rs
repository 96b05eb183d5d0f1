//! The relay server on real UDP sockets on 127.0.0.1, driven by `turn_client::TurnClient`s.
//!
//! Each test runs its own server in-process on an OS-chosen TURN port and its own allocation
//! port range (above Linux's default ephemeral range, 32768-60999, so that no other socket is
//! likely to hold them), and gives up after [`GIVE_UP`] instead of hanging.

mod support;

use std::{
    net::{Ipv4Addr, SocketAddr},
    ops::RangeInclusive,
    time::{Duration, Instant},
};

use proto::credentials;
use relay_server::RelayConfig;
use support::{Client, GIVE_UP, LoopbackRelay, http_get, receive_within};
use tokio::net::UdpSocket;
use turn_client::ClientEvent;

const SECRET: &[u8] = b"loopback shared secret";
const REALM: &str = "loopback.test";
/// The relay's Unix time at start; credentials expire a day later.
const START_UNIX: u64 = 1_800_000_000;
const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A client on 127.0.0.1 with credentials of `id` that the test relays accept.
async fn new_client(server: SocketAddr, id: &str, seed: u64) -> Client {
    let credentials = credentials::rest_api_credentials(SECRET, START_UNIX + 86_400, id);
    let socket = UdpSocket::bind((LOCALHOST, 0))
        .await
        .expect("a client socket");
    Client::on(socket, server, credentials, seed)
}

/// A server bound to 127.0.0.1 whose public IPv4 address is `public`.
async fn start_relay(public: Ipv4Addr, ports: RangeInclusive<u16>) -> LoopbackRelay {
    let mut relay = RelayConfig::new(REALM, SECRET);
    relay.public_v4 = Some(public);
    relay.port_range = ports;
    relay.unix_time_at_start = START_UNIX;
    relay.seed = 7;
    LoopbackRelay::start(LOCALHOST, relay).await
}

/// Allocate, bind a channel to a plain UDP peer, and relay data both ways.
///
/// The public address is 203.0.113.1 (a documentation address that nothing binds or sends to)
/// and the server listens on 127.0.0.1, as a relay behind a 1:1 NAT would. With 127.0.0.1 as
/// the public address, a peer socket on 127.0.0.1 would be on the relay's own IP, and the relay
/// would take it for one of its own allocations (relay-to-self) and drop the data
/// (`SelfDestinationUnreachable`); only 127.0.0.1 is available to these tests.
#[tokio::test]
async fn client_and_plain_peer_exchange_data_through_a_channel() {
    let public: Ipv4Addr = "203.0.113.1".parse().expect("ip");
    let relay = start_relay(public, 61_000..=61_099).await;
    let mut client = new_client(relay.turn, "alice", 1).await;
    let relayed = client.allocate().await;
    assert_eq!(relayed.ip(), public);
    assert!((61_000..=61_099).contains(&relayed.port()));
    // What the NAT would do: the relayed address is reached on the local socket of that port.
    let relayed_local = SocketAddr::from((LOCALHOST, relayed.port()));

    let peer = UdpSocket::bind((LOCALHOST, 0))
        .await
        .expect("a peer socket");
    let peer_addr = peer.local_addr().expect("peer address");
    client.bind_channel(peer_addr).await;

    client.send(peer_addr, b"hello, peer").await;
    let (from, data) = receive_within(&peer).await;
    assert_eq!(
        from, relayed_local,
        "data comes from the allocation's socket"
    );
    assert_eq!(data, b"hello, peer");

    peer.send_to(b"hello, client", relayed_local)
        .await
        .expect("peer sends");
    let (from, data) = client.receive().await;
    assert_eq!(from, peer_addr);
    assert_eq!(data, b"hello, client");

    // What Prometheus scrapes says the same, from the relay's own counters.
    let (status, metrics) = http_get(relay.metrics, "/metrics").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    for line in [
        "relay_allocations 1",
        "relay_allocations_created_total 1",
        "relay_datagrams_relayed_total{to=\"peer\"} 1",
        "relay_datagrams_relayed_total{to=\"client\"} 1",
        "relay_rejections_total{code=\"401\"} 1",
        "relay_drops_total{reason=\"not-stun\"} 0",
        "relay_most_channels_on_one_allocation 1",
    ] {
        assert!(
            metrics.lines().any(|metric| metric == line),
            "no `{line}` in:\n{metrics}"
        );
    }
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    let (status, _) = http_get(relay.metrics, "/").await;
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");

    // Freeing the allocation closes its socket: the port can be bound again.
    client.turn.release(Instant::now());
    client.flush().await;
    let give_up = Instant::now() + GIVE_UP;
    while std::net::UdpSocket::bind(relayed_local).is_err() {
        assert!(Instant::now() < give_up, "the allocation socket stays open");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let summary = relay.stop().await;
    assert_eq!(summary.allocations_created, 1);
    assert_eq!(summary.allocations_freed, 1);
    assert_eq!(summary.allocations_active, 0);
    assert_eq!(summary.datagrams_relayed, 2);
    assert_eq!(summary.send_failures, 0);
    assert_eq!(summary.bind_failures, 0);
    assert!(summary.drops.is_empty(), "drops: {:?}", summary.drops);
}

/// Relay-to-self: two clients of one relay bind channels to each other's relayed addresses
/// (127.0.0.1:<port>, the relay's own) and exchange data both ways; the relay hands the data
/// from one allocation to the other itself.
#[tokio::test]
async fn two_allocations_on_one_relay_talk_to_each_other() {
    let relay = start_relay(LOCALHOST, 61_100..=61_199).await;
    let mut alice = new_client(relay.turn, "alice", 1).await;
    let mut bob = new_client(relay.turn, "bob", 2).await;
    let alice_relayed = alice.allocate().await;
    let bob_relayed = bob.allocate().await;
    assert_ne!(alice_relayed, bob_relayed);
    assert_eq!(alice_relayed.ip(), LOCALHOST);
    assert_eq!(bob_relayed.ip(), LOCALHOST);

    alice.bind_channel(bob_relayed).await;
    bob.bind_channel(alice_relayed).await;

    alice.send(bob_relayed, b"from alice").await;
    let (from, data) = bob.receive().await;
    assert_eq!(from, alice_relayed);
    assert_eq!(data, b"from alice");

    bob.send(alice_relayed, b"from bob").await;
    let (from, data) = alice.receive().await;
    assert_eq!(from, bob_relayed);
    assert_eq!(data, b"from bob");

    let summary = relay.stop().await;
    assert_eq!(summary.allocations_created, 2);
    assert_eq!(summary.allocations_active, 2);
    assert_eq!(summary.datagrams_relayed, 2);
    assert_eq!(summary.send_failures, 0);
    assert!(summary.drops.is_empty(), "drops: {:?}", summary.drops);
}

/// A password made with another secret: the relay challenges (401), the client answers with
/// its credentials, the relay refuses them (401) and the client gives up.
#[tokio::test]
async fn wrong_credentials_fail_the_allocation_with_401() {
    let relay = start_relay(LOCALHOST, 61_200..=61_299).await;
    let credentials =
        credentials::rest_api_credentials(b"not the secret", START_UNIX + 86_400, "mallory");
    let socket = UdpSocket::bind((LOCALHOST, 0))
        .await
        .expect("a client socket");
    let mut client = Client::on(socket, relay.turn, credentials, 3);
    client.allocate_until_it_fails().await;
    assert!(
        client
            .events
            .contains(&ClientEvent::AllocationFailed { code: Some(401) }),
        "events: {:?}",
        client.events
    );
    assert!(!client.turn.is_allocated());

    let summary = relay.stop().await;
    assert_eq!(summary.allocations_created, 0);
    assert_eq!(summary.control_sent, 2, "two 401 responses");
}

/// The only allocation port is taken by another socket on the host: the relay answers the
/// Allocate with 508 instead of announcing an address nobody listens on, frees the allocation,
/// and serves the next Allocate once the port is free again.
#[tokio::test]
async fn an_allocation_whose_port_cannot_be_bound_is_answered_508() {
    const ONLY_PORT: u16 = 61_300;
    let relay = start_relay(LOCALHOST, ONLY_PORT..=ONLY_PORT).await;
    let squatter = std::net::UdpSocket::bind((LOCALHOST, ONLY_PORT)).expect("the port is free");
    let mut client = new_client(relay.turn, "alice", 4).await;
    client.allocate_until_it_fails().await;
    assert!(
        client
            .events
            .contains(&ClientEvent::AllocationFailed { code: Some(508) }),
        "events: {:?}",
        client.events
    );
    assert!(!client.turn.is_allocated());

    drop(squatter);
    let mut again = new_client(relay.turn, "alice", 5).await;
    let relayed = again.allocate().await;
    assert_eq!(relayed.port(), ONLY_PORT);

    let summary = relay.stop().await;
    assert_eq!(summary.bind_failures, 1);
    assert_eq!(summary.allocations_created, 2);
    assert_eq!(summary.allocations_freed, 1, "the unbindable one");
    assert_eq!(summary.allocations_active, 1);
}
