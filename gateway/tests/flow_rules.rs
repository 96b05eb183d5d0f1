//! One test per flow rule of docs/flows.md, each in IPv4 and IPv6.

mod common;

use std::time::Duration;

use common::*;
use gateway::{DropReason, Event};
use proto::flow::{CloseReason, FlowRecord, Protocol};

const CPORT: u16 = 40001;
const RPORT: u16 = 443;
const SEC: Duration = Duration::from_secs(1);

fn c2r(h: &mut Harness, flags: Flags, seq: u32, ack: u32, data: &[u8]) -> Result<(), DropReason> {
    let p = tcp(
        h.fam.tunnel_ip(),
        CPORT,
        h.fam.resource_ip(7),
        RPORT,
        flags,
        seq,
        ack,
        data,
    );
    h.send(&p)
}

fn r2c(h: &mut Harness, flags: Flags, seq: u32, ack: u32, data: &[u8]) -> Result<(), DropReason> {
    let p = tcp(
        h.fam.resource_ip(7),
        RPORT,
        h.fam.tunnel_ip(),
        CPORT,
        flags,
        seq,
        ack,
        data,
    );
    h.resource_sends(&p)
}

/// SYN, SYN-ACK, ACK, one data segment each way. Client seq continues at 106, resource at 507.
fn open_with_data(h: &mut Harness) {
    c2r(h, SYN, 100, 0, b"").unwrap();
    h.advance(SEC);
    r2c(h, SYN_ACK, 500, 101, b"").unwrap();
    c2r(h, ACK, 101, 501, b"").unwrap();
    h.advance(SEC);
    c2r(h, ACK, 101, 501, b"hello").unwrap();
    r2c(h, ACK, 501, 106, b"world!").unwrap();
    h.advance(SEC);
}

fn only_record(h: &mut Harness) -> FlowRecord {
    let mut r = h.records();
    assert_eq!(r.len(), 1, "exactly one record: {r:#?}");
    r.remove(0)
}

fn assert_tcp_record(h: &Harness, r: &FlowRecord) {
    assert_eq!(r.client, CLIENT);
    assert_eq!(r.resource, h.cidr_resource());
    assert_eq!(r.protocol, Protocol::Tcp);
    assert_eq!(r.inner_src_ip, h.fam.tunnel_ip());
    assert_eq!(r.inner_src_port, CPORT);
    assert_eq!(r.inner_dst_ip, h.fam.resource_ip(7));
    assert_eq!(r.inner_dst_port, RPORT);
    assert_eq!(r.inner_domain, None);
    assert_eq!(r.outer_contexts, vec![client_outer()]);
    assert_eq!(r.start, h.utc(Duration::ZERO));
}

fn tcp_fin_close_by_client(fam: Fam) {
    let mut h = Harness::new(fam);
    open_with_data(&mut h);
    c2r(&mut h, FIN_ACK, 106, 507, b"").unwrap();
    r2c(&mut h, FIN_ACK, 507, 107, b"").unwrap();
    assert!(h.records().is_empty(), "not closed before the last ACK");
    h.advance(SEC);
    c2r(&mut h, ACK, 107, 508, b"").unwrap();
    let out = h.drain();
    assert_eq!(
        out.tun.len(),
        5,
        "every client packet, final ACK included, reached the TUN side"
    );
    assert_eq!(out.to_client.len(), 3);
    let r = only_record(&mut h);
    assert_tcp_record(&h, &r);
    assert_eq!(r.close_reason, CloseReason::Fin);
    assert_eq!(
        (r.tx_packets, r.tx_bytes, r.rx_packets, r.rx_bytes),
        (5, 5, 3, 6)
    );
    assert_eq!(r.end, h.utc(4 * SEC));
    assert_eq!(r.last_packet, r.end);
    assert_eq!(h.gw.open_flow_count(), 0);
}

fn tcp_fin_close_by_resource(fam: Fam) {
    let mut h = Harness::new(fam);
    open_with_data(&mut h);
    r2c(&mut h, FIN_ACK, 507, 106, b"").unwrap();
    c2r(&mut h, FIN_ACK, 106, 508, b"").unwrap();
    assert!(h.records().is_empty());
    h.advance(SEC);
    r2c(&mut h, ACK, 508, 107, b"").unwrap();
    let r = only_record(&mut h);
    assert_tcp_record(&h, &r);
    assert_eq!(r.close_reason, CloseReason::Fin);
    assert_eq!(
        (r.tx_packets, r.tx_bytes, r.rx_packets, r.rx_bytes),
        (4, 5, 4, 6)
    );
    assert_eq!(r.end, h.utc(4 * SEC));
}

fn tcp_rst_from_client(fam: Fam) {
    let mut h = Harness::new(fam);
    open_with_data(&mut h);
    c2r(&mut h, RST, 106, 0, b"").unwrap();
    assert_eq!(h.drain().tun.len(), 4, "the RST itself is forwarded");
    let r = only_record(&mut h);
    assert_tcp_record(&h, &r);
    assert_eq!(r.close_reason, CloseReason::Rst);
    assert_eq!((r.tx_packets, r.rx_packets), (4, 2));
    assert_eq!(r.end, h.utc(3 * SEC));
    // Anything after the RST belongs to no flow.
    assert_eq!(
        r2c(&mut h, ACK, 507, 106, b"late"),
        Err(DropReason::NoOpenFlow)
    );
    assert!(h.records().is_empty());
}

fn tcp_rst_from_resource(fam: Fam) {
    let mut h = Harness::new(fam);
    c2r(&mut h, SYN, 100, 0, b"").unwrap();
    h.advance(SEC);
    r2c(&mut h, RST, 0, 101, b"").unwrap();
    assert_eq!(h.drain().to_client.len(), 1, "the RST reaches the client");
    let r = only_record(&mut h);
    assert_eq!(r.close_reason, CloseReason::Rst);
    assert_eq!(
        (r.tx_packets, r.rx_packets, r.tx_bytes, r.rx_bytes),
        (1, 1, 0, 0)
    );
    assert_eq!(r.end, h.utc(SEC));
}

fn tcp_retransmitted_syn_is_one_flow(fam: Fam) {
    let mut h = Harness::new(fam);
    c2r(&mut h, SYN, 100, 0, b"").unwrap();
    h.advance(SEC);
    c2r(&mut h, SYN, 100, 0, b"").unwrap();
    h.advance(2 * SEC);
    c2r(&mut h, SYN, 100, 0, b"").unwrap();
    r2c(&mut h, SYN_ACK, 500, 101, b"").unwrap();
    assert_eq!(h.gw.open_flow_count(), 1);
    h.gw.shutdown(h.now);
    let r = only_record(&mut h);
    assert_eq!((r.tx_packets, r.rx_packets), (3, 1));
    assert_eq!(r.start, h.utc(Duration::ZERO));
}

fn tcp_late_ack_after_close_makes_no_ghost(fam: Fam) {
    let mut h = Harness::new(fam);
    open_with_data(&mut h);
    c2r(&mut h, FIN_ACK, 106, 507, b"").unwrap();
    r2c(&mut h, FIN_ACK, 507, 107, b"").unwrap();
    c2r(&mut h, ACK, 107, 508, b"").unwrap();
    assert_eq!(h.records().len(), 1);
    h.drain();
    // A retransmitted final ACK and FIN from the client, a retransmitted FIN from the resource.
    assert_eq!(
        c2r(&mut h, ACK, 107, 508, b""),
        Err(DropReason::TcpWithoutSyn)
    );
    assert_eq!(
        c2r(&mut h, FIN_ACK, 106, 508, b""),
        Err(DropReason::TcpWithoutSyn)
    );
    assert_eq!(
        r2c(&mut h, FIN_ACK, 507, 107, b""),
        Err(DropReason::NoOpenFlow)
    );
    let out = h.drain();
    assert!(
        out.tun.is_empty() && out.to_client.is_empty(),
        "late packets are not forwarded"
    );
    assert_eq!(h.gw.open_flow_count(), 0);
    h.gw.shutdown(h.now);
    assert!(h.records().is_empty(), "no ghost record");
    assert_eq!(h.gw.drop_counters().get(DropReason::TcpWithoutSyn), 2);
    assert_eq!(h.gw.drop_counters().get(DropReason::NoOpenFlow), 1);
}

fn tcp_new_connection_on_same_five_tuple(fam: Fam) {
    let mut h = Harness::new(fam);
    c2r(&mut h, SYN, 100, 0, b"").unwrap();
    r2c(&mut h, RST, 0, 101, b"").unwrap();
    h.advance(SEC);
    c2r(&mut h, SYN, 9000, 0, b"").unwrap();
    r2c(&mut h, SYN_ACK, 7000, 9001, b"").unwrap();
    h.advance(SEC);
    c2r(&mut h, RST, 9001, 0, b"").unwrap();
    let r = h.records();
    assert_eq!(r.len(), 2);
    assert_eq!(
        (r[0].start, r[0].end, r[0].tx_packets, r[0].rx_packets),
        (h.utc(Duration::ZERO), h.utc(Duration::ZERO), 1, 1)
    );
    assert_eq!(
        (r[1].start, r[1].end, r[1].tx_packets, r[1].rx_packets),
        (h.utc(SEC), h.utc(2 * SEC), 2, 1)
    );
    assert_eq!(r[0].inner_src_port, r[1].inner_src_port);
}

fn udp_idle_expiry_exactly_at_last_packet_plus_timeout(fam: Fam) {
    let mut h = Harness::with_config(fam, |c| c.idle_timeout = Duration::from_secs(30));
    let out = udp(fam.tunnel_ip(), 5000, fam.resource_ip(7), 53, b"query");
    let back = udp(fam.resource_ip(7), 53, fam.tunnel_ip(), 5000, b"answer!");
    h.send(&out).unwrap();
    h.advance(10 * SEC);
    h.resource_sends(&back).unwrap();
    h.advance(5 * SEC);
    h.send(&out).unwrap(); // last packet at 15 s
    // The deadline may be reported early (lazy re-arming) but never late.
    let mut wakeups = 0;
    while let Some(deadline) = h.gw.poll_timeout() {
        assert!(deadline <= h.t0 + Duration::from_secs(45));
        h.now = h.now.max(deadline);
        h.gw.handle_timeout(deadline);
        wakeups += 1;
        assert!(wakeups < 10);
    }
    let r = h.records();
    assert_eq!(r.len(), 1);
    assert_eq!(
        h.now,
        h.t0 + Duration::from_secs(45),
        "closed exactly at last_packet + timeout"
    );

    // And not one tick before: a fresh gateway checked 1 ns early keeps the flow open.
    let mut h2 = Harness::with_config(fam, |c| c.idle_timeout = Duration::from_secs(30));
    h2.send(&out).unwrap();
    h2.set_time(Duration::from_secs(30) - Duration::from_nanos(1));
    h2.gw.handle_timeout(h2.now);
    assert!(h2.records().is_empty());
    assert_eq!(h2.gw.open_flow_count(), 1);
    h2.set_time(Duration::from_secs(30));
    h2.gw.handle_timeout(h2.now);
    assert_eq!(h2.records().len(), 1);

    let r = &r[0];
    assert_eq!(r.close_reason, CloseReason::Idle);
    assert_eq!(r.protocol, Protocol::Udp);
    assert_eq!(r.last_packet, h.utc(15 * SEC));
    assert_eq!(r.end, r.last_packet, "idle end = last packet");
    assert_eq!(
        (r.tx_packets, r.tx_bytes, r.rx_packets, r.rx_bytes),
        (2, 10, 1, 7)
    );
    // After expiry a new packet on the same 4-tuple starts a new flow.
    h.send(&out).unwrap();
    assert_eq!(h.gw.open_flow_count(), 1);
}

fn path_change_mid_flow_is_one_record(fam: Fam) {
    let mut h = Harness::new(fam);
    let out = udp(fam.tunnel_ip(), 5000, fam.resource_ip(7), 53, b"a");
    let back = udp(fam.resource_ip(7), 53, fam.tunnel_ip(), 5000, b"b");
    h.send(&out).unwrap();
    h.resource_sends(&back).unwrap();
    h.advance(SEC);
    h.outer = roamed_outer();
    h.send(&out).unwrap();
    h.resource_sends(&back).unwrap();
    let out_frames = h.drain().to_client;
    assert_eq!(out_frames[0].1, client_outer().remote);
    assert_eq!(
        out_frames[1].1,
        roamed_outer().remote,
        "replies follow the client"
    );
    assert_eq!(out_frames[1].0, roamed_outer().local);
    let events: Vec<_> = std::iter::from_fn(|| h.gw.poll_event()).collect();
    assert!(events.contains(&Event::ClientRoamed {
        client: CLIENT,
        from: Some(client_outer()),
        to: roamed_outer()
    }));
    h.gw.shutdown(h.now);
    let r = only_record(&mut h);
    assert_eq!(r.outer_contexts, vec![client_outer(), roamed_outer()]);
    assert_eq!((r.tx_packets, r.rx_packets), (2, 2));
    assert_eq!(r.close_reason, CloseReason::Shutdown);
}

/// A frame that passes MAC, replay window and source is accepted even when its packet is
/// denied: it proves where the client is, so it moves the client (flows.md, "Roaming").
fn a_denied_packet_from_a_new_outer_context_moves_the_client(fam: Fam) {
    let mut h = Harness::new(fam);
    let out = udp(fam.tunnel_ip(), 5000, fam.resource_ip(7), 53, b"a");
    let back = udp(fam.resource_ip(7), 53, fam.tunnel_ip(), 5000, b"b");
    h.send(&out).unwrap();
    h.drain();
    h.outer = roamed_outer();
    let ack_without_flow = tcp(
        fam.tunnel_ip(),
        6000,
        fam.resource_ip(7),
        443,
        ACK,
        1,
        1,
        b"",
    );
    assert_eq!(h.send(&ack_without_flow), Err(DropReason::TcpWithoutSyn));
    h.resource_sends(&back).unwrap();
    let to_client = h.drain().to_client;
    assert_eq!(to_client.len(), 1);
    assert_eq!(
        to_client[0].1,
        roamed_outer().remote,
        "the reply follows the client"
    );
    assert_eq!(to_client[0].0, roamed_outer().local);
    h.gw.shutdown(h.now);
    let r = only_record(&mut h);
    assert_eq!(r.outer_contexts, vec![client_outer(), roamed_outer()]);
}

fn dns_flow_carries_domain(fam: Fam) {
    for (domain, resource_pattern) in [
        ("app.example.com", None),
        ("db.internal.test", Some("**.internal.test")),
    ] {
        let mut h = Harness::new(fam);
        let resource = match resource_pattern {
            None => DNS_RESOURCE,
            Some(p) => {
                let id = proto::flow::ResourceId(30);
                h.gw.add_resource(gateway::Resource {
                    id,
                    address: gateway::ResourceAddress::Dns(p.parse().unwrap()),
                })
                .unwrap();
                h.grant(id, vec![]);
                id
            }
        };
        let real = fam.resource_ip(42);
        h.map_and_resolve(5, domain, real, 300);
        let proxy = fam.proxy_ip(5);
        h.send(&tcp(fam.tunnel_ip(), CPORT, proxy, 80, SYN, 1, 0, b""))
            .unwrap();
        let tun = h.drain().tun;
        assert_eq!(dst_of(&tun[0]), real, "destination NATed to the real IP");
        assert_checksums_valid(&tun[0]);
        h.resource_sends(&tcp(real, 80, fam.tunnel_ip(), CPORT, SYN_ACK, 9, 2, b""))
            .unwrap();
        let back = h.drain().to_client;
        assert_eq!(
            src_of(&back[0].2),
            proxy,
            "source NATed back to the proxy IP"
        );
        assert_checksums_valid(&back[0].2);
        h.send(&tcp(fam.tunnel_ip(), CPORT, proxy, 80, RST, 2, 0, b""))
            .unwrap();
        let r = only_record(&mut h);
        assert_eq!(r.inner_domain.as_deref(), Some(domain));
        assert_eq!(r.inner_dst_ip, real);
        assert_eq!(r.resource, resource);
        assert_eq!(r.close_reason, CloseReason::Rst);
    }
}

fn dns_record_change_while_flow_open(fam: Fam) {
    let mut h = Harness::new(fam);
    let (old_ip, new_ip) = (fam.resource_ip(1), fam.resource_ip(2));
    h.map_and_resolve(5, "api.example.com", old_ip, 60);
    let proxy = fam.proxy_ip(5);
    let first = udp(fam.tunnel_ip(), 6000, proxy, 53, b"one");
    h.send(&first).unwrap();
    // The TTL runs out: the gateway asks again by itself.
    h.advance(60 * SEC);
    let q = h.drain().dns;
    assert_eq!(q.len(), 1, "re-resolution on TTL expiry");
    h.answer_dns(&q[0], &[new_ip], 60).unwrap();
    // The open flow keeps its real IP; a new flow uses the new answer.
    h.send(&first).unwrap();
    h.send(&udp(fam.tunnel_ip(), 6001, proxy, 53, b"two"))
        .unwrap();
    let tun = h.drain().tun;
    assert_eq!(dst_of(&tun[0]), old_ip);
    assert_eq!(dst_of(&tun[1]), new_ip);
    assert!(
        h.resource_sends(&udp(old_ip, 53, fam.tunnel_ip(), 6000, b"x"))
            .is_ok()
    );
    h.gw.shutdown(h.now);
    let r = h.records();
    assert_eq!(r.len(), 2);
    assert_eq!(
        (r[0].inner_dst_ip, r[0].tx_packets, r[0].rx_packets),
        (old_ip, 2, 1)
    );
    assert_eq!((r[1].inner_dst_ip, r[1].tx_packets), (new_ip, 1));
    assert!(
        r.iter()
            .all(|r| r.inner_domain.as_deref() == Some("api.example.com"))
    );
}

fn revocation_while_flow_open(fam: Fam) {
    let mut h = Harness::new(fam);
    let out = udp(fam.tunnel_ip(), 5000, fam.resource_ip(7), 53, b"a");
    h.send(&out).unwrap();
    h.advance(3 * SEC);
    let res = h.cidr_resource();
    h.gw.revoke(CLIENT, res, h.now).unwrap();
    let r = only_record(&mut h);
    assert_eq!(r.close_reason, CloseReason::Revoked);
    assert_eq!(r.end, h.utc(3 * SEC));
    assert_eq!(r.last_packet, h.utc(Duration::ZERO));
    h.drain();
    // Later packets: the client's are denied (ICMP back), the resource's match no flow.
    assert_eq!(h.send(&out), Err(DropReason::NotGranted));
    assert_eq!(h.drain().to_client.len(), 1, "ICMP prohibited");
    assert_eq!(
        h.resource_sends(&udp(fam.resource_ip(7), 53, fam.tunnel_ip(), 5000, b"b")),
        Err(DropReason::NoOpenFlow)
    );
    assert_eq!(h.gw.open_flow_count(), 0);
}

fn shutdown_flushes_every_open_flow(fam: Fam) {
    let mut h = Harness::new(fam);
    h.send(&udp(fam.tunnel_ip(), 5000, fam.resource_ip(7), 53, b"a"))
        .unwrap();
    h.advance(SEC);
    c2r(&mut h, SYN, 1, 0, b"").unwrap();
    h.send(&echo(
        fam.tunnel_ip(),
        fam.resource_ip(8),
        true,
        77,
        1,
        b"ping",
    ))
    .unwrap();
    h.advance(SEC);
    h.gw.shutdown(h.now);
    let r = h.records();
    assert_eq!(r.len(), 3);
    assert!(
        r.iter()
            .all(|r| r.close_reason == CloseReason::Shutdown && r.end == h.utc(2 * SEC))
    );
    assert_eq!(
        r.iter().map(|r| r.protocol).collect::<Vec<_>>(),
        vec![Protocol::Udp, Protocol::Tcp, Protocol::Icmp]
    );
    assert_eq!(
        (r[2].inner_src_port, r[2].inner_dst_port, r[2].tx_bytes),
        (77, 0, 4)
    );
    assert_eq!(h.gw.open_flow_count(), 0);
    assert_eq!(h.gw.poll_timeout(), None);
    assert_eq!(c2r(&mut h, SYN, 1, 0, b""), Err(DropReason::ShutDown));
}

both_families!(
    tcp_fin_close_by_client,
    tcp_fin_close_by_resource,
    tcp_rst_from_client,
    tcp_rst_from_resource,
    tcp_retransmitted_syn_is_one_flow,
    tcp_late_ack_after_close_makes_no_ghost,
    tcp_new_connection_on_same_five_tuple,
    udp_idle_expiry_exactly_at_last_packet_plus_timeout,
    path_change_mid_flow_is_one_record,
    a_denied_packet_from_a_new_outer_context_moves_the_client,
    dns_flow_carries_domain,
    dns_record_change_while_flow_open,
    revocation_while_flow_open,
    shutdown_flushes_every_open_flow,
);
