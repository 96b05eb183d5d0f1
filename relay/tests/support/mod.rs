//! An in-process world for driving the relay with real TURN clients (`peer::TurnClient`) and a
//! fake clock: datagrams move instantly, time moves only when a test says so, and every
//! datagram the relay emits is recorded so tests can assert on the wire.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use peer::{ClientEvent, Families, TurnClient, TurnClientConfig};
use proto::{credentials, stun};
use relay::{Event, Relay, RelayConfig};

pub const SECRET: &[u8] = b"correct horse battery staple";
pub const REALM: &str = "vpnsim.test";
/// Unix time at the start of every test world.
pub const START_UNIX: u64 = 1_800_000_000;

pub fn addr(text: &str) -> SocketAddr {
    text.parse().expect("socket address literal")
}

pub const RELAY_V4: &str = "203.0.113.1";
pub const RELAY_V6: &str = "2001:db8::1";

pub fn relay_config() -> RelayConfig {
    let mut config = RelayConfig::new(REALM, SECRET);
    config.public_v4 = Some(RELAY_V4.parse().expect("ip"));
    config.public_v6 = Some(RELAY_V6.parse().expect("ip"));
    config.unix_time_at_start = START_UNIX;
    config.seed = 42;
    config
}

pub fn server_v4() -> SocketAddr {
    addr("203.0.113.1:3478")
}

pub fn server_v6() -> SocketAddr {
    addr("[2001:db8::1]:3478")
}

/// A datagram the relay put on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wire {
    pub at: Instant,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

pub struct Client {
    pub addr: SocketAddr,
    pub turn: TurnClient,
    pub events: Vec<ClientEvent>,
    /// Data received from peers through the relay: (peer, data).
    pub received: Vec<(SocketAddr, Vec<u8>)>,
}

pub struct World {
    pub start: Instant,
    pub now: Instant,
    pub relay: Relay,
    pub clients: Vec<Client>,
    pub relay_events: Vec<Event>,
    /// Everything the relay sent, in order.
    pub wire: Vec<Wire>,
    /// Clients cut off from the relay: what they send and what is sent to them is lost.
    pub partitioned: Vec<bool>,
}

impl World {
    pub fn new(config: RelayConfig) -> Self {
        let start = Instant::now();
        Self {
            start,
            now: start,
            relay: Relay::new(config, start).expect("valid relay config"),
            clients: Vec::new(),
            relay_events: Vec::new(),
            wire: Vec::new(),
            partitioned: Vec::new(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Adds a client at `addr` talking to `server`, with credentials valid for a day.
    pub fn add_client(
        &mut self,
        addr: SocketAddr,
        server: SocketAddr,
        families: Families,
    ) -> usize {
        let credentials = credentials::rest_api_credentials(
            SECRET,
            START_UNIX + 86_400,
            &format!("c{}", self.clients.len()),
        );
        self.add_client_with(addr, server, families, credentials)
    }

    pub fn add_client_with(
        &mut self,
        addr: SocketAddr,
        server: SocketAddr,
        families: Families,
        credentials: credentials::Credentials,
    ) -> usize {
        let turn = TurnClient::new(TurnClientConfig {
            server,
            credentials,
            families,
            lifetime: None,
            seed: 1000 + self.clients.len() as u64,
        });
        self.partitioned.push(false);
        self.clients.push(Client {
            addr,
            turn,
            events: Vec::new(),
            received: Vec::new(),
        });
        self.clients.len() - 1
    }

    pub fn client(&mut self, index: usize) -> &mut Client {
        &mut self.clients[index]
    }

    /// Allocates for `index` and returns its relayed addresses.
    pub fn allocate(&mut self, index: usize) -> Vec<SocketAddr> {
        let now = self.now;
        self.clients[index].turn.allocate(now);
        self.pump();
        self.clients[index].turn.relayed_addresses().to_vec()
    }

    /// Adds an IPv4 client at `addr`, allocates, and binds a channel to `peer`; returns the
    /// client's index, its relayed address and the channel number.
    pub fn client_with_channel(
        &mut self,
        addr: SocketAddr,
        peer: SocketAddr,
    ) -> (usize, SocketAddr, u16) {
        let client = self.add_client(addr, server_v4(), Families::V4);
        let relayed = self.allocate(client)[0];
        let now = self.now;
        let channel = self.clients[client]
            .turn
            .bind_channel(peer, now)
            .expect("bind");
        self.pump();
        (client, relayed, channel)
    }

    /// Sends a datagram from outside (a peer, or a raw client) to the relay.
    pub fn send_to_relay(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        payload: &[u8],
    ) -> Result<(), relay::Drop> {
        let now = self.now;
        let relayed = self
            .relay
            .handle_input(from, to, payload, now)?
            .map(|relayed| relayed.to_transmit());
        if let Some(transmit) = relayed {
            self.deliver(transmit.src, transmit.dst, transmit.payload);
        }
        self.pump();
        Ok(())
    }

    /// Client `index` sends `data` to `peer` through the relay.
    pub fn client_sends(
        &mut self,
        index: usize,
        peer: SocketAddr,
        data: &[u8],
    ) -> Result<(), relay::Drop> {
        let now = self.now;
        let transmit = self.clients[index]
            .turn
            .send_to(peer, data, now)
            .unwrap_or_else(|error| panic!("the client has no path to {peer}: {error}"));
        let from = self.clients[index].addr;
        self.send_to_relay(from, transmit.dst, &transmit.payload)
    }

    /// Records a datagram the relay emitted and hands it to a client if one lives there.
    fn deliver(&mut self, src: SocketAddr, dst: SocketAddr, payload: Vec<u8>) {
        self.wire.push(Wire {
            at: self.now,
            src,
            dst,
            payload: payload.clone(),
        });
        let now = self.now;
        let reachable = self
            .clients
            .iter()
            .position(|client| client.addr == dst)
            .filter(|&index| !self.partitioned[index]);
        if let Some(client) = reachable.map(|index| &mut self.clients[index])
            && let Ok(Some(data)) = client.turn.handle_input(src, &payload, now)
        {
            client.received.push((data.peer, data.data.into_owned()));
        }
    }

    /// Moves datagrams between clients and relay until nobody has anything to send.
    pub fn pump(&mut self) {
        loop {
            let mut progressed = false;
            let now = self.now;
            for index in 0..self.clients.len() {
                while let Some(transmit) = self.clients[index].turn.poll_transmit() {
                    progressed = true;
                    if self.partitioned[index] {
                        continue;
                    }
                    let from = self.clients[index].addr;
                    if let Ok(Some(relayed)) =
                        self.relay
                            .handle_input(from, transmit.dst, &transmit.payload, now)
                    {
                        let transmit = relayed.to_transmit();
                        self.deliver(transmit.src, transmit.dst, transmit.payload);
                    }
                }
                while let Some(event) = self.clients[index].turn.poll_event() {
                    self.clients[index].events.push(event);
                }
            }
            while let Some(transmit) = self.relay.poll_transmit() {
                progressed = true;
                self.deliver(transmit.src, transmit.dst, transmit.payload);
            }
            while let Some(event) = self.relay.poll_event() {
                self.relay_events.push(event);
            }
            if !progressed {
                return;
            }
        }
    }

    /// Advances the clock to `start + at`, firing every timeout on the way, in order.
    pub fn advance_to(&mut self, at: Duration) {
        let target = self.start + at;
        assert!(target >= self.now, "time only moves forward");
        let mut last_deadline = None;
        loop {
            let next = self
                .clients
                .iter()
                .filter_map(|client| client.turn.poll_timeout())
                .chain(self.relay.poll_timeout())
                .filter(|&deadline| deadline <= target)
                .min();
            let Some(next) = next else {
                break;
            };
            assert!(
                next > self.now || last_deadline != Some(next),
                "a deadline at {:?} does not move after handle_timeout: a state machine would spin",
                next - self.start
            );
            last_deadline = Some(next);
            self.now = self.now.max(next);
            let now = self.now;
            self.relay.handle_timeout(now);
            for client in &mut self.clients {
                client.turn.handle_timeout(now);
            }
            self.pump();
        }
        self.now = target;
        let now = self.now;
        self.relay.handle_timeout(now);
        for client in &mut self.clients {
            client.turn.handle_timeout(now);
        }
        self.pump();
    }

    pub fn advance(&mut self, by: Duration) {
        let at = self.elapsed() + by;
        self.advance_to(at);
    }

    /// STUN error codes the relay sent, in order.
    pub fn error_codes_sent(&self) -> Vec<u16> {
        self.wire
            .iter()
            .filter_map(|wire| stun::decode(&wire.payload).ok())
            .filter_map(|message| stun::error_code(&message))
            .collect()
    }

    /// No datagram the relay emitted is addressed to one of its own IPs.
    pub fn assert_never_sent_to_itself(&self) {
        for wire in &self.wire {
            assert!(
                !self.relay.is_own_ip(wire.dst.ip()),
                "the relay sent a datagram to itself: {wire:?}"
            );
        }
    }

    /// Bindings rebuilt from the relay's events alone.
    pub fn bindings_from_events(&self) -> Vec<relay::ChannelBinding> {
        let mut table = BTreeMap::new();
        for event in &self.relay_events {
            match event {
                Event::ChannelBound(binding) => {
                    assert!(
                        table.insert(*binding, ()).is_none(),
                        "bound twice: {binding:?}"
                    );
                }
                Event::ChannelUnbound(binding) => {
                    assert!(
                        table.remove(binding).is_some(),
                        "unbound but not bound: {binding:?}"
                    );
                }
                Event::ChannelRefreshed(binding) => {
                    assert!(
                        table.contains_key(binding),
                        "refreshed but not bound: {binding:?}"
                    );
                }
                _ => {}
            }
        }
        table.into_keys().collect()
    }
}

/// A hand-driven client that sends exactly the requests a test writes, for error cases that a
/// well-behaved `TurnClient` never produces.
pub struct RawClient {
    pub addr: SocketAddr,
    pub server: SocketAddr,
    pub credentials: credentials::Credentials,
    /// Realm and nonce from the last challenge.
    pub challenge: Option<(String, String)>,
    next_id: u8,
}

impl RawClient {
    pub fn new(addr: SocketAddr, server: SocketAddr) -> Self {
        Self::with_credentials(
            addr,
            server,
            credentials::rest_api_credentials(SECRET, START_UNIX + 86_400, "raw"),
        )
    }

    pub fn with_credentials(
        addr: SocketAddr,
        server: SocketAddr,
        credentials: credentials::Credentials,
    ) -> Self {
        Self {
            addr,
            server,
            credentials,
            challenge: None,
            next_id: 1,
        }
    }

    /// Sends a request and returns the relay's answer (None if it sent none).
    pub fn request(
        &mut self,
        world: &mut World,
        method: stun::Method,
        attributes: Vec<stun::Attribute>,
        sign: bool,
    ) -> Option<stun::Message> {
        let id = stun::TransactionId::new([self.next_id; 12]);
        self.next_id += 1;
        let bytes = self.encode(id, method, attributes, sign);
        self.send_raw(world, &bytes, id)
    }

    pub fn encode(
        &self,
        id: stun::TransactionId,
        method: stun::Method,
        attributes: Vec<stun::Attribute>,
        sign: bool,
    ) -> Vec<u8> {
        let mut message = stun::Message::new(stun::MessageClass::Request, method, id);
        for attribute in attributes {
            message.add_attribute(attribute);
        }
        let key = match (&self.challenge, sign) {
            (Some((realm, nonce)), true) => {
                let key = stun::LongTermKey::new(
                    &self.credentials.username,
                    realm,
                    &self.credentials.password,
                )
                .expect("key");
                message.add_attribute(key.username.clone());
                message.add_attribute(key.realm.clone());
                message.add_attribute(stun::Nonce::new(nonce.clone()).expect("nonce"));
                Some(key)
            }
            _ => None,
        };
        stun::seal(message, key.as_ref()).expect("encode")
    }

    /// Sends prepared bytes and returns the answer to transaction `id`.
    pub fn send_raw(
        &mut self,
        world: &mut World,
        bytes: &[u8],
        id: stun::TransactionId,
    ) -> Option<stun::Message> {
        let sent_before = world.wire.len();
        let _ = world.send_to_relay(self.addr, self.server, bytes);
        let answer = world.wire[sent_before..]
            .iter()
            .filter(|wire| wire.dst == self.addr)
            .filter_map(|wire| stun::decode(&wire.payload).ok())
            .find(|message| message.transaction_id() == id)?;
        if let (Some(realm), Some(nonce)) = (
            answer.get_attribute::<stun::Realm>(),
            answer.get_attribute::<stun::Nonce>(),
        ) {
            self.challenge = Some((realm.text().to_owned(), nonce.value().to_owned()));
        }
        Some(answer)
    }

    /// Gets a realm and nonce (a 401 to an unauthenticated Refresh).
    pub fn get_challenge(&mut self, world: &mut World) {
        let answer = self
            .request(world, stun::methods::REFRESH, vec![], false)
            .expect("a 401 challenge");
        assert_eq!(stun::error_code(&answer), Some(401));
    }

    /// A signed Allocate for UDP with extra attributes; returns the answer.
    pub fn allocate(&mut self, world: &mut World, extra: Vec<stun::Attribute>) -> stun::Message {
        let mut attributes = vec![stun::RequestedTransport::new(stun::TRANSPORT_UDP).into()];
        attributes.extend(extra);
        self.request(world, stun::methods::ALLOCATE, attributes, true)
            .expect("an answer")
    }
}

impl RawClient {
    /// A signed ChannelBind; returns the error code (0 for success).
    pub fn channel_bind(&mut self, world: &mut World, number: u16, peer: SocketAddr) -> u16 {
        let attributes = vec![
            stun::ChannelNumber::new(number)
                .expect("channel in range")
                .into(),
            stun::XorPeerAddress::new(peer).into(),
        ];
        let answer = self.request(world, stun::methods::CHANNEL_BIND, attributes, true);
        code_of(&answer.expect("an answer"))
    }

    /// A signed CreatePermission for `peers`; returns the error code (0 for success).
    pub fn create_permission(&mut self, world: &mut World, peers: &[SocketAddr]) -> u16 {
        let attributes = peers
            .iter()
            .map(|&peer| stun::XorPeerAddress::new(peer).into())
            .collect();
        let answer = self.request(world, stun::methods::CREATE_PERMISSION, attributes, true);
        code_of(&answer.expect("an answer"))
    }
}

/// The error code of an answer, or 0 for a success.
pub fn code_of(answer: &stun::Message) -> u16 {
    stun::error_code(answer).unwrap_or(0)
}
