//! Property tests: accounting over random packet sequences, random bytes, and forged or
//! unauthorised frames.

mod common;

use std::time::Duration;

use common::*;
use proptest::prelude::*;
use proto::tunnel::{self, FrameHeader};

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
            let (result, to_resource, len) = match op {
                Op::ClientTcp { conn, kind, seq, ack, len } =>
                    (h.send(&tcp(c, 1000 + conn, r, 80, flags(kind), seq, ack, &data(len))), true, len),
                Op::ResourceTcp { conn, kind, seq, ack, len } =>
                    (h.resource_sends(&tcp(r, 80, c, 1000 + conn, flags(kind), seq, ack, &data(len))), false, len),
                Op::ClientUdp { port, len } => (h.send(&udp(c, 2000 + port, r, 53, &data(len))), true, len),
                Op::ResourceUdp { port, len } => (h.resource_sends(&udp(r, 53, c, 2000 + port, &data(len))), false, len),
                Op::ClientEcho { id, len } => (h.send(&echo(c, r, true, id, 1, &data(len))), true, len),
                Op::ResourceEchoReply { id, len } => (h.resource_sends(&echo(r, c, false, id, 1, &data(len))), false, len),
                Op::Advance { ms } => {
                    h.advance(Duration::from_millis(ms));
                    continue;
                }
            };
            if result.is_ok() {
                if to_resource { tx += 1; tx_bytes += len as u64 } else { rx += 1; rx_bytes += len as u64 }
            }
        }
        h.advance(Duration::from_secs(1));
        h.gw.shutdown(h.now);
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

    /// Random bytes anywhere never panic and never create a flow.
    #[test]
    fn random_bytes_create_no_flow(
        fam in family(),
        inputs in prop::collection::vec((0u8..4, prop::collection::vec(any::<u8>(), 0..120)), 1..40),
    ) {
        let mut h = Harness::new(fam);
        for (where_, mut bytes) in inputs {
            let _ = match where_ {
                0 => h.send_frame(&bytes),
                1 => {
                    // Looks like a frame: right type byte and session.
                    if bytes.len() >= 8 {
                        bytes[0] = 0xF1;
                        bytes[1..4].fill(0);
                        bytes[4..8].copy_from_slice(&SESSION.to_be_bytes());
                    }
                    h.send_frame(&bytes)
                }
                2 => h.send(&bytes), // random inner packet in a valid frame
                _ => h.resource_sends(&bytes),
            };
            let _ = h.gw.handle_input(dns_server(), sa("203.0.113.1:5300"), &bytes, h.now);
        }
        prop_assert_eq!(h.gw.open_flow_count(), 0);
        h.gw.shutdown(h.now);
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
        prop_assert!(h.send_frame(&f).is_err());
        // A forged inner source.
        let src: std::net::IpAddr = match fam {
            Fam::V4 => std::net::IpAddr::from([forged_src[0], forged_src[1], forged_src[2], forged_src[3]]),
            Fam::V6 => std::net::IpAddr::from(forged_src),
        };
        if src != fam.tunnel_ip() {
            prop_assert!(h.send(&udp(src, sport, fam.resource_ip(7), dport, b"x")).is_err());
        }
        // No resource there, and a resource that is not granted.
        prop_assert!(h.send(&udp(fam.tunnel_ip(), sport, fam.outside_ip(), dport, b"x")).is_err());
        let res = h.cidr_resource();
        h.gw.revoke(CLIENT, res, h.now).unwrap();
        prop_assert!(h.send(&good).is_err());
        prop_assert_eq!(h.gw.open_flow_count(), 0);
        // Replays of an accepted frame count once.
        h.grant(res, vec![]);
        let frame = tunnel::seal(&key(), FrameHeader { session_id: SESSION, counter: 10_000 }, &good);
        prop_assert!(h.send_frame(&frame).is_ok());
        prop_assert!(h.send_frame(&frame).is_err());
        h.gw.shutdown(h.now);
        let records = h.records();
        prop_assert_eq!(records.len(), 1);
        prop_assert_eq!(records[0].tx_packets, 1);
    }
}
