//! The targets, and the checks that every call into a relay or a gateway must pass, whatever
//! the target.

pub mod channel_data;
pub mod dns_answer;
pub mod ip_packet;
pub mod state_machines;
pub mod stun_message;
pub mod tunnel_frame;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use gateway::{DropReason, DroppedPacket, Event as GatewayEvent, Gateway, Transmit as GwTransmit};
use proto::flow::ClientId;
use relay::{Drop, Relay, Transmit};

/// What one datagram did to a relay: its result (the relayed datagram copied out) and the
/// control datagrams it queued.
#[derive(Debug)]
pub struct RelayOutcome {
    pub result: Result<Option<Transmit>, Drop>,
    pub transmits: Vec<Transmit>,
}

/// Feeds one datagram to `relay` and checks the accounting every datagram must satisfy: a drop
/// moves exactly its own counter by one, an accepted datagram moves none and yields a relayed
/// datagram or at least one queued datagram (a reply, a Data indication, a datagram to a peer);
/// nothing is sent from an address that is not the relay's or to one of the relay's own IPs.
pub fn relay_input(
    relay: &mut Relay,
    from: SocketAddr,
    to: SocketAddr,
    payload: &[u8],
    now: Instant,
) -> RelayOutcome {
    let before: BTreeMap<Drop, u64> = relay.drop_counts().clone();
    let result = relay
        .handle_input(from, to, payload, now)
        .map(|relayed| relayed.map(|r| r.to_transmit()));
    let transmits: Vec<Transmit> = std::iter::from_fn(|| relay.poll_transmit()).collect();
    let after = relay.drop_counts();
    let moved: Vec<(Drop, u64)> = after
        .iter()
        .map(|(&reason, &count)| (reason, count - before.get(&reason).copied().unwrap_or(0)))
        .filter(|&(_, delta)| delta != 0)
        .collect();
    match &result {
        Err(reason) => assert_eq!(
            moved,
            vec![(*reason, 1)],
            "a dropped datagram moves its own counter by one, and no other"
        ),
        Ok(relayed) => {
            assert!(
                moved.is_empty(),
                "an accepted datagram counts no drop: {moved:?}"
            );
            assert!(
                relayed.is_some() || !transmits.is_empty(),
                "an accepted datagram ({} bytes from {from} to {to}) produced nothing",
                payload.len()
            );
        }
    }
    for out in result.iter().flatten().chain(&transmits) {
        assert!(
            relay.is_own_ip(out.src.ip()),
            "sent from {} which is not the relay's",
            out.src
        );
        assert!(
            !relay.is_own_ip(out.dst.ip()),
            "sent to the relay's own address {}",
            out.dst
        );
        assert_eq!(
            out.src.is_ipv4(),
            out.dst.is_ipv4(),
            "{} -> {} mixes families",
            out.src,
            out.dst
        );
    }
    RelayOutcome { result, transmits }
}

/// One drop event, as the checks keep it.
pub type GatewayDrop = (DropReason, Option<ClientId>, DroppedPacket);

/// What one call did to a gateway: its result, its drop events, its other events and its
/// transmits, all drained.
#[derive(Debug)]
pub struct GatewayOutcome {
    pub result: Result<(), DropReason>,
    pub drops: Vec<GatewayDrop>,
    pub events: Vec<GatewayEvent>,
    pub transmits: Vec<GwTransmit>,
}

/// Runs one call into `gateway` and checks its drop accounting: every increment of a drop
/// counter comes with exactly one `PacketDropped` event with that reason and no event comes
/// without one; a refused input's own drop is the last event. Also checks that the next
/// deadline is not before `now`.
pub fn gateway_call(
    gateway: &mut Gateway,
    now: Instant,
    call: impl FnOnce(&mut Gateway) -> Result<(), DropReason>,
) -> GatewayOutcome {
    let before = gateway.drop_counters().clone();
    let result = call(gateway);
    let mut drops = Vec::new();
    let mut events = Vec::new();
    while let Some(event) = gateway.poll_event() {
        match event {
            GatewayEvent::PacketDropped {
                reason,
                client,
                packet,
            } => drops.push((reason, client, packet)),
            other => events.push(other),
        }
    }
    for reason in DropReason::ALL {
        let moved = gateway.drop_counters().get(*reason) - before.get(*reason);
        let reported = drops.iter().filter(|d| d.0 == *reason).count() as u64;
        assert_eq!(moved, reported, "{reason}: counter delta vs drop events");
    }
    if let Err(reason) = result {
        assert_eq!(
            drops.last().map(|d| d.0),
            Some(reason),
            "the refused input's own drop is the last event"
        );
    }
    if let Some(deadline) = gateway.poll_timeout() {
        assert!(
            deadline >= now,
            "the gateway's next deadline is in the past"
        );
    }
    let transmits = std::iter::from_fn(|| gateway.poll_transmit()).collect();
    GatewayOutcome {
        result,
        drops,
        events,
        transmits,
    }
}

/// The TUN packets among `transmits`.
pub fn tun_packets(transmits: &[GwTransmit]) -> impl Iterator<Item = &[u8]> {
    transmits.iter().filter_map(|t| match t {
        GwTransmit::Tun(packet) => Some(packet.as_slice()),
        GwTransmit::Udp { .. } => None,
    })
}

/// The source and destination addresses of an IP packet (read from the RFC layouts).
pub fn ip_addrs(packet: &[u8]) -> Option<(std::net::IpAddr, std::net::IpAddr)> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => {
            let src: [u8; 4] = packet[12..16].try_into().ok()?;
            let dst: [u8; 4] = packet[16..20].try_into().ok()?;
            Some((src.into(), dst.into()))
        }
        6 if packet.len() >= 40 => {
            let src: [u8; 16] = packet[8..24].try_into().ok()?;
            let dst: [u8; 16] = packet[24..40].try_into().ok()?;
            Some((src.into(), dst.into()))
        }
        _ => None,
    }
}
