//! TCP flows: a whole connection, closes and resets by either side, retransmitted and lost
//! SYNs, late ACKs, and a new connection on the same ports.

use model::{
    ClientId, CloseReason, DropPlace, DropReason, GatewayDropReason, Packet, Protocol, TcpFlags,
    UtcTime,
};

use crate::{ALICE, GW, at, client_deliveries, outer, record, sa, scenario, tcp};

#[test]
fn tcp_life_closed_by_the_client_with_fin() {
    // open at 2000: SYN at gw 2010 (start), SYN-ACK at gw 2012, at alice 2022, ACK at gw 2032.
    // client data (100) at 3000: gw 3010, resource ACK at gw 3012.
    // resource data (50) at 4000: gw 4001, alice 4011, her ACK at gw 4021.
    // close by client at 5000: FIN gw 5010, FIN-ACK gw 5012, final ACK gw 5032 = end (fin).
    // tx: SYN ACK data ACK FIN ACK = 6 / 100 bytes; rx: SYN-ACK ACK data FIN-ACK = 4 / 50.
    let s = scenario(
        "",
        "  - tcp-open: { conn: 1, client: alice, resource: web, port: 443 }\n  - tcp-data: { conn: 1, from: client, bytes: 100 }\n  - tcp-data: { conn: 1, from: resource, bytes: 50 }\n  - tcp-close: { conn: 1, by: client }",
    );
    let p = model::predict(&s).unwrap();
    let ctx = outer(ALICE, GW);
    assert_eq!(
        p.flows,
        vec![record(
            Protocol::Tcp,
            (2010, 5032, 5032),
            "100.64.0.2:30001",
            "198.51.100.10:443",
            vec![ctx],
            (6, 100, 4, 50),
            CloseReason::Fin,
        )]
    );
    // What alice receives: SYN-ACK (5000, ack 1001) at 2022; ACK of her data (ack 1101) at
    // 3022; data seq 5001 at 4011; FIN-ACK seq 5051 ack 1102 at 5022.
    let web = "198.51.100.10:443";
    let me = "100.64.0.2:30001";
    let expected: Vec<(u64, Packet)> = [
        (2022, tcp(TcpFlags::SYN_ACK, 5000, 1001, 0)),
        (3022, tcp(TcpFlags::ACK, 5001, 1101, 0)),
        (4011, tcp(TcpFlags::PSH_ACK, 5001, 1101, 50)),
        (5022, tcp(TcpFlags::FIN_ACK, 5051, 1102, 0)),
    ]
    .into_iter()
    .map(|(t, kind)| {
        (
            t,
            Packet {
                src: sa(web),
                dst: sa(me),
                kind,
            },
        )
    })
    .collect();
    assert_eq!(client_deliveries(&p), expected);
}

#[test]
fn tcp_closed_by_the_resource_then_a_late_ack_is_dropped() {
    // open: SYN 2010, SYN-ACK 2012, ACK 2032. close by resource at 3000: FIN at gw 3001 (rx),
    // alice 3011, her FIN-ACK at gw 3021 (tx), resource 3022, final ACK at gw 3023 (rx): fin.
    // late ACK at 4000 reaches the gateway at 4010 with no open flow: tcp-without-syn.
    let s = scenario(
        "",
        "  - tcp-open: { conn: 2, client: alice, resource: web, port: 80 }\n  - tcp-close: { conn: 2, by: resource }\n  - tcp-late-ack: { conn: 2 }",
    );
    let p = model::predict(&s).unwrap();
    assert_eq!(
        p.flows,
        vec![record(
            Protocol::Tcp,
            (2010, 3023, 3023),
            "100.64.0.2:30002",
            "198.51.100.10:80",
            vec![outer(ALICE, GW)],
            (3, 0, 3, 0),
            CloseReason::Fin,
        )]
    );
    assert_eq!(p.drops.len(), 1);
    let drop = &p.drops[0];
    assert_eq!(drop.at_ms, 4010);
    assert_eq!(
        drop.reason,
        DropReason::Gateway(GatewayDropReason::TcpWithoutSyn)
    );
    assert_eq!(
        drop.place,
        DropPlace::Gateway {
            gateway: 0,
            client: Some(ClientId(0))
        }
    );
    // The final ACK reached alice at 3033; connection 2's SYN carried `client_isn(2)`
    // (101000), so it acknowledges 101002.
    assert!(client_deliveries(&p).contains(&(
        3033,
        Packet {
            src: sa("198.51.100.10:80"),
            dst: sa("100.64.0.2:30002"),
            kind: tcp(TcpFlags::ACK, 5002, 101_002, 0),
        }
    )));
}

#[test]
fn tcp_reset_by_either_side() {
    // Client RST at 3000 reaches the gateway at 3010: rst, end 3010; tx SYN ACK RST, rx SYN-ACK.
    // Resource RST at 3000 (second scenario) reaches the gateway at 3001: end 3001, rx 2.
    let by_client = scenario(
        "",
        "  - tcp-open: { conn: 1, client: alice, resource: web, port: 22 }\n  - tcp-reset: { conn: 1, by: client }",
    );
    let by_resource = scenario(
        "",
        "  - tcp-open: { conn: 1, client: alice, resource: web, port: 22 }\n  - tcp-reset: { conn: 1, by: resource }",
    );
    let ctx = outer(ALICE, GW);
    let expected = |end, counts| {
        vec![record(
            Protocol::Tcp,
            (2010, end, end),
            "100.64.0.2:30001",
            "198.51.100.10:22",
            vec![ctx],
            counts,
            CloseReason::Rst,
        )]
    };
    assert_eq!(
        model::predict(&by_client).unwrap().flows,
        expected(3010, (3, 0, 1, 0))
    );
    assert_eq!(
        model::predict(&by_resource).unwrap().flows,
        expected(3001, (2, 0, 2, 0))
    );
}

#[test]
fn a_retransmitted_syn_stays_in_one_record() {
    // open at 2000 (SYN 2010, SYN-ACK 2012, ACK 2032); the same SYN again at 3000: gw 3010,
    // and the resource, whose handshake is complete, answers with a challenge ACK (gw 3012),
    // which nothing answers. One record, tx 3 rx 2, shutdown at t_end 4000.
    let s = scenario(
        "",
        "  - tcp-open: { conn: 1, client: alice, resource: web, port: 443 }\n  - tcp-retransmit-syn: { conn: 1 }",
    );
    let p = model::predict(&s).unwrap();
    assert_eq!(
        p.flows,
        vec![record(
            Protocol::Tcp,
            (2010, 3012, 4000),
            "100.64.0.2:30001",
            "198.51.100.10:443",
            vec![outer(ALICE, GW)],
            (3, 0, 2, 0),
            CloseReason::Shutdown,
        )]
    );
}

#[test]
fn a_lost_syn_then_its_retransmission_starts_the_flow() {
    // drop-next 1 on alice-gw at 2000; SYN sent at 3000 is dropped on the link (no flow).
    // Retransmitted at 4000: start 4010, SYN-ACK 4012, ACK 4032; shutdown at 5000.
    let s = scenario(
        "",
        "  - fault: { between: [alice, gw], fault: { drop-next: 1 } }\n  - tcp-open: { conn: 1, client: alice, resource: web, port: 443 }\n  - tcp-retransmit-syn: { conn: 1 }",
    );
    let p = model::predict(&s).unwrap();
    assert_eq!(
        p.flows,
        vec![record(
            Protocol::Tcp,
            (4010, 4032, 5000),
            "100.64.0.2:30001",
            "198.51.100.10:443",
            vec![outer(ALICE, GW)],
            (2, 0, 1, 0),
            CloseReason::Shutdown,
        )]
    );
    assert_eq!(p.drops.len(), 1);
    assert_eq!(p.drops[0].at_ms, 3000);
    assert_eq!(p.drops[0].reason, DropReason::DropNext);
    assert_eq!(
        p.drops[0].place,
        DropPlace::Link {
            between: ["alice".into(), "gw".into()]
        }
    );
}

#[test]
fn a_new_connection_on_the_same_ports_after_a_close_is_a_new_record() {
    // conn 1 opened at 2000 and reset by the resource at 3000 (gw 3001, rst). Opened again at
    // 4000: same 5-tuple, new record 4010..4032, shutdown at 5000.
    let s = scenario(
        "",
        "  - tcp-open: { conn: 1, client: alice, resource: web, port: 443 }\n  - tcp-reset: { conn: 1, by: resource }\n  - tcp-open: { conn: 1, client: alice, resource: web, port: 443 }",
    );
    let p = model::predict(&s).unwrap();
    let summary: Vec<(UtcTime, UtcTime, CloseReason, u64, u64)> = p
        .flows
        .iter()
        .map(|f| (f.start, f.end, f.close_reason, f.tx_packets, f.rx_packets))
        .collect();
    assert_eq!(
        summary,
        vec![
            (at(2010), at(3001), CloseReason::Rst, 2, 2),
            (at(4010), at(5000), CloseReason::Shutdown, 2, 1)
        ]
    );
}
