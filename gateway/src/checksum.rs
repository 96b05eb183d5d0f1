//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624), for the header
//! rewrites of DNS NAT and for the ICMP messages the gateway builds.

use std::net::IpAddr;

/// Adds `data` as big-endian 16-bit words to a running one's-complement sum (an odd last byte
/// is padded with zero).
pub(crate) fn add(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for w in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([w[0], w[1]])));
        // Fold now and then so the sum never overflows, whatever the length.
        if sum & 0x8000_0000 != 0 {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    sum
}

/// Folds a running sum into the final checksum value (already complemented).
pub(crate) fn finish(mut sum: u32) -> u16 {
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// The checksum of `data` alone.
pub(crate) fn of(data: &[u8]) -> u16 {
    finish(add(0, data))
}

/// The pseudo-header sum for TCP, UDP and ICMPv6 (RFC 793, RFC 768, RFC 8200 §8.1).
pub(crate) fn pseudo_header(src: IpAddr, dst: IpAddr, protocol: u8, len: usize) -> u32 {
    let mut sum = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => add(add(0, &s.octets()), &d.octets()),
        (s, d) => add(add(0, &ip_bytes(s)), &ip_bytes(d)),
    };
    sum = sum.wrapping_add(u32::from(protocol));
    sum = sum.wrapping_add((len as u32) >> 16);
    sum.wrapping_add((len as u32) & 0xFFFF)
}

fn ip_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Updates checksum `check` for a field that changed from `old` to `new` (same even length),
/// by RFC 1624 equation 3: `HC' = ~(~HC + ~m + m')`.
pub(crate) fn update(check: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut sum = u32::from(!check);
    for w in old.chunks_exact(2) {
        sum = sum.wrapping_add(u32::from(!u16::from_be_bytes([w[0], w[1]])));
    }
    sum = add(sum, new);
    finish(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2, checksum 220d.
        assert_eq!(
            of(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
    }

    #[test]
    fn incremental_update_matches_full_recompute() {
        let mut data = [
            0x45u8, 0, 0, 40, 1, 2, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let c = of(&data);
        let old = [10u8, 0, 0, 2];
        let new = [198u8, 51, 100, 7];
        data[16..20].copy_from_slice(&new);
        assert_eq!(update(c, &old, &new), of(&data));
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(of(&[0x12, 0x34, 0x56]), of(&[0x12, 0x34, 0x56, 0x00]));
    }
}
