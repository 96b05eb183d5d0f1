//! The random control plane and traffic: client operations between packets, and datagrams to
//! the relay drawn against its current state.

use std::{net::SocketAddr, time::Duration};

use proto::channel_data::CHANNEL_RANGE;
use turn_client::TurnTransmit;
use xdp_fixtures::frame;

use crate::packet::{Framing, Packet, channel_data, is_relay_ip, turn_server_of};
use crate::rng::Rng;
use crate::support::{CLIENTS, Op, PEERS, PeerRef, World, addr, relay_addr};

/// A random client operation (the control plane between packets).
pub(crate) fn random_op(rng: &mut Rng) -> Op {
    let client = rng.below(CLIENTS.len());
    let peer = if rng.percent(70) {
        PeerRef::External(rng.below(PEERS.len()))
    } else {
        PeerRef::Relayed {
            client: rng.below(CLIENTS.len()),
            v6: rng.bool(),
        }
    };
    match rng.weighted(&[2, 4, 3, 1, 1, 1, 2]) {
        0 => Op::Allocate(client),
        1 => Op::Bind { client, peer },
        2 => Op::BindPair {
            a: client,
            b: rng.below(CLIENTS.len()),
            v6: rng.bool(),
        },
        3 => Op::Permit { client, peer },
        4 => Op::Release(client),
        5 => Op::TogglePartition(client),
        _ => {
            let seconds = match rng.below(8) {
                0 => 1,
                1 => 59,
                2 => 240,
                3 => 299,
                4 => 300,
                5 => 301,
                6 => 600,
                _ => rng.range(0, 900),
            };
            Op::Wait(Duration::from_secs(seconds as u64))
        }
    }
}

/// A random datagram to the relay, drawn against the relay's current state.
pub(crate) fn random_packet(rng: &mut Rng, world: &mut World) -> Packet {
    let current = world.relay.channel_bindings();
    let removed = removed_bindings(world, &current);
    let data = {
        let len = rng.data_len();
        rng.bytes(len)
    };
    let framing = random_framing(rng);
    match rng.weighted(&[36, 9, 24, 5, 9, 6, 5, 6]) {
        0 if !current.is_empty() => on_active_channel(rng, world, &current, framing, data),
        // ChannelData on a channel whose binding was removed.
        1 if !removed.is_empty() => {
            let binding = rng.pick(&removed).expect("not empty");
            on_channel("chan/removed-binding", binding, &data, &[], framing)
        }
        2 if !current.is_empty() => from_peer_of_active_channel(rng, &current, framing, data),
        // A peer of a removed channel sends to its old allocation.
        3 if !removed.is_empty() => {
            let binding = rng.pick(&removed).expect("not empty");
            from_peer("peer/removed-binding", binding, data, framing)
        }
        4 => from_external_peer(rng, world, framing, data),
        5 => on_unbound_channel(rng, &current, framing, data),
        6 => stun_from_client(rng, world, framing, data),
        7 => junk(rng, framing, data),
        // A kind whose state is missing (no binding yet): the client's Binding request.
        _ => binding_request(random_client(rng), framing),
    }
}

/// The bindings the relay had at some point and has no longer.
fn removed_bindings(
    world: &World,
    current: &[relay::ChannelBinding],
) -> Vec<relay::ChannelBinding> {
    world
        .ever_bound
        .iter()
        .filter(|binding| !current.contains(binding))
        .copied()
        .collect()
}

fn random_framing(rng: &mut Rng) -> Framing {
    match rng.weighted(&[82, 7, 5, 3, 3]) {
        0 => Framing::Plain {
            tos: if rng.percent(70) {
                0
            } else {
                rng.below(256) as u8
            },
            ttl: rng.range(1, 255) as u8,
        },
        1 => Framing::ZeroChecksum,
        2 => Framing::Trailer,
        3 => Framing::Options,
        _ => Framing::Fragment,
    }
}

fn random_client(rng: &mut Rng) -> SocketAddr {
    addr(CLIENTS[rng.below(CLIENTS.len())].0)
}

fn random_peer(rng: &mut Rng) -> SocketAddr {
    addr(PEERS[rng.below(PEERS.len())])
}

/// ChannelData from the client of `binding` on its channel.
fn on_channel(
    kind: &'static str,
    binding: relay::ChannelBinding,
    data: &[u8],
    padding: &[u8],
    framing: Framing,
) -> Packet {
    Packet::new(
        kind,
        binding.client,
        turn_server_of(binding.client),
        channel_data(binding.channel, data, padding),
        framing,
    )
}

/// `data` from the peer of `binding` to its allocation.
fn from_peer(
    kind: &'static str,
    binding: relay::ChannelBinding,
    data: Vec<u8>,
    framing: Framing,
) -> Packet {
    Packet::new(
        kind,
        binding.peer,
        relay_addr(binding.peer.ip(), binding.allocation_port),
        data,
        framing,
    )
}

fn binding_request(client: SocketAddr, framing: Framing) -> Packet {
    Packet::new(
        "stun/binding-request",
        client,
        turn_server_of(client),
        frame::stun_binding_request(),
        framing,
    )
}

/// ChannelData on an active channel: exact, padded, with a length field or padding that does
/// not fit, or what the TURN client itself sends.
fn on_active_channel(
    rng: &mut Rng,
    world: &mut World,
    current: &[relay::ChannelBinding],
    framing: Framing,
    data: Vec<u8>,
) -> Packet {
    let binding = rng.pick(current).expect("not empty");
    let aligned = (4 - data.len() % 4) % 4;
    match rng.weighted(&[40, 20, 15, 8, 7, 10]) {
        0 => on_channel("chan/exact", binding, &data, &[], framing),
        1 => {
            let pad = rng.bytes(aligned);
            on_channel("chan/padded-to-4", binding, &data, &pad, framing)
        }
        2 => {
            let len = rng.range(1, 3);
            let pad = rng.bytes(len);
            on_channel("chan/padded-1-3", binding, &data, &pad, framing)
        }
        3 => {
            let mut payload = channel_data(binding.channel, &data, &[]);
            let declared = data.len() + rng.range(1, 8);
            payload[2..4].copy_from_slice(&(declared as u16).to_be_bytes());
            let (from, to) = (binding.client, turn_server_of(binding.client));
            Packet::new("chan/length-too-long", from, to, payload, framing)
        }
        4 => {
            let len = rng.range(4, 7);
            let pad = rng.bytes(len);
            on_channel("chan/excess-padding", binding, &data, &pad, framing)
        }
        _ => {
            // What the client itself sends to that peer (ChannelData on a channel it
            // believes live, or a Send indication).
            let index = world
                .clients
                .iter()
                .position(|client| client.addr == binding.client)
                .expect("bindings belong to clients");
            match what_the_client_sends(world, index, binding.peer, &data) {
                Some(transmit) => Packet::new(
                    "chan/turn-client",
                    binding.client,
                    transmit.dst,
                    transmit.payload,
                    framing,
                ),
                None => on_channel("chan/exact", binding, &data, &[], framing),
            }
        }
    }
}

/// What TURN client `index` sends for `data` to `peer` (ChannelData or a Send indication), if
/// it can send it.
fn what_the_client_sends(
    world: &mut World,
    index: usize,
    peer: SocketAddr,
    data: &[u8],
) -> Option<TurnTransmit> {
    let now = world.now;
    world.clients[index].turn.send_to(peer, data, now).ok()
}

/// A peer of an active channel sends to the allocation.
fn from_peer_of_active_channel(
    rng: &mut Rng,
    current: &[relay::ChannelBinding],
    framing: Framing,
    data: Vec<u8>,
) -> Packet {
    let binding = rng.pick(current).expect("not empty");
    if !is_relay_ip(binding.peer.ip()) {
        from_peer("peer/bound", binding, data, framing)
    } else if rng.percent(25) {
        // On the wire, only a spoofer sends "from" the relay's own address.
        from_peer("peer/spoofed-relay-source", binding, data, framing)
    } else {
        // Relay-to-self is driven by the client on the other side.
        on_channel("chan/exact", binding, &data, &[], framing)
    }
}

/// An external peer sends to some client's allocation (bound, permitted only, or neither), or
/// to an unused allocation port.
fn from_external_peer(rng: &mut Rng, world: &World, framing: Framing, data: Vec<u8>) -> Packet {
    let peer = random_peer(rng);
    let client = rng.below(CLIENTS.len());
    match world.relayed(client, peer.is_ipv6()) {
        Some(relayed) if rng.percent(85) => Packet::new("peer/any", peer, relayed, data, framing),
        _ => {
            let port = rng.range(49152, 65535) as u16;
            let to = relay_addr(peer.ip(), port);
            Packet::new("peer/any-port", peer, to, data, framing)
        }
    }
}

/// ChannelData on a channel number nobody bound, or from a stranger.
fn on_unbound_channel(
    rng: &mut Rng,
    current: &[relay::ChannelBinding],
    framing: Framing,
    data: Vec<u8>,
) -> Packet {
    let client = random_client(rng);
    let channel = rng.range(
        usize::from(*CHANNEL_RANGE.start()),
        usize::from(*CHANNEL_RANGE.end()),
    ) as u16;
    let (kind, from, channel) = if rng.bool() {
        ("chan/random-number", client, channel)
    } else {
        let stranger = if client.is_ipv4() {
            addr("198.51.100.99:40000")
        } else {
            addr("[2001:db8:1::99]:40000")
        };
        let channel = rng.pick(current).map_or(channel, |b| b.channel);
        ("chan/stranger", stranger, channel)
    };
    let payload = channel_data(channel, &data, &[]);
    Packet::new(kind, from, turn_server_of(from), payload, framing)
}

/// STUN from a client: a Binding request, or a Send indication to a permitted peer.
fn stun_from_client(rng: &mut Rng, world: &mut World, framing: Framing, data: Vec<u8>) -> Packet {
    let index = rng.below(CLIENTS.len());
    let client = world.clients[index].addr;
    let peer = random_peer(rng);
    match what_the_client_sends(world, index, peer, &data) {
        Some(transmit) if rng.bool() => Packet::new(
            "stun/send-or-channel",
            client,
            transmit.dst,
            transmit.payload,
            framing,
        ),
        _ => binding_request(client, framing),
    }
}

/// Junk: random bytes, out-of-range channel numbers, short headers, other ports.
fn junk(rng: &mut Rng, framing: Framing, data: Vec<u8>) -> Packet {
    let from = if rng.bool() {
        random_client(rng)
    } else {
        random_peer(rng)
    };
    let port = match rng.below(4) {
        0 | 1 => relay::TURN_PORT,
        2 => rng.range(49152, 65535) as u16,
        _ => rng.range(1, 49151) as u16,
    };
    let payload = match rng.below(4) {
        0 => {
            let len = rng.range(0, 64);
            rng.bytes(len)
        }
        1 => channel_data(
            rng.range(usize::from(*CHANNEL_RANGE.end()) + 1, 0xFFFF) as u16,
            &data,
            &[],
        ),
        2 => {
            let mut short = vec![0x40 + rng.below(64) as u8];
            let len = rng.range(0, 2);
            short.extend(rng.bytes(len));
            short
        }
        _ => data,
    };
    Packet::new("junk", from, relay_addr(from.ip(), port), payload, framing)
}
