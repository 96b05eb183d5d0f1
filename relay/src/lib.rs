//! The TURN relay (RFC 8656 over UDP, RFC 8489 STUN), as a sans-IO state machine.
//!
//! The host feeds it datagrams with [`Relay::handle_input`] and the passage of time with
//! [`Relay::handle_timeout`], and drains [`Relay::poll_transmit`], [`Relay::poll_event`] and
//! [`Relay::poll_timeout`]. The relay owns no socket, clock, thread or unseeded randomness: one
//! seed and one sequence of inputs give one sequence of outputs.
//!
//! Data takes a fast path: `handle_input` returns the datagram to relay ([`Relayed`]) directly,
//! borrowing the input's bytes, so relaying ChannelData allocates and copies nothing. Control
//! traffic (STUN responses, Data indications) is queued for `poll_transmit`.
//!
//! **Relay-to-self.** When a peer address is one of this relay's own relayed addresses (both
//! clients allocated here), the relay hands the datagram to that allocation itself: ChannelData
//! from client A comes out as ChannelData (or a Data indication) to client B. No datagram
//! addressed to the relay's own address is ever produced.
//!
//! **Events.** A channel is active while its binding and its peer's permission are both alive;
//! [`Event::ChannelBound`] and [`Event::ChannelUnbound`] bracket that time, so an XDP fast path
//! that mirrors them holds exactly [`Relay::channel_bindings`].

mod allocation;
mod auth;
mod occupancy;
mod peer_policy;
mod requests;
mod reservations;
mod types;

use std::{
    collections::{BTreeMap, VecDeque},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    ops::RangeInclusive,
    time::{Duration, Instant},
};

use allocation::{ActiveChannel, Allocation};
pub use allocation::{CHANNEL_COOLDOWN, CHANNEL_LIFETIME, PERMISSION_LIFETIME};
pub use occupancy::Occupancy;
pub use peer_policy::PeerPolicy;
use proto::{
    channel_data::{self, ChannelData},
    rng::SplitMix64,
    stun::{self, Data, Message, MessageClass, XorPeerAddress, methods},
};
pub use reservations::RESERVATION_LIFETIME;
use reservations::Reservations;
use rustc_hash::FxHashMap;
pub use types::{ChannelBinding, Drop, Event, FreeReason, Relayed, Transmit};

/// The port clients talk to (STUN, TURN control and ChannelData).
pub const TURN_PORT: u16 = 3478;
/// Allocation lifetime without a LIFETIME attribute, and the least a client gets.
pub const DEFAULT_ALLOCATION_LIFETIME: Duration = Duration::from_secs(600);
/// The longest allocation lifetime granted.
pub const MAX_ALLOCATION_LIFETIME: Duration = Duration::from_secs(3600);
/// The allocation port range of RFC 8656 (the IANA dynamic range).
pub const ALLOCATION_PORTS: RangeInclusive<u16> = 49152..=65535;
/// The shortest shared secret a relay accepts: TURN REST passwords are HMACs under it, so a
/// short one can be guessed offline from one captured request.
pub const MIN_SHARED_SECRET_LEN: usize = 16;

/// How a relay is set up.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The relay's public IPv4 address: clients send to it, and IPv4 relayed addresses use it.
    pub public_v4: Option<Ipv4Addr>,
    /// The relay's public IPv6 address.
    pub public_v6: Option<Ipv6Addr>,
    pub realm: String,
    /// The TURN REST API shared secret that passwords derive from.
    pub shared_secret: Vec<u8>,
    /// Ports handed out to allocations; a sub-range of [`ALLOCATION_PORTS`].
    pub port_range: RangeInclusive<u16>,
    /// Allocations one username may hold at once (486 beyond).
    pub allocation_quota: usize,
    /// How long a nonce stays fresh (438 after).
    pub nonce_lifetime: Duration,
    /// Peer IPs one allocation may hold permissions for at once (508 beyond): every request
    /// and every timer walks them.
    pub max_permissions: usize,
    /// Channels one allocation may hold at once, bound or cooling down (508 beyond).
    pub max_channels: usize,
    /// Ports the relay keeps reserved at once for a RESERVATION-TOKEN (RFC 8656 §7.2), over all
    /// users: an Allocate with EVEN-PORT's R bit set past it is refused with 508.
    pub max_reservations: usize,
    /// Which peer addresses allocations may reach (403 for the others).
    pub peer_policy: PeerPolicy,
    /// Unix time (seconds) at the `now` given to [`Relay::new`]; usernames expire against it.
    pub unix_time_at_start: u64,
    /// Seeds port choice, nonces and transaction ids.
    pub seed: u64,
}

impl RelayConfig {
    pub fn new(realm: &str, shared_secret: &[u8]) -> Self {
        Self {
            public_v4: None,
            public_v6: None,
            realm: realm.to_owned(),
            shared_secret: shared_secret.to_vec(),
            port_range: ALLOCATION_PORTS,
            allocation_quota: 10,
            nonce_lifetime: Duration::from_secs(3600),
            max_permissions: 128,
            max_channels: 64,
            max_reservations: 64,
            peer_policy: PeerPolicy::default(),
            unix_time_at_start: 0,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("the relay needs a public IPv4 or IPv6 address")]
    NoPublicAddress,
    #[error("allocation ports {start}-{end} are empty or outside 49152-65535")]
    BadPortRange { start: u16, end: u16 },
    #[error("the realm must not be empty")]
    EmptyRealm,
    #[error("the shared secret has {len} bytes; at least {MIN_SHARED_SECRET_LEN} are needed")]
    WeakSecret { len: usize },
}

/// A route's key: an address (IPv4 as IPv4-mapped IPv6: the same host either way) and a 16-bit
/// number beside its port (a channel number, or an allocation port). Hashing two plain integers
/// is several times cheaper than hashing a `SocketAddr`, and this lookup is the whole data path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct RouteKey {
    ip: u128,
    port_and_number: u32,
}

impl RouteKey {
    fn new(address: SocketAddr, number: u16) -> Self {
        let ip = match address.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
            IpAddr::V6(v6) => v6.to_bits(),
        };
        Self {
            ip,
            port_and_number: (u32::from(address.port()) << 16) | u32::from(number),
        }
    }
}

/// Where data for an active channel goes, keyed by (client, channel number).
#[derive(Debug, Clone, Copy)]
struct ChannelRoute {
    /// The allocation's relayed address of the peer's family: the data's source.
    src: SocketAddr,
    peer: SocketAddr,
    /// The peer is another allocation on this relay (relay-to-self).
    to_self: bool,
    until: Instant,
}

/// Where data from a peer goes, keyed by (allocation port, peer).
#[derive(Debug, Clone, Copy)]
struct PeerRoute {
    client: SocketAddr,
    server: SocketAddr,
    channel: u16,
    until: Instant,
}

/// The relay. See the crate docs.
#[derive(Debug)]
pub struct Relay {
    config: RelayConfig,
    origin: Instant,
    nonces: auth::NonceKey,
    rng: SplitMix64,
    allocations: BTreeMap<u16, Allocation>,
    by_client: FxHashMap<SocketAddr, u16>,
    /// Ports kept for a later Allocate with a RESERVATION-TOKEN.
    reservations: Reservations,
    /// Active channels by (client, number) and by (port, peer): the data path's only lookups.
    channel_routes: FxHashMap<RouteKey, ChannelRoute>,
    peer_routes: FxHashMap<RouteKey, PeerRoute>,
    /// Active channels as last announced in events, per allocation port.
    announced: BTreeMap<u16, BTreeMap<u16, ActiveChannel>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    drops: BTreeMap<Drop, u64>,
    /// Error responses sent, by error code.
    rejections: BTreeMap<u16, u64>,
    next_deadline: Option<Instant>,
}

impl Relay {
    pub fn new(config: RelayConfig, now: Instant) -> Result<Self, ConfigError> {
        if config.public_v4.is_none() && config.public_v6.is_none() {
            return Err(ConfigError::NoPublicAddress);
        }
        let (start, end) = (*config.port_range.start(), *config.port_range.end());
        if start > end || start < *ALLOCATION_PORTS.start() {
            return Err(ConfigError::BadPortRange { start, end });
        }
        if config.realm.is_empty() {
            return Err(ConfigError::EmptyRealm);
        }
        if config.shared_secret.len() < MIN_SHARED_SECRET_LEN {
            return Err(ConfigError::WeakSecret {
                len: config.shared_secret.len(),
            });
        }
        Ok(Self {
            nonces: auth::NonceKey::new(config.seed, &config.shared_secret, config.nonce_lifetime),
            rng: SplitMix64::new(config.seed),
            config,
            origin: now,
            allocations: BTreeMap::new(),
            by_client: FxHashMap::default(),
            reservations: Reservations::default(),
            channel_routes: FxHashMap::default(),
            peer_routes: FxHashMap::default(),
            announced: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            drops: BTreeMap::new(),
            rejections: BTreeMap::new(),
            next_deadline: None,
        })
    }

    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// Takes one datagram that arrived from `from` on the relay's address `to`.
    ///
    /// Returns the data datagram to relay now, if any; control replies are queued for
    /// [`Relay::poll_transmit`]. A dropped datagram changes nothing but a drop counter, and the
    /// error says why.
    pub fn handle_input<'p>(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        payload: &'p [u8],
        now: Instant,
    ) -> Result<Option<Relayed<'p>>, Drop> {
        let result = if !self.is_own_ip(to.ip()) {
            Err(Drop::NotForRelay)
        } else if to.port() == TURN_PORT {
            if channel_data::looks_like_channel_data(payload) {
                self.channel_data_from_client(from, payload, now)
            } else {
                self.stun_from_client(from, to, payload, now).map(|()| None)
            }
        } else if self.config.port_range.contains(&to.port()) {
            self.data_from_peer(from, to, payload, now)
        } else {
            Err(Drop::NotForRelay)
        };
        if let Err(reason) = result {
            *self.drops.entry(reason).or_default() += 1;
            tracing::debug!(%from, %to, len = payload.len(), %reason, "dropped datagram");
        }
        result
    }

    /// Expires allocations, permissions, channels and port reservations whose time has come.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.reservations.forget_expired(now);
        let expired: Vec<u16> = self
            .allocations
            .values()
            .filter(|allocation| allocation.expires_at <= now)
            .map(|allocation| allocation.port)
            .collect();
        for port in expired {
            self.free_allocation(port, FreeReason::Expired);
        }
        let ports: Vec<u16> = self.allocations.keys().copied().collect();
        for port in ports {
            if let Some(allocation) = self.allocations.get_mut(&port) {
                allocation.forget_expired(now);
            }
            self.sync_channels(port, now);
        }
        self.update_deadline(now);
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next instant at which [`Relay::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_deadline
    }

    /// The active channels, sorted: the table an XDP fast path must hold.
    pub fn channel_bindings(&self) -> Vec<ChannelBinding> {
        let mut bindings: Vec<ChannelBinding> = self
            .announced
            .iter()
            .flat_map(|(&port, channels)| {
                let client = self.allocations.get(&port).map(|a| a.client);
                channels.iter().filter_map(move |(&channel, active)| {
                    Some(ChannelBinding {
                        client: client?,
                        channel,
                        allocation_port: port,
                        peer: active.peer,
                    })
                })
            })
            .collect();
        bindings.sort();
        bindings
    }

    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// The relayed addresses of the allocation on `port`.
    pub fn relayed_addresses(&self, port: u16) -> Vec<SocketAddr> {
        self.allocations
            .get(&port)
            .map(|allocation| self.relayed_addresses_of(allocation))
            .unwrap_or_default()
    }

    /// Dropped datagrams by reason.
    pub fn drop_counts(&self) -> &BTreeMap<Drop, u64> {
        &self.drops
    }

    /// Requests refused, by the error code of the response that refused them (401 and 438
    /// challenges included).
    pub fn rejection_counts(&self) -> &BTreeMap<u16, u64> {
        &self.rejections
    }

    /// Whether `ip` is one of the relay's own public addresses.
    pub fn is_own_ip(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => self.config.public_v4 == Some(v4),
            IpAddr::V6(v6) => self.config.public_v6 == Some(v6),
        }
    }

    fn relayed_address(&self, port: u16, family_of: IpAddr) -> Option<SocketAddr> {
        match family_of {
            IpAddr::V4(_) => self
                .config
                .public_v4
                .map(|ip| SocketAddr::new(ip.into(), port)),
            IpAddr::V6(_) => self
                .config
                .public_v6
                .map(|ip| SocketAddr::new(ip.into(), port)),
        }
    }

    fn relayed_addresses_of(&self, allocation: &Allocation) -> Vec<SocketAddr> {
        let mut addresses = Vec::new();
        if allocation.families.v4 {
            addresses.extend(
                self.config
                    .public_v4
                    .map(|ip| SocketAddr::new(ip.into(), allocation.port)),
            );
        }
        if allocation.families.v6 {
            addresses.extend(
                self.config
                    .public_v6
                    .map(|ip| SocketAddr::new(ip.into(), allocation.port)),
            );
        }
        addresses
    }

    /// ChannelData from a client: to its peer, or (relay-to-self) to another allocation here.
    fn channel_data_from_client<'p>(
        &mut self,
        client: SocketAddr,
        payload: &'p [u8],
        now: Instant,
    ) -> Result<Option<Relayed<'p>>, Drop> {
        let message = ChannelData::parse(payload).map_err(|_| Drop::MalformedChannelData)?;
        let Some(route) = self
            .channel_routes
            .get(&RouteKey::new(client, message.channel))
            .filter(|route| now < route.until)
            .copied()
        else {
            return Err(if self.by_client.contains_key(&client) {
                Drop::UnboundChannel
            } else {
                Drop::NoAllocation
            });
        };
        if route.to_self {
            return self.deliver_to_own_allocation(route.src, route.peer, message.data, now);
        }
        Ok(Some(Relayed {
            src: route.src,
            dst: route.peer,
            channel: None,
            data: message.data,
        }))
    }

    /// A datagram from a peer to an allocation's relayed address.
    fn data_from_peer<'p>(
        &mut self,
        peer: SocketAddr,
        to: SocketAddr,
        payload: &'p [u8],
        now: Instant,
    ) -> Result<Option<Relayed<'p>>, Drop> {
        // An active channel implies the allocation relays the peer's (and so `to`'s) family;
        // only the slow path needs the allocation itself.
        if let Some(relayed) = self.relay_on_channel(to.port(), peer, payload, now) {
            return Ok(Some(relayed));
        }
        let allocation = self
            .allocations
            .get(&to.port())
            .ok_or(Drop::UnusedAllocationPort)?;
        if !allocation.families.contains(to.ip()) {
            return Err(Drop::FamilyNotRelayed);
        }
        self.deliver_from_peer(to.port(), peer, payload, now)
    }

    /// Relay-to-self: `src` (a relayed address of this relay) sends to `dst`, another relayed
    /// address of this relay. The datagram goes to `dst`'s allocation as if it had arrived there
    /// from `src`, without ever touching the wire.
    fn deliver_to_own_allocation<'p>(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        data: &'p [u8],
        now: Instant,
    ) -> Result<Option<Relayed<'p>>, Drop> {
        let reachable = self
            .allocations
            .get(&dst.port())
            .is_some_and(|target| target.families.contains(dst.ip()));
        if !reachable {
            return Err(Drop::SelfDestinationUnreachable);
        }
        self.deliver_from_peer(dst.port(), src, data, now)
    }

    /// Hands data from `peer` to the client of the allocation on `port`: ChannelData when a
    /// channel is active, otherwise a Data indication if the peer has a permission.
    fn deliver_from_peer<'p>(
        &mut self,
        port: u16,
        peer: SocketAddr,
        data: &'p [u8],
        now: Instant,
    ) -> Result<Option<Relayed<'p>>, Drop> {
        if let Some(relayed) = self.relay_on_channel(port, peer, data, now) {
            return Ok(Some(relayed));
        }
        let allocation = self
            .allocations
            .get(&port)
            .ok_or(Drop::UnusedAllocationPort)?;
        if !allocation.has_permission(peer.ip(), now) {
            return Err(Drop::NoPermission);
        }
        let (server, client) = (allocation.server, allocation.client);
        let mut indication = Message::new(
            MessageClass::Indication,
            methods::DATA,
            stun::transaction_id(&mut self.rng),
        );
        indication.add_attribute(XorPeerAddress::new(peer));
        let Ok(data_attribute) = Data::new(data.to_vec()) else {
            return Err(Drop::MalformedIndication);
        };
        indication.add_attribute(data_attribute);
        match stun::encode(indication) {
            Ok(payload) => self.transmits.push_back(Transmit {
                src: server,
                dst: client,
                payload,
            }),
            Err(error) => tracing::error!(%error, "cannot encode a Data indication"),
        }
        Ok(None)
    }

    /// ChannelData to the client when `peer` has an active channel on the allocation `port`.
    fn relay_on_channel<'p>(
        &self,
        port: u16,
        peer: SocketAddr,
        data: &'p [u8],
        now: Instant,
    ) -> Option<Relayed<'p>> {
        let route = self.peer_routes.get(&RouteKey::new(peer, port))?;
        (now < route.until).then_some(Relayed {
            src: route.server,
            dst: route.client,
            channel: Some(route.channel),
            data,
        })
    }

    /// Brings the routes and events of the allocation on `port` in line with its active
    /// channels at `now`.
    fn sync_channels(&mut self, port: u16, now: Instant) {
        // A freed allocation's channels are unbound by `free_allocation`.
        let Some(allocation) = self.allocations.get(&port) else {
            return;
        };
        let (active, client, server) = (
            allocation.active_channels(now),
            allocation.client,
            allocation.server,
        );
        let announced = self.announced.remove(&port).unwrap_or_default();
        let binding = |channel: u16, peer: SocketAddr| ChannelBinding {
            client,
            channel,
            allocation_port: port,
            peer,
        };
        for (&number, old) in &announced {
            if active.get(&number).is_none_or(|new| new.peer != old.peer) {
                self.channel_routes.remove(&RouteKey::new(client, number));
                self.peer_routes.remove(&RouteKey::new(old.peer, port));
                self.events
                    .push_back(Event::ChannelUnbound(binding(number, old.peer)));
            }
        }
        for (&number, new) in &active {
            let fresh = announced
                .get(&number)
                .is_none_or(|old| old.peer != new.peer);
            let refreshed = !fresh
                && announced
                    .get(&number)
                    .is_some_and(|old| old.until != new.until);
            if fresh || refreshed {
                self.channel_routes.insert(
                    RouteKey::new(client, number),
                    ChannelRoute {
                        // Channels only go to peers of a family the allocation relays, so
                        // the relay has an address of that family.
                        src: self
                            .relayed_address(port, new.peer.ip())
                            .unwrap_or(new.peer),
                        peer: new.peer,
                        to_self: self.is_own_ip(new.peer.ip()),
                        until: new.until,
                    },
                );
                self.peer_routes.insert(
                    RouteKey::new(new.peer, port),
                    PeerRoute {
                        client,
                        server,
                        channel: number,
                        until: new.until,
                    },
                );
                let event = if fresh {
                    Event::ChannelBound(binding(number, new.peer))
                } else {
                    Event::ChannelRefreshed(binding(number, new.peer))
                };
                self.events.push_back(event);
            }
        }
        if !active.is_empty() {
            self.announced.insert(port, active);
        }
    }

    fn free_allocation(&mut self, port: u16, reason: FreeReason) {
        let Some(allocation) = self.allocations.remove(&port) else {
            return;
        };
        let client = allocation.client;
        let announced = self.announced.remove(&port).unwrap_or_default();
        for (number, old) in announced {
            self.channel_routes.remove(&RouteKey::new(client, number));
            self.peer_routes.remove(&RouteKey::new(old.peer, port));
            self.events.push_back(Event::ChannelUnbound(ChannelBinding {
                client,
                channel: number,
                allocation_port: port,
                peer: old.peer,
            }));
        }
        self.by_client.remove(&client);
        self.events.push_back(Event::AllocationFreed {
            client,
            port,
            reason,
        });
    }

    fn update_deadline(&mut self, now: Instant) {
        self.next_deadline = self
            .allocations
            .values()
            .map(|allocation| allocation.next_deadline(now))
            .chain(self.reservations.next_deadline())
            .min();
    }

    fn seconds_since_start(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs()
    }

    fn unix_time(&self, now: Instant) -> u64 {
        self.config.unix_time_at_start + self.seconds_since_start(now)
    }
}
