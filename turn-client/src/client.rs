//! The client side of TURN (RFC 8656 over UDP) against one relay, sans-IO.
//!
//! The client allocates (answering the relay's 401 challenge with long-term credentials, and a
//! 438 with the fresh nonce), keeps the allocation, its permissions and its channel bindings
//! alive by refreshing them before they expire, retransmits requests on the RFC 8489 schedule,
//! and wraps and unwraps the data that flows through the relay: ChannelData on a bound channel,
//! Send and Data indications otherwise.
//!
//! [`TurnClient`] holds the state and the sans-IO entry points for time and output; the rest of
//! its `impl` is spread over the child modules, one concern each:
//!
//! - `transactions`: requests built, sent and retransmitted; responses matched, challenges
//!   answered, and each outcome handed to the concern it is about;
//! - `allocation`: the allocation, its refresh before expiry and its release;
//! - `bindings`: permissions and channel bindings, and their refreshes;
//! - `peer_data`: data to and from peers through the relay.

mod allocation;
mod bindings;
mod peer_data;
mod transactions;

pub use transactions::{TRANSACTION_INSTANTS, transaction_schedule};

use std::{
    borrow::Cow,
    collections::{BTreeMap, VecDeque},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use proto::{
    credentials::Credentials,
    rng::SplitMix64,
    stun::{LongTermKey, Nonce, TransactionId},
};

use allocation::AllocationState;
use bindings::Refreshable;
use transactions::{Pending, Request};

/// Refresh an allocation this long before it expires (RFC 8656 §7: "roughly 1 minute").
pub const ALLOCATION_REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Permissions last 300 s and channels 600 s; both are refreshed every 240 s, a minute before
/// the permission would lapse (a ChannelBind refreshes the peer's permission too).
pub const BINDING_REFRESH_INTERVAL: Duration = Duration::from_secs(240);

/// Which relayed addresses to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Families {
    V4,
    V6,
    /// IPv4 and IPv6 (ADDITIONAL-ADDRESS-FAMILY).
    Dual,
}

#[derive(Debug, Clone)]
pub struct TurnClientConfig {
    /// The relay's address (port 3478).
    pub server: SocketAddr,
    pub credentials: Credentials,
    pub families: Families,
    /// LIFETIME to ask for; `None` takes the relay's default (600 s).
    pub lifetime: Option<Duration>,
    /// Seeds transaction ids.
    pub seed: u64,
}

/// A datagram for the host to send to the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnTransmit {
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// Data a peer sent through the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerData<'p> {
    pub peer: SocketAddr,
    pub data: Cow<'p, [u8]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    Allocated {
        relayed: Vec<SocketAddr>,
        mapped: Option<SocketAddr>,
        lifetime: Duration,
    },
    AllocationRefreshed {
        lifetime: Duration,
    },
    /// The relay refused the allocation (`code`), or stopped answering (`None`).
    AllocationFailed {
        code: Option<u16>,
    },
    /// The allocation is gone: released, or a refresh failed.
    AllocationLost,
    PermissionCreated {
        peer: IpAddr,
    },
    ChannelBound {
        peer: SocketAddr,
        channel: u16,
    },
    /// A ChannelBind (new or refresh) failed; the channel is no longer used.
    ChannelFailed {
        peer: SocketAddr,
        channel: u16,
        code: Option<u16>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("datagram from {0}, which is not the relay")]
    NotFromRelay(SocketAddr),
    #[error("not a STUN or ChannelData message from the relay")]
    Malformed,
    #[error("ChannelData on channel {0:#06x}, which is not bound")]
    UnknownChannel(u16),
    #[error("a response to no outstanding request")]
    UnexpectedResponse,
    #[error("a success response without valid MESSAGE-INTEGRITY")]
    BadIntegrity,
    #[error("no allocation yet")]
    NotAllocated,
    #[error("no permission or channel for {0}")]
    NoPathToPeer(SocketAddr),
    #[error("all 4096 channel numbers are in use")]
    NoChannelNumber,
    #[error("{0} is not of a family this allocation relays")]
    FamilyMismatch(SocketAddr),
}

/// The client side of TURN. See the module docs.
#[derive(Debug)]
pub struct TurnClient {
    config: TurnClientConfig,
    /// Realm and nonce from the last challenge; present once the relay has challenged us.
    key: Option<(LongTermKey, Nonce)>,
    allocation: AllocationState,
    mapped: Option<SocketAddr>,
    permissions: BTreeMap<IpAddr, Refreshable>,
    channels: BTreeMap<SocketAddr, (u16, Refreshable)>,
    peer_by_channel: BTreeMap<u16, SocketAddr>,
    pending: BTreeMap<TransactionId, Pending>,
    transmits: VecDeque<TurnTransmit>,
    events: VecDeque<ClientEvent>,
    rng: SplitMix64,
}

impl TurnClient {
    pub fn new(config: TurnClientConfig) -> Self {
        Self {
            rng: SplitMix64::new(config.seed),
            config,
            key: None,
            allocation: AllocationState::Idle,
            mapped: None,
            permissions: BTreeMap::new(),
            channels: BTreeMap::new(),
            peer_by_channel: BTreeMap::new(),
            pending: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn server(&self) -> SocketAddr {
        self.config.server
    }

    /// Retransmits, refreshes before expiry, and gives up on requests that got no answer.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.retransmit_due(now);
        self.refresh_allocation_if_due(now);
        self.refresh_bindings_due(now);
    }

    pub fn poll_transmit(&mut self) -> Option<TurnTransmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When each outstanding request's transaction acts next (a retransmission, or the
    /// give-up after the last one), earliest first.
    pub fn transaction_deadlines(&self) -> Vec<Instant> {
        let mut deadlines: Vec<Instant> = self
            .pending
            .values()
            .map(|pending| pending.next_retransmit)
            .collect();
        deadlines.sort_unstable();
        deadlines
    }

    /// The next instant at which [`TurnClient::handle_timeout`] has work: a retransmission,
    /// or a refresh that is not already under way.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retransmits = self.pending.values().map(|pending| pending.next_retransmit);
        let refreshing = self.has_pending(|request| matches!(request, Request::Refresh { .. }));
        let allocation = match &self.allocation {
            AllocationState::Allocated { expires_at, .. } if !refreshing => Some(
                expires_at
                    .checked_sub(ALLOCATION_REFRESH_MARGIN)
                    .unwrap_or(*expires_at),
            ),
            _ => None,
        };
        let permissions = self
            .permissions
            .values()
            .filter(|state| !state.in_flight)
            .filter_map(|state| state.refresh_at);
        let channels = self
            .channels
            .values()
            .filter(|(_, state)| !state.in_flight)
            .filter_map(|(_, state)| state.refresh_at);
        retransmits
            .chain(allocation)
            .chain(permissions)
            .chain(channels)
            .min()
    }
}
