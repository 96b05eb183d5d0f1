//! Every datagram on the simulated wire, as the hosts put it there and took it off: the raw
//! material of the routing trace, the pcap and the invariants about addresses.

use std::{cell::RefCell, net::SocketAddr, rc::Rc};

use turmoil::net::UdpSocket;

use crate::world::{Shared, now_ms, session_id, session_key};

/// Sim time 0 in Unix seconds (2026-01-01T00:00:00Z): `Hop::at_ms` counts from it.
pub use crate::world::ORIGIN_UNIX_SECS;

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

/// The client whose session a tunnel frame belongs to, and the inner packet, if the frame's MAC
/// verifies under that client's session key (the simulation's keys are deterministic: client
/// `i` has session `1000 + i` and key `[i + 1; 32]`). Frames of both directions open.
pub fn open_tunnel_frame(frame: &[u8]) -> Option<(usize, &[u8])> {
    let header = proto::tunnel::peek_header(frame).ok()?;
    let client = usize::try_from(header.session_id.checked_sub(session_id(0))?).ok()?;
    // Keys exist for clients 0 to 254 only (`[i + 1; 32]`).
    if client >= usize::from(u8::MAX) {
        return None;
    }
    let (_, inner) = proto::tunnel::open(&session_key(client), frame).ok()?;
    Some((client, inner))
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
