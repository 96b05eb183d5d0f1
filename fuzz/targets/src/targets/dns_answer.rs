//! `dns_answer`: the gateway's DNS answer parser (`gateway/src/dns_wire.rs`) and its resolver's
//! handling of an answer.
//!
//! The fixture's client sends a UDP packet to a DNS proxy IP (bit 0 of the first byte: IPv6);
//! the gateway holds it and sends a query. The rest of the input is the DNS server's answer,
//! with the query's id written over its first two bytes when bit 1 is set. Checked: the drop
//! accounting ([`super::gateway_call`]); an answer that hickory reads as a response to the
//! query (id, one question of the queried name and type) is accepted, anything else is
//! refused as `dns-unexpected-answer`; an accepted answer resolves the mapping to the first
//! address of the queried family in it (with the smallest of their TTLs, within the
//! configured floor and cap) and releases the held packet to that address with valid checksums, or
//! fails the resolution (no address, or an error code) and drops the held packet; and the same
//! answer a second time is unexpected.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use gateway::{DropReason, Event, Transmit};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::RecordType;
use proto::flow::OuterContext;

use super::{gateway_call, ip_addrs, tun_packets};
use crate::checksum;
use crate::fixtures::{self, DNS_LOCAL, DNS_NAME, DNS_SERVER, GATEWAY_ADDR};

const IPV6: u8 = 1;
const PATCH_ID: u8 = 2;

pub fn dns_answer(data: &[u8]) {
    let Some((&mode, answer)) = data.split_first() else {
        return;
    };
    let v6 = mode & IPV6 != 0;
    let now = Instant::now();
    let mut gateway = fixtures::gateway(now);

    let packet = held_packet(v6);
    let frame = fixtures::client_frame(1, &packet);
    let outer = OuterContext {
        remote: fixtures::CLIENT_OUTER,
        local: GATEWAY_ADDR,
    };
    let sent = gateway_call(&mut gateway, now, |g| {
        g.handle_tunnel_frame(outer, &frame, now)
    });
    assert_eq!(sent.result, Ok(()), "the packet to the proxy IP is held");
    // The mapping queries at once (both families were mapped with the fixture); the query of
    // the proxy IP's family is the one to answer.
    let wanted = if v6 { RecordType::AAAA } else { RecordType::A };
    let query_id = sent
        .transmits
        .iter()
        .find_map(|t| match t {
            Transmit::Udp { src, dst, payload } if (*src, *dst) == (DNS_LOCAL, DNS_SERVER) => {
                let query = Message::from_vec(payload).ok()?;
                let question = query.queries.first()?;
                (question.query_type() == wanted).then_some(query.metadata.id)
            }
            _ => None,
        })
        .expect("the gateway asks the DNS server");

    let mut answer = answer.to_vec();
    if mode & PATCH_ID != 0 && answer.len() >= 2 {
        answer[..2].copy_from_slice(&query_id.to_be_bytes());
    }
    let expected = read_answer(&answer, query_id, v6);
    let later = now + Duration::from_millis(5);
    let outcome = gateway_call(&mut gateway, later, |g| {
        g.handle_input(DNS_SERVER, DNS_LOCAL, &answer, later)
    });
    match expected {
        None => assert_eq!(outcome.result, Err(DropReason::DnsUnexpectedAnswer)),
        Some(expected) => {
            assert_eq!(outcome.result, Ok(()), "a matching answer was refused");
            let resolved: Vec<_> = outcome
                .events
                .iter()
                .filter_map(|event| match event {
                    Event::DnsResolved { addr, ttl, .. } => Some((*addr, *ttl)),
                    _ => None,
                })
                .collect();
            let failed = outcome
                .events
                .iter()
                .filter(|e| matches!(e, Event::DnsResolutionFailed { .. }))
                .count();
            match expected {
                Some((addr, ttl)) => {
                    let floor = gateway.config().dns_min_ttl;
                    let cap = gateway.config().dns_max_ttl.max(floor);
                    assert_eq!(resolved, vec![(addr, ttl.clamp(floor, cap))]);
                    assert_eq!(failed, 0);
                    let released: Vec<&[u8]> = tun_packets(&outcome.transmits).collect();
                    for out in &released {
                        assert_eq!(ip_addrs(out).map(|(_, dst)| dst), Some(addr));
                        assert_ne!(checksum::verifies(out), Some(false), "NAT broke a checksum");
                    }
                    assert!(
                        released.len() == 1 || (released.is_empty() && !outcome.drops.is_empty()),
                        "the held packet is released once, or dropped with a reason"
                    );
                }
                None => {
                    assert!(resolved.is_empty());
                    assert_eq!(failed, 1, "a failed answer reports the failure");
                    assert!(
                        outcome
                            .drops
                            .iter()
                            .any(|d| d.0 == DropReason::DnsResolutionFailed),
                        "the held packet is dropped"
                    );
                }
            }
            let again = gateway_call(&mut gateway, later, |g| {
                g.handle_input(DNS_SERVER, DNS_LOCAL, &answer, later)
            });
            assert_eq!(again.result, Err(DropReason::DnsUnexpectedAnswer));
        }
    }
}

/// A UDP packet from the client to the DNS proxy IP of a family, with valid checksums.
fn held_packet(v6: bool) -> Vec<u8> {
    let builder = if v6 {
        etherparse::PacketBuilder::ipv6(
            fixtures::TUNNEL_V6.octets(),
            fixtures::PROXY_V6.octets(),
            64,
        )
    } else {
        etherparse::PacketBuilder::ipv4(
            fixtures::TUNNEL_V4.octets(),
            fixtures::PROXY_V4.octets(),
            64,
        )
    };
    let mut out = Vec::new();
    builder
        .udp(40000, 443)
        .write(&mut out, b"held")
        .expect("a small UDP packet builds");
    out
}

/// Hickory's reading of `bytes` as the answer to the query: `None` if it does not answer it;
/// `Some(None)` if it does but resolves nothing; `Some(Some((address, ttl)))` otherwise.
#[allow(clippy::option_option)]
fn read_answer(bytes: &[u8], id: u16, v6: bool) -> Option<Option<(IpAddr, Duration)>> {
    let message = Message::from_vec(bytes).ok()?;
    let [question] = message.queries.as_slice() else {
        return None;
    };
    let name = question.name().to_ascii();
    let name = name.strip_suffix('.').unwrap_or(&name);
    let wanted = if v6 { RecordType::AAAA } else { RecordType::A };
    if message.metadata.message_type != MessageType::Response
        || message.metadata.id != id
        || !name.eq_ignore_ascii_case(DNS_NAME)
        || question.query_type() != wanted
    {
        return None;
    }
    if message.metadata.response_code != ResponseCode::NoError {
        return Some(None);
    }
    let records: Vec<(IpAddr, u32)> = message
        .answers
        .iter()
        .filter_map(|record| Some((record.data.ip_addr()?, record.ttl)))
        .filter(|(ip, _)| ip.is_ipv6() == v6)
        .collect();
    let Some(&(first, _)) = records.first() else {
        return Some(None);
    };
    let ttl = records.iter().map(|&(_, ttl)| ttl).min().unwrap_or(0);
    Some(Some((first, Duration::from_secs(u64::from(ttl)))))
}
