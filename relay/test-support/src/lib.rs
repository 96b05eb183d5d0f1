//! An in-process world for driving the sans-IO relay with real TURN clients
//! (`turn_client::TurnClient`) and a fake clock: datagrams move instantly, time moves only when a test
//! says so, and every datagram the relay emits and every event it announces is recorded so
//! tests can assert on the wire and on the events.
//!
//! The relay's own tests use it to check the TURN lifecycle and relay-to-self; the XDP loader's
//! tests use it so that the channel-binding events they mirror into the program's maps come
//! from a real relay. It is a dev-dependency of both and never a dependency of a system under
//! test.

pub mod hostile;

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, Instant},
};

use proto::{credentials, stun};
use relay::{ChannelBinding, Event, Relay, RelayConfig};
use turn_client::{ClientEvent, Families, TurnClient, TurnClientConfig};

/// The shared secret of the TURN REST API credentials.
pub const SECRET: &[u8] = b"correct horse battery staple";
pub const REALM: &str = "vpnsim.test";
/// Unix time at the start of every world.
pub const START_UNIX: u64 = 1_800_000_000;
/// How long the credentials [`World::add_client`] hands out stay valid: longer than any test
/// runs in simulated time, so an Allocate is never refused for an expired username unless the
/// test asks for one.
pub const CREDENTIALS_VALID_FOR_SECS: u64 = 7 * 86_400;

pub const RELAY_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const RELAY_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

pub fn addr(text: &str) -> SocketAddr {
    text.parse().expect("socket address literal")
}

/// A relay on [`RELAY_V4`] and [`RELAY_V6`] with this module's realm and secret, started at
/// [`START_UNIX`].
pub fn relay_config() -> RelayConfig {
    let mut config = RelayConfig::new(REALM, SECRET);
    config.public_v4 = Some(RELAY_V4);
    config.public_v6 = Some(RELAY_V6);
    config.unix_time_at_start = START_UNIX;
    config.seed = 42;
    config
}

/// The relay's TURN address on IPv4.
pub fn server_v4() -> SocketAddr {
    SocketAddr::new(RELAY_V4.into(), relay::TURN_PORT)
}

/// The relay's TURN address on IPv6.
pub fn server_v6() -> SocketAddr {
    SocketAddr::new(RELAY_V6.into(), relay::TURN_PORT)
}

/// A datagram the relay put on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wire {
    pub at: Instant,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

#[derive(Debug)]
pub struct Client {
    pub addr: SocketAddr,
    pub turn: TurnClient,
    pub events: Vec<ClientEvent>,
    /// Data received from peers through the relay: (peer, data).
    pub received: Vec<(SocketAddr, Vec<u8>)>,
    /// Cut off from the relay: what it sends and what is sent to it is lost.
    pub partitioned: bool,
}

#[derive(Debug)]
pub struct World {
    pub start: Instant,
    pub now: Instant,
    pub relay: Relay,
    pub clients: Vec<Client>,
    /// Every event the relay emitted, in order.
    pub relay_events: Vec<Event>,
    /// How many of `relay_events` [`World::take_events`] has handed out.
    events_taken: usize,
    /// Every binding the relay ever announced (`ChannelBound`), in order, without repeats.
    pub ever_bound: Vec<ChannelBinding>,
    /// Everything the relay sent, in order.
    pub wire: Vec<Wire>,
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
            events_taken: 0,
            ever_bound: Vec::new(),
            wire: Vec::new(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Adds a client at `addr` talking to `server`, with credentials valid for
    /// [`CREDENTIALS_VALID_FOR_SECS`].
    pub fn add_client(
        &mut self,
        addr: SocketAddr,
        server: SocketAddr,
        families: Families,
    ) -> usize {
        let credentials = credentials::rest_api_credentials(
            SECRET,
            START_UNIX + CREDENTIALS_VALID_FOR_SECS,
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
        self.clients.push(Client {
            addr,
            turn,
            events: Vec::new(),
            received: Vec::new(),
            partitioned: false,
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

    /// The relayed address of client `index`'s allocation in a family, if it has one.
    pub fn relayed(&self, index: usize, v6: bool) -> Option<SocketAddr> {
        self.clients[index]
            .turn
            .relayed_addresses()
            .iter()
            .copied()
            .find(|relayed| relayed.is_ipv6() == v6)
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

    /// Records a datagram the relay emitted and hands it to a client if one lives there. A
    /// datagram to anyone else (a peer) goes no further: peers are addresses only.
    fn deliver(&mut self, src: SocketAddr, dst: SocketAddr, payload: Vec<u8>) {
        self.wire.push(Wire {
            at: self.now,
            src,
            dst,
            payload: payload.clone(),
        });
        let now = self.now;
        if let Some(client) = self
            .clients
            .iter_mut()
            .find(|client| client.addr == dst && !client.partitioned)
            && let Ok(Some(data)) = client.turn.handle_input(src, &payload, now)
        {
            client.received.push((data.peer, data.data.into_owned()));
        }
    }

    fn collect_events(&mut self) {
        while let Some(event) = self.relay.poll_event() {
            if let Event::ChannelBound(binding) = &event
                && !self.ever_bound.contains(binding)
            {
                self.ever_bound.push(*binding);
            }
            self.relay_events.push(event);
        }
    }

    /// Whether the relay emitted events that [`World::take_events`] has not handed out yet.
    pub fn has_events(&self) -> bool {
        self.events_taken < self.relay_events.len()
    }

    /// The relay events since the last call, in the order the relay emitted them (they stay
    /// in `relay_events` too).
    pub fn take_events(&mut self) -> Vec<Event> {
        let fresh = self.relay_events[self.events_taken..].to_vec();
        self.events_taken = self.relay_events.len();
        fresh
    }

    /// Moves datagrams between clients and relay until nobody has anything to send.
    pub fn pump(&mut self) {
        loop {
            let mut progressed = false;
            let now = self.now;
            for index in 0..self.clients.len() {
                while let Some(transmit) = self.clients[index].turn.poll_transmit() {
                    progressed = true;
                    if self.clients[index].partitioned {
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
            self.collect_events();
            if !progressed {
                return;
            }
        }
    }

    /// Drops whatever the relay queued (replies to junk, Data indications) without recording
    /// or delivering it, and collects its events: for tests that feed the relay directly
    /// through `world.relay.handle_input` and judge only its direct answer.
    pub fn discard_transmits(&mut self) {
        while self.relay.poll_transmit().is_some() {}
        self.collect_events();
    }

    /// Advances the clock to `start + at`, firing every timeout of the relay and the clients on
    /// the way, in order.
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
            self.fire_timeouts();
        }
        self.now = target;
        self.fire_timeouts();
    }

    pub fn advance(&mut self, by: Duration) {
        let at = self.elapsed() + by;
        self.advance_to(at);
    }

    fn fire_timeouts(&mut self) {
        let now = self.now;
        self.relay.handle_timeout(now);
        for client in &mut self.clients {
            client.turn.handle_timeout(now);
        }
        self.pump();
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
    pub fn bindings_from_events(&self) -> Vec<ChannelBinding> {
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
