//! The second draw of a scenario: the actions (traffic, path changes, roams, grants, DNS
//! changes, faults, restarts, stray datagrams at relays, idle times), weighted so that the interesting ones are common.

use proptest::prelude::*;
use scenario_format::{PathMode, Side, StrayKind};

/// One thing that happens, before it becomes steps (a TCP conversation is several steps).
#[derive(Debug, Clone)]
pub(super) enum Action {
    Udp {
        client: usize,
        resource: usize,
        port: u16,
        bytes: u16,
        ipv6: bool,
        domain: usize,
    },
    Tcp {
        client: usize,
        resource: usize,
        port: u16,
        ipv6: bool,
        domain: usize,
        data: Vec<(bool, u16)>,
        end: TcpEnd,
        /// The client sends its SYN again right after the handshake (a retransmission that
        /// crossed the SYN-ACK), and an ACK after the close (a late ACK).
        retransmit_syn: bool,
        late_ack: bool,
    },
    Path {
        client: usize,
        gateway: usize,
        mode: PathMode,
    },
    Roam {
        client: usize,
    },
    Revoke {
        client: usize,
        resource: usize,
    },
    Grant {
        client: usize,
        resource: usize,
    },
    DnsChange {
        domain: usize,
        last_octet: u8,
    },
    /// A fault on the link between a client and its gateway or its relay.
    Fault {
        client: usize,
        to_relay: bool,
        kind: FaultKind,
    },
    /// The resource sends on the latest connection left open, possibly much later (after an
    /// idle expiry or a restart it finds no open flow).
    LateResourceData {
        bytes: u16,
    },
    Restart,
    /// A datagram that is not TURN to a relay from the internet host: `kind` indexes
    /// `StrayKind::ALL`; to the allocation of host `host` (any index) for the kinds that go
    /// to one.
    Stray {
        relay: usize,
        kind: usize,
        ipv6: bool,
        host: usize,
    },
    Idle {
        seconds: u64,
    },
}

#[derive(Debug, Clone, Copy)]
pub(super) enum TcpEnd {
    Fin(Side),
    Rst(Side),
    Open,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum FaultKind {
    /// Partition, or heal if partitioned.
    Partition,
    /// Hold, or release if held.
    Hold,
    DropNext(u32),
}

pub(super) fn action() -> impl Strategy<Value = Action> {
    let tcp_end = prop_oneof![
        3 => any::<bool>().prop_map(|by_client| TcpEnd::Fin(if by_client { Side::Client } else { Side::Resource })),
        1 => any::<bool>().prop_map(|by_client| TcpEnd::Rst(if by_client { Side::Client } else { Side::Resource })),
        1 => Just(TcpEnd::Open),
    ];
    let mode = prop_oneof![
        1 => Just(PathMode::Direct),
        1 => Just(PathMode::ClientRelayed),
        1 => Just(PathMode::GatewayRelayed),
        5 => Just(PathMode::SameRelay),
        1 => Just(PathMode::DifferentRelays),
    ];
    let fault = prop_oneof![
        2 => Just(FaultKind::Partition),
        1 => Just(FaultKind::Hold),
        1 => (1u32..4).prop_map(FaultKind::DropNext),
    ];
    // Resources: 0 web (CIDR v4), 1 app (DNS), 2 web6 (CIDR v6), 3 db (CIDR, gw2), 4 svc (DNS,
    // gw2); DNS resources (1, 4) come up most.
    let resource =
        || prop_oneof![2 => Just(0usize), 4 => Just(1), 1 => Just(2), 1 => Just(3), 2 => Just(4)];
    prop_oneof![
        6 => (0usize..3, resource(), prop_oneof![Just(53u16), Just(5000), 1u16..2000], 1u16..1200, prop::bool::weighted(0.3), 0usize..4)
            .prop_map(|(client, resource, port, bytes, ipv6, domain)| Action::Udp { client, resource, port, bytes, ipv6, domain }),
        5 => (0usize..3, resource(), prop_oneof![Just(443u16), Just(22), Just(80)], prop::bool::weighted(0.3), 0usize..4,
              prop::collection::vec((any::<bool>(), 1u16..1200), 0..3), tcp_end,
              (prop::bool::weighted(0.2), prop::bool::weighted(0.2)))
            .prop_map(|(client, resource, port, ipv6, domain, data, end, (retransmit_syn, late_ack))| Action::Tcp {
                client, resource, port, ipv6, domain, data, end, retransmit_syn, late_ack,
            }),
        4 => (0usize..3, 0usize..2, mode)
            .prop_map(|(client, gateway, mode)| Action::Path { client, gateway, mode }),
        1 => (0usize..3).prop_map(|client| Action::Roam { client }),
        1 => (0usize..3, resource()).prop_map(|(client, resource)| Action::Revoke { client, resource }),
        1 => (0usize..3, resource()).prop_map(|(client, resource)| Action::Grant { client, resource }),
        1 => (0usize..4, 1u8..250).prop_map(|(domain, last_octet)| Action::DnsChange { domain, last_octet }),
        2 => (0usize..3, any::<bool>(), fault).prop_map(|(client, to_relay, kind)| Action::Fault { client, to_relay, kind }),
        1 => Just(Action::Restart),
        1 => (0usize..3, 0usize..StrayKind::ALL.len(), any::<bool>(), 0usize..5)
            .prop_map(|(relay, kind, ipv6, host)| Action::Stray { relay, kind, ipv6, host }),
        3 => (1u16..600).prop_map(|bytes| Action::LateResourceData { bytes }),
        3 => prop_oneof![Just(5u64), Just(60), Just(119), Just(121), Just(130), Just(300), Just(590), Just(610), 1u64..200]
            .prop_map(|seconds| Action::Idle { seconds }),
    ]
}
