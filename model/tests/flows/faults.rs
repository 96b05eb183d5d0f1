//! Gateway restarts, link faults (partitions, holds, lost replies), and what the model does
//! not cover.

use model::{CloseReason, DropReason, Protocol, UtcTime};

use crate::{ALICE, GW, at, client_deliveries, outer, record, scenario};

#[test]
fn a_gateway_restart_flushes_and_starts_afresh() {
    // UDP at 2000 (2010..2012); restart at 3000: shutdown, end 3000. UDP at 4000: new flow
    // 4010..4012; final shutdown at 5000.
    let s = scenario(
        "",
        "  - udp: { client: alice, resource: web, port: 9, bytes: 5 }\n  - gateway-restart: { gateway: gw }\n  - udp: { client: alice, resource: web, port: 9, bytes: 5 }",
    );
    let p = model::predict(&s).unwrap();
    let ends: Vec<(UtcTime, UtcTime, CloseReason)> = p
        .flows
        .iter()
        .map(|f| (f.start, f.end, f.close_reason))
        .collect();
    assert_eq!(
        ends,
        vec![
            (at(2010), at(3000), CloseReason::Shutdown),
            (at(4010), at(5000), CloseReason::Shutdown)
        ]
    );
}

#[test]
fn partition_drops_until_heal_and_hold_delivers_at_release() {
    // partition at 2000: UDP at 3000 is dropped on the link (no flow). heal at 4000.
    // hold at 5000: UDP at 6000 is held; release at 7000 delivers it to the gateway at 7000
    // (start), echo 7002, alice 7012. Shutdown at 8000.
    let s = scenario(
        "",
        "  - fault: { between: [gw, alice], fault: partition }\n  - udp: { client: alice, resource: web, port: 9, bytes: 5 }\n  - fault: { between: [gw, alice], fault: heal }\n  - fault: { between: [alice, gw], fault: hold }\n  - udp: { client: alice, resource: web, port: 9, bytes: 7 }\n  - fault: { between: [alice, gw], fault: release }",
    );
    let p = model::predict(&s).unwrap();
    assert_eq!(
        p.flows,
        vec![record(
            Protocol::Udp,
            (7000, 7002, 8000),
            "100.64.0.2:40009",
            "198.51.100.10:9",
            vec![outer(ALICE, GW)],
            (1, 7, 1, 7),
            CloseReason::Shutdown,
        )]
    );
    assert_eq!(p.drops.len(), 1);
    assert_eq!(p.drops[0].reason, DropReason::Partition);
    assert_eq!(p.drops[0].at_ms, 3000);
    assert_eq!(client_deliveries(&p)[0].0, 7012);
}

#[test]
fn a_reply_lost_on_the_way_back_is_still_counted() {
    // open at 2000; drop-next 1 at 3000; resource data at 4000: the gateway forwards it at 4001
    // (rx counted) and the link drops it, so alice never ACKs. Shutdown at 5000: tx 2 (SYN, ACK),
    // rx 2 (SYN-ACK, data 30 bytes).
    let s = scenario(
        "",
        "  - tcp-open: { conn: 1, client: alice, resource: web, port: 443 }\n  - fault: { between: [alice, gw], fault: { drop-next: 1 } }\n  - tcp-data: { conn: 1, from: resource, bytes: 30 }",
    );
    let p = model::predict(&s).unwrap();
    assert_eq!(
        p.flows,
        vec![record(
            Protocol::Tcp,
            (2010, 4001, 5000),
            "100.64.0.2:30001",
            "198.51.100.10:443",
            vec![outer(ALICE, GW)],
            (2, 0, 2, 30),
            CloseReason::Shutdown,
        )]
    );
    assert_eq!(p.drops.len(), 1);
    assert_eq!(p.drops[0].at_ms, 4001);
}

#[test]
fn what_the_model_does_not_cover_is_unpredictable() {
    // Roaming while on a path through the client's own relay.
    let roam = scenario(
        "",
        "  - path: { client: alice, gateway: gw, mode: client-relayed }\n  - roam: { client: alice }\n  - udp: { client: alice, resource: web, port: 9, bytes: 1 }",
    );
    let error = model::predict(&roam).unwrap_err();
    assert_eq!(error.step, Some(2), "{error}");

    // A fault on a relay link that stays active through an idle step.
    let tainted = scenario(
        "",
        "  - path: { client: alice, gateway: gw, mode: client-relayed }\n  - fault: { between: [alice, r1], fault: partition }\n  - idle: { seconds: 300 }\n  - fault: { between: [alice, r1], fault: heal }\n  - udp: { client: alice, resource: web, port: 9, bytes: 1 }",
    );
    assert_eq!(model::predict(&tainted).unwrap_err().step, Some(4));

    // Latencies too large for the 1 s step grid.
    let slow = scenario(
        "  latency: { default_ms: 600 }",
        "  - udp: { client: alice, resource: web, port: 9, bytes: 1 }",
    );
    assert!(model::predict(&slow).is_err());

    // A FIN exchange after a data segment was lost.
    let lossy = scenario(
        "",
        "  - tcp-open: { conn: 1, client: alice, resource: web, port: 443 }\n  - fault: { between: [alice, gw], fault: { drop-next: 1 } }\n  - tcp-data: { conn: 1, from: client, bytes: 10 }\n  - tcp-close: { conn: 1, by: client }",
    );
    assert_eq!(model::predict(&lossy).unwrap_err().step, Some(3));
}
