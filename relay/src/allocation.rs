//! One allocation's state: its lifetime, permissions and channel bindings (RFC 8656 §7-§12).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use proto::stun::{LongTermKey, TransactionId};

/// Permission lifetime (RFC 8656 §9).
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// Channel binding lifetime (RFC 8656 §12).
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// After a binding expires, neither its number nor its peer may be bound to anything else for
/// this long (RFC 8656 §12).
pub const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);

/// Which address families an allocation relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Families {
    pub v4: bool,
    pub v6: bool,
}

impl Families {
    pub fn contains(self, ip: IpAddr) -> bool {
        self.has(ip.is_ipv6())
    }

    /// Whether the allocation relays IPv6 (`v6`) or IPv4 (`!v6`).
    pub fn has(self, v6: bool) -> bool {
        if v6 { self.v6 } else { self.v4 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Channel {
    peer: SocketAddr,
    /// Bound until then; reserved (cooling down) for `CHANNEL_COOLDOWN` after.
    expires_at: Instant,
}

impl Channel {
    fn reserved_until(&self) -> Instant {
        self.expires_at + CHANNEL_COOLDOWN
    }
}

/// Why a ChannelBind is refused (all 400 Bad Request, RFC 8656 §12.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindConflict {
    NumberTakenByOtherPeer,
    PeerTakenByOtherNumber,
}

/// A channel that carries data: its peer and the instant it stops (the earlier of the binding's
/// and the permission's expiry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveChannel {
    pub peer: SocketAddr,
    pub until: Instant,
}

#[derive(Debug)]
pub struct Allocation {
    pub client: SocketAddr,
    /// The relay address the client sends to (relay IP, port 3478).
    pub server: SocketAddr,
    pub port: u16,
    pub families: Families,
    /// Credentials of the Allocate; later requests must use the same username.
    pub key: LongTermKey,
    pub expires_at: Instant,
    /// The Allocate transaction and its response, to answer a retransmitted Allocate.
    pub allocate_transaction: TransactionId,
    pub allocate_response: Vec<u8>,
    permissions: BTreeMap<IpAddr, Instant>,
    channels: BTreeMap<u16, Channel>,
    channel_by_peer: BTreeMap<SocketAddr, u16>,
}

impl Allocation {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: SocketAddr,
        server: SocketAddr,
        port: u16,
        families: Families,
        key: LongTermKey,
        expires_at: Instant,
        allocate_transaction: TransactionId,
    ) -> Self {
        Self {
            client,
            server,
            port,
            families,
            key,
            expires_at,
            allocate_transaction,
            allocate_response: Vec::new(),
            permissions: BTreeMap::new(),
            channels: BTreeMap::new(),
            channel_by_peer: BTreeMap::new(),
        }
    }

    pub fn has_permission(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions
            .get(&ip)
            .is_some_and(|&expires_at| now < expires_at)
    }

    /// How many of `peers` have no live permission yet (each counted once).
    pub fn new_permissions(&self, peers: &[IpAddr], now: Instant) -> usize {
        let mut fresh: Vec<IpAddr> = peers
            .iter()
            .copied()
            .filter(|&peer| !self.has_permission(peer, now))
            .collect();
        fresh.sort_unstable();
        fresh.dedup();
        fresh.len()
    }

    /// Peers with a live permission.
    pub fn live_permissions(&self, now: Instant) -> usize {
        self.permissions
            .values()
            .filter(|&&expires_at| now < expires_at)
            .count()
    }

    /// Permissions stored, live or not yet forgotten.
    pub fn stored_permissions(&self) -> usize {
        self.permissions.len()
    }

    /// Channels stored, bound or cooling down or not yet forgotten.
    pub fn stored_channels(&self) -> usize {
        self.channels.len()
    }

    /// Whether `number` is bound or cooling down.
    pub fn holds_channel(&self, number: u16, now: Instant) -> bool {
        self.channels
            .get(&number)
            .is_some_and(|channel| now < channel.reserved_until())
    }

    /// Channels bound or cooling down.
    pub fn held_channels(&self, now: Instant) -> usize {
        self.channels
            .values()
            .filter(|channel| now < channel.reserved_until())
            .count()
    }

    pub fn install_permission(&mut self, ip: IpAddr, now: Instant) {
        self.permissions.insert(ip, now + PERMISSION_LIFETIME);
    }

    /// Checks that `number` may be bound to `peer` now, without changing anything.
    pub fn check_bind(
        &self,
        number: u16,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<(), BindConflict> {
        if let Some(channel) = self.channels.get(&number)
            && channel.peer != peer
            && now < channel.reserved_until()
        {
            return Err(BindConflict::NumberTakenByOtherPeer);
        }
        if let Some(&other) = self.channel_by_peer.get(&peer)
            && other != number
            && self
                .channels
                .get(&other)
                .is_some_and(|channel| now < channel.reserved_until())
        {
            return Err(BindConflict::PeerTakenByOtherNumber);
        }
        Ok(())
    }

    /// Binds (or refreshes) `number` to `peer` and installs the peer's permission, as a
    /// successful ChannelBind does. Call `check_bind` first.
    pub fn bind(&mut self, number: u16, peer: SocketAddr, now: Instant) {
        if let Some(old) = self.channels.get(&number)
            && old.peer != peer
        {
            self.channel_by_peer.remove(&old.peer);
        }
        if let Some(old_number) = self.channel_by_peer.get(&peer).copied()
            && old_number != number
        {
            self.channels.remove(&old_number);
        }
        self.channels.insert(
            number,
            Channel {
                peer,
                expires_at: now + CHANNEL_LIFETIME,
            },
        );
        self.channel_by_peer.insert(peer, number);
        self.install_permission(peer.ip(), now);
    }

    /// The channels that carry data at `now`, by number.
    pub fn active_channels(&self, now: Instant) -> BTreeMap<u16, ActiveChannel> {
        self.channels
            .iter()
            .filter_map(|(&number, channel)| {
                let permission = *self.permissions.get(&channel.peer.ip())?;
                let until = channel.expires_at.min(permission);
                (now < until).then_some((
                    number,
                    ActiveChannel {
                        peer: channel.peer,
                        until,
                    },
                ))
            })
            .collect()
    }

    /// Forgets permissions that expired and channels whose cooldown is over.
    pub fn forget_expired(&mut self, now: Instant) {
        self.permissions.retain(|_, expires_at| now < *expires_at);
        let channels = &mut self.channels;
        channels.retain(|_, channel| now < channel.reserved_until());
        self.channel_by_peer
            .retain(|_, number| channels.contains_key(number));
    }

    /// The next instant at which something in this allocation changes by itself.
    pub fn next_deadline(&self, now: Instant) -> Instant {
        let permission_deadlines = self.permissions.values().copied();
        let channel_deadlines = self
            .channels
            .values()
            .flat_map(|channel| [channel.expires_at, channel.reserved_until()]);
        permission_deadlines
            .chain(channel_deadlines)
            .filter(|&deadline| deadline > now)
            .fold(self.expires_at, Instant::min)
    }
}
