//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624), for the header
//! rewrites of DNS NAT and for the ICMP messages the gateway builds.

use std::net::IpAddr;

/// Adds `data` as big-endian 16-bit words to a running one's-complement sum (an odd last byte
/// is padded with zero). The result is congruent to the plain sum modulo 0xFFFF, zero only if
/// the plain sum is zero, and below 2^17, so callers can keep adding small values to it.
pub(crate) fn add(sum: u32, data: &[u8]) -> u32 {
    // Big-endian 32-bit words: a word `a * 2^16 + b` is congruent to `a + b` modulo 0xFFFF, so
    // summing them is summing the 16-bit words, with half as many additions; the 64-bit
    // accumulator cannot overflow for any slice that fits in memory.
    let mut acc = u64::from(sum);
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut pairs = rest.chunks_exact(2);
    for w in &mut pairs {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    fold(acc)
}

/// Folds a 64-bit one's-complement sum below 2^17. 0xFFFF divides 2^32 - 1, so each fold keeps
/// the value modulo 0xFFFF, and a non-zero value stays non-zero.
fn fold(acc: u64) -> u32 {
    let acc = (acc & 0xFFFF_FFFF) + (acc >> 32);
    let acc = (acc & 0xFFFF_FFFF) + (acc >> 32);
    let acc = (acc & 0xFFFF) + (acc >> 16);
    acc as u32
}

/// Folds a running sum into the final checksum value (already complemented).
pub(crate) fn finish(sum: u32) -> u16 {
    // Two folds reach 16 bits for any u32: the first gives at most 0x1FFFE, the second at
    // most 0xFFFF.
    let sum = (sum & 0xFFFF) + (sum >> 16);
    let sum = (sum & 0xFFFF) + (sum >> 16);
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

/// The one's-complement change of a field going from `old` to `new` (same even length): the
/// `~m + m'` of RFC 1624 equation 3, summed over the field's words, for [`apply`].
pub(crate) fn delta(old: &[u8], new: &[u8]) -> u32 {
    let mut acc = 0u64;
    let mut words = old.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(!u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    for w in words.remainder().chunks_exact(2) {
        acc += u64::from(!u16::from_be_bytes([w[0], w[1]]));
    }
    add(fold(acc), new)
}

/// [`delta`] for a 4-byte field (an IPv4 address).
pub(crate) fn delta4(old: [u8; 4], new: [u8; 4]) -> u32 {
    fold(u64::from(!u32::from_be_bytes(old)) + u64::from(u32::from_be_bytes(new)))
}

/// Applies a [`delta`] to checksum `check` (RFC 1624 equation 3: `HC' = ~(~HC + ~m + m')`).
pub(crate) fn apply(check: u16, delta: u32) -> u16 {
    finish(u32::from(!check) + delta)
}

/// Updates checksum `check` for a field that changed from `old` to `new` (same even length),
/// by RFC 1624 equation 3: `HC' = ~(~HC + ~m + m')`.
#[cfg(test)]
pub(crate) fn update(check: u16, old: &[u8], new: &[u8]) -> u16 {
    apply(check, delta(old, new))
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
        assert_eq!(apply(c, delta4(old, new)), of(&data));
    }

    /// The plain RFC 1071 loop, 16 bits at a time, to check the 32-bit-word version against.
    fn reference(data: &[u8]) -> u16 {
        let mut sum = 0u64;
        for w in data.chunks(2) {
            sum += u64::from(w[0]) << 8 | u64::from(*w.get(1).unwrap_or(&0));
        }
        while sum > 0xFFFF {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn word_sums_match_the_plain_loop() {
        // Every length 0..=67 (all remainders), all-zero, all-0xFF and mixed bytes.
        for len in 0..=67usize {
            for fill in [0x00u8, 0xFF, 0x5A] {
                let data: Vec<u8> = (0..len)
                    .map(|i| {
                        if fill == 0x5A {
                            (i * 37 + 11) as u8
                        } else {
                            fill
                        }
                    })
                    .collect();
                assert_eq!(of(&data), reference(&data), "len {len} fill {fill:#x}");
                assert_eq!(
                    finish(add(0xFFFF_0000, &data)),
                    finish(add(0xFFFF, &data)),
                    "len {len}"
                );
            }
        }
    }

    #[test]
    fn incremental_update_matches_full_recompute_for_v6_sized_fields() {
        let mut data: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(91)).collect();
        let c = of(&data);
        let old: Vec<u8> = data[24..40].to_vec();
        let new: Vec<u8> = (0..16u8).map(|i| 0xF0 ^ i).collect();
        data[24..40].copy_from_slice(&new);
        assert_eq!(update(c, &old, &new), of(&data));
    }

    #[test]
    fn finish_folds_any_sum() {
        for sum in [
            0,
            1,
            0xFFFF,
            0x1_0000,
            0x1_FFFE,
            0xFFFF_FFFF,
            0x8000_0000,
            0x1234_5678,
        ] {
            let mut plain = sum;
            while plain > 0xFFFF {
                plain = (plain & 0xFFFF) + (plain >> 16);
            }
            assert_eq!(finish(sum), !(plain as u16), "{sum:#x}");
        }
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(of(&[0x12, 0x34, 0x56]), of(&[0x12, 0x34, 0x56, 0x00]));
    }
}
