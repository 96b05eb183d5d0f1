//! Why the TURN relay drops an input datagram: the reasons its drop counters
//! (`relay::Relay::drop_counts`) name. They live here, beside the gateway's drop reasons,
//! because the reference model predicts them and the harness compares them without importing
//! the relay.

use std::fmt;

use serde::{Serialize, Serializer};

macro_rules! relay_drop_reasons {
    ($($(#[doc = $doc:literal])* $name:ident => $text:literal, $message:literal,)*) => {
        /// Why the relay dropped an input datagram. Every drop bumps exactly one of the relay's
        /// drop counters and changes nothing else.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum RelayDropReason {
            $($(#[doc = $doc])* $name,)*
        }

        impl RelayDropReason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [RelayDropReason] = &[$(RelayDropReason::$name,)*];

            /// A short kebab-case name, as used in coverage counters and observations.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(RelayDropReason::$name => $text,)*
                }
            }

            /// What the reason means, in words (the relay's log message).
            pub fn message(self) -> &'static str {
                match self {
                    $(RelayDropReason::$name => $message,)*
                }
            }
        }
    };
}

relay_drop_reasons! {
    /// Addressed to an address or port that is neither the TURN port nor an allocation port.
    NotForRelay => "not-for-relay", "not addressed to one of the relay's addresses and ports",
    /// To the TURN port, but neither ChannelData nor a STUN message.
    NotStun => "not-stun", "not a STUN or ChannelData message",
    /// A STUN message of a class or method the relay does not take on the TURN port.
    UnexpectedMessage => "unexpected-message",
        "a STUN message of a class or method the relay does not take here",
    /// ChannelData (first bits 0b01) with a channel number out of range or a bad length.
    MalformedChannelData => "malformed-channel-data", "malformed ChannelData",
    /// ChannelData from a client that has no allocation.
    NoAllocation => "no-allocation", "no allocation for this client",
    /// ChannelData on a channel that is not bound (or whose binding or permission expired).
    UnboundChannel => "unbound-channel",
        "channel not bound (or its binding or permission expired)",
    /// Data to an allocation from a peer whose address has no permission.
    NoPermission => "no-permission", "no permission for the peer's address",
    /// Data to an allocation port no allocation holds.
    UnusedAllocationPort => "unused-allocation-port", "no allocation on this port",
    /// Data to an allocation in a family it does not relay.
    FamilyNotRelayed => "family-not-relayed",
        "the allocation has no relayed address of this family",
    /// Relay-to-self data that no allocation on this relay takes.
    SelfDestinationUnreachable => "self-destination-unreachable",
        "the destination is the relay itself but no allocation there takes it",
    /// A Send indication without a usable peer address or data.
    MalformedIndication => "malformed-indication", "malformed Send indication",
}

impl fmt::Display for RelayDropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for RelayDropReason {}

impl Serialize for RelayDropReason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_kebab_case() {
        let mut names: Vec<&str> = RelayDropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert!(
            names
                .iter()
                .all(|name| name.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        );
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), RelayDropReason::ALL.len());
    }
}
