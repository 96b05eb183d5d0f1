//! A client's ways to its gateways, sans-IO: where frames for each gateway go, which go
//! through the client's own relay, which gateway a frame comes from, and roaming (a new
//! allocation from the new socket, whose channels are bound again once it exists). The
//! simulated client host and the real world's client both keep their paths in it.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    time::Instant,
};

use turn_client::{Endpoint, TurnClient, TurnClientConfig};

/// Where a frame for a gateway goes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To this address (the gateway's socket or relayed address), through the endpoint.
    To(SocketAddr),
    /// Through the client's relay, which it has no allocation on yet since roaming: a real
    /// client has no way there, and the frame is not sent.
    AwaitingAllocation,
}

#[derive(Debug)]
pub struct ClientPaths {
    endpoint: Endpoint,
    /// The TURN client's configuration, for a new allocation after roaming.
    turn: Option<TurnClientConfig>,
    roams: u64,
    /// Where frames for each gateway go (its socket or relayed address).
    targets: BTreeMap<usize, SocketAddr>,
    /// Gateways reached through the client's own relay.
    via_relay: BTreeSet<usize>,
    /// After roaming: the new allocation must bind the channels of `via_relay` once it exists.
    rebind: bool,
    /// Which gateway a frame comes from, by the address it comes from (every socket and
    /// relayed address of a gateway the client was ever told to use).
    peers: BTreeMap<SocketAddr, usize>,
}

impl ClientPaths {
    /// A client on `socket` reaching every gateway directly at its address in `gateways`
    /// (by index); with `turn`, it asks its relay for an allocation at once.
    pub fn new(
        socket: SocketAddr,
        gateways: &[SocketAddr],
        turn: Option<TurnClientConfig>,
        now: Instant,
    ) -> Self {
        let mut client = turn.clone().map(TurnClient::new);
        if let Some(client) = client.as_mut() {
            client.allocate(now);
        }
        Self {
            endpoint: Endpoint::new(socket, client),
            turn,
            roams: 0,
            targets: gateways.iter().copied().enumerate().collect(),
            via_relay: BTreeSet::new(),
            rebind: false,
            peers: gateways
                .iter()
                .enumerate()
                .map(|(gateway, address)| (*address, gateway))
                .collect(),
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn endpoint_mut(&mut self) -> &mut Endpoint {
        &mut self.endpoint
    }

    /// Where a frame for `gateway` goes now; `None` if the client has no address for it.
    pub fn route(&self, gateway: usize) -> Option<Route> {
        let target = self.targets.get(&gateway).copied()?;
        let allocated = self.endpoint.turn().is_some_and(TurnClient::is_allocated);
        Some(if self.via_relay.contains(&gateway) && !allocated {
            Route::AwaitingAllocation
        } else {
            Route::To(target)
        })
    }

    /// The gateway whose frames come from `remote`.
    pub fn gateway_at(&self, remote: SocketAddr) -> Option<usize> {
        self.peers.get(&remote).copied()
    }

    /// From now on, frames for `gateway` go to `target`, through the client's own relay or
    /// directly (after roaming, the relay path waits for the new allocation). `Err` says why
    /// the endpoint refused the route.
    pub fn set_path(
        &mut self,
        gateway: usize,
        target: SocketAddr,
        via_relay: bool,
        now: Instant,
    ) -> Result<(), String> {
        self.targets.insert(gateway, target);
        self.peers.insert(target, gateway);
        if via_relay {
            self.via_relay.insert(gateway);
        } else {
            self.via_relay.remove(&gateway);
        }
        let waiting = via_relay && self.rebind;
        if waiting {
            return Ok(());
        }
        self.endpoint
            .route_via_relay(target, via_relay, now)
            .map_err(|error| format!("path to {target}: {error}"))
    }

    /// The client moved to `moved`: with a relay, a new allocation from there (the old one is
    /// left to expire), whose channels are bound again once it exists.
    pub fn roam(&mut self, moved: SocketAddr, now: Instant) {
        self.roams += 1;
        match &self.turn {
            Some(config) => {
                let mut config = config.clone();
                config.seed = config.seed.wrapping_add(self.roams << 32);
                let mut turn = TurnClient::new(config);
                turn.allocate(now);
                self.endpoint = Endpoint::new(moved, Some(turn));
                self.rebind = true;
            }
            None => self.endpoint.set_socket(moved),
        }
    }

    /// Whether the client has a relay of its own (a roam then allocates again on it).
    pub fn has_relay(&self) -> bool {
        self.turn.is_some()
    }

    /// After roaming, once the new allocation exists: binds a channel to every gateway reached
    /// through the relay. Returns what the endpoint refused.
    pub fn rebind_when_allocated(&mut self, now: Instant) -> Vec<String> {
        if !self.rebind || !self.endpoint.turn().is_some_and(TurnClient::is_allocated) {
            return Vec::new();
        }
        self.rebind = false;
        let mut refused = Vec::new();
        for gateway in self.via_relay.clone() {
            let Some(target) = self.targets.get(&gateway).copied() else {
                continue;
            };
            if let Err(error) = self.endpoint.route_via_relay(target, true, now) {
                refused.push(format!("path to {target} after roaming: {error}"));
            }
        }
        refused
    }
}
