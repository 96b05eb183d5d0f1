//! STUN/TURN control messages from clients: Allocate, Refresh, CreatePermission, ChannelBind,
//! Binding, and Send indications (RFC 8656 §7-§12, RFC 8489 §9.2 for authentication).

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use proto::stun::{
    self, AdditionalAddressFamily, AddressFamily, Attribute, AttributeTrait as _, ChannelNumber,
    Data, DecodeError, EvenPort, Lifetime, LongTermKey, Message, MessageClass, Nonce, Realm,
    RequestedAddressFamily, RequestedTransport, ReservationToken, UnknownAttributes,
    XorMappedAddress, XorPeerAddress, XorRelayAddress, codes, methods,
};

use crate::{
    DEFAULT_ALLOCATION_LIFETIME, Drop, Event, FreeReason, MAX_ALLOCATION_LIFETIME,
    RESERVATION_LIFETIME, Relay, Transmit,
    allocation::{Allocation, Families},
    auth::{self, AuthFailure},
    reservations::Reservation,
};

/// The outcome of an authenticated request: a success response to sign, or an error code.
type Outcome = Result<Message, u16>;

/// The relayed port an Allocate asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WantedPort {
    Any,
    /// EVEN-PORT with R clear.
    Even,
    /// EVEN-PORT with R set: an even port N, and N+1 reserved.
    EvenAndNextReserved,
    /// The port a RESERVATION-TOKEN reserved, with the families of the allocation that made it.
    Reserved {
        port: u16,
        families: Families,
    },
}

/// Where a reply goes: from the relay address the request came to, back to the client.
#[derive(Debug, Clone, Copy)]
struct ReplyPath {
    client: SocketAddr,
    server: SocketAddr,
}

impl Relay {
    pub(crate) fn stun_from_client(
        &mut self,
        client: SocketAddr,
        server: SocketAddr,
        payload: &[u8],
        now: Instant,
    ) -> Result<(), Drop> {
        let path = ReplyPath { client, server };
        let message = match stun::decode(payload) {
            Ok(message) => message,
            Err(DecodeError::Broken {
                class: MessageClass::Request,
                method,
                transaction_id,
                reason,
            }) => {
                tracing::debug!(%client, %reason, "malformed request");
                let response = stun::error_response(method, transaction_id, codes::BAD_REQUEST);
                self.reply(path, response, None);
                return Ok(());
            }
            Err(_) => return Err(Drop::NotStun),
        };
        match message.class() {
            MessageClass::Request => {
                self.request(path, message, payload, now);
                Ok(())
            }
            MessageClass::Indication if message.method() == methods::SEND => {
                self.send_indication(client, &message, now)
            }
            _ => Err(Drop::UnexpectedMessage),
        }
    }

    fn reply(&mut self, path: ReplyPath, response: Message, key: Option<&LongTermKey>) {
        self.count_rejection(&response);
        if let Some(payload) = seal(response, key) {
            self.send_reply(path, payload);
        }
    }

    /// Counts an error response by its code.
    fn count_rejection(&mut self, response: &Message) {
        if response.class() == MessageClass::ErrorResponse {
            let code = stun::error_code(response).unwrap_or(0);
            *self.rejections.entry(code).or_default() += 1;
            tracing::debug!(code, method = ?response.method(), "refused a request");
        }
    }

    fn send_reply(&mut self, path: ReplyPath, payload: Vec<u8>) {
        self.transmits.push_back(Transmit {
            src: path.server,
            dst: path.client,
            payload,
        });
    }

    /// An error response carrying REALM and a fresh NONCE (401 and 438).
    fn challenge(&mut self, path: ReplyPath, request: &Message, code: u16, now: Instant) {
        let mut response = stun::error_response(request.method(), request.transaction_id(), code);
        let nonce = self
            .nonces
            .issue(self.seconds_since_start(now), path.client, path.server);
        if let (Ok(realm), Ok(nonce)) = (Realm::new(self.config.realm.clone()), Nonce::new(nonce)) {
            response.add_attribute(realm);
            response.add_attribute(nonce);
        }
        self.reply(path, response, None);
    }

    fn request(&mut self, path: ReplyPath, request: Message, datagram: &[u8], now: Instant) {
        if request.method() == methods::BINDING {
            return self.answer_binding(path, &request);
        }
        if let Some(rejection) = unserved_request(&request) {
            return self.reply(path, rejection, None);
        }
        let Some(key) = self.authenticate(path, (&request, datagram), now) else {
            return;
        };
        if request.method() == methods::ALLOCATE
            && let Some(cached) = self.retransmitted_allocate(&path, &request, &key)
        {
            return self.send_reply(path, cached);
        }
        let response = self.turn_response(path, &request, &key, now);
        self.reply_to_turn_request(path, response, &key);
        self.update_deadline(now);
    }

    /// A Binding request needs no authentication: the answer is the client's address as the
    /// relay sees it.
    fn answer_binding(&mut self, path: ReplyPath, request: &Message) {
        let mut response = success(request);
        response.add_attribute(XorMappedAddress::new(path.client));
        self.reply(path, response, None);
    }

    /// The request's key; or none, after answering the request with a challenge (401, 438) or
    /// an error.
    fn authenticate(
        &mut self,
        path: ReplyPath,
        (request, datagram): (&Message, &[u8]),
        now: Instant,
    ) -> Option<LongTermKey> {
        let failure = match auth::authenticate(
            (request, datagram),
            &self.config.realm,
            &self.config.shared_secret,
            (&self.nonces, path.client, path.server),
            self.seconds_since_start(now),
            self.unix_time(now),
        ) {
            Ok(key) => return Some(key),
            Err(failure) => failure,
        };
        match failure {
            AuthFailure::Challenge => self.challenge(path, request, codes::UNAUTHORIZED, now),
            AuthFailure::BadCredentials(why) => {
                tracing::debug!(client = %path.client, %why, "rejected credentials");
                self.challenge(path, request, codes::UNAUTHORIZED, now);
            }
            AuthFailure::StaleNonce => self.challenge(path, request, codes::STALE_NONCE, now),
            AuthFailure::MissingAttributes => {
                let response = stun::error_response(
                    request.method(),
                    request.transaction_id(),
                    codes::BAD_REQUEST,
                );
                self.reply(path, response, None);
            }
        }
        None
    }

    /// The response to an authenticated TURN request: its method's success response, or the
    /// error response of the code it failed with.
    fn turn_response(
        &mut self,
        path: ReplyPath,
        request: &Message,
        key: &LongTermKey,
        now: Instant,
    ) -> Message {
        let method = request.method();
        let outcome = match method {
            m if m == methods::ALLOCATE => self.allocate(path, request, key, now),
            m if m == methods::REFRESH => self.refresh(path, request, key, now),
            m if m == methods::CREATE_PERMISSION => self.create_permission(path, request, key, now),
            _ => self.channel_bind(path, request, key, now),
        };
        outcome.unwrap_or_else(|code| stun::error_response(method, request.transaction_id(), code))
    }

    /// Signs and sends the response to a TURN request. The success response to an Allocate is
    /// also kept with the allocation, to answer retransmissions of that request with.
    fn reply_to_turn_request(&mut self, path: ReplyPath, response: Message, key: &LongTermKey) {
        self.count_rejection(&response);
        let is_allocate_success = response.method() == methods::ALLOCATE
            && response.class() == MessageClass::SuccessResponse;
        let Some(payload) = seal(response, Some(key)) else {
            return;
        };
        if is_allocate_success
            && let Some(port) = self.by_client.get(&path.client).copied()
            && let Some(allocation) = self.allocations.get_mut(&port)
        {
            allocation.allocate_response = payload.clone();
        }
        self.send_reply(path, payload);
    }

    /// The host could not bind the socket of the allocation on `port` that
    /// [`Event::AllocationCreated`] announced. The allocation is freed
    /// ([`FreeReason::Unbindable`]), and the success response still queued for it becomes a
    /// signed 508 (Insufficient Capacity), counted: the client is never told of a relayed
    /// address nobody listens on, and may simply try again (another port is drawn). Call it
    /// while handling the event, before draining [`Relay::poll_transmit`]. `false` (nothing
    /// changed) if no allocation holds `port`.
    pub fn handle_bind_failure(&mut self, port: u16, now: Instant) -> bool {
        let Some(allocation) = self.allocations.get(&port) else {
            return false;
        };
        let refusal = stun::error_response(
            methods::ALLOCATE,
            allocation.allocate_transaction,
            codes::INSUFFICIENT_CAPACITY,
        );
        let queued = self.transmits.iter().position(|transmit| {
            transmit.dst == allocation.client && transmit.payload == allocation.allocate_response
        });
        let sealed = seal(refusal.clone(), Some(&allocation.key));
        match (queued, sealed) {
            (Some(index), Some(payload)) => self.transmits[index].payload = payload,
            // Already sent (the host drained the transmits first): the client learns when
            // its first use of the address fails; the allocation must go all the same.
            _ => tracing::warn!(port, "an unbindable allocation's success was already sent"),
        }
        self.count_rejection(&refusal);
        // The client never learns of the token either.
        self.reservations.cancel_made_by(port);
        self.free_allocation(port, FreeReason::Unbindable);
        self.update_deadline(now);
        true
    }

    /// The stored response, if `request` is a retransmission of the Allocate that created the
    /// client's allocation (RFC 8656 §7.2: answer it again rather than with 437).
    fn retransmitted_allocate(
        &self,
        path: &ReplyPath,
        request: &Message,
        key: &LongTermKey,
    ) -> Option<Vec<u8>> {
        let allocation = self.allocations.get(self.by_client.get(&path.client)?)?;
        (allocation.allocate_transaction == request.transaction_id()
            && allocation.key.username == key.username)
            .then(|| allocation.allocate_response.clone())
    }

    /// The allocation of this 5-tuple, if the request's username owns it.
    fn owned_allocation(&self, path: ReplyPath, key: &LongTermKey) -> Result<u16, u16> {
        let port = *self
            .by_client
            .get(&path.client)
            .ok_or(codes::ALLOCATION_MISMATCH)?;
        let allocation = self
            .allocations
            .get(&port)
            .ok_or(codes::ALLOCATION_MISMATCH)?;
        if allocation.key.username != key.username || allocation.server != path.server {
            return Err(codes::WRONG_CREDENTIALS);
        }
        Ok(port)
    }

    /// An Allocate (RFC 8656 §7.2), its checks in the RFC's order: 437, REQUESTED-TRANSPORT,
    /// RESERVATION-TOKEN, the families, EVEN-PORT, the quota; then the port, the reservation
    /// an EVEN-PORT with R set makes, and the allocation.
    fn allocate(
        &mut self,
        path: ReplyPath,
        request: &Message,
        key: &LongTermKey,
        now: Instant,
    ) -> Outcome {
        if self.by_client.contains_key(&path.client) {
            return Err(codes::ALLOCATION_MISMATCH);
        }
        let transport = request
            .get_attribute::<RequestedTransport>()
            .ok_or(codes::BAD_REQUEST)?;
        if transport.protocol() != stun::TRANSPORT_UDP {
            return Err(codes::UNSUPPORTED_TRANSPORT_PROTOCOL);
        }
        let wanted = self.wanted_port(request, key, now)?;
        let families = match wanted {
            WantedPort::Reserved { families, .. } => families,
            _ => self.requested_families(request)?,
        };
        if wanted == WantedPort::EvenAndNextReserved
            && request.get_attribute::<AdditionalAddressFamily>().is_some()
        {
            return Err(codes::BAD_REQUEST);
        }
        let held = self
            .allocations
            .values()
            .filter(|allocation| allocation.key.username == key.username)
            .count();
        if held >= self.config.allocation_quota {
            return Err(codes::ALLOCATION_QUOTA_REACHED);
        }
        if wanted == WantedPort::EvenAndNextReserved
            && self.reservations.len() >= self.config.max_reservations
        {
            tracing::debug!(client = %path.client, "no room for another port reservation");
            return Err(codes::INSUFFICIENT_CAPACITY);
        }
        let lifetime = desired_lifetime(request);
        let port = match wanted {
            WantedPort::Reserved { port, .. } => {
                self.reservations.take(port);
                port
            }
            _ => self.pick_port(wanted).ok_or(codes::INSUFFICIENT_CAPACITY)?,
        };
        let reservation_token = (wanted == WantedPort::EvenAndNextReserved)
            .then(|| self.reserve(port + 1, families, key, port, now));
        let allocation = Allocation::new(
            path.client,
            path.server,
            port,
            families,
            key.clone(),
            now + lifetime,
            request.transaction_id(),
        );
        let relayed = self.relayed_addresses_of(&allocation);
        self.allocations.insert(port, allocation);
        self.by_client.insert(path.client, port);
        self.events.push_back(Event::AllocationCreated {
            client: path.client,
            port,
            relayed: relayed.clone(),
            expires_at: now + lifetime,
        });
        let mut response = success(request);
        for address in relayed {
            response.add_attribute(XorRelayAddress::new(address));
        }
        response.add_attribute(lifetime_attribute(lifetime));
        if let Some(token) = reservation_token {
            response.add_attribute(ReservationToken::new(token));
        }
        response.add_attribute(XorMappedAddress::new(path.client));
        Ok(response)
    }

    /// What port an Allocate asks for (RFC 8656 §7.2): the one its RESERVATION-TOKEN reserved
    /// (400 beside EVEN-PORT or an address family, which the reservation decides; 508 for a
    /// token no live reservation of this username holds), an even one (EVEN-PORT), an even
    /// one with the next kept (EVEN-PORT with R set), or any.
    fn wanted_port(
        &self,
        request: &Message,
        key: &LongTermKey,
        now: Instant,
    ) -> Result<WantedPort, u16> {
        let even_port = request.get_attribute::<EvenPort>();
        if let Some(token) = request.get_attribute::<ReservationToken>() {
            if even_port.is_some()
                || request.get_attribute::<RequestedAddressFamily>().is_some()
                || request.get_attribute::<AdditionalAddressFamily>().is_some()
            {
                return Err(codes::BAD_REQUEST);
            }
            return match self
                .reservations
                .find(token.token(), key.username.name(), now)
            {
                Ok((port, families)) => Ok(WantedPort::Reserved { port, families }),
                Err(refusal) => {
                    tracing::debug!(?refusal, "refused a reservation token");
                    Err(codes::INSUFFICIENT_CAPACITY)
                }
            };
        }
        Ok(match even_port {
            Some(even) if even.is_requested() => WantedPort::EvenAndNextReserved,
            Some(_) => WantedPort::Even,
            None => WantedPort::Any,
        })
    }

    /// Keeps `port` for the username of `key` for [`RESERVATION_LIFETIME`], and returns the
    /// token that claims it: drawn from the seeded generator, never 0 (which some clients take
    /// for no token) and never one a live reservation holds.
    fn reserve(
        &mut self,
        port: u16,
        families: Families,
        key: &LongTermKey,
        made_by: u16,
        now: Instant,
    ) -> u64 {
        let token = loop {
            let token = self.rng.next_u64();
            if token != 0 && !self.reservations.has_token(token) {
                break token;
            }
        };
        self.reservations.insert(
            port,
            Reservation {
                token,
                families,
                username: key.username.name().to_owned(),
                made_by,
                expires_at: now + RESERVATION_LIFETIME,
            },
        );
        token
    }

    /// The families an Allocate asks for (RFC 8656 §7.2): REQUESTED-ADDRESS-FAMILY (IPv4 when
    /// absent), or IPv4 plus ADDITIONAL-ADDRESS-FAMILY IPv6 for a dual-stack allocation. A
    /// dual-stack request on a relay without IPv6 gets IPv4 only.
    fn requested_families(&self, request: &Message) -> Result<Families, u16> {
        let requested = request
            .get_attribute::<RequestedAddressFamily>()
            .map(RequestedAddressFamily::address_family);
        let additional = request
            .get_attribute::<AdditionalAddressFamily>()
            .map(AdditionalAddressFamily::address_family);
        let has_v4 = self.config.public_v4.is_some();
        let has_v6 = self.config.public_v6.is_some();
        match (requested, additional) {
            (Some(_), Some(_)) | (None, Some(AddressFamily::V4)) => Err(codes::BAD_REQUEST),
            (None | Some(AddressFamily::V4), None) if has_v4 => Ok(Families {
                v4: true,
                v6: false,
            }),
            (Some(AddressFamily::V6), None) if has_v6 => Ok(Families {
                v4: false,
                v6: true,
            }),
            (None, Some(AddressFamily::V6)) if has_v4 => Ok(Families {
                v4: true,
                v6: has_v6,
            }),
            _ => Err(codes::ADDRESS_FAMILY_NOT_SUPPORTED),
        }
    }

    /// A free port of the range (no allocation, no reservation) of the kind `wanted` asks for,
    /// searched from a point the seeded generator draws.
    fn pick_port(&mut self, wanted: WantedPort) -> Option<u16> {
        let start = u32::from(*self.config.port_range.start());
        let last = *self.config.port_range.end();
        let size = u32::from(last) - start + 1;
        if self.allocations.len() >= size as usize {
            return None;
        }
        let offset = (self.rng.next_u64() % u64::from(size)) as u32;
        let free =
            |port: u16| !self.allocations.contains_key(&port) && !self.reservations.holds(port);
        (0..size)
            .map(|step| (start + (offset + step) % size) as u16)
            .find(|&port| {
                free(port)
                    && match wanted {
                        WantedPort::Even => port % 2 == 0,
                        WantedPort::EvenAndNextReserved => {
                            port % 2 == 0 && port < last && free(port + 1)
                        }
                        WantedPort::Any | WantedPort::Reserved { .. } => true,
                    }
            })
    }

    fn refresh(
        &mut self,
        path: ReplyPath,
        request: &Message,
        key: &LongTermKey,
        now: Instant,
    ) -> Outcome {
        let port = self.owned_allocation(path, key)?;
        if let Some(family) = request.get_attribute::<RequestedAddressFamily>() {
            let v6 = family.address_family() == AddressFamily::V6;
            let families = self.allocations.get(&port).map(|a| a.families);
            if !families.is_some_and(|families| families.has(v6)) {
                return Err(codes::PEER_ADDRESS_FAMILY_MISMATCH);
            }
        }
        let requested = request.get_attribute::<Lifetime>().map(Lifetime::lifetime);
        let mut response = success(request);
        if requested == Some(Duration::ZERO) {
            self.free_allocation(port, FreeReason::Deleted);
            response.add_attribute(lifetime_attribute(Duration::ZERO));
            return Ok(response);
        }
        let lifetime = desired_lifetime(request);
        if let Some(allocation) = self.allocations.get_mut(&port) {
            allocation.expires_at = now + lifetime;
        }
        self.events.push_back(Event::AllocationRefreshed {
            client: path.client,
            port,
            expires_at: now + lifetime,
        });
        response.add_attribute(lifetime_attribute(lifetime));
        Ok(response)
    }

    fn create_permission(
        &mut self,
        path: ReplyPath,
        request: &Message,
        key: &LongTermKey,
        now: Instant,
    ) -> Outcome {
        let port = self.owned_allocation(path, key)?;
        let peers: Vec<SocketAddr> = request
            .attributes()
            .filter_map(|attribute| match attribute {
                Attribute::XorPeerAddress(peer) => Some(peer.address()),
                _ => None,
            })
            .collect();
        if peers.is_empty() {
            return Err(codes::BAD_REQUEST);
        }
        let allocation = self
            .allocations
            .get_mut(&port)
            .ok_or(codes::ALLOCATION_MISMATCH)?;
        if peers
            .iter()
            .any(|peer| !allocation.families.contains(peer.ip()))
        {
            return Err(codes::PEER_ADDRESS_FAMILY_MISMATCH);
        }
        if peers
            .iter()
            .any(|peer| !self.config.peer_policy.permits(peer.ip()))
        {
            return Err(codes::FORBIDDEN);
        }
        let ips: Vec<_> = peers.iter().map(SocketAddr::ip).collect();
        if allocation.live_permissions(now) + allocation.new_permissions(&ips, now)
            > self.config.max_permissions
        {
            return Err(codes::INSUFFICIENT_CAPACITY);
        }
        for peer in &peers {
            allocation.install_permission(peer.ip(), now);
        }
        self.sync_channels(port, now);
        Ok(success(request))
    }

    fn channel_bind(
        &mut self,
        path: ReplyPath,
        request: &Message,
        key: &LongTermKey,
        now: Instant,
    ) -> Outcome {
        let port = self.owned_allocation(path, key)?;
        // A number outside the channel range does not decode (`ChannelNumber`), so such a
        // request was answered 400 as malformed before it came here.
        let number = request
            .get_attribute::<ChannelNumber>()
            .map(|number| number.value())
            .ok_or(codes::BAD_REQUEST)?;
        let peer = request
            .get_attribute::<XorPeerAddress>()
            .map(XorPeerAddress::address)
            .ok_or(codes::BAD_REQUEST)?;
        let allocation = self
            .allocations
            .get_mut(&port)
            .ok_or(codes::ALLOCATION_MISMATCH)?;
        if !allocation.families.contains(peer.ip()) {
            return Err(codes::PEER_ADDRESS_FAMILY_MISMATCH);
        }
        if !self.config.peer_policy.permits(peer.ip()) {
            return Err(codes::FORBIDDEN);
        }
        allocation
            .check_bind(number, peer, now)
            .map_err(|_| codes::BAD_REQUEST)?;
        let grows = !allocation.holds_channel(number, now);
        if grows && allocation.held_channels(now) >= self.config.max_channels
            || allocation.live_permissions(now) + allocation.new_permissions(&[peer.ip()], now)
                > self.config.max_permissions
        {
            return Err(codes::INSUFFICIENT_CAPACITY);
        }
        allocation.bind(number, peer, now);
        self.sync_channels(port, now);
        Ok(success(request))
    }

    /// A Send indication: relay its DATA to its XOR-PEER-ADDRESS if permitted.
    fn send_indication(
        &mut self,
        client: SocketAddr,
        indication: &Message,
        now: Instant,
    ) -> Result<(), Drop> {
        let port = *self.by_client.get(&client).ok_or(Drop::NoAllocation)?;
        let (Some(peer), Some(data)) = (
            indication
                .get_attribute::<XorPeerAddress>()
                .map(XorPeerAddress::address),
            indication.get_attribute::<Data>(),
        ) else {
            return Err(Drop::MalformedIndication);
        };
        let allocation = self.allocations.get(&port).ok_or(Drop::NoAllocation)?;
        if !allocation.families.contains(peer.ip()) {
            return Err(Drop::FamilyNotRelayed);
        }
        if !allocation.has_permission(peer.ip(), now) {
            return Err(Drop::NoPermission);
        }
        let src = self
            .relayed_address(port, peer.ip())
            .ok_or(Drop::FamilyNotRelayed)?;
        let transmit = if self.is_own_ip(peer.ip()) {
            self.deliver_to_own_allocation(src, peer, data.data(), now)?
                .map(|relayed| relayed.to_transmit())
        } else {
            Some(Transmit {
                src,
                dst: peer,
                payload: data.data().to_vec(),
            })
        };
        self.transmits.extend(transmit);
        Ok(())
    }
}

/// The error response to a request this relay does not serve, whoever sent it: a method other
/// than the four TURN requests (400), or attributes it must understand and does not (420).
fn unserved_request(request: &Message) -> Option<Message> {
    let (method, transaction_id) = (request.method(), request.transaction_id());
    let turn_methods = [
        methods::ALLOCATE,
        methods::REFRESH,
        methods::CREATE_PERMISSION,
        methods::CHANNEL_BIND,
    ];
    if !turn_methods.contains(&method) {
        return Some(stun::error_response(
            method,
            transaction_id,
            codes::BAD_REQUEST,
        ));
    }
    let unknown: Vec<_> = request
        .unknown_attributes()
        .map(|attribute| attribute.get_type())
        .filter(|kind| kind.is_comprehension_required())
        .collect();
    if unknown.is_empty() {
        return None;
    }
    let mut response = stun::error_response(method, transaction_id, codes::UNKNOWN_ATTRIBUTE);
    response.add_attribute(UnknownAttributes::new(unknown));
    Some(response)
}

/// The encoded response, signed with `key` if given; none (logged) if it cannot be encoded.
fn seal(response: Message, key: Option<&LongTermKey>) -> Option<Vec<u8>> {
    stun::seal(response, key)
        .map_err(|error| tracing::error!(%error, "cannot encode a response"))
        .ok()
}

fn success(request: &Message) -> Message {
    Message::new(
        MessageClass::SuccessResponse,
        request.method(),
        request.transaction_id(),
    )
}

/// RFC 8656 §7.2/§7.3: min(requested, maximum), but never less than the default.
fn desired_lifetime(request: &Message) -> Duration {
    request
        .get_attribute::<Lifetime>()
        .map(Lifetime::lifetime)
        .map_or(DEFAULT_ALLOCATION_LIFETIME, |requested| {
            requested
                .min(MAX_ALLOCATION_LIFETIME)
                .max(DEFAULT_ALLOCATION_LIFETIME)
        })
}

fn lifetime_attribute(lifetime: Duration) -> Lifetime {
    // Lifetimes here are at most an hour, far inside LIFETIME's 32-bit seconds.
    Lifetime::new(lifetime).unwrap_or_else(|_| unreachable!("lifetime fits 32 bits"))
}
