//! The resource responder behind a gateway's TUN side, and the 1 ms TUN link between them. It
//! echoes UDP and answers TCP as docs/harness.md scripts it, and acts when the runner says so
//! (data, close, reset on a connection).

use std::{cell::RefCell, collections::BTreeMap, net::SocketAddr, rc::Rc};

use observation::{Packet, Receiver};
use scenario_format::timing::TUN_LATENCY_MS;

use crate::{
    clock::now_ms,
    commands::ResourceAction,
    packets::{self, Inner},
    state::Shared,
    tcp::TcpSide,
};

/// The responder and the packets on its TUN link.
#[derive(Debug)]
pub(crate) struct ResourceSide {
    /// The trace's name for the TUN side: `<gateway>/tun`.
    name: String,
    gateway: usize,
    /// Packets on the TUN link: (due ms, sequence) -> (towards the resource?, packet).
    link: BTreeMap<(u64, u64), (bool, Vec<u8>)>,
    sequence: u64,
    /// The resource side of each TCP connection, by the client's inner address.
    tcp: BTreeMap<SocketAddr, Connection>,
}

/// The resource's side of one TCP connection.
#[derive(Debug)]
struct Connection {
    /// The resource's address on it.
    resource: SocketAddr,
    side: TcpSide,
    /// Its SYN arrived: only then does the resource act on it (a segment without a SYN
    /// before it is answered, but opens nothing).
    syn_seen: bool,
}

impl ResourceSide {
    pub(crate) fn new(gateway_name: &str, gateway: usize) -> Self {
        Self {
            name: format!("{gateway_name}/tun"),
            gateway,
            link: BTreeMap::new(),
            sequence: 0,
            tcp: BTreeMap::new(),
        }
    }

    /// Puts a packet on the TUN link now: it arrives [`TUN_LATENCY_MS`] later.
    pub(crate) fn send(&mut self, towards_resource: bool, packet: Vec<u8>, at_ms: u64) {
        self.sequence += 1;
        self.link.insert(
            (at_ms + TUN_LATENCY_MS, self.sequence),
            (towards_resource, packet),
        );
    }

    /// The packets due off the link by `now_ms`, in order: (towards the resource?, packet).
    pub(crate) fn due(&mut self, now_ms: u64) -> Vec<(bool, Vec<u8>)> {
        let later = self.link.split_off(&(now_ms + 1, 0));
        std::mem::replace(&mut self.link, later)
            .into_values()
            .collect()
    }

    /// When the next packet is due off the link.
    pub(crate) fn next_due(&self) -> Option<u64> {
        self.link.keys().next().map(|(due, _)| *due)
    }

    /// The resource acts on the connection from `client`.
    pub(crate) fn acts(
        &mut self,
        client: SocketAddr,
        action: ResourceAction,
        shared: &Rc<RefCell<Shared>>,
    ) {
        if let ResourceAction::Forget = action {
            self.tcp.remove(&client);
            return;
        }
        // A connection whose SYN never reached the resource (dropped, denied) has no resource
        // side: the resource has nothing to send on it.
        let Some(Connection {
            resource,
            side,
            syn_seen: true,
        }) = self.tcp.get_mut(&client)
        else {
            shared.borrow_mut().journal.trace(
                &self.name,
                format!("resource has no connection from {client}"),
            );
            return;
        };
        let segment = match action {
            ResourceAction::Data(bytes) => side.data(bytes),
            ResourceAction::Close => side.fin(),
            ResourceAction::Reset => side.rst(),
            ResourceAction::KeepOpen => {
                side.keep_open();
                return;
            }
            ResourceAction::Forget => return,
        };
        let packet = packets::tcp(*resource, client, segment, 0x5A);
        self.send(false, packet, now_ms());
    }

    /// The resource's script: echo UDP, answer TCP as docs/harness.md says.
    pub(crate) fn receives(&mut self, packet: &[u8], shared: &Rc<RefCell<Shared>>) {
        {
            let observed = Packet::parse(packet);
            let mut shared = shared.borrow_mut();
            shared
                .journal
                .trace(&self.name, format!("resource got {observed}"));
            let to = Receiver::Resource {
                gateway: self.gateway as u32,
            };
            shared.journal.delivered(to, packet);
        }
        let reply = match packets::parse(packet) {
            Inner::Udp { src, dst, payload } => Some(packets::udp(dst, src, &payload)),
            Inner::Tcp { src, dst, segment } => {
                let connection = self.tcp.entry(src).or_insert_with(|| Connection {
                    resource: dst,
                    side: TcpSide::resource(),
                    syn_seen: false,
                });
                // A SYN opens the connection afresh, unless its handshake is complete: then it
                // gets a challenge ACK from the side as it is (docs/harness.md).
                if segment.flags.syn && !segment.flags.ack && !connection.side.is_established() {
                    connection.side = TcpSide::resource();
                    connection.syn_seen = true;
                }
                connection
                    .side
                    .answer(segment)
                    .map(|answer| packets::tcp(dst, src, answer, 0x5A))
            }
            _ => None,
        };
        if let Some(reply) = reply {
            self.send(false, reply, now_ms());
        }
    }
}
