//! Seed inputs for the targets: datagrams taken from the harness's pcap captures (classic
//! libpcap files of Ethernet frames, as `scenarios::pcap` writes them), sorted by kind, and a
//! few inputs built on the fixtures (which the captures cannot give: the fixture's own channel,
//! DNS name and key).

use std::collections::BTreeMap;
use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use proto::channel_data::{self, ChannelData};
use proto::{stun, tunnel};

use crate::fixtures;

/// Inputs by target name.
pub type Seeds = BTreeMap<&'static str, Vec<Vec<u8>>>;

/// The UDP payloads of a classic pcap file of Ethernet frames, with their ports and whether the
/// frame was IPv6. Frames that are not UDP are skipped.
pub fn udp_payloads(pcap: &[u8]) -> Result<Vec<(u16, u16, Vec<u8>)>, String> {
    let header = pcap.get(..24).ok_or("shorter than a pcap header")?;
    let little = match header[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return Err("not a pcap file (magic number)".to_owned()),
    };
    let u32_at = |bytes: &[u8], at: usize| {
        let word = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
        if little {
            u32::from_le_bytes(word)
        } else {
            u32::from_be_bytes(word)
        }
    };
    if u32_at(header, 20) != 1 {
        return Err("not Ethernet frames (link type)".to_owned());
    }
    let mut out = Vec::new();
    let mut at = 24;
    while let Some(record) = pcap.get(at..at + 16) {
        let len = u32_at(record, 8) as usize;
        let frame = pcap
            .get(at + 16..at + 16 + len)
            .ok_or("a record runs past the end of the file")?;
        at += 16 + len;
        let Ok(sliced) = etherparse::SlicedPacket::from_ethernet(frame) else {
            continue;
        };
        if let Some(etherparse::TransportSlice::Udp(udp)) = sliced.transport {
            out.push((
                udp.source_port(),
                udp.destination_port(),
                udp.payload().to_vec(),
            ));
        }
    }
    Ok(out)
}

/// Sorts the datagrams of a capture into the targets' seeds.
pub fn from_capture(datagrams: &[(u16, u16, Vec<u8>)], seeds: &mut Seeds) {
    for (src_port, _dst_port, payload) in datagrams {
        if *src_port == 53 {
            let v6 = Message::from_vec(payload).is_ok_and(|m| {
                m.queries
                    .first()
                    .is_some_and(|q| q.query_type() == RecordType::AAAA)
            });
            let mode = 2 | u8::from(v6);
            push(seeds, "dns_answer", [&[mode][..], payload].concat());
            continue;
        }
        if stun::looks_like_stun(payload) {
            push(seeds, "stun_message", payload.clone());
            continue;
        }
        let frame = if channel_data::looks_like_channel_data(payload) {
            push(seeds, "channel_data", payload.clone());
            match ChannelData::parse(payload) {
                Ok(message) => message.data.to_vec(),
                Err(_) => continue,
            }
        } else {
            payload.clone()
        };
        if tunnel::peek_header(&frame).is_ok() {
            push(seeds, "tunnel_frame", frame.clone());
            let inner = &frame[tunnel::HEADER_LEN..frame.len() - tunnel::MAC_LEN];
            if let Some(mode) = packet_mode(inner) {
                push(seeds, "ip_packet", [&[mode][..], inner].concat());
            }
        }
    }
}

/// The `ip_packet` mode byte that replays a captured inner packet against the fixture: from
/// the client, or (when it is for a tunnel IP) from the TUN side; the fixture's addresses put
/// in and the checksums recomputed.
fn packet_mode(inner: &[u8]) -> Option<u8> {
    let (src, dst) = crate::targets::ip_addrs(inner)?;
    let for_client = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => v4.octets()[..2] == [100, 64],
        IpAddr::V6(v6) => v6.segments()[..3] == [0xfd00, 0x2021, 0x1111] && v6.segments()[3] == 0,
    };
    Some(if for_client(dst) {
        1 | 2 | 4
    } else if for_client(src) {
        2 | 4 | if gateway::is_proxy_ip(dst) { 8 } else { 0 }
    } else {
        0
    })
}

fn push(seeds: &mut Seeds, target: &'static str, input: Vec<u8>) {
    let inputs = seeds.entry(target).or_default();
    if !inputs.contains(&input) {
        inputs.push(input);
    }
}

/// Inputs built on the fixtures, a few per target.
pub fn from_fixtures() -> Seeds {
    let mut seeds = Seeds::new();
    let now = std::time::Instant::now();

    // A TURN exchange: the challenge, the authenticated Allocate, a permission, a binding.
    let mut relay = fixtures::relay(now);
    let mut client = fixtures::TurnClient::new(1, fixtures::CLIENT_V4);
    // Twice: the first Allocate is challenged, the second (with the nonce) succeeds.
    for _ in 0..2 {
        let allocate = client.request(
            stun::methods::ALLOCATE,
            vec![stun::RequestedTransport::new(stun::TRANSPORT_UDP).into()],
        );
        push(&mut seeds, "stun_message", allocate.clone());
        for reply in client.exchange(&mut relay, &allocate, now) {
            push(&mut seeds, "stun_message", reply.payload);
        }
    }
    let bind = client.request(
        stun::methods::CHANNEL_BIND,
        vec![
            stun::ChannelNumber::new(fixtures::CHANNEL)
                .expect("a valid channel")
                .into(),
            stun::XorPeerAddress::new(fixtures::PEER).into(),
        ],
    );
    push(&mut seeds, "stun_message", bind);

    // ChannelData on the fixture's channel, with and without padding.
    for data in [&b""[..], b"abc", b"a tunnel frame would go here"] {
        let mut message = ChannelData {
            channel: fixtures::CHANNEL,
            data,
        }
        .to_vec();
        push(&mut seeds, "channel_data", message.clone());
        message.extend(std::iter::repeat_n(0, (4 - data.len() % 4) % 4));
        push(&mut seeds, "channel_data", message);
    }

    // Packets from the client to the resources, and a reply from one.
    let udp_v4 = packet(fixtures::TUNNEL_V4.into(), fixtures::RESOURCE_V4.into(), 17);
    let tcp_v6 = packet(fixtures::TUNNEL_V6.into(), fixtures::RESOURCE_V6.into(), 6);
    let icmp_v4 = packet(fixtures::TUNNEL_V4.into(), fixtures::PROXY_V4.into(), 1);
    for (mode, inner) in [
        (0, &udp_v4),
        (0, &tcp_v6),
        (0, &icmp_v4),
        (1 | 2 | 4, &udp_v4),
    ] {
        push(&mut seeds, "ip_packet", [&[mode][..], inner].concat());
        push(&mut seeds, "tunnel_frame", fixtures::client_frame(1, inner));
    }

    // Answers to the fixture's query, of each family.
    for v6 in [false, true] {
        let name = Name::from_ascii(fixtures::DNS_NAME).expect("a valid name");
        let (record_type, data) = if v6 {
            (
                RecordType::AAAA,
                RData::AAAA(AAAA::new(0x2001, 0xdb8, 0x400, 0, 0, 0, 0, 1)),
            )
        } else {
            (RecordType::A, RData::A(A::new(192, 0, 2, 44)))
        };
        let mut message = Message::new(0, MessageType::Response, OpCode::Query);
        message.add_query(Query::query(name.clone(), record_type));
        message.add_answer(Record::from_rdata(name, 30, data));
        let answer = message.to_vec().expect("a small answer encodes");
        push(
            &mut seeds,
            "dns_answer",
            [&[2 | u8::from(v6)][..], &answer].concat(),
        );
    }

    // Operation sequences: pseudo-random bytes, which `arbitrary` reads as operations.
    let mut state = 0x5eed_u64;
    for len in [64, 256, 1024] {
        let input = (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (state >> 56) as u8
            })
            .collect();
        push(&mut seeds, "state_machines", input);
    }
    seeds
}

/// A small packet with valid checksums (protocol 6, 17 or 1/58).
fn packet(src: IpAddr, dst: IpAddr, protocol: u8) -> Vec<u8> {
    let builder = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            etherparse::PacketBuilder::ipv4(s.octets(), d.octets(), 64)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            etherparse::PacketBuilder::ipv6(s.octets(), d.octets(), 64)
        }
        _ => unreachable!("one family"),
    };
    let mut out = Vec::new();
    let written = match protocol {
        6 => builder.tcp(40001, 443, 1, 65535).syn().write(&mut out, &[]),
        17 => builder.udp(40000, 53).write(&mut out, b"query"),
        _ => builder.icmpv4_echo_request(7, 1).write(&mut out, b"ping"),
    };
    written.expect("a small packet builds");
    out
}
