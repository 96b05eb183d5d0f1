//! The second draw of a scenario: the actions (traffic, path changes, roams, grants, DNS
//! changes, faults, restarts, stray datagrams at relays, idle times), weighted so that the interesting ones are common.

use proptest::prelude::*;
use scenario_format::{AttackKind, GatewayAttackKind, PathMode, Side, StrayKind};

use super::profile::{ActionKind, IdleLengths, Profile, Reuse};
use super::relay_timer_boundary::TIMER_CHOICES;

/// Where traffic goes, by any indices (the step writer takes them modulo what exists): a
/// client, a resource, a port, IPv6 inside the tunnel, and for DNS resources a name.
#[derive(Debug, Clone, Copy)]
pub(super) struct Destination {
    pub(super) client: usize,
    pub(super) resource: usize,
    pub(super) port: u16,
    pub(super) ipv6: bool,
    pub(super) domain: usize,
}

/// One thing that happens, before it becomes steps (a TCP conversation is several steps).
#[derive(Debug, Clone)]
pub(super) enum Action {
    Udp {
        to: Destination,
        bytes: u16,
    },
    Tcp {
        to: Destination,
        data: Vec<(bool, u16)>,
        end: TcpEnd,
        /// The client sends its SYN again right after the handshake (a retransmission that
        /// crossed the SYN-ACK), and an ACK after the close (a late ACK).
        retransmit_syn: bool,
        late_ack: bool,
        /// Open from the source port of the latest connection (reusing its 5-tuple when the
        /// target is the same), instead of a port of its own.
        reuse: bool,
    },
    Path {
        client: usize,
        gateway: usize,
        mode: PathMode,
    },
    Roam {
        client: usize,
        /// Back to the address before the last roam (if the client roamed).
        back: bool,
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
    /// The attacker host attacks a relay or a gateway: `kind` indexes `AttackKind::ALL` then
    /// `GatewayAttackKind::ALL`; one past them is a client's flood of new flows (to the latest
    /// UDP target, past the gateway's per-client cap), two past a compromised client's datagram
    /// from a forged inner source (to the latest UDP target); `target` picks the relay or the
    /// gateway and `client` whose session a gateway attack is about (any index).
    Attack {
        target: usize,
        kind: usize,
        ipv6: bool,
        client: usize,
    },
    /// Traffic that reaches a gateway `offset_ms` from the deadline of one of its pending
    /// timers (a flow's idle timeout, a DNS answer's TTL): the `which`-th of those the traffic
    /// so far can reach. The steps are worked out from the model's deadlines
    /// (`step_writer::StepWriter::write_timer_boundary`).
    TimerBoundary {
        which: usize,
        offset_ms: i64,
    },
    /// A datagram from `client` that reaches the first gateway's relay `offset_ms` from the
    /// deadline of one of the relay's timers for the gateway's fresh channel to the client
    /// (`timer` picks the permission, the channel binding or its cooldown, while the gateway's
    /// binding requests are dropped; or the gateway's allocation, hit by a peer's datagram or by
    /// its held Refresh); or the relay's answer to the gateway's ChannelBind for that channel
    /// reaching the gateway `offset_ms` from an instant of the transaction's retransmission
    /// schedule (`relay_timer_boundary`).
    RelayTimerBoundary {
        client: usize,
        timer: usize,
        offset_ms: i64,
    },
}

#[derive(Debug, Clone, Copy)]
pub(super) enum TcpEnd {
    Fin(Side),
    /// Both sides send their FIN at once.
    SimultaneousFin,
    /// `by` half-closes; the other side sends `bytes`, then ends with a FIN or a RST.
    HalfClose {
        by: Side,
        bytes: u16,
        then_reset: bool,
    },
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

pub(super) fn action(profile: &Profile) -> impl Strategy<Value = Action> + use<> {
    let tcp_end = prop_oneof![
        3 => any::<bool>().prop_map(|by_client| TcpEnd::Fin(if by_client { Side::Client } else { Side::Resource })),
        1 => Just(TcpEnd::SimultaneousFin),
        1 => (any::<bool>(), 1u16..1200, prop::bool::weighted(0.3)).prop_map(|(by_client, bytes, then_reset)| TcpEnd::HalfClose {
            by: if by_client { Side::Client } else { Side::Resource },
            bytes,
            then_reset,
        }),
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
    let [partition, hold, drop_next] = profile.faults;
    let fault = weighted(vec![
        (partition, Just(FaultKind::Partition).boxed()),
        (hold, Just(FaultKind::Hold).boxed()),
        (drop_next, (1u32..4).prop_map(FaultKind::DropNext).boxed()),
    ]);
    // Resources: 0 web (CIDR v4), 1 app (DNS), 2 web6 (CIDR v6), 3 db (CIDR, gw2), 4 svc (DNS,
    // gw2); DNS resources (1, 4) come up most.
    let resource =
        || prop_oneof![2 => Just(0usize), 4 => Just(1), 1 => Just(2), 1 => Just(3), 2 => Just(4)];
    let reuse_often = profile.reuse == Reuse::Often;
    // Often-reused ports: every datagram to one of two ports shares its 5-tuple with others.
    let udp_port = if reuse_often {
        prop_oneof![Just(53u16), Just(5000)].boxed()
    } else {
        prop_oneof![Just(53u16), Just(5000), 1u16..2000].boxed()
    };
    let reuse_tcp = prop::bool::weighted(if reuse_often { 0.6 } else { 0.05 });
    let idle_seconds = match profile.idles {
        IdleLengths::Short => prop_oneof![Just(5u64), 1u64..30].boxed(),
        // An hour crosses the relays' nonce lifetime (the next refresh meets a 438).
        IdleLengths::Long => prop_oneof![
            Just(119u64),
            Just(121),
            Just(130),
            Just(300),
            Just(590),
            Just(610),
            Just(3600)
        ]
        .boxed(),
        IdleLengths::Any => prop_oneof![
            Just(5u64),
            Just(60),
            Just(119),
            Just(121),
            Just(130),
            Just(300),
            Just(590),
            Just(610),
            1u64..200
        ]
        .boxed(),
    };
    let arm = |kind: ActionKind, strategy: BoxedStrategy<Action>| (profile.weight(kind), strategy);
    weighted(vec![
        arm(
            ActionKind::Udp,
            (destination(udp_port), 1u16..1200)
                .prop_map(|(to, bytes)| Action::Udp { to, bytes })
                .boxed(),
        ),
        arm(
            ActionKind::Tcp,
            (
                destination(prop_oneof![Just(443u16), Just(22), Just(80)].boxed()),
                prop::collection::vec((any::<bool>(), 1u16..1200), 0..3),
                tcp_end,
                (
                    prop::bool::weighted(0.2),
                    prop::bool::weighted(0.2),
                    reuse_tcp,
                ),
            )
                .prop_map(
                    |(to, data, end, (retransmit_syn, late_ack, reuse))| Action::Tcp {
                        to,
                        data,
                        end,
                        retransmit_syn,
                        late_ack,
                        reuse,
                    },
                )
                .boxed(),
        ),
        arm(
            ActionKind::Path,
            (0usize..3, 0usize..2, mode)
                .prop_map(|(client, gateway, mode)| Action::Path {
                    client,
                    gateway,
                    mode,
                })
                .boxed(),
        ),
        arm(
            ActionKind::Roam,
            (0usize..3, prop::bool::weighted(0.4))
                .prop_map(|(client, back)| Action::Roam { client, back })
                .boxed(),
        ),
        arm(
            ActionKind::Revoke,
            (0usize..3, resource())
                .prop_map(|(client, resource)| Action::Revoke { client, resource })
                .boxed(),
        ),
        arm(
            ActionKind::Grant,
            (0usize..3, resource())
                .prop_map(|(client, resource)| Action::Grant { client, resource })
                .boxed(),
        ),
        arm(
            ActionKind::DnsChange,
            (0usize..4, 1u8..250)
                .prop_map(|(domain, last_octet)| Action::DnsChange { domain, last_octet })
                .boxed(),
        ),
        arm(
            ActionKind::Fault,
            (0usize..3, any::<bool>(), fault)
                .prop_map(|(client, to_relay, kind)| Action::Fault {
                    client,
                    to_relay,
                    kind,
                })
                .boxed(),
        ),
        arm(ActionKind::Restart, Just(Action::Restart).boxed()),
        arm(
            ActionKind::RelayTimerBoundary,
            (0usize..3, 0usize..TIMER_CHOICES, -1i64..=1)
                .prop_map(|(client, timer, offset_ms)| Action::RelayTimerBoundary {
                    client,
                    timer,
                    offset_ms,
                })
                .boxed(),
        ),
        arm(
            ActionKind::Stray,
            (
                0usize..3,
                0usize..StrayKind::ALL.len(),
                any::<bool>(),
                0usize..5,
            )
                .prop_map(|(relay, kind, ipv6, host)| Action::Stray {
                    relay,
                    kind,
                    ipv6,
                    host,
                })
                .boxed(),
        ),
        arm(
            ActionKind::Attack,
            (
                0usize..3,
                0usize..AttackKind::ALL.len() + GatewayAttackKind::ALL.len() + 2,
                any::<bool>(),
                0usize..3,
            )
                .prop_map(|(target, kind, ipv6, client)| Action::Attack {
                    target,
                    kind,
                    ipv6,
                    client,
                })
                .boxed(),
        ),
        arm(
            ActionKind::LateResourceData,
            (1u16..600)
                .prop_map(|bytes| Action::LateResourceData { bytes })
                .boxed(),
        ),
        arm(
            ActionKind::Idle,
            idle_seconds
                .prop_map(|seconds| Action::Idle { seconds })
                .boxed(),
        ),
        arm(
            ActionKind::TimerBoundary,
            (any::<usize>(), -1i64..=1)
                .prop_map(|(which, offset_ms)| Action::TimerBoundary { which, offset_ms })
                .boxed(),
        ),
    ])
}

/// A destination: any client, a resource (DNS resources, 1 and 4, come up most), a port from
/// `ports`, IPv6 inside the tunnel three times in ten, any name.
fn destination(ports: BoxedStrategy<u16>) -> impl Strategy<Value = Destination> {
    let resource =
        prop_oneof![2 => Just(0usize), 4 => Just(1), 1 => Just(2), 1 => Just(3), 2 => Just(4)];
    (
        0usize..3,
        resource,
        ports,
        prop::bool::weighted(0.3),
        0usize..4,
    )
        .prop_map(|(client, resource, port, ipv6, domain)| Destination {
            client,
            resource,
            port,
            ipv6,
            domain,
        })
}

/// A choice among the arms with a weight above zero (a profile leaves the others out).
fn weighted<T: std::fmt::Debug + 'static>(arms: Vec<(u32, BoxedStrategy<T>)>) -> BoxedStrategy<T> {
    let on: Vec<(u32, BoxedStrategy<T>)> =
        arms.into_iter().filter(|(weight, _)| *weight > 0).collect();
    prop::strategy::Union::new_weighted(on).boxed()
}
