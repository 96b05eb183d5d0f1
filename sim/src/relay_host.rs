//! A relay host: the sans-IO TURN relay on port 3478 and on a socket per allocation port,
//! opened and closed as the relay's events say.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    rc::Rc,
};

use relay::{Event, Relay, RelayConfig, TURN_PORT};
use turmoil::net::UdpSocket;

use crate::world::{
    ORIGIN_UNIX_SECS, RELAY_REALM, RELAY_SECRET, Shared, deadline_ms, end_turn, now_instant,
    unspecified,
};

fn relay_config(ip: IpAddr, seed: u64) -> RelayConfig {
    let mut config = RelayConfig::new(RELAY_REALM, RELAY_SECRET);
    match ip {
        IpAddr::V4(v4) => config.public_v4 = Some(v4),
        IpAddr::V6(v6) => config.public_v6 = Some(v6),
    }
    config.unix_time_at_start = ORIGIN_UNIX_SECS;
    config.seed = seed;
    config
}

pub(crate) fn add_relay(
    sim: &mut turmoil::Sim<'_>,
    shared: &Rc<RefCell<Shared>>,
    name: String,
    ip: IpAddr,
    seed: u64,
) {
    let shared = shared.clone();
    sim.host(ip, move || {
        let shared = shared.clone();
        let name = name.clone();
        async move {
            let origin = shared.borrow().origin;
            let mut relay = Relay::new(relay_config(ip, seed), origin)
                .map_err(|error| std::io::Error::other(error.to_string()))?;
            let mut sockets: BTreeMap<u16, UdpSocket> = BTreeMap::new();
            sockets.insert(
                TURN_PORT,
                UdpSocket::bind(SocketAddr::new(unspecified(ip), TURN_PORT)).await?,
            );
            let mut buf = vec![0u8; 65536];
            loop {
                let now = now_instant(origin);
                if relay.poll_timeout().is_some_and(|deadline| deadline <= now) {
                    relay.handle_timeout(now);
                }
                let ports: Vec<u16> = sockets.keys().copied().collect();
                for port in ports {
                    while let Some(Ok((len, from))) = sockets
                        .get(&port)
                        .map(|socket| socket.try_recv_from(&mut buf))
                    {
                        let to = SocketAddr::new(ip, port);
                        match relay.handle_input(from, to, &buf[..len], now) {
                            Ok(Some(relayed)) => {
                                let bytes = relayed.to_vec();
                                let kind = match relayed.channel {
                                    Some(channel) => format!("ChannelData {channel:#06x}"),
                                    None => "UDP".to_owned(),
                                };
                                send(
                                    &sockets,
                                    &shared,
                                    &name,
                                    relayed.src,
                                    relayed.dst,
                                    &bytes,
                                    &kind,
                                );
                            }
                            Ok(None) => {}
                            Err(reason) => shared.borrow_mut().trace(
                                &name,
                                format!("dropped {len} bytes from {from} to {to}: {reason}"),
                            ),
                        }
                    }
                }
                while let Some(transmit) = relay.poll_transmit() {
                    send(
                        &sockets,
                        &shared,
                        &name,
                        transmit.src,
                        transmit.dst,
                        &transmit.payload,
                        "STUN",
                    );
                }
                while let Some(event) = relay.poll_event() {
                    match event {
                        Event::AllocationCreated { port, .. } => {
                            let socket =
                                UdpSocket::bind(SocketAddr::new(unspecified(ip), port)).await?;
                            sockets.insert(port, socket);
                            shared
                                .borrow_mut()
                                .trace(&name, format!("allocation port {port} opened"));
                        }
                        Event::AllocationFreed { port, .. } => {
                            sockets.remove(&port);
                            shared
                                .borrow_mut()
                                .trace(&name, format!("allocation port {port} closed"));
                        }
                        _ => {}
                    }
                }
                let deadline = relay
                    .poll_timeout()
                    .map(|deadline| deadline_ms(origin, deadline));
                end_turn(&shared, &name, deadline).await;
            }
        }
    });
}

/// Sends from the socket on `src`'s port; a relay must never address itself.
fn send(
    sockets: &BTreeMap<u16, UdpSocket>,
    shared: &Rc<RefCell<Shared>>,
    name: &str,
    src: SocketAddr,
    dst: SocketAddr,
    bytes: &[u8],
    kind: &str,
) {
    let mut shared = shared.borrow_mut();
    if src.ip() == dst.ip() {
        shared.errors.push(format!(
            "{name} tried to send a datagram to itself: {src} -> {dst}"
        ));
        return;
    }
    let Some(socket) = sockets.get(&src.port()) else {
        shared.errors.push(format!(
            "{name} has no socket on {src} for a datagram to {dst}"
        ));
        return;
    };
    shared.trace(
        name,
        format!("{kind} {src} -> {dst} ({} bytes)", bytes.len()),
    );
    if let Err(error) = socket.try_send_to(bytes, dst) {
        shared
            .errors
            .push(format!("{name}: send {src} -> {dst} failed: {error}"));
    }
}
