//! What the runner tells the hosts to do, one typed inbox per host.
//!
//! Each host owns the receiving end of its inbox and the runner keeps the sending ends. A
//! command is queued at a step's start and the host takes it in its next turn (the same
//! millisecond: hosts run after the runner within a tick).

use std::{
    cell::RefCell,
    collections::VecDeque,
    net::{IpAddr, SocketAddr},
    rc::Rc,
};

/// A host's queue of commands: the runner pushes, the host drains. turmoil runs every host on
/// one thread, so a shared `RefCell` is enough; borrows never overlap an await.
#[derive(Debug)]
pub(crate) struct Inbox<T>(Rc<RefCell<VecDeque<T>>>);

impl<T> Clone for Inbox<T> {
    fn clone(&self) -> Self {
        Self(Rc::clone(&self.0))
    }
}

impl<T> Default for Inbox<T> {
    fn default() -> Self {
        Self(Rc::default())
    }
}

/// The runner's ends of every host's inbox, by gateway and client index.
#[derive(Debug)]
pub(crate) struct Inboxes {
    pub(crate) gateways: Vec<Inbox<GatewayCommand>>,
    pub(crate) clients: Vec<Inbox<ClientCommand>>,
    /// The internet host's (both families share it; each takes its own).
    pub(crate) internet: Inbox<StraySend>,
    /// The attacker host's (both families share it; each takes the attacks of its own).
    pub(crate) attacker: Inbox<AttackOrder>,
    /// Frames that are not UDP (turmoil carries only UDP and TCP), handed to the relay host
    /// they go to on the millisecond they arrive.
    pub(crate) relay_frames: Inbox<RelayFrame>,
}

impl Inboxes {
    pub(crate) fn new(gateways: usize, clients: usize) -> Self {
        Self {
            gateways: (0..gateways).map(|_| Inbox::default()).collect(),
            clients: (0..clients).map(|_| Inbox::default()).collect(),
            internet: Inbox::default(),
            attacker: Inbox::default(),
            relay_frames: Inbox::default(),
        }
    }

    /// Whether a command waits for its host (the runner then steps one tick at a time).
    pub(crate) fn any_waiting(&self) -> bool {
        self.gateways.iter().any(|inbox| !inbox.is_empty())
            || self.clients.iter().any(|inbox| !inbox.is_empty())
            || !self.internet.is_empty()
            || !self.attacker.is_empty()
            || !self.relay_frames.is_empty()
    }
}

impl<T> Inbox<T> {
    pub(crate) fn push(&self, command: T) {
        self.0.borrow_mut().push_back(command);
    }

    /// Every command waiting, oldest first.
    pub(crate) fn take_all(&self) -> Vec<T> {
        self.0.borrow_mut().drain(..).collect()
    }

    /// The commands waiting that `mine` picks, oldest first; the others stay.
    pub(crate) fn take_where(&self, mine: impl Fn(&T) -> bool) -> Vec<T> {
        let mut queue = self.0.borrow_mut();
        let (taken, left): (Vec<T>, Vec<T>) = queue.drain(..).partition(|command| mine(command));
        queue.extend(left);
        taken
    }

    /// The oldest command waiting that `mine` picks; the others stay.
    pub(crate) fn take_first_where(&self, mine: impl Fn(&T) -> bool) -> Option<T> {
        let mut queue = self.0.borrow_mut();
        let index = queue.iter().position(mine)?;
        queue.remove(index)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.borrow().is_empty()
    }
}

#[derive(Debug, Clone)]
pub(crate) enum GatewayCommand {
    Grant {
        client: usize,
        resource: usize,
        filters: Vec<String>,
    },
    Revoke {
        client: usize,
        resource: usize,
    },
    MapDns {
        client: usize,
        proxy_ip: IpAddr,
        domain: String,
    },
    /// The resource side of a TCP connection acts (`client` is the client's inner address).
    Resource {
        client: SocketAddr,
        action: ResourceAction,
    },
    /// Reach `remote` (a client's address as the relay sees it) through the gateway's own
    /// relay, or directly.
    Path {
        remote: SocketAddr,
        via_relay: bool,
    },
    Restart,
    Shutdown,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum ResourceAction {
    Data(u16),
    Close,
    Reset,
    /// A new connection opens from this client address: the resource's side of an earlier
    /// one there is gone (it gets a side of the new one when the new SYN arrives).
    Forget,
    /// Answer the client's coming FIN with a bare ACK (it half-closes); nothing is sent.
    KeepOpen,
}

#[derive(Debug, Clone)]
pub(crate) enum ClientCommand {
    Udp {
        gateway: usize,
        src: SocketAddr,
        dst: SocketAddr,
        payload: Vec<u8>,
    },
    TcpOpen {
        gateway: usize,
        /// The connection's number (it picks the client's initial sequence number).
        conn: u32,
        src: SocketAddr,
        dst: SocketAddr,
    },
    Tcp {
        src: SocketAddr,
        action: ClientTcpAction,
    },
    /// Send frames for `gateway` to `target`, through the client's own relay or directly.
    Path {
        gateway: usize,
        target: SocketAddr,
        via_relay: bool,
    },
    /// To the next port, or `back` to the one below.
    Roam { back: bool },
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum ClientTcpAction {
    RetransmitSyn,
    Data(u16),
    Close,
    Reset,
    LateAck,
    /// Answer the resource's coming FIN with a bare ACK (it half-closes); nothing is sent.
    KeepOpen,
}

/// A frame that is not UDP, arriving at a relay host at `at_ms`: an ICMP error from the internet
/// host about the datagram `about.0` -> `about.1`.
#[derive(Debug, Clone)]
pub(crate) struct RelayFrame {
    pub(crate) sent_ms: u64,
    pub(crate) at_ms: u64,
    /// The relay address it goes to (the side of that family takes it).
    pub(crate) to: IpAddr,
    /// The quoted datagram's source (the relay's address) and destination.
    pub(crate) about: (SocketAddr, SocketAddr),
    /// What it is, in words (for the trace and the coverage grid).
    pub(crate) kind: &'static str,
    /// The Ethernet frame.
    pub(crate) frame: Vec<u8>,
}

/// One stray datagram for the internet host to send.
#[derive(Debug, Clone)]
pub(crate) struct StraySend {
    pub(crate) src: SocketAddr,
    pub(crate) dst: SocketAddr,
    pub(crate) payload: Vec<u8>,
}

/// One attack for the attacker host to play.
#[derive(Debug, Clone)]
pub(crate) struct AttackOrder {
    pub(crate) step: usize,
    /// `relay <name>` or `gateway <name>`.
    pub(crate) target: String,
    pub(crate) plan: AttackPlan,
}

#[derive(Debug, Clone)]
pub(crate) enum AttackPlan {
    /// On the relay whose TURN address is `server` (in the family the attack uses).
    Relay {
        kind: scenario_format::AttackKind,
        server: SocketAddr,
    },
    /// A forged answer to a DNS query of gateway `gateway` (at `gateway_ip`), raced against
    /// the real answer: sent as soon as a query of the gateway is unanswered on the wire, or
    /// at `forge_by_ms` against its last query (`crate::dns_forgery`).
    DnsForgery {
        kind: scenario_format::GatewayAttackKind,
        gateway: String,
        gateway_ip: IpAddr,
        forge_by_ms: u64,
    },
    /// One datagram to a gateway's socket `to` (none when there is nothing to replay), from
    /// the attacker's address or spoofed from `spoof_from`.
    Gateway {
        kind: scenario_format::GatewayAttackKind,
        to: SocketAddr,
        payload: Option<Vec<u8>>,
        spoof_from: Option<SocketAddr>,
    },
}

impl AttackOrder {
    /// The address the attack goes to (its family is the attacker's).
    pub(crate) fn destination(&self) -> SocketAddr {
        match &self.plan {
            AttackPlan::Relay { server, .. } => *server,
            AttackPlan::Gateway { to, .. } => *to,
            AttackPlan::DnsForgery { gateway_ip, .. } => SocketAddr::new(
                *gateway_ip,
                *scenario_format::plan::GATEWAY_DNS_PORTS.start(),
            ),
        }
    }

    pub(crate) fn kind_name(&self) -> &'static str {
        match &self.plan {
            AttackPlan::Relay { kind, .. } => kind.as_str(),
            AttackPlan::Gateway { kind, .. } | AttackPlan::DnsForgery { kind, .. } => kind.as_str(),
        }
    }

    /// When a waiting order will be played at the latest.
    pub(crate) fn ready_by_ms(&self) -> Option<u64> {
        match &self.plan {
            AttackPlan::DnsForgery { forge_by_ms, .. } => Some(*forge_by_ms),
            _ => None,
        }
    }

    pub(crate) fn rounds(&self) -> usize {
        match &self.plan {
            AttackPlan::Relay { kind, .. } => kind.rounds(),
            AttackPlan::Gateway { .. } | AttackPlan::DnsForgery { .. } => 1,
        }
    }
}
