//! What the relay-server tests share: a relay server in the test's runtime on loopback, a TURN
//! client on a real socket, a plain GET of the metrics endpoint, a bounded receive, child
//! processes killed on drop, and loud skips.

#![allow(dead_code)] // Each test binary uses its own part.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use proto::credentials::Credentials;
use relay_server::{RelayConfig, Server, ServerConfig, Summary};
use tokio::{net::UdpSocket, sync::oneshot, task::JoinHandle};
use turn_client::{ClientEvent, Families, TurnClient, TurnClientConfig};

/// How long any one wait may take before the test fails.
pub const GIVE_UP: Duration = Duration::from_secs(5);

/// A relay server running in the test's runtime, on one loopback address.
pub struct LoopbackRelay {
    /// Where clients send (the loopback address and the TURN socket's port).
    pub turn: SocketAddr,
    /// Where Prometheus would scrape.
    pub metrics: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Summary>,
}

impl LoopbackRelay {
    /// Binds `relay` on `ip` (TURN port and metrics on ephemeral ports) and runs it. Peers on
    /// loopback, which a relay refuses unless an operator allows them, are allowed.
    pub async fn start(ip: std::net::Ipv4Addr, mut relay: RelayConfig) -> Self {
        relay
            .peer_policy
            .allowed
            .push("127.0.0.0/8".parse().expect("a CIDR"));
        let server = Server::bind(ServerConfig {
            relay,
            listen_v4: Some(ip),
            listen_v6: None,
            turn_port: 0,
            xdp: None,
            metrics: Some(SocketAddr::from((ip, 0))),
            allow_ephemeral_overlap: false,
        })
        .await
        .expect("the server binds its loopback address");
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

    /// Stops the server and returns its summary.
    pub async fn stop(self) -> Summary {
        let _ = self.stop.send(());
        tokio::time::timeout(GIVE_UP, self.task)
            .await
            .expect("the server stops")
            .expect("the server task does not panic")
    }
}

/// A `TurnClient` on a real socket.
pub struct Client {
    pub socket: UdpSocket,
    pub turn: TurnClient,
    pub events: Vec<ClientEvent>,
    /// Data from peers: (peer as the client knows it, data).
    pub received: Vec<(SocketAddr, Vec<u8>)>,
    buffer: Vec<u8>,
}

impl Client {
    /// A client on `socket` of the relay at `server`.
    pub fn on(socket: UdpSocket, server: SocketAddr, credentials: Credentials, seed: u64) -> Self {
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

    /// Sends what the client has to send and collects its events.
    pub async fn flush(&mut self) {
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
    pub async fn drive_until(&mut self, what: &str, done: impl Fn(&Self) -> bool) {
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

    pub async fn allocate(&mut self) -> SocketAddr {
        self.turn.allocate(Instant::now());
        self.drive_until("the allocation", |client| client.turn.is_allocated())
            .await;
        let relayed = self.turn.relayed_addresses();
        assert_eq!(relayed.len(), 1, "one IPv4 relayed address: {relayed:?}");
        relayed[0]
    }

    /// Asks for an allocation and drives until the client gives up on it.
    pub async fn allocate_until_it_fails(&mut self) {
        self.turn.allocate(Instant::now());
        self.drive_until("the allocation to fail", |client| {
            client
                .events
                .iter()
                .any(|event| matches!(event, ClientEvent::AllocationFailed { .. }))
        })
        .await;
    }

    pub async fn bind_channel(&mut self, peer: SocketAddr) {
        self.turn
            .bind_channel(peer, Instant::now())
            .expect("a channel number");
        self.drive_until("the channel binding", |client| {
            client.turn.channel_of(peer, Instant::now()).is_some()
        })
        .await;
    }

    pub async fn send(&mut self, peer: SocketAddr, data: &[u8]) {
        let transmit = self
            .turn
            .send_to(peer, data, Instant::now())
            .expect("a path to the peer");
        self.socket
            .send_to(&transmit.payload, transmit.dst)
            .await
            .expect("send to the relay");
    }

    pub async fn receive(&mut self) -> (SocketAddr, Vec<u8>) {
        self.drive_until("data from a peer", |client| !client.received.is_empty())
            .await;
        self.received.remove(0)
    }
}

/// A GET of `path` from the metrics endpoint: the status line and the body.
pub async fn http_get(server: SocketAddr, path: &str) -> (String, String) {
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

pub async fn receive_within(socket: &UdpSocket) -> (SocketAddr, Vec<u8>) {
    let mut buffer = vec![0; 65_536];
    let (len, from) = tokio::time::timeout(GIVE_UP, socket.recv_from(&mut buffer))
        .await
        .expect("a datagram in time")
        .expect("receive");
    (from, buffer[..len].to_vec())
}

/// A child process (relay-server, coturn's tools), killed and reaped when dropped, so a failing
/// test leaves nothing running.
pub struct KilledOnDrop(pub std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Skips `test` loudly (`!!! SKIPPED` on stderr, past the test harness's capture), or fails
/// where a skip is not allowed: with `CI=true` or `RELAY_XDP_REQUIRE_BPF=1`
/// ([`relay_xdp::bpf_required`]).
pub fn skip(test: &str, why: &str) {
    assert!(
        !relay_xdp::bpf_required(),
        "{test} cannot run here, and CI requires it: {why}"
    );
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "\n!!! SKIPPED {test}: {why}\n");
}
