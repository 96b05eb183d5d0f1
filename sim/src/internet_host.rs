//! The internet host: a host on no TURN path that sends relays the datagrams of `stray` steps
//! (`scenario_format::stray`), one turmoil host per address family. It sends what the runner
//! queues in its inbox at the step's millisecond, and records anything that comes back.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    rc::Rc,
};

use scenario_format::{
    plan::{INTERNET_V4, INTERNET_V6},
    stray::INTERNET_PORT,
};
use turmoil::net::UdpSocket;

use crate::{
    clock::end_turn,
    commands::{Inbox, StraySend},
    endpoint_io::unspecified,
    state::Shared,
    wire,
};

/// The host name in hops and traces.
pub const NAME: &str = "internet";

/// The internet host's source ports: DNS and NTP servers, and one for everything else.
const PORTS: [u16; 3] = [53, 123, INTERNET_PORT];

/// Adds the internet host (both families) to the simulation.
pub(crate) fn add_internet_host(
    sim: &mut turmoil::Sim<'_>,
    shared: &Rc<RefCell<Shared>>,
    inbox: &Inbox<StraySend>,
) {
    for ip in [IpAddr::V4(INTERNET_V4), IpAddr::V6(INTERNET_V6)] {
        let (shared, inbox) = (shared.clone(), inbox.clone());
        sim.host(ip, move || {
            let (shared, inbox) = (shared.clone(), inbox.clone());
            async move { run(ip, shared, inbox).await.map_err(Into::into) }
        });
    }
}

async fn run(
    ip: IpAddr,
    shared: Rc<RefCell<Shared>>,
    inbox: Inbox<StraySend>,
) -> std::io::Result<()> {
    let mut sockets = BTreeMap::new();
    for port in PORTS {
        sockets.insert(
            port,
            UdpSocket::bind(SocketAddr::new(unspecified(ip), port)).await?,
        );
    }
    let turn_name = format!("{NAME}@{ip}");
    let mut buf = vec![0u8; 65536];
    loop {
        for send in inbox.take_where(|send| send.src.ip() == ip) {
            match sockets.get(&send.src.port()) {
                Some(socket) => {
                    wire::send(socket, &shared, NAME, send.src, send.dst, &send.payload);
                }
                None => shared.borrow_mut().journal.errors.push(format!(
                    "{NAME}: no socket on {} for a stray datagram",
                    send.src
                )),
            }
        }
        for (port, socket) in &sockets {
            while let Ok((len, from)) = socket.try_recv_from(&mut buf) {
                let local = SocketAddr::new(ip, *port);
                wire::received(&shared, NAME, from, local, &buf[..len], None);
            }
        }
        end_turn(&shared, &turn_name, None).await;
    }
}
