//! A scenario's client on a real socket: the same tunnel frames, TURN client and scripted TCP
//! side as the simulated client (`sim`'s client host), with the deliveries it sees recorded in
//! the model's vocabulary.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, UdpSocket},
    time::Instant,
};

use observation::{ClientId, OuterContext, Packet, Receiver};
use proto::tunnel::{self, FrameHeader};
use scenario_format::plan::AddressPlan;
use sim::{
    client_paths::{ClientPaths, Route},
    packets::{self, Inner},
    tcp::TcpSide,
    wire,
};
use turn_client::TurnClientConfig;

/// What a client saw: a delivered inner packet at a run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub at_ms: u64,
    pub to: Receiver,
    pub packet: Packet,
}

#[derive(Debug)]
pub struct RealClient {
    index: usize,
    socket: UdpSocket,
    /// The endpoint and where frames for each gateway go, as the simulated client keeps them.
    paths: ClientPaths,
    counter: u64,
    /// Per connection (by our inner address): the resource's inner address, the gateway, our
    /// side.
    tcp: BTreeMap<SocketAddr, (SocketAddr, usize, TcpSide)>,
    pub seen: Vec<Seen>,
    /// What went wrong on the client's side (sent nowhere, unreadable frames).
    pub errors: Vec<String>,
}

impl RealClient {
    /// Client `index` on `socket` (bound in its namespace), allocating at once if it has a
    /// relay; every gateway is reached directly at first.
    pub fn new(
        index: usize,
        socket: UdpSocket,
        gateways: &[SocketAddr],
        turn: Option<TurnClientConfig>,
        now: Instant,
    ) -> std::io::Result<Self> {
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        Ok(Self {
            index,
            socket,
            paths: ClientPaths::new(local, gateways, turn, now),
            counter: 0,
            tcp: BTreeMap::new(),
            seen: Vec::new(),
            errors: Vec::new(),
        })
    }

    /// The client's relayed addresses (empty without an allocation).
    pub fn relayed(&self) -> Vec<SocketAddr> {
        self.paths
            .endpoint()
            .turn()
            .map(|turn| turn.relayed_addresses().to_vec())
            .unwrap_or_default()
    }

    /// Moves to `socket` (the next port, or back to the one below): with a relay, a new
    /// allocation from it, whose channels are bound again once it exists (as the simulated
    /// client does).
    pub fn roam(&mut self, socket: UdpSocket, now: Instant) -> std::io::Result<()> {
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        self.socket = socket;
        self.paths.roam(local, now);
        Ok(())
    }

    /// Frames for `gateway` go to `target` from now on, through our relay or not.
    pub fn set_path(&mut self, gateway: usize, target: SocketAddr, via_relay: bool, now: Instant) {
        if let Err(error) = self.paths.set_path(gateway, target, via_relay, now) {
            self.errors.push(error);
        }
    }

    /// Seals `inner` for `gateway` and sends it.
    pub fn send_inner(&mut self, gateway: usize, inner: &[u8], now: Instant) {
        let target = match self.paths.route(gateway) {
            Some(Route::To(target)) => target,
            // Roamed and not allocated again yet: no way through the relay (as in the
            // simulation, the packet is not sent).
            Some(Route::AwaitingAllocation) => return,
            None => {
                self.errors
                    .push(format!("no address for gateway {gateway}"));
                return;
            }
        };
        self.counter += 1;
        let frame = tunnel::seal(
            &wire::session_key(self.index),
            tunnel::Direction::ToGateway,
            FrameHeader {
                session_id: AddressPlan::session(self.index).id,
                counter: self.counter,
            },
            inner,
        );
        match self.paths.endpoint_mut().send(target, &frame, now) {
            Ok(datagram) => {
                if let Err(error) = self.socket.send_to(&datagram.payload, datagram.dst) {
                    self.errors
                        .push(format!("send to {}: {error}", datagram.dst));
                }
            }
            Err(error) => self.errors.push(format!("send to {target}: {error}")),
        }
    }

    /// Opens connection `src` -> `dst` through `gateway` (the SYN).
    pub fn tcp_open(
        &mut self,
        gateway: usize,
        conn: u32,
        src: SocketAddr,
        dst: SocketAddr,
        now: Instant,
    ) {
        let mut side = TcpSide::client_of(conn);
        let syn = side.syn();
        self.tcp.insert(src, (dst, gateway, side));
        self.send_inner(gateway, &packets::tcp(src, dst, syn, 0xC1), now);
    }

    /// Our side of connection `src` sends what `act` makes of it.
    pub fn tcp_act(
        &mut self,
        src: SocketAddr,
        now: Instant,
        act: impl FnOnce(&mut TcpSide) -> sim::tcp::Segment,
    ) {
        let Some((dst, gateway, side)) = self.tcp.get_mut(&src) else {
            self.errors.push(format!("no connection from {src}"));
            return;
        };
        let (dst, gateway) = (*dst, *gateway);
        let segment = act(side);
        self.send_inner(gateway, &packets::tcp(src, dst, segment, 0xC1), now);
    }

    /// Moves datagrams and timers: what the socket holds, the TURN client's due timeouts and
    /// transmits. `at_ms` stamps what is delivered.
    pub fn poll(&mut self, now: Instant, at_ms: u64) {
        if let Some(turn) = self.paths.endpoint_mut().turn_mut()
            && turn.poll_timeout().is_some_and(|deadline| deadline <= now)
        {
            turn.handle_timeout(now);
        }
        let mut buffer = [0u8; 65_536];
        while let Ok((len, from)) = self.socket.recv_from(&mut buffer) {
            self.receive(&buffer[..len], from, now, at_ms);
        }
        let refused = self.paths.rebind_when_allocated(now);
        self.errors.extend(refused);
        let local = self.paths.endpoint().socket();
        if let Some(turn) = self.paths.endpoint_mut().turn_mut() {
            while let Some(transmit) = turn.poll_transmit() {
                if let Err(error) = self.socket.send_to(&transmit.payload, transmit.dst) {
                    self.errors
                        .push(format!("{local}: TURN to {}: {error}", transmit.dst));
                }
            }
            while turn.poll_event().is_some() {}
        }
    }

    fn receive(&mut self, datagram: &[u8], from: SocketAddr, now: Instant, at_ms: u64) {
        let arrival = match self.paths.endpoint_mut().receive(from, datagram, now) {
            Ok(Some(arrival)) => arrival,
            Ok(None) => return,
            Err(error) => {
                self.errors
                    .push(format!("a datagram from {from} refused: {error}"));
                return;
            }
        };
        let (remote, local) = (arrival.remote, arrival.local);
        let payload = arrival.payload.into_owned();
        let Ok((_, inner)) = tunnel::open(
            &wire::session_key(self.index),
            tunnel::Direction::ToClient,
            &payload,
        ) else {
            self.errors
                .push(format!("a datagram from {remote} is not a frame for us"));
            return;
        };
        let Some(gateway) = self.paths.gateway_at(remote) else {
            self.errors.push(format!(
                "a frame from {remote}, which is no gateway's address"
            ));
            return;
        };
        self.seen.push(Seen {
            at_ms,
            to: Receiver::Client {
                client: ClientId(self.index as u32),
                gateway: gateway as u32,
                outer: OuterContext {
                    remote: local,
                    local: remote,
                },
            },
            packet: Packet::parse(inner),
        });
        if let Inner::Tcp { src, dst, segment } = packets::parse(inner)
            && let Some((_, gateway, side)) = self.tcp.get_mut(&dst)
        {
            let gateway = *gateway;
            if let Some(answer) = side.answer(segment) {
                let answer = packets::tcp(dst, src, answer, 0xC1);
                self.send_inner(gateway, &answer, now);
            }
        }
    }
}
