//! What a prediction went through, for the coverage grid: packets that met a timer on its
//! deadline (or a millisecond either side), TCP segments by the state of their flow, and new
//! flows on a 5-tuple an earlier flow had used. None of it is compared with a run; it says
//! which corners of the rules a case reached.

use std::collections::BTreeMap;

use proto::flow::{CloseReason, Protocol};

use super::Engine;
use crate::{Packet, PacketKind};

/// Timer names in the coverage grid.
pub const FLOW_IDLE_UDP: &str = "flow idle timeout (udp)";
pub const FLOW_IDLE_TCP: &str = "flow idle timeout (tcp)";
pub const DNS_TTL: &str = "dns answer ttl";

/// The timers whose boundaries a prediction notes.
pub const TIMERS: [&str; 3] = [FLOW_IDLE_UDP, FLOW_IDLE_TCP, DNS_TTL];

/// TCP states of a flow at the gateway, in the grid's order.
pub const TCP_STATES: [&str; 5] = [
    "no flow",
    "open",
    "fin one way",
    "fin both ways",
    "closed (fin or rst)",
];

/// What a TCP segment carries, in the grid's order (the first that applies).
pub const TCP_EVENTS: [&str; 6] = ["rst", "syn", "syn-ack", "fin", "data", "ack"];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelCoverage {
    /// Per timer: packets of the timer's flow or DNS mapping that reached the gateway 1 ms
    /// before its deadline, on it, and 1 ms after (`[before, on, after]`).
    pub timer_boundaries: BTreeMap<&'static str, [u64; 3]>,
    /// TCP segments that reached a gateway, by the state of their flow there and what they
    /// carry.
    pub tcp_state_events: BTreeMap<(&'static str, &'static str), u64>,
    /// New flows on the 5-tuple of a flow that closed earlier, by how that one closed.
    pub reuse: BTreeMap<&'static str, u64>,
    /// The gateways' timers still pending when the last step ended (before the shutdown), in
    /// order of their deadlines: what a generator aims traffic at.
    pub pending_at_end: Vec<PendingDeadline>,
}

/// A timer of a gateway that has not run out yet, and what it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDeadline {
    /// One of [`TIMERS`].
    pub timer: &'static str,
    /// When it runs out, in ms since the origin.
    pub at_ms: u64,
    /// The client (index in `topology.clients`) whose flow or DNS mapping it is.
    pub client: usize,
    /// For a flow: the client's source port and the resource's port.
    pub ports: Option<(u16, u16)>,
    /// For a DNS mapping: its name and whether it is the AAAA one.
    pub domain: Option<(String, bool)>,
}

impl ModelCoverage {
    /// A packet of a timer's subject reached the gateway at `t`; the timer runs out at
    /// `deadline`.
    pub(super) fn note_boundary(&mut self, timer: &'static str, t: u64, deadline: u64) {
        let slot = match t.cast_signed() - deadline.cast_signed() {
            -1 => 0,
            0 => 1,
            1 => 2,
            _ => return,
        };
        self.timer_boundaries.entry(timer).or_default()[slot] += 1;
    }

    pub(super) fn note_tcp(&mut self, state: &'static str, packet: &Packet) {
        if let Some(event) = tcp_event(packet) {
            *self.tcp_state_events.entry((state, event)).or_default() += 1;
        }
    }
}

/// What a TCP segment carries, by [`TCP_EVENTS`]; `None` for other packets.
pub fn tcp_event(packet: &Packet) -> Option<&'static str> {
    let PacketKind::Tcp { flags, payload, .. } = packet.kind else {
        return None;
    };
    Some(if flags.rst {
        "rst"
    } else if flags.syn && flags.ack {
        "syn-ack"
    } else if flags.syn {
        "syn"
    } else if flags.fin {
        "fin"
    } else if payload > 0 {
        "data"
    } else {
        "ack"
    })
}

/// How a closed flow ended, as the reuse grid names it.
pub fn reuse_after(reason: CloseReason) -> &'static str {
    match reason {
        CloseReason::Fin => "after fin",
        CloseReason::Rst => "after rst",
        CloseReason::Idle => "after idle timeout",
        CloseReason::Revoked => "after revoke",
        CloseReason::Shutdown => "after restart",
    }
}

impl Engine<'_> {
    /// Notes every gateway timer still pending (flows' idle deadlines and DNS answers' expiry).
    pub(super) fn note_pending_timers(&mut self) {
        let mut pending: Vec<PendingDeadline> = (0..self.gateways.len())
            .flat_map(|g| {
                let mut timers = self.pending_flow_timers(g);
                timers.extend(self.pending_dns_timers(g));
                timers
            })
            .collect();
        pending.sort_by_key(|deadline| deadline.at_ms);
        self.coverage.pending_at_end = pending;
    }

    /// A new flow opens on `key` (protocol, client source, real destination and port): if an
    /// earlier flow of this gateway's client used it, note how that one ended.
    pub(super) fn note_reuse(
        &mut self,
        protocol: Protocol,
        src: std::net::SocketAddr,
        real: std::net::IpAddr,
        dst_port: u16,
    ) {
        let earlier = self.out.flows.iter().rev().find(|record| {
            record.protocol == protocol
                && record.inner_src_ip == src.ip()
                && record.inner_src_port == src.port()
                && record.inner_dst_ip == real
                && record.inner_dst_port == dst_port
        });
        if let Some(record) = earlier {
            let after = reuse_after(record.close_reason);
            *self.coverage.reuse.entry(after).or_default() += 1;
        }
    }
}
