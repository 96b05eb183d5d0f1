//! A host's endpoint on its simulated socket: datagrams out and in through its TURN client
//! (or directly), with every hop recorded and every refusal traced.

use std::{
    cell::RefCell,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    rc::Rc,
    time::{Duration, Instant},
};

use crate::{clock::now_instant, state::Shared, wire};

/// The wildcard address of `ip`'s family, for binding.
pub(crate) fn unspecified(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// Sends what a host's TURN client queued, traces its events, and publishes its relayed
/// addresses for the runner.
pub(crate) fn flush_turn(
    endpoint: &mut turn_client::Endpoint,
    socket: &turmoil::net::UdpSocket,
    shared: &Rc<RefCell<Shared>>,
    name: &str,
) {
    let local = endpoint.socket();
    let Some(turn) = endpoint.turn_mut() else {
        return;
    };
    while let Some(transmit) = turn.poll_transmit() {
        wire::send(socket, shared, name, local, transmit.dst, &transmit.payload);
    }
    let mut shared = shared.borrow_mut();
    while let Some(event) = turn.poll_event() {
        shared.journal.trace(name, format!("TURN: {event:?}"));
    }
    // Remember the transactions' deadlines past the moment they fire (for a second): the
    // pending ones, and those that came while they were pending. A deadline still ahead whose
    // transaction ended (answered) will never fire, and goes.
    let now = now_instant(shared.origin);
    let pending = turn.transaction_deadlines();
    let deadlines = shared
        .transaction_deadlines
        .entry(name.to_owned())
        .or_default();
    deadlines.retain(|deadline| {
        (*deadline <= now && *deadline + Duration::from_secs(1) >= now)
            || pending.contains(deadline)
    });
    deadlines.extend(pending);
    let addresses = turn.relayed_addresses().to_vec();
    let first = shared.relayed.first.entry(name.to_owned()).or_default();
    if first.is_empty() {
        first.clone_from(&addresses);
    }
    shared.relayed.current.insert(name.to_owned(), addresses);
}

/// Takes a datagram through the host's endpoint: tunnel data (directly, or out of its relay's
/// ChannelData or Data indication), or `None` for what the endpoint keeps (TURN responses) or
/// refuses (a late duplicate of a TURN response after a held link released, say: nothing
/// changes, the trace says why).
pub(crate) fn receive_through<'p>(
    endpoint: &mut turn_client::Endpoint,
    shared: &Rc<RefCell<Shared>>,
    name: &str,
    from: SocketAddr,
    payload: &'p [u8],
    now: Instant,
) -> Option<turn_client::Arrival<'p>> {
    if let Some(turn) = endpoint.turn()
        && from == turn.server()
    {
        note_transaction_boundary(&mut shared.borrow_mut(), name, turn, now);
    }
    match endpoint.receive(from, payload, now) {
        Ok(arrival) => arrival,
        Err(error) => {
            shared
                .borrow_mut()
                .journal
                .trace(name, format!("ignored a datagram from {from}: {error}"));
            None
        }
    }
}

/// The timer of a TURN client's transactions, in the coverage grid.
pub const CLIENT_TRANSACTION: &str = "turn client retransmission";

/// Counts a datagram from the relay that reaches a TURN client 1 ms before one of its
/// transactions' deadlines (a retransmission or the give-up), on it, or 1 ms after: one that is
/// still ahead, or one the host saw before (`flush_turn` keeps them).
fn note_transaction_boundary(
    shared: &mut Shared,
    name: &str,
    turn: &turn_client::TurnClient,
    now: Instant,
) {
    let seen = shared.transaction_deadlines.get(name);
    let deadlines = turn
        .transaction_deadlines()
        .into_iter()
        .chain(seen.into_iter().flatten().copied());
    let slot = deadlines
        .filter_map(|deadline| {
            let early = deadline.saturating_duration_since(now).as_millis();
            let late = now.saturating_duration_since(deadline).as_millis();
            match (early, late) {
                (1, 0) => Some(0),
                (0, 0) => Some(1),
                (0, 1) => Some(2),
                _ => None,
            }
        })
        .min();
    if let Some(slot) = slot {
        let counts = shared
            .journal
            .turn_timer_boundaries
            .entry(CLIENT_TRANSACTION);
        counts.or_default()[slot] += 1;
    }
}

/// Sends `payload` to `remote` the way the host's endpoint routes it (directly or as
/// ChannelData through its relay).
pub(crate) fn send_through(
    endpoint: &mut turn_client::Endpoint,
    socket: &turmoil::net::UdpSocket,
    shared: &Rc<RefCell<Shared>>,
    name: &str,
    remote: SocketAddr,
    payload: &[u8],
    what: &str,
) {
    let now = now_instant(shared.borrow().origin);
    match endpoint.send(remote, payload, now) {
        Ok(datagram) => {
            shared
                .borrow_mut()
                .journal
                .trace(name, format!("{what} to {remote} via {}", datagram.dst));
            wire::send(
                socket,
                shared,
                name,
                endpoint.socket(),
                datagram.dst,
                &datagram.payload,
            );
        }
        // The endpoint has no way there yet (a channel binding that a fault held up): the
        // host drops the frame, as a real one would. The model calls such cases unpredictable.
        Err(error) => shared.borrow_mut().journal.trace(
            name,
            format!("dropped {what} to {remote}: cannot send: {error}"),
        ),
    }
}
