//! Property tests: accounting over random packet sequences, random bytes, forged or
//! unauthorised frames, and DNS resolution; and, for every call in all of them, drop events
//! that match the drop counters exactly.

mod common;

use std::time::Duration;

use common::*;
use gateway::{DropReason, DroppedPacket, Event, Filter, PortRange};
use proptest::prelude::*;
use proto::flow::ClientId;
use proto::tunnel::{self, FrameHeader};

/// One `PacketDropped` event.
type Drop = (DropReason, Option<ClientId>, DroppedPacket);

/// Runs one call into the gateway and checks the drop-event invariant: every increment of a
/// drop counter during the call has exactly one `PacketDropped` event with that reason, and
/// there is no event without an increment; when the call refused its input, the last drop
/// event is that input's (same reason). Drains the events; returns the call's result and its
/// drop events, in order.
fn checked(
    h: &mut Harness,
    call: impl FnOnce(&mut Harness) -> Result<(), DropReason>,
) -> Result<(Result<(), DropReason>, Vec<Drop>), TestCaseError> {
    let before = h.gw.drop_counters().clone();
    let result = call(h);
    let drops: Vec<Drop> = std::iter::from_fn(|| h.gw.poll_event())
        .filter_map(|e| match e {
            Event::PacketDropped {
                reason,
                client,
                packet,
            } => Some((reason, client, packet)),
            _ => None,
        })
        .collect();
    for reason in DropReason::ALL {
        let moved = h.gw.drop_counters().get(*reason) - before.get(*reason);
        let reported = drops.iter().filter(|d| d.0 == *reason).count() as u64;
        prop_assert_eq!(moved, reported, "{}: counter vs events", reason);
    }
    if let Err(reason) = result {
        prop_assert_eq!(
            drops.last().map(|d| d.0),
            Some(reason),
            "the input's own drop is last"
        );
    }
    Ok((result, drops))
}

/// [`checked`] for a call that returns nothing.
fn checked_unit(
    h: &mut Harness,
    call: impl FnOnce(&mut Harness),
) -> Result<Vec<Drop>, TestCaseError> {
    checked(h, |h| {
        call(h);
        Ok(())
    })
    .map(|(_, drops)| drops)
}

#[derive(Debug, Clone)]
enum Op {
    ClientTcp {
        conn: u16,
        kind: u8,
        seq: u32,
        ack: u32,
        len: usize,
    },
    ResourceTcp {
        conn: u16,
        kind: u8,
        seq: u32,
        ack: u32,
        len: usize,
    },
    ClientUdp {
        port: u16,
        len: usize,
    },
    ResourceUdp {
        port: u16,
        len: usize,
    },
    ClientEcho {
        id: u16,
        len: usize,
    },
    ResourceEchoReply {
        id: u16,
        len: usize,
    },
    Advance {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let small = 0u32..4;
    prop_oneof![
        (0u16..3, 0u8..6, small.clone(), small.clone(), 0usize..40).prop_map(
            |(conn, kind, seq, ack, len)| Op::ClientTcp {
                conn,
                kind,
                seq,
                ack,
                len
            }
        ),
        (0u16..3, 0u8..6, small.clone(), small, 0usize..40).prop_map(
            |(conn, kind, seq, ack, len)| Op::ResourceTcp {
                conn,
                kind,
                seq,
                ack,
                len
            }
        ),
        (0u16..3, 0usize..40).prop_map(|(port, len)| Op::ClientUdp { port, len }),
        (0u16..3, 0usize..40).prop_map(|(port, len)| Op::ResourceUdp { port, len }),
        (0u16..2, 0usize..40).prop_map(|(id, len)| Op::ClientEcho { id, len }),
        (0u16..2, 0usize..40).prop_map(|(id, len)| Op::ResourceEchoReply { id, len }),
        (0u64..200_000).prop_map(|ms| Op::Advance { ms }),
    ]
}

fn flags(kind: u8) -> Flags {
    match kind {
        0 => SYN,
        1 => SYN_ACK,
        2 | 3 => ACK,
        4 => FIN_ACK,
        _ => RST,
    }
}

fn family() -> impl Strategy<Value = Fam> {
    prop_oneof![Just(Fam::V4), Just(Fam::V6)]
}

/// Operations around DNS resources: mappings, client packets to proxy IPs (held, forwarded or
/// denied), answers (good, empty, stale), resource replies, time, grants and client removal.
#[derive(Debug, Clone)]
enum DnsOp {
    Map {
        n: u8,
        domain: usize,
    },
    Unmap {
        n: u8,
    },
    Send {
        n: u8,
        port: u16,
        tcp: bool,
    },
    Answer {
        pick: prop::sample::Index,
        addr: u8,
        ttl: u32,
    },
    ResourceReply {
        addr: u8,
        port: u16,
    },
    Advance {
        ms: u64,
    },
    Grant {
        filtered: bool,
    },
    Revoke,
    ReAddClient,
}

const DOMAINS: [&str; 3] = ["a.example.com", "b.example.com", "c.other.org"];

fn dns_op() -> impl Strategy<Value = DnsOp> {
    prop_oneof![
        2 => (1u8..4, 0..DOMAINS.len()).prop_map(|(n, domain)| DnsOp::Map { n, domain }),
        1 => (1u8..4).prop_map(|n| DnsOp::Unmap { n }),
        6 => (1u8..5, 0u16..3, any::<bool>()).prop_map(|(n, port, tcp)| DnsOp::Send { n, port, tcp }),
        3 => (any::<prop::sample::Index>(), 0u8..3, 0u32..5)
            .prop_map(|(pick, addr, ttl)| DnsOp::Answer { pick, addr, ttl }),
        2 => (1u8..3, 0u16..3).prop_map(|(addr, port)| DnsOp::ResourceReply { addr, port }),
        3 => (0u64..4_000).prop_map(|ms| DnsOp::Advance { ms }),
        1 => any::<bool>().prop_map(|filtered| DnsOp::Grant { filtered }),
        1 => Just(DnsOp::Revoke),
        1 => Just(DnsOp::ReAddClient),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every forwarded packet is counted in exactly one record, no record is empty.
    #[test]
    fn every_forwarded_packet_is_counted_once(fam in family(), ops in prop::collection::vec(op(), 1..80)) {
        let mut h = Harness::new(fam);
        let (c, r) = (fam.tunnel_ip(), fam.resource_ip(7));
        let (mut tx, mut tx_bytes, mut rx, mut rx_bytes) = (0u64, 0u64, 0u64, 0u64);
        for op in ops {
            let data = |len: usize| vec![0xAB; len];
            let (packet, to_resource, len) = match op {
                Op::ClientTcp { conn, kind, seq, ack, len } =>
                    (tcp(c, 1000 + conn, r, 80, flags(kind), seq, ack, &data(len)), true, len),
                Op::ResourceTcp { conn, kind, seq, ack, len } =>
                    (tcp(r, 80, c, 1000 + conn, flags(kind), seq, ack, &data(len)), false, len),
                Op::ClientUdp { port, len } => (udp(c, 2000 + port, r, 53, &data(len)), true, len),
                Op::ResourceUdp { port, len } => (udp(r, 53, c, 2000 + port, &data(len)), false, len),
                Op::ClientEcho { id, len } => (echo(c, r, true, id, 1, &data(len)), true, len),
                Op::ResourceEchoReply { id, len } => (echo(r, c, false, id, 1, &data(len)), false, len),
                Op::Advance { ms } => {
                    checked_unit(&mut h, |h| h.advance(Duration::from_millis(ms)))?;
                    continue;
                }
            };
            let (result, drops) = if to_resource {
                checked(&mut h, |h| h.send(&packet))?
            } else {
                checked(&mut h, |h| h.resource_sends(&packet))?
            };
            if let Err(reason) = result {
                // The packet as sent, and the client it came from or was for.
                let expected = (reason, Some(CLIENT), DroppedPacket::Ip(packet.clone()));
                prop_assert_eq!(drops.last(), Some(&expected));
            }
            if result.is_ok() {
                if to_resource { tx += 1; tx_bytes += len as u64 } else { rx += 1; rx_bytes += len as u64 }
            }
        }
        checked_unit(&mut h, |h| h.advance(Duration::from_secs(1)))?;
        checked_unit(&mut h, |h| h.gw.shutdown(h.now))?;
        let out = h.drain();
        prop_assert_eq!(out.tun.len() as u64, tx);
        prop_assert_eq!(out.to_client.len() as u64, rx);
        let records = h.records();
        let sum = |f: fn(&proto::flow::FlowRecord) -> u64| records.iter().map(f).sum::<u64>();
        prop_assert_eq!(sum(|r| r.tx_packets), tx);
        prop_assert_eq!(sum(|r| r.tx_bytes), tx_bytes);
        prop_assert_eq!(sum(|r| r.rx_packets), rx);
        prop_assert_eq!(sum(|r| r.rx_bytes), rx_bytes);
        for rec in &records {
            prop_assert!(rec.tx_packets >= 1, "every flow starts with a client packet: {:?}", rec);
            prop_assert!(rec.start <= rec.last_packet && rec.last_packet <= rec.end);
        }
        prop_assert_eq!(h.gw.open_flow_count(), 0);
    }

    /// DNS resources under random mappings, answers, timeouts, grant changes and client
    /// removal: every drop, immediate or of a held packet, is one event matching the counters.
    #[test]
    fn dns_drops_are_reported_like_the_counters_say(fam in family(), ops in prop::collection::vec(dns_op(), 1..60)) {
        let mut h = Harness::with_config(fam, |c| c.dns_queue_limit = 3);
        let c = fam.tunnel_ip();
        let mut queries: Vec<Vec<u8>> = Vec::new();
        let mut reported = 0u64;
        for op in ops {
            let drops = match op {
                DnsOp::Map { n, domain } => checked_unit(&mut h, |h| {
                    let _ = h.gw.map_dns(CLIENT, h.fam.proxy_ip(n), DOMAINS[domain], h.now);
                })?,
                DnsOp::Unmap { n } => checked_unit(&mut h, |h| {
                    let _ = h.gw.unmap_dns(CLIENT, h.fam.proxy_ip(n), h.now);
                })?,
                DnsOp::Send { n, port, tcp: is_tcp } => {
                    let dst = fam.proxy_ip(n);
                    let packet = if is_tcp {
                        tcp(c, 3000 + port, dst, 443, SYN, 1, 0, b"")
                    } else {
                        udp(c, 3000 + port, dst, 53, b"q")
                    };
                    let (result, drops) = checked(&mut h, |h| h.send(&packet))?;
                    if let Err(reason) = result {
                        let expected = (reason, Some(CLIENT), DroppedPacket::Ip(packet.clone()));
                        prop_assert_eq!(drops.last(), Some(&expected));
                    }
                    drops
                }
                DnsOp::Answer { pick, addr, ttl } => {
                    if queries.is_empty() {
                        continue;
                    }
                    let query = queries[pick.index(queries.len())].clone();
                    let addrs: Vec<_> = (addr > 0).then(|| fam.resource_ip(addr)).into_iter().collect();
                    checked(&mut h, |h| h.answer_dns(&query, &addrs, ttl))?.1
                }
                DnsOp::ResourceReply { addr, port } => {
                    let packet = udp(fam.resource_ip(addr), 53, c, 3000 + port, b"r");
                    checked(&mut h, |h| h.resource_sends(&packet))?.1
                }
                DnsOp::Advance { ms } => checked_unit(&mut h, |h| h.advance(Duration::from_millis(ms)))?,
                DnsOp::Grant { filtered } => {
                    let filters = if filtered { vec![Filter::Udp(PortRange::single(53))] } else { vec![] };
                    checked_unit(&mut h, |h| {
                        let _ = h.gw.grant(CLIENT, DNS_RESOURCE, filters);
                    })?
                }
                DnsOp::Revoke => checked_unit(&mut h, |h| {
                    let _ = h.gw.revoke(CLIENT, DNS_RESOURCE, h.now);
                })?,
                DnsOp::ReAddClient => {
                    let drops = checked_unit(&mut h, |h| h.gw.remove_client(CLIENT, h.now).unwrap())?;
                    prop_assert!(drops.iter().all(|d| d.0 == DropReason::DnsResolutionFailed && d.1 == Some(CLIENT)));
                    h.gw.add_client(client_config()).unwrap();
                    h.grant(DNS_RESOURCE, vec![]);
                    h.last_tx_counter = None;
                    drops
                }
            };
            reported += drops.len() as u64;
            queries.extend(h.drain().dns);
        }
        reported += checked_unit(&mut h, |h| h.gw.shutdown(h.now))?.len() as u64;
        prop_assert_eq!(reported, h.gw.drop_counters().total());
        prop_assert_eq!(h.gw.poll_timeout(), None);
    }

    /// Random bytes anywhere never panic and never create a flow.
    #[test]
    fn random_bytes_create_no_flow(
        fam in family(),
        inputs in prop::collection::vec((0u8..4, prop::collection::vec(any::<u8>(), 0..120)), 1..40),
    ) {
        let mut h = Harness::new(fam);
        for (where_, mut bytes) in inputs {
            let (result, drops) = match where_ {
                0 => checked(&mut h, |h| h.send_frame(&bytes))?,
                1 => {
                    // Looks like a frame: right type byte and session.
                    if bytes.len() >= 8 {
                        bytes[0] = 0xF1;
                        bytes[1..4].fill(0);
                        bytes[4..8].copy_from_slice(&SESSION.to_be_bytes());
                    }
                    let (result, drops) = checked(&mut h, |h| h.send_frame(&bytes))?;
                    if result.is_err() {
                        // A whole header names the client's session (unauthenticated).
                        let client = (bytes.len() >= tunnel::MIN_FRAME_LEN).then_some(CLIENT);
                        prop_assert_eq!(drops.last().and_then(|d| d.1), client);
                    }
                    (result, drops)
                }
                2 => {
                    // A random inner packet in a valid frame: dropped as sent.
                    let (result, drops) = checked(&mut h, |h| h.send(&bytes))?;
                    if let Err(reason) = result {
                        let expected = (reason, Some(CLIENT), DroppedPacket::Ip(bytes.clone()));
                        prop_assert_eq!(drops.last(), Some(&expected));
                    }
                    (result, drops)
                }
                _ => {
                    let (result, drops) = checked(&mut h, |h| h.resource_sends(&bytes))?;
                    if result.is_err() {
                        prop_assert_eq!(drops.last().map(|d| &d.2), Some(&DroppedPacket::Ip(bytes.clone())));
                    }
                    (result, drops)
                }
            };
            if where_ < 2 && result.is_err() {
                // Random bytes never open as a frame: the datagram as received.
                prop_assert_eq!(drops.last().map(|d| &d.2), Some(&DroppedPacket::Datagram(bytes.clone())));
            }
            let (result, drops) = checked(&mut h, |h| {
                h.gw.handle_input(dns_server(), sa("203.0.113.1:5300"), &bytes, h.now)
            })?;
            let expected = (DropReason::DnsUnexpectedAnswer, None, DroppedPacket::Datagram(bytes.clone()));
            prop_assert_eq!(result, Err(DropReason::DnsUnexpectedAnswer));
            prop_assert_eq!(drops, vec![expected]);
        }
        prop_assert_eq!(h.gw.open_flow_count(), 0);
        checked_unit(&mut h, |h| h.gw.shutdown(h.now))?;
        prop_assert!(h.records().is_empty());
        prop_assert!(h.drain().tun.is_empty());
    }

    /// Forged or unauthorised frames never create a flow, and a replay never counts twice.
    #[test]
    fn forged_or_unauthorised_frames_create_no_flow(
        fam in family(),
        sport in 1u16..,
        dport in 1u16..,
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
        forged_src in any::<[u8; 16]>(),
    ) {
        let mut h = Harness::new(fam);
        let good = udp(fam.tunnel_ip(), sport, fam.resource_ip(7), dport, b"payload");
        // A flipped bit anywhere in the frame.
        let mut f = h.frame(&good);
        let i = flip.index(f.len());
        f[i] ^= 1 << bit;
        prop_assert!(checked(&mut h, |h| h.send_frame(&f))?.0.is_err());
        // A forged inner source.
        let src: std::net::IpAddr = match fam {
            Fam::V4 => std::net::IpAddr::from([forged_src[0], forged_src[1], forged_src[2], forged_src[3]]),
            Fam::V6 => std::net::IpAddr::from(forged_src),
        };
        if src != fam.tunnel_ip() {
            let forged = udp(src, sport, fam.resource_ip(7), dport, b"x");
            let (result, drops) = checked(&mut h, |h| h.send(&forged))?;
            prop_assert_eq!(result, Err(DropReason::ForgedSource));
            prop_assert_eq!(drops, vec![(DropReason::ForgedSource, Some(CLIENT), DroppedPacket::Ip(forged))]);
        }
        // No resource there, and a resource that is not granted.
        prop_assert!(checked(&mut h, |h| h.send(&udp(fam.tunnel_ip(), sport, fam.outside_ip(), dport, b"x")))?.0.is_err());
        let res = h.cidr_resource();
        h.gw.revoke(CLIENT, res, h.now).unwrap();
        prop_assert!(checked(&mut h, |h| h.send(&good))?.0.is_err());
        prop_assert_eq!(h.gw.open_flow_count(), 0);
        // Replays of an accepted frame count once.
        h.grant(res, vec![]);
        let frame = tunnel::seal(&key(), tunnel::Direction::ToGateway, FrameHeader { session_id: SESSION, counter: 10_000 }, &good);
        prop_assert!(checked(&mut h, |h| h.send_frame(&frame))?.0.is_ok());
        let (result, drops) = checked(&mut h, |h| h.send_frame(&frame))?;
        prop_assert_eq!(result, Err(DropReason::Replay));
        prop_assert_eq!(drops, vec![(DropReason::Replay, Some(CLIENT), DroppedPacket::Ip(good.clone()))]);
        checked_unit(&mut h, |h| h.gw.shutdown(h.now))?;
        let records = h.records();
        prop_assert_eq!(records.len(), 1);
        prop_assert_eq!(records[0].tx_packets, 1);
    }
}
