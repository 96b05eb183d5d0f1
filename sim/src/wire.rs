//! Every datagram on the simulated wire, as the hosts put it there and took it off: the raw
//! material of the routing trace, the pcap and the invariants about addresses.

use std::{cell::RefCell, net::SocketAddr, rc::Rc};

use turmoil::net::UdpSocket;

use crate::world::{Shared, now_ms};

/// Whether a host put a datagram on the wire or took it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    Sent,
    Received,
}

/// What the relay's XDP program did with a datagram the relay received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpNote {
    /// `XDP_TX`, `XDP_PASS`, ...
    pub verdict: String,
    /// The program's reason counter, e.g. `tx-chan-to-udp-v4-v4`.
    pub reason: String,
}

/// One datagram at one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub at_ms: u64,
    /// The host that sent or received it.
    pub host: String,
    pub direction: Direction,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
    /// Set on datagrams a relay received while its XDP program ran beside it.
    pub xdp: Option<XdpNote>,
}

/// Sends `payload` from `src` (the address `socket` is bound to on this host) to `dst`, and
/// records it. The faults on the link to `dst` act first: a datagram they take is recorded as
/// sent but never reaches turmoil. A send turmoil refuses is an invariant broken.
pub(crate) fn send(
    socket: &UdpSocket,
    shared: &Rc<RefCell<Shared>>,
    host: &str,
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
) {
    let mut shared = shared.borrow_mut();
    shared.hops.push(Hop {
        at_ms: now_ms(),
        host: host.to_owned(),
        direction: Direction::Sent,
        src,
        dst,
        payload: payload.to_vec(),
        xdp: None,
    });
    if shared.link_takes(host, dst.ip(), payload) {
        return;
    }
    if let Err(error) = socket.try_send_to(payload, dst) {
        shared
            .errors
            .push(format!("{host}: send {src} -> {dst} failed: {error}"));
    }
}

/// Records a datagram a host took off its socket.
pub(crate) fn received(
    shared: &Rc<RefCell<Shared>>,
    host: &str,
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
    xdp: Option<XdpNote>,
) {
    shared.borrow_mut().hops.push(Hop {
        at_ms: now_ms(),
        host: host.to_owned(),
        direction: Direction::Received,
        src,
        dst,
        payload: payload.to_vec(),
        xdp,
    });
}
