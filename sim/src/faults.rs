//! Faults on the links between named hosts (docs/harness.md, "Faults"): partitions and
//! `drop-next` act where a host sends; holds use turmoil's own, which keeps datagrams until
//! the release.

use std::{collections::BTreeMap, net::IpAddr};

use observation::{DropPlace, DropReason, Packet};

use crate::{clock::now_ms, state::Shared, wire};

/// The scenario's hosts by address, and the faults on the links between them.
#[derive(Debug, Default)]
pub(crate) struct Links {
    /// The scenario's host name of every address a host has (relays: both families).
    pub(crate) hosts_by_ip: BTreeMap<IpAddr, String>,
    /// Faults on links between named hosts (names sorted).
    pub(crate) faults: BTreeMap<[String; 2], LinkFaults>,
}

/// The faults on one link between two named hosts (docs/harness.md, "Faults").
#[derive(Debug, Default)]
pub(crate) struct LinkFaults {
    pub(crate) partitioned: bool,
    pub(crate) holding: bool,
    /// Tunnel frames the `drop-next` faults still take.
    pub(crate) drop_next: u32,
    /// CreatePermission and ChannelBind requests are taken until the heal.
    pub(crate) dropping_binding_requests: bool,
    /// Tunnel frames sent while the link holds (turmoil keeps them until a release): when they
    /// were sent and what they carry.
    pub(crate) held: Vec<Packet>,
}

impl LinkFaults {
    fn active(&self) -> bool {
        self.partitioned || self.holding || self.drop_next > 0 || self.dropping_binding_requests
    }
}

/// The key of the link between two named hosts: the names, sorted.
pub(crate) fn link_key(a: &str, b: &str) -> [String; 2] {
    let (a, b) = if a <= b { (a, b) } else { (b, a) };
    [a.to_owned(), b.to_owned()]
}

impl Shared {
    /// Whether the faults on the link from `host` to the host at `dst` take a datagram `host`
    /// sends now (it is then not sent). Faults act on each hop when the datagram is sent on
    /// it: a partition takes every datagram; a held link keeps it (turmoil holds it; a tunnel
    /// frame is remembered until `release`); a `drop-next` fault takes the next tunnel frames
    /// only (TURN control traffic passes). Taken tunnel frames are recorded as drops.
    pub(crate) fn link_takes(&mut self, host: &str, dst: IpAddr, payload: &[u8]) -> bool {
        let Some(peer) = self.links.hosts_by_ip.get(&dst) else {
            return false;
        };
        let between = link_key(host, peer);
        let Some(faults) = self.links.faults.get_mut(&between) else {
            return false;
        };
        if !faults.active() {
            return false;
        }
        let at_ms = now_ms();
        let packet = wire::tunnel_packet_in(payload);
        if faults.dropping_binding_requests && wire::is_binding_request(payload) {
            self.journal.trace_at(
                at_ms,
                host,
                format!(
                    "lost on the link {}-{} (drop-binding-requests): a {}-byte binding request",
                    between[0],
                    between[1],
                    payload.len()
                ),
            );
            return true;
        }
        let reason = if faults.partitioned {
            DropReason::Partition
        } else if faults.holding {
            if let Some(packet) = packet {
                faults.held.push(packet);
            }
            return false;
        } else if packet.is_some() && faults.drop_next > 0 {
            faults.drop_next -= 1;
            DropReason::DropNext
        } else {
            return false;
        };
        let what = match packet {
            Some(packet) => {
                let place = DropPlace::Link {
                    between: between.clone(),
                };
                self.journal.dropped(at_ms, place, reason, packet);
                format!("frame with {packet}")
            }
            None => format!("{} bytes", payload.len()),
        };
        self.journal.trace_at(
            at_ms,
            host,
            format!(
                "lost on the link {}-{} ({reason}): {what}",
                between[0], between[1]
            ),
        );
        true
    }
}
