//! XDP entry point and packet parsing.
//!
//! Written for the verifier of the kernel it runs on (see TOOLCHAIN notes in the README): every
//! packet access is preceded by its own bounds check against `data_end`, helpers are
//! `#[inline(always)]`, and results are plain integers (a verdict reason), never enums with data.

use aya_ebpf::{
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};
use relay_xdp_common::{action, reason};

/// Runs per verdict reason, summed over CPUs by the loader.
#[map(name = "REASON_COUNTERS")]
static REASON_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(reason::COUNT, 0);

const ETH_HDR_LEN: usize = 14;
const IPV4_HDR_LEN: usize = 20;
const IPV6_HDR_LEN: usize = 40;
const UDP_HDR_LEN: usize = 8;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;

const IPPROTO_UDP: u8 = 17;

#[xdp]
pub fn relay_xdp(ctx: XdpContext) -> u32 {
    let why = classify(&ctx);
    count(why);
    verdict_for(why)
}

/// Every reason defined so far hands the frame to the kernel stack.
#[inline(always)]
fn verdict_for(_why: u32) -> u32 {
    action::PASS
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

/// Reads a big-endian u16 at `offset`, or `None` past the end of the frame.
#[inline(always)]
fn be16_at(ctx: &XdpContext, offset: usize) -> Option<u16> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + 2 > end {
        return None;
    }
    // SAFETY: the check above keeps both byte reads inside [data, data_end).
    let (hi, lo) = unsafe {
        (
            *((start + offset) as *const u8),
            *((start + offset + 1) as *const u8),
        )
    };
    Some(u16::from_be_bytes([hi, lo]))
}

#[inline(always)]
fn classify(ctx: &XdpContext) -> u32 {
    let Some(ethertype) = be16_at(ctx, 12) else {
        return reason::PASS_MALFORMED;
    };
    match ethertype {
        ETHERTYPE_IPV4 => classify_ipv4(ctx),
        ETHERTYPE_IPV6 => classify_ipv6(ctx),
        _ => reason::PASS_NOT_IP,
    }
}

/// Whether the frame holds at least `len` bytes. Written as a pointer comparison against
/// `data_end`, the only form from which the verifier learns a packet range: a check on the
/// scalar `data_end - data` would let LLVM drop later pointer checks that the verifier needs.
#[inline(always)]
fn has(ctx: &XdpContext, len: usize) -> bool {
    ctx.data() + len <= ctx.data_end()
}

#[inline(always)]
fn classify_ipv4(ctx: &XdpContext) -> u32 {
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
    classify_udp(ctx, l3 + IPV4_HDR_LEN, total_len - IPV4_HDR_LEN)
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
fn classify_ipv6(ctx: &XdpContext) -> u32 {
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
    classify_udp(ctx, l3 + IPV6_HDR_LEN, payload_len)
}

/// `l4` is the offset of the UDP header, `ip_payload_len` what the IP header says follows it.
#[inline(always)]
fn classify_udp(ctx: &XdpContext, l4: usize, ip_payload_len: usize) -> u32 {
    if !has(ctx, l4 + UDP_HDR_LEN) {
        return reason::PASS_MALFORMED;
    }
    let Some(udp_len) = be16_at(ctx, l4 + 4) else {
        return reason::PASS_MALFORMED;
    };
    let udp_len = udp_len as usize;
    if udp_len < UDP_HDR_LEN || udp_len > ip_payload_len {
        return reason::PASS_MALFORMED;
    }
    reason::PASS_UDP_NOT_OWNED
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
