//! The load: TURN clients in the client namespace that each allocate, bind a channel to the
//! peer and then send ChannelData of one size, round-robin, at a set rate (or as fast as one
//! thread can) for a set time; and a receiver in the peer namespace that counts what arrives.
//! Without a relay (the direct mode), plain UDP senders take the clients' place.
//!
//! Setting up goes through `turn-client` (the 401 challenge, the long-term credentials,
//! retransmissions); once a client's channel is bound its ChannelData datagram never changes,
//! so the sender sends the same bytes again on a connected socket, with nothing else in the
//! loop.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, anyhow, bail};
use proto::credentials::rest_api_credentials;
use turn_client::{ClientEvent, Families, TurnClient, TurnClientConfig};

use super::{
    netns::{CLIENT, PEER, RELAY, Role, Topology},
    process,
    servers::{SHARED_SECRET, TURN_PORT},
};

/// Where the peer receives.
pub const PEER_PORT: u16 = 9000;
/// How long the first client may wait for its allocation: the relay may still be starting
/// (loading its XDP program), and the client retransmits its Allocate meanwhile.
const FIRST_ALLOCATION_LIMIT: Duration = Duration::from_secs(15);
/// How long any later setup step may take.
const SETUP_STEP_LIMIT: Duration = Duration::from_secs(5);
/// A hard bound on the datagrams of one run, whatever the rate and duration.
const MAX_DATAGRAMS_PER_RUN: u64 = 200_000_000;
/// The peer's receive buffer: large enough that bursts do not overflow it while the receiver
/// is descheduled (set with SO_RCVBUFFORCE, past net.core.rmem_max).
const PEER_RECEIVE_BUFFER: usize = 8 << 20;

/// The peer as the clients and relays know it.
pub fn peer_addr() -> SocketAddr {
    SocketAddr::from((PEER, PEER_PORT))
}

/// A client with an allocation and a bound channel to the peer.
#[derive(Debug)]
struct ReadyClient {
    /// Connected to the relay's TURN port.
    socket: UdpSocket,
    /// ChannelData carrying the payload on the client's channel.
    datagram: Vec<u8>,
}

/// Clients ready to send.
#[derive(Debug)]
pub struct ReadyClients {
    clients: Vec<ReadyClient>,
}

/// Allocates `count` clients (user `bench-<i>` each) and binds a channel from each to the
/// peer, in the client namespace; `payload` bytes of data per datagram.
pub fn set_up_clients(topology: &Topology, count: usize, payload: usize) -> Result<ReadyClients> {
    topology.inside(Role::Client, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a runtime")?;
        runtime.block_on(async move {
            let mut clients = Vec::with_capacity(count);
            for index in 0..count {
                let limit = if index == 0 {
                    FIRST_ALLOCATION_LIMIT
                } else {
                    SETUP_STEP_LIMIT
                };
                let client = set_up_client(index, payload, limit)
                    .await
                    .with_context(|| format!("client {index}"))?;
                clients.push(client);
            }
            Ok(ReadyClients { clients })
        })
    })
}

/// `count` plain UDP senders in the client namespace, each connected straight to the peer and
/// sending `payload` bytes: the direct mode, without a relay.
pub fn set_up_direct_senders(
    topology: &Topology,
    count: usize,
    payload: usize,
) -> Result<ReadyClients> {
    topology.inside(Role::Client, move || {
        let clients = (0..count)
            .map(|_| {
                let socket = UdpSocket::bind((CLIENT, 0)).context("cannot bind a sender")?;
                socket.connect(peer_addr())?;
                Ok(ReadyClient {
                    socket,
                    datagram: (0..payload).map(|byte| byte as u8).collect(),
                })
            })
            .collect::<Result<_>>()?;
        Ok(ReadyClients { clients })
    })
}

async fn set_up_client(index: usize, payload: usize, first_limit: Duration) -> Result<ReadyClient> {
    let server = SocketAddr::from((RELAY, TURN_PORT));
    let expiry = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 3600;
    let credentials =
        rest_api_credentials(SHARED_SECRET.as_bytes(), expiry, &format!("bench-{index}"));
    let socket = tokio::net::UdpSocket::bind((CLIENT, 0))
        .await
        .context("cannot bind a client socket")?;
    let mut client = DrivenClient {
        socket,
        turn: TurnClient::new(TurnClientConfig {
            server,
            credentials,
            families: Families::V4,
            lifetime: None,
            seed: index as u64 + 1,
        }),
        events: Vec::new(),
    };
    client.turn.allocate(Instant::now());
    client
        .drive_until("an allocation", first_limit, |client| {
            client.turn.is_allocated()
        })
        .await?;
    let peer = peer_addr();
    client
        .turn
        .bind_channel(peer, Instant::now())
        .map_err(|error| anyhow!("cannot bind a channel: {error}"))?;
    client
        .drive_until("a channel binding", SETUP_STEP_LIMIT, |client| {
            client.turn.channel_of(peer, Instant::now()).is_some()
        })
        .await?;
    let data: Vec<u8> = (0..payload).map(|byte| byte as u8).collect();
    let transmit = client
        .turn
        .send_to(peer, &data, Instant::now())
        .map_err(|error| anyhow!("no path to the peer: {error}"))?;
    if !proto::channel_data::looks_like_channel_data(&transmit.payload) {
        bail!("the client would send a Send indication, not ChannelData");
    }
    let socket = client.socket.into_std()?;
    socket.set_nonblocking(false)?;
    socket.connect(server)?;
    Ok(ReadyClient {
        socket,
        datagram: transmit.payload,
    })
}

/// A `TurnClient` on a socket, driven until something holds.
struct DrivenClient {
    socket: tokio::net::UdpSocket,
    turn: TurnClient,
    events: Vec<ClientEvent>,
}

impl DrivenClient {
    /// Moves datagrams and timeouts until `done` holds; fails past `limit`, when the client
    /// gives up, or when the bench is interrupted.
    async fn drive_until(
        &mut self,
        what: &str,
        limit: Duration,
        done: impl Fn(&Self) -> bool,
    ) -> Result<()> {
        let give_up = tokio::time::Instant::now() + limit;
        let mut buffer = vec![0; 2048];
        loop {
            while let Some(transmit) = self.turn.poll_transmit() {
                self.socket.send_to(&transmit.payload, transmit.dst).await?;
            }
            while let Some(event) = self.turn.poll_event() {
                self.events.push(event);
            }
            if done(self) {
                return Ok(());
            }
            process::check_interrupt()?;
            let failed = self.events.iter().any(|event| {
                matches!(
                    event,
                    ClientEvent::AllocationFailed { .. } | ClientEvent::ChannelFailed { .. }
                )
            });
            if failed || tokio::time::Instant::now() >= give_up {
                bail!(
                    "no {what} within {} s; the client's events: {:?}",
                    limit.as_secs(),
                    self.events
                );
            }
            // Wake at least every 100 ms to notice an interrupt.
            let wake = self
                .turn
                .poll_timeout()
                .map_or(give_up, tokio::time::Instant::from_std)
                .min(give_up)
                .min(tokio::time::Instant::now() + Duration::from_millis(100));
            tokio::select! {
                received = self.socket.recv_from(&mut buffer) => {
                    // A refused datagram (ICMP port unreachable while the relay starts) shows
                    // as an error here; the client retransmits.
                    if let Ok((len, from)) = received {
                        let _ = self.turn.handle_input(from, &buffer[..len], Instant::now());
                    }
                }
                () = tokio::time::sleep_until(wake) => self.turn.handle_timeout(Instant::now()),
            }
        }
    }
}

/// What the sender did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Offered {
    /// Datagrams the kernel took from the sender.
    pub datagrams: u64,
    /// Sends that failed (not counted as offered).
    pub send_errors: u64,
    /// From the first send to the last.
    pub elapsed: Duration,
}

/// Sends the clients' datagrams round-robin for `duration`, at `rate` datagrams per second in
/// all (paced every millisecond) or as fast as this thread can; stops early if interrupted.
pub fn blast(clients: &ReadyClients, duration: Duration, rate: Option<u64>) -> Offered {
    let start = Instant::now();
    let end = start + duration;
    let mut offered = Offered::default();
    let mut attempts: u64 = 0;
    loop {
        for client in &clients.clients {
            match client.socket.send(&client.datagram) {
                Ok(_) => offered.datagrams += 1,
                Err(_) => offered.send_errors += 1,
            }
        }
        attempts += clients.clients.len() as u64;
        let now = Instant::now();
        if now >= end || attempts >= MAX_DATAGRAMS_PER_RUN || process::interrupted() {
            break;
        }
        if let Some(rate) = rate {
            // The instant by which `attempts` datagrams are due; wait for it if it is ahead.
            let due = start + Duration::from_secs_f64(attempts as f64 / rate as f64);
            if due > now + Duration::from_millis(1) {
                std::thread::sleep((due - now).min(end - now));
            }
        }
    }
    offered.elapsed = start.elapsed();
    offered
}

/// Sends `rounds` datagrams per client, a millisecond apart round by round; returns how many
/// the kernel took.
pub fn probe(clients: &ReadyClients, rounds: usize) -> u64 {
    let mut sent = 0;
    for _ in 0..rounds {
        for client in &clients.clients {
            if client.socket.send(&client.datagram).is_ok() {
                sent += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    sent
}

/// What the peer received.
#[derive(Debug, Clone, Copy, Default)]
pub struct Received {
    pub datagrams: u64,
    pub bytes: u64,
    /// Datagrams whose size was not the payload's (none, if every relay relays faithfully).
    pub wrong_size: u64,
}

/// The peer's receiver: a thread counting datagrams on the peer's socket until stopped (or
/// dropped).
#[derive(Debug)]
pub struct PeerReceiver {
    stop: Arc<AtomicBool>,
    /// Datagrams so far, published as they come.
    progress: Arc<AtomicU64>,
    /// Taken by [`PeerReceiver::stop`].
    thread: Option<JoinHandle<Result<Received>>>,
}

impl PeerReceiver {
    /// Binds the peer's socket (in the peer namespace) and starts counting what arrives.
    pub fn start(topology: &Topology, payload: usize) -> Result<Self> {
        let socket = topology.inside(Role::Peer, || {
            let socket = UdpSocket::bind(peer_addr()).context("cannot bind the peer's socket")?;
            nix::sys::socket::setsockopt(
                &socket,
                nix::sys::socket::sockopt::RcvBufForce,
                &PEER_RECEIVE_BUFFER,
            )
            .context("SO_RCVBUFFORCE on the peer's socket")?;
            socket.set_read_timeout(Some(Duration::from_millis(20)))?;
            Ok(socket)
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(AtomicU64::new(0));
        let thread = std::thread::Builder::new()
            .name("peer-receiver".to_owned())
            .spawn({
                let (stop, progress) = (Arc::clone(&stop), Arc::clone(&progress));
                move || receive(&socket, payload, &stop, &progress)
            })
            .context("cannot start the receiver")?;
        Ok(Self {
            stop,
            progress,
            thread: Some(thread),
        })
    }

    /// Datagrams received so far.
    pub fn received_so_far(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    /// Waits until nothing more arrives for `quiet` (what was in flight when the sender
    /// stopped has landed), at most `limit`.
    pub fn wait_until_quiet(&self, quiet: Duration, limit: Duration) {
        let give_up = Instant::now() + limit;
        let mut last = self.received_so_far();
        let mut last_change = Instant::now();
        while Instant::now() < give_up && !process::interrupted() {
            std::thread::sleep(Duration::from_millis(10));
            let now = self.received_so_far();
            if now != last {
                (last, last_change) = (now, Instant::now());
            } else if last_change.elapsed() >= quiet {
                return;
            }
        }
    }

    /// Stops counting and returns the count.
    pub fn stop(mut self) -> Result<Received> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .context("the receiver was stopped already")?
            .join()
            .map_err(|_| anyhow!("the receiver panicked"))?
    }
}

/// A receiver dropped on the way out of a failed run stops within one read timeout.
impl Drop for PeerReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn receive(
    socket: &UdpSocket,
    payload: usize,
    stop: &AtomicBool,
    progress: &AtomicU64,
) -> Result<Received> {
    let mut received = Received::default();
    let mut buffer = vec![0; 65_536];
    while !stop.load(Ordering::Relaxed) {
        match socket.recv(&mut buffer) {
            Ok(len) => {
                received.datagrams += 1;
                received.bytes += len as u64;
                if len != payload {
                    received.wrong_size += 1;
                }
                if received.datagrams.is_multiple_of(256) {
                    progress.store(received.datagrams, Ordering::Relaxed);
                }
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                progress.store(received.datagrams, Ordering::Relaxed);
            }
            Err(error) => return Err(error).context("the peer's socket failed"),
        }
    }
    Ok(received)
}
