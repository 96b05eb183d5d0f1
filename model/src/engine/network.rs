//! The network between the hosts: links with their latencies and faults (partition, hold,
//! drop-next), the path a client takes to a gateway (direct or through one or two relays) and
//! the tunnel frames that travel it hop by hop.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use scenario_format::plan::TUNNEL_PORT;
use scenario_format::{Fault, PathMode};

use super::{Engine, Event, Result, Traffic};
use crate::{DropPlace, DropReason, OuterContext, PacketDrop, RelayedAddresses, Unpredictable};

/// A link, by its two host names in sorted order.
pub(super) type Link = (String, String);

fn link(a: &str, b: &str) -> Link {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

#[derive(Debug, Clone)]
pub(super) struct Hop {
    link: Link,
    ms: u64,
    /// The address family the datagram travels in on this hop.
    v6: bool,
}

/// The time a relay takes to pass a datagram from one hop to the next: nothing, or 1 ms when
/// it leaves in the other address family (docs/harness.md, "Paths").
fn crossing_ms(arrived: &Hop, leaving: &Hop) -> u64 {
    u64::from(arrived.v6 != leaving.v6)
}

/// The gateway's `(remote, local)` view of a path and the hops from the client to the gateway.
type Route = (OuterContext, Vec<Hop>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    ToGateway,
    ToClient,
}

/// A tunnel frame on its way between a client and a gateway.
#[derive(Debug, Clone)]
pub(super) struct Frame {
    pub(super) direction: Direction,
    pub(super) client: usize,
    pub(super) gateway: usize,
    /// The gateway's `(remote, local)` view of the path the frame travels.
    pub(super) context: OuterContext,
    /// Hops in travel order.
    pub(super) hops: Vec<Hop>,
    /// The inner packet it carries.
    pub(super) traffic: Traffic,
}

/// Why a frame from the gateway to an outer context the client has left is not modelled: where
/// it goes (another way, or lost on the old one) is not in the contract.
pub(super) const LEFT_CONTEXT: &str = "the gateway sent to an outer context the client has left \
                                       (roamed or switched path before the gateway heard from it)";

#[derive(Debug, Default)]
pub(super) struct LinkState {
    partitioned: bool,
    holding: bool,
    held: Vec<(Frame, usize)>,
    drop_next: u32,
    /// CreatePermission and ChannelBind requests are dropped (no data is).
    dropping_binding_requests: bool,
    /// A fault was active on this relay link during an idle step: TURN refreshes may have been
    /// lost, so later traffic over it is not modelled.
    tainted: bool,
    /// Sends per millisecond, and whether a `drop-next` budget was pending at one of them.
    sends: BTreeMap<u64, (u32, bool)>,
}

impl LinkState {
    fn active(&self) -> bool {
        self.partitioned
            || self.holding
            || !self.held.is_empty()
            || self.drop_next > 0
            || self.dropping_binding_requests
    }
}

impl Engine<'_> {
    /// Whether a fault acts on the link between hosts `a` and `b` now.
    pub(super) fn link_faulted(&self, a: &str, b: &str) -> bool {
        self.links.get(&link(a, b)).is_some_and(LinkState::active)
    }
}

/// The drop of `frame`'s packet on `link`.
fn link_drop(link: &Link, reason: DropReason, frame: &Frame, at_ms: u64) -> PacketDrop {
    PacketDrop {
        at_ms,
        place: DropPlace::Link {
            between: [link.0.clone(), link.1.clone()],
        },
        reason,
        packet: frame.traffic.packet,
        step: frame.traffic.step,
    }
}

/// One end of a client's path to a gateway.
struct PeerEnd<'a> {
    name: &'a str,
    /// Where its tunnel socket is: the client's current one, the gateway's preferred address.
    socket: SocketAddr,
    /// The relay the topology gives it.
    relay: &'a Option<String>,
    /// Its TURN allocation on that relay.
    relayed: &'a RelayedAddresses,
}

impl PeerEnd<'_> {
    fn v6(&self) -> bool {
        self.socket.is_ipv6()
    }
}

impl Engine<'_> {
    // ---------------------------------------------------------------- links and faults

    fn latency(&self, a: &str, b: &str) -> u64 {
        self.scenario.topology.latency.between(a, b)
    }

    fn hop(&self, a: &str, b: &str, v6: bool) -> Hop {
        Hop {
            link: link(a, b),
            ms: self.latency(a, b),
            v6,
        }
    }

    /// A `fault` step on the link `between` two hosts at step `k`; a release sends the held
    /// frames on at once, as traffic of this step.
    pub(super) fn apply_fault(&mut self, between: &[String; 2], fault: Fault, k: usize, t: u64) {
        let key = link(&between[0], &between[1]);
        let state = self.links.entry(key).or_default();
        match fault {
            Fault::Partition => state.partitioned = true,
            Fault::Heal => {
                state.partitioned = false;
                state.dropping_binding_requests = false;
            }
            Fault::DropBindingRequests => state.dropping_binding_requests = true,
            Fault::Hold => state.holding = true,
            Fault::DropNext(n) => state.drop_next = state.drop_next.saturating_add(n),
            Fault::Release => {
                state.holding = false;
                let held = std::mem::take(&mut state.held);
                for (mut frame, index) in held {
                    frame.traffic.step = k;
                    self.schedule(t, Event::Hop { frame, index });
                }
            }
        }
    }

    /// An `idle` step: a fault active on a relay's link now may cost TURN refreshes.
    pub(super) fn taint_faulted_relay_links(&mut self) {
        let relays: BTreeSet<&str> = self
            .scenario
            .topology
            .relays
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        for ((a, b), state) in &mut self.links {
            if state.active() && (relays.contains(a.as_str()) || relays.contains(b.as_str())) {
                state.tainted = true;
            }
        }
    }

    /// Whether a fault was active on the link between `host` and `relay` during an idle step
    /// (its TURN refreshes, so its allocation, may have been lost).
    pub(super) fn relay_link_tainted(&self, host: &str, relay: &str) -> bool {
        self.links
            .get(&link(host, relay))
            .is_some_and(|state| state.tainted)
    }

    /// At the end of the run, every frame still held is dropped.
    pub(super) fn drop_still_held(&mut self, t_end: u64) {
        for (link, state) in &mut self.links {
            for (frame, _) in state.held.drain(..) {
                self.out
                    .drops
                    .push(link_drop(link, DropReason::StillHeld, &frame, t_end));
            }
        }
    }

    /// Two sends on one link in one millisecond while a `drop-next` fault was pending: which
    /// one it took is not in the contract.
    pub(super) fn ensure_drop_next_unambiguous(&self) -> Result<()> {
        for ((a, b), state) in &self.links {
            if let Some((at, _)) = state
                .sends
                .iter()
                .find(|(_, (count, pending))| *count > 1 && *pending)
            {
                return Err(Unpredictable {
                    step: None,
                    reason: format!(
                        "two datagrams were sent on {a}-{b} at {at} ms while a drop-next fault \
                         was pending: which one it takes is not in the contract"
                    ),
                });
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- paths

    /// A `path` step: `client` reaches `gateway` in `mode` from now on.
    pub(super) fn set_path(&mut self, client: &str, gateway: &str, mode: PathMode) -> Result<()> {
        let c = self.client_index(client)?;
        let g = self.gateway_index(gateway)?;
        self.clients[c].paths[g] = mode;
        self.turn_links_clear(c, g, mode)
    }

    /// A path through a relay makes the host bind a channel (or create a permission) there at
    /// once; over a faulted link that exchange fails, and when the host's data flows again is
    /// not in the contract.
    fn turn_links_clear(&self, c: usize, g: usize, mode: PathMode) -> Result<()> {
        let topology = &self.scenario.topology;
        let client = (
            topology.clients[c].name.as_str(),
            &topology.clients[c].relay,
        );
        let gateway = (
            topology.gateways[g].name.as_str(),
            &topology.gateways[g].relay,
        );
        let uses = match mode {
            PathMode::Direct => vec![],
            PathMode::ClientRelayed => vec![client],
            PathMode::GatewayRelayed => vec![gateway],
            PathMode::SameRelay | PathMode::DifferentRelays => vec![client, gateway],
        };
        for (host, relay) in uses {
            let Some(relay) = relay else { continue };
            if self
                .links
                .get(&link(host, relay))
                .is_some_and(LinkState::active)
            {
                return self.fail(format!(
                    "a {mode:?} path while the link between {host} and {relay} is faulted: the \
                     channel binding or permission cannot be made"
                ));
            }
        }
        Ok(())
    }

    fn relay_index(&self, name: &Option<String>, who: &str) -> Result<usize> {
        match name.as_ref().and_then(|n| {
            self.scenario
                .topology
                .relays
                .iter()
                .position(|r| &r.name == n)
        }) {
            Some(r) => Ok(r),
            None => self.fail(format!("{who} has no relay")),
        }
    }

    /// The peer must be able to reach relay `r` in its own address family.
    fn reach(&self, r: usize, end: &PeerEnd) -> Result<()> {
        if self.plan.relays[r].matching(end.socket.ip()).is_none() {
            return self.fail(format!("{} and its relay share no IP family", end.name));
        }
        Ok(())
    }

    /// The name of the peer's own relay, which it must be able to reach.
    fn own_relay(&self, end: &PeerEnd) -> Result<&str> {
        let r = self.relay_index(end.relay, end.name)?;
        self.reach(r, end)?;
        Ok(&self.scenario.topology.relays[r].name)
    }

    fn no_relayed_address<T>(&self, mode: PathMode, what: &str) -> Result<T> {
        self.fail(format!("{mode:?}: no relayed address for {what}"))
    }

    /// The client's current way to gateway `g`: the gateway's `(remote, local)` view and the
    /// hops from the client to the gateway.
    pub(super) fn client_path(&self, c: usize, g: usize) -> Result<Route> {
        let topology = &self.scenario.topology;
        let state = &self.clients[c];
        let mode = state.paths[g];
        let client = PeerEnd {
            name: &topology.clients[c].name,
            socket: self.plan.client_socket(c, state.roams),
            relay: &topology.clients[c].relay,
            relayed: &self.allocations.clients[c],
        };
        let gateway = PeerEnd {
            name: &topology.gateways[g].name,
            socket: SocketAddr::new(self.plan.gateways[g].preferred(), TUNNEL_PORT),
            relay: &topology.gateways[g].relay,
            relayed: &self.allocations.gateways[g],
        };
        let uses_client_allocation = matches!(
            mode,
            PathMode::ClientRelayed | PathMode::SameRelay | PathMode::DifferentRelays
        );
        if uses_client_allocation && state.moved {
            return self.fail(
                "a path through the client's own relay after roaming (the client must allocate \
                 again, at an address the model cannot know)",
            );
        }
        match mode {
            PathMode::Direct => self.direct_path(&client, &gateway),
            PathMode::ClientRelayed => self.client_relayed_path(&client, &gateway),
            PathMode::GatewayRelayed => self.gateway_relayed_path(&client, &gateway),
            PathMode::SameRelay | PathMode::DifferentRelays => {
                self.two_relay_path(mode, &client, &gateway)
            }
        }
    }

    fn direct_path(&self, client: &PeerEnd, gateway: &PeerEnd) -> Result<Route> {
        if client.v6() != gateway.v6() {
            return self.fail(
                "direct path between a client and a gateway whose preferred addresses differ in \
                 family",
            );
        }
        let context = OuterContext {
            remote: client.socket,
            local: gateway.socket,
        };
        Ok((
            context,
            vec![self.hop(client.name, gateway.name, client.v6())],
        ))
    }

    /// Through the client's relay: the gateway sees the client's relayed address of the
    /// gateway's family.
    fn client_relayed_path(&self, client: &PeerEnd, gateway: &PeerEnd) -> Result<Route> {
        let relay = self.own_relay(client)?;
        let Some(relayed) = client.relayed.family(gateway.v6()) else {
            return self.no_relayed_address(PathMode::ClientRelayed, client.name);
        };
        let context = OuterContext {
            remote: relayed,
            local: gateway.socket,
        };
        Ok((context, self.via_relay(client, relay, gateway)))
    }

    /// Through the gateway's relay: the gateway receives at its relayed address of the client's
    /// family.
    fn gateway_relayed_path(&self, client: &PeerEnd, gateway: &PeerEnd) -> Result<Route> {
        let relay = self.own_relay(gateway)?;
        let Some(relayed) = gateway.relayed.family(client.v6()) else {
            return self.no_relayed_address(PathMode::GatewayRelayed, gateway.name);
        };
        let context = OuterContext {
            remote: client.socket,
            local: relayed,
        };
        Ok((context, self.via_relay(client, relay, gateway)))
    }

    /// Relayed on both sides (one shared relay or one each): the gateway's view is the pair of
    /// relayed addresses in the first family both allocations have.
    fn two_relay_path(&self, mode: PathMode, client: &PeerEnd, gateway: &PeerEnd) -> Result<Route> {
        let r1 = self.relay_index(client.relay, client.name)?;
        let r2 = self.relay_index(gateway.relay, gateway.name)?;
        self.reach(r1, client)?;
        self.reach(r2, gateway)?;
        let pair = [false, true]
            .into_iter()
            .find_map(|v6| Some((client.relayed.family(v6)?, gateway.relayed.family(v6)?)));
        let Some((remote, local)) = pair else {
            return self.no_relayed_address(mode, "both peers in one family");
        };
        let relays = &self.scenario.topology.relays;
        let (n1, n2) = (&relays[r1].name, &relays[r2].name);
        let hops = if mode == PathMode::SameRelay {
            self.via_relay(client, n1, gateway)
        } else {
            vec![
                self.hop(client.name, n1, client.v6()),
                self.hop(n1, n2, remote.is_ipv6()),
                self.hop(n2, gateway.name, gateway.v6()),
            ]
        };
        Ok((OuterContext { remote, local }, hops))
    }

    /// The two hops from the client through `relay` to the gateway, each in its peer's family.
    fn via_relay(&self, client: &PeerEnd, relay: &str, gateway: &PeerEnd) -> Vec<Hop> {
        vec![
            self.hop(client.name, relay, client.v6()),
            self.hop(relay, gateway.name, gateway.v6()),
        ]
    }

    /// Fails with `stale` unless `context` is still the client's current way to gateway `g`.
    pub(super) fn ensure_on_path(
        &self,
        c: usize,
        g: usize,
        context: OuterContext,
        stale: &str,
    ) -> Result<()> {
        let (current, _) = self.client_path(c, g)?;
        if current != context {
            return self.fail(stale);
        }
        Ok(())
    }

    // ---------------------------------------------------------------- frames

    /// Sends a tunnel frame from client `c` to gateway `g` over the client's current path.
    pub(super) fn send_from_client(
        &mut self,
        c: usize,
        g: usize,
        traffic: Traffic,
        t: u64,
    ) -> Result<()> {
        let path = self.client_path(c, g)?;
        self.send_frame(Direction::ToGateway, c, g, path, traffic, t)
    }

    /// Sends a tunnel frame from gateway `g` to client `c` over `hops`, the way back to the
    /// outer context `context` it last heard the client from.
    pub(super) fn send_to_client(
        &mut self,
        g: usize,
        c: usize,
        context: OuterContext,
        hops: Vec<Hop>,
        traffic: Traffic,
        t: u64,
    ) -> Result<()> {
        // The gateway follows its control plane's path too: once the client switched path or
        // roamed, frames to its old context may leave another way (or be lost on the old
        // one) until the client is heard from again. Not in the contract.
        self.ensure_on_path(c, g, context, LEFT_CONTEXT)?;
        self.send_frame(Direction::ToClient, c, g, (context, hops), traffic, t)
    }

    /// Sends `traffic` in a tunnel frame between client `c` and gateway `g` in `direction`,
    /// over `hops` (in travel order) of the path the gateway sees as `context`.
    fn send_frame(
        &mut self,
        direction: Direction,
        c: usize,
        g: usize,
        (context, hops): (OuterContext, Vec<Hop>),
        traffic: Traffic,
        t: u64,
    ) -> Result<()> {
        let frame = Frame {
            direction,
            client: c,
            gateway: g,
            context,
            hops,
            traffic,
        };
        self.send_hop(frame, 0, t)
    }

    /// Sends a frame over `hops[index]` at `t`, unless a fault on that link drops or holds it.
    fn send_hop(&mut self, frame: Frame, index: usize, t: u64) -> Result<()> {
        let hop = frame.hops[index].clone();
        let state = self.links.entry(hop.link.clone()).or_default();
        if state.tainted {
            return self.fail(format!(
                "traffic over {}-{}, where a fault was active during an idle step (TURN \
                 refreshes over it may have been lost)",
                hop.link.0, hop.link.1
            ));
        }
        let sends = state.sends.entry(t).or_default();
        sends.0 += 1;
        sends.1 |= state.drop_next > 0;
        let reason = if state.partitioned {
            Some(DropReason::Partition)
        } else if state.holding {
            state.held.push((frame.clone(), index));
            None
        } else if state.drop_next > 0 {
            state.drop_next -= 1;
            Some(DropReason::DropNext)
        } else {
            self.schedule(t + hop.ms, Event::Hop { frame, index });
            return Ok(());
        };
        self.lost(&frame.traffic);
        if let Some(reason) = reason {
            self.out.drops.push(link_drop(&hop.link, reason, &frame, t));
        }
        Ok(())
    }

    /// A frame reached the far end of `hops[index]`: a relay passes it on, the gateway or the
    /// client at the end of the path takes it.
    pub(super) fn hop_arrived(&mut self, frame: Frame, index: usize, at: u64) -> Result<()> {
        if index + 1 < frame.hops.len() {
            let at = at + crossing_ms(&frame.hops[index], &frame.hops[index + 1]);
            self.send_hop(frame, index + 1, at)
        } else {
            match frame.direction {
                Direction::ToGateway => self.gateway_from_client(frame, at),
                Direction::ToClient => self.client_receive(frame, at),
            }
        }
    }
}
