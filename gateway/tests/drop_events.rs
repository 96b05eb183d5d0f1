//! Drop events: every drop the gateway decides, immediate or delayed, comes with exactly one
//! `Event::PacketDropped` carrying the reason, the client and the dropped bytes, and moves
//! exactly that reason's counter.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use common::*;
use gateway::{DropReason, DroppedPacket, Event, Filter, PortRange};
use proto::flow::ClientId;
use proto::tunnel::{self, FrameHeader};

/// One `PacketDropped` event.
type Drop = (DropReason, Option<ClientId>, DroppedPacket);

/// Drains the events: the drops, and the rest.
fn events(h: &mut Harness) -> (Vec<Drop>, Vec<Event>) {
    let mut drops = Vec::new();
    let mut other = Vec::new();
    while let Some(e) = h.gw.poll_event() {
        match e {
            Event::PacketDropped {
                reason,
                client,
                packet,
            } => drops.push((reason, client, packet)),
            e => other.push(e),
        }
    }
    (drops, other)
}

/// Runs `call` and checks that it returned `result`, that its drop events are exactly
/// `expected` (in order), and that the drop counters moved by exactly those drops. Records the
/// reasons seen in `seen`. Returns the other events.
fn expect_drops(
    h: &mut Harness,
    seen: &mut BTreeSet<DropReason>,
    call: impl FnOnce(&mut Harness) -> Result<(), DropReason>,
    result: Result<(), DropReason>,
    expected: &[Drop],
) -> Vec<Event> {
    let before = h.gw.drop_counters().clone();
    assert_eq!(call(h), result);
    let (drops, other) = events(h);
    assert_eq!(drops, expected);
    for reason in DropReason::ALL {
        let moved = h.gw.drop_counters().get(*reason) - before.get(*reason);
        let reported = drops.iter().filter(|d| d.0 == *reason).count() as u64;
        assert_eq!(
            moved, reported,
            "{reason}: counter moved {moved}, {reported} event(s)"
        );
    }
    seen.extend(drops.iter().map(|d| d.0));
    other
}

/// Runs `call`, which must refuse its input with `reason`, and checks the one drop event.
fn expect_drop(
    h: &mut Harness,
    seen: &mut BTreeSet<DropReason>,
    call: impl FnOnce(&mut Harness) -> Result<(), DropReason>,
    reason: DropReason,
    client: Option<ClientId>,
    packet: DroppedPacket,
) -> Vec<Event> {
    expect_drops(h, seen, call, Err(reason), &[(reason, client, packet)])
}

fn ip(p: &[u8]) -> DroppedPacket {
    DroppedPacket::Ip(p.to_vec())
}

fn datagram(p: &[u8]) -> DroppedPacket {
    DroppedPacket::Datagram(p.to_vec())
}

fn fix_v4_header_checksum(p: &mut [u8]) {
    let hl = usize::from(p[0] & 0x0F) * 4;
    p[10..12].fill(0);
    let mut sum: u32 = p[..hl]
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// `p` (IPv4) as a first fragment (more-fragments flag set).
fn v4_fragment(mut p: Vec<u8>) -> Vec<u8> {
    p[6] |= 0x20;
    fix_v4_header_checksum(&mut p);
    p
}

/// `p` with IP protocol / next header 47 (GRE).
fn gre(mut p: Vec<u8>) -> Vec<u8> {
    if p[0] >> 4 == 4 {
        p[9] = 47;
        fix_v4_header_checksum(&mut p);
    } else {
        p[6] = 47;
    }
    p
}

fn udp_from_client(fam: Fam, sport: u16, dst: IpAddr, dport: u16) -> Vec<u8> {
    udp(fam.tunnel_ip(), sport, dst, dport, b"data")
}

/// Maps proxy IP `n` to `domain` and returns the gateway's query.
fn map(h: &mut Harness, n: u8, domain: &str) -> Vec<u8> {
    h.gw.map_dns(CLIENT, h.fam.proxy_ip(n), domain, h.now)
        .unwrap();
    let mut dns = h.drain().dns;
    assert_eq!(dns.len(), 1);
    dns.remove(0)
}

/// Every reason the gateway can produce, each once, with its client and bytes.
fn every_reason_yields_exactly_one_event(fam: Fam) {
    let mut h = Harness::with_config(fam, |c| c.dns_queue_limit = 2);
    let mut seen = BTreeSet::new();
    let s = &mut seen;
    let me = Some(CLIENT);
    let (c, r) = (fam.tunnel_ip(), fam.resource_ip(7));
    let good = udp_from_client(fam, 5000, r, 53);

    // Datagrams that are not opened: the datagram, and the client its session id names.
    let not_frame = [0x00, 0x01, 0, 0];
    expect_drop(
        &mut h,
        s,
        |h| h.send_frame(&not_frame),
        DropReason::NotTunnelFrame,
        None,
        datagram(&not_frame),
    );
    let short = [0xF1; 20];
    expect_drop(
        &mut h,
        s,
        |h| h.send_frame(&short),
        DropReason::MalformedFrame,
        None,
        datagram(&short),
    );
    let unknown = tunnel::seal(
        &key(),
        tunnel::Direction::ToGateway,
        FrameHeader {
            session_id: 1,
            counter: 1,
        },
        &good,
    );
    expect_drop(
        &mut h,
        s,
        |h| h.send_frame(&unknown),
        DropReason::UnknownSession,
        None,
        datagram(&unknown),
    );
    let mut bad_mac = h.frame(&good);
    *bad_mac.last_mut().unwrap() ^= 1;
    expect_drop(
        &mut h,
        s,
        |h| h.send_frame(&bad_mac),
        DropReason::BadMac,
        me,
        datagram(&bad_mac),
    );
    let garbage = b"not a DNS message";
    expect_drop(
        &mut h,
        s,
        |h| {
            h.gw.handle_input(dns_server(), sa("203.0.113.1:5300"), garbage, h.now)
        },
        DropReason::DnsUnexpectedAnswer,
        None,
        datagram(garbage),
    );

    // Opened frames: the inner packet as sent.
    let f = h.frame(&good);
    h.send_frame(&f).unwrap();
    h.drain();
    let roamed = events(&mut h);
    assert!(roamed.0.is_empty());
    expect_drop(
        &mut h,
        s,
        |h| h.send_frame(&f),
        DropReason::Replay,
        me,
        ip(&good),
    );
    let junk = [0x45, 0, 0, 1, 2, 3];
    expect_drop(
        &mut h,
        s,
        |h| h.send(&junk),
        DropReason::MalformedPacket,
        me,
        ip(&junk),
    );
    if fam == Fam::V4 {
        let frag = v4_fragment(udp_from_client(fam, 5001, r, 53));
        expect_drop(
            &mut h,
            s,
            |h| h.send(&frag),
            DropReason::Fragment,
            me,
            ip(&frag),
        );
    }
    let tunnelled = gre(udp_from_client(fam, 5002, r, 53));
    expect_drop(
        &mut h,
        s,
        |h| h.send(&tunnelled),
        DropReason::UnsupportedProtocol,
        me,
        ip(&tunnelled),
    );
    let forged = udp(fam.resource_ip(3), 5000, r, 53, b"x");
    expect_drop(
        &mut h,
        s,
        |h| h.send(&forged),
        DropReason::ForgedSource,
        me,
        ip(&forged),
    );
    let nowhere = udp_from_client(fam, 5003, fam.outside_ip(), 53);
    expect_drop(
        &mut h,
        s,
        |h| h.send(&nowhere),
        DropReason::NoResource,
        me,
        ip(&nowhere),
    );
    assert_eq!(h.drain().to_client.len(), 1, "ICMP prohibited");
    let res = h.cidr_resource();
    h.gw.revoke(CLIENT, res, h.now).unwrap();
    let ungranted = udp_from_client(fam, 5004, r, 53);
    expect_drop(
        &mut h,
        s,
        |h| h.send(&ungranted),
        DropReason::NotGranted,
        me,
        ip(&ungranted),
    );
    h.grant(res, vec![Filter::Tcp(PortRange::single(80))]);
    let filtered = udp_from_client(fam, 5005, r, 53);
    expect_drop(
        &mut h,
        s,
        |h| h.send(&filtered),
        DropReason::FilterDenied,
        me,
        ip(&filtered),
    );
    h.grant(res, vec![]);
    let unmapped = udp_from_client(fam, 5006, fam.proxy_ip(9), 53);
    expect_drop(
        &mut h,
        s,
        |h| h.send(&unmapped),
        DropReason::UnknownProxyIp,
        me,
        ip(&unmapped),
    );
    let late_ack = tcp(c, 6000, r, 80, ACK, 1, 1, b"");
    expect_drop(
        &mut h,
        s,
        |h| h.send(&late_ack),
        DropReason::TcpWithoutSyn,
        me,
        ip(&late_ack),
    );
    let reply = echo(c, r, false, 7, 1, b"");
    expect_drop(
        &mut h,
        s,
        |h| h.send(&reply),
        DropReason::IcmpNotAllowed,
        me,
        ip(&reply),
    );

    // Two proxy IPs resolving to the same real IP: the second flow's return path collides.
    let real = fam.resource_ip(42);
    h.map_and_resolve(1, "one.example.com", real, 300);
    h.map_and_resolve(2, "two.example.com", real, 300);
    events(&mut h);
    h.send(&udp_from_client(fam, 5007, fam.proxy_ip(1), 53))
        .unwrap();
    let colliding = udp_from_client(fam, 5007, fam.proxy_ip(2), 53);
    expect_drop(
        &mut h,
        s,
        |h| h.send(&colliding),
        DropReason::NatCollision,
        me,
        ip(&colliding),
    );

    // A full flow table (its cap here is the flows open now): a new 5-tuple is refused.
    let mut full = Harness::with_config(fam, |config| config.max_flows = 0);
    let one_too_many = udp_from_client(fam, 5008, fam.resource_ip(7), 53);
    expect_drop(
        &mut full,
        s,
        |h| h.send(&one_too_many),
        DropReason::FlowTableFull,
        me,
        ip(&one_too_many),
    );

    // Packets held for an answer: the queue is full at 2; a failed resolution drops both.
    let query = map(&mut h, 3, "three.example.com");
    let held: Vec<_> = (0..3)
        .map(|i| udp_from_client(fam, 5010 + i, fam.proxy_ip(3), 53))
        .collect();
    h.send(&held[0]).unwrap();
    h.send(&held[1]).unwrap();
    expect_drop(
        &mut h,
        s,
        |h| h.send(&held[2]),
        DropReason::DnsQueueFull,
        me,
        ip(&held[2]),
    );
    let other = expect_drops(
        &mut h,
        s,
        |h| h.answer_dns(&query, &[], 0),
        Ok(()),
        &[
            (DropReason::DnsResolutionFailed, me, ip(&held[0])),
            (DropReason::DnsResolutionFailed, me, ip(&held[1])),
        ],
    );
    assert!(matches!(other[..], [Event::DnsResolutionFailed { .. }]));

    // Resource side: the packet as read, and the client whose tunnel IP it is for.
    let unsolicited = udp(r, 53, c, 7000, b"x");
    expect_drop(
        &mut h,
        s,
        |h| h.resource_sends(&unsolicited),
        DropReason::NoOpenFlow,
        me,
        ip(&unsolicited),
    );
    let ping = echo(r, c, true, 9, 1, b"");
    expect_drop(
        &mut h,
        s,
        |h| h.resource_sends(&ping),
        DropReason::IcmpNotAllowed,
        me,
        ip(&ping),
    );
    let stray = udp(r, 53, fam.outside_ip(), 7000, b"x");
    expect_drop(
        &mut h,
        s,
        |h| h.resource_sends(&stray),
        DropReason::UnknownDestination,
        None,
        ip(&stray),
    );
    let tiny = [0x60; 10];
    expect_drop(
        &mut h,
        s,
        |h| h.resource_sends(&tiny),
        DropReason::MalformedPacket,
        None,
        ip(&tiny),
    );
    let mut bad_len = udp(r, 53, c, 7000, b"xyz");
    let l4 = if fam == Fam::V4 { 20 } else { 40 };
    bad_len[l4 + 5] ^= 0x40; // UDP length no longer matches
    expect_drop(
        &mut h,
        s,
        |h| h.resource_sends(&bad_len),
        DropReason::MalformedPacket,
        me,
        ip(&bad_len),
    );
    if fam == Fam::V4 {
        let frag = v4_fragment(udp(r, 53, c, 7000, b"x"));
        expect_drop(
            &mut h,
            s,
            |h| h.resource_sends(&frag),
            DropReason::Fragment,
            me,
            ip(&frag),
        );
    }
    let tunnelled = gre(udp(r, 53, c, 7000, b"x"));
    expect_drop(
        &mut h,
        s,
        |h| h.resource_sends(&tunnelled),
        DropReason::UnsupportedProtocol,
        me,
        ip(&tunnelled),
    );

    // Shutdown: the held packet, then every later input.
    map(&mut h, 4, "four.example.com");
    let waiting = udp_from_client(fam, 5020, fam.proxy_ip(4), 53);
    h.send(&waiting).unwrap();
    expect_drops(
        &mut h,
        s,
        |h| {
            h.gw.shutdown(h.now);
            Ok(())
        },
        Ok(()),
        &[(DropReason::ShutDown, me, ip(&waiting))],
    );
    let late = h.frame(&good);
    expect_drop(
        &mut h,
        s,
        |h| h.send_frame(&late),
        DropReason::ShutDown,
        me,
        datagram(&late),
    );
    let from_resource = udp(r, 53, c, 5000, b"x");
    expect_drop(
        &mut h,
        s,
        |h| h.resource_sends(&from_resource),
        DropReason::ShutDown,
        me,
        ip(&from_resource),
    );
    expect_drop(
        &mut h,
        s,
        |h| h.answer_dns(&query, &[real], 30),
        DropReason::ShutDown,
        None,
        datagram(&dns_response(&query, &[real], 30)),
    );

    let mut all: BTreeSet<_> = DropReason::ALL.iter().copied().collect();
    if fam == Fam::V6 {
        // IPv6 has no fragments the parser recognises: a fragment header is an extension
        // header (`unsupported-protocol`).
        all.remove(&DropReason::Fragment);
    }
    assert_eq!(seen, all, "every reason is covered");
}

/// Unanswered queries: after the last attempt, the failure is reported, then each held packet
/// in arrival order.
fn timeout_failure_drops_held_packets_in_order(fam: Fam) {
    let mut h = Harness::new(fam);
    let s = &mut BTreeSet::new();
    let me = Some(CLIENT);
    map(&mut h, 5, "slow.example.com");
    let held: Vec<_> = (0..3)
        .map(|i| udp_from_client(fam, 100 + i, fam.proxy_ip(5), 53))
        .collect();
    for p in &held {
        h.send(p).unwrap();
    }
    for _ in 0..2 {
        let advance = |h: &mut Harness| {
            h.advance(Duration::from_secs(2));
            Ok(())
        };
        expect_drops(&mut h, s, advance, Ok(()), &[]);
        assert_eq!(h.drain().dns.len(), 1, "retry");
    }
    let advance = |h: &mut Harness| {
        h.advance(Duration::from_secs(2));
        Ok(())
    };
    let expected: Vec<Drop> = held
        .iter()
        .map(|p| (DropReason::DnsResolutionFailed, me, ip(p)))
        .collect();
    let other = expect_drops(&mut h, s, advance, Ok(()), &expected);
    assert!(matches!(other[..], [Event::DnsResolutionFailed { .. }]));
    // A drop that the deadlines cause comes before the call's own.
    map(&mut h, 6, "slower.example.com");
    let first = udp_from_client(fam, 200, fam.proxy_ip(6), 53);
    h.send(&first).unwrap();
    h.advance(Duration::from_secs(2));
    h.advance(Duration::from_secs(2));
    assert_eq!(h.drain().dns.len(), 2, "attempts 2 and 3");
    h.set_time(h.elapsed() + Duration::from_secs(2));
    let denied = udp_from_client(fam, 201, fam.outside_ip(), 53);
    expect_drops(
        &mut h,
        s,
        |h| h.send(&denied),
        Err(DropReason::NoResource),
        &[
            (DropReason::DnsResolutionFailed, me, ip(&first)),
            (DropReason::NoResource, me, ip(&denied)),
        ],
    );
}

/// A mapping replaced, a mapping removed, a client removed: their held packets are dropped.
fn mapping_changes_drop_held_packets(fam: Fam) {
    let mut h = Harness::new(fam);
    let s = &mut BTreeSet::new();
    let me = Some(CLIENT);
    map(&mut h, 1, "old.example.com");
    let a = udp_from_client(fam, 1, fam.proxy_ip(1), 53);
    h.send(&a).unwrap();
    expect_drops(
        &mut h,
        s,
        |h| {
            h.gw.map_dns(CLIENT, h.fam.proxy_ip(1), "new.example.com", h.now)
                .unwrap();
            Ok(())
        },
        Ok(()),
        &[(DropReason::DnsResolutionFailed, me, ip(&a))],
    );
    assert_eq!(h.drain().dns.len(), 1, "the new domain is queried");
    let b = udp_from_client(fam, 2, fam.proxy_ip(1), 53);
    h.send(&b).unwrap();
    expect_drops(
        &mut h,
        s,
        |h| {
            h.gw.unmap_dns(CLIENT, h.fam.proxy_ip(1), h.now).unwrap();
            Ok(())
        },
        Ok(()),
        &[(DropReason::DnsResolutionFailed, me, ip(&b))],
    );
    map(&mut h, 2, "two.example.com");
    map(&mut h, 3, "three.example.com");
    let c2 = udp_from_client(fam, 3, fam.proxy_ip(2), 53);
    let c3 = udp_from_client(fam, 4, fam.proxy_ip(3), 53);
    let c2b = udp_from_client(fam, 5, fam.proxy_ip(2), 53);
    for p in [&c3, &c2, &c2b] {
        h.send(p).unwrap();
    }
    expect_drops(
        &mut h,
        s,
        |h| {
            h.gw.remove_client(CLIENT, h.now).unwrap();
            Ok(())
        },
        Ok(()),
        &[
            (DropReason::DnsResolutionFailed, me, ip(&c2)),
            (DropReason::DnsResolutionFailed, me, ip(&c2b)),
            (DropReason::DnsResolutionFailed, me, ip(&c3)),
        ],
    );
    assert_eq!(h.gw.poll_timeout(), None, "no query left");
}

/// Shutdown drops every held packet: by proxy IP, then arrival.
fn shutdown_drops_every_held_packet(fam: Fam) {
    let mut h = Harness::new(fam);
    let s = &mut BTreeSet::new();
    let me = Some(CLIENT);
    map(&mut h, 2, "two.example.com");
    map(&mut h, 1, "one.example.com");
    let p2 = udp_from_client(fam, 1, fam.proxy_ip(2), 53);
    let p1 = udp_from_client(fam, 2, fam.proxy_ip(1), 53);
    let p2b = tcp(fam.tunnel_ip(), 3, fam.proxy_ip(2), 443, SYN, 1, 0, b"");
    for p in [&p2, &p1, &p2b] {
        h.send(p).unwrap();
    }
    let shutdown = |h: &mut Harness| {
        h.gw.shutdown(h.now);
        Ok(())
    };
    expect_drops(
        &mut h,
        s,
        shutdown,
        Ok(()),
        &[
            (DropReason::ShutDown, me, ip(&p1)),
            (DropReason::ShutDown, me, ip(&p2)),
            (DropReason::ShutDown, me, ip(&p2b)),
        ],
    );
    // A second shutdown drops nothing more.
    expect_drops(&mut h, s, shutdown, Ok(()), &[]);
}

/// Held packets go through the data path again when the answer comes; one the client may no
/// longer send is dropped then (ICMP prohibited back), reported as the client sent it (the
/// proxy IP, not the real IP).
fn held_packets_denied_after_resolution(fam: Fam) {
    let mut h = Harness::new(fam);
    let s = &mut BTreeSet::new();
    let me = Some(CLIENT);
    let query = map(&mut h, 5, "app.example.com");
    let allowed = udp_from_client(fam, 1, fam.proxy_ip(5), 53);
    let filtered = udp_from_client(fam, 2, fam.proxy_ip(5), 54);
    h.send(&allowed).unwrap();
    h.send(&filtered).unwrap();
    h.grant(DNS_RESOURCE, vec![Filter::Udp(PortRange::single(53))]);
    let other = expect_drops(
        &mut h,
        s,
        |h| h.answer_dns(&query, &[h.fam.resource_ip(42)], 60),
        Ok(()),
        &[(DropReason::FilterDenied, me, ip(&filtered))],
    );
    assert!(matches!(
        other[..],
        [
            Event::ClientRoamed { .. },
            Event::DnsResolved { .. },
            Event::FlowStarted(_)
        ]
    ));
    let out = h.drain();
    assert_eq!(out.tun.len(), 1);
    assert_eq!(dst_of(&out.tun[0]), fam.resource_ip(42));
    assert_eq!(
        out.to_client.len(),
        1,
        "ICMP prohibited for the filtered one"
    );

    // Revoked while waiting.
    let query = map(&mut h, 6, "other.example.com");
    let waiting = udp_from_client(fam, 3, fam.proxy_ip(6), 53);
    h.send(&waiting).unwrap();
    h.gw.revoke(CLIENT, DNS_RESOURCE, h.now).unwrap();
    expect_drops(
        &mut h,
        s,
        |h| h.answer_dns(&query, &[h.fam.resource_ip(43)], 60),
        Ok(()),
        &[(DropReason::NotGranted, me, ip(&waiting))],
    );
    assert!(h.drain().tun.is_empty());
}

/// A dropped packet's buffer can be handed back like a transmit's.
fn dropped_buffers_can_be_recycled(fam: Fam) {
    let mut h = Harness::new(fam);
    let denied = udp_from_client(fam, 1, fam.outside_ip(), 53);
    for _ in 0..3 {
        assert_eq!(h.send(&denied), Err(DropReason::NoResource));
        let (drops, _) = events(&mut h);
        let [(_, _, packet)] = <[Drop; 1]>::try_from(drops).unwrap();
        assert_eq!(packet, ip(&denied));
        h.gw.recycle(packet.into_bytes());
        h.drain();
    }
}

both_families!(
    every_reason_yields_exactly_one_event,
    timeout_failure_drops_held_packets_in_order,
    mapping_changes_drop_held_packets,
    shutdown_drops_every_held_packet,
    held_packets_denied_after_resolution,
    dropped_buffers_can_be_recycled,
);
