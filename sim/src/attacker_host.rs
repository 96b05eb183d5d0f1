//! The attacker host of `attack` steps (`scenario_format::attack`, docs/harness.md
//! "Attacks"): on no TURN path, one turmoil host per address family, with TURN credentials of
//! its own. It plays one attack at a time as rounds: it sends every datagram of a round, waits
//! one round trip, records what came back on each port, and builds the next round from it (a
//! nonce from a challenge, the relayed address from a success).

use std::{
    cell::RefCell,
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    rc::Rc,
};

use observation::{AttackAnswer, AttackOutcome};
use proto::{credentials::Credentials, stun::XorPeerAddress};
use relay_test_support::hostile;
use scenario_format::{
    AttackKind,
    attack::{self, PERMISSION_FLOOD_BATCH},
    plan::{ATTACKER_V4, ATTACKER_V6},
    settings::{ATTACKER_ID, RELAY_ALLOCATION_QUOTA, RELAY_MAX_PERMISSIONS},
    timing::ORIGIN_UNIX_SECS,
};
use turmoil::net::UdpSocket;

use crate::{
    clock::{end_turn, now_ms},
    commands::{AttackOrder, AttackPlan, Inbox},
    dns_forgery,
    endpoint_io::unspecified,
    state::{Shared, Spoofed},
    wire,
};

/// The host name in hops and traces.
pub const NAME: &str = "attacker";

/// Source ports an attack may use: one more than the allocation quota (a flood's).
const PORTS: u16 = RELAY_ALLOCATION_QUOTA as u16 + 1;

/// Adds the attacker host (both families) to the simulation.
pub(crate) fn add_attacker_host(
    sim: &mut turmoil::Sim<'_>,
    shared: &Rc<RefCell<Shared>>,
    inbox: &Inbox<AttackOrder>,
    latency_ms: u32,
    longest_latency_ms: u32,
) {
    for ip in [IpAddr::V4(ATTACKER_V4), IpAddr::V6(ATTACKER_V6)] {
        let (shared, inbox) = (shared.clone(), inbox.clone());
        sim.host(ip, move || {
            let (shared, inbox) = (shared.clone(), inbox.clone());
            let latency = Latency {
                direct_ms: latency_ms,
                longest_ms: longest_latency_ms,
            };
            async move { run(ip, shared, inbox, latency).await.map_err(Into::into) }
        });
    }
}

async fn run(
    ip: IpAddr,
    shared: Rc<RefCell<Shared>>,
    inbox: Inbox<AttackOrder>,
    latency: Latency,
) -> std::io::Result<()> {
    let mut sockets = Vec::new();
    for offset in 0..=DNS_LANE_PORT {
        let local = attack::attacker(ip, offset);
        sockets.push(UdpSocket::bind(SocketAddr::new(unspecified(ip), local.port())).await?);
    }
    let turn_name = format!("{NAME}@{ip}");
    let mut buf = vec![0u8; 65536];
    let mut main = Lane::new(0);
    let mut dns = Lane::new(DNS_LANE_PORT);
    loop {
        // Answers first: they belong to the round under way.
        for (offset, socket) in sockets.iter().enumerate() {
            let offset = offset as u16;
            while let Ok((len, from)) = socket.try_recv_from(&mut buf) {
                let local = attack::attacker(ip, offset);
                wire::received(&shared, NAME, from, local, &buf[..len], None);
                let lane = if offset == DNS_LANE_PORT {
                    &mut dns
                } else {
                    &mut main
                };
                if let Some((script, _)) = lane.playing.as_mut() {
                    script.take_answer(offset, &buf[..len]);
                }
            }
        }
        // What gateways did with this host's datagrams.
        let verdicts: Vec<_> = {
            let mut shared = shared.borrow_mut();
            let (mine, others) = std::mem::take(&mut shared.gateway_verdicts)
                .into_iter()
                .partition(|(from, _)| from.ip() == ip);
            shared.gateway_verdicts = others;
            mine
        };
        for (from, answer) in verdicts {
            let offset = from.port() - attack::ATTACKER_PORT;
            let lane = if offset == DNS_LANE_PORT {
                &mut dns
            } else {
                &mut main
            };
            if let Some((script, _)) = lane.playing.as_mut() {
                script.take_verdict(offset, answer);
            }
        }
        let now = now_ms();
        for lane in [&mut main, &mut dns] {
            lane.take_turn(now, &inbox, &sockets, &shared, ip, latency);
        }
        {
            let mut shared = shared.borrow_mut();
            // Any query sent so far has been seen (and raced, if it was the one).
            shared.query_to_race = false;
            if dns.waiting.is_some() {
                shared.attackers_racing.insert(ip);
            } else {
                shared.attackers_racing.remove(&ip);
            }
        }
        let deadline = [main.deadline(), dns.deadline()]
            .into_iter()
            .flatten()
            .min();
        end_turn(&shared, &turn_name, deadline).await;
    }
}

/// The attacker's port offset for DNS forgeries: their own lane, beside the ports of the other
/// attacks, since a forgery may wait for a query to race across steps while they go on.
const DNS_LANE_PORT: u16 = PORTS;

/// One line of attacks, played an order at a time: the main lane (relay attacks, gateway
/// frames) or the DNS lane (forgeries, which may wait for a query to race).
struct Lane {
    /// The port offset its gateway datagrams leave from.
    port: u16,
    waiting: Option<AttackOrder>,
    playing: Option<(Script, u64)>,
}

impl Lane {
    fn new(port: u16) -> Self {
        Self {
            port,
            waiting: None,
            playing: None,
        }
    }

    fn takes(&self, order: &AttackOrder) -> bool {
        matches!(order.plan, AttackPlan::DnsForgery { .. }) == (self.port == DNS_LANE_PORT)
    }

    /// Closes a round that is over (sending the next, or recording the outcome), then starts
    /// the next order of this lane when it is free and the order can be played.
    fn take_turn(
        &mut self,
        now: u64,
        inbox: &Inbox<AttackOrder>,
        sockets: &[UdpSocket],
        shared: &Rc<RefCell<Shared>>,
        ip: IpAddr,
        latency: Latency,
    ) {
        if let Some((script, round_ends)) = self.playing.as_mut()
            && now >= *round_ends
        {
            script.end_round();
            if script.finished() {
                let (script, _) = self.playing.take().expect("playing");
                shared.borrow_mut().journal.attacks.push(script.outcome());
            } else {
                send_round(script, sockets, shared, ip);
                *round_ends = now + latency.round_ms(script);
            }
        }
        if self.playing.is_none() && self.waiting.is_none() {
            self.waiting = inbox.take_first_where(|order| {
                order.destination().is_ipv6() == ip.is_ipv6() && self.takes(order)
            });
        }
        if let Some(order) = self
            .waiting
            .as_ref()
            .and_then(|order| ready(order, shared, now))
        {
            self.waiting = None;
            let mut script = Script::new(order, self.port);
            send_round(&mut script, sockets, shared, ip);
            let round_ends = now + latency.round_ms(&script);
            self.playing = Some((script, round_ends));
        }
    }

    /// When the lane next has something to do by itself.
    fn deadline(&self) -> Option<u64> {
        match (&self.playing, &self.waiting) {
            (Some((_, ends)), _) => Some(*ends),
            (None, Some(order)) => order.ready_by_ms(),
            (None, None) => None,
        }
    }
}

fn send_round(
    script: &mut Script,
    sockets: &[UdpSocket],
    shared: &Rc<RefCell<Shared>>,
    ip: IpAddr,
) {
    for probe in script.start_round() {
        let src = attack::attacker(ip, probe.port);
        match (sockets.get(usize::from(probe.port)), probe.to) {
            (Some(_), Some(to)) if let Some(from) = probe.spoof_from => {
                let mut shared = shared.borrow_mut();
                shared.spoof_orders.push(Spoofed {
                    attacker: src,
                    from,
                    to,
                    payload: probe.payload,
                });
                shared.spoof_waker.notify_waiters();
            }
            (Some(socket), Some(dst)) => wire::send(socket, shared, NAME, src, dst, &probe.payload),
            _ => shared.borrow_mut().journal.trace(
                NAME,
                format!("{src}: nothing to send to (no relayed address)"),
            ),
        }
    }
}

/// The order as it can be played now, `None` while it must wait: a DNS forgery waits for a
/// query of its gateway to race, until its deadline.
fn ready(order: &AttackOrder, shared: &Rc<RefCell<Shared>>, now: u64) -> Option<AttackOrder> {
    let AttackPlan::DnsForgery {
        kind,
        ref gateway,
        gateway_ip,
        forge_by_ms,
    } = order.plan
    else {
        return Some(order.clone());
    };
    let forgery = dns_forgery::forge(
        &shared.borrow(),
        gateway,
        gateway_ip,
        kind,
        now >= forge_by_ms,
    )?;
    Some(AttackOrder {
        step: order.step,
        target: order.target.clone(),
        plan: AttackPlan::Gateway {
            kind,
            to: forgery.to,
            payload: Some(forgery.payload),
            spoof_from: forgery.spoof_from,
        },
    })
}

/// How long the attacker's datagrams take: from its own address (the default latency), or
/// spoofed, from the host that owns the address, over that host's link (at most the
/// topology's longest).
#[derive(Debug, Clone, Copy)]
struct Latency {
    direct_ms: u32,
    longest_ms: u32,
}

impl Latency {
    /// How long a round of `script` waits for its answers.
    fn round_ms(self, script: &Script) -> u64 {
        let spoofs = matches!(
            script.order.plan,
            AttackPlan::Gateway {
                spoof_from: Some(_),
                ..
            }
        );
        AttackKind::round_ms(if spoofs {
            self.longest_ms
        } else {
            self.direct_ms
        })
    }
}

/// One datagram of a round: from the attacker's port `ATTACKER_PORT + port` to `to` (none
/// when what it needs was not learnt).
struct Probe {
    port: u16,
    to: Option<SocketAddr>,
    payload: Vec<u8>,
    /// The forged source, if the attacker spoofs one (sent by the host that owns it:
    /// `Shared::spoof_orders`).
    spoof_from: Option<SocketAddr>,
}

/// One attack as it goes: what it learnt and what came back.
struct Script {
    order: AttackOrder,
    /// The port offset a gateway datagram leaves from (its lane's).
    gateway_port: u16,
    credentials: Credentials,
    /// The probes of the round under way, and what came back on each port during it.
    sent: Vec<u16>,
    arrived: BTreeMap<u16, Vec<AttackAnswer>>,
    /// The nonce and realm of the last challenge on each port.
    challenges: BTreeMap<u16, (String, String)>,
    /// Ports whose Allocate succeeded, and the main port's relayed address.
    allocated: Vec<u16>,
    relayed: Option<SocketAddr>,
    rounds: Vec<Vec<AttackAnswer>>,
    next_id: u64,
}

impl Script {
    fn new(order: AttackOrder, gateway_port: u16) -> Self {
        Self {
            credentials: attacker_credentials(),
            order,
            gateway_port,
            sent: Vec::new(),
            arrived: BTreeMap::new(),
            challenges: BTreeMap::new(),
            allocated: Vec::new(),
            relayed: None,
            rounds: Vec::new(),
            next_id: 0,
        }
    }

    fn finished(&self) -> bool {
        self.rounds.len() >= self.order.rounds()
    }

    fn outcome(&self) -> AttackOutcome {
        AttackOutcome {
            step: self.order.step,
            target: self.order.target.clone(),
            kind: self.order.kind_name().to_owned(),
            rounds: self.rounds.clone(),
        }
    }

    /// Learns what an answer teaches (a nonce, a relayed address) and keeps it for the round.
    fn take_answer(&mut self, port: u16, datagram: &[u8]) {
        let answer = AttackAnswer::of(datagram);
        if let Some(challenge) = hostile::challenge_of(datagram) {
            self.challenges.insert(port, challenge);
        }
        if answer == AttackAnswer::Success
            && let Some(relayed) = hostile::relayed_address_of(datagram)
        {
            self.allocated.push(port);
            if port == 0 {
                self.relayed = Some(relayed);
            }
        }
        self.arrived.entry(port).or_default().push(answer);
    }

    /// What a gateway did with the datagram from `port`.
    fn take_verdict(&mut self, port: u16, answer: AttackAnswer) {
        self.arrived.entry(port).or_default().push(answer);
    }

    /// Closes the round: each probe's answer is the next one that came back on its port
    /// (nothing if none did); whatever else came back follows, port by port.
    fn end_round(&mut self) {
        let mut answers = Vec::new();
        for port in std::mem::take(&mut self.sent) {
            let queue = self.arrived.entry(port).or_default();
            answers.push(if queue.is_empty() {
                AttackAnswer::Nothing
            } else {
                queue.remove(0)
            });
        }
        for (_, rest) in std::mem::take(&mut self.arrived) {
            answers.extend(rest);
        }
        self.rounds.push(answers);
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// A probe from `port` to the attack's destination (a relay's TURN address).
    fn to_relay(&self, port: u16, payload: Vec<u8>) -> Probe {
        Probe {
            port,
            to: Some(self.order.destination()),
            payload,
            spoof_from: None,
        }
    }

    fn unsigned_allocate(&mut self, port: u16) -> Probe {
        let request = hostile::allocate(self.id(), self.ipv6());
        self.to_relay(port, hostile::unsigned(request))
    }

    /// `message` from `port`, signed with `credentials` and the nonce of `port`'s challenge.
    fn signed_from(
        &mut self,
        port: u16,
        message: proto::stun::Message,
        credentials: &Credentials,
        nonce_of: impl FnOnce(&str) -> String,
        nonce_port: u16,
    ) -> Probe {
        let (nonce, realm) = self
            .challenges
            .get(&nonce_port)
            .cloned()
            .unwrap_or_default();
        let payload = hostile::signed(message, credentials, &realm, &nonce_of(&nonce));
        self.to_relay(port, payload)
    }

    fn signed(&mut self, message: proto::stun::Message) -> Probe {
        let credentials = self.credentials.clone();
        self.signed_from(0, message, &credentials, str::to_owned, 0)
    }

    fn ipv6(&self) -> bool {
        self.order.destination().is_ipv6()
    }

    /// A peer address of the attack's family that nobody uses, numbered `n`.
    fn peer(&self, n: u32) -> SocketAddr {
        if self.ipv6() {
            SocketAddr::new(
                IpAddr::V6(std::net::Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    0xfffe,
                    0,
                    0,
                    0,
                    (n >> 16) as u16,
                    n as u16,
                )),
                7,
            )
        } else {
            // 198.18.0.0/15, the benchmarking range: public, routed nowhere here.
            SocketAddr::new(
                IpAddr::V4(std::net::Ipv4Addr::new(198, 18, (n >> 8) as u8, n as u8)),
                7,
            )
        }
    }

    /// The datagrams of the next round.
    fn start_round(&mut self) -> Vec<Probe> {
        let probes = self.round_probes();
        self.sent = probes.iter().map(|probe| probe.port).collect();
        probes
    }

    fn round_probes(&mut self) -> Vec<Probe> {
        use AttackKind as K;
        let kind = match &self.order.plan {
            AttackPlan::Relay { kind, .. } => *kind,
            AttackPlan::Gateway {
                payload,
                spoof_from,
                ..
            } => {
                return payload
                    .iter()
                    .map(|payload| Probe {
                        spoof_from: *spoof_from,
                        ..self.to_relay(self.gateway_port, payload.clone())
                    })
                    .collect();
            }
            // Played only once `ready` made it a datagram.
            AttackPlan::DnsForgery { .. } => return Vec::new(),
        };
        // The rounds closed so far number the one under way.
        let round = self.rounds.len();
        // Every attack but the flood starts with the challenge of an unsigned Allocate, and
        // the ones that hold an allocation take it in round 2 and delete it in the last.
        if kind == K::AllocationFlood {
            return match round {
                0 => (0..PORTS)
                    .map(|port| self.unsigned_allocate(port))
                    .collect(),
                1 => (0..PORTS)
                    .map(|port| {
                        let request = hostile::allocate(self.id(), self.ipv6());
                        let credentials = self.credentials.clone();
                        self.signed_from(port, request, &credentials, str::to_owned, port)
                    })
                    .collect(),
                _ => {
                    let ports = self.allocated.clone();
                    ports
                        .into_iter()
                        .map(|port| {
                            let request = hostile::delete(self.id());
                            let credentials = self.credentials.clone();
                            self.signed_from(port, request, &credentials, str::to_owned, port)
                        })
                        .collect()
                }
            };
        }
        if round == 0 {
            return vec![self.unsigned_allocate(0)];
        }
        let holds_allocation = matches!(
            kind,
            K::SmuggledPeer
                | K::DeniedPeer
                | K::PermissionFlood
                | K::ChannelHijack
                | K::ForeignCredentials
        );
        if holds_allocation && round == 1 {
            let request = hostile::allocate(self.id(), self.ipv6());
            return vec![self.signed(request)];
        }
        if holds_allocation && round + 1 == kind.rounds() {
            let request = hostile::delete(self.id());
            return vec![self.signed(request)];
        }
        let id = self.id();
        match (kind, round) {
            (K::WrongPassword, _) => {
                let mut wrong = self.credentials.clone();
                wrong.password = "not the password".to_owned();
                let request = hostile::allocate(id, self.ipv6());
                vec![self.signed_from(0, request, &wrong, str::to_owned, 0)]
            }
            (K::ExpiredUsername, _) => {
                let expired = proto::credentials::rest_api_credentials(
                    scenario_format::settings::RELAY_SECRET,
                    ORIGIN_UNIX_SECS - 1,
                    ATTACKER_ID,
                );
                let request = hostile::allocate(id, self.ipv6());
                vec![self.signed_from(0, request, &expired, str::to_owned, 0)]
            }
            (K::ForgedNonce, _) => {
                let credentials = self.credentials.clone();
                let request = hostile::allocate(id, self.ipv6());
                vec![self.signed_from(0, request, &credentials, hostile::forged, 0)]
            }
            (K::SniffedNonce, _) => {
                // The nonce port 0 was given, from port 1.
                let credentials = self.credentials.clone();
                let request = hostile::allocate(id, self.ipv6());
                vec![self.signed_from(1, request, &credentials, str::to_owned, 0)]
            }
            (K::ForeignCredentials, _) => {
                let stolen = proto::credentials::rest_api_credentials(
                    scenario_format::settings::RELAY_SECRET,
                    ORIGIN_UNIX_SECS + 86_400,
                    scenario_format::settings::STOLEN_ID,
                );
                let request = if round == 2 {
                    hostile::create_permission(id, &[self.peer(1)])
                } else {
                    // A delete: the stolen account must not end someone else's allocation.
                    hostile::delete(id)
                };
                vec![self.signed_from(0, request, &stolen, str::to_owned, 0)]
            }
            (K::SmuggledPeer, 2) => {
                let signed = self.signed(hostile::create_permission(id, &[self.peer(1)]));
                let smuggled = attack::attacker(self.order.destination().ip(), 1);
                let payload =
                    hostile::with_appended(&signed.payload, [XorPeerAddress::new(smuggled).into()]);
                vec![self.to_relay(0, payload)]
            }
            (K::SmuggledPeer, _) => vec![Probe {
                port: 1,
                to: self.relayed,
                payload: vec![0xa5; 32],
                spoof_from: None,
            }],
            (K::DeniedPeer, 2) => {
                let loopback = if self.ipv6() {
                    "[::1]:22"
                } else {
                    "127.0.0.1:22"
                };
                let peer: SocketAddr = loopback.parse().expect("an address");
                vec![self.signed(hostile::create_permission(id, &[peer]))]
            }
            (K::DeniedPeer, _) => {
                let link_local = if self.ipv6() {
                    "[fe80::1]:80"
                } else {
                    "169.254.169.254:80"
                };
                let peer: SocketAddr = link_local.parse().expect("an address");
                vec![self.signed(hostile::channel_bind(id, 0x4000, peer))]
            }
            (K::PermissionFlood, 2) => (0..attack::permission_flood_batches(RELAY_MAX_PERMISSIONS))
                .map(|batch| {
                    let peers: Vec<SocketAddr> = (0..PERMISSION_FLOOD_BATCH)
                        .map(|n| self.peer((batch * PERMISSION_FLOOD_BATCH + n) as u32 + 10))
                        .collect();
                    let id = self.id();
                    self.signed(hostile::create_permission(id, &peers))
                })
                .collect(),
            (K::PermissionFlood, _) => {
                vec![self.signed(hostile::create_permission(id, &[self.peer(5000)]))]
            }
            (K::ChannelHijack, 2) => {
                vec![self.signed(hostile::channel_bind(id, 0x4000, self.peer(1)))]
            }
            (K::ChannelHijack, 3) => {
                vec![self.signed(hostile::channel_bind(id, 0x4000, self.peer(2)))]
            }
            (K::ChannelHijack, _) => {
                vec![self.signed(hostile::channel_bind(id, 0x4001, self.peer(1)))]
            }
            (K::NoCredentials | K::AllocationFlood, _) => Vec::new(),
        }
    }
}

/// The attacker's own credentials: a valid TURN REST username, valid all run.
pub(crate) fn attacker_credentials() -> Credentials {
    proto::credentials::rest_api_credentials(
        scenario_format::settings::RELAY_SECRET,
        ORIGIN_UNIX_SECS + 86_400,
        ATTACKER_ID,
    )
}
