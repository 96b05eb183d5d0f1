//! The client side of TURN (RFC 8656 over UDP) against one relay, sans-IO.
//!
//! The client allocates (answering the relay's 401 challenge with long-term credentials, and a
//! 438 with the fresh nonce), keeps the allocation, its permissions and its channel bindings
//! alive by refreshing them before they expire, retransmits requests on the RFC 8489 schedule,
//! and wraps and unwraps the data that flows through the relay: ChannelData on a bound channel,
//! Send and Data indications otherwise.

use std::{
    borrow::Cow,
    collections::{BTreeMap, VecDeque},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use proto::{
    channel_data::{self, CHANNEL_RANGE, ChannelData},
    credentials::Credentials,
    rng::SplitMix64,
    stun::{
        self, AdditionalAddressFamily, AddressFamily, ChannelNumber, Data, Lifetime, LongTermKey,
        Message, MessageClass, Method, Nonce, Realm, RequestedAddressFamily, RequestedTransport,
        TransactionId, Username, XorMappedAddress, XorPeerAddress, codes, methods,
    },
};

/// Refresh an allocation this long before it expires (RFC 8656 §7: "roughly 1 minute").
pub const ALLOCATION_REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Permissions last 300 s and channels 600 s; both are refreshed every 240 s, a minute before
/// the permission would lapse (a ChannelBind refreshes the peer's permission too).
pub const BINDING_REFRESH_INTERVAL: Duration = Duration::from_secs(240);
/// RFC 8489 §6.2.1: initial RTO 500 ms, doubled each time, 7 transmissions, then 16 RTOs.
const INITIAL_RTO: Duration = Duration::from_millis(500);
const MAX_TRANSMISSIONS: u32 = 7;
const FINAL_WAIT_RTOS: u32 = 16;

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

#[derive(Debug, Clone, PartialEq, Eq)]
enum Request {
    Allocate,
    Refresh { lifetime: Option<Duration> },
    CreatePermission { peers: Vec<IpAddr> },
    ChannelBind { number: u16, peer: SocketAddr },
}

#[derive(Debug, Clone)]
struct Pending {
    request: Request,
    payload: Vec<u8>,
    transmissions: u32,
    rto: Duration,
    next_retransmit: Instant,
    /// A 438 answer was retried once with the fresh nonce.
    retried_stale_nonce: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum AllocationState {
    Idle,
    Allocating,
    Allocated {
        relayed: Vec<SocketAddr>,
        expires_at: Instant,
    },
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refreshable {
    /// Confirmed by the relay until then (`None` while the first request is outstanding).
    expires_at: Option<Instant>,
    refresh_at: Option<Instant>,
    in_flight: bool,
}

impl Refreshable {
    const NEW: Self = Self {
        expires_at: None,
        refresh_at: None,
        in_flight: false,
    };

    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|expires_at| now < expires_at)
    }
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

    /// Starts allocating (no-op while allocating or allocated).
    pub fn allocate(&mut self, now: Instant) {
        if matches!(
            self.allocation,
            AllocationState::Allocating | AllocationState::Allocated { .. }
        ) {
            return;
        }
        self.allocation = AllocationState::Allocating;
        self.send_request(Request::Allocate, now);
    }

    /// The relayed addresses, once allocated.
    pub fn relayed_addresses(&self) -> &[SocketAddr] {
        match &self.allocation {
            AllocationState::Allocated { relayed, .. } => relayed,
            _ => &[],
        }
    }

    /// The relayed address of `peer`'s family, the address the peer sees data come from.
    pub fn relayed_address_for(&self, peer: SocketAddr) -> Option<SocketAddr> {
        self.relayed_addresses()
            .iter()
            .copied()
            .find(|relayed| relayed.is_ipv4() == peer.is_ipv4())
    }

    /// The client's address as the relay saw it (XOR-MAPPED-ADDRESS).
    pub fn mapped_address(&self) -> Option<SocketAddr> {
        self.mapped
    }

    pub fn is_allocated(&self) -> bool {
        matches!(self.allocation, AllocationState::Allocated { .. })
    }

    /// Asks for (and then keeps alive) a permission for `peer`.
    pub fn create_permission(&mut self, peer: IpAddr, now: Instant) -> Result<(), ClientError> {
        self.check_family(SocketAddr::new(peer, 0))?;
        if self.permissions.contains_key(&peer) {
            return Ok(());
        }
        self.permissions.insert(peer, Refreshable::NEW);
        self.send_request(Request::CreatePermission { peers: vec![peer] }, now);
        Ok(())
    }

    /// Binds a channel to `peer` (and keeps it alive), returning its number. Binding an already
    /// bound peer returns its number.
    pub fn bind_channel(&mut self, peer: SocketAddr, now: Instant) -> Result<u16, ClientError> {
        self.check_family(peer)?;
        if let Some((number, _)) = self.channels.get(&peer) {
            return Ok(*number);
        }
        let number = CHANNEL_RANGE
            .clone()
            .find(|number| !self.peer_by_channel.contains_key(number))
            .ok_or(ClientError::NoChannelNumber)?;
        self.channels.insert(peer, (number, Refreshable::NEW));
        self.peer_by_channel.insert(number, peer);
        self.send_request(Request::ChannelBind { number, peer }, now);
        Ok(number)
    }

    /// The bound channel of `peer`, if the relay confirmed it and it is alive.
    pub fn channel_of(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        self.channels
            .get(&peer)
            .filter(|(_, state)| state.is_live(now))
            .map(|(number, _)| *number)
    }

    /// Every channel the relay confirmed and that is alive at `now`, as (peer, number).
    pub fn live_channels(&self, now: Instant) -> Vec<(SocketAddr, u16)> {
        self.channels
            .iter()
            .filter(|(_, (_, state))| state.is_live(now))
            .map(|(peer, (number, _))| (*peer, *number))
            .collect()
    }

    /// Frees the allocation (Refresh with LIFETIME 0) and forgets every binding.
    pub fn release(&mut self, now: Instant) {
        if self.is_allocated() {
            self.send_request(
                Request::Refresh {
                    lifetime: Some(Duration::ZERO),
                },
                now,
            );
        }
        self.forget_allocation();
    }

    /// Wraps `data` for `peer`: ChannelData on a live channel, otherwise a Send indication if
    /// the peer has a live permission.
    pub fn send_to(
        &mut self,
        peer: SocketAddr,
        data: &[u8],
        now: Instant,
    ) -> Result<TurnTransmit, ClientError> {
        if !self.is_allocated() {
            return Err(ClientError::NotAllocated);
        }
        if let Some(channel) = self.channel_of(peer, now) {
            return Ok(TurnTransmit {
                dst: self.config.server,
                payload: ChannelData { channel, data }.to_vec(),
            });
        }
        let permitted = self
            .permissions
            .get(&peer.ip())
            .is_some_and(|state| state.is_live(now))
            || self
                .channels
                .get(&peer)
                .is_some_and(|(_, state)| state.is_live(now));
        if !permitted {
            return Err(ClientError::NoPathToPeer(peer));
        }
        let mut indication = Message::new(
            MessageClass::Indication,
            methods::SEND,
            stun::transaction_id(&mut self.rng),
        );
        indication.add_attribute(XorPeerAddress::new(peer));
        let data = Data::new(data.to_vec()).map_err(|_| ClientError::Malformed)?;
        indication.add_attribute(data);
        let payload = stun::encode(indication).map_err(|_| ClientError::Malformed)?;
        Ok(TurnTransmit {
            dst: self.config.server,
            payload,
        })
    }

    /// Takes a datagram from the relay: a response (handled here) or data from a peer.
    pub fn handle_input<'p>(
        &mut self,
        from: SocketAddr,
        payload: &'p [u8],
        now: Instant,
    ) -> Result<Option<PeerData<'p>>, ClientError> {
        if from != self.config.server {
            return Err(ClientError::NotFromRelay(from));
        }
        if channel_data::looks_like_channel_data(payload) {
            let message = ChannelData::parse(payload).map_err(|_| ClientError::Malformed)?;
            let peer = *self
                .peer_by_channel
                .get(&message.channel)
                .ok_or(ClientError::UnknownChannel(message.channel))?;
            return Ok(Some(PeerData {
                peer,
                data: Cow::Borrowed(message.data),
            }));
        }
        let message = stun::decode(payload).map_err(|_| ClientError::Malformed)?;
        match message.class() {
            MessageClass::Indication if message.method() == methods::DATA => {
                let (Some(peer), Some(data)) = (
                    message.get_attribute::<XorPeerAddress>(),
                    message.get_attribute::<Data>(),
                ) else {
                    return Err(ClientError::Malformed);
                };
                Ok(Some(PeerData {
                    peer: peer.address(),
                    data: Cow::Owned(data.data().to_vec()),
                }))
            }
            MessageClass::SuccessResponse | MessageClass::ErrorResponse => {
                self.handle_response(message, now)?;
                Ok(None)
            }
            _ => Err(ClientError::Malformed),
        }
    }

    /// Retransmits, refreshes before expiry, and gives up on requests that got no answer.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<TransactionId> = self
            .pending
            .iter()
            .filter(|(_, pending)| pending.next_retransmit <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(pending) = self.pending.get_mut(&id) else {
                continue;
            };
            if pending.transmissions >= MAX_TRANSMISSIONS {
                let pending = self.pending.remove(&id).map(|pending| pending.request);
                if let Some(request) = pending {
                    self.request_failed(request, None);
                }
                continue;
            }
            pending.transmissions += 1;
            pending.rto *= 2;
            pending.next_retransmit = now
                + if pending.transmissions == MAX_TRANSMISSIONS {
                    INITIAL_RTO * FINAL_WAIT_RTOS
                } else {
                    pending.rto
                };
            self.transmits.push_back(TurnTransmit {
                dst: self.config.server,
                payload: pending.payload.clone(),
            });
        }
        self.refresh_due(now);
    }

    pub fn poll_transmit(&mut self) -> Option<TurnTransmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
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

    fn check_family(&self, peer: SocketAddr) -> Result<(), ClientError> {
        let ok = match self.config.families {
            Families::V4 => peer.is_ipv4(),
            Families::V6 => peer.is_ipv6(),
            Families::Dual => true,
        };
        if ok {
            Ok(())
        } else {
            Err(ClientError::FamilyMismatch(peer))
        }
    }

    fn refresh_due(&mut self, now: Instant) {
        if let AllocationState::Allocated { expires_at, .. } = &self.allocation
            && now + ALLOCATION_REFRESH_MARGIN >= *expires_at
            && !self.has_pending(|request| matches!(request, Request::Refresh { .. }))
        {
            self.send_request(
                Request::Refresh {
                    lifetime: self.config.lifetime,
                },
                now,
            );
        }
        let permissions: Vec<IpAddr> = self
            .permissions
            .iter()
            .filter(|(_, state)| !state.in_flight && state.refresh_at.is_some_and(|at| at <= now))
            .map(|(peer, _)| *peer)
            .collect();
        if !permissions.is_empty() {
            self.send_request(Request::CreatePermission { peers: permissions }, now);
        }
        let channels: Vec<(SocketAddr, u16)> = self
            .channels
            .iter()
            .filter(|(_, (_, state))| {
                !state.in_flight && state.refresh_at.is_some_and(|at| at <= now)
            })
            .map(|(peer, (number, _))| (*peer, *number))
            .collect();
        for (peer, number) in channels {
            self.send_request(Request::ChannelBind { number, peer }, now);
        }
    }

    fn has_pending(&self, matches: impl Fn(&Request) -> bool) -> bool {
        self.pending
            .values()
            .any(|pending| matches(&pending.request))
    }

    fn method_of(request: &Request) -> Method {
        match request {
            Request::Allocate => methods::ALLOCATE,
            Request::Refresh { .. } => methods::REFRESH,
            Request::CreatePermission { .. } => methods::CREATE_PERMISSION,
            Request::ChannelBind { .. } => methods::CHANNEL_BIND,
        }
    }

    fn build(&mut self, request: &Request) -> (TransactionId, Vec<u8>) {
        let id = stun::transaction_id(&mut self.rng);
        let mut message = Message::new(MessageClass::Request, Self::method_of(request), id);
        match request {
            Request::Allocate => {
                message.add_attribute(RequestedTransport::new(stun::TRANSPORT_UDP));
                match self.config.families {
                    Families::V4 => {}
                    Families::V6 => {
                        message.add_attribute(RequestedAddressFamily::new(AddressFamily::V6));
                    }
                    Families::Dual => {
                        message.add_attribute(AdditionalAddressFamily::new(AddressFamily::V6));
                    }
                }
                if let Some(lifetime) = self.config.lifetime.and_then(|l| Lifetime::new(l).ok()) {
                    message.add_attribute(lifetime);
                }
            }
            Request::Refresh { lifetime } => {
                if let Some(lifetime) = lifetime.and_then(|l| Lifetime::new(l).ok()) {
                    message.add_attribute(lifetime);
                }
            }
            Request::CreatePermission { peers } => {
                for peer in peers {
                    message.add_attribute(XorPeerAddress::new(SocketAddr::new(*peer, 0)));
                }
            }
            Request::ChannelBind { number, peer } => {
                if let Ok(number) = ChannelNumber::new(*number) {
                    message.add_attribute(number);
                }
                message.add_attribute(XorPeerAddress::new(*peer));
            }
        }
        let key = self.key.as_ref().map(|(key, nonce)| {
            message.add_attribute(key.username.clone());
            message.add_attribute(key.realm.clone());
            message.add_attribute(nonce.clone());
            key
        });
        let payload = stun::seal(message, key).unwrap_or_default();
        (id, payload)
    }

    fn send_request(&mut self, request: Request, now: Instant) {
        // Requests other than Allocate wait for the allocation; they are sent when it succeeds.
        if !matches!(request, Request::Allocate) && !self.is_allocated() {
            return;
        }
        self.set_in_flight(&request, true);
        self.transmit_request(request, now, false);
    }

    /// Builds, sends and remembers a request, to retransmit it until it is answered.
    fn transmit_request(&mut self, request: Request, now: Instant, retried_stale_nonce: bool) {
        let (id, payload) = self.build(&request);
        self.transmits.push_back(TurnTransmit {
            dst: self.config.server,
            payload: payload.clone(),
        });
        self.pending.insert(
            id,
            Pending {
                request,
                payload,
                transmissions: 1,
                rto: INITIAL_RTO,
                next_retransmit: now + INITIAL_RTO,
                retried_stale_nonce,
            },
        );
    }

    /// Marks the permissions or channel a request refreshes as (not) waiting for an answer.
    fn set_in_flight(&mut self, request: &Request, in_flight: bool) {
        match request {
            Request::CreatePermission { peers } => {
                for peer in peers {
                    if let Some(state) = self.permissions.get_mut(peer) {
                        state.in_flight = in_flight;
                    }
                }
            }
            Request::ChannelBind { peer, .. } => {
                if let Some((_, state)) = self.channels.get_mut(peer) {
                    state.in_flight = in_flight;
                }
            }
            Request::Allocate | Request::Refresh { .. } => {}
        }
    }

    fn handle_response(&mut self, response: Message, now: Instant) -> Result<(), ClientError> {
        let id = response.transaction_id();
        if !self.pending.contains_key(&id) {
            return Err(ClientError::UnexpectedResponse);
        }
        if response.class() == MessageClass::SuccessResponse {
            let authentic = self
                .key
                .as_ref()
                .is_some_and(|(key, _)| key.verifies(&response));
            if !authentic {
                return Err(ClientError::BadIntegrity);
            }
        }
        let Some(pending) = self.pending.remove(&id) else {
            return Err(ClientError::UnexpectedResponse);
        };
        if response.class() == MessageClass::ErrorResponse {
            let code = stun::error_code(&response);
            let challenge = matches!(code, Some(codes::UNAUTHORIZED) if self.key.is_none())
                || (code == Some(codes::STALE_NONCE) && !pending.retried_stale_nonce);
            if challenge && self.learn_challenge(&response) {
                let stale = code == Some(codes::STALE_NONCE);
                self.transmit_request(pending.request, now, stale);
                return Ok(());
            }
            self.request_failed(pending.request, code);
            return Ok(());
        }
        self.request_succeeded(pending.request, &response, now);
        Ok(())
    }

    /// Takes realm and nonce from a 401/438; false if they are missing.
    fn learn_challenge(&mut self, response: &Message) -> bool {
        let (Some(realm), Some(nonce)) = (
            response.get_attribute::<Realm>(),
            response.get_attribute::<Nonce>(),
        ) else {
            return false;
        };
        let Ok(username) = Username::new(self.config.credentials.username.clone()) else {
            return false;
        };
        let key = LongTermKey {
            username,
            realm: realm.clone(),
            password: self.config.credentials.password.clone(),
        };
        self.key = Some((key, nonce.clone()));
        true
    }

    fn request_succeeded(&mut self, request: Request, response: &Message, now: Instant) {
        let lifetime = response.get_attribute::<Lifetime>().map(Lifetime::lifetime);
        match request {
            Request::Allocate => {
                let relayed: Vec<SocketAddr> = response
                    .attributes()
                    .filter_map(|attribute| match attribute {
                        stun::Attribute::XorRelayAddress(address) => Some(address.address()),
                        _ => None,
                    })
                    .collect();
                let lifetime = lifetime.unwrap_or(Duration::from_secs(600));
                self.mapped = response
                    .get_attribute::<XorMappedAddress>()
                    .map(XorMappedAddress::address);
                self.allocation = AllocationState::Allocated {
                    relayed: relayed.clone(),
                    expires_at: now + lifetime,
                };
                self.events.push_back(ClientEvent::Allocated {
                    relayed,
                    mapped: self.mapped,
                    lifetime,
                });
                self.send_waiting_requests(now);
            }
            Request::Refresh {
                lifetime: Some(zero),
            } if zero.is_zero() => {}
            Request::Refresh { .. } => {
                let lifetime = lifetime.unwrap_or(Duration::from_secs(600));
                if let AllocationState::Allocated { expires_at, .. } = &mut self.allocation {
                    *expires_at = now + lifetime;
                }
                self.events
                    .push_back(ClientEvent::AllocationRefreshed { lifetime });
            }
            Request::CreatePermission { peers } => {
                for peer in peers {
                    if let Some(state) = self.permissions.get_mut(&peer) {
                        let first = state.expires_at.is_none();
                        *state = Refreshable {
                            expires_at: Some(now + Duration::from_secs(300)),
                            refresh_at: Some(now + BINDING_REFRESH_INTERVAL),
                            in_flight: false,
                        };
                        if first {
                            self.events
                                .push_back(ClientEvent::PermissionCreated { peer });
                        }
                    }
                }
            }
            Request::ChannelBind { number, peer } => {
                if let Some((bound, state)) = self.channels.get_mut(&peer)
                    && *bound == number
                {
                    let first = state.expires_at.is_none();
                    // The ChannelBind also refreshed the permission (300 s), which is what
                    // data needs; the binding itself would last 600 s.
                    *state = Refreshable {
                        expires_at: Some(now + Duration::from_secs(300)),
                        refresh_at: Some(now + BINDING_REFRESH_INTERVAL),
                        in_flight: false,
                    };
                    if first {
                        self.events.push_back(ClientEvent::ChannelBound {
                            peer,
                            channel: number,
                        });
                    }
                }
            }
        }
    }

    fn request_failed(&mut self, request: Request, code: Option<u16>) {
        match request {
            Request::Allocate => {
                self.allocation = AllocationState::Failed;
                self.events
                    .push_back(ClientEvent::AllocationFailed { code });
            }
            Request::Refresh {
                lifetime: Some(zero),
            } if zero.is_zero() => {}
            Request::Refresh { .. } => {
                self.forget_allocation();
                self.events.push_back(ClientEvent::AllocationLost);
            }
            Request::CreatePermission { peers } => {
                for peer in peers {
                    self.permissions.remove(&peer);
                }
            }
            Request::ChannelBind { number, peer } => {
                self.channels.remove(&peer);
                self.peer_by_channel.remove(&number);
                self.events.push_back(ClientEvent::ChannelFailed {
                    peer,
                    channel: number,
                    code,
                });
            }
        }
    }

    /// Sends the permission and channel requests made before the allocation existed.
    fn send_waiting_requests(&mut self, now: Instant) {
        let permissions: Vec<IpAddr> = self
            .permissions
            .iter()
            .filter(|(_, state)| !state.in_flight && state.expires_at.is_none())
            .map(|(peer, _)| *peer)
            .collect();
        if !permissions.is_empty() {
            self.send_request(Request::CreatePermission { peers: permissions }, now);
        }
        let channels: Vec<(SocketAddr, u16)> = self
            .channels
            .iter()
            .filter(|(_, (_, state))| !state.in_flight && state.expires_at.is_none())
            .map(|(peer, (number, _))| (*peer, *number))
            .collect();
        for (peer, number) in channels {
            self.send_request(Request::ChannelBind { number, peer }, now);
        }
    }

    fn forget_allocation(&mut self) {
        self.allocation = AllocationState::Idle;
        self.permissions.clear();
        self.channels.clear();
        self.peer_by_channel.clear();
        self.pending
            .retain(|_, pending| matches!(pending.request, Request::Refresh { .. }));
    }
}
