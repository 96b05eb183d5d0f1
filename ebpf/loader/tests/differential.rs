//! Differential test: the XDP fast path against the userspace relay, packet by packet.
//!
//! A real `relay::Relay` is driven by real TURN clients (`turn_client::TurnClient`, on IPv4 and IPv6,
//! with IPv4, IPv6 and dual-stack allocations) through random operations: allocations,
//! channels to external peers of both families, relay-to-self pairs (two clients binding
//! channels to each other's relayed addresses), permissions, releases, partitions and waits
//! that let permissions (300 s), channels (600 s) and allocations expire. The relay's events are
//! mirrored into the XDP maps with `XdpRelay::apply` after every operation, and the maps are
//! checked against the relay's table.
//!
//! Between operations, random datagrams arrive at the relay: ChannelData from clients (bound
//! channels, channels whose binding was removed, unbound and out-of-range channel numbers,
//! wrong lengths, padding), UDP from peers to allocation ports (bound, unbound, permitted
//! only, unused ports, spoofed from the relay's own address), STUN from clients, junk; framed
//! with random TOS/TTL, sometimes without a UDP checksum, with an Ethernet trailer, IPv4
//! options, an IPv6 extension header or as a fragment. Each one is framed
//! (Ethernet/IP/UDP, `xdp_fixtures::frame`, source = sender, destination = the relay address it
//! was sent to), run through the XDP program (`BPF_PROG_TEST_RUN`), and its (from, to, payload)
//! fed to the userspace relay at the same instant. Then:
//!
//! - The program never returns XDP_DROP or XDP_ABORTED, and counts exactly one reason, whose
//!   action is the verdict.
//! - **XDP_TX**: the userspace relay relayed the datagram (`Ok(Some(Relayed))`), and the output
//!   frame decoded with etherparse has the relayed source and destination (address and port)
//!   and exactly its bytes (ChannelData header + data, or data) as UDP payload; the reason is
//!   the path that the families and kinds of input and output name; every checksum in the
//!   output is correct, recomputed from scratch (a zero UDP checksum only where the input had
//!   none and both sides are IPv4); MACs are swapped, TTL is 64, TOS is carried over.
//! - **XDP_PASS**: the frame is unchanged, and the userspace relay handles it. If userspace
//!   relays it as data, the pass must have one of the reasons in [`ALLOWED_PASS`], each backed
//!   by a property of the packet that the test knows independently.
//!
//! Deterministic: seeded SplitMix64, fixed seeds. `DIFFERENTIAL_SEEDS=a,b,c` replaces them,
//! `DIFFERENTIAL_PACKETS=n` sets the packets per seed. Every disagreement is collected with the
//! seed, the step and the packet, one example per kind, and reported together at the end.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use proto::rng::SplitMix64;
use relay_xdp::{ReasonCounters, RunOutcome, Verdict, XdpRelay, load_or_skip, reason, relay_table};
use support::{
    CLIENTS, Op, PEERS, PeerRef, World, addr, mirror_and_check, perform, relay_addr,
    world_with_clients,
};
use turn_client::TurnTransmit;
use xdp_fixtures::frame::{self, PEER_MAC, RELAY_MAC, UdpChecksum};

/// Seeds of the default run; each is one world (a fresh relay, fresh maps).
const SEEDS: [u64; 8] = [1, 2, 3, 4, 5, 6, 7, 8];
/// Packets per seed in the default run: 8 x 1,500 = 12,000.
const PACKETS_PER_SEED: usize = 1_500;
/// The floor per run.
const MIN_PACKETS: usize = 10_000;

/// Pass reasons with which XDP may leave to userspace a datagram that userspace relays as
/// data. Each is a deliberate part of the fast path's design, backed by a property of the
/// packet that [`pass_is_allowed`] checks independently of the program:
///
/// - `pass/ipv4-options`, `pass/ipv6-extension-header`, `pass/fragment`: IP framing the fast
///   path does not parse (the kernel reassembles fragments, userspace relays the datagram);
/// - `pass/zero-udp-checksum-to-ipv6`: IPv4 UDP without a checksum whose output would be IPv6,
///   where a checksum is mandatory and the program does not compute one in full;
/// - `pass/dns-reply`: a datagram from port 53 to an allocation port belongs to the host's
///   resolver (the kernel delivers it to the resolver's socket if one is bound to that port);
///   the userspace relay, which does not know about the host's resolver, relays it;
/// - `pass/from-relay-address`: a datagram to an allocation port "from" the relay's own address
///   is spoofed: the relay never puts one on the wire (relay-to-self stays inside), and the
///   kernel drops such martians. The userspace relay, fed it directly, treats it as
///   relay-to-self data.
const ALLOWED_PASS: [u32; 6] = [
    reason::PASS_IPV4_OPTIONS,
    reason::PASS_IPV6_EXTENSION,
    reason::PASS_FRAGMENT,
    reason::PASS_ZERO_CHECKSUM_TO_IPV6,
    reason::PASS_DNS_REPLY,
    reason::PASS_FROM_RELAY_ADDRESS,
];

struct Rng(SplitMix64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n.max(1) as u64) as usize
    }

    /// `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }

    fn bool(&mut self) -> bool {
        self.0.next_u64() & 1 == 1
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        self.0.fill(&mut out);
        out
    }

    /// An index into `weights`, chosen with those weights.
    fn weighted(&mut self, weights: &[usize]) -> usize {
        let mut pick = self.below(weights.iter().sum());
        for (index, &weight) in weights.iter().enumerate() {
            if pick < weight {
                return index;
            }
            pick -= weight;
        }
        weights.len() - 1
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.below(items.len())])
    }

    /// Mostly small, sometimes up to a full 1500-byte MTU, rarely up to ~3,300 bytes (the
    /// largest linear frame BPF_PROG_TEST_RUN takes is about 3,500).
    fn data_len(&mut self) -> usize {
        match self.weighted(&[70, 20, 8, 2]) {
            0 => self.range(0, 64),
            1 => self.range(65, 600),
            2 => self.range(601, 1400),
            _ => self.range(1401, 3300),
        }
    }
}

/// How a datagram is put into a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Ethernet + IP + UDP with a correct checksum, random TOS and TTL.
    Plain { tos: u8, ttl: u8 },
    /// IPv4 with a zero (absent) UDP checksum.
    ZeroChecksum,
    /// Padded with zeros to the 60-byte Ethernet minimum (a no-op for longer frames).
    Trailer,
    /// IPv4 options or an IPv6 hop-by-hop header.
    Options,
    /// IPv4 with more-fragments set, or IPv6 behind a fragment header.
    Fragment,
}

/// One datagram sent to the relay.
#[derive(Debug, Clone)]
struct Packet {
    /// What the generator meant it to be, for hit counts and failure reports.
    kind: &'static str,
    from: SocketAddr,
    to: SocketAddr,
    payload: Vec<u8>,
    framing: Framing,
}

impl Packet {
    /// A datagram in `framing`; an IPv6 one without a UDP checksum (mandatory over IPv6) is
    /// framed plainly instead.
    fn new(
        kind: &'static str,
        from: SocketAddr,
        to: SocketAddr,
        payload: Vec<u8>,
        framing: Framing,
    ) -> Self {
        let framing = if framing == Framing::ZeroChecksum && from.is_ipv6() {
            Framing::Plain { tos: 0, ttl: 64 }
        } else {
            framing
        };
        Self {
            kind,
            from,
            to,
            payload,
            framing,
        }
    }

    fn frame(&self) -> Vec<u8> {
        let (from, to, payload) = (self.from, self.to, &self.payload[..]);
        match self.framing {
            Framing::Plain { tos, ttl } => {
                frame::udp_frame(PEER_MAC, RELAY_MAC, from, to, tos, ttl, payload)
            }
            Framing::ZeroChecksum => {
                let mut out = frame::udp(from, to, payload);
                frame::clear_udp_checksum(&mut out);
                out
            }
            Framing::Trailer => frame::ethernet_padded(frame::udp(from, to, payload), 60),
            Framing::Options if from.is_ipv4() => frame::ipv4_with_options(from, to, payload),
            Framing::Options => frame::ipv6_with_hop_by_hop(from, to, payload),
            Framing::Fragment if from.is_ipv4() => {
                let mut out = frame::udp(from, to, payload);
                frame::set_ipv4_more_fragments(&mut out);
                out
            }
            Framing::Fragment => frame::ipv6_fragment(from, to, payload),
        }
    }

    fn tos(&self) -> u8 {
        match self.framing {
            Framing::Plain { tos, .. } => tos,
            _ => 0,
        }
    }

    fn describe(&self) -> String {
        let shown = self.payload.len().min(24);
        format!(
            "{} {} -> {} framing {:?}, {} payload bytes {}{}",
            self.kind,
            self.from,
            self.to,
            self.framing,
            self.payload.len(),
            hex(&self.payload[..shown]),
            if shown < self.payload.len() { ".." } else { "" }
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn channel_data(channel: u16, data: &[u8], padding: &[u8]) -> Vec<u8> {
    frame::channel_data(channel, data, padding)
}

/// A random client operation (the control plane between packets).
fn random_op(rng: &mut Rng) -> Op {
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

fn is_relay_ip(ip: IpAddr) -> bool {
    ip == IpAddr::from(xdp_fixtures::world::RELAY_V4)
        || ip == IpAddr::from(xdp_fixtures::world::RELAY_V6)
}

/// A random datagram to the relay, drawn against the relay's current state.
fn random_packet(rng: &mut Rng, world: &mut World) -> Packet {
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

/// The relay's TURN address of `client`'s family.
fn turn_server_of(client: SocketAddr) -> SocketAddr {
    relay_addr(client.ip(), relay::TURN_PORT)
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
    let channel = rng.range(0x4000, 0x4FFF) as u16;
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
        1 => channel_data(rng.range(0x5000, 0xFFFF) as u16, &data, &[]),
        2 => {
            let mut short = vec![0x40 + rng.below(16) as u8];
            let len = rng.range(0, 2);
            short.extend(rng.bytes(len));
            short
        }
        _ => data,
    };
    Packet::new("junk", from, relay_addr(from.ip(), port), payload, framing)
}

/// What a datagram came out as (XDP_TX), decoded with etherparse.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    src: SocketAddr,
    dst: SocketAddr,
    payload: Vec<u8>,
}

impl Decoded {
    fn describe(&self) -> String {
        format!(
            "{} -> {} {} bytes {}",
            self.src,
            self.dst,
            self.payload.len(),
            hex(&self.payload[..self.payload.len().min(24)])
        )
    }
}

/// A rewritten frame: the datagram, and the header fields the program sets.
struct Output {
    datagram: Decoded,
    tos: u8,
    ttl: u8,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
}

fn decode(frame_out: &[u8]) -> Result<Output, String> {
    let packet =
        SlicedPacket::from_ethernet(frame_out).map_err(|error| format!("unparsable: {error}"))?;
    let Some(etherparse::LinkSlice::Ethernet2(ethernet)) = &packet.link else {
        return Err("no Ethernet header".to_owned());
    };
    let (src_mac, dst_mac) = (ethernet.source(), ethernet.destination());
    let (src_ip, dst_ip, tos, ttl): (IpAddr, IpAddr, u8, u8) = match &packet.net {
        Some(NetSlice::Ipv4(ipv4)) => {
            let header = ipv4.header();
            (
                header.source_addr().into(),
                header.destination_addr().into(),
                (header.dcp().value() << 2) | header.ecn().value(),
                header.ttl(),
            )
        }
        Some(NetSlice::Ipv6(ipv6)) => {
            let header = ipv6.header();
            (
                header.source_addr().into(),
                header.destination_addr().into(),
                header.traffic_class(),
                header.hop_limit(),
            )
        }
        _ => return Err("not IPv4 or IPv6".to_owned()),
    };
    let Some(TransportSlice::Udp(udp)) = &packet.transport else {
        return Err("not UDP".to_owned());
    };
    Ok(Output {
        datagram: Decoded {
            src: SocketAddr::new(src_ip, udp.source_port()),
            dst: SocketAddr::new(dst_ip, udp.destination_port()),
            payload: udp.payload().to_vec(),
        },
        tos,
        ttl,
        src_mac,
        dst_mac,
    })
}

/// The TX reason the program must count for a datagram that userspace relays as `relayed`.
fn expected_tx_reason(packet: &Packet, relayed: &Decoded, channel_out: bool) -> u32 {
    let base = match (packet.to.port() == relay::TURN_PORT, channel_out) {
        (true, false) => reason::TX_CHAN_TO_UDP_BASE,
        (true, true) => reason::TX_CHAN_TO_CHAN_BASE,
        (false, _) => reason::TX_UDP_TO_CHAN_BASE,
    };
    base + if packet.from.is_ipv6() { 2 } else { 0 } + if relayed.dst.is_ipv6() { 1 } else { 0 }
}

/// Whether XDP may pass, with reason `why`, a datagram that userspace relays as data that
/// leaves to `relayed_dst`: `why` is in [`ALLOWED_PASS`] and the packet has the property that
/// the reason names.
fn pass_is_allowed(why: u32, packet: &Packet, relayed_dst: SocketAddr) -> bool {
    ALLOWED_PASS.contains(&why)
        && match why {
            reason::PASS_IPV4_OPTIONS | reason::PASS_IPV6_EXTENSION => {
                packet.framing == Framing::Options
            }
            reason::PASS_FRAGMENT => packet.framing == Framing::Fragment,
            reason::PASS_ZERO_CHECKSUM_TO_IPV6 => {
                packet.framing == Framing::ZeroChecksum && relayed_dst.is_ipv6()
            }
            reason::PASS_DNS_REPLY => {
                packet.from.port() == 53 && packet.to.port() != relay::TURN_PORT
            }
            reason::PASS_FROM_RELAY_ADDRESS => is_relay_ip(packet.from.ip()),
            _ => false,
        }
}

/// Tallies of one run.
#[derive(Default)]
struct Tally {
    packets: usize,
    /// Client operations performed.
    operations: usize,
    /// The most channel bindings the relay held at once.
    most_bindings: usize,
    /// Runs per XDP reason name.
    reasons: BTreeMap<&'static str, usize>,
    /// (packet kind, XDP reason, userspace outcome) -> count.
    outcomes: BTreeMap<(&'static str, &'static str, String), usize>,
    /// Allowed passes of datagrams userspace relayed, by reason.
    allowed_passes: BTreeMap<&'static str, usize>,
    /// Datagrams on a binding removed earlier: all must pass.
    on_removed_bindings: usize,
    /// Disagreements: one example per kind, and how many.
    failures: BTreeMap<String, (usize, String)>,
}

impl Tally {
    fn fail(&mut self, kind: String, example: String) {
        let entry = self.failures.entry(kind).or_insert((0, example));
        entry.0 += 1;
    }

    /// Counts a run under `name`, the one reason XDP counted for it.
    fn count(&mut self, run: &Run<'_>, name: &'static str) {
        *self.reasons.entry(name).or_default() += 1;
        *self
            .outcomes
            .entry((run.packet.kind, name, run.user.clone()))
            .or_default() += 1;
        if run.packet.kind.ends_with("removed-binding") && run.relayed.is_none() {
            self.on_removed_bindings += 1;
        }
    }
}

/// The userspace relay's outcome, as a short label for the tally.
fn user_label(result: &Result<Option<relay::Relayed<'_>>, relay::Drop>) -> String {
    match result {
        Ok(Some(relayed)) if relayed.channel.is_some() => "relayed/channel-data".to_owned(),
        Ok(Some(_)) => "relayed/udp".to_owned(),
        Ok(None) => "handled (control or Data indication)".to_owned(),
        Err(drop) => format!("dropped: {drop:?}"),
    }
}

/// Runs one packet through both and checks them against each other.
fn check_packet(
    xdp: &XdpRelay,
    world: &mut World,
    counters: &mut ReasonCounters,
    packet: &Packet,
    context: &str,
    tally: &mut Tally,
) {
    let run = run_both(xdp, world, counters, packet, context);
    tally.packets += 1;
    let Some((name, why)) = the_one_reason(&run, tally) else {
        return;
    };
    tally.count(&run, name);
    if run.xdp.verdict != Verdict::from_action(reason::action(why)) {
        tally.fail(
            format!("verdict {} with reason {name}", run.xdp.verdict),
            run.example(""),
        );
    }
    match run.xdp.verdict {
        Verdict::Tx => check_tx(&run, name, why, tally),
        Verdict::Pass => check_pass(&run, name, why, tally),
        other => tally.fail(
            format!("{other} ({name})"),
            run.example("XDP never drops or aborts"),
        ),
    }
}

/// One packet run through both: what XDP did and what the userspace relay did.
struct Run<'a> {
    packet: &'a Packet,
    /// Where the packet was sent, for failure reports.
    context: &'a str,
    frame_in: Vec<u8>,
    xdp: RunOutcome,
    /// The reasons XDP counted, and how often.
    counted: Vec<(&'static str, u64)>,
    /// The datagram userspace relayed, and whether it left as ChannelData.
    relayed: Option<(Decoded, bool)>,
    /// The userspace relay's outcome, as a short label.
    user: String,
}

impl Run<'_> {
    /// A failure report: where, the packet, both outcomes, and `detail`.
    fn example(&self, detail: &str) -> String {
        format!(
            "{}\n    packet: {}\n    XDP: {} {:?}; userspace: {}\n    {detail}",
            self.context,
            self.packet.describe(),
            self.xdp.verdict,
            self.counted,
            self.user
        )
    }
}

/// Runs the packet's frame through the XDP program and its datagram through the userspace
/// relay, at the same instant; `counters` move on to the counts after the run.
fn run_both<'a>(
    xdp: &XdpRelay,
    world: &mut World,
    counters: &mut ReasonCounters,
    packet: &'a Packet,
    context: &'a str,
) -> Run<'a> {
    let frame_in = packet.frame();
    let outcome = xdp
        .run(&frame_in)
        .expect("a frame of 14+ bytes always runs");
    let after = xdp.reason_counters().expect("counters");
    let counted = after.since(counters).non_zero();
    *counters = after;
    let now = world.now;
    let user = world
        .relay
        .handle_input(packet.from, packet.to, &packet.payload, now);
    let relayed = match &user {
        Ok(Some(relayed)) => Some((
            Decoded {
                src: relayed.src,
                dst: relayed.dst,
                payload: relayed.to_vec(),
            },
            relayed.channel.is_some(),
        )),
        _ => None,
    };
    let label = user_label(&user);
    world.discard_transmits();
    Run {
        packet,
        context,
        frame_in,
        xdp: outcome,
        counted,
        relayed,
        user: label,
    }
}

/// The name and number of the one reason the run counted; none (a failure) if it counted
/// none or several.
fn the_one_reason(run: &Run<'_>, tally: &mut Tally) -> Option<(&'static str, u32)> {
    let [(name, 1)] = run.counted[..] else {
        tally.fail(
            "not exactly one reason counted".to_owned(),
            run.example("one run must count one reason once"),
        );
        return None;
    };
    let why = reason::ALL
        .into_iter()
        .find(|&why| reason::name(why) == name)
        .expect("a named reason");
    Some((name, why))
}

/// XDP_TX: userspace relayed the same datagram, on the path the reason names, and the output
/// frame has correct checksums and the header fields the program sets.
fn check_tx(run: &Run<'_>, name: &str, why: u32, tally: &mut Tally) {
    let Some((expected, channel_out)) = &run.relayed else {
        tally.fail(
            format!("XDP_TX ({name}) but userspace: {}", run.user),
            run.example("XDP relayed a datagram the userspace relay does not relay"),
        );
        return;
    };
    let output = match decode(&run.xdp.frame_out) {
        Ok(output) => output,
        Err(error) => {
            tally.fail(
                format!("XDP_TX output undecodable ({name})"),
                run.example(&error),
            );
            return;
        }
    };
    if output.datagram != *expected {
        tally.fail(
            format!("XDP_TX output differs from userspace ({name})"),
            run.example(&format!(
                "XDP: {}\n    userspace: {}",
                output.datagram.describe(),
                expected.describe()
            )),
        );
    }
    let want = expected_tx_reason(run.packet, expected, *channel_out);
    if why != want {
        tally.fail(
            format!(
                "XDP_TX counted {name} for a {} datagram",
                reason::name(want)
            ),
            run.example(""),
        );
    }
    check_tx_checksums(run, name, expected, tally);
    check_tx_header_fields(run, name, &output, tally);
}

/// Every checksum of the output is correct; only IPv4 -> IPv4 of an input without a UDP
/// checksum may go without one.
fn check_tx_checksums(run: &Run<'_>, name: &str, expected: &Decoded, tally: &mut Tally) {
    let zero_allowed = run.packet.framing == Framing::ZeroChecksum && expected.dst.is_ipv4();
    match frame::verify_checksums(&run.xdp.frame_out) {
        Ok(UdpChecksum::Valid) => {}
        Ok(UdpChecksum::Absent) if zero_allowed => {}
        Ok(UdpChecksum::Absent) => tally.fail(
            format!("XDP_TX output without a UDP checksum ({name})"),
            run.example("only IPv4 -> IPv4 of an input without checksum may go without"),
        ),
        Err(error) => tally.fail(
            format!("XDP_TX output checksum or length wrong ({name})"),
            run.example(&error),
        ),
    }
}

/// MACs swapped, TTL 64, TOS carried over.
fn check_tx_header_fields(run: &Run<'_>, name: &str, output: &Output, tally: &mut Tally) {
    let &Output {
        tos,
        ttl,
        src_mac,
        dst_mac,
        ..
    } = output;
    if (src_mac, dst_mac) != (RELAY_MAC, PEER_MAC) || ttl != 64 || tos != run.packet.tos() {
        tally.fail(
            format!("XDP_TX output header fields ({name})"),
            run.example(&format!(
                "MACs {src_mac:02x?} -> {dst_mac:02x?}, TTL {ttl}, TOS {tos:#04x}"
            )),
        );
    }
}

/// XDP_PASS: the frame is unchanged, and if userspace relays the datagram, the pass is one of
/// the allowed ones.
fn check_pass(run: &Run<'_>, name: &'static str, why: u32, tally: &mut Tally) {
    if run.xdp.frame_out != run.frame_in {
        tally.fail(
            format!("XDP_PASS changed the frame ({name})"),
            run.example(""),
        );
    }
    let Some((expected, _)) = &run.relayed else {
        return;
    };
    if pass_is_allowed(why, run.packet, expected.dst) {
        *tally.allowed_passes.entry(name).or_default() += 1;
    } else {
        tally.fail(
            format!(
                "XDP_PASS ({name}) of a datagram userspace relays ({})",
                run.user
            ),
            run.example(&format!(
                "userspace relays it: {} -> {} ({} bytes)",
                expected.src,
                expected.dst,
                expected.payload.len()
            )),
        );
    }
}

fn env_list(name: &str) -> Option<Vec<u64>> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .split(',')
            .map(|item| item.trim().parse().expect("a number"))
            .collect(),
    )
}

#[test]
fn xdp_and_the_userspace_relay_agree_on_every_packet() {
    let Some(mut xdp) = load_or_skip("xdp_and_the_userspace_relay_agree_on_every_packet") else {
        return;
    };
    let seeds = env_list("DIFFERENTIAL_SEEDS").unwrap_or_else(|| SEEDS.to_vec());
    let per_seed = env_list("DIFFERENTIAL_PACKETS")
        .and_then(|n| n.first().copied())
        .map_or(PACKETS_PER_SEED, |n| n as usize);
    let default_run = seeds == SEEDS && per_seed == PACKETS_PER_SEED;

    let mut tally = Tally::default();
    for &seed in &seeds {
        SeedRun::start(&mut xdp, seed).run(&mut xdp, per_seed, &mut tally);
    }
    eprintln!("{}", report(&tally, seeds.len()));
    assert_no_disagreements(&tally);
    if default_run {
        assert_the_default_run_covers_enough(&tally);
    }
}

/// One seed's world, and where its run stands.
struct SeedRun {
    seed: u64,
    rng: Rng,
    world: World,
    /// The XDP reason counters after the latest packet.
    counters: ReasonCounters,
    step: usize,
    /// The latest client operations, for failure reports.
    recent_ops: Vec<String>,
}

impl SeedRun {
    /// A fresh world whose clients have all allocated, mirrored into fresh maps.
    fn start(xdp: &mut XdpRelay, seed: u64) -> Self {
        let rng = Rng(SplitMix64::new(seed));
        let mut world = world_with_clients(seed);
        xdp.configure_for(world.relay.config()).expect("configure");
        let counters = xdp.reason_counters().expect("counters");
        for index in 0..CLIENTS.len() {
            perform(&mut world, Op::Allocate(index));
        }
        mirror_and_check(&mut world, xdp).expect("mirrored after allocating");
        Self {
            seed,
            rng,
            world,
            counters,
            step: 0,
            recent_ops: Vec::new(),
        }
    }

    /// Random client operations and `packets` random packets, interleaved.
    fn run(mut self, xdp: &mut XdpRelay, packets: usize, tally: &mut Tally) {
        let mut sent = 0;
        while sent < packets {
            self.step += 1;
            if self.rng.percent(22) {
                self.operate(xdp, tally);
            } else {
                self.send_packet(xdp, tally);
                sent += 1;
            }
        }
    }

    /// A random client operation, mirrored into the maps and checked against the relay.
    fn operate(&mut self, xdp: &mut XdpRelay, tally: &mut Tally) {
        let (seed, step) = (self.seed, self.step);
        let op = random_op(&mut self.rng);
        perform(&mut self.world, op);
        tally.operations += 1;
        self.recent_ops.push(format!(
            "step {step} at {:?}: {op:?}",
            self.world.now - self.world.start
        ));
        if self.recent_ops.len() > 12 {
            self.recent_ops.remove(0);
        }
        if let Err(error) = mirror_and_check(&mut self.world, xdp) {
            panic!(
                "seed {seed} step {step}: {error}\nrecent operations:\n  {}",
                self.recent_ops.join("\n  ")
            );
        }
        tally.most_bindings = tally
            .most_bindings
            .max(relay_table(&self.world.relay).len());
    }

    /// A random packet, run through both and checked.
    fn send_packet(&mut self, xdp: &mut XdpRelay, tally: &mut Tally) {
        let (seed, step) = (self.seed, self.step);
        let packet = random_packet(&mut self.rng, &mut self.world);
        let context = format!(
            "seed {seed} step {step} at {:?}, bindings {:?}\n    recent operations:\n      {}",
            self.world.now - self.world.start,
            relay_table(&self.world.relay),
            self.recent_ops.join("\n      ")
        );
        check_packet(
            xdp,
            &mut self.world,
            &mut self.counters,
            &packet,
            &context,
            tally,
        );
        // Data never changes bindings; should anything a packet did (a STUN message from
        // a client) make the relay announce something, it is mirrored and checked too.
        if self.world.has_events()
            && let Err(error) = mirror_and_check(&mut self.world, xdp)
        {
            panic!(
                "seed {seed} step {step}, after {}: {error}",
                packet.describe()
            );
        }
    }
}

/// The run's counts: XDP reasons, allowed passes, and outcomes by packet kind.
fn report(tally: &Tally, seeds: usize) -> String {
    let mut report = String::new();
    let _ = writeln!(
        report,
        "differential: {} packets over {seeds} seeds, {} client operations, up to {} bindings \
         at once, {} packets on removed bindings (neither relayed them)",
        tally.packets, tally.operations, tally.most_bindings, tally.on_removed_bindings
    );
    let _ = writeln!(report, "XDP reasons:");
    for (name, count) in &tally.reasons {
        let _ = writeln!(report, "  {name:<34} {count:>6}");
    }
    let _ = writeln!(
        report,
        "allowed passes of datagrams userspace relays: {:?}",
        tally.allowed_passes
    );
    let _ = writeln!(report, "outcomes (packet kind, XDP reason, userspace):");
    for ((kind, name, user), count) in &tally.outcomes {
        let _ = writeln!(report, "  {kind:<26} {name:<34} {user:<42} {count:>6}");
    }
    report
}

/// Every kind of disagreement, with its count and first example, in one panic.
fn assert_no_disagreements(tally: &Tally) {
    if tally.failures.is_empty() {
        return;
    }
    let mut message = format!("{} kinds of disagreement:\n", tally.failures.len());
    for (kind, (count, example)) in &tally.failures {
        let _ = writeln!(message, "\n[{count}x] {kind}\n  first: {example}");
    }
    panic!("{message}");
}

/// The default run reaches the floor of packets, every TX path, enough packets on
/// removed bindings, and most of the allowed pass reasons.
fn assert_the_default_run_covers_enough(tally: &Tally) {
    assert!(tally.packets >= MIN_PACKETS, "{} packets", tally.packets);
    let missing: Vec<&str> = (reason::TX_FIRST..reason::TX_END)
        .map(reason::name)
        .filter(|name| !tally.reasons.contains_key(name))
        .collect();
    assert!(missing.is_empty(), "TX paths never hit: {missing:?}");
    assert!(
        tally.on_removed_bindings >= 100,
        "only {} packets on removed bindings",
        tally.on_removed_bindings
    );
    let seen: BTreeSet<&str> = tally.allowed_passes.keys().copied().collect();
    assert!(
        seen.len() >= 4,
        "the allowed pass reasons are exercised: {seen:?}"
    );
}

/// The disagreement this test found first, kept as a regression test: 0-3 bytes may follow
/// ChannelData's data whatever its length (`proto::channel_data`, RFC 8656 §12.5), and the
/// program used to pass (`pass/channel-data-length`) anything beyond the next multiple of 4,
/// such as 4 data bytes followed by 1 byte, which the userspace relay relays.
#[test]
fn one_byte_after_four_data_bytes_is_relayed_by_both() {
    let Some(mut xdp) = load_or_skip("one_byte_after_four_data_bytes_is_relayed_by_both") else {
        return;
    };
    let mut world = world_with_clients(1);
    xdp.configure_for(world.relay.config()).expect("configure");
    perform(&mut world, Op::Allocate(0));
    perform(
        &mut world,
        Op::Bind {
            client: 0,
            peer: PeerRef::External(0),
        },
    );
    mirror_and_check(&mut world, &mut xdp).expect("mirrored");
    let binding = world.relay.channel_bindings()[0];
    let mut counters = xdp.reason_counters().expect("counters");
    let mut tally = Tally::default();
    for (data, padding) in [
        (&[1u8, 2, 3, 4][..], &[0xEE][..]),
        (&[1, 2, 3, 4], &[1, 2, 3]),
        (&[], &[7]),
    ] {
        let packet = Packet {
            kind: "chan/aligned-then-padding",
            from: binding.client,
            to: turn_server_of(binding.client),
            payload: channel_data(binding.channel, data, padding),
            framing: Framing::Plain { tos: 0, ttl: 64 },
        };
        check_packet(
            &xdp,
            &mut world,
            &mut counters,
            &packet,
            "regression",
            &mut tally,
        );
    }
    assert!(tally.failures.is_empty(), "{:#?}", tally.failures);
    assert_eq!(
        tally.reasons.get("tx/chan4-to-udp4"),
        Some(&3),
        "{:?}",
        tally.reasons
    );
}
