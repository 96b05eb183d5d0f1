//! Stray datagrams: what a `stray` step sends a relay from the internet host, a host on no TURN
//! path (docs/harness.md, "Other steps"). Real relay hosts receive more than TURN: replies to
//! their own DNS lookups and NTP queries, scans and garbage on the TURN port, data to relayed
//! addresses from peers nobody gave a permission. The simulator sends exactly these bytes; the
//! model predicts what the relay host does with them from the kind.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::plan::{RELAY_HOST_DNS_PORT, RELAY_HOST_NTP_PORT, TURN_PORT, internet_host};

/// The internet host's source port for every stray that is not a DNS or NTP reply.
pub const INTERNET_PORT: u16 = 40000;

/// What a stray datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StrayKind {
    /// A DNS reply (from port 53) to the relay host's resolver socket, an ephemeral port below
    /// the allocation range.
    DnsReply,
    /// An NTP server reply (from port 123) to the relay host's NTP client socket.
    NtpReply,
    /// Bytes on the TURN port whose first two bits are 0b10 (RTP-like): neither STUN (0b00)
    /// nor ChannelData (0b01).
    TurnPortGarbage,
    /// ChannelData on the TURN port (channel 0x7FFF, in RFC 5766's range and past RFC 8656's)
    /// from the internet host, which has no allocation there: a channel nobody bound.
    StrangerChannelData,
    /// A STUN Binding request header with the magic cookie, cut off after 12 bytes.
    TruncatedStun,
    /// Data to an existing allocation's relayed address from a peer without a permission.
    UnpermittedPeer,
    /// An ICMP port unreachable (ICMPv4 type 3 code 3, ICMPv6 type 1 code 4) from the internet
    /// host about a datagram from an allocation's relayed address to its port 40000: what a
    /// peer's host sends when nothing listens there any more.
    IcmpPortUnreachable,
    /// The same datagram reported too big for a link with MTU 1280 (ICMPv4 fragmentation
    /// needed, ICMPv6 Packet Too Big): path MTU discovery.
    IcmpTooBig,
}

impl StrayKind {
    pub const ALL: [StrayKind; 8] = [
        StrayKind::DnsReply,
        StrayKind::NtpReply,
        StrayKind::TurnPortGarbage,
        StrayKind::StrangerChannelData,
        StrayKind::TruncatedStun,
        StrayKind::UnpermittedPeer,
        StrayKind::IcmpPortUnreachable,
        StrayKind::IcmpTooBig,
    ];

    /// The kind as the scenario file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            StrayKind::DnsReply => "dns-reply",
            StrayKind::NtpReply => "ntp-reply",
            StrayKind::TurnPortGarbage => "turn-port-garbage",
            StrayKind::StrangerChannelData => "stranger-channel-data",
            StrayKind::TruncatedStun => "truncated-stun",
            StrayKind::UnpermittedPeer => "unpermitted-peer",
            StrayKind::IcmpPortUnreachable => "icmp-port-unreachable",
            StrayKind::IcmpTooBig => "icmp-too-big",
        }
    }

    /// Whether it goes to (or, for an ICMP error, is about) an allocation's relayed address
    /// (the step names whose).
    pub fn needs_allocation(self) -> bool {
        matches!(
            self,
            StrayKind::UnpermittedPeer | StrayKind::IcmpPortUnreachable | StrayKind::IcmpTooBig
        )
    }

    /// Whether it is an ICMP error, not a UDP datagram: it comes from the internet host's
    /// address, about the datagram [`StrayKind::destination_port`] -> [`StrayKind::source`]
    /// whose payload is [`StrayKind::payload`].
    pub fn is_icmp(self) -> bool {
        matches!(self, StrayKind::IcmpPortUnreachable | StrayKind::IcmpTooBig)
    }

    /// The internet host's address and port it comes from, in the family of `relay_ip` (for an
    /// ICMP error, the quoted datagram's destination).
    pub fn source(self, relay_ip: IpAddr) -> SocketAddr {
        let port = match self {
            StrayKind::DnsReply => 53,
            StrayKind::NtpReply => 123,
            _ => INTERNET_PORT,
        };
        SocketAddr::new(internet_host(relay_ip), port)
    }

    /// The relay's port it goes to; `relayed_port` is the allocation's (for the kinds that
    /// [`StrayKind::needs_allocation`]).
    pub fn destination_port(self, relayed_port: u16) -> u16 {
        match self {
            StrayKind::DnsReply => RELAY_HOST_DNS_PORT,
            StrayKind::NtpReply => RELAY_HOST_NTP_PORT,
            StrayKind::TurnPortGarbage
            | StrayKind::StrangerChannelData
            | StrayKind::TruncatedStun => TURN_PORT,
            StrayKind::UnpermittedPeer | StrayKind::IcmpPortUnreachable | StrayKind::IcmpTooBig => {
                relayed_port
            }
        }
    }

    /// The datagram's payload (for an ICMP error, the quoted datagram's).
    pub fn payload(self) -> Vec<u8> {
        match self {
            // DNS header: id 0x1d4c, a response (QR, RD, RA), no records.
            StrayKind::DnsReply => vec![0x1d, 0x4c, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0],
            // NTPv4 server reply (LI 0, VN 4, mode 4), stratum 2, the rest zero: 48 bytes.
            StrayKind::NtpReply => {
                let mut packet = vec![0u8; 48];
                packet[0] = 0x24;
                packet[1] = 2;
                packet
            }
            // An RTP header (version 2, payload type 96) and four bytes.
            StrayKind::TurnPortGarbage => vec![
                0x80, 0x60, 0x00, 0x01, 0, 0, 0, 0xa0, 0x12, 0x34, 0x56, 0x78, 1, 2, 3, 4,
            ],
            StrayKind::StrangerChannelData => vec![0x7f, 0xff, 0x00, 0x04, 1, 2, 3, 4],
            StrayKind::TruncatedStun => vec![
                0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42, 0xde, 0xad, 0xbe, 0xef,
            ],
            StrayKind::UnpermittedPeer => vec![0xa5; 32],
            StrayKind::IcmpPortUnreachable | StrayKind::IcmpTooBig => vec![0x5a; 64],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_and_ntp_replies_go_to_ports_below_the_allocation_range() {
        for kind in [StrayKind::DnsReply, StrayKind::NtpReply] {
            let port = kind.destination_port(0);
            assert!((32768..49152).contains(&port), "{kind:?}: {port}");
        }
    }

    #[test]
    fn turn_port_strays_are_what_their_names_say() {
        let garbage = StrayKind::TurnPortGarbage.payload();
        assert_eq!(garbage[0] >> 6, 0b10, "neither STUN nor ChannelData");
        let channel_data = StrayKind::StrangerChannelData.payload();
        let channel = u16::from_be_bytes([channel_data[0], channel_data[1]]);
        assert_eq!(channel, 0x7fff, "past RFC 8656's channels, in RFC 5766's");
        let length = u16::from_be_bytes([channel_data[2], channel_data[3]]);
        assert_eq!(usize::from(length), channel_data.len() - 4, "well formed");
        let stun = StrayKind::TruncatedStun.payload();
        assert_eq!(stun[0] >> 6, 0);
        assert!(stun.len() < 20, "a STUN header is 20 bytes");
    }

    #[test]
    fn names_round_trip() {
        for kind in StrayKind::ALL {
            let yaml = serde_yaml_ng::to_string(&kind).expect("prints");
            assert_eq!(yaml.trim(), kind.as_str());
        }
    }
}
