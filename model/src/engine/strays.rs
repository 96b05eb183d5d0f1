//! Stray datagrams at relays (docs/harness.md, "Other steps" and "Stray datagrams"): the
//! internet host sends one datagram that is not TURN; it arrives one default latency later,
//! the XDP program passes it, and the relay host's stack or the relay takes it as the contract
//! for its kind says. Nothing is relayed and nothing answers.

use std::net::{IpAddr, SocketAddr};

use observation::{HostFate, RelayDropReason, StrayArrival, XdpVerdict};
use scenario_format::StrayKind;

use super::{Engine, Result};

/// What the relay host does with a stray datagram of `kind` that the XDP program passed.
pub(crate) fn fate(kind: StrayKind) -> HostFate {
    match kind {
        // The relay host's own sockets: the relay never sees them.
        StrayKind::DnsReply | StrayKind::NtpReply => HostFate::HostStack,
        // First bits 0b10, or a STUN header too short to be one.
        StrayKind::TurnPortGarbage | StrayKind::TruncatedStun => {
            HostFate::RelayDropped(RelayDropReason::NotStun)
        }
        // Well-formed ChannelData from a host that has no allocation on the relay.
        StrayKind::StrangerChannelData => HostFate::RelayDropped(RelayDropReason::NoAllocation),
        // The internet host is no one's peer.
        StrayKind::UnpermittedPeer => HostFate::RelayDropped(RelayDropReason::NoPermission),
        // Not UDP: the host stack takes ICMP errors; the relay's unconnected UDP sockets never
        // hear of them.
        StrayKind::IcmpPortUnreachable | StrayKind::IcmpTooBig => HostFate::HostStack,
    }
}

impl Engine<'_> {
    /// Step `k` at `t`: a stray datagram of `kind` to `relay`, to the relayed address of
    /// `allocation`'s first allocation for the kinds that need one.
    pub(super) fn stray(
        &mut self,
        relay: &str,
        kind: StrayKind,
        ipv6: bool,
        allocation: Option<&str>,
        (k, t): (usize, u64),
    ) -> Result<()> {
        let topology = &self.scenario.topology;
        let Some(r) = topology.relays.iter().position(|spec| spec.name == relay) else {
            return self.fail(format!("no relay {relay}"));
        };
        let addresses = self.plan.relays[r];
        let ip = if ipv6 {
            addresses.v6.map(IpAddr::V6)
        } else {
            addresses.v4.map(IpAddr::V4)
        };
        let Some(ip) = ip else {
            return self.fail(format!("relay {relay} has no address of that family"));
        };
        let relayed_port = match allocation {
            Some(host) => self.first_relayed_port(host, relay, ipv6)?,
            None => 0,
        };
        let at_ms = t + u64::from(topology.latency.default_ms);
        self.within_step(k, at_ms)?;
        self.out.strays.push(StrayArrival {
            at_ms,
            relay: r as u32,
            from: kind.source(ip),
            to: SocketAddr::new(ip, kind.destination_port(relayed_port)),
            xdp: Some(XdpVerdict::Pass),
            fate: fate(kind),
            step: k,
        });
        Ok(())
    }

    /// The port of `host`'s first allocation on `relay` in one family, while it surely lives.
    fn first_relayed_port(&self, host: &str, relay: &str, ipv6: bool) -> Result<u16> {
        let topology = &self.scenario.topology;
        let relayed = if let Some(c) = topology.clients.iter().position(|spec| spec.name == host) {
            if self.clients[c].moved {
                return self.fail(format!(
                    "a stray to {host}'s first allocation after it roamed (left to expire)"
                ));
            }
            &self.allocations.clients[c]
        } else if let Some(g) = topology.gateways.iter().position(|spec| spec.name == host) {
            &self.allocations.gateways[g]
        } else {
            return self.fail(format!("no client or gateway {host}"));
        };
        if self.relay_link_tainted(host, relay) {
            return self.fail(format!(
                "a stray to {host}'s allocation after a fault on its link to {relay} during an \
                 idle step (its refreshes may have been lost)"
            ));
        }
        match relayed.family(ipv6) {
            Some(address) => Ok(address.port()),
            None => self.fail(format!("{host} has no allocation of that family")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_to_the_host_and_icmp_reach_the_host_stack_and_the_rest_is_dropped_by_the_relay() {
        for kind in StrayKind::ALL {
            let fate = fate(kind);
            match kind {
                StrayKind::DnsReply | StrayKind::NtpReply => assert_eq!(fate, HostFate::HostStack),
                kind if kind.is_icmp() => assert_eq!(fate, HostFate::HostStack),
                _ => assert!(
                    matches!(fate, HostFate::RelayDropped(_)),
                    "{kind:?}: {fate:?}"
                ),
            }
        }
        assert_eq!(
            fate(StrayKind::StrangerChannelData),
            HostFate::RelayDropped(RelayDropReason::NoAllocation)
        );
    }
}
