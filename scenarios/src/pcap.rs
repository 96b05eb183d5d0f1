//! A run's datagrams as a pcap file, for Wireshark or tshark: one packet per datagram a host
//! sent (`Direction::Sent` hops; a datagram that crosses a relay is two packets, one per hop),
//! stamped with its sim time from the epoch 2026-01-01T00:00:00Z, as Ethernet + IPv4 or IPv6 +
//! UDP with correct lengths and checksums (built with etherparse). Port 3478 decodes as STUN
//! and TURN ChannelData, port 53 as DNS; tunnel frames show as UDP data.
//!
//! Hosts have no MAC addresses in the simulation; each IP address gets a locally administered
//! one made from it (`0a:04:` + the IPv4 address, `0a:06:` + the last four bytes of the IPv6
//! address), so a host keeps one MAC per address across the capture.
//!
//! The file format is written with the `pcap-file` crate (the classic libpcap format: global
//! header, then a record header and the frame per packet, microsecond timestamps).

use std::{
    fs::File,
    io::{BufWriter, Write},
    net::IpAddr,
    path::Path,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use scenario_format::timing::ORIGIN_UNIX_SECS;
use sim::{Direction, Hop, Outcome};

/// Ethernet frames up to this size are captured whole (the largest UDP datagram fits).
const SNAPLEN: u32 = 65_535 + 14 + 40;

/// The locally administered MAC address standing for `ip`.
pub fn mac(ip: IpAddr) -> [u8; 6] {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            [0x0a, 0x04, a, b, c, d]
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            [0x0a, 0x06, o[12], o[13], o[14], o[15]]
        }
    }
}

/// The time of a hop as a pcap timestamp: since the Unix epoch.
pub fn timestamp(at_ms: u64) -> Duration {
    Duration::from_secs(ORIGIN_UNIX_SECS) + Duration::from_millis(at_ms)
}

/// A hop's datagram as an Ethernet frame (Ethernet II, IPv4 or IPv6 with TTL 64, UDP).
pub fn frame(hop: &Hop) -> Result<Vec<u8>> {
    let ethernet = PacketBuilder::ethernet2(mac(hop.src.ip()), mac(hop.dst.ip()));
    let ip = match (hop.src.ip(), hop.dst.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => ethernet.ipv4(src.octets(), dst.octets(), 64),
        (IpAddr::V6(src), IpAddr::V6(dst)) => ethernet.ipv6(src.octets(), dst.octets(), 64),
        _ => bail!(
            "{} sent {} -> {}: the addresses are of two families",
            hop.host,
            hop.src,
            hop.dst
        ),
    };
    let udp = ip.udp(hop.src.port(), hop.dst.port());
    let mut out = Vec::with_capacity(udp.size(hop.payload.len()));
    udp.write(&mut out, &hop.payload).with_context(|| {
        format!(
            "framing {} -> {} ({} bytes)",
            hop.src,
            hop.dst,
            hop.payload.len()
        )
    })?;
    Ok(out)
}

/// Writes every datagram the hosts of `outcome` sent as a pcap stream; returns how many.
pub fn write<W: Write>(outcome: &Outcome, out: W) -> Result<usize> {
    let header = PcapHeader {
        snaplen: SNAPLEN,
        ..PcapHeader::default()
    };
    let mut writer = PcapWriter::with_header(out, header).context("writing the pcap header")?;
    let mut count = 0;
    for hop in outcome
        .hops
        .iter()
        .filter(|hop| hop.direction == Direction::Sent)
    {
        let frame = frame(hop)?;
        let len = u32::try_from(frame.len()).context("a frame longer than 4 GiB")?;
        writer
            .write_packet(&PcapPacket::new(timestamp(hop.at_ms), len, &frame))
            .context("writing a pcap record")?;
        count += 1;
    }
    writer.into_writer().flush().context("flushing the pcap")?;
    Ok(count)
}

/// Writes the pcap of `outcome` to `path`; returns how many packets it holds.
pub fn write_file(path: &Path, outcome: &Outcome) -> Result<usize> {
    let file = File::create(path)
        .with_context(|| format!("creating {}", crate::artifacts::shown(path).display()))?;
    write(outcome, BufWriter::new(file))
        .with_context(|| format!("writing {}", crate::artifacts::shown(path).display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    use pcap_file::pcap::PcapReader;

    fn hop(at_ms: u64, src: &str, dst: &str, payload: &[u8]) -> Hop {
        Hop {
            at_ms,
            host: "h".to_owned(),
            direction: Direction::Sent,
            src: src.parse().expect("an address"),
            dst: dst.parse().expect("an address"),
            payload: payload.to_vec(),
            xdp: None,
        }
    }

    #[test]
    fn frames_read_back_with_valid_checksums() {
        for hop in [
            hop(
                2010,
                "203.0.113.100:51820",
                "203.0.113.1:3478",
                &[0x40, 0, 0, 3, 1, 2, 3],
            ),
            hop(5, "[2001:db8::1]:3478", "[2001:db8::10]:51820", &[9; 100]),
        ] {
            let frame = frame(&hop).expect("a frame");
            let sliced = SlicedPacket::from_ethernet(&frame).expect("parses");
            let Some(TransportSlice::Udp(udp)) = &sliced.transport else {
                panic!("not UDP: {sliced:?}");
            };
            assert_eq!(udp.payload(), hop.payload);
            assert_eq!(usize::from(udp.length()), 8 + hop.payload.len());
            let expected = match &sliced.net {
                Some(NetSlice::Ipv4(ip)) => udp
                    .to_header()
                    .calc_checksum_ipv4(&ip.header().to_header(), udp.payload())
                    .expect("a checksum"),
                Some(NetSlice::Ipv6(ip)) => udp
                    .to_header()
                    .calc_checksum_ipv6(&ip.header().to_header(), udp.payload())
                    .expect("a checksum"),
                other => panic!("not IP: {other:?}"),
            };
            assert_eq!(udp.checksum(), expected);
            if let Some(NetSlice::Ipv4(ip)) = &sliced.net {
                let header = ip.header().to_header();
                assert_eq!(header.header_checksum, header.calc_header_checksum());
            }
        }
    }

    #[test]
    fn a_pcap_reads_back_packet_by_packet() {
        let outcome = Outcome {
            hops: vec![
                hop(0, "203.0.113.100:51820", "203.0.113.1:3478", &[1, 2, 3]),
                Hop {
                    direction: Direction::Received,
                    ..hop(10, "203.0.113.100:51820", "203.0.113.1:3478", &[1, 2, 3])
                },
                hop(2345, "[2001:db8::1]:3478", "[2001:db8::10]:51820", &[4; 40]),
            ],
            ..Outcome::default()
        };
        let mut bytes = Vec::new();
        assert_eq!(write(&outcome, &mut bytes).expect("writes"), 2);
        let mut reader = PcapReader::new(&bytes[..]).expect("a pcap");
        let first = reader.next_packet().expect("a packet").expect("readable");
        assert_eq!(first.timestamp, Duration::from_secs(1_767_225_600));
        let second = reader.next_packet().expect("a packet").expect("readable");
        assert_eq!(second.timestamp, Duration::from_millis(1_767_225_602_345));
        assert_eq!(second.orig_len as usize, second.data.len());
        assert!(reader.next_packet().is_none());
    }

    /// A corpus story's pcap holds every datagram any host sent, in order, at its sim time,
    /// between the addresses the hosts used, with the payload they sent.
    #[test]
    fn a_corpus_story_reads_back_hop_by_hop() {
        let path = crate::corpus::corpus_dir().join("same-relay-cross-family.yaml");
        let scenario = scenario_format::Scenario::from_file(&path).expect("a corpus story");
        let outcome = sim::run(
            &scenario,
            &sim::RunOptions::seeded(crate::corpus::CORPUS_SEED),
        )
        .expect("the story runs");
        let sent: Vec<&Hop> = outcome
            .hops
            .iter()
            .filter(|hop| hop.direction == Direction::Sent)
            .collect();
        assert!(sent.len() > 20, "{} datagrams", sent.len());
        assert!(
            sent.iter().any(|hop| hop.src.is_ipv6()) && sent.iter().any(|hop| hop.src.is_ipv4())
        );
        let mut bytes = Vec::new();
        assert_eq!(write(&outcome, &mut bytes).expect("writes"), sent.len());
        let mut reader = PcapReader::new(&bytes[..]).expect("a pcap");
        assert_eq!(reader.header().datalink, pcap_file::DataLink::ETHERNET);
        for (index, hop) in sent.iter().enumerate() {
            let packet = reader
                .next_packet()
                .unwrap_or_else(|| panic!("packet {index} is missing"))
                .expect("a readable record");
            assert_eq!(
                packet.timestamp,
                Duration::from_secs(1_767_225_600) + Duration::from_millis(hop.at_ms),
                "packet {index}"
            );
            assert_eq!(packet.orig_len as usize, packet.data.len());
            let sliced = SlicedPacket::from_ethernet(&packet.data).expect("an Ethernet frame");
            let (src, dst) = observation::ip_addresses(&sliced.net).expect("IPv4 or IPv6");
            let Some(TransportSlice::Udp(udp)) = &sliced.transport else {
                panic!("packet {index} is not UDP");
            };
            assert_eq!(
                (
                    std::net::SocketAddr::new(src, udp.source_port()),
                    std::net::SocketAddr::new(dst, udp.destination_port())
                ),
                (hop.src, hop.dst),
                "packet {index}"
            );
            assert_eq!(udp.payload(), hop.payload, "packet {index}");
        }
        assert!(
            reader.next_packet().is_none(),
            "more packets than datagrams"
        );
    }
}
