//! Faults on the links between named hosts (docs/harness.md, "Faults"): partitions and
//! `drop-next` act where a host sends; holds use turmoil's own, which keeps datagrams until
//! the release.

use std::{collections::BTreeMap, net::IpAddr};

use observation::{DropPlace, DropReason, Packet};
use scenario_format::Fault;

use crate::{clock::now_ms, state::Shared, wire};

/// The scenario's hosts by address, and the faults on the links between them.
#[derive(Debug, Default)]
pub(crate) struct Links {
    /// The scenario's host name of every address a host has (relays: both families).
    pub(crate) hosts_by_ip: BTreeMap<IpAddr, String>,
    /// Faults on links between named hosts (names sorted).
    pub(crate) faults: BTreeMap<[String; 2], LinkFaults>,
}

/// The faults on one link between two named hosts (docs/harness.md, "Faults"), and the
/// tunnel frames a hold keeps.
#[derive(Debug, Default)]
pub(crate) struct LinkFaults {
    pub(crate) state: FaultState,
    /// Tunnel frames sent while the link holds (turmoil keeps them until a release): what
    /// they carry.
    pub(crate) held: Vec<Packet>,
}

/// Which faults act on a link: what `fault` steps set and clear. The simulation and the real
/// world's link emulator both judge every datagram on a faulted link with it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FaultState {
    pub partitioned: bool,
    pub holding: bool,
    /// Tunnel frames the `drop-next` faults still take.
    pub drop_next: u32,
    /// CreatePermission and ChannelBind requests are taken until the heal.
    pub dropping_binding_requests: bool,
}

/// What the faults on a link do with one datagram sent on it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkVerdict {
    /// It goes on its way.
    Pass,
    /// A hold keeps it until the release; `frame` is the inner packet if it is a tunnel frame.
    Held { frame: Option<Packet> },
    /// It is lost: a tunnel frame (`frame`) with the drop's reason, or another datagram (a
    /// partition's, or a binding request `drop-binding-requests` took: no reason).
    Lost {
        reason: Option<DropReason>,
        frame: Option<Packet>,
    },
}

impl FaultState {
    fn active(&self) -> bool {
        self.partitioned || self.holding || self.drop_next > 0 || self.dropping_binding_requests
    }

    /// A `fault` step on this link. On `release` the caller lets go of what it held.
    pub fn apply(&mut self, fault: &Fault) {
        match fault {
            Fault::Partition => self.partitioned = true,
            Fault::Heal => {
                self.partitioned = false;
                self.dropping_binding_requests = false;
            }
            Fault::DropBindingRequests => self.dropping_binding_requests = true,
            Fault::Hold => self.holding = true,
            Fault::Release => self.holding = false,
            Fault::DropNext(n) => self.drop_next = self.drop_next.saturating_add(*n),
        }
    }

    /// What the faults do with `datagram`, sent on this link now: a partition takes every
    /// datagram; a hold keeps it; a `drop-next` fault takes the next tunnel frames only (TURN
    /// control traffic passes); `drop-binding-requests` takes CreatePermission and ChannelBind
    /// requests.
    pub fn judge(&mut self, datagram: &[u8]) -> LinkVerdict {
        if !self.active() {
            return LinkVerdict::Pass;
        }
        let frame = wire::tunnel_packet_in(datagram);
        if self.dropping_binding_requests && wire::is_binding_request(datagram) {
            return LinkVerdict::Lost {
                reason: None,
                frame: None,
            };
        }
        if self.partitioned {
            return LinkVerdict::Lost {
                reason: frame.map(|_| DropReason::Partition),
                frame,
            };
        }
        if self.holding {
            return LinkVerdict::Held { frame };
        }
        if frame.is_some() && self.drop_next > 0 {
            self.drop_next -= 1;
            return LinkVerdict::Lost {
                reason: Some(DropReason::DropNext),
                frame,
            };
        }
        LinkVerdict::Pass
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
        let at_ms = now_ms();
        let (reason, frame) = match faults.state.judge(payload) {
            LinkVerdict::Pass => return false,
            LinkVerdict::Held { frame } => {
                // turmoil holds the datagram; the frame is remembered until the release.
                faults.held.extend(frame);
                return false;
            }
            LinkVerdict::Lost { reason, frame } => (reason, frame),
        };
        let what = match (reason, frame) {
            (Some(reason), Some(packet)) => {
                let place = DropPlace::Link {
                    between: between.clone(),
                };
                self.journal.dropped(at_ms, place, reason, packet);
                format!("frame with {packet} ({reason})")
            }
            _ if faults.state.partitioned => format!("{} bytes (partition)", payload.len()),
            _ => format!(
                "a {}-byte binding request (drop-binding-requests)",
                payload.len()
            ),
        };
        self.journal.trace_at(
            at_ms,
            host,
            format!("lost on the link {}-{}: {what}", between[0], between[1]),
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use proto::tunnel::{self, FrameHeader};
    use scenario_format::plan::AddressPlan;

    use super::*;
    use crate::packets;

    /// A tunnel frame of client 0 carrying one UDP packet.
    fn a_frame() -> Vec<u8> {
        let inner = packets::udp(
            "100.64.0.2:45000".parse().unwrap(),
            "198.51.100.10:5000".parse().unwrap(),
            &[7; 10],
        );
        tunnel::seal(
            &wire::session_key(0),
            tunnel::Direction::ToGateway,
            FrameHeader {
                session_id: AddressPlan::session(0).id,
                counter: 1,
            },
            &inner,
        )
    }

    /// A ChannelBind request's first bytes (method 0x009, class request) and a STUN header.
    fn channel_bind() -> Vec<u8> {
        let mut request = vec![0x00, 0x09, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
        request.extend([0u8; 12]);
        request
    }

    #[test]
    fn a_partition_takes_everything_and_names_the_frames_it_took() {
        let mut state = FaultState::default();
        assert_eq!(state.judge(&a_frame()), LinkVerdict::Pass);
        state.apply(&Fault::Partition);
        let LinkVerdict::Lost { reason, frame } = state.judge(&a_frame()) else {
            panic!("a partition takes a frame");
        };
        assert_eq!(reason, Some(DropReason::Partition));
        assert!(frame.is_some());
        assert_eq!(
            state.judge(&channel_bind()),
            LinkVerdict::Lost {
                reason: None,
                frame: None
            }
        );
        state.apply(&Fault::Heal);
        assert_eq!(state.judge(&a_frame()), LinkVerdict::Pass);
    }

    #[test]
    fn drop_next_takes_only_tunnel_frames_and_counts_down() {
        let mut state = FaultState::default();
        state.apply(&Fault::DropNext(1));
        assert_eq!(state.judge(&channel_bind()), LinkVerdict::Pass);
        assert!(matches!(
            state.judge(&a_frame()),
            LinkVerdict::Lost {
                reason: Some(DropReason::DropNext),
                ..
            }
        ));
        assert_eq!(state.judge(&a_frame()), LinkVerdict::Pass);
    }

    #[test]
    fn a_hold_keeps_until_the_release_and_binding_requests_go_until_the_heal() {
        let mut state = FaultState::default();
        state.apply(&Fault::Hold);
        assert!(matches!(
            state.judge(&a_frame()),
            LinkVerdict::Held { frame: Some(_) }
        ));
        state.apply(&Fault::Release);
        assert_eq!(state.judge(&a_frame()), LinkVerdict::Pass);
        state.apply(&Fault::DropBindingRequests);
        assert!(matches!(
            state.judge(&channel_bind()),
            LinkVerdict::Lost { reason: None, .. }
        ));
        assert_eq!(state.judge(&a_frame()), LinkVerdict::Pass);
        state.apply(&Fault::Heal);
        assert_eq!(state.judge(&channel_bind()), LinkVerdict::Pass);
    }
}
