//! Every byte of an inner packet, checked from the RFCs: header fields that must agree with
//! each other and with the packet's length, and every checksum recomputed from scratch (RFC
//! 1071 sums over the IPv4 header, and over the UDP, TCP, ICMP or ICMPv6 message with its
//! pseudo-header). It shares no code with the packet parser the systems under test use, so a
//! header the gateway rewrote wrongly (a NAT that forgets a checksum, a length off by one) is
//! caught at the host that receives it, whatever the comparison with the model looks at.

use std::net::IpAddr;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// Checks a whole IPv4 or IPv6 packet; the error says which field is wrong and how.
pub fn check_ip_packet(bytes: &[u8]) -> Result<(), String> {
    let version = bytes.first().ok_or("an empty packet")? >> 4;
    let (src, dst, protocol, transport) = match version {
        4 => check_ipv4_header(bytes)?,
        6 => check_ipv6_header(bytes)?,
        other => return Err(format!("IP version {other}")),
    };
    match protocol {
        UDP => check_udp(src, dst, transport),
        TCP => check_tcp(src, dst, transport),
        ICMP if src.is_ipv4() => check_sum("ICMP", transport, 0),
        ICMPV6 if src.is_ipv6() => check_sum(
            "ICMPv6",
            transport,
            pseudo_header_sum(src, dst, ICMPV6, transport.len()),
        ),
        other => Err(format!(
            "transport protocol {other} in an IPv{version} packet"
        )),
    }
}

/// Checks a datagram between the hosts of the VPN (clients, gateways, relays) by its first
/// two bits: a STUN message (RFC 8489 §5: length field = the rest, a multiple of 4, the magic
/// cookie), ChannelData (RFC 8656 §12.4: a channel number, a length that fits, at most 3
/// bytes of padding), or a tunnel frame (its type byte and at least a header and a MAC).
pub fn check_datagram(payload: &[u8]) -> Result<(), String> {
    let first = *payload.first().ok_or("an empty datagram")?;
    match first >> 6 {
        0b00 => {
            if payload.len() < 20 {
                return Err(format!("a STUN message of {} bytes", payload.len()));
            }
            let length = usize::from(u16::from_be_bytes([payload[2], payload[3]]));
            if length != payload.len() - 20 || length % 4 != 0 {
                return Err(format!(
                    "STUN message length {length} in a {}-byte datagram",
                    payload.len()
                ));
            }
            if payload[4..8] != [0x21, 0x12, 0xa4, 0x42] {
                return Err("a STUN message without the magic cookie".to_owned());
            }
            Ok(())
        }
        0b01 => {
            if payload.len() < 4 {
                return Err(format!("ChannelData of {} bytes", payload.len()));
            }
            let length = usize::from(u16::from_be_bytes([payload[2], payload[3]]));
            let room = payload.len() - 4;
            if length > room || room - length > 3 {
                return Err(format!(
                    "ChannelData length {length} in a {}-byte datagram",
                    payload.len()
                ));
            }
            Ok(())
        }
        _ if first == TUNNEL_FRAME_TYPE => {
            if payload.len() < TUNNEL_MIN_LEN {
                return Err(format!("a tunnel frame of {} bytes", payload.len()));
            }
            Ok(())
        }
        _ => Err(format!(
            "a datagram starting {first:#04x}: neither STUN, ChannelData nor a tunnel frame"
        )),
    }
}

use proto::tunnel::{FRAME_TYPE as TUNNEL_FRAME_TYPE, MIN_FRAME_LEN as TUNNEL_MIN_LEN};

type Header<'a> = (IpAddr, IpAddr, u8, &'a [u8]);

fn check_ipv4_header(bytes: &[u8]) -> Result<Header<'_>, String> {
    if bytes.len() < 20 {
        return Err(format!("an IPv4 packet of {} bytes", bytes.len()));
    }
    let header_len = usize::from(bytes[0] & 0x0f) * 4;
    if header_len < 20 || header_len > bytes.len() {
        return Err(format!(
            "IPv4 header length {header_len} in {} bytes",
            bytes.len()
        ));
    }
    let total = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    if total != bytes.len() {
        return Err(format!(
            "IPv4 total length {total}, packet {} bytes",
            bytes.len()
        ));
    }
    let fragment = u16::from_be_bytes([bytes[6], bytes[7]]);
    if fragment & 0x3fff != 0 {
        return Err(format!(
            "an IPv4 fragment (flags and offset {fragment:#06x})"
        ));
    }
    if bytes[8] == 0 {
        return Err("IPv4 TTL 0".to_owned());
    }
    check_sum("IPv4 header", &bytes[..header_len], 0)?;
    let src = IpAddr::from([bytes[12], bytes[13], bytes[14], bytes[15]]);
    let dst = IpAddr::from([bytes[16], bytes[17], bytes[18], bytes[19]]);
    Ok((src, dst, bytes[9], &bytes[header_len..]))
}

fn check_ipv6_header(bytes: &[u8]) -> Result<Header<'_>, String> {
    if bytes.len() < 40 {
        return Err(format!("an IPv6 packet of {} bytes", bytes.len()));
    }
    let payload = usize::from(u16::from_be_bytes([bytes[4], bytes[5]]));
    if payload + 40 != bytes.len() {
        return Err(format!(
            "IPv6 payload length {payload}, packet {} bytes",
            bytes.len()
        ));
    }
    if bytes[7] == 0 {
        return Err("IPv6 hop limit 0".to_owned());
    }
    let address = |at: usize| {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&bytes[at..at + 16]);
        IpAddr::from(octets)
    };
    Ok((address(8), address(24), bytes[6], &bytes[40..]))
}

fn check_udp(src: IpAddr, dst: IpAddr, udp: &[u8]) -> Result<(), String> {
    if udp.len() < 8 {
        return Err(format!("a UDP header in {} bytes", udp.len()));
    }
    let length = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if length != udp.len() {
        return Err(format!("UDP length {length}, datagram {} bytes", udp.len()));
    }
    let checksum = u16::from_be_bytes([udp[6], udp[7]]);
    if checksum == 0 {
        // RFC 768: none computed; RFC 8200 §8.1 forbids that over IPv6.
        return if src.is_ipv4() {
            Ok(())
        } else {
            Err("UDP checksum 0 over IPv6".to_owned())
        };
    }
    check_sum("UDP", udp, pseudo_header_sum(src, dst, UDP, udp.len()))
}

fn check_tcp(src: IpAddr, dst: IpAddr, tcp: &[u8]) -> Result<(), String> {
    if tcp.len() < 20 {
        return Err(format!("a TCP header in {} bytes", tcp.len()));
    }
    let header_len = usize::from(tcp[12] >> 4) * 4;
    if header_len < 20 || header_len > tcp.len() {
        return Err(format!(
            "TCP data offset {header_len} in {} bytes",
            tcp.len()
        ));
    }
    check_sum("TCP", tcp, pseudo_header_sum(src, dst, TCP, tcp.len()))
}

/// The one's-complement sum of the pseudo-header (RFC 768, RFC 9293 §3.1, RFC 8200 §8.1).
fn pseudo_header_sum(src: IpAddr, dst: IpAddr, protocol: u8, length: usize) -> u32 {
    let mut sum = 0u32;
    for address in [src, dst] {
        sum += match address {
            IpAddr::V4(v4) => words(&v4.octets()),
            IpAddr::V6(v6) => words(&v6.octets()),
        };
    }
    sum + u32::from(protocol) + (length as u32 & 0xffff) + (length as u32 >> 16)
}

/// The sum of big-endian 16-bit words, the last byte padded with zero.
fn words(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|pair| {
            u32::from(u16::from_be_bytes([
                pair[0],
                pair.get(1).copied().unwrap_or(0),
            ]))
        })
        .sum()
}

/// A checksummed message verifies when the folded sum over it (its checksum field included)
/// and `extra` is 0xffff.
fn check_sum(what: &str, message: &[u8], extra: u32) -> Result<(), String> {
    let mut sum = u64::from(words(message)) + u64::from(extra);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    if sum == 0xffff {
        Ok(())
    } else {
        Err(format!(
            "{what} checksum does not verify (sum {sum:#06x}, want 0xffff)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 UDP packet with its checksums right (built here by hand: the RFC 1071 example
    /// values are for raw words, this one is a whole packet).
    fn udp4() -> Vec<u8> {
        let payload = [0x42u8; 5];
        let mut packet = vec![
            0x45, 0, 0, 33, 0, 1, 0, 0, 64, UDP, 0, 0, 100, 64, 0, 2, 198, 51, 100, 10,
        ];
        let header_sum = !fold(words(&packet));
        packet[10..12].copy_from_slice(&header_sum.to_be_bytes());
        let mut udp = vec![0x9c, 0x75, 0, 53, 0, 13, 0, 0];
        udp.extend_from_slice(&payload);
        let src = IpAddr::from([100, 64, 0, 2]);
        let dst = IpAddr::from([198, 51, 100, 10]);
        let sum = !fold(words(&udp) + pseudo_header_sum(src, dst, UDP, udp.len()));
        udp[6..8].copy_from_slice(&sum.to_be_bytes());
        packet.extend_from_slice(&udp);
        packet
    }

    fn fold(mut sum: u32) -> u16 {
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn a_right_packet_passes_and_every_broken_field_is_named() {
        let good = udp4();
        assert_eq!(check_ip_packet(&good), Ok(()));
        let broken = |at: usize, value: u8| {
            let mut packet = good.clone();
            packet[at] ^= value;
            check_ip_packet(&packet).expect_err("broken")
        };
        assert!(
            broken(12, 1).contains("IPv4 header checksum"),
            "source address"
        );
        assert!(broken(3, 1).contains("IPv4 total length"), "total length");
        assert!(broken(8, 64).contains("TTL 0"), "ttl");
        assert!(broken(6, 0x20).contains("fragment"), "more fragments");
        assert!(broken(26, 1).contains("UDP checksum"), "checksum field");
        assert!(broken(30, 1).contains("UDP checksum"), "a payload byte");
        assert!(broken(25, 1).contains("UDP length"), "udp length");
        let mut no_checksum = good.clone();
        no_checksum[26..28].copy_from_slice(&[0, 0]);
        assert_eq!(check_ip_packet(&no_checksum), Ok(()));
        assert!(check_ip_packet(&[]).is_err());
        assert!(check_ip_packet(&good[..25]).is_err());
    }

    #[test]
    fn turn_datagrams_are_checked_by_their_first_bits() {
        let mut stun = vec![0x00, 0x01, 0x00, 0x04, 0x21, 0x12, 0xa4, 0x42];
        stun.extend([7u8; 12]);
        stun.extend([0u8; 4]);
        assert_eq!(check_datagram(&stun), Ok(()));
        let mut wrong_length = stun.clone();
        wrong_length[3] = 8;
        assert!(
            check_datagram(&wrong_length)
                .expect_err("broken")
                .contains("STUN message length")
        );
        let mut no_cookie = stun.clone();
        no_cookie[4] = 0;
        assert!(check_datagram(&no_cookie).is_err());
        let channel_data = [0x40, 0x00, 0x00, 0x02, 9, 9, 0, 0];
        assert_eq!(check_datagram(&channel_data), Ok(()));
        assert!(
            check_datagram(&channel_data[..5]).is_err(),
            "length past the end"
        );
        let mut too_much_padding = channel_data.to_vec();
        too_much_padding.extend([0, 0]);
        assert!(check_datagram(&too_much_padding).is_err());
        let mut frame = vec![0xF1];
        frame.extend([0u8; 31]);
        assert_eq!(check_datagram(&frame), Ok(()));
        assert!(check_datagram(&frame[..31]).is_err());
        assert!(check_datagram(&[0xC0, 0, 0, 0]).is_err());
    }

    #[test]
    fn packets_the_parser_builds_pass() {
        let builder = etherparse::PacketBuilder::ipv6([0xfd; 16], [0x20; 16], 64)
            .tcp(30001, 443, 1000, 64000);
        let mut packet = Vec::new();
        builder.write(&mut packet, &[1, 2, 3]).expect("writes");
        assert_eq!(check_ip_packet(&packet), Ok(()));
        packet[45] ^= 0x10;
        assert!(
            check_ip_packet(&packet)
                .expect_err("broken")
                .contains("TCP checksum")
        );
    }
}
