//! The hosts of a shape (clients, gateways, relays, the resources that exist) and the path
//! modes the contract can carry between a client and a gateway.

use scenario_format::{ClientSpec, GatewaySpec, PathMode, RelaySpec, Stack};

use super::names::{CLIENTS, GATEWAYS, RELAYS, RESOURCES};
use super::shape::{Families, Shape};

/// The scenario's hosts and how each can be reached, while steps are generated.
pub(super) struct Layout {
    pub(super) clients: Vec<ClientSpec>,
    pub(super) gateways: Vec<GatewaySpec>,
    pub(super) relays: Vec<RelaySpec>,
    /// Resource indices into [`RESOURCES`] that exist (their gateway exists).
    pub(super) resources: Vec<usize>,
}

impl Layout {
    fn v6(stack: Stack) -> bool {
        stack == Stack::V6
    }

    /// The path mode actually written for a wish: the wish if the contract carries it, else
    /// the closest one that works, else none.
    pub(super) fn usable(
        &self,
        client: usize,
        gateway: usize,
        wish: PathMode,
        roamed: bool,
    ) -> Option<PathMode> {
        let c = &self.clients[client];
        let g = &self.gateways[gateway];
        let same_family = Self::v6(c.stack) == Self::v6(g.stack);
        let client_relay = c.relay.is_some() && !roamed;
        let gateway_relay = g.relay.is_some();
        let works = |mode: PathMode| match mode {
            PathMode::Direct => same_family,
            PathMode::ClientRelayed => client_relay,
            PathMode::GatewayRelayed => gateway_relay,
            PathMode::SameRelay => client_relay && gateway_relay && c.relay == g.relay,
            PathMode::DifferentRelays => client_relay && gateway_relay && c.relay != g.relay,
        };
        let fallbacks = match wish {
            PathMode::SameRelay | PathMode::DifferentRelays => [
                PathMode::SameRelay,
                PathMode::DifferentRelays,
                PathMode::ClientRelayed,
                PathMode::GatewayRelayed,
                PathMode::Direct,
            ],
            _ => [
                wish,
                PathMode::ClientRelayed,
                PathMode::GatewayRelayed,
                PathMode::Direct,
                PathMode::SameRelay,
            ],
        };
        std::iter::once(wish)
            .chain(fallbacks)
            .find(|mode| works(*mode))
    }
}

fn stack_of(shape: &Shape, slot: usize) -> Stack {
    match shape.families {
        Families::V4 => Stack::V4,
        Families::V6 => Stack::V6,
        Families::Mixed => match shape.stacks[slot] {
            0 => Stack::V4,
            1 => Stack::V6,
            _ => Stack::Dual,
        },
    }
}

pub(super) fn layout(shape: &Shape) -> (Layout, Vec<RelaySpec>) {
    let relay_stack = match shape.families {
        Families::V4 => Stack::V4,
        Families::V6 => Stack::V6,
        Families::Mixed => Stack::Dual,
    };
    let relays: Vec<RelaySpec> = RELAYS[..shape.relays]
        .iter()
        .map(|name| RelaySpec {
            name: (*name).to_owned(),
            stack: relay_stack,
        })
        .collect();
    let relay_name = |index: usize| RELAYS[index % shape.relays].to_owned();
    // In mixed topologies every host has a relay, so that every pair has a path.
    let mixed = shape.families == Families::Mixed;
    let gateways: Vec<GatewaySpec> = (0..shape.gateways)
        .map(|index| GatewaySpec {
            name: GATEWAYS[index].to_owned(),
            stack: stack_of(shape, 3 + index),
            relay: shape.gateway_relay[index]
                .or(mixed.then_some(index))
                .map(relay_name),
        })
        .collect();
    let clients: Vec<ClientSpec> = (0..shape.clients)
        .map(|index| {
            let own = shape.client_relay[index].or(mixed.then_some(index));
            let relay = match (&gateways[0].relay, own) {
                (Some(shared), Some(_)) if shape.same_relay => Some(shared.clone()),
                (_, own) => own.map(relay_name),
            };
            ClientSpec {
                name: CLIENTS[index].to_owned(),
                stack: stack_of(shape, index),
                relay,
            }
        })
        .collect();
    let resources = (0..RESOURCES.len())
        .filter(|index| RESOURCES[*index].gateway < shape.gateways)
        .collect();
    (
        Layout {
            clients,
            gateways,
            relays: relays.clone(),
            resources,
        },
        relays,
    )
}
