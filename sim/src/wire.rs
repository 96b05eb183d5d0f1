//! Every datagram on the simulated wire, as the hosts put it there and took it off: the raw
//! material of the routing trace, the pcap and the invariants about addresses.

use std::{cell::RefCell, net::SocketAddr, rc::Rc};

use observation::Packet;
pub use observation::{Direction, Hop, XdpNote};
use proto::{
    channel_data::{self, ChannelData},
    stun::{self, Attribute, MessageClass},
    tunnel,
};
use scenario_format::plan::{self, AddressPlan};
use turmoil::net::UdpSocket;

use crate::{clock::now_ms, state::Shared};

/// The client whose session a tunnel frame belongs to, and the inner packet, if the frame's MAC
/// verifies under that client's session key (the simulation's sessions are deterministic, see
/// [`AddressPlan::session`]). Frames of both directions open.
pub fn open_tunnel_frame(frame: &[u8]) -> Option<(usize, &[u8])> {
    let header = tunnel::peek_header(frame).ok()?;
    let client = AddressPlan::client_of_session(header.session_id)?;
    let key = session_key(client);
    let (_, inner) = tunnel::open(&key, tunnel::Direction::ToGateway, frame)
        .or_else(|_| tunnel::open(&key, tunnel::Direction::ToClient, frame))
        .ok()?;
    Some((client, inner))
}

/// Whether a datagram is a CreatePermission or ChannelBind request (RFC 8656 §16: methods
/// 0x008 and 0x009, class request).
pub fn is_binding_request(payload: &[u8]) -> bool {
    payload.len() >= 20
        && matches!(
            u16::from_be_bytes([payload[0], payload[1]]),
            0x0008 | 0x0009
        )
}

/// Client `client`'s session key, as its gateways know it.
pub fn session_key(client: usize) -> tunnel::SessionKey {
    tunnel::SessionKey::new(AddressPlan::session(client).key)
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
    // The DNS server's traffic is DNS; the internet host and the attacker send what is not
    // well-formed TURN on purpose.
    let checked = ![crate::internet_host::NAME, crate::attacker_host::NAME].contains(&host)
        && ![src, dst]
            .iter()
            .any(|end| plan::dns_server(end.ip()) == *end);
    if checked && let Err(wrong) = observation::check_datagram(payload) {
        shared.journal.errors.push(format!(
            "{} ms: {host} sent {src} -> {dst} a datagram that fails the byte check: {wrong}",
            now_ms()
        ));
    }
    shared.journal.hops.push(Hop {
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
            .journal
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
    shared.borrow_mut().journal.hops.push(Hop {
        at_ms: now_ms(),
        host: host.to_owned(),
        direction: Direction::Received,
        src,
        dst,
        payload: payload.to_vec(),
        xdp,
    });
}

/// The tunnel frame a datagram carries: the datagram itself, or the data of a ChannelData
/// message or of a TURN Send or Data indication.
pub(crate) fn tunnel_frame_in(datagram: &[u8]) -> Option<Vec<u8>> {
    if tunnel::is_tunnel_frame(datagram) {
        return Some(datagram.to_vec());
    }
    if channel_data::looks_like_channel_data(datagram) {
        let message = ChannelData::parse(datagram).ok()?;
        return tunnel::is_tunnel_frame(message.data).then(|| message.data.to_vec());
    }
    if stun::looks_like_stun(datagram) {
        let message = stun::decode(datagram).ok()?;
        if message.class() != MessageClass::Indication {
            return None;
        }
        return message.attributes().find_map(|attribute| match attribute {
            Attribute::Data(data) if tunnel::is_tunnel_frame(data.data()) => {
                Some(data.data().to_vec())
            }
            _ => None,
        });
    }
    None
}

/// The inner packet of a tunnel frame a datagram carries, if it carries one.
pub fn tunnel_packet_in(datagram: &[u8]) -> Option<Packet> {
    let frame = tunnel_frame_in(datagram)?;
    let (_, inner) = open_tunnel_frame(&frame)?;
    Some(Packet::parse(inner))
}

/// Sends a datagram of the attacker's with its forged source, from `socket` of the host that
/// owns that address, and registers it so that its receiver hands the verdict to the attacker.
pub(crate) fn send_spoofed(
    socket: &UdpSocket,
    shared: &Rc<RefCell<Shared>>,
    order: crate::state::Spoofed,
) {
    shared.borrow_mut().journal.trace(
        crate::attacker_host::NAME,
        format!(
            "{} bytes to {} spoofed from {}",
            order.payload.len(),
            order.to,
            order.from
        ),
    );
    send(
        socket,
        shared,
        crate::attacker_host::NAME,
        order.from,
        order.to,
        &order.payload,
    );
    shared.borrow_mut().spoofed.push(order);
}
