//! The sans-IO TURN relay ([`relay::Relay`]) on real UDP sockets, with tokio.
//!
//! One task owns the [`Relay`]. Every socket has a reader task that hands each datagram to it
//! over a bounded channel; the owner feeds it to [`Relay::handle_input`], sends what comes back
//! (the data datagram right away, then the control datagrams of [`Relay::poll_transmit`]),
//! binds and closes allocation sockets as [`Event::AllocationCreated`] and
//! [`Event::AllocationFreed`] say, and calls [`Relay::handle_timeout`] when
//! [`Relay::poll_timeout`] comes due.
//!
//! # Logical addresses in, real sockets out
//!
//! The relay routes by the address a datagram arrived *on*: port [`relay::TURN_PORT`] (3478) is
//! the client-facing port, ports of [`relay::RelayConfig::port_range`] are allocations, and the
//! IP must be one of its public addresses. The server therefore never shows it a real local
//! socket address. Each socket is known by its *logical* address, `(public IP of its family,
//! logical port)`:
//!
//! - the TURN socket of a family is bound to `(listen IP, turn_port)` (3478 unless configured
//!   otherwise, e.g. by tests) and its logical address is `(public IP, 3478)`;
//! - an allocation socket is bound to `(listen IP, port)` with the allocation's own port, and
//!   its logical address is `(public IP, port)`.
//!
//! A datagram read from a socket goes to `handle_input` with `to` = that socket's logical
//! address. Every datagram the relay emits names a logical source (`Transmit::src`,
//! `Relayed::src`: `(public IP, 3478)` for ChannelData, STUN responses and Data indications to
//! clients, `(public IP, allocation port)` for data to peers), and is sent from the socket with
//! that logical address. So the listen IP may differ from the public IP (a relay behind a 1:1
//! NAT, or on a wildcard address), and the TURN port may differ from 3478, without the relay
//! knowing.

use std::{
    collections::BTreeMap,
    fmt,
    future::Future,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket},
    ops::RangeInclusive,
    pin::pin,
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

mod metrics;

pub use relay::{self, Drop, Event, FreeReason, Relay, RelayConfig, Relayed, TURN_PORT, Transmit};
pub use relay_xdp;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{net::UdpSocket, sync::mpsc, task::JoinHandle};

/// The largest UDP payload; every receive buffer holds this much.
const MAX_DATAGRAM: usize = 65_536;
/// Datagrams read but not yet handled by the relay task. Beyond this, readers wait and the
/// kernel's socket buffers take the overflow (and drop it when full).
const INBOUND_QUEUE: usize = 256;
/// Receive buffers kept for reuse.
const POOL_SIZE: usize = INBOUND_QUEUE + 16;

/// How a server is set up: the relay's own configuration plus where its sockets live.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The sans-IO relay's configuration: public addresses, realm, secret, allocation ports,
    /// quota, seed and the Unix time at start.
    pub relay: RelayConfig,
    /// Local IPv4 address to bind. `None`: the public IPv4 address if it is local to this host
    /// (so replies leave from it), otherwise `0.0.0.0` (a relay behind a 1:1 NAT).
    pub listen_v4: Option<Ipv4Addr>,
    /// Local IPv6 address to bind. `None`: the public IPv6 address if it is local, otherwise
    /// `::` (IPv6 only: the IPv4 sockets are separate).
    pub listen_v6: Option<Ipv6Addr>,
    /// The real port of the client-facing sockets; the relay sees it as [`TURN_PORT`]. 0 lets
    /// the system pick one per family (tests).
    pub turn_port: u16,
    /// Attach the relay's XDP program to this interface, and keep its maps in step with the
    /// relay's channel bindings: ChannelData and peer data of bound channels are then relayed
    /// in the kernel and never reach the sockets. `None`: every datagram goes through the
    /// sockets.
    pub xdp: Option<XdpSetting>,
    /// Where to serve the metrics (`GET /metrics`, OpenMetrics text) for Prometheus; `None`:
    /// nowhere. Port 0 lets the system pick one ([`Server::metrics_addr`]).
    pub metrics: Option<SocketAddr>,
    /// Start even when the allocation port range overlaps the kernel's ephemeral range (a
    /// warning instead of [`Error::PortRangeOverlapsEphemeral`]).
    pub allow_ephemeral_overlap: bool,
}

/// Where and how to attach the XDP program.
#[derive(Debug, Clone)]
pub struct XdpSetting {
    pub interface: String,
    pub mode: relay_xdp::AttachMode,
}

impl ServerConfig {
    pub fn new(relay: RelayConfig) -> Self {
        Self {
            relay,
            listen_v4: None,
            listen_v6: None,
            turn_port: TURN_PORT,
            xdp: None,
            metrics: None,
            allow_ephemeral_overlap: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid relay configuration: {0}")]
    Config(#[from] relay::ConfigError),
    #[error("a listen address for IPv{0} was given but no public IPv{0} address")]
    ListenWithoutPublic(u8),
    #[error("the TURN port {port} is inside the allocation port range {start}-{end}")]
    TurnPortInRange { port: u16, start: u16, end: u16 },
    #[error(
        "the allocation port range {start}-{end} overlaps the kernel's ephemeral range \
         {ephemeral_start}-{ephemeral_end}: any outgoing connection on this host can take an \
         allocation's port. Move one of them (--port-range, or sysctl \
         net.ipv4.ip_local_port_range), or pass --allow-ephemeral-overlap"
    )]
    PortRangeOverlapsEphemeral {
        start: u16,
        end: u16,
        ephemeral_start: u16,
        ephemeral_end: u16,
    },
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot load the XDP program: {0}")]
    XdpLoad(#[from] relay_xdp::LoadError),
    #[error("cannot set up the XDP program's maps: {0}")]
    XdpMaps(#[from] relay_xdp::BindingError),
    #[error("cannot attach the XDP program to {interface}: {source}")]
    XdpAttach {
        interface: String,
        source: relay_xdp::AttachError,
    },
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics { addr: SocketAddr, source: io::Error },
}

/// What a server did, returned (and logged) when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub allocations_created: u64,
    pub allocations_freed: u64,
    /// Allocations still alive at shutdown.
    pub allocations_active: usize,
    pub datagrams_received: u64,
    /// Data datagrams relayed on the fast path (ChannelData and plain data to peers).
    pub datagrams_relayed: u64,
    /// Of those, to peers (plain data) ...
    pub relayed_to_peers: u64,
    /// ... and to clients (ChannelData).
    pub relayed_to_clients: u64,
    /// Control datagrams sent (STUN responses, Data indications).
    pub control_sent: u64,
    /// Datagrams the relay dropped, by reason.
    pub drops: BTreeMap<Drop, u64>,
    /// Datagrams the server could not send: no socket for their source (an allocation socket
    /// that failed to bind) or a send error.
    pub send_failures: u64,
    /// Allocation sockets that could not be bound.
    pub bind_failures: u64,
    /// Relay events the XDP maps could not mirror (each also logged).
    pub xdp_map_errors: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "allocations created {}, freed {}, active {}; datagrams received {}, relayed {}, \
             control sent {}; send failures {}, bind failures {}; drops:",
            self.allocations_created,
            self.allocations_freed,
            self.allocations_active,
            self.datagrams_received,
            self.datagrams_relayed,
            self.control_sent,
            self.send_failures,
            self.bind_failures,
        )?;
        if self.drops.is_empty() {
            write!(f, " none")?;
        }
        for (reason, count) in &self.drops {
            write!(f, " {reason:?}={count}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }
}

/// Where one family's sockets live.
#[derive(Debug, Clone, Copy)]
struct Endpoint {
    /// The relay's public address of this family: the IP of every logical address.
    public: IpAddr,
    /// The local address its sockets bind.
    listen: IpAddr,
}

/// A bound socket and the task reading it.
#[derive(Debug)]
struct Bound {
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
}

/// A datagram read from a socket.
#[derive(Debug)]
struct Inbound {
    from: SocketAddr,
    /// The logical address of the socket it arrived on (see the crate docs).
    to: SocketAddr,
    /// A pooled buffer of [`MAX_DATAGRAM`] bytes; the datagram is `buffer[..len]`.
    buffer: Vec<u8>,
    len: usize,
}

/// Receive buffers ([`MAX_DATAGRAM`] bytes each) passed from the reader tasks to the relay task
/// and back, so that the steady state allocates nothing per datagram.
#[derive(Debug, Clone, Default)]
struct Pool(Arc<Mutex<Vec<Vec<u8>>>>);

impl Pool {
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_else(|| vec![0; MAX_DATAGRAM])
    }

    fn give(&self, buffer: Vec<u8>) {
        let mut pool = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < POOL_SIZE {
            pool.push(buffer);
        }
    }
}

/// A relay with its TURN sockets bound, ready to [`run`](Server::run).
#[derive(Debug)]
pub struct Server {
    relay: Relay,
    v4: Option<Endpoint>,
    v6: Option<Endpoint>,
    /// Every socket by its logical (family, port): [`TURN_PORT`] for the TURN sockets,
    /// allocation ports for the others.
    sockets: BTreeMap<(Family, u16), Bound>,
    turn_addrs: Vec<SocketAddr>,
    inbound_tx: mpsc::Sender<Inbound>,
    inbound_rx: mpsc::Receiver<Inbound>,
    pool: Pool,
    /// Header + data of outgoing ChannelData, reused.
    send_buffer: Vec<u8>,
    summary: Summary,
    /// The metrics endpoint, if one was asked for.
    metrics: Option<MetricsEndpoint>,
    /// The attached XDP program, if one was asked for (detached when dropped).
    xdp: Option<relay_xdp::XdpRelay>,
}

/// Where the metrics are served, the scrapes waiting for a rendering, and the HTTP task.
#[derive(Debug)]
struct MetricsEndpoint {
    addr: SocketAddr,
    scrapes: mpsc::Receiver<metrics::Scrape>,
    task: JoinHandle<()>,
}

impl Server {
    /// Creates the relay and binds its TURN socket on every configured family. Must be called
    /// within a tokio runtime.
    pub async fn bind(config: ServerConfig) -> Result<Self, Error> {
        let ServerConfig {
            relay: relay_config,
            listen_v4,
            listen_v6,
            turn_port,
            xdp,
            metrics,
            allow_ephemeral_overlap,
        } = config;
        let (start, end) = (
            *relay_config.port_range.start(),
            *relay_config.port_range.end(),
        );
        if relay_config.port_range.contains(&turn_port) {
            return Err(Error::TurnPortInRange {
                port: turn_port,
                start,
                end,
            });
        }
        if let Some(ephemeral) = kernel_ephemeral_ports() {
            check_ephemeral_overlap(
                &relay_config.port_range,
                &ephemeral,
                allow_ephemeral_overlap,
            )?;
        }
        if listen_v4.is_some() && relay_config.public_v4.is_none() {
            return Err(Error::ListenWithoutPublic(4));
        }
        if listen_v6.is_some() && relay_config.public_v6.is_none() {
            return Err(Error::ListenWithoutPublic(6));
        }
        let v4 = relay_config.public_v4.map(|public| Endpoint {
            public: public.into(),
            listen: listen_v4
                .map(IpAddr::from)
                .unwrap_or_else(|| default_listen(public.into())),
        });
        let v6 = relay_config.public_v6.map(|public| Endpoint {
            public: public.into(),
            listen: listen_v6
                .map(IpAddr::from)
                .unwrap_or_else(|| default_listen(public.into())),
        });
        let port_range = relay_config.port_range.clone();
        let xdp = match xdp {
            Some(setting) => Some(attach_xdp(&relay_config, setting)?),
            None => None,
        };
        let relay = Relay::new(relay_config, Instant::now())?;
        let metrics = match metrics {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| Error::Metrics { addr, source })?;
                let addr = listener
                    .local_addr()
                    .map_err(|source| Error::Metrics { addr, source })?;
                let (sender, scrapes) = mpsc::channel(16);
                let task = tokio::spawn(metrics::serve(listener, sender));
                tracing::info!(%addr, "serving metrics at /metrics");
                Some(MetricsEndpoint {
                    addr,
                    scrapes,
                    task,
                })
            }
            None => None,
        };
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let mut server = Self {
            relay,
            v4,
            v6,
            sockets: BTreeMap::new(),
            turn_addrs: Vec::new(),
            inbound_tx,
            inbound_rx,
            pool: Pool::default(),
            send_buffer: Vec::with_capacity(MAX_DATAGRAM),
            summary: Summary::default(),
            metrics,
            xdp,
        };
        for endpoint in [v4, v6].into_iter().flatten() {
            let addr = server.bind_socket(endpoint, turn_port, TURN_PORT)?;
            if port_range.contains(&addr.port()) {
                // Only possible with turn_port 0 and a system port range that overlaps ours.
                return Err(Error::TurnPortInRange {
                    port: addr.port(),
                    start,
                    end,
                });
            }
            tracing::info!(local = %addr, public = %endpoint.public, "TURN socket bound");
            server.turn_addrs.push(addr);
        }
        Ok(server)
    }

    /// The local addresses of the TURN sockets (IPv4 first), where clients send.
    pub fn turn_addrs(&self) -> &[SocketAddr] {
        &self.turn_addrs
    }

    /// The local address of the IPv4 TURN socket.
    pub fn turn_addr_v4(&self) -> Option<SocketAddr> {
        self.turn_addrs.iter().copied().find(SocketAddr::is_ipv4)
    }

    /// Where the metrics are served, if they are.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|endpoint| endpoint.addr)
    }

    /// The local address of the IPv6 TURN socket.
    pub fn turn_addr_v6(&self) -> Option<SocketAddr> {
        self.turn_addrs.iter().copied().find(SocketAddr::is_ipv6)
    }

    /// Serves until `shutdown` completes, then stops reading, closes every socket, logs a
    /// summary and returns it.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Summary {
        let mut shutdown = pin!(shutdown);
        loop {
            let deadline = self.relay.poll_timeout();
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = sleep_until(deadline) => self.relay.handle_timeout(Instant::now()),
                inbound = self.inbound_rx.recv() => match inbound {
                    Some(inbound) => self.handle_inbound(inbound).await,
                    // Unreachable: the server holds a sender itself.
                    None => break,
                },
                Some(scrape) = next_scrape(&mut self.metrics) => {
                    let rendering = metrics::render(&self.relay, &self.summary, self.xdp.as_ref());
                    let _ = scrape.send(rendering);
                }
            }
            self.handle_events().await;
            self.send_transmits().await;
        }
        self.stop().await
    }

    async fn handle_inbound(&mut self, inbound: Inbound) {
        self.summary.datagrams_received += 1;
        let Inbound {
            from,
            to,
            buffer,
            len,
        } = inbound;
        let payload = &buffer[..len];
        // The relay logs every drop itself (at debug, target `relay`) and counts it.
        if let Ok(Some(relayed)) = self.relay.handle_input(from, to, payload, Instant::now()) {
            self.send_relayed(relayed).await;
        }
        self.pool.give(buffer);
    }

    /// Sends a data datagram from the socket whose logical address is its source.
    async fn send_relayed(&mut self, relayed: Relayed<'_>) {
        let Some(bound) = self
            .sockets
            .get(&(Family::of(relayed.src.ip()), relayed.src.port()))
        else {
            self.summary.send_failures += 1;
            tracing::debug!(src = %relayed.src, dst = %relayed.dst, "no socket to relay from");
            return;
        };
        let datagram = match relayed.header() {
            Some(header) => {
                self.send_buffer.clear();
                self.send_buffer.extend_from_slice(&header);
                self.send_buffer.extend_from_slice(relayed.data);
                &self.send_buffer[..]
            }
            None => relayed.data,
        };
        match bound.socket.send_to(datagram, relayed.dst).await {
            Ok(_) => {
                self.summary.datagrams_relayed += 1;
                if relayed.channel.is_some() {
                    self.summary.relayed_to_clients += 1;
                } else {
                    self.summary.relayed_to_peers += 1;
                }
            }
            Err(error) => {
                self.summary.send_failures += 1;
                tracing::debug!(src = %relayed.src, dst = %relayed.dst, %error, "send failed");
            }
        }
    }

    async fn send_transmits(&mut self) {
        while let Some(transmit) = self.relay.poll_transmit() {
            let Some(bound) = self
                .sockets
                .get(&(Family::of(transmit.src.ip()), transmit.src.port()))
            else {
                self.summary.send_failures += 1;
                tracing::debug!(src = %transmit.src, dst = %transmit.dst, "no socket to send from");
                continue;
            };
            match bound.socket.send_to(&transmit.payload, transmit.dst).await {
                Ok(_) => self.summary.control_sent += 1,
                Err(error) => {
                    self.summary.send_failures += 1;
                    tracing::debug!(
                        src = %transmit.src, dst = %transmit.dst, %error, "send failed"
                    );
                }
            }
        }
    }

    async fn handle_events(&mut self) {
        while let Some(event) = self.relay.poll_event() {
            if let Some(xdp) = self.xdp.as_mut()
                && let Err(error) = xdp.apply(&event)
            {
                self.summary.xdp_map_errors += 1;
                tracing::warn!(%error, ?event, "the XDP maps missed a relay event");
            }
            match event {
                Event::AllocationCreated {
                    client,
                    port,
                    relayed,
                    expires_at,
                } => {
                    self.summary.allocations_created += 1;
                    let lifetime = expires_at.saturating_duration_since(Instant::now());
                    tracing::info!(
                        %client, port, ?relayed, lifetime_s = lifetime.as_secs(),
                        "allocation created"
                    );
                    for address in relayed {
                        if !self.open_allocation_socket(address).await {
                            // Answered 508 instead; the AllocationFreed that follows closes
                            // whatever was bound for the other family.
                            self.relay.handle_bind_failure(port, Instant::now());
                            break;
                        }
                    }
                }
                Event::AllocationFreed {
                    client,
                    port,
                    reason,
                } => {
                    self.summary.allocations_freed += 1;
                    tracing::info!(%client, port, ?reason, "allocation freed");
                    for family in [Family::V4, Family::V6] {
                        if let Some(bound) = self.sockets.remove(&(family, port)) {
                            close(bound).await;
                        }
                    }
                }
                Event::AllocationRefreshed {
                    client,
                    port,
                    expires_at,
                } => {
                    let lifetime = expires_at.saturating_duration_since(Instant::now());
                    tracing::debug!(
                        %client, port, lifetime_s = lifetime.as_secs(), "allocation refreshed"
                    );
                }
                Event::ChannelBound(binding) => tracing::debug!(?binding, "channel bound"),
                Event::ChannelRefreshed(binding) => tracing::debug!(?binding, "channel refreshed"),
                Event::ChannelUnbound(binding) => tracing::debug!(?binding, "channel unbound"),
            }
        }
    }

    /// Binds the allocation socket for the relayed address `address` (same port number).
    /// `false` if it could not be bound.
    async fn open_allocation_socket(&mut self, address: SocketAddr) -> bool {
        let family = Family::of(address.ip());
        let endpoint = match family {
            Family::V4 => self.v4,
            Family::V6 => self.v6,
        };
        let Some(endpoint) = endpoint else {
            // The relay only relays families it has a public address for.
            return true;
        };
        if let Some(stale) = self.sockets.remove(&(family, address.port())) {
            close(stale).await;
        }
        match self.bind_socket(endpoint, address.port(), address.port()) {
            Ok(_) => true,
            Err(error) => {
                self.summary.bind_failures += 1;
                tracing::warn!(%error, relayed = %address, "cannot bind an allocation socket; answering 508");
                false
            }
        }
    }

    /// Binds `(endpoint.listen, port)`, known to the relay as `(endpoint.public,
    /// logical_port)`, and starts its reader. Returns the bound local address.
    fn bind_socket(
        &mut self,
        endpoint: Endpoint,
        port: u16,
        logical_port: u16,
    ) -> Result<SocketAddr, Error> {
        let addr = SocketAddr::new(endpoint.listen, port);
        let socket = bind_udp(addr).map_err(|source| Error::Bind { addr, source })?;
        let local = socket.local_addr().unwrap_or(addr);
        let socket = Arc::new(socket);
        let logical = SocketAddr::new(endpoint.public, logical_port);
        let reader = tokio::spawn(read_loop(
            Arc::clone(&socket),
            logical,
            self.inbound_tx.clone(),
            self.pool.clone(),
        ));
        let family = Family::of(endpoint.public);
        self.sockets
            .insert((family, logical_port), Bound { socket, reader });
        Ok(local)
    }

    async fn stop(mut self) -> Summary {
        let sockets = std::mem::take(&mut self.sockets);
        for bound in sockets.into_values() {
            close(bound).await;
        }
        self.summary.allocations_active = self.relay.allocation_count();
        self.summary.drops = self.relay.drop_counts().clone();
        tracing::info!(summary = %self.summary, "relay stopped");
        std::mem::take(&mut self.summary)
    }
}

/// A server dropped without running to the end (or failing to bind) stops its readers, which
/// closes its sockets.
impl std::ops::Drop for Server {
    fn drop(&mut self) {
        for bound in self.sockets.values() {
            bound.reader.abort();
        }
        if let Some(endpoint) = &self.metrics {
            endpoint.task.abort();
        }
    }
}

/// Loads the XDP program, gives its maps the relay's addresses, and attaches it.
fn attach_xdp(config: &RelayConfig, setting: XdpSetting) -> Result<relay_xdp::XdpRelay, Error> {
    let mut xdp = relay_xdp::XdpRelay::load()?;
    xdp.configure_for(config)?;
    let attached = xdp
        .attach(&setting.interface, setting.mode)
        .map_err(|source| Error::XdpAttach {
            interface: setting.interface.clone(),
            source,
        })?;
    let interface = &setting.interface;
    match (attached, setting.mode) {
        (relay_xdp::Attached::Generic, relay_xdp::AttachMode::Auto) => tracing::warn!(
            %interface,
            "the driver has no native XDP: attached in generic mode (same verdicts, slower)"
        ),
        _ => tracing::info!(%interface, ?attached, "XDP program attached"),
    }
    Ok(xdp)
}

/// The next scrape waiting for a rendering; never, without a metrics endpoint.
async fn next_scrape(endpoint: &mut Option<MetricsEndpoint>) -> Option<metrics::Scrape> {
    match endpoint {
        Some(endpoint) => endpoint.scrapes.recv().await,
        None => std::future::pending().await,
    }
}

/// Reads datagrams from `socket` and hands them to the relay task, tagged with the socket's
/// logical address.
///
/// A reader takes a receive buffer only once its socket is readable, so that idle allocation
/// sockets (most of them, most of the time) hold none.
async fn read_loop(
    socket: Arc<UdpSocket>,
    logical: SocketAddr,
    inbound: mpsc::Sender<Inbound>,
    pool: Pool,
) {
    loop {
        if let Err(error) = socket.readable().await {
            tracing::error!(%logical, %error, "socket failed; no longer reading it");
            return;
        }
        let mut buffer = pool.take();
        match socket.try_recv_from(&mut buffer) {
            Ok((len, from)) => {
                let datagram = Inbound {
                    from,
                    to: logical,
                    buffer,
                    len,
                };
                if inbound.send(datagram).await.is_err() {
                    return;
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => pool.give(buffer),
            Err(error) => {
                // UDP receive errors are transient (e.g. an ICMP error reported on some
                // systems); the socket stays usable.
                tracing::debug!(%logical, %error, "receive failed");
                pool.give(buffer);
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Stops a socket's reader and waits until its task (and so the socket) is gone, so that the
/// port can be bound again right away.
async fn close(bound: Bound) {
    let Bound { socket, reader } = bound;
    drop(socket);
    reader.abort();
    let _ = reader.await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Where the kernel takes ports for outgoing sockets (one sysctl serves IPv4 and IPv6), if it
/// can be read.
fn kernel_ephemeral_ports() -> Option<RangeInclusive<u16>> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut ports = text.split_whitespace().map(str::parse::<u16>);
    Some(ports.next()?.ok()?..=ports.next()?.ok()?)
}

/// Refuses an allocation range that shares ports with the kernel's ephemeral range (warns when
/// `allowed`): an outgoing connection on the host could take an allocation's port, and the
/// allocation then fails to bind (508) at random.
fn check_ephemeral_overlap(
    allocations: &RangeInclusive<u16>,
    ephemeral: &RangeInclusive<u16>,
    allowed: bool,
) -> Result<(), Error> {
    if allocations.start().max(ephemeral.start()) > allocations.end().min(ephemeral.end()) {
        return Ok(());
    }
    let error = Error::PortRangeOverlapsEphemeral {
        start: *allocations.start(),
        end: *allocations.end(),
        ephemeral_start: *ephemeral.start(),
        ephemeral_end: *ephemeral.end(),
    };
    if !allowed {
        return Err(error);
    }
    tracing::warn!("{error}; allocations may fail to bind");
    Ok(())
}

/// The address to bind for `public` when none is configured: `public` itself if this host has
/// it, otherwise the wildcard address of its family.
fn default_listen(public: IpAddr) -> IpAddr {
    if StdUdpSocket::bind(SocketAddr::new(public, 0)).is_ok() {
        public
    } else {
        match public {
            IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        }
    }
}

/// A non-blocking UDP socket on `addr`; IPv6 sockets are IPv6-only so that `::` and `0.0.0.0`
/// can hold the same port.
fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allocation_range_sharing_a_port_with_the_ephemeral_range_is_refused() {
        let linux_default = 32_768..=60_999;
        assert!(check_ephemeral_overlap(&(61_000..=65_535), &linux_default, false).is_ok());
        for overlapping in [49_152..=65_535, 60_999..=61_010, 30_000..=32_768] {
            let error = check_ephemeral_overlap(&overlapping, &linux_default, false)
                .expect_err("an overlap is refused");
            assert!(
                matches!(
                    error,
                    Error::PortRangeOverlapsEphemeral {
                        ephemeral_start: 32_768,
                        ..
                    }
                ),
                "{error}"
            );
            assert!(check_ephemeral_overlap(&overlapping, &linux_default, true).is_ok());
        }
    }
}
