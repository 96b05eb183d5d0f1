//! Why the gateway drops a packet: the reasons its counters and drop events name, as
//! `docs/flows.md` lists them. They live here, beside the flow-record vocabulary, because the
//! reference model predicts them and the harness compares them without importing the gateway.

use std::fmt;

use serde::{Serialize, Serializer};

macro_rules! drop_reasons {
    ($($(#[doc = $doc:literal])* $name:ident => $text:literal,)*) => {
        /// Why the gateway dropped an input. Every drop bumps exactly one of the gateway's
        /// counters (`gateway::DropCounters`) and is reported by exactly one
        /// `gateway::Event::PacketDropped` with the dropped packet.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum DropReason {
            $($(#[doc = $doc])* $name,)*
        }

        impl DropReason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];

            /// A short kebab-case name, as used in logs and coverage counters.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(DropReason::$name => $text,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// A UDP datagram that is neither a tunnel frame nor from the DNS server.
    NotTunnelFrame => "not-tunnel-frame",
    /// A tunnel frame with a bad header (too short, reserved bytes set).
    MalformedFrame => "malformed-frame",
    /// A tunnel frame for a session id no client has.
    UnknownSession => "unknown-session",
    /// A tunnel frame whose MAC does not verify.
    BadMac => "bad-mac",
    /// A tunnel frame whose counter was already seen or is below the replay window.
    Replay => "replay",
    /// An inner or TUN packet that is not a well-formed IPv4/IPv6 packet.
    MalformedPacket => "malformed-packet",
    /// An IPv4 fragment (not supported).
    Fragment => "fragment",
    /// A protocol other than TCP, UDP or ICMP, or an IPv6 extension header.
    UnsupportedProtocol => "unsupported-protocol",
    /// An inner packet whose source is not the sending client's tunnel IP.
    ForgedSource => "forged-source",
    /// A client packet to an address that no resource covers (ICMP prohibited sent back).
    NoResource => "no-resource",
    /// A client packet to a resource the client has no grant for (ICMP prohibited sent back).
    NotGranted => "not-granted",
    /// A client packet that the grant's filters do not allow (ICMP prohibited sent back).
    FilterDenied => "filter-denied",
    /// A client packet to a DNS proxy IP with no mapping for that client (ICMP prohibited).
    UnknownProxyIp => "unknown-proxy-ip",
    /// A client TCP packet without a pure SYN and with no open flow (late ACK, FIN, RST...).
    TcpWithoutSyn => "tcp-without-syn",
    /// An ICMP message that may not start or join a flow (client ICMP errors, unsolicited
    /// echo requests from resources, other ICMP types).
    IcmpNotAllowed => "icmp-not-allowed",
    /// A resource packet (or ICMP error) that belongs to no open flow.
    NoOpenFlow => "no-open-flow",
    /// A TUN packet to an address that is no client's tunnel IP.
    UnknownDestination => "unknown-destination",
    /// A new flow whose return path would equal an open flow's (two proxy IPs of one client
    /// resolving to the same real IP with the same ports).
    NatCollision => "nat-collision",
    /// A packet to a DNS proxy IP whose answer is pending, with the queue full.
    DnsQueueFull => "dns-queue-full",
    /// A queued packet whose DNS resolution failed.
    DnsResolutionFailed => "dns-resolution-failed",
    /// A datagram from the DNS server that answers no pending query or does not parse.
    DnsUnexpectedAnswer => "dns-unexpected-answer",
    /// A packet that would start a flow while the flow table, or the client's share of it, is
    /// at its cap (docs/flows.md, "Bounds"). Open flows keep going and keep their records.
    FlowTableFull => "flow-table-full",
    /// Input after `shutdown`.
    ShutDown => "shut-down",
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for DropReason {}

impl DropReason {
    /// Whether the gateway answers this drop with ICMP administratively prohibited.
    pub fn sends_icmp(self) -> bool {
        matches!(
            self,
            DropReason::NoResource
                | DropReason::NotGranted
                | DropReason::FilterDenied
                | DropReason::UnknownProxyIp
        )
    }
}

/// Serialised by name (`not-granted`), as logs and the coverage grid write it.
impl Serialize for DropReason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
    }
}
