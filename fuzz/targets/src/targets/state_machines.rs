//! `state_machines`: random operations and `now` advances through a relay and a gateway, with
//! their invariants checked after every call.
//!
//! The input is a sequence of [`Op`]s (decoded with `arbitrary`): TURN requests from three
//! clients (two IPv4, one IPv6) signed with valid credentials, Send indications, ChannelData,
//! datagrams from peers (relay-to-self included) and raw datagrams at the relay; client packets
//! in valid tunnel frames, resource replies, DNS answers to the gateway's own queries, raw
//! datagrams, grants, revokes and DNS (un)mappings at the gateway; `now` jumps of up to an hour;
//! explicit timeouts. A host calls `handle_timeout` whenever `poll_timeout` has come.
//!
//! The relay, checked against a shadow of what its success responses granted:
//! - every datagram is one counted drop, a relayed datagram or a queued one
//!   ([`super::relay_input`]), and nothing is sent to the relay's own addresses;
//! - nothing goes to a peer unless the sending allocation holds a live permission for the peer's
//!   IP, nothing from a peer reaches a client unless its allocation holds one for the peer, and
//!   nothing moves through an allocation that is not alive;
//! - the channels announced by `ChannelBound`/`ChannelUnbound` are exactly
//!   `channel_bindings()`, each with a live binding and permission, no channel or peer twice in
//!   one allocation; allocations within the quota and equal to the live ones;
//! - `poll_timeout` is never in the past.
//!
//! The gateway:
//! - drop events equal counter deltas, call by call ([`super::gateway_call`]), and
//!   `poll_timeout` is never in the past;
//! - an accepted client packet goes somewhere unless it waits for a DNS answer;
//! - TUN packets come from the client's tunnel IP and go to a resource it holds a grant for
//!   (a granted CIDR, or an address a granted DNS resource resolved to), with valid checksums;
//!   no grant, no open flow;
//! - frames to the client open under its key with counters that only go up.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use gateway::{
    Event as GatewayEvent, Filter, Gateway, GatewayConfig, PortRange, Transmit as GwTransmit,
};
use hickory_proto::op::{Message as DnsMessage, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use proto::channel_data::{self, ChannelData};
use proto::flow::{OuterContext, ResourceId};
use proto::stun::{
    self, Data, Lifetime, Message, MessageClass, RequestedAddressFamily, RequestedTransport,
    XorPeerAddress, XorRelayAddress, methods,
};
use proto::tunnel;
use relay::{ChannelBinding, Event as RelayEvent, PERMISSION_LIFETIME, Relay, TURN_PORT, Transmit};

use super::{gateway_call, ip_addrs, relay_input, tun_packets};
use crate::checksum;
use crate::fixtures::{self, GATEWAY_ADDR, GATEWAY_CLIENT, TurnClient};

/// At most this many operations per input (keeps one execution short).
const MAX_OPS: usize = 32;
/// The gateway's flow-table cap for the client, low enough for the operations to fill it.
const MAX_FLOWS: usize = 6;

#[derive(Debug, Arbitrary)]
enum Op {
    /// `now` moves on by this many milliseconds (modulo an hour and a bit).
    Advance(u32),
    /// `handle_timeout(now)` on both, whether or not a deadline has come.
    Timeout,
    Allocate {
        client: u8,
        other_family: bool,
        lifetime: Option<u16>,
    },
    Refresh {
        client: u8,
        lifetime: u16,
    },
    Permit {
        client: u8,
        peer: u8,
    },
    Bind {
        client: u8,
        channel: u16,
        peer: u8,
    },
    Send {
        client: u8,
        peer: u8,
        data: Vec<u8>,
    },
    ChannelData {
        client: u8,
        channel: u16,
        data: Vec<u8>,
        padding: u8,
    },
    FromPeer {
        peer: u8,
        client: u8,
        data: Vec<u8>,
    },
    RelayRaw {
        from: u8,
        to_allocation: bool,
        data: Vec<u8>,
    },
    ClientPacket(ClientPacket),
    /// A resource answers the n-th client packet sent so far.
    ResourceReply {
        nth: u8,
        tcp_flags: u8,
        payload: u8,
    },
    DnsAnswer {
        nth: u8,
        rcode_error: bool,
        host: u8,
        ttl: u16,
        records: u8,
    },
    GatewayRaw {
        from_dns: bool,
        data: Vec<u8>,
    },
    /// A valid frame from the client around arbitrary bytes.
    SealedRaw {
        counter_step: u8,
        inner: Vec<u8>,
    },
    Grant {
        resource: u8,
        filter: u8,
    },
    Revoke {
        resource: u8,
    },
    MapDns {
        proxy: u8,
        name: u8,
    },
    UnmapDns {
        proxy: u8,
    },
}

#[derive(Debug, Arbitrary)]
struct ClientPacket {
    protocol: u8,
    v6: bool,
    destination: u8,
    src_port: u8,
    dst_port: u16,
    tcp_flags: u8,
    payload: u8,
    counter_step: u8,
    forged_source: bool,
}

pub fn state_machines(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut world = World::new();
    for _ in 0..MAX_OPS {
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        world.run_due_timeouts();
        world.apply(op);
        world.check();
    }
}

// ------------------------------------------------------------------------------------ world

const PEERS: [SocketAddr; 3] = [
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 40000),
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 8)), 40001),
    SocketAddr::new(
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 7)),
        40000,
    ),
];

const RESOURCES: [ResourceId; 3] = [
    fixtures::CIDR_RESOURCE,
    ResourceId(11),
    fixtures::DNS_RESOURCE,
];

const NAMES: [&str; 3] = [fixtures::DNS_NAME, "web.example.com", "other.example.org"];

/// What the relay's success responses granted one client, as the client saw them.
#[derive(Debug, Default)]
struct Shadow {
    allocation: Option<ShadowAllocation>,
}

#[derive(Debug)]
struct ShadowAllocation {
    relayed: SocketAddr,
    port: u16,
    expires: Instant,
    permissions: BTreeMap<IpAddr, Instant>,
}

/// A request in flight: what its success response grants.
#[derive(Debug, Clone, Copy)]
enum Grants {
    Allocation,
    Refresh(Duration),
    Permission(IpAddr),
}

struct World {
    now: Instant,
    relay: Relay,
    clients: Vec<TurnClient>,
    shadows: Vec<Shadow>,
    /// Channels as announced by the relay's events.
    announced: BTreeSet<ChannelBinding>,
    gateway: Gateway,
    frame_counter: u64,
    last_frame_to_client: Option<u64>,
    /// Client packets sent (for resource replies), newest last, at most 16.
    sent_packets: Vec<Vec<u8>>,
    /// DNS queries the gateway sent: (id, name, AAAA?), newest last, at most 16.
    queries: Vec<(u16, String, bool)>,
    grants: BTreeSet<ResourceId>,
    resolved: BTreeSet<IpAddr>,
}

impl World {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            now,
            relay: fixtures::relay(now),
            clients: vec![
                TurnClient::new(1, SocketAddr::from(([203, 0, 113, 100], 51820))),
                TurnClient::new(2, SocketAddr::from(([203, 0, 113, 101], 51821))),
                TurnClient::new(
                    3,
                    SocketAddr::new(
                        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100)),
                        51822,
                    ),
                ),
            ],
            shadows: (0..3).map(|_| Shadow::default()).collect(),
            announced: BTreeSet::new(),
            gateway: fixtures::gateway_with(GatewayConfig {
                // small enough for the operations to reach it
                max_flows_per_client: MAX_FLOWS,
                ..fixtures::gateway_config(now)
            }),
            frame_counter: 0,
            last_frame_to_client: None,
            sent_packets: Vec::new(),
            queries: Vec::new(),
            grants: RESOURCES.into_iter().collect(),
            resolved: BTreeSet::new(),
        }
    }

    fn run_due_timeouts(&mut self) {
        if self.relay.poll_timeout().is_some_and(|t| t <= self.now) {
            self.relay_timeout();
        }
        if self.gateway.poll_timeout().is_some_and(|t| t <= self.now) {
            self.gateway_timeout();
        }
    }

    fn relay_timeout(&mut self) {
        self.relay.handle_timeout(self.now);
        for shadow in &mut self.shadows {
            if shadow
                .allocation
                .as_ref()
                .is_some_and(|a| a.expires <= self.now)
            {
                shadow.allocation = None;
            }
        }
        let transmits: Vec<Transmit> = std::iter::from_fn(|| self.relay.poll_transmit()).collect();
        assert!(transmits.is_empty(), "a relay timeout sent {transmits:?}");
    }

    fn gateway_timeout(&mut self) {
        let now = self.now;
        let outcome = gateway_call(&mut self.gateway, now, |g| {
            g.handle_timeout(now);
            Ok(())
        });
        self.gateway_outputs(&outcome.transmits, &outcome.events, None);
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Advance(millis) => {
                self.now += Duration::from_millis(u64::from(millis % 4_000_000));
            }
            Op::Timeout => {
                self.relay_timeout();
                self.gateway_timeout();
            }
            Op::Allocate {
                client,
                other_family,
                lifetime,
            } => {
                let c = usize::from(client) % self.clients.len();
                let mut attributes = vec![RequestedTransport::new(stun::TRANSPORT_UDP).into()];
                if other_family {
                    let family = if self.clients[c].addr.is_ipv4() {
                        stun::AddressFamily::V6
                    } else {
                        stun::AddressFamily::V4
                    };
                    attributes.push(RequestedAddressFamily::new(family).into());
                }
                if let Some(seconds) = lifetime
                    && let Ok(lifetime) = Lifetime::new(Duration::from_secs(u64::from(seconds)))
                {
                    attributes.push(lifetime.into());
                }
                self.turn_request(c, methods::ALLOCATE, attributes, Grants::Allocation);
            }
            Op::Refresh { client, lifetime } => {
                let c = usize::from(client) % self.clients.len();
                let lifetime = Duration::from_secs(u64::from(lifetime % 4000));
                let Ok(attribute) = Lifetime::new(lifetime) else {
                    return;
                };
                let attributes = vec![attribute.into()];
                self.turn_request(c, methods::REFRESH, attributes, Grants::Refresh(lifetime));
            }
            Op::Permit { client, peer } => {
                let c = usize::from(client) % self.clients.len();
                let peer = self.peer(peer);
                let attributes = vec![XorPeerAddress::new(SocketAddr::new(peer.ip(), 0)).into()];
                let grants = Grants::Permission(peer.ip());
                self.turn_request(c, methods::CREATE_PERMISSION, attributes, grants);
            }
            Op::Bind {
                client,
                channel,
                peer,
            } => {
                let c = usize::from(client) % self.clients.len();
                let peer = self.peer(peer);
                let number = channel_number(channel);
                let Ok(number) = stun::ChannelNumber::new(number) else {
                    return;
                };
                let attributes = vec![number.into(), XorPeerAddress::new(peer).into()];
                let grants = Grants::Permission(peer.ip());
                self.turn_request(c, methods::CHANNEL_BIND, attributes, grants);
            }
            Op::Send { client, peer, data } => {
                let c = usize::from(client) % self.clients.len();
                let peer = self.peer(peer);
                let client = &mut self.clients[c];
                let mut indication = Message::new(
                    MessageClass::Indication,
                    methods::SEND,
                    client.transaction_id(),
                );
                indication.add_attribute(XorPeerAddress::new(peer));
                let Ok(data) = Data::new(data) else {
                    return;
                };
                indication.add_attribute(data);
                let Ok(payload) = stun::encode(indication) else {
                    return;
                };
                let (from, to) = (client.addr, client.server);
                self.relay_datagram(from, to, &payload);
            }
            Op::ChannelData {
                client,
                channel,
                data,
                padding,
            } => {
                let c = usize::from(client) % self.clients.len();
                let mut payload = ChannelData {
                    channel: channel_number(channel),
                    data: &data,
                }
                .to_vec();
                payload.extend(std::iter::repeat_n(0, usize::from(padding % 4)));
                let (from, to) = (self.clients[c].addr, self.clients[c].server);
                self.relay_datagram(from, to, &payload);
            }
            Op::FromPeer { peer, client, data } => {
                let c = usize::from(client) % self.clients.len();
                let from = self.peer(peer);
                let Some(port) = self.shadows[c].allocation.as_ref().map(|a| a.port) else {
                    return;
                };
                let to = SocketAddr::new(relay_ip(from.ip()), port);
                self.relay_datagram(from, to, &data);
            }
            Op::RelayRaw {
                from,
                to_allocation,
                data,
            } => {
                let c = usize::from(from) % self.clients.len();
                let from = self.clients[c].addr;
                let to = if to_allocation {
                    SocketAddr::new(relay_ip(from.ip()), *relay::ALLOCATION_PORTS.start())
                } else {
                    self.clients[c].server
                };
                self.relay_datagram(from, to, &data);
            }
            Op::ClientPacket(packet) => self.client_packet(&packet),
            Op::ResourceReply {
                nth,
                tcp_flags,
                payload,
            } => self.resource_reply(nth, tcp_flags, payload),
            Op::DnsAnswer {
                nth,
                rcode_error,
                host,
                ttl,
                records,
            } => self.dns_answer(nth, rcode_error, host, ttl, records),
            Op::GatewayRaw { from_dns, data } => {
                let now = self.now;
                let from = if from_dns {
                    fixtures::DNS_SERVER
                } else {
                    fixtures::CLIENT_OUTER
                };
                let outcome = gateway_call(&mut self.gateway, now, |g| {
                    g.handle_input(from, GATEWAY_ADDR, &data, now)
                });
                self.gateway_outputs(&outcome.transmits, &outcome.events, None);
            }
            Op::SealedRaw {
                counter_step,
                inner,
            } => {
                self.send_frame(counter_step, &inner);
            }
            Op::Grant { resource, filter } => {
                let resource = RESOURCES[usize::from(resource) % RESOURCES.len()];
                let filters = match filter % 4 {
                    0 => Vec::new(),
                    1 => vec![Filter::Udp(PortRange::ALL)],
                    2 => vec![Filter::Tcp(PortRange::single(443)), Filter::Icmp],
                    _ => vec![Filter::Udp(PortRange {
                        first: 50,
                        last: 60,
                    })],
                };
                if self
                    .gateway
                    .grant(GATEWAY_CLIENT, resource, filters)
                    .is_ok()
                {
                    self.grants.insert(resource);
                }
            }
            Op::Revoke { resource } => {
                let resource = RESOURCES[usize::from(resource) % RESOURCES.len()];
                let now = self.now;
                let outcome = gateway_call(&mut self.gateway, now, |g| {
                    let _ = g.revoke(GATEWAY_CLIENT, resource, now);
                    Ok(())
                });
                self.grants.remove(&resource);
                self.gateway_outputs(&outcome.transmits, &outcome.events, None);
            }
            Op::MapDns { proxy, name } => {
                let proxy = proxy_ip(proxy);
                let name = NAMES[usize::from(name) % NAMES.len()];
                let now = self.now;
                let outcome = gateway_call(&mut self.gateway, now, |g| {
                    let _ = g.map_dns(GATEWAY_CLIENT, proxy, name, now);
                    Ok(())
                });
                self.gateway_outputs(&outcome.transmits, &outcome.events, None);
            }
            Op::UnmapDns { proxy } => {
                let proxy = proxy_ip(proxy);
                let now = self.now;
                let outcome = gateway_call(&mut self.gateway, now, |g| {
                    let _ = g.unmap_dns(GATEWAY_CLIENT, proxy, now);
                    Ok(())
                });
                self.gateway_outputs(&outcome.transmits, &outcome.events, None);
            }
        }
    }

    // ------------------------------------------------------------------------------- relay

    /// A peer: one of [`PEERS`], or another client's relayed address (relay-to-self).
    fn peer(&self, n: u8) -> SocketAddr {
        let n = usize::from(n) % (PEERS.len() + self.clients.len());
        match n.checked_sub(PEERS.len()) {
            None => PEERS[n],
            Some(c) => match &self.shadows[c].allocation {
                Some(allocation) => allocation.relayed,
                None => PEERS[c % PEERS.len()],
            },
        }
    }

    /// Index of the client at `addr`, if it is one.
    fn client_at(&self, addr: SocketAddr) -> Option<usize> {
        self.clients.iter().position(|c| c.addr == addr)
    }

    /// Index of the client whose live allocation is on `port`.
    fn allocation_on(&self, port: u16) -> Option<usize> {
        self.shadows
            .iter()
            .position(|s| s.allocation.as_ref().is_some_and(|a| a.port == port))
    }

    fn has_permission(&self, client: usize, ip: IpAddr) -> bool {
        self.shadows[client].allocation.as_ref().is_some_and(|a| {
            a.expires > self.now && a.permissions.get(&ip).is_some_and(|&e| e > self.now)
        })
    }

    /// A signed request of client `c`, sent again once with the fresh nonce of a 401 or 438
    /// challenge (as a TURN client does); its success response read into the shadow.
    fn turn_request(
        &mut self,
        c: usize,
        method: stun::Method,
        attributes: Vec<stun::Attribute>,
        grants: Grants,
    ) {
        let (from, to) = (self.clients[c].addr, self.clients[c].server);
        let mut outcome = Vec::new();
        for _ in 0..2 {
            let nonce = self.clients[c].nonce.clone();
            let request = self.clients[c].request(method, attributes.clone());
            outcome = self.relay_datagram(from, to, &request);
            for reply in &outcome {
                self.clients[c].learn_nonce(reply);
            }
            let challenged = outcome.iter().any(|reply| {
                stun::decode(&reply.payload).is_ok_and(|m| {
                    matches!(
                        stun::error_code(&m),
                        Some(stun::codes::UNAUTHORIZED | stun::codes::STALE_NONCE)
                    )
                })
            });
            if !challenged || self.clients[c].nonce == nonce {
                break;
            }
        }
        let now = self.now;
        for reply in &outcome {
            let Ok(message) = stun::decode(&reply.payload) else {
                continue;
            };
            if reply.dst != from || message.class() != MessageClass::SuccessResponse {
                continue;
            }
            let shadow = &mut self.shadows[c];
            match grants {
                Grants::Allocation => {
                    let relayed = message
                        .get_attribute::<XorRelayAddress>()
                        .map(XorRelayAddress::address)
                        .expect("an Allocate success names the relayed address");
                    let lifetime = message
                        .get_attribute::<Lifetime>()
                        .map(Lifetime::lifetime)
                        .expect("an Allocate success names the lifetime");
                    if shadow.allocation.is_none() {
                        shadow.allocation = Some(ShadowAllocation {
                            relayed,
                            port: relayed.port(),
                            expires: now + lifetime,
                            permissions: BTreeMap::new(),
                        });
                    }
                }
                Grants::Refresh(asked) => {
                    let granted = message
                        .get_attribute::<Lifetime>()
                        .map(Lifetime::lifetime)
                        .unwrap_or(asked);
                    if granted.is_zero() {
                        shadow.allocation = None;
                    } else if let Some(allocation) = &mut shadow.allocation {
                        allocation.expires = now + granted;
                    }
                }
                Grants::Permission(ip) => {
                    if let Some(allocation) = &mut shadow.allocation {
                        allocation.permissions.insert(ip, now + PERMISSION_LIFETIME);
                    }
                }
            }
        }
    }

    /// One datagram at the relay, its outputs checked against the shadow; returns every
    /// datagram the relay sent for it.
    fn relay_datagram(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        payload: &[u8],
    ) -> Vec<Transmit> {
        let outcome = relay_input(&mut self.relay, from, to, payload, self.now);
        let mut sent: Vec<Transmit> = outcome.transmits;
        if let Ok(Some(relayed)) = outcome.result {
            sent.push(relayed);
        }
        for out in &sent {
            self.check_relayed(from, to, out);
        }
        sent
    }

    fn check_relayed(&self, from: SocketAddr, to: SocketAddr, out: &Transmit) {
        let to_client = self.client_at(out.dst);
        let is_reply = out.src.port() == TURN_PORT
            && stun::decode(&out.payload).is_ok_and(|m| m.class() != MessageClass::Indication);
        if is_reply {
            assert_eq!(Some(out.dst), Some(from), "a STUN response to someone else");
            return;
        }
        // Data towards a peer leaves from an allocation of the sender.
        if out.src.port() != TURN_PORT {
            let owner = self
                .allocation_on(out.src.port())
                .unwrap_or_else(|| panic!("data leaves {} with no live allocation", out.src));
            assert!(
                self.has_permission(owner, out.dst.ip()),
                "{} sent data to {} without a permission",
                out.src,
                out.dst
            );
            return;
        }
        // Data to a client: from a peer it holds a permission for. The peer is named in the
        // datagram (a Data indication's XOR-PEER-ADDRESS, or the peer of the ChannelData's bound
        // channel).
        let receiver = to_client
            .unwrap_or_else(|| panic!("data from the TURN port to a non-client {}", out.dst));
        let origin = if channel_data::looks_like_channel_data(&out.payload) {
            let message = ChannelData::parse(&out.payload).expect("the relay's ChannelData parses");
            self.announced
                .iter()
                .find(|b| b.client == out.dst && b.channel == message.channel)
                .unwrap_or_else(|| {
                    panic!("ChannelData on unbound channel {:#06x}", message.channel)
                })
                .peer
        } else {
            stun::decode(&out.payload)
                .ok()
                .and_then(|m| {
                    m.get_attribute::<XorPeerAddress>()
                        .map(XorPeerAddress::address)
                })
                .expect("data to a client is ChannelData or a Data indication naming its peer")
        };
        assert!(
            self.has_permission(receiver, origin.ip()),
            "data from {origin} reached client {} without a permission",
            out.dst
        );
        if to.port() == TURN_PORT {
            // Relay-to-self: the origin is the sender's relayed address, and the sender holds a
            // permission for the receiver's.
            let sender = self.client_at(from).expect("relay-to-self from a client");
            let relayed = self.shadows[sender].allocation.as_ref().map(|a| a.port);
            assert_eq!(
                Some(origin.port()),
                relayed,
                "relay-to-self from a foreign port"
            );
            assert!(self.relay.is_own_ip(origin.ip()));
            assert!(
                self.has_permission(sender, fixtures::RELAY_V4.into())
                    || self.has_permission(sender, fixtures::RELAY_V6.into()),
                "relay-to-self without the sender's permission"
            );
        } else {
            assert_eq!(origin, from, "data to a client names another peer");
            assert_eq!(
                self.allocation_on(to.port()),
                Some(receiver),
                "data for one allocation went to another client"
            );
        }
    }

    // ----------------------------------------------------------------------------- gateway

    fn send_frame(&mut self, counter_step: u8, inner: &[u8]) -> super::GatewayOutcome {
        // A step of 0 replays the previous counter.
        self.frame_counter += u64::from(counter_step % 4);
        let frame = fixtures::client_frame(self.frame_counter, inner);
        let outer = OuterContext {
            remote: fixtures::CLIENT_OUTER,
            local: GATEWAY_ADDR,
        };
        let now = self.now;
        let outcome = gateway_call(&mut self.gateway, now, |g| {
            g.handle_tunnel_frame(outer, &frame, now)
        });
        self.gateway_outputs(&outcome.transmits, &outcome.events, Some(inner));
        outcome
    }

    fn client_packet(&mut self, p: &ClientPacket) {
        let src: IpAddr = match (p.v6, p.forged_source) {
            (false, false) => fixtures::TUNNEL_V4.into(),
            (true, false) => fixtures::TUNNEL_V6.into(),
            (false, true) => Ipv4Addr::new(100, 64, 0, 3).into(),
            (true, true) => Ipv6Addr::new(0xfd00, 0x2021, 0x1111, 0, 0, 0, 0, 3).into(),
        };
        let dst: IpAddr = match (p.destination % 4, p.v6) {
            (0, false) => Ipv4Addr::new(198, 51, 100, 10 + p.destination / 4 % 4).into(),
            (0, true) => Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 10).into(),
            (1, _) => proxy_ip(p.destination / 4 * 2 + u8::from(p.v6)),
            (2, false) => Ipv4Addr::new(192, 0, 2, 9).into(),
            (2, true) => Ipv6Addr::new(0x2001, 0xdb8, 0x300, 0, 0, 0, 0, 9).into(),
            (_, false) => Ipv4Addr::new(100, 64, 0, 9).into(),
            (_, true) => Ipv6Addr::new(0xfd00, 0x2021, 0x1111, 0, 0, 0, 0, 9).into(),
        };
        let src_port = 40000 + u16::from(p.src_port % 4);
        let payload = vec![0xAB; usize::from(p.payload % 64)];
        let packet = build_packet(
            src,
            dst,
            p.protocol,
            src_port,
            p.dst_port,
            p.tcp_flags,
            &payload,
        );
        let outcome = self.send_frame(p.counter_step, &packet);
        if outcome.result.is_ok() {
            assert!(
                !outcome.transmits.is_empty() || gateway::is_proxy_ip(dst),
                "an accepted client packet went nowhere"
            );
        }
        if self.sent_packets.len() == 16 {
            self.sent_packets.remove(0);
        }
        self.sent_packets.push(packet);
    }

    fn resource_reply(&mut self, nth: u8, tcp_flags: u8, payload: u8) {
        if self.sent_packets.is_empty() {
            return;
        }
        let original = &self.sent_packets[usize::from(nth) % self.sent_packets.len()];
        let Some((src, dst)) = ip_addrs(original) else {
            return;
        };
        let (protocol, l4) = if src.is_ipv4() {
            (original[9], 20)
        } else {
            (original[6], 40)
        };
        let real_dst = if gateway::is_proxy_ip(dst) {
            match self
                .resolved
                .iter()
                .find(|ip| ip.is_ipv4() == dst.is_ipv4())
            {
                Some(&ip) => ip,
                None => return,
            }
        } else {
            dst
        };
        let icmp = matches!(protocol, 1 | 58);
        let at = if icmp { l4 + 4 } else { l4 };
        let Some(fields) = original.get(at..at + 4) else {
            return;
        };
        let first = u16::from_be_bytes([fields[0], fields[1]]);
        let second = u16::from_be_bytes([fields[2], fields[3]]);
        let reply_payload = vec![0xCD; usize::from(payload % 64)];
        // ICMP: an echo reply with the request's identifier and sequence; else ports swapped.
        let (protocol, a, b) = match protocol {
            1 | 58 => (ECHO_REPLY, first, second),
            6 => (TCP, second, first),
            _ => (UDP, second, first),
        };
        let packet = build_packet(real_dst, src, protocol, a, b, tcp_flags, &reply_payload);
        let now = self.now;
        let outcome = gateway_call(&mut self.gateway, now, |g| {
            g.handle_tun_packet(&packet, now)
        });
        if outcome.result.is_ok() {
            assert!(
                !outcome.transmits.is_empty(),
                "an accepted TUN packet went nowhere"
            );
        }
        self.gateway_outputs(&outcome.transmits, &outcome.events, Some(&packet));
    }

    fn dns_answer(&mut self, nth: u8, rcode_error: bool, host: u8, ttl: u16, records: u8) {
        if self.queries.is_empty() {
            return;
        }
        let (id, name, v6) = self.queries[usize::from(nth) % self.queries.len()].clone();
        let Ok(name) = Name::from_ascii(&name) else {
            return;
        };
        let mut message = DnsMessage::new(id, MessageType::Response, OpCode::Query);
        let record_type = if v6 { RecordType::AAAA } else { RecordType::A };
        message.add_query(Query::query(name.clone(), record_type));
        if rcode_error {
            message.metadata.response_code = ResponseCode::ServFail;
        }
        for n in 0..records % 3 {
            let last = host.wrapping_add(n);
            let data = if v6 {
                RData::AAAA(AAAA::new(0x2001, 0xdb8, 0x400, 0, 0, 0, 0, u16::from(last)))
            } else {
                RData::A(A::new(192, 0, 2, last))
            };
            message.add_answer(Record::from_rdata(name.clone(), u32::from(ttl), data));
        }
        let Ok(bytes) = message.to_vec() else {
            return;
        };
        let now = self.now;
        let outcome = gateway_call(&mut self.gateway, now, |g| {
            g.handle_input(fixtures::DNS_SERVER, fixtures::DNS_LOCAL, &bytes, now)
        });
        self.gateway_outputs(&outcome.transmits, &outcome.events, None);
    }

    /// Checks what a gateway call sent and learns the queries and resolutions in it.
    fn gateway_outputs(
        &mut self,
        transmits: &[GwTransmit],
        events: &[GatewayEvent],
        input: Option<&[u8]>,
    ) {
        for event in events {
            if let GatewayEvent::DnsResolved { addr, .. } = event {
                self.resolved.insert(*addr);
            }
        }
        let input_verifies = input.is_some_and(|i| checksum::verifies(i) == Some(true));
        for packet in tun_packets(transmits) {
            let (src, dst) = ip_addrs(packet).expect("a TUN packet has an IP header");
            let tunnel: IpAddr = if src.is_ipv4() {
                fixtures::TUNNEL_V4.into()
            } else {
                fixtures::TUNNEL_V6.into()
            };
            assert_eq!(src, tunnel, "a TUN packet not from the client's tunnel IP");
            assert!(self.may_reach(dst), "a TUN packet to {dst} without a grant");
            if input_verifies {
                assert_ne!(
                    checksum::verifies(packet),
                    Some(false),
                    "TUN checksum broken"
                );
            }
        }
        for transmit in transmits {
            let GwTransmit::Udp { src, dst, payload } = transmit else {
                continue;
            };
            if *dst == fixtures::DNS_SERVER {
                assert_eq!(*src, fixtures::DNS_LOCAL);
                if let Ok(query) = DnsMessage::from_vec(payload)
                    && let [question] = query.queries.as_slice()
                {
                    let name = question.name().to_ascii();
                    let v6 = question.query_type() == RecordType::AAAA;
                    if self.queries.len() == 16 {
                        self.queries.remove(0);
                    }
                    self.queries.push((query.metadata.id, name, v6));
                }
                continue;
            }
            assert_eq!(*dst, fixtures::CLIENT_OUTER, "a datagram to a stranger");
            let (header, inner) = tunnel::open(
                &fixtures::session_key(),
                tunnel::Direction::ToClient,
                payload,
            )
            .expect("a frame to the client opens under its key");
            assert!(
                self.last_frame_to_client
                    .is_none_or(|last| header.counter > last),
                "frame counters to the client do not count up"
            );
            self.last_frame_to_client = Some(header.counter);
            let (_, inner_dst) = ip_addrs(inner).expect("an IP packet in the frame");
            assert!(
                inner_dst == IpAddr::from(fixtures::TUNNEL_V4)
                    || inner_dst == IpAddr::from(fixtures::TUNNEL_V6),
                "a frame to the client for {inner_dst}"
            );
        }
    }

    /// Whether the client holds a grant covering `ip`.
    fn may_reach(&self, ip: IpAddr) -> bool {
        let cidr = match ip {
            IpAddr::V4(v4) => {
                v4.octets()[..3] == fixtures::RESOURCE_V4.octets()[..3]
                    && self.grants.contains(&RESOURCES[0])
            }
            IpAddr::V6(v6) => {
                v6.segments()[..3] == fixtures::RESOURCE_V6.segments()[..3]
                    && self.grants.contains(&RESOURCES[1])
            }
        };
        cidr || (self.resolved.contains(&ip) && self.grants.contains(&RESOURCES[2]))
    }

    // ------------------------------------------------------------------------------ checks

    fn check(&mut self) {
        // A host calls handle_timeout when a deadline has come; after that call the next
        // deadline is later than now (else the host would spin).
        self.run_due_timeouts();
        let now = self.now;
        // The relay.
        while let Some(event) = self.relay.poll_event() {
            match event {
                RelayEvent::ChannelBound(binding) => {
                    assert!(self.announced.insert(binding), "bound twice: {binding:?}");
                }
                RelayEvent::ChannelUnbound(binding) => {
                    assert!(
                        self.announced.remove(&binding),
                        "unbound, never bound: {binding:?}"
                    );
                }
                _ => {}
            }
        }
        let bindings = self.relay.channel_bindings();
        assert_eq!(
            bindings,
            self.announced.iter().copied().collect::<Vec<_>>(),
            "the announced channels are not the relay's"
        );
        let max_channels = self.relay.config().max_channels;
        for allocation in self.shadows.iter().filter_map(|s| s.allocation.as_ref()) {
            let port = allocation.port;
            let count = bindings
                .iter()
                .filter(|b| b.allocation_port == port)
                .count();
            assert!(count <= max_channels, "{count} channels on one allocation");
        }
        let mut channels = BTreeSet::new();
        let mut peers = BTreeSet::new();
        for binding in &bindings {
            assert!(channels.insert((binding.allocation_port, binding.channel)));
            assert!(peers.insert((binding.allocation_port, binding.peer)));
            let owner = self
                .allocation_on(binding.allocation_port)
                .expect("a channel of a live allocation");
            assert_eq!(self.clients[owner].addr, binding.client);
            assert!(
                self.has_permission(owner, binding.peer.ip()),
                "an active channel without a live permission"
            );
        }
        let live = self
            .shadows
            .iter()
            .filter(|s| s.allocation.is_some())
            .count();
        assert!(self.relay.allocation_count() <= self.relay.config().allocation_quota);
        assert_eq!(
            self.relay.allocation_count(),
            live,
            "allocations differ from the shadow"
        );
        if let Some(deadline) = self.relay.poll_timeout() {
            assert!(
                deadline > now,
                "the relay's next deadline has come and stays"
            );
        }
        // The gateway.
        if let Some(deadline) = self.gateway.poll_timeout() {
            assert!(
                deadline > now,
                "the gateway's next deadline has come and stays"
            );
        }
        if self.grants.is_empty() {
            assert_eq!(
                self.gateway.open_flow_count(),
                0,
                "flows open without a grant"
            );
        }
        while self.gateway.poll_flow_record().is_some() {}
    }
}

/// A channel number, mostly in the valid range.
fn channel_number(raw: u16) -> u16 {
    if raw & 0x8000 == 0 {
        0x4000 + raw % 8
    } else {
        raw
    }
}

/// The relay's address of `ip`'s family.
fn relay_ip(ip: IpAddr) -> IpAddr {
    if ip.is_ipv4() {
        fixtures::RELAY_V4.into()
    } else {
        fixtures::RELAY_V6.into()
    }
}

/// One of four DNS proxy IPs (two per family).
fn proxy_ip(n: u8) -> IpAddr {
    match n % 4 {
        0 => fixtures::PROXY_V4.into(),
        1 => fixtures::PROXY_V6.into(),
        2 => Ipv4Addr::new(100, 96, 0, 2).into(),
        _ => Ipv6Addr::new(0xfd00, 0x2021, 0x1111, 0x8000, 0, 0, 0, 2).into(),
    }
}

const TCP: u8 = 0;
const UDP: u8 = 1;
const ECHO_REPLY: u8 = 3;

/// An IP packet with valid checksums: `protocol % 4` picks TCP, UDP, an ICMP echo request
/// (identifier `src_port`, sequence `dst_port`) or an echo reply.
fn build_packet(
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    src_port: u16,
    dst_port: u16,
    tcp_flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let builder = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            etherparse::PacketBuilder::ipv4(s.octets(), d.octets(), 64)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            etherparse::PacketBuilder::ipv6(s.octets(), d.octets(), 64)
        }
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    let written = match protocol % 4 {
        0 => {
            let mut tcp = builder.tcp(src_port, dst_port, 1000, 65535);
            if tcp_flags & 0x02 != 0 {
                tcp = tcp.syn();
            }
            if tcp_flags & 0x10 != 0 {
                tcp = tcp.ack(1);
            }
            if tcp_flags & 0x01 != 0 {
                tcp = tcp.fin();
            }
            if tcp_flags & 0x04 != 0 {
                tcp = tcp.rst();
            }
            tcp.write(&mut out, payload)
        }
        1 => builder.udp(src_port, dst_port).write(&mut out, payload),
        2 if src.is_ipv4() => builder
            .icmpv4_echo_request(src_port, dst_port)
            .write(&mut out, payload),
        2 => builder
            .icmpv6_echo_request(src_port, dst_port)
            .write(&mut out, payload),
        _ if src.is_ipv4() => builder
            .icmpv4_echo_reply(src_port, dst_port)
            .write(&mut out, payload),
        _ => builder
            .icmpv6_echo_reply(src_port, dst_port)
            .write(&mut out, payload),
    };
    if written.is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The happy paths the fuzzer starts from work through the driver with every check on:
    /// an allocation, a permission and a channel carry data both ways (relay-to-self too),
    /// and a client packet, its reply and a DNS resolution pass the gateway.
    #[test]
    fn the_driver_reaches_data_on_both_machines() {
        let mut world = World::new();
        let ops = vec![
            Op::Allocate {
                client: 0,
                other_family: false,
                lifetime: None,
            },
            Op::Allocate {
                client: 1,
                other_family: false,
                lifetime: Some(900),
            },
            Op::Permit { client: 0, peer: 0 },
            Op::Bind {
                client: 0,
                channel: 1,
                peer: 0,
            },
            Op::ChannelData {
                client: 0,
                channel: 1,
                data: b"to the peer".to_vec(),
                padding: 1,
            },
            Op::FromPeer {
                peer: 0,
                client: 0,
                data: b"to the client".to_vec(),
            },
            // relay-to-self: client 0 to client 1's relayed address, both permitted
            Op::Permit { client: 0, peer: 4 },
            Op::Permit { client: 1, peer: 3 },
            Op::Send {
                client: 0,
                peer: 4,
                data: b"to myself".to_vec(),
            },
            Op::ClientPacket(ClientPacket {
                protocol: 1,
                v6: false,
                destination: 0,
                src_port: 0,
                dst_port: 53,
                tcp_flags: 0,
                payload: 8,
                counter_step: 1,
                forged_source: false,
            }),
            Op::ResourceReply {
                nth: 0,
                tcp_flags: 0,
                payload: 4,
            },
            Op::DnsAnswer {
                nth: 0,
                rcode_error: false,
                host: 5,
                ttl: 60,
                records: 1,
            },
            Op::Advance(700_000),
            Op::Timeout,
        ];
        let mut relayed = 0;
        for op in ops {
            world.run_due_timeouts();
            let before = world.relay.drop_counts().values().sum::<u64>();
            world.apply(op);
            relayed += u64::from(world.relay.drop_counts().values().sum::<u64>() == before);
            world.check();
        }
        assert!(relayed >= 10, "most operations were accepted: {relayed}");
        assert!(
            !world.resolved.is_empty(),
            "the DNS answer resolved a mapping"
        );
        assert!(
            world.last_frame_to_client.is_some(),
            "the reply reached the client"
        );
        assert_eq!(
            world.relay.allocation_count(),
            1,
            "the 600 s allocation expired"
        );
    }
}
