//! XDP entry point: the relay's TURN data-plane fast path.
//!
//! - Channel path: ChannelData from a client to `relay:3478` becomes a UDP datagram from
//!   `relay:allocation-port` to the bound peer; if that peer is the relay itself
//!   (relay-to-self), it becomes ChannelData to the client of the other allocation instead.
//! - Allocation path: UDP from a peer to `relay:allocation-port` becomes ChannelData from
//!   `relay:3478` to the bound client.
//!
//! Everything else goes to the kernel (and the userspace relay) with `XDP_PASS`, unchanged;
//! every run counts exactly one reason.
//!
//! Written for the verifier of the kernel it runs on: every packet access is
//! preceded by its own pointer comparison against `data_end` (never a check on the scalar
//! `data_end - data`, which lets LLVM drop pointer checks the verifier needs), packet pointers
//! are re-derived after `bpf_xdp_adjust_head`, helpers are `#[inline(always)]`, and results are
//! plain integers (a verdict reason), never enums with data. The input family is a const
//! generic, so every header offset is a constant in the code the verifier sees.
//!
//! Multi-byte packet fields are read and written as 2-byte words at even offsets: the frame
//! starts 2-byte aligned (XDP headroom is 256 bytes, adjustments here are even), so these
//! accesses are aligned.
//!
//! Why this file and its per-path functions (`channel_path`, `rewrite_datagram`,
//! `write_headers`) stay long: each is one straight run of bounds checks and header writes that
//! the verifier follows instruction by instruction, and how LLVM places those checks depends on
//! what it sees in one function body. Cutting them into smaller functions changes the code the
//! verifier is given (a length check LLVM felt free to drop once made the program unloadable),
//! so they are kept whole and covered instead by the fixtures, the random-frame test and the
//! differential test against the userspace relay.

use core::{
    mem::MaybeUninit,
    ptr::{addr_of_mut, read_volatile, write_volatile},
};

use aya_ebpf::{
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail, bpf_xdp_get_buff_len},
    macros::{map, xdp},
    maps::{Array, HashMap, PerCpuArray},
    programs::XdpContext,
};
use relay_xdp_common::{
    AllocationPeer, CONFIG_HAS_IPV4, CONFIG_HAS_IPV6, ChannelRoute, ClientChannel, RelayConfig,
    action, channel,
    maps::BINDING_ENTRIES,
    ports, reason,
    table::{
        AllocationBucket, BUCKETS, Bucket, ChannelBucket, KeyWords, SLOTS_PER_BUCKET, Slot,
        TableKey as _, bucket_index,
    },
};

/// Runs per verdict reason, summed over CPUs by the loader.
#[map(name = "REASON_COUNTERS")]
static REASON_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(reason::COUNT, 0);

/// Slot 0: the relay's public addresses.
#[map(name = "CONFIG")]
static CONFIG: Array<RelayConfig> = Array::with_max_entries(1, 0);

/// (client, port, channel) -> (allocation port, peer, port), and the relay-to-self destination
/// (the allocation entry of the reverse binding), kept up to date by the loader: the channel
/// path finds everything in one entry, relay-to-self included. Buckets of slots, read without a
/// helper call (`relay_xdp_common::table`); `CHANNELS` holds the keys whose bucket is full.
#[map(name = "CHANNEL_BUCKETS")]
static CHANNEL_BUCKETS: Array<ChannelBucket> = Array::with_max_entries(BUCKETS, 0);

#[map(name = "CHANNELS")]
static CHANNELS: HashMap<ClientChannel, ChannelRoute> =
    HashMap::with_max_entries(BINDING_ENTRIES, 0);

/// (allocation port, peer, port) -> (client, port, channel), as buckets and an overflow map.
#[map(name = "ALLOCATION_BUCKETS")]
static ALLOCATION_BUCKETS: Array<AllocationBucket> = Array::with_max_entries(BUCKETS, 0);

#[map(name = "ALLOCATIONS")]
static ALLOCATIONS: HashMap<AllocationPeer, ClientChannel> =
    HashMap::with_max_entries(BINDING_ENTRIES, 0);

const ETH_HDR_LEN: usize = 14;
const IPV4_HDR_LEN: usize = 20;
const IPV6_HDR_LEN: usize = 40;
const UDP_HDR_LEN: usize = 8;
const CD_HDR_LEN: usize = channel::HEADER_LEN;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;

const IPPROTO_UDP: u8 = 17;

/// TTL / hop limit of every rewritten packet. The relay originates the rewritten datagram (as
/// the userspace relay would through its socket), so it starts with a fresh TTL of 64 rather
/// than the decremented TTL of the datagram it received.
const TTL: u8 = 64;

/// ChannelData lengths above this cannot occur in a linear XDP frame (at most a page); the
/// bound also keeps every computed packet offset below the verifier's 64 KiB limit.
const MAX_DATA_LEN: u16 = 0x3FFF;

#[xdp]
pub fn relay_xdp(ctx: XdpContext) -> u32 {
    let why = handle(&ctx);
    count(why);
    reason::action(why)
}

/// The benchmark's floor: the cheapest program that returns what the fast path returns.
#[xdp]
pub fn floor_tx(_ctx: XdpContext) -> u32 {
    action::TX
}

#[inline(always)]
fn count(why: u32) {
    if let Some(counter) = REASON_COUNTERS.get_ptr_mut(why) {
        // SAFETY: the pointer comes from a successful map lookup of this CPU's slot; per-CPU
        // slots are never touched concurrently.
        unsafe { *counter += 1 };
    }
}

/// Reads the byte at `offset`, or `None` past the end of the frame.
#[inline(always)]
fn byte_at(ctx: &XdpContext, offset: usize) -> Option<u8> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + 1 > end {
        return None;
    }
    // SAFETY: the check above keeps the one-byte read inside [data, data_end).
    Some(unsafe { *((start + offset) as *const u8) })
}

/// Reads a big-endian u16 at the even `offset`, or `None` past the end of the frame.
#[inline(always)]
fn be16_at(ctx: &XdpContext, offset: usize) -> Option<u16> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + 2 > end {
        return None;
    }
    // SAFETY: the check above keeps the two-byte read inside [data, data_end); the offset is
    // even and the frame 2-byte aligned (module docs).
    Some(u16::from_be(unsafe { *((start + offset) as *const u16) }))
}

/// Whether the frame holds at least `len` bytes. Written as a pointer comparison against
/// `data_end`, the only form from which the verifier learns a packet range: a check on the
/// scalar `data_end - data` would let LLVM drop later pointer checks that the verifier needs.
#[inline(always)]
fn has(ctx: &XdpContext, len: usize) -> bool {
    ctx.data() + len <= ctx.data_end()
}

/// Whether the frame holds more than `len` bytes (pointer comparison, as in `has`).
#[inline(always)]
fn longer_than(ctx: &XdpContext, len: usize) -> bool {
    ctx.data() + len < ctx.data_end()
}

/// The big-endian 16-bit word `i` (0..8) of a 16-byte address, read as one 2-byte load. Every
/// address this reads sits at an even offset of a map key or value (`ClientChannel`,
/// `AllocationPeer`, `ChannelRoute`, `RelayConfig`), and map keys and values are 8-byte aligned.
#[inline(always)]
fn word(ip: &[u8; 16], i: usize) -> u16 {
    // SAFETY: `i < 8` keeps the load inside the array; alignment as documented above.
    u16::from_be(unsafe { *(ip.as_ptr() as *const u16).add(i) })
}

/// Stores the big-endian word `i` (0..8) of a 16-byte address in a map key being built on the
/// stack. Volatile, so that LLVM cannot merge the stores into a `memset`/`memcpy` call (the BPF
/// target has no such functions inline; it would call a byte loop).
#[inline(always)]
fn store_word(ip: *mut [u8; 16], i: usize, value: u16) {
    // SAFETY: `ip` points at the address field of a key on this program's stack, at an even
    // offset of a 2-byte aligned struct; `i < 8` keeps the store inside it.
    unsafe { core::ptr::write_volatile((ip as *mut u16).add(i), value.to_be()) }
}

/// Stores a u16 field of a map key being built on the stack (volatile, as `store_word`).
#[inline(always)]
fn store_u16(field: *mut u16, value: u16) {
    // SAFETY: `field` points at a u16 field of a key on this program's stack.
    unsafe { core::ptr::write_volatile(field, value) }
}

/// Ones'-complement sum (unfolded) of a 16-byte address's words. A v4-mapped address sums to
/// the same value as the bare IPv4 address modulo 0xFFFF (its 0xFFFF word is a ones'-complement
/// zero), so pseudo-header sums may use either form.
#[inline(always)]
fn sum_ip(ip: &[u8; 16]) -> u32 {
    let mut sum = 0;
    let mut i = 0;
    while i < 8 {
        sum += word(ip, i) as u32;
        i += 1;
    }
    sum
}

/// Folds a 32-bit sum of 16-bit words to 16 bits with end-around carry.
#[inline(always)]
fn fold(sum: u32) -> u16 {
    let sum = (sum & 0xFFFF) + (sum >> 16);
    let sum = (sum & 0xFFFF) + (sum >> 16);
    let sum = (sum & 0xFFFF) + (sum >> 16);
    sum as u16
}

/// The ones'-complement negation of a word, for removing it from a sum (RFC 1624 eqn. 3).
#[inline(always)]
fn neg(word: u16) -> u32 {
    0xFFFF - word as u32
}

#[inline(always)]
fn is_v4_mapped(ip: &[u8; 16]) -> bool {
    (word(ip, 0) | word(ip, 1) | word(ip, 2) | word(ip, 3) | word(ip, 4)) == 0
        && word(ip, 5) == 0xFFFF
}

/// The relay's IPv4 address as two big-endian words.
#[inline(always)]
fn relay_ipv4_words(config: &RelayConfig) -> (u16, u16) {
    (
        u16::from_be_bytes([config.ipv4[0], config.ipv4[1]]),
        u16::from_be_bytes([config.ipv4[2], config.ipv4[3]]),
    )
}

/// Whether a unified address is one of the relay's own public addresses.
#[inline(always)]
fn is_relay_ip(config: &RelayConfig, ip: &[u8; 16]) -> bool {
    if is_v4_mapped(ip) {
        let (hi, lo) = relay_ipv4_words(config);
        config.flags & CONFIG_HAS_IPV4 != 0 && word(ip, 6) == hi && word(ip, 7) == lo
    } else {
        let mut diff = 0u16;
        let mut i = 0;
        while i < 8 {
            diff |= word(ip, i) ^ word(&config.ipv6, i);
            i += 1;
        }
        config.flags & CONFIG_HAS_IPV6 != 0 && diff == 0
    }
}

/// What the parser learned about a UDP datagram addressed to the relay.
struct Datagram {
    /// Unfolded sum of the words of the source and destination addresses.
    addr_sum: u32,
    src_port: u16,
    dst_port: u16,
    udp_len: u16,
    checksum: u16,
    /// IPv4 TOS or IPv6 traffic class (DSCP and ECN), carried over to the rewritten packet.
    tos: u8,
    /// The frame continues past the IP packet (Ethernet padding); trimmed on rewrite.
    trailing: bool,
}

/// The rewrite a path decided on.
struct Rewrite {
    /// The new destination address (unified form), copied out of the binding's slot: the
    /// loader may rewrite the slot while the run goes on (`relay_xdp_common::table`).
    dst_ip: [u8; 16],
    dst_port: u16,
    src_port: u16,
    /// Channel number of the ChannelData header the input carries (if `old_cd`).
    old_channel: u16,
    /// Channel number of the ChannelData header the output carries (if `new_cd`).
    new_channel: u16,
    /// Data bytes (without ChannelData header and padding).
    data_len: u16,
    /// Padding bytes after the data in the input, removed on output.
    pad: u16,
    /// Ones'-complement sum of the padding bytes as they sat in the checksummed words.
    pad_sum: u32,
    /// Reason of the IPv4-to-IPv4 variant of this path.
    base_reason: u32,
    /// The input carries a ChannelData header.
    old_cd: bool,
    /// The output carries a ChannelData header.
    new_cd: bool,
    /// The input is IPv6.
    in_v6: bool,
}

/// Returned by the parsing steps when the frame is for the fast path: rewrite it.
const REWRITE: u32 = u32::MAX;

/// The parsers and paths are monomorphised per input family (constant header offsets, which
/// the verifier needs); the rewrite is shared, so that its stack slots exist once.
#[inline(always)]
fn handle(ctx: &XdpContext) -> u32 {
    let Some(ethertype) = be16_at(ctx, 12) else {
        return reason::PASS_MALFORMED;
    };
    // The single slot of an array map always exists; without it nothing is the relay's.
    let Some(config) = CONFIG.get(0) else {
        return reason::PASS_NOT_RELAY_ADDRESS;
    };
    let mut dgram = Datagram {
        addr_sum: 0,
        src_port: 0,
        dst_port: 0,
        udp_len: 0,
        checksum: 0,
        tos: 0,
        trailing: false,
    };
    let mut rewrite = Rewrite {
        dst_ip: [0; 16],
        dst_port: 0,
        src_port: 0,
        old_channel: 0,
        new_channel: 0,
        data_len: 0,
        pad: 0,
        pad_sum: 0,
        base_reason: 0,
        old_cd: false,
        new_cd: false,
        in_v6: false,
    };
    let why = match ethertype {
        ETHERTYPE_IPV4 => handle_ipv4(ctx, config, &mut dgram, &mut rewrite),
        ETHERTYPE_IPV6 => handle_ipv6(ctx, config, &mut dgram, &mut rewrite),
        _ => reason::PASS_NOT_IP,
    };
    if why != REWRITE {
        return why;
    }
    rewrite_datagram(ctx, config, &dgram, &rewrite)
}

#[inline(always)]
fn handle_ipv4(
    ctx: &XdpContext,
    config: &RelayConfig,
    dgram: &mut Datagram,
    rewrite: &mut Rewrite,
) -> u32 {
    let l3 = ETH_HDR_LEN;
    if !has(ctx, l3 + IPV4_HDR_LEN) {
        return reason::PASS_MALFORMED;
    }
    let Some(version_ihl) = byte_at(ctx, l3) else {
        return reason::PASS_MALFORMED;
    };
    if version_ihl >> 4 != 4 {
        return reason::PASS_MALFORMED;
    }
    let ihl = version_ihl & 0x0F;
    if ihl < 5 {
        return reason::PASS_MALFORMED;
    }
    if ihl > 5 {
        return reason::PASS_IPV4_OPTIONS;
    }
    let Some(total_len) = be16_at(ctx, l3 + 2) else {
        return reason::PASS_MALFORMED;
    };
    let total_len = total_len as usize;
    // Ethernet may pad short frames, so the IP packet may end before the frame does.
    if total_len < IPV4_HDR_LEN || !has(ctx, l3 + total_len) {
        return reason::PASS_MALFORMED;
    }
    let Some(flags_offset) = be16_at(ctx, l3 + 6) else {
        return reason::PASS_MALFORMED;
    };
    // More-fragments flag or a non-zero fragment offset.
    if flags_offset & 0x3FFF != 0 {
        return reason::PASS_FRAGMENT;
    }
    let Some(protocol) = byte_at(ctx, l3 + 9) else {
        return reason::PASS_MALFORMED;
    };
    if protocol != IPPROTO_UDP {
        return reason::PASS_NOT_UDP;
    }
    let (Some(dst_hi), Some(dst_lo)) = (be16_at(ctx, l3 + 16), be16_at(ctx, l3 + 18)) else {
        return reason::PASS_MALFORMED;
    };
    let (relay_hi, relay_lo) = relay_ipv4_words(config);
    if config.flags & CONFIG_HAS_IPV4 == 0 || dst_hi != relay_hi || dst_lo != relay_lo {
        return reason::PASS_NOT_RELAY_ADDRESS;
    }

    // The header checksum must verify: the rewritten header gets a fresh one, which must not
    // launder a corrupted packet. The same loop sums the addresses for the UDP checksum.
    let mut sum = 0u32;
    let mut addr_sum = 0u32;
    let mut i = 0;
    while i < IPV4_HDR_LEN / 2 {
        let Some(w) = be16_at(ctx, l3 + 2 * i) else {
            return reason::PASS_MALFORMED;
        };
        sum += w as u32;
        if i >= 6 {
            addr_sum += w as u32;
        }
        i += 1;
    }
    if fold(sum) != 0xFFFF {
        return reason::PASS_MALFORMED;
    }
    let Some(tos) = byte_at(ctx, l3 + 1) else {
        return reason::PASS_MALFORMED;
    };
    dgram.tos = tos;
    dgram.addr_sum = addr_sum;
    dgram.trailing = longer_than(ctx, l3 + total_len);
    handle_udp::<false>(ctx, config, dgram, rewrite, total_len - IPV4_HDR_LEN)
}

/// IPv6 next-header values that are extension headers (RFC 8200 §4, RFC 7045).
#[inline(always)]
fn is_ipv6_extension(next_header: u8) -> bool {
    matches!(
        next_header,
        0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254
    )
}

#[inline(always)]
fn handle_ipv6(
    ctx: &XdpContext,
    config: &RelayConfig,
    dgram: &mut Datagram,
    rewrite: &mut Rewrite,
) -> u32 {
    let l3 = ETH_HDR_LEN;
    if !has(ctx, l3 + IPV6_HDR_LEN) {
        return reason::PASS_MALFORMED;
    }
    let Some(version) = byte_at(ctx, l3) else {
        return reason::PASS_MALFORMED;
    };
    if version >> 4 != 6 {
        return reason::PASS_MALFORMED;
    }
    let Some(payload_len) = be16_at(ctx, l3 + 4) else {
        return reason::PASS_MALFORMED;
    };
    let payload_len = payload_len as usize;
    if !has(ctx, l3 + IPV6_HDR_LEN + payload_len) {
        return reason::PASS_MALFORMED;
    }
    let Some(next_header) = byte_at(ctx, l3 + 6) else {
        return reason::PASS_MALFORMED;
    };
    if next_header == 44 {
        return reason::PASS_FRAGMENT;
    }
    if is_ipv6_extension(next_header) {
        return reason::PASS_IPV6_EXTENSION;
    }
    if next_header != IPPROTO_UDP {
        return reason::PASS_NOT_UDP;
    }

    // Source (words 0..8) and destination (8..16): sum both, compare the destination.
    let mut addr_sum = 0u32;
    let mut diff = 0u16;
    let mut i = 0;
    while i < 16 {
        let Some(w) = be16_at(ctx, l3 + 8 + 2 * i) else {
            return reason::PASS_MALFORMED;
        };
        addr_sum += w as u32;
        if i >= 8 {
            diff |= w ^ word(&config.ipv6, i - 8);
        }
        i += 1;
    }
    if config.flags & CONFIG_HAS_IPV6 == 0 || diff != 0 {
        return reason::PASS_NOT_RELAY_ADDRESS;
    }
    let Some(first) = be16_at(ctx, l3) else {
        return reason::PASS_MALFORMED;
    };
    dgram.tos = (first >> 4) as u8;
    dgram.addr_sum = addr_sum;
    dgram.trailing = longer_than(ctx, l3 + IPV6_HDR_LEN + payload_len);
    handle_udp::<true>(ctx, config, dgram, rewrite, payload_len)
}

/// The offset of the UDP header for an input of the given family.
#[inline(always)]
const fn l4_offset(v6: bool) -> usize {
    if v6 {
        ETH_HDR_LEN + IPV6_HDR_LEN
    } else {
        ETH_HDR_LEN + IPV4_HDR_LEN
    }
}

/// Writes the source address of an input of the given family into the address field `out` of
/// a key being built, unified form (every byte written).
#[inline(always)]
fn read_src_ip<const IN_V6: bool>(ctx: &XdpContext, out: *mut [u8; 16]) -> bool {
    if IN_V6 {
        let mut i = 0;
        while i < 8 {
            let Some(w) = be16_at(ctx, ETH_HDR_LEN + 8 + 2 * i) else {
                return false;
            };
            store_word(out, i, w);
            i += 1;
        }
    } else {
        let (Some(hi), Some(lo)) = (
            be16_at(ctx, ETH_HDR_LEN + 12),
            be16_at(ctx, ETH_HDR_LEN + 14),
        ) else {
            return false;
        };
        let mut i = 0;
        while i < 5 {
            store_word(out, i, 0);
            i += 1;
        }
        store_word(out, 5, 0xFFFF);
        store_word(out, 6, hi);
        store_word(out, 7, lo);
    }
    true
}

/// `ip_payload_len` is what the IP header says follows it.
#[inline(always)]
fn handle_udp<const IN_V6: bool>(
    ctx: &XdpContext,
    config: &RelayConfig,
    dgram: &mut Datagram,
    rewrite: &mut Rewrite,
    ip_payload_len: usize,
) -> u32 {
    let l4 = l4_offset(IN_V6);
    if !has(ctx, l4 + UDP_HDR_LEN) {
        return reason::PASS_MALFORMED;
    }
    let (Some(src_port), Some(dst_port), Some(udp_len), Some(checksum)) = (
        be16_at(ctx, l4),
        be16_at(ctx, l4 + 2),
        be16_at(ctx, l4 + 4),
        be16_at(ctx, l4 + 6),
    ) else {
        return reason::PASS_MALFORMED;
    };
    if (udp_len as usize) < UDP_HDR_LEN || udp_len as usize != ip_payload_len {
        return reason::PASS_MALFORMED;
    }
    // A zero checksum means "none" over IPv4; over IPv6 it is invalid (RFC 8200 §8.1).
    if IN_V6 && checksum == 0 {
        return reason::PASS_MALFORMED;
    }
    dgram.src_port = src_port;
    dgram.dst_port = dst_port;
    dgram.udp_len = udp_len;
    dgram.checksum = checksum;
    rewrite.in_v6 = IN_V6;

    if dst_port == ports::TURN {
        channel_path::<IN_V6>(ctx, config, dgram, rewrite)
    } else if ports::is_allocation(dst_port) {
        allocation_path::<IN_V6>(ctx, config, dgram, rewrite)
    } else {
        reason::PASS_NOT_RELAY_PORT
    }
}

/// ChannelData from a client to `relay:3478`.
#[inline(always)]
fn channel_path<const IN_V6: bool>(
    ctx: &XdpContext,
    config: &RelayConfig,
    dgram: &Datagram,
    rewrite: &mut Rewrite,
) -> u32 {
    let payload = l4_offset(IN_V6) + UDP_HDR_LEN;
    let payload_len = dgram.udp_len - UDP_HDR_LEN as u16;
    if (payload_len as usize) < CD_HDR_LEN {
        return reason::PASS_CHANNEL_DATA_LENGTH;
    }
    let (Some(number), Some(data_len)) = (be16_at(ctx, payload), be16_at(ctx, payload + 2)) else {
        return reason::PASS_MALFORMED;
    };
    // RFC 7983 demultiplexing: 0b00 in the first two bits is STUN.
    if number >> 14 == 0 {
        return reason::PASS_STUN;
    }
    if !channel::is_valid(number) {
        return reason::PASS_CHANNEL_NUMBER;
    }
    // Over UDP the data may be followed by padding (RFC 8656 §12.5): 0 to 3 bytes, whatever
    // the data length, exactly as the userspace relay (`proto::channel_data`) accepts it.
    let room = payload_len - CD_HDR_LEN as u16;
    if data_len > room || room as u32 > data_len as u32 + 3 {
        return reason::PASS_CHANNEL_DATA_LENGTH;
    }
    if data_len > MAX_DATA_LEN {
        return reason::PASS_MALFORMED;
    }
    let pad = room - data_len;

    // The padding leaves the checksummed data: take its bytes out of the sum. A byte at an even
    // offset from the UDP header is the high byte of its word; the payload starts at an even
    // offset, so the parity is that of `data_len + k`.
    let mut pad_sum = 0u32;
    let pad_start = payload + CD_HDR_LEN + data_len as usize;
    let mut k = 0usize;
    while k < 3 {
        if (k as u16) < pad {
            let Some(byte) = byte_at(ctx, pad_start + k) else {
                return reason::PASS_MALFORMED;
            };
            if (data_len as usize + k) & 1 == 0 {
                pad_sum += (byte as u32) << 8;
            } else {
                pad_sum += byte as u32;
            }
        }
        k += 1;
    }

    // Keys are built field by field in place (no zero-fill: see `store_word`).
    let mut key = MaybeUninit::<ClientChannel>::uninit();
    let key_ptr = key.as_mut_ptr();
    // SAFETY (the three blocks below): field pointers of a local, without creating references
    // to uninitialised memory.
    store_u16(
        unsafe { addr_of_mut!((*key_ptr).client_port) },
        dgram.src_port.to_be(),
    );
    store_u16(unsafe { addr_of_mut!((*key_ptr).channel) }, number.to_be());
    if !read_src_ip::<IN_V6>(ctx, unsafe { addr_of_mut!((*key_ptr).client_ip) }) {
        return reason::PASS_MALFORMED;
    }
    // SAFETY: every field was written above.
    let key = unsafe { key.assume_init_ref() };
    rewrite.old_channel = number;
    rewrite.old_cd = true;
    rewrite.data_len = data_len;
    rewrite.pad = pad;
    rewrite.pad_sum = pad_sum;
    let words = key.words();
    if let Some(bucket) = CHANNEL_BUCKETS.get(bucket_index(&words))
        && let Some(why) = read_bucket(bucket, &words, |route| {
            take_channel_route(config, route, rewrite)
        })
    {
        return why;
    }
    let Some(route) = CHANNELS.get_ptr(key) else {
        return reason::PASS_NO_CHANNEL_BINDING;
    };
    // SAFETY: a successful lookup returns a pointer to a live value of the map's value type,
    // valid until the program returns.
    take_channel_route(config, unsafe { &*route }, rewrite)
}

/// The rewrite of ChannelData on a channel bound as `route`. Every read of `route` is volatile,
/// so that none moves past the slot's second sequence read (`read_bucket`).
#[inline(always)]
fn take_channel_route(config: &RelayConfig, route: &ChannelRoute, rewrite: &mut Rewrite) -> u32 {
    let binding = &route.binding;
    let allocation_port = u16::from_be(read16(&binding.allocation_port));
    let peer_port = u16::from_be(read16(&binding.peer_port));
    copy_ip(&mut rewrite.dst_ip, &binding.peer_ip);
    if is_relay_ip(config, &rewrite.dst_ip) {
        // Relay-to-self: the peer is another allocation on this relay, which sees the sender as
        // `relay:allocation_port` (a dual-stack allocation has one port on both families). Its
        // client is resolved in the route already: the allocation entry of `binding.reverse()`.
        let client = &route.relay_to_self;
        // A bound channel is never 0: 0 means no allocation has bound this one back.
        let new_channel = u16::from_be(read16(&client.channel));
        if !ports::is_allocation(peer_port) || new_channel == 0 {
            return reason::PASS_SELF_NO_BINDING;
        }
        copy_ip(&mut rewrite.dst_ip, &client.client_ip);
        rewrite.dst_port = u16::from_be(read16(&client.client_port));
        rewrite.src_port = ports::TURN;
        rewrite.new_channel = new_channel;
        rewrite.new_cd = true;
        rewrite.base_reason = reason::TX_CHAN_TO_CHAN_BASE;
    } else {
        rewrite.dst_port = peer_port;
        rewrite.src_port = allocation_port;
        rewrite.new_cd = false;
        rewrite.base_reason = reason::TX_CHAN_TO_UDP_BASE;
    }
    REWRITE
}

/// Whether a slot's key is the key with these words. The last word first (the channel number
/// or the peer's port): an empty slot has zero there, so most slots fail at one load.
#[inline(always)]
fn key_matches<K>(key: &K, words: &KeyWords) -> bool {
    let slot_words = key as *const K as *const u16;
    // SAFETY: both key types are 20 bytes with 2-byte alignment (asserted in the common crate's
    // tests), so ten 2-byte loads stay inside the key, a slot's in a map value found in this run.
    if unsafe { read_volatile(slot_words.add(9)) } != words[9] {
        return false;
    }
    let mut diff = 0u16;
    let mut i = 0;
    while i < 9 {
        // SAFETY: as above.
        diff |= unsafe { read_volatile(slot_words.add(i)) } ^ words[i];
        i += 1;
    }
    diff == 0
}

/// Finds the key with `words` in `bucket` and hands its value to `take`, which returns the
/// run's reason. `None` when no slot holds the key, or when the slot that does changed while it
/// was read (its sequence byte odd, or different after `take`): the run then goes on as if the
/// key were not in the bucket (`relay_xdp_common::table`).
#[inline(always)]
fn read_bucket<K, V>(
    bucket: &Bucket<K, V>,
    words: &KeyWords,
    mut take: impl FnMut(&V) -> u32,
) -> Option<u32> {
    let mut i = 0;
    while i < SLOTS_PER_BUCKET {
        let slot: &Slot<K, V> = &bucket.slots[i];
        // SAFETY: a field of a map value found in this run.
        let seq = unsafe { read_volatile(&slot.seq) };
        if seq & 1 == 0 && key_matches(&slot.key, words) {
            let why = take(&slot.value);
            // SAFETY: as above.
            return (unsafe { read_volatile(&slot.seq) } == seq).then_some(why);
        }
        i += 1;
    }
    None
}

/// A 2-byte field of a binding, read once (volatile: see `take_channel_route`).
#[inline(always)]
fn read16(field: &u16) -> u16 {
    // SAFETY: a reference to a u16 field.
    unsafe { read_volatile(field) }
}

/// Copies a 16-byte address out of a binding word by word (volatile loads and stores: no
/// `memcpy` call, and no load moved past the slot's second sequence read).
#[inline(always)]
fn copy_ip(to: &mut [u8; 16], from: &[u8; 16]) {
    let from = from.as_ptr() as *const u16;
    let to = to.as_mut_ptr() as *mut u16;
    let mut i = 0;
    while i < 8 {
        // SAFETY: `i < 8` keeps both accesses inside the arrays; every address sits at an even
        // offset of a map value or of the 2-byte aligned `Rewrite` (see `word`).
        unsafe { write_volatile(to.add(i), read_volatile(from.add(i))) };
        i += 1;
    }
}

/// UDP from a peer to `relay:allocation-port`.
#[inline(always)]
fn allocation_path<const IN_V6: bool>(
    ctx: &XdpContext,
    config: &RelayConfig,
    dgram: &Datagram,
    rewrite: &mut Rewrite,
) -> u32 {
    if dgram.src_port == ports::DNS {
        return reason::PASS_DNS_REPLY;
    }
    let data_len = dgram.udp_len - UDP_HDR_LEN as u16;
    if data_len > MAX_DATA_LEN {
        return reason::PASS_MALFORMED;
    }
    let mut key = MaybeUninit::<AllocationPeer>::uninit();
    let key_ptr = key.as_mut_ptr();
    // SAFETY (the three blocks below): as in `channel_path`.
    store_u16(
        unsafe { addr_of_mut!((*key_ptr).allocation_port) },
        dgram.dst_port.to_be(),
    );
    store_u16(
        unsafe { addr_of_mut!((*key_ptr).peer_port) },
        dgram.src_port.to_be(),
    );
    if !read_src_ip::<IN_V6>(ctx, unsafe { addr_of_mut!((*key_ptr).peer_ip) }) {
        return reason::PASS_MALFORMED;
    }
    // SAFETY: every field was written above.
    let key = unsafe { key.assume_init_ref() };
    if is_relay_ip(config, &key.peer_ip) {
        return reason::PASS_FROM_RELAY_ADDRESS;
    }
    rewrite.src_port = ports::TURN;
    rewrite.old_cd = false;
    rewrite.new_cd = true;
    rewrite.data_len = data_len;
    rewrite.pad = 0;
    rewrite.pad_sum = 0;
    rewrite.base_reason = reason::TX_UDP_TO_CHAN_BASE;
    let words = key.words();
    if let Some(bucket) = ALLOCATION_BUCKETS.get(bucket_index(&words))
        && let Some(why) = read_bucket(bucket, &words, |client| take_client(client, rewrite))
    {
        return why;
    }
    let Some(client) = ALLOCATIONS.get_ptr(key) else {
        return reason::PASS_NO_PEER_BINDING;
    };
    // SAFETY: a successful lookup returns a pointer to a live value of the map's value type,
    // valid until the program returns.
    take_client(unsafe { &*client }, rewrite)
}

/// The destination of a peer's datagram: the client and channel bound to the peer (volatile
/// reads, as in `take_channel_route`).
#[inline(always)]
fn take_client(client: &ClientChannel, rewrite: &mut Rewrite) -> u32 {
    copy_ip(&mut rewrite.dst_ip, &client.client_ip);
    rewrite.dst_port = u16::from_be(read16(&client.client_port));
    rewrite.new_channel = u16::from_be(read16(&client.channel));
    REWRITE
}

/// Rewrites the frame in place: new Ethernet, IP and UDP headers (and ChannelData header).
#[inline(always)]
fn rewrite_datagram(
    ctx: &XdpContext,
    config: &RelayConfig,
    dgram: &Datagram,
    rewrite: &Rewrite,
) -> u32 {
    let dst_ip = &rewrite.dst_ip;
    let out_v6 = !is_v4_mapped(dst_ip);
    let has_family = if out_v6 {
        config.flags & CONFIG_HAS_IPV6
    } else {
        config.flags & CONFIG_HAS_IPV4
    };
    if has_family == 0 {
        return reason::PASS_NO_RELAY_ADDRESS_FOR_FAMILY;
    }
    let in_v6 = rewrite.in_v6;
    // Only IPv4 input can have a zero (absent) checksum; IPv6 requires one.
    let no_checksum = !in_v6 && dgram.checksum == 0;
    if no_checksum && out_v6 {
        return reason::PASS_ZERO_CHECKSUM_TO_IPV6;
    }

    let new_cd_len = if rewrite.new_cd { CD_HDR_LEN } else { 0 };
    let old_cd_len = if rewrite.old_cd { CD_HDR_LEN } else { 0 };
    let new_udp_len = (UDP_HDR_LEN + new_cd_len) as u16 + rewrite.data_len;

    // RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m') over every changed word: the pseudo-header
    // addresses and length, the ports and length in the UDP header, the ChannelData header
    // removed or added, and the padding removed. The data keeps its word alignment (the
    // ChannelData header is 4 bytes).
    let mut checksum = 0u16;
    if !no_checksum {
        let src_sum = if out_v6 {
            sum_ip(&config.ipv6)
        } else {
            let (hi, lo) = relay_ipv4_words(config);
            hi as u32 + lo as u32
        };
        let mut acc = neg(dgram.checksum);
        // `addr_sum` holds at most 16 words, so this subtraction cannot underflow.
        acc += 16 * 0xFFFF - dgram.addr_sum;
        acc += src_sum + sum_ip(dst_ip);
        acc += neg(dgram.src_port) + neg(dgram.dst_port);
        acc += rewrite.src_port as u32 + rewrite.dst_port as u32;
        // The length is in the pseudo-header and in the UDP header.
        acc += 2 * neg(dgram.udp_len) + 2 * new_udp_len as u32;
        if rewrite.old_cd {
            acc += neg(rewrite.old_channel) + neg(rewrite.data_len);
            acc += neg(fold(rewrite.pad_sum));
        }
        if rewrite.new_cd {
            acc += rewrite.new_channel as u32 + rewrite.data_len as u32;
        }
        checksum = !fold(acc);
        if checksum == 0 {
            checksum = 0xFFFF;
        }
    }

    // Everything to keep from the old headers is read before `bpf_xdp_adjust_head`, which
    // invalidates every packet pointer.
    let mut macs = [0u16; 6];
    let mut i = 0;
    while i < 6 {
        let Some(mac) = be16_at(ctx, 2 * i) else {
            return reason::PASS_MALFORMED;
        };
        macs[i] = mac;
        i += 1;
    }

    let old_headers = l4_offset(in_v6) + UDP_HDR_LEN + old_cd_len;
    let new_headers = l4_offset(out_v6) + UDP_HDR_LEN + new_cd_len;
    let delta = old_headers as i32 - new_headers as i32;
    // SAFETY: the helper takes the program's own context; it only moves `data`.
    if delta != 0 && unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) } != 0 {
        return reason::PASS_ADJUST_HEAD_FAILED;
    }

    let written = if out_v6 {
        write_headers::<true>(
            ctx,
            config,
            &macs,
            dgram.tos,
            rewrite,
            new_udp_len,
            checksum,
        )
    } else {
        write_headers::<false>(
            ctx,
            config,
            &macs,
            dgram.tos,
            rewrite,
            new_udp_len,
            checksum,
        )
    };
    if !written {
        return reason::DROP_REWRITE_FAILED;
    }

    // Remove the padding and any Ethernet trailer, which sit at the end of the frame.
    if rewrite.pad != 0 || dgram.trailing {
        let target = (new_headers + rewrite.data_len as usize) as i64;
        // SAFETY: as above.
        let current = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as i64;
        // SAFETY: as above; the delta only shrinks the frame to the new datagram's end.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, (target - current) as i32) } != 0 {
            return reason::DROP_REWRITE_FAILED;
        }
    }

    rewrite.base_reason + if in_v6 { 2 } else { 0 } + if out_v6 { 1 } else { 0 }
}

/// Writes a big-endian u16 at `offset` from `start`.
///
/// # Safety
///
/// `start` is the frame's `data`, checked against `data_end` (by pointer comparison, visible
/// to the verifier) to hold at least `offset + 2` bytes; `offset` is even (module docs).
#[inline(always)]
unsafe fn put16(start: usize, offset: usize, value: u16) {
    // SAFETY: the caller's contract.
    unsafe { *((start + offset) as *mut u16) = value.to_be() };
}

/// Writes Ethernet, IP (`OUT_V6`), UDP and, if `rewrite.new_cd`, ChannelData headers at the
/// start of the (adjusted) frame. `false` if the frame is too short, which cannot happen after
/// a successful adjustment. One pointer check covers each block of constant-offset writes.
#[inline(always)]
fn write_headers<const OUT_V6: bool>(
    ctx: &XdpContext,
    config: &RelayConfig,
    macs: &[u16; 6],
    tos: u8,
    rewrite: &Rewrite,
    udp_len: u16,
    checksum: u16,
) -> bool {
    let dst_ip = &rewrite.dst_ip;
    let l3 = ETH_HDR_LEN;
    let l4 = l4_offset(OUT_V6);
    let start = ctx.data();
    if start + l4 + UDP_HDR_LEN > ctx.data_end() {
        return false;
    }
    // SAFETY: every write below is at an even offset below `l4 + UDP_HDR_LEN`, checked above.
    unsafe {
        // Ethernet: back to where the frame came from.
        put16(start, 0, macs[3]);
        put16(start, 2, macs[4]);
        put16(start, 4, macs[5]);
        put16(start, 6, macs[0]);
        put16(start, 8, macs[1]);
        put16(start, 10, macs[2]);
        if OUT_V6 {
            put16(start, 12, ETHERTYPE_IPV6);
            // Version 6, the traffic class carried over, flow label 0.
            put16(start, l3, 0x6000 | ((tos as u16) << 4));
            put16(start, l3 + 2, 0);
            put16(start, l3 + 4, udp_len);
            put16(start, l3 + 6, ((IPPROTO_UDP as u16) << 8) | TTL as u16);
            let mut i = 0;
            while i < 8 {
                put16(start, l3 + 8 + 2 * i, word(&config.ipv6, i));
                put16(start, l3 + 24 + 2 * i, word(dst_ip, i));
                i += 1;
            }
        } else {
            put16(start, 12, ETHERTYPE_IPV4);
            let total_len = IPV4_HDR_LEN as u16 + udp_len;
            let first = 0x4500 | tos as u16;
            // Identification 0 with don't-fragment: the datagram is never fragmented on its way.
            let flags = 0x4000u16;
            let ttl_protocol = ((TTL as u16) << 8) | IPPROTO_UDP as u16;
            let (src_hi, src_lo) = relay_ipv4_words(config);
            let dst_hi = word(dst_ip, 6);
            let dst_lo = word(dst_ip, 7);
            let header_sum = first as u32
                + total_len as u32
                + flags as u32
                + ttl_protocol as u32
                + src_hi as u32
                + src_lo as u32
                + dst_hi as u32
                + dst_lo as u32;
            put16(start, l3, first);
            put16(start, l3 + 2, total_len);
            put16(start, l3 + 4, 0);
            put16(start, l3 + 6, flags);
            put16(start, l3 + 8, ttl_protocol);
            put16(start, l3 + 10, !fold(header_sum));
            put16(start, l3 + 12, src_hi);
            put16(start, l3 + 14, src_lo);
            put16(start, l3 + 16, dst_hi);
            put16(start, l3 + 18, dst_lo);
        }
        put16(start, l4, rewrite.src_port);
        put16(start, l4 + 2, rewrite.dst_port);
        put16(start, l4 + 4, udp_len);
        put16(start, l4 + 6, checksum);
    }
    if rewrite.new_cd {
        let start = ctx.data();
        if start + l4 + UDP_HDR_LEN + CD_HDR_LEN > ctx.data_end() {
            return false;
        }
        // SAFETY: both writes are below `l4 + 12`, checked just above.
        unsafe {
            put16(start, l4 + 8, rewrite.new_channel);
            put16(start, l4 + 10, rewrite.data_len);
        }
    }
    true
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
