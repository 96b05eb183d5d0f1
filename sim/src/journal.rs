//! What happened in a run, recorded as it happens: the trace, every datagram at every hop,
//! the flow records, the inner packets delivered and dropped, and the broken invariants.

use std::collections::BTreeMap;

use observation::{
    AttackOutcome, Delivery, DropPlace, DropReason, FlowRecord, FrameArrival, Hop, HostFate,
    Packet, PacketDrop, Receiver, StrayArrival, XdpVerdict,
};
use scenario_format::timing::Timeline;
use std::net::SocketAddr;

use crate::clock::now_ms;

/// One line of the trace: what a host did at which millisecond.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceLine {
    pub at_ms: u64,
    pub host: String,
    pub event: String,
}

impl std::fmt::Display for TraceLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>9}.{:03}s {:<10} {}",
            self.at_ms / 1000,
            self.at_ms % 1000,
            self.host,
            self.event
        )
    }
}

/// Everything a run records, in the order it happened.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    /// The scenario's steps in time: an observation belongs to the step its time falls in.
    pub(crate) timeline: Timeline,
    pub(crate) trace: Vec<TraceLine>,
    pub(crate) flows: Vec<FlowRecord>,
    /// Things that must never happen (a control-plane call refused, an unexpected drop).
    pub(crate) errors: Vec<String>,
    pub(crate) hops: Vec<Hop>,
    /// Frames that are not UDP at relay hosts (ICMP errors), in order of arrival.
    pub(crate) frames: Vec<FrameArrival>,
    /// Every inner packet that reached a client or a resource responder, in order of arrival.
    pub(crate) deliveries: Vec<Delivery>,
    /// Every inner packet a gateway dropped or a link fault took, in the order it happened.
    pub(crate) drops: Vec<PacketDrop>,
    /// Datagrams that reached a relay on one of its timers' deadlines, or a TURN client on one
    /// of its transactions' deadlines, per timer: `[1 ms before, on it, 1 ms after]`.
    pub(crate) turn_timer_boundaries: BTreeMap<&'static str, [u64; 3]>,
    /// Every stray datagram (from the internet host) a relay host took off a socket, with what
    /// became of it, in order of arrival.
    pub(crate) strays: Vec<StrayArrival>,
    /// Every attack the attacker host played, with what came back, in order.
    pub(crate) attacks: Vec<AttackOutcome>,
}

impl Journal {
    /// Records what a host did now (inside the simulation).
    pub(crate) fn trace(&mut self, host: &str, event: String) {
        self.trace_at(now_ms(), host, event);
    }

    /// Records an inner packet that reached `to` now; its bytes must pass the byte check.
    pub(crate) fn delivered(&mut self, to: Receiver, bytes: &[u8]) {
        let packet = Packet::parse(bytes);
        let at_ms = now_ms();
        if let Err(wrong) = observation::check_ip_packet(bytes) {
            self.errors.push(format!(
                "{at_ms} ms: a packet delivered to {to} fails the byte check: {wrong} ({packet})"
            ));
        }
        self.deliveries.push(Delivery {
            at_ms,
            to,
            packet,
            step: self.timeline.step_at(at_ms),
        });
    }

    /// Records an inner packet lost at `at_ms`.
    pub(crate) fn dropped(
        &mut self,
        at_ms: u64,
        place: DropPlace,
        reason: DropReason,
        packet: Packet,
    ) {
        self.drops.push(PacketDrop {
            at_ms,
            place,
            reason,
            packet,
            step: self.timeline.step_at(at_ms),
        });
    }

    /// Records what relay `relay` did with a stray datagram that arrived now.
    pub(crate) fn stray(
        &mut self,
        relay: u32,
        (from, to): (SocketAddr, SocketAddr),
        xdp: Option<XdpVerdict>,
        fate: HostFate,
    ) {
        let at_ms = now_ms();
        self.strays.push(StrayArrival {
            at_ms,
            relay,
            from,
            to,
            xdp,
            fate,
            step: self.timeline.step_at(at_ms),
        });
    }

    pub(crate) fn trace_at(&mut self, at_ms: u64, host: &str, event: String) {
        self.trace.push(TraceLine {
            at_ms,
            host: host.to_owned(),
            event,
        });
    }
}
