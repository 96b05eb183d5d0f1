//! Every resource the gateway holds for others is bounded, and hitting a bound is counted
//! (docs/flows.md, "Bounds"): the flow table and each client's share of it, DNS TTLs, and the
//! outer contexts flows remember; and what an off-path attacker must guess to forge a DNS
//! answer.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use gateway::DropReason;

fn new_flow(fam: Fam, port: u16) -> Vec<u8> {
    udp(fam.tunnel_ip(), port, fam.resource_ip(7), 53, b"flood")
}

/// A flood of new 5-tuples stops at the client's cap: each packet past it is dropped and
/// counted, the open flows go on, and every flow still gets its record.
fn a_flood_of_new_flows_stops_at_the_per_client_cap(fam: Fam) {
    let mut h = Harness::with_config(fam, |config| config.max_flows_per_client = 100);
    for port in 0..1000u16 {
        let result = h.send(&new_flow(fam, 10_000 + port));
        if port < 100 {
            assert_eq!(result, Ok(()), "flow {port}");
        } else {
            assert_eq!(result, Err(DropReason::FlowTableFull), "flow {port}");
        }
    }
    assert_eq!(h.gw.open_flow_count(), 100);
    let occupancy = h.gw.occupancy();
    assert_eq!(
        (occupancy.flows, occupancy.most_flows_of_one_client),
        (100, 100)
    );
    assert_eq!(occupancy.breaches(h.gw.config()), Vec::<String>::new());
    assert_eq!(h.gw.drop_counters().get(DropReason::FlowTableFull), 900);
    assert_eq!(h.gw.drop_counters().total(), 900);
    // An open flow keeps going at the cap.
    assert_eq!(h.send(&new_flow(fam, 10_000)), Ok(()));
    h.drain();
    // Once flows close (idle), there is room again.
    h.advance(Duration::from_secs(121));
    assert_eq!(h.gw.open_flow_count(), 0);
    assert_eq!(h.send(&new_flow(fam, 20_000)), Ok(()));
    h.gw.shutdown(h.now);
    let records = h.records();
    assert_eq!(records.len(), 101, "every flow that opened has its record");
}

fn the_table_cap_holds_over_all_clients(fam: Fam) {
    let mut h = Harness::with_config(fam, |config| config.max_flows = 10);
    for port in 0..10u16 {
        h.send(&new_flow(fam, 30_000 + port)).unwrap();
    }
    assert_eq!(
        h.send(&new_flow(fam, 40_000)),
        Err(DropReason::FlowTableFull)
    );
    assert_eq!(h.gw.open_flow_count(), 10);
}

/// A huge TTL is kept only up to the cap: the mapping is asked again after it.
fn dns_ttls_are_capped(fam: Fam) {
    let mut h = Harness::with_config(fam, |config| config.dns_max_ttl = Duration::from_secs(60));
    // The largest TTL there is (RFC 2181 §8: 2^31 - 1 seconds, about 68 years).
    h.map_and_resolve(1, "a.example.com", fam.resource_ip(9), i32::MAX as u32);
    h.advance(Duration::from_secs(59));
    assert!(h.drain().dns.is_empty(), "still fresh before the cap");
    h.advance(Duration::from_secs(2));
    assert_eq!(h.drain().dns.len(), 1, "asked again after the capped TTL");
}

/// With source ports of its own, the gateway spreads its queries over them (drawn, not
/// sequential), and takes an answer only from the server, at the port its query left from:
/// a forged answer with the right id and name but the wrong port or source changes nothing.
fn dns_answers_must_come_from_the_server_to_the_querys_port(fam: Fam) {
    let mut h = Harness::with_config(fam, |config| {
        config.dns_source_ports = Some(40_000..=40_063);
    });
    let mut ports = std::collections::BTreeSet::new();
    for n in 1..=20u8 {
        h.gw.map_dns(CLIENT, fam.proxy_ip(n), "a.example.com", h.now)
            .unwrap();
        let out = h.drain();
        ports.insert(out.dns_from[0].port());
    }
    assert!(ports.len() > 10, "20 queries from {} ports", ports.len());

    h.gw.map_dns(CLIENT, fam.proxy_ip(30), "b.example.com", h.now)
        .unwrap();
    let out = h.drain();
    let (query, from) = (&out.dns[0], out.dns_from[0]);
    let forged = dns_response(query, &[fam.outside_ip()], 300);
    let other_port = SocketAddr::new(from.ip(), 40_000 + (from.port() - 40_000 + 1) % 64);
    let attacker = sa("192.0.2.66:53");
    for (source, to) in [(dns_server(), other_port), (attacker, from)] {
        assert_eq!(
            h.gw.handle_input(source, to, &forged, h.now),
            Err(DropReason::DnsUnexpectedAnswer),
            "from {source} to {to}"
        );
    }
    assert_eq!(h.gw.drop_counters().get(DropReason::DnsUnexpectedAnswer), 2);
    // The mapping still waits: the real answer, to the right port, is taken.
    let real = dns_response(query, &[fam.resource_ip(7)], 300);
    h.gw.handle_input(dns_server(), from, &real, h.now)
        .expect("the real answer");
    h.send(&udp(fam.tunnel_ip(), 41_000, fam.proxy_ip(30), 5000, b"x"))
        .expect("forwarded");
    let out = h.drain();
    assert_eq!(
        dst_of(&out.tun[0]),
        fam.resource_ip(7),
        "to the real address"
    );
}

/// A client that roams through many addresses leaves no trail of outer contexts behind once
/// its flows close: records keep theirs, the dead ones are pruned.
fn outer_contexts_of_closed_flows_are_forgotten(fam: Fam) {
    let mut h = Harness::new(fam);
    for round in 0..3000u16 {
        h.outer.remote.set_port(20_000 + round);
        h.send(&new_flow(fam, 50_000)).unwrap();
        if round % 100 == 99 {
            h.advance(Duration::from_secs(121));
        }
    }
    h.gw.shutdown(h.now);
    let records = h.records();
    assert_eq!(records.len(), 30);
    // The last flow saw the last ports: its contexts are the latest, first-seen first.
    let last = records.last().unwrap();
    assert_eq!(last.outer_contexts[0].remote.port(), 20_000 + 2900);
    assert!(
        h.gw.interned_outer_contexts() < 3000,
        "{} contexts kept",
        h.gw.interned_outer_contexts()
    );
}

both_families!(
    a_flood_of_new_flows_stops_at_the_per_client_cap,
    the_table_cap_holds_over_all_clients,
    dns_ttls_are_capped,
    dns_answers_must_come_from_the_server_to_the_querys_port,
    outer_contexts_of_closed_flows_are_forgotten,
);
