//! Internet checksums verified from the RFCs alone (RFC 1071 sums over RFC 791, 768, 793, 792,
//! 8200 and 4443 layouts), independently of the gateway's incremental updates, and recomputed
//! for inputs the targets want valid.

/// One's-complement sum of `data` (odd length padded with a zero byte), not folded.
fn sum(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        acc += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xFFFF {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    acc as u16
}

/// Where a packet's transport checksum lives and what it covers.
struct Layout {
    /// IPv4 header length, or 40 for IPv6 (no extension headers: the gateway refuses them).
    header_len: usize,
    /// Bytes of the IP payload present (from the IP length field, capped at what is there).
    payload_end: usize,
    protocol: u8,
    v4: bool,
}

fn layout(packet: &[u8]) -> Option<Layout> {
    match packet.first()? >> 4 {
        4 => {
            let header_len = usize::from(packet.first()? & 0x0F) * 4;
            let total = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
            if header_len < 20 || total < header_len || total > packet.len() {
                return None;
            }
            // A fragment's transport header is not checkable on its own.
            let fragment = u16::from_be_bytes([packet[6], packet[7]]) & 0x3FFF;
            (fragment == 0).then_some(Layout {
                header_len,
                payload_end: total,
                protocol: packet[9],
                v4: true,
            })
        }
        6 if packet.len() >= 40 => {
            let payload = usize::from(u16::from_be_bytes([*packet.get(4)?, *packet.get(5)?]));
            let end = 40 + payload;
            (end <= packet.len()).then_some(Layout {
                header_len: 40,
                payload_end: end,
                protocol: packet[6],
                v4: false,
            })
        }
        _ => None,
    }
}

/// Offset of the transport checksum within the segment, for the protocols the gateway forwards.
fn checksum_offset(protocol: u8, v4: bool) -> Option<usize> {
    match (protocol, v4) {
        (6, _) => Some(16),
        (17, _) => Some(6),
        (1, true) | (58, false) => Some(2),
        _ => None,
    }
}

fn pseudo_header(packet: &[u8], l: &Layout) -> u64 {
    let len = (l.payload_end - l.header_len) as u64;
    if l.v4 {
        if l.protocol == 1 {
            return 0;
        }
        sum(0, &packet[12..20]) + u64::from(l.protocol) + len
    } else {
        sum(0, &packet[8..40]) + u64::from(l.protocol) + len
    }
}

/// Whether every checksum of `packet` that can be checked verifies: the IPv4 header's, and the
/// TCP, UDP, ICMP or ICMPv6 checksum (a zero UDP checksum over IPv4 means "none"). `None` if
/// the packet is not one whose checksums this knows how to read.
pub fn verifies(packet: &[u8]) -> Option<bool> {
    let l = layout(packet)?;
    let offset = checksum_offset(l.protocol, l.v4)?;
    let segment = &packet[l.header_len..l.payload_end];
    if segment.len() < offset + 2 {
        return None;
    }
    let header_ok = !l.v4 || fold(sum(0, &packet[..l.header_len])) == 0xFFFF;
    let udp_none = l.v4 && l.protocol == 17 && segment[6..8] == [0, 0];
    let transport_ok = udp_none || fold(sum(pseudo_header(packet, &l), segment)) == 0xFFFF;
    Some(header_ok && transport_ok)
}

/// Recomputes the IPv4 header checksum and the transport checksum in place, where
/// [`verifies`] can read them; returns whether it did.
pub fn fix(packet: &mut [u8]) -> bool {
    let Some(l) = layout(packet) else {
        return false;
    };
    let Some(offset) = checksum_offset(l.protocol, l.v4) else {
        return false;
    };
    if l.payload_end - l.header_len < offset + 2 {
        return false;
    }
    if l.v4 {
        packet[10..12].fill(0);
        let check = !fold(sum(0, &packet[..l.header_len]));
        packet[10..12].copy_from_slice(&check.to_be_bytes());
    }
    let at = l.header_len + offset;
    packet[at..at + 2].fill(0);
    let pseudo = pseudo_header(packet, &l);
    let mut check = !fold(sum(pseudo, &packet[l.header_len..l.payload_end]));
    if check == 0 && l.protocol == 17 {
        check = 0xFFFF;
    }
    packet[at..at + 2].copy_from_slice(&check.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_etherparse_on_built_packets() {
        let mut udp = Vec::new();
        etherparse::PacketBuilder::ipv4([100, 64, 0, 2], [198, 51, 100, 10], 64)
            .udp(40000, 53)
            .write(&mut udp, b"hello")
            .expect("build");
        assert_eq!(verifies(&udp), Some(true));
        let mut tcp = Vec::new();
        etherparse::PacketBuilder::ipv6([0xfd; 16], [0x20; 16], 64)
            .tcp(1, 2, 3, 4)
            .syn()
            .write(&mut tcp, b"x")
            .expect("build");
        assert_eq!(verifies(&tcp), Some(true));
        tcp[45] ^= 1;
        assert_eq!(verifies(&tcp), Some(false));
        assert!(fix(&mut tcp));
        assert_eq!(verifies(&tcp), Some(true));
    }
}
