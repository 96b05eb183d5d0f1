//! A client host: its tunnel socket, its endpoint (direct or through its relay), the frames'
//! counter, and its side of each TCP connection.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    rc::Rc,
    time::Instant,
};

use observation::{ClientId, OuterContext, Packet, Receiver};
use proto::tunnel::{self, FrameHeader};
use scenario_format::plan::AddressPlan;
use turmoil::net::UdpSocket;
use turn_client::TurnClientConfig;

use crate::{
    client_paths::{ClientPaths, Route},
    clock::{deadline_ms, end_turn, now_instant},
    commands::{ClientCommand, ClientTcpAction},
    endpoint_io::{flush_turn, receive_through, send_through, unspecified},
    packets::{self, Inner},
    state::Shared,
    tcp::TcpSide,
    wire,
    world::{World, gateway_socket},
};

struct ClientHost {
    name: String,
    index: usize,
    counter: u64,
    /// Its endpoint and where frames for each gateway go.
    paths: ClientPaths,
    /// Per connection (by our inner address): the peer's inner address, the gateway, our side.
    tcp: BTreeMap<SocketAddr, (SocketAddr, usize, TcpSide)>,
}

impl ClientHost {
    fn send_inner(
        &mut self,
        socket: &UdpSocket,
        gateway: usize,
        inner: Vec<u8>,
        shared: &Rc<RefCell<Shared>>,
    ) {
        let target = match self.paths.route(gateway) {
            Some(Route::To(target)) => target,
            None => {
                shared
                    .borrow_mut()
                    .journal
                    .errors
                    .push(format!("{}: no address for gateway {gateway}", self.name));
                return;
            }
            // Roamed and not allocated again yet: a real client has no way through its relay.
            Some(Route::AwaitingAllocation) => {
                shared.borrow_mut().journal.trace(
                    &self.name,
                    format!(
                        "cannot send {} to gateway {gateway}: no allocation on the relay yet",
                        Packet::parse(&inner)
                    ),
                );
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
            &inner,
        );
        let what = format!("sent {}", Packet::parse(&inner));
        send_through(
            self.paths.endpoint_mut(),
            socket,
            shared,
            &self.name,
            target,
            &frame,
            &what,
        );
    }

    async fn command(
        &mut self,
        command: ClientCommand,
        socket: &mut UdpSocket,
        shared: &Rc<RefCell<Shared>>,
    ) -> std::io::Result<()> {
        match command {
            ClientCommand::Udp {
                gateway,
                src,
                dst,
                payload,
            } => {
                self.send_inner(socket, gateway, packets::udp(src, dst, &payload), shared);
            }
            ClientCommand::TcpOpen {
                gateway,
                conn,
                src,
                dst,
            } => {
                let mut side = TcpSide::client_of(conn);
                let syn = side.syn();
                self.tcp.insert(src, (dst, gateway, side));
                self.send_inner(socket, gateway, packets::tcp(src, dst, syn, 0xC1), shared);
            }
            ClientCommand::Tcp { src, action } => self.tcp_action(src, action, socket, shared),
            ClientCommand::Path {
                gateway,
                target,
                via_relay,
            } => self.set_path(gateway, target, via_relay, shared),
            ClientCommand::Roam { back } => self.roam(socket, shared, back).await?,
        }
        Ok(())
    }

    /// The client's side of connection `src` acts (a retransmitted SYN, data, FIN, RST, a
    /// late ACK); nothing happens on a connection it never opened.
    fn tcp_action(
        &mut self,
        src: SocketAddr,
        action: ClientTcpAction,
        socket: &UdpSocket,
        shared: &Rc<RefCell<Shared>>,
    ) {
        let Some((dst, gateway, side)) = self.tcp.get_mut(&src) else {
            return;
        };
        let (dst, gateway) = (*dst, *gateway);
        let segment = match action {
            ClientTcpAction::RetransmitSyn => side.syn(),
            ClientTcpAction::Data(bytes) => side.data(bytes),
            ClientTcpAction::Close => side.fin(),
            ClientTcpAction::Reset => side.rst(),
            ClientTcpAction::LateAck => side.ack(),
            ClientTcpAction::KeepOpen => {
                side.keep_open();
                return;
            }
        };
        self.send_inner(
            socket,
            gateway,
            packets::tcp(src, dst, segment, 0xC1),
            shared,
        );
    }

    /// From now on, frames for `gateway` go to `target`, through the client's own relay or
    /// directly (after roaming, the relay path waits for the new allocation).
    fn set_path(
        &mut self,
        gateway: usize,
        target: SocketAddr,
        via_relay: bool,
        shared: &Rc<RefCell<Shared>>,
    ) {
        let now = now_instant(shared.borrow().origin);
        if let Err(error) = self.paths.set_path(gateway, target, via_relay, now) {
            shared
                .borrow_mut()
                .journal
                .errors
                .push(format!("{}: {error}", self.name));
        }
        shared.borrow_mut().journal.trace(
            &self.name,
            format!(
                "path to gateway {gateway}: {target}{}",
                if via_relay { " via own relay" } else { "" }
            ),
        );
    }

    /// Moves to the next port (or `back` to the one below): a new socket, and with a relay a
    /// new allocation.
    async fn roam(
        &mut self,
        socket: &mut UdpSocket,
        shared: &Rc<RefCell<Shared>>,
        back: bool,
    ) -> std::io::Result<()> {
        let socket_addr = self.paths.endpoint().socket();
        let port = if back {
            socket_addr.port().saturating_sub(1)
        } else {
            socket_addr.port() + 1
        };
        let moved = SocketAddr::new(socket_addr.ip(), port);
        *socket = UdpSocket::bind(SocketAddr::new(unspecified(moved.ip()), moved.port())).await?;
        // With a relay, the allocation belongs to the old socket's 5-tuple: allocate again
        // from the new socket, and bind the channels again once allocated. The old allocation
        // expires at the relay.
        self.paths.roam(moved, now_instant(shared.borrow().origin));
        let what = if self.paths.has_relay() {
            format!("roamed to {moved}, allocating again on the relay")
        } else {
            format!("roamed to {moved}")
        };
        shared.borrow_mut().journal.trace(&self.name, what);
        Ok(())
    }

    /// A datagram off the socket: through the endpoint, a tunnel frame from a gateway whose
    /// inner packet is delivered (and answered, for TCP).
    fn receive(
        &mut self,
        datagram: &[u8],
        from: SocketAddr,
        socket: &UdpSocket,
        now: Instant,
        shared: &Rc<RefCell<Shared>>,
    ) {
        let name = self.name.clone();
        wire::received(
            shared,
            &name,
            from,
            self.paths.endpoint().socket(),
            datagram,
            None,
        );
        let Some(arrival) = receive_through(
            self.paths.endpoint_mut(),
            shared,
            &name,
            from,
            datagram,
            now,
        ) else {
            return;
        };
        let (remote, local, payload) =
            (arrival.remote, arrival.local, arrival.payload.into_owned());
        let Ok((_, inner)) = tunnel::open(
            &wire::session_key(self.index),
            tunnel::Direction::ToClient,
            &payload,
        ) else {
            shared.borrow_mut().journal.errors.push(format!(
                "{name}: a datagram from {remote} is not a frame for us"
            ));
            return;
        };
        {
            let packet = Packet::parse(inner);
            let mut shared = shared.borrow_mut();
            shared
                .journal
                .trace(&name, format!("received {packet} from {remote}"));
            match self.paths.gateway_at(remote) {
                // The gateway's view of the outer context: (the client's end, the gateway's
                // end).
                Some(gateway) => shared.journal.delivered(
                    Receiver::Client {
                        client: ClientId(self.index as u32),
                        gateway: gateway as u32,
                        outer: OuterContext {
                            remote: local,
                            local: remote,
                        },
                    },
                    inner,
                ),
                None => shared.journal.errors.push(format!(
                    "{name}: a frame from {remote}, which is no gateway's address"
                )),
            }
        }
        if let Inner::Tcp { src, dst, segment } = packets::parse(inner)
            && let Some((_, gateway, side)) = self.tcp.get_mut(&dst)
        {
            let gateway = *gateway;
            if let Some(answer) = side.answer(segment) {
                let answer = packets::tcp(dst, src, answer, 0xC1);
                self.send_inner(socket, gateway, answer, shared);
            }
        }
    }

    /// After roaming, once the new allocation exists: binds a channel to every gateway this
    /// client reaches through its relay.
    fn rebind_when_allocated(&mut self, shared: &Rc<RefCell<Shared>>) {
        let now = now_instant(shared.borrow().origin);
        for error in self.paths.rebind_when_allocated(now) {
            shared
                .borrow_mut()
                .journal
                .errors
                .push(format!("{}: {error}", self.name));
        }
    }
}

/// Client `index`'s host, with its TURN client if it names a relay; it starts on its first
/// socket with a direct path to every gateway.
pub(crate) fn add_client(
    sim: &mut turmoil::Sim<'_>,
    world: &World<'_>,
    index: usize,
    turn: Option<TurnClientConfig>,
) {
    let shared = world.shared.clone();
    let inbox = world.inboxes.clients[index].clone();
    let name = world.scenario.topology.clients[index].name.clone();
    let socket_addr = world.plan.client_socket(index, 0);
    let gateways: Vec<SocketAddr> = (0..world.scenario.topology.gateways.len())
        .map(|g| gateway_socket(world.plan, g))
        .collect();
    sim.host(socket_addr.ip(), move || {
        let shared = shared.clone();
        let name = name.clone();
        let turn = turn.clone();
        let gateways = gateways.clone();
        let inbox = inbox.clone();
        async move {
            let origin = shared.borrow().origin;
            let mut socket = UdpSocket::bind(SocketAddr::new(
                unspecified(socket_addr.ip()),
                socket_addr.port(),
            ))
            .await?;
            let mut host = ClientHost {
                name: name.clone(),
                index,
                counter: 0,
                paths: ClientPaths::new(socket_addr, &gateways, turn, now_instant(origin)),
                tcp: BTreeMap::new(),
            };
            let mut buf = vec![0u8; 65536];
            loop {
                let now = now_instant(origin);
                if let Some(turn) = host.paths.endpoint_mut().turn_mut()
                    && turn.poll_timeout().is_some_and(|deadline| deadline <= now)
                {
                    turn.handle_timeout(now);
                }
                for command in inbox.take_all() {
                    host.command(command, &mut socket, &shared).await?;
                }
                while let Ok((len, from)) = socket.try_recv_from(&mut buf) {
                    host.receive(&buf[..len], from, &socket, now, &shared);
                }
                send_spoofed(&socket, socket_addr.ip(), &shared).await?;
                host.rebind_when_allocated(&shared);
                flush_turn(host.paths.endpoint_mut(), &socket, &shared, &name);
                let deadline = host
                    .paths
                    .endpoint_mut()
                    .turn_mut()
                    .and_then(|turn| turn.poll_timeout())
                    .map(|deadline| deadline_ms(origin, deadline));
                end_turn(&shared, &name, deadline).await;
            }
        }
    });
}

/// Sends the attacker's datagrams spoofed from this host's address (any port: from the
/// client's socket if it is the one, else from a socket bound for the moment, a port the
/// client has left).
async fn send_spoofed(
    socket: &UdpSocket,
    ip: IpAddr,
    shared: &Rc<RefCell<Shared>>,
) -> std::io::Result<()> {
    if shared.borrow().spoof_orders.is_empty() {
        return Ok(());
    }
    let port = socket.local_addr()?.port();
    let orders = shared.borrow_mut().take_spoof_orders_at(ip);
    for order in orders {
        if order.from.port() == port {
            wire::send_spoofed(socket, shared, order);
        } else {
            let other =
                UdpSocket::bind(SocketAddr::new(unspecified(ip), order.from.port())).await?;
            wire::send_spoofed(&other, shared, order);
        }
    }
    Ok(())
}
