//! Data-path behaviour around the flow rules: authentication, authorisation, ICMP and DNS
//! queueing. Per-instance flow logs are in `flow_log_target.rs`, a binary of their own.

mod common;

use std::time::Duration;

use common::*;
use gateway::{DropReason, Event, Filter, PortRange};
use proto::flow::Protocol;
use proto::tunnel::{self, FrameHeader, SessionKey};

fn udp_out(fam: Fam, dst: std::net::IpAddr, dport: u16) -> Vec<u8> {
    udp(fam.tunnel_ip(), 5000, dst, dport, b"data")
}

/// Nothing but the named drop counter moved and nothing came out but the drops' own events.
fn assert_only_dropped(h: &mut Harness, reason: DropReason, count: u64) {
    let out = h.drain();
    assert!(out.tun.is_empty() && out.to_client.is_empty() && out.dns.is_empty());
    assert_eq!(h.gw.drop_counters().get(reason), count);
    assert_eq!(h.gw.drop_counters().total(), count);
    assert_eq!(h.gw.open_flow_count(), 0);
    let events: Vec<_> = std::iter::from_fn(|| h.gw.poll_event()).collect();
    assert!(
        events
            .iter()
            .all(|e| matches!(e, Event::PacketDropped { reason: r, .. } if *r == reason)),
        "{events:?}"
    );
}

fn forged_or_broken_frames_change_nothing(fam: Fam) {
    let mut h = Harness::new(fam);
    let good = udp_out(fam, fam.resource_ip(7), 53);
    // Bad MAC.
    let mut f = h.frame(&good);
    let last = f.len() - 1;
    f[last] ^= 1;
    assert_eq!(h.send_frame(&f), Err(DropReason::BadMac));
    assert_only_dropped(&mut h, DropReason::BadMac, 1);
    // Wrong key.
    let f = tunnel::seal(
        &SessionKey::new([7; 32]),
        tunnel::Direction::ToGateway,
        FrameHeader {
            session_id: SESSION,
            counter: 99,
        },
        &good,
    );
    assert_eq!(h.send_frame(&f), Err(DropReason::BadMac));
    // Unknown session.
    let f = tunnel::seal(
        &key(),
        tunnel::Direction::ToGateway,
        FrameHeader {
            session_id: 1,
            counter: 99,
        },
        &good,
    );
    assert_eq!(h.send_frame(&f), Err(DropReason::UnknownSession));
    // Forged inner source.
    let forged = udp(fam.resource_ip(3), 5000, fam.resource_ip(7), 53, b"x");
    assert_eq!(h.send(&forged), Err(DropReason::ForgedSource));
    // Not a tunnel frame at all, and a truncated one.
    assert_eq!(
        h.send_frame(&[0x00, 0x01, 0, 0]),
        Err(DropReason::NotTunnelFrame)
    );
    assert_eq!(h.send_frame(&[0xF1; 20]), Err(DropReason::MalformedFrame));
    let out = h.drain();
    assert!(out.tun.is_empty() && out.to_client.is_empty());
    assert_eq!(h.gw.open_flow_count(), 0);
    assert_eq!(
        h.gw.client_outer_context(CLIENT),
        None,
        "no dropped frame moved the client"
    );
}

fn replayed_frame_is_dropped(fam: Fam) {
    let mut h = Harness::new(fam);
    let f = h.frame(&udp_out(fam, fam.resource_ip(7), 53));
    h.send_frame(&f).unwrap();
    assert_eq!(h.send_frame(&f), Err(DropReason::Replay));
    // An old counter inside the window that was never used still passes.
    let old = tunnel::seal(
        &key(),
        tunnel::Direction::ToGateway,
        FrameHeader {
            session_id: SESSION,
            counter: 0,
        },
        &udp_out(fam, fam.resource_ip(7), 53),
    );
    h.counter = 200;
    h.send(&udp_out(fam, fam.resource_ip(7), 53)).unwrap();
    assert_eq!(
        h.send_frame(&old),
        Err(DropReason::Replay),
        "counter 0 was used"
    );
    assert_eq!(h.drain().tun.len(), 2);
    h.gw.shutdown(h.now);
    let r = h.records();
    assert_eq!(r[0].tx_packets, 2);
}

fn denied_traffic_gets_admin_prohibited(fam: Fam) {
    let mut h = Harness::new(fam);
    let denied = udp_out(fam, fam.outside_ip(), 53);
    assert_eq!(h.send(&denied), Err(DropReason::NoResource));
    let out = h.drain();
    assert!(out.tun.is_empty());
    let (src, dst, icmp) = &out.to_client[0];
    assert_eq!((*src, *dst), (client_outer().local, client_outer().remote));
    assert_checksums_valid(icmp);
    assert_eq!(src_of(icmp), fam.outside_ip());
    assert_eq!(dst_of(icmp), fam.tunnel_ip());
    let (hl, ty, code) = match fam {
        Fam::V4 => (20, 3, 13),
        Fam::V6 => (40, 1, 1),
    };
    assert_eq!((icmp[hl], icmp[hl + 1]), (ty, code));
    // The quote starts with the denied packet's header.
    assert_eq!(&icmp[hl + 8..hl + 8 + 20], &denied[..20]);
    assert_eq!(h.gw.open_flow_count(), 0);

    // Filters: only TCP 80-81 allowed.
    let res = h.cidr_resource();
    h.grant(
        res,
        vec![Filter::Tcp(PortRange {
            first: 80,
            last: 81,
        })],
    );
    assert_eq!(
        h.send(&udp_out(fam, fam.resource_ip(7), 80)),
        Err(DropReason::FilterDenied)
    );
    assert_eq!(
        h.send(&tcp(
            fam.tunnel_ip(),
            1,
            fam.resource_ip(7),
            82,
            SYN,
            0,
            0,
            b""
        )),
        Err(DropReason::FilterDenied)
    );
    assert!(
        h.send(&tcp(
            fam.tunnel_ip(),
            1,
            fam.resource_ip(7),
            81,
            SYN,
            0,
            0,
            b""
        ))
        .is_ok()
    );
    // Not granted at all.
    h.gw.revoke(CLIENT, res, h.now).unwrap();
    assert_eq!(
        h.send(&udp_out(fam, fam.resource_ip(7), 80)),
        Err(DropReason::NotGranted)
    );
    // A proxy IP with no mapping.
    assert_eq!(
        h.send(&udp_out(fam, fam.proxy_ip(9), 80)),
        Err(DropReason::UnknownProxyIp)
    );
    assert_eq!(
        h.drain().to_client.len(),
        4,
        "one ICMP error per denied packet"
    );
}

fn icmp_echo_passes_for_granted_resources(fam: Fam) {
    let mut h = Harness::new(fam);
    h.send(&echo(
        fam.tunnel_ip(),
        fam.resource_ip(7),
        true,
        9,
        1,
        b"ping!",
    ))
    .unwrap();
    h.resource_sends(&echo(
        fam.resource_ip(7),
        fam.tunnel_ip(),
        false,
        9,
        1,
        b"ping!",
    ))
    .unwrap();
    // A reply with another identifier, or an unsolicited request, does not pass.
    assert_eq!(
        h.resource_sends(&echo(
            fam.resource_ip(7),
            fam.tunnel_ip(),
            false,
            10,
            1,
            b""
        )),
        Err(DropReason::NoOpenFlow)
    );
    assert_eq!(
        h.resource_sends(&echo(fam.resource_ip(7), fam.tunnel_ip(), true, 9, 1, b"")),
        Err(DropReason::IcmpNotAllowed)
    );
    let out = h.drain();
    assert_eq!((out.tun.len(), out.to_client.len()), (1, 1));
    assert_checksums_valid(&out.to_client[0].2);
    h.gw.shutdown(h.now);
    let r = h.records();
    assert_eq!(
        (
            r[0].protocol,
            r[0].tx_bytes,
            r[0].rx_bytes,
            r[0].inner_src_port
        ),
        (Protocol::Icmp, 5, 5, 9)
    );
}

fn icmp_errors_are_translated_through_the_nat(fam: Fam) {
    let mut h = Harness::new(fam);
    let real = fam.resource_ip(42);
    h.map_and_resolve(5, "svc.example.com", real, 300);
    let proxy = fam.proxy_ip(5);
    h.send(&udp(fam.tunnel_ip(), 5000, proxy, 9999, b"hello"))
        .unwrap();
    let sent = h.drain().tun.remove(0);
    // The resource answers with port unreachable, quoting what it received.
    h.resource_sends(&port_unreachable(real, fam.tunnel_ip(), &sent))
        .unwrap();
    let (_, _, icmp) = h.drain().to_client.remove(0);
    assert_checksums_valid(&icmp);
    assert_eq!(src_of(&icmp), proxy, "outer source translated");
    let hl = if fam == Fam::V4 { 20 } else { 40 };
    let quoted = &icmp[hl + 8..];
    assert_eq!(dst_of(quoted), proxy, "quoted destination translated");
    assert_eq!(src_of(quoted), fam.tunnel_ip());
    // The quoted packet is whole here, so its own checksums must be right again.
    assert_checksums_valid(quoted);
    // An error quoting a packet of no open flow is dropped.
    let other = udp(fam.tunnel_ip(), 5001, real, 9999, b"x");
    assert_eq!(
        h.resource_sends(&port_unreachable(real, fam.tunnel_ip(), &other)),
        Err(DropReason::NoOpenFlow)
    );
    h.gw.shutdown(h.now);
    let r = h.records();
    assert_eq!((r[0].tx_packets, r[0].rx_packets, r[0].rx_bytes), (1, 1, 0));
}

fn dns_pending_queue_is_bounded_then_flushed(fam: Fam) {
    let mut h = Harness::new(fam);
    let proxy = fam.proxy_ip(5);
    h.gw.map_dns(CLIENT, proxy, "queue.example.com", h.now)
        .unwrap();
    let query = h.drain().dns.remove(0);
    for port in 0..32 {
        h.send(&udp(fam.tunnel_ip(), 1000 + port, proxy, 53, b"q"))
            .unwrap();
    }
    assert_eq!(
        h.send(&udp(fam.tunnel_ip(), 2000, proxy, 53, b"q")),
        Err(DropReason::DnsQueueFull)
    );
    assert!(h.drain().tun.is_empty(), "held while the answer is pending");
    h.advance(Duration::from_millis(5));
    h.answer_dns(&query, &[fam.resource_ip(1)], 30).unwrap();
    let tun = h.drain().tun;
    assert_eq!(tun.len(), 32);
    assert!(tun.iter().all(|p| dst_of(p) == fam.resource_ip(1)));
    assert_eq!(h.gw.open_flow_count(), 32);
    // The same answer again is unexpected now.
    assert_eq!(
        h.answer_dns(&query, &[fam.resource_ip(1)], 30),
        Err(DropReason::DnsUnexpectedAnswer)
    );
    let resolved =
        std::iter::from_fn(|| h.gw.poll_event()).any(|e| matches!(e, Event::DnsResolved { .. }));
    assert!(resolved);
}

fn dns_failure_drops_the_queue_and_retries_time_out(fam: Fam) {
    let mut h = Harness::new(fam);
    let proxy = fam.proxy_ip(5);
    h.gw.map_dns(CLIENT, proxy, "gone.example.com", h.now)
        .unwrap();
    let q = h.drain().dns.remove(0);
    h.send(&udp(fam.tunnel_ip(), 1, proxy, 53, b"q")).unwrap();
    h.answer_dns(&q, &[], 0).unwrap();
    assert_eq!(h.gw.drop_counters().get(DropReason::DnsResolutionFailed), 1);
    // The next packet asks again; unanswered queries are retried every 2 s, 3 attempts.
    h.send(&udp(fam.tunnel_ip(), 1, proxy, 53, b"q")).unwrap();
    assert_eq!(h.drain().dns.len(), 1);
    for _ in 0..2 {
        assert_eq!(h.gw.poll_timeout(), Some(h.now + Duration::from_secs(2)));
        h.advance(Duration::from_secs(2));
        assert_eq!(h.drain().dns.len(), 1, "retry");
    }
    h.advance(Duration::from_secs(2));
    assert!(h.drain().dns.is_empty());
    assert_eq!(h.gw.drop_counters().get(DropReason::DnsResolutionFailed), 2);
    assert_eq!(h.gw.poll_timeout(), None);
}

fn query_ids_are_deterministic(fam: Fam) {
    let ids = |_: ()| {
        let mut h = Harness::new(fam);
        h.gw.map_dns(CLIENT, fam.proxy_ip(1), "a.example.com", h.now)
            .unwrap();
        h.gw.map_dns(CLIENT, fam.proxy_ip(2), "b.example.com", h.now)
            .unwrap();
        h.drain().dns
    };
    let (a, b) = (ids(()), ids(()));
    assert_eq!(a, b, "byte-identical queries on every run");
    // Drawn from the seeded generator, not counted: an off-path attacker cannot read the next
    // id off the last one.
    let id = |query: &[u8]| u16::from_be_bytes([query[0], query[1]]);
    assert_ne!(id(&a[0]), 0);
    assert_ne!(
        id(&a[1]),
        id(&a[0]).wrapping_add(1),
        "ids are not sequential"
    );
    let mut reseeded = Harness::with_config(fam, |config| config.hash_seed = 99);
    reseeded
        .gw
        .map_dns(CLIENT, fam.proxy_ip(1), "a.example.com", reseeded.now)
        .unwrap();
    assert_ne!(
        id(&reseeded.drain().dns[0]),
        id(&a[0]),
        "another seed, other ids"
    );
}

/// Buffers handed back with `recycle` (here: dirty, oversized, and too many) only save
/// allocations: every packet and frame is the same as without recycling, both directions,
/// DNS NAT on.
fn recycled_buffers_change_no_output(fam: Fam) {
    let mut plain = Harness::new(fam);
    let mut recycling = Harness::new(fam);
    let real = fam.resource_ip(42);
    let proxy = fam.proxy_ip(5);
    for h in [&mut plain, &mut recycling] {
        h.map_and_resolve(5, "svc.example.com", real, 300);
    }
    for i in 0..100u16 {
        let out = udp(
            fam.tunnel_ip(),
            5000,
            proxy,
            443,
            &vec![i as u8; 1 + usize::from(i)],
        );
        let back = udp(
            real,
            443,
            fam.tunnel_ip(),
            5000,
            &vec![!i as u8; 200 - usize::from(i)],
        );
        recycling.gw.recycle(vec![0xEE; 1500]);
        recycling.gw.recycle(Vec::with_capacity(1 << 20));
        let mut results = Vec::new();
        for h in [&mut plain, &mut recycling] {
            h.send(&out).unwrap();
            h.resource_sends(&back).unwrap();
            let got = h.drain();
            assert_eq!(got.tun.len(), 1);
            assert_eq!(got.to_client.len(), 1);
            assert_checksums_valid(&got.tun[0]);
            assert_checksums_valid(&got.to_client[0].2);
            results.push((got.tun, got.to_client));
        }
        assert_eq!(results[0], results[1], "packet {i}");
    }
}

both_families!(
    recycled_buffers_change_no_output,
    forged_or_broken_frames_change_nothing,
    replayed_frame_is_dropped,
    denied_traffic_gets_admin_prohibited,
    icmp_echo_passes_for_granted_resources,
    icmp_errors_are_translated_through_the_nat,
    dns_pending_queue_is_bounded_then_flushed,
    dns_failure_drops_the_queue_and_retries_time_out,
    query_ids_are_deterministic,
);
