//! Types shared by the relay's XDP program (`relay-xdp-ebpf`) and its userspace loader
//! (`relay-xdp`).
//!
//! Everything here is `no_std` and `#[repr(C)]` so the kernel program and the loader agree on
//! every byte. Verdict reasons are plain integers, not enums with data: the program indexes a
//! per-CPU counter array with them, and the verifier only ever sees a bounded integer.
#![no_std]

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub mod table;

/// The XDP actions, as the kernel numbers them (`enum xdp_action`).
pub mod action {
    /// The program failed; the kernel drops the frame and fires a trace point.
    pub const ABORTED: u32 = 0;
    /// Drop the frame.
    pub const DROP: u32 = 1;
    /// Hand the frame to the kernel's network stack (and so to the userspace relay).
    pub const PASS: u32 = 2;
    /// Send the (rewritten) frame back out of the interface it arrived on.
    pub const TX: u32 = 3;
    /// Redirect the frame to another interface or CPU.
    pub const REDIRECT: u32 = 4;
}

/// The relay's ports, as RFC 8656 and the userspace relay use them.
pub mod ports {
    /// The client-facing TURN port: STUN and ChannelData from clients.
    pub const TURN: u16 = 3478;
    /// First relayed-transport (allocation) port.
    pub const ALLOCATION_MIN: u16 = 49152;
    /// Last relayed-transport (allocation) port.
    pub const ALLOCATION_MAX: u16 = 65535;
    /// DNS: replies from port 53 into the allocation range belong to the host's resolver.
    pub const DNS: u16 = 53;

    /// Whether `port` is in the allocation range.
    #[inline(always)]
    pub const fn is_allocation(port: u16) -> bool {
        port >= ALLOCATION_MIN
    }
}

/// ChannelData (RFC 8656 §12) numbers: RFC 5766's range, 0x4000-0x7FFF, the userspace relay's
/// (`proto::channel_data::CHANNEL_RANGE`; the loader's tests hold the two equal).
pub mod channel {
    /// The first valid channel number.
    pub const MIN: u16 = 0x4000;
    /// The last valid channel number.
    pub const MAX: u16 = 0x7FFF;
    /// Length of the ChannelData header: channel number and data length, both big-endian.
    pub const HEADER_LEN: usize = 4;

    /// Whether `number` is a valid channel number.
    #[inline(always)]
    pub const fn is_valid(number: u16) -> bool {
        number >= MIN && number <= MAX
    }
}

/// Why the program returned its verdict. Every run increments exactly one of these counters.
///
/// Slots 0..32 are PASS reasons (the frame goes to the kernel stack unchanged), slots 32..44
/// are the twelve rewriting paths (XDP_TX), slot 48 is the one DROP reason.
pub mod reason {
    /// The frame is not IPv4 or IPv6 (ARP, VLAN-tagged, anything else).
    pub const PASS_NOT_IP: u32 = 0;
    /// A header is truncated or inconsistent (lengths, version, IHL below 5, a bad IPv4 header
    /// checksum, a UDP length that differs from the IP payload length, a zero UDP checksum over
    /// IPv6).
    pub const PASS_MALFORMED: u32 = 1;
    /// An IPv4 header carries options.
    pub const PASS_IPV4_OPTIONS: u32 = 2;
    /// An IPv6 header is followed by an extension header (other than a fragment header).
    pub const PASS_IPV6_EXTENSION: u32 = 3;
    /// An IPv4 fragment (more-fragments set or a non-zero offset), or an IPv6 fragment header.
    pub const PASS_FRAGMENT: u32 = 4;
    /// The transport is not UDP (TCP, ICMP, ...).
    pub const PASS_NOT_UDP: u32 = 5;
    /// The destination is not one of the relay's public addresses (or none is configured).
    pub const PASS_NOT_RELAY_ADDRESS: u32 = 6;
    /// The destination port is neither 3478 nor an allocation port.
    pub const PASS_NOT_RELAY_PORT: u32 = 7;
    /// A datagram to 3478 whose first two bits are 0b00: a STUN message, for userspace.
    pub const PASS_STUN: u32 = 8;
    /// A datagram from port 53 into the allocation range: a DNS reply for the host's resolver.
    pub const PASS_DNS_REPLY: u32 = 9;
    /// ChannelData whose length field does not match the UDP payload (too short for the data,
    /// or more than 3 bytes of padding), or a payload too short for a ChannelData header.
    pub const PASS_CHANNEL_DATA_LENGTH: u32 = 10;
    /// A datagram to 3478 that is neither STUN nor ChannelData: the channel number is outside
    /// 0x4000-0x7FFF (the first two bits are 0b10 or 0b11).
    pub const PASS_CHANNEL_NUMBER: u32 = 11;
    /// ChannelData from a client for which no channel binding is installed.
    pub const PASS_NO_CHANNEL_BINDING: u32 = 12;
    /// A datagram to an allocation port from a peer that no channel binding names.
    pub const PASS_NO_PEER_BINDING: u32 = 13;
    /// Relay-to-self: the channel's peer is the relay's own address, but no allocation there
    /// (or not an allocation port) has the sender's allocation as a bound peer.
    pub const PASS_SELF_NO_BINDING: u32 = 14;
    /// IPv4 UDP without a checksum (zero) that would leave over IPv6, where it is mandatory.
    pub const PASS_ZERO_CHECKSUM_TO_IPV6: u32 = 15;
    /// The rewritten datagram would leave from a family for which no relay address is set.
    pub const PASS_NO_RELAY_ADDRESS_FOR_FAMILY: u32 = 16;
    /// `bpf_xdp_adjust_head` refused; nothing was changed.
    pub const PASS_ADJUST_HEAD_FAILED: u32 = 17;
    /// A datagram to an allocation port whose source is the relay's own address: the relay
    /// never sends to itself on the wire, so it is spoofed (the kernel drops martians).
    pub const PASS_FROM_RELAY_ADDRESS: u32 = 18;

    /// ChannelData from an IPv4 client, sent as UDP to an IPv4 peer.
    pub const TX_CHAN4_TO_UDP4: u32 = 32;
    /// ChannelData from an IPv4 client, sent as UDP to an IPv6 peer.
    pub const TX_CHAN4_TO_UDP6: u32 = 33;
    /// ChannelData from an IPv6 client, sent as UDP to an IPv4 peer.
    pub const TX_CHAN6_TO_UDP4: u32 = 34;
    /// ChannelData from an IPv6 client, sent as UDP to an IPv6 peer.
    pub const TX_CHAN6_TO_UDP6: u32 = 35;
    /// Relay-to-self: ChannelData from an IPv4 client, to an IPv4 client of another allocation.
    pub const TX_CHAN4_TO_CHAN4: u32 = 36;
    /// Relay-to-self: ChannelData from an IPv4 client, to an IPv6 client of another allocation.
    pub const TX_CHAN4_TO_CHAN6: u32 = 37;
    /// Relay-to-self: ChannelData from an IPv6 client, to an IPv4 client of another allocation.
    pub const TX_CHAN6_TO_CHAN4: u32 = 38;
    /// Relay-to-self: ChannelData from an IPv6 client, to an IPv6 client of another allocation.
    pub const TX_CHAN6_TO_CHAN6: u32 = 39;
    /// UDP from an IPv4 peer to an allocation, sent as ChannelData to an IPv4 client.
    pub const TX_UDP4_TO_CHAN4: u32 = 40;
    /// UDP from an IPv4 peer to an allocation, sent as ChannelData to an IPv6 client.
    pub const TX_UDP4_TO_CHAN6: u32 = 41;
    /// UDP from an IPv6 peer to an allocation, sent as ChannelData to an IPv4 client.
    pub const TX_UDP6_TO_CHAN4: u32 = 42;
    /// UDP from an IPv6 peer to an allocation, sent as ChannelData to an IPv6 client.
    pub const TX_UDP6_TO_CHAN6: u32 = 43;

    /// Base of the four channel-to-UDP reasons; add 2 for an IPv6 input, 1 for an IPv6 output.
    pub const TX_CHAN_TO_UDP_BASE: u32 = TX_CHAN4_TO_UDP4;
    /// Base of the four relay-to-self reasons (same offsets).
    pub const TX_CHAN_TO_CHAN_BASE: u32 = TX_CHAN4_TO_CHAN4;
    /// Base of the four UDP-to-channel reasons (same offsets).
    pub const TX_UDP_TO_CHAN_BASE: u32 = TX_UDP4_TO_CHAN4;
    /// First and one-past-last TX reason.
    pub const TX_FIRST: u32 = TX_CHAN4_TO_UDP4;
    pub const TX_END: u32 = TX_UDP6_TO_CHAN6 + 1;

    /// The frame was partly rewritten when a later step failed (`bpf_xdp_adjust_tail` refused,
    /// or the adjusted frame is shorter than the headers); it cannot be handed on half-rewritten,
    /// so it is dropped. Not reachable for frames the parser accepts.
    pub const DROP_REWRITE_FAILED: u32 = 48;

    /// Number of reason slots in the counter map. Reasons added later take free slots below it.
    pub const COUNT: u32 = 64;

    /// The XDP action the program returns for a reason.
    #[inline(always)]
    pub const fn action(reason: u32) -> u32 {
        if reason >= TX_FIRST && reason < TX_END {
            crate::action::TX
        } else if reason == DROP_REWRITE_FAILED {
            crate::action::DROP
        } else {
            crate::action::PASS
        }
    }

    /// Human-readable names, indexed by reason; `None` for unused slots.
    pub const NAMES: [Option<&str>; COUNT as usize] = {
        let mut names = [None; COUNT as usize];
        names[PASS_NOT_IP as usize] = Some("pass/not-ip");
        names[PASS_MALFORMED as usize] = Some("pass/malformed");
        names[PASS_IPV4_OPTIONS as usize] = Some("pass/ipv4-options");
        names[PASS_IPV6_EXTENSION as usize] = Some("pass/ipv6-extension-header");
        names[PASS_FRAGMENT as usize] = Some("pass/fragment");
        names[PASS_NOT_UDP as usize] = Some("pass/not-udp");
        names[PASS_NOT_RELAY_ADDRESS as usize] = Some("pass/not-relay-address");
        names[PASS_NOT_RELAY_PORT as usize] = Some("pass/not-relay-port");
        names[PASS_STUN as usize] = Some("pass/stun");
        names[PASS_DNS_REPLY as usize] = Some("pass/dns-reply");
        names[PASS_CHANNEL_DATA_LENGTH as usize] = Some("pass/channel-data-length");
        names[PASS_CHANNEL_NUMBER as usize] = Some("pass/channel-number");
        names[PASS_NO_CHANNEL_BINDING as usize] = Some("pass/no-channel-binding");
        names[PASS_NO_PEER_BINDING as usize] = Some("pass/no-peer-binding");
        names[PASS_SELF_NO_BINDING as usize] = Some("pass/relay-to-self-no-binding");
        names[PASS_ZERO_CHECKSUM_TO_IPV6 as usize] = Some("pass/zero-udp-checksum-to-ipv6");
        names[PASS_NO_RELAY_ADDRESS_FOR_FAMILY as usize] = Some("pass/no-relay-address-for-family");
        names[PASS_ADJUST_HEAD_FAILED as usize] = Some("pass/adjust-head-failed");
        names[PASS_FROM_RELAY_ADDRESS as usize] = Some("pass/from-relay-address");
        names[TX_CHAN4_TO_UDP4 as usize] = Some("tx/chan4-to-udp4");
        names[TX_CHAN4_TO_UDP6 as usize] = Some("tx/chan4-to-udp6");
        names[TX_CHAN6_TO_UDP4 as usize] = Some("tx/chan6-to-udp4");
        names[TX_CHAN6_TO_UDP6 as usize] = Some("tx/chan6-to-udp6");
        names[TX_CHAN4_TO_CHAN4 as usize] = Some("tx/chan4-to-chan4");
        names[TX_CHAN4_TO_CHAN6 as usize] = Some("tx/chan4-to-chan6");
        names[TX_CHAN6_TO_CHAN4 as usize] = Some("tx/chan6-to-chan4");
        names[TX_CHAN6_TO_CHAN6 as usize] = Some("tx/chan6-to-chan6");
        names[TX_UDP4_TO_CHAN4 as usize] = Some("tx/udp4-to-chan4");
        names[TX_UDP4_TO_CHAN6 as usize] = Some("tx/udp4-to-chan6");
        names[TX_UDP6_TO_CHAN4 as usize] = Some("tx/udp6-to-chan4");
        names[TX_UDP6_TO_CHAN6 as usize] = Some("tx/udp6-to-chan6");
        names[DROP_REWRITE_FAILED as usize] = Some("drop/rewrite-failed");
        names
    };

    /// Every assigned reason, in slot order.
    pub const ALL: [u32; 32] = {
        let mut all = [0u32; 32];
        let mut slot = 0;
        let mut next = 0;
        while slot < COUNT as usize {
            if NAMES[slot].is_some() {
                all[next] = slot as u32;
                next += 1;
            }
            slot += 1;
        }
        assert!(next == 32, "ALL must list every named reason");
        all
    };

    /// The name of a reason, or `"unknown"` for a slot that is not assigned.
    pub fn name(reason: u32) -> &'static str {
        match NAMES.get(reason as usize) {
            Some(Some(name)) => name,
            _ => "unknown",
        }
    }
}

/// Names of the maps in the object file, shared so the loader cannot drift from the program.
pub mod maps {
    /// `PerCpuArray<u64>` with [`crate::reason::COUNT`] slots: runs per verdict reason.
    pub const REASON_COUNTERS: &str = "REASON_COUNTERS";
    /// `Array<RelayConfig>` with one slot: the relay's public addresses.
    pub const CONFIG: &str = "CONFIG";
    /// `Array<ChannelBucket>` (module [`crate::table`]): the channel path's bindings, each with
    /// its relay-to-self destination resolved.
    pub const CHANNEL_BUCKETS: &str = "CHANNEL_BUCKETS";
    /// `HashMap<ClientChannel, ChannelRoute>`: the channel bindings whose bucket is full.
    pub const CHANNELS: &str = "CHANNELS";
    /// `Array<AllocationBucket>`: the allocation path's bindings (the reverse).
    pub const ALLOCATION_BUCKETS: &str = "ALLOCATION_BUCKETS";
    /// `HashMap<AllocationPeer, ClientChannel>`: the allocation bindings whose bucket is full.
    pub const ALLOCATIONS: &str = "ALLOCATIONS";
    /// Entries in each overflow map.
    pub const BINDING_ENTRIES: u32 = 65536;
}

/// The name of the XDP program's entry point in the object file.
pub const PROGRAM_NAME: &str = "relay_xdp";
/// A second XDP program in the same object that only returns `XDP_TX`: the benchmark's floor.
pub const FLOOR_PROGRAM_NAME: &str = "floor_tx";

/// `RelayConfig::flags` bit: `ipv4` holds the relay's public IPv4 address.
pub const CONFIG_HAS_IPV4: u8 = 1;
/// `RelayConfig::flags` bit: `ipv6` holds the relay's public IPv6 address.
pub const CONFIG_HAS_IPV6: u8 = 2;

/// The relay's public addresses (slot 0 of the `CONFIG` array). 24 bytes, no padding.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RelayConfig {
    /// The public IPv6 address, network byte order (valid if `CONFIG_HAS_IPV6`).
    pub ipv6: [u8; 16],
    /// The public IPv4 address, network byte order (valid if `CONFIG_HAS_IPV4`).
    pub ipv4: [u8; 4],
    /// `CONFIG_HAS_IPV4 | CONFIG_HAS_IPV6`.
    pub flags: u8,
    /// Always zero.
    pub reserved: [u8; 3],
}

impl RelayConfig {
    pub fn new(ipv4: Option<Ipv4Addr>, ipv6: Option<Ipv6Addr>) -> Self {
        let mut config = Self::default();
        if let Some(ipv4) = ipv4 {
            config.ipv4 = ipv4.octets();
            config.flags |= CONFIG_HAS_IPV4;
        }
        if let Some(ipv6) = ipv6 {
            config.ipv6 = ipv6.octets();
            config.flags |= CONFIG_HAS_IPV6;
        }
        config
    }
}

/// A client and one of its channels: the key of `CHANNELS`, the value of `ALLOCATIONS` (and the
/// relay-to-self destination in a `CHANNELS` value).
/// 20 bytes, no padding; ports and channel numbers in network byte order.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ClientChannel {
    /// The client's address; IPv4 as v4-mapped IPv6 (`::ffff:a.b.c.d`).
    pub client_ip: [u8; 16],
    /// The client's port, network byte order.
    pub client_port: u16,
    /// The channel number, network byte order.
    pub channel: u16,
}

/// An allocation and one of its peers: the key of `ALLOCATIONS`, the binding part of a
/// `CHANNELS` value.
/// 20 bytes, no padding; ports in network byte order.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct AllocationPeer {
    /// The allocation's (relayed transport) port, network byte order; a dual-stack allocation
    /// has the same port on both families.
    pub allocation_port: u16,
    /// The peer's address; IPv4 as v4-mapped IPv6 (`::ffff:a.b.c.d`).
    pub peer_ip: [u8; 16],
    /// The peer's port, network byte order.
    pub peer_port: u16,
}

impl AllocationPeer {
    /// The same binding seen from the other end of a relay-to-self route: when `peer_ip` is the
    /// relay's own address and `peer_port` another allocation, that allocation's binding back
    /// to this one has this key in `ALLOCATIONS`. The allocation port and the peer port swap.
    pub const fn reverse(&self) -> Self {
        Self {
            allocation_port: self.peer_port,
            peer_ip: self.peer_ip,
            peer_port: self.allocation_port,
        }
    }
}

/// The value of `CHANNELS`: the binding of a client's channel, and where relay-to-self
/// ChannelData on it goes, so that the channel path needs one lookup in every case.
/// 40 bytes, no padding; ports and channel numbers in network byte order.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChannelRoute {
    /// The allocation and the peer the channel is bound to (this binding's `ALLOCATIONS` key).
    pub binding: AllocationPeer,
    /// The `ALLOCATIONS` value at `binding.reverse()`: when the peer is the relay's own address
    /// at an allocation port, the client (and its channel) of that allocation which has bound
    /// the relay's address at this binding's allocation port, i.e. where the data goes. All
    /// zero (channel 0, which is no channel) when `ALLOCATIONS` has no such entry. The loader
    /// keeps it equal to that lookup whenever either map changes.
    pub relay_to_self: ClientChannel,
}

impl ChannelRoute {
    /// Whether `relay_to_self` names a client (a bound channel is never 0).
    #[inline(always)]
    pub const fn has_relay_to_self(&self) -> bool {
        self.relay_to_self.channel != 0
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], only integer fields, no padding (sizes are asserted in tests), so
    // every bit pattern is a valid value and the kernel may copy them byte for byte.
    #[allow(unsafe_code)]
    unsafe impl aya::Pod for super::RelayConfig {}
    // SAFETY: as above.
    #[allow(unsafe_code)]
    unsafe impl aya::Pod for super::ClientChannel {}
    // SAFETY: as above.
    #[allow(unsafe_code)]
    unsafe impl aya::Pod for super::AllocationPeer {}
    // SAFETY: as above (two such structs, each of alignment 2 and an even size).
    #[allow(unsafe_code)]
    unsafe impl aya::Pod for super::ChannelRoute {}
    // SAFETY: as above: a sequence byte, three reserved bytes and two such structs, four times
    // (sizes are asserted in tests).
    #[allow(unsafe_code)]
    unsafe impl aya::Pod for super::table::ChannelBucket {}
    // SAFETY: as above.
    #[allow(unsafe_code)]
    unsafe impl aya::Pod for super::table::AllocationBucket {}
}

/// An IP address in the maps' unified 16-byte form (IPv4 as `::ffff:a.b.c.d`).
pub fn unified_ip(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address that a unified 16-byte address stands for (v4-mapped becomes IPv4).
pub fn ip_from_unified(octets: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(octets);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// One channel binding of the relay: `client` talks to `peer` through `channel`, and the
/// peer sees the client as `relay:allocation_port`. The loader writes it into both maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelBinding {
    pub client: SocketAddr,
    pub channel: u16,
    pub allocation_port: u16,
    pub peer: SocketAddr,
}

impl ChannelBinding {
    /// The `CHANNELS` key (and `ALLOCATIONS` value).
    pub fn client_channel(&self) -> ClientChannel {
        ClientChannel {
            client_ip: unified_ip(self.client.ip()),
            client_port: self.client.port().to_be(),
            channel: self.channel.to_be(),
        }
    }

    /// The `ALLOCATIONS` key (and `CHANNELS` value).
    pub fn allocation_peer(&self) -> AllocationPeer {
        AllocationPeer {
            allocation_port: self.allocation_port.to_be(),
            peer_ip: unified_ip(self.peer.ip()),
            peer_port: self.peer.port().to_be(),
        }
    }

    /// The binding that a `CHANNELS` entry stands for.
    pub fn from_entry(key: &ClientChannel, value: &AllocationPeer) -> Self {
        Self {
            client: SocketAddr::new(
                ip_from_unified(key.client_ip),
                u16::from_be(key.client_port),
            ),
            channel: u16::from_be(key.channel),
            allocation_port: u16::from_be(value.allocation_port),
            peer: SocketAddr::new(
                ip_from_unified(value.peer_ip),
                u16::from_be(value.peer_port),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use core::mem::{align_of, size_of};

    use super::*;

    #[test]
    fn map_types_have_exact_sizes_and_no_padding() {
        assert_eq!(size_of::<RelayConfig>(), 16 + 4 + 1 + 3);
        assert_eq!(size_of::<RelayConfig>(), 24);
        assert_eq!(align_of::<RelayConfig>(), 1);
        assert_eq!(size_of::<ClientChannel>(), 16 + 2 + 2);
        assert_eq!(size_of::<ClientChannel>(), 20);
        assert_eq!(size_of::<AllocationPeer>(), 2 + 16 + 2);
        assert_eq!(size_of::<AllocationPeer>(), 20);
        assert_eq!(align_of::<ClientChannel>(), 2);
        assert_eq!(align_of::<AllocationPeer>(), 2);
        assert_eq!(size_of::<ChannelRoute>(), 20 + 20);
        assert_eq!(size_of::<ChannelRoute>(), 40);
        assert_eq!(align_of::<ChannelRoute>(), 2);
        assert_eq!(core::mem::offset_of!(ChannelRoute, binding), 0);
        assert_eq!(core::mem::offset_of!(ChannelRoute, relay_to_self), 20);
        assert_eq!(size_of::<table::ChannelBucket>(), 4 * (4 + 20 + 40));
        assert_eq!(size_of::<table::AllocationBucket>(), 4 * (4 + 20 + 20));
        assert_eq!(
            core::mem::offset_of!(table::Slot<ClientChannel, ChannelRoute>, key),
            4
        );
    }

    #[test]
    fn keys_spread_over_the_buckets() {
        use table::TableKey as _;
        // 4,096 IPv4 clients on one port and channel, and one peer at 4,096 allocations: the
        // keys differ in a few bits, where a weak hash would pile them into few buckets.
        let mut by_client = [0u16; table::BUCKETS as usize];
        let mut by_port = [0u16; table::BUCKETS as usize];
        for i in 0..4096u32 {
            let [_, _, c, d] = i.to_be_bytes();
            let client = ChannelBinding {
                client: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, c, d)), 50000),
                channel: 0x4000,
                allocation_port: 50000,
                peer: "192.0.2.1:3000".parse().unwrap(),
            };
            let port = ChannelBinding {
                client: "10.0.0.1:1".parse().unwrap(),
                allocation_port: 49152 + i as u16,
                ..client
            };
            by_client[table::bucket_index(&client.client_channel().words()) as usize] += 1;
            by_port[table::bucket_index(&port.allocation_peer().words()) as usize] += 1;
        }
        for counts in [by_client, by_port] {
            // 4,096 keys in 16,384 buckets: a fair hash puts at most a handful in any one.
            assert!(
                counts
                    .iter()
                    .all(|&count| count <= table::SLOTS_PER_BUCKET as u16)
            );
        }
    }

    #[test]
    fn the_reverse_of_a_relay_to_self_binding_is_the_other_allocations_key() {
        // A (allocation 50011) bound the relay's 50013; C (allocation 50013) bound the relay's
        // 50011: A's reverse is C's key.
        let relay = "203.0.113.1".parse().unwrap();
        let a = ChannelBinding {
            client: "203.0.113.11:50000".parse().unwrap(),
            channel: 0x4010,
            allocation_port: 50011,
            peer: SocketAddr::new(relay, 50013),
        };
        let c = ChannelBinding {
            client: "203.0.113.12:50000".parse().unwrap(),
            channel: 0x4011,
            allocation_port: 50013,
            peer: SocketAddr::new(relay, 50011),
        };
        assert_eq!(a.allocation_peer().reverse(), c.allocation_peer());
        assert_eq!(a.allocation_peer().reverse().reverse(), a.allocation_peer());
        let route = ChannelRoute {
            binding: a.allocation_peer(),
            relay_to_self: c.client_channel(),
        };
        assert!(route.has_relay_to_self());
        assert_eq!(route.relay_to_self.channel.to_ne_bytes(), [0x40, 0x11]);
        assert_eq!(
            route.binding.peer_port.to_ne_bytes(),
            50013u16.to_be_bytes()
        );
        assert!(!ChannelRoute::default().has_relay_to_self());
    }

    #[test]
    fn every_reason_has_a_name_and_the_right_action() {
        for why in reason::ALL {
            assert_ne!(reason::name(why), "unknown");
        }
        for why in reason::TX_FIRST..reason::TX_END {
            assert!(reason::NAMES[why as usize].is_some());
            assert_eq!(reason::action(why), action::TX);
        }
        assert_eq!(reason::action(reason::PASS_STUN), action::PASS);
        assert_eq!(reason::action(reason::DROP_REWRITE_FAILED), action::DROP);
        assert_eq!(reason::name(63), "unknown");
    }

    #[test]
    fn bindings_round_trip_through_map_entries() {
        let binding = ChannelBinding {
            client: "203.0.113.10:50000".parse().unwrap(),
            channel: 0x4001,
            allocation_port: 50001,
            peer: "[2001:db8::20]:40000".parse().unwrap(),
        };
        let key = binding.client_channel();
        assert_eq!(
            key.client_ip,
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 203, 0, 113, 10]
        );
        assert_eq!(key.channel.to_ne_bytes(), [0x40, 0x01]);
        assert_eq!(key.client_port.to_ne_bytes(), 50000u16.to_be_bytes());
        let value = binding.allocation_peer();
        assert_eq!(value.allocation_port.to_ne_bytes(), 50001u16.to_be_bytes());
        assert_eq!(ChannelBinding::from_entry(&key, &value), binding);
    }
}
