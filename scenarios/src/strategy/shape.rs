//! The first draw of a scenario: its shape (how many hosts, which address families and
//! stacks, which relays, filtered grants and latencies).

use proptest::prelude::*;

pub(super) use super::profile::Families;
use super::profile::{IdleLengths, Profile};

#[derive(Debug, Clone)]
pub(super) struct Shape {
    pub(super) clients: usize,
    pub(super) gateways: usize,
    pub(super) relays: usize,
    pub(super) families: Families,
    /// Per client and gateway in mixed topologies: 0 = v4, 1 = v6, 2 = dual.
    pub(super) stacks: [u8; 5],
    /// Per client: its relay (index into the relays, modulo their number), or none.
    pub(super) client_relay: [Option<usize>; 3],
    /// Per gateway: its relay, or none.
    pub(super) gateway_relay: [Option<usize>; 2],
    /// Clients take their first gateway's relay (both peers on one relay).
    pub(super) same_relay: bool,
    /// Per client: its grants carry filters (TCP 443 and 80, UDP 53 and 5000-5999).
    pub(super) filtered: [bool; 3],
    pub(super) latency_ms: u32,
    pub(super) client_link_ms: u32,
    /// The TTL of every DNS record: mostly 30 s; sometimes 0 (under the gateway's floor) or far
    /// beyond its cap (the largest TTL RFC 2181 allows, and the largest the wire carries,
    /// which counts as 0). A TTL at the floor re-resolves every second, so only profiles with
    /// short idles draw one: over a long idle it adds hundreds of identical refreshes.
    pub(super) dns_ttl_s: u32,
}

/// The shape of a case under `profile`: host counts up to its maximum, its families if it
/// forces them.
pub(super) fn shape(profile: &Profile) -> impl Strategy<Value = Shape> + use<> {
    let (max_clients, max_gateways, max_relays) = profile.max_hosts;
    let forced = profile.families;
    let short_idles = profile.idles == IdleLengths::Short;
    any_shape().prop_map(move |mut shape| {
        if !short_idles && (shape.dns_ttl_s == 0 || shape.dns_ttl_s > i32::MAX as u32) {
            shape.dns_ttl_s = 30;
        }
        shape.clients = shape.clients.min(max_clients);
        shape.gateways = shape.gateways.min(max_gateways);
        shape.relays = shape.relays.min(max_relays);
        if let Some(families) = forced {
            shape.families = families;
        }
        shape
    })
}

fn any_shape() -> impl Strategy<Value = Shape> {
    let relay = || prop::option::weighted(0.65, 0usize..3);
    (
        prop_oneof![3 => Just(1usize), 4 => Just(2), 2 => Just(3)],
        prop_oneof![4 => Just(1usize), 1 => Just(2)],
        prop_oneof![2 => Just(1usize), 4 => Just(2), 1 => Just(3)],
        prop_oneof![5 => Just(Families::V4), 2 => Just(Families::V6), 3 => Just(Families::Mixed)],
        any::<[u8; 5]>().prop_map(|stacks| stacks.map(|s| s % 3)),
        [relay(), relay(), relay()],
        [prop::option::weighted(0.75, 0usize..3), relay()],
        prop::bool::weighted(0.8),
        (
            prop_oneof![Just(10u32), Just(5), 1u32..40],
            prop_oneof![Just(10u32), 1u32..60],
            [
                prop::bool::weighted(0.2),
                prop::bool::weighted(0.2),
                prop::bool::weighted(0.2),
            ],
            prop_oneof![
                12 => Just(30u32),
                1 => Just(0),
                2 => Just(i32::MAX as u32),
                1 => Just(u32::MAX),
            ],
        ),
    )
        .prop_map(
            |(
                clients,
                gateways,
                relays,
                families,
                stacks,
                client_relay,
                gateway_relay,
                same_relay,
                (latency_ms, client_link_ms, filtered, dns_ttl_s),
            )| Shape {
                clients,
                gateways,
                relays,
                families,
                stacks,
                client_relay,
                gateway_relay,
                same_relay,
                filtered,
                latency_ms,
                client_link_ms,
                dns_ttl_s,
            },
        )
}
