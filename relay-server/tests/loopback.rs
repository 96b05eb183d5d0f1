//! The relay server on real UDP sockets on 127.0.0.1, driven by `turn_client::TurnClient`s.
//!
//! Each test runs its own server in-process on an OS-chosen TURN port and its own allocation
//! port range (above Linux's default ephemeral range, 32768-60999, so that no other socket is
//! likely to hold them), and gives up after [`GIVE_UP`] instead of hanging.

use std::{
    net::{Ipv4Addr, SocketAddr},
    ops::RangeInclusive,
    time::{Duration, Instant},
};

use proto::credentials::{self, Credentials};
use relay_server::{RelayConfig, Server, ServerConfig, Summary};
use tokio::{net::UdpSocket, sync::oneshot, task::JoinHandle};
use turn_client::{ClientEvent, Families, TurnClient, TurnClientConfig};

const SECRET: &[u8] = b"loopback shared secret";
const REALM: &str = "loopback.test";
/// The relay's Unix time at start; credentials expire a day later.
const START_UNIX: u64 = 1_800_000_000;
/// How long any one wait may take before the test fails.
const GIVE_UP: Duration = Duration::from_secs(5);
const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

struct TestRelay {
    /// Where clients send (127.0.0.1 and the TURN socket's port).
    turn: SocketAddr,
    /// Where Prometheus would scrape.
    metrics: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Summary>,
}

impl TestRelay {
    /// A server bound to 127.0.0.1 whose public IPv4 address is `public`.
    async fn start(public: Ipv4Addr, ports: RangeInclusive<u16>) -> Self {
        let mut relay = RelayConfig::new(REALM, SECRET);
        relay.public_v4 = Some(public);
        relay.port_range = ports;
        relay.unix_time_at_start = START_UNIX;
        relay.seed = 7;
        // Peers here live on loopback, which the relay refuses unless an operator allows it.
        relay
            .peer_policy
            .allowed
            .push("127.0.0.0/8".parse().expect("a CIDR"));
        let server = Server::bind(ServerConfig {
            relay,
            listen_v4: Some(LOCALHOST),
            listen_v6: None,
            turn_port: 0,
            xdp: None,
            metrics: Some(SocketAddr::from((LOCALHOST, 0))),
            allow_ephemeral_overlap: false,
        })
        .await
        .expect("the server binds 127.0.0.1");
        let turn = server.turn_addr_v4().expect("an IPv4 TURN socket");
        let metrics = server.metrics_addr().expect("a metrics endpoint");
        assert_eq!(server.turn_addrs(), [turn]);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Self {
            turn,
            metrics,
            stop,
            task,
        }
    }

    async fn stop(self) -> Summary {
        let _ = self.stop.send(());
        tokio::time::timeout(GIVE_UP, self.task)
            .await
            .expect("the server stops")
            .expect("the server task does not panic")
    }
}

/// A `TurnClient` on a real socket.
struct Client {
    socket: UdpSocket,
    turn: TurnClient,
    events: Vec<ClientEvent>,
    /// Data from peers: (peer as the client knows it, data).
    received: Vec<(SocketAddr, Vec<u8>)>,
    buffer: Vec<u8>,
}

impl Client {
    async fn new(server: SocketAddr, credentials: Credentials, seed: u64) -> Self {
        let socket = UdpSocket::bind((LOCALHOST, 0))
            .await
            .expect("a client socket");
        let turn = TurnClient::new(TurnClientConfig {
            server,
            credentials,
            families: Families::V4,
            lifetime: None,
            seed,
        });
        Self {
            socket,
            turn,
            events: Vec::new(),
            received: Vec::new(),
            buffer: vec![0; 65_536],
        }
    }

    async fn with_good_credentials(server: SocketAddr, id: &str, seed: u64) -> Self {
        let credentials = credentials::rest_api_credentials(SECRET, START_UNIX + 86_400, id);
        Self::new(server, credentials, seed).await
    }

    /// Sends what the client has to send and collects its events.
    async fn flush(&mut self) {
        while let Some(transmit) = self.turn.poll_transmit() {
            self.socket
                .send_to(&transmit.payload, transmit.dst)
                .await
                .expect("send to the relay");
        }
        while let Some(event) = self.turn.poll_event() {
            self.events.push(event);
        }
    }

    /// Moves datagrams and timeouts until `done` holds; fails the test after [`GIVE_UP`].
    async fn drive_until(&mut self, what: &str, done: impl Fn(&Self) -> bool) {
        let give_up = tokio::time::Instant::now() + GIVE_UP;
        loop {
            self.flush().await;
            if done(self) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "gave up waiting for {what}; client events: {:?}",
                self.events
            );
            let wake = self
                .turn
                .poll_timeout()
                .map_or(give_up, tokio::time::Instant::from_std)
                .min(give_up);
            tokio::select! {
                received = self.socket.recv_from(&mut self.buffer) => {
                    let (len, from) = received.expect("receive");
                    let input = self.turn.handle_input(from, &self.buffer[..len], Instant::now());
                    if let Ok(Some(data)) = input {
                        self.received.push((data.peer, data.data.into_owned()));
                    }
                }
                () = tokio::time::sleep_until(wake) => self.turn.handle_timeout(Instant::now()),
            }
        }
    }

    async fn allocate(&mut self) -> SocketAddr {
        self.turn.allocate(Instant::now());
        self.drive_until("the allocation", |client| client.turn.is_allocated())
            .await;
        let relayed = self.turn.relayed_addresses();
        assert_eq!(relayed.len(), 1, "one IPv4 relayed address: {relayed:?}");
        relayed[0]
    }

    /// Asks for an allocation and drives until the client gives up on it.
    async fn allocate_until_it_fails(&mut self) {
        self.turn.allocate(Instant::now());
        self.drive_until("the allocation to fail", |client| {
            client
                .events
                .iter()
                .any(|event| matches!(event, ClientEvent::AllocationFailed { .. }))
        })
        .await;
    }

    async fn bind_channel(&mut self, peer: SocketAddr) {
        self.turn
            .bind_channel(peer, Instant::now())
            .expect("a channel number");
        self.drive_until("the channel binding", |client| {
            client.turn.channel_of(peer, Instant::now()).is_some()
        })
        .await;
    }

    async fn send(&mut self, peer: SocketAddr, data: &[u8]) {
        let transmit = self
            .turn
            .send_to(peer, data, Instant::now())
            .expect("a path to the peer");
        self.socket
            .send_to(&transmit.payload, transmit.dst)
            .await
            .expect("send to the relay");
    }

    async fn receive(&mut self) -> (SocketAddr, Vec<u8>) {
        self.drive_until("data from a peer", |client| !client.received.is_empty())
            .await;
        self.received.remove(0)
    }
}

/// A GET of `path` from the metrics endpoint: the status line and the body.
async fn http_get(server: SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::time::timeout(GIVE_UP, tokio::net::TcpStream::connect(server))
        .await
        .expect("connects in time")
        .expect("connects");
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: relay\r\n\r\n").as_bytes())
        .await
        .expect("request sent");
    let mut response = String::new();
    tokio::time::timeout(GIVE_UP, stream.read_to_string(&mut response))
        .await
        .expect("answered in time")
        .expect("a response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

async fn receive_within(socket: &UdpSocket) -> (SocketAddr, Vec<u8>) {
    let mut buffer = vec![0; 65_536];
    let (len, from) = tokio::time::timeout(GIVE_UP, socket.recv_from(&mut buffer))
        .await
        .expect("a datagram in time")
        .expect("receive");
    (from, buffer[..len].to_vec())
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
    let relay = TestRelay::start(public, 61_000..=61_099).await;
    let mut client = Client::with_good_credentials(relay.turn, "alice", 1).await;
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
    let relay = TestRelay::start(LOCALHOST, 61_100..=61_199).await;
    let mut alice = Client::with_good_credentials(relay.turn, "alice", 1).await;
    let mut bob = Client::with_good_credentials(relay.turn, "bob", 2).await;
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
    let relay = TestRelay::start(LOCALHOST, 61_200..=61_299).await;
    let credentials =
        credentials::rest_api_credentials(b"not the secret", START_UNIX + 86_400, "mallory");
    let mut client = Client::new(relay.turn, credentials, 3).await;
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
    let relay = TestRelay::start(LOCALHOST, ONLY_PORT..=ONLY_PORT).await;
    let squatter = std::net::UdpSocket::bind((LOCALHOST, ONLY_PORT)).expect("the port is free");
    let mut client = Client::with_good_credentials(relay.turn, "alice", 4).await;
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
    let mut again = Client::with_good_credentials(relay.turn, "alice", 5).await;
    let relayed = again.allocate().await;
    assert_eq!(relayed.port(), ONLY_PORT);

    let summary = relay.stop().await;
    assert_eq!(summary.bind_failures, 1);
    assert_eq!(summary.allocations_created, 2);
    assert_eq!(summary.allocations_freed, 1, "the unbindable one");
    assert_eq!(summary.allocations_active, 1);
}
