//! `drop-next` faults (the next tunnel frames on a link, in either direction, in order of
//! sending) and a client with a relay that roams (it allocates again from its new socket),
//! with every delivery and drop the simulation reports.

use std::net::SocketAddr;

use observation::{
    ClientId, Delivery, DropPlace, DropReason, Packet, PacketDrop, PacketKind, Receiver, TcpFlags,
};
use proto::flow::{CloseReason, OuterContext};
use scenario_format::Scenario;
use sim::{RunOptions, run};

fn ms_of(time: proto::flow::UtcTime) -> u64 {
    (time.unix_nanos() / 1_000_000) - 1_767_225_600_000
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("socket address")
}

fn run_yaml(yaml: &str, seed: u64) -> sim::Outcome {
    let scenario = Scenario::from_yaml(yaml, "inline").expect("valid");
    let outcome = run(&scenario, &RunOptions::seeded(seed)).expect("runs");
    for line in &outcome.trace {
        eprintln!("{line}");
    }
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    outcome
}

fn udp(src: &str, dst: &str, payload: u16) -> Packet {
    Packet {
        src: addr(src),
        dst: addr(dst),
        kind: PacketKind::Udp { payload },
    }
}

fn tcp(src: &str, dst: &str, flags: &str, seq: u32, ack: u32, payload: u16) -> Packet {
    Packet {
        src: addr(src),
        dst: addr(dst),
        kind: PacketKind::Tcp {
            flags: TcpFlags {
                syn: flags.contains('S'),
                ack: flags.contains('.'),
                fin: flags.contains('F'),
                rst: flags.contains('R'),
                psh: flags.contains('P'),
            },
            seq,
            ack,
            payload,
        },
    }
}

const DROP_NEXT: &str = r#"
name: drop-next-both-ways
topology:
  clients: [{ name: alice, stack: v4 }]
  gateways: [{ name: gw, stack: v4 }]
  resources: [{ name: web, gateway: gw, cidr: 198.51.100.10/32 }]
  grants: [{ client: alice, resource: web }]
  latency: { default_ms: 10 }
steps:
  - tcp-open: { conn: 1, client: alice, resource: web, port: 443 }
  - fault: { between: [gw, alice], fault: { drop-next: 2 } }
  - tcp-data: { conn: 1, from: resource, bytes: 100 }
  - udp: { client: alice, resource: web, port: 5353, bytes: 64 }
  - udp: { client: alice, resource: web, port: 5353, bytes: 64 }
"#;

#[test]
fn drop_next_takes_the_next_frames_on_the_link_in_either_direction() {
    let outcome = run_yaml(DROP_NEXT, 5);
    let (client, resource) = ("100.64.0.2", "198.51.100.10");
    let link = DropPlace::Link {
        between: ["alice".to_owned(), "gw".to_owned()],
    };
    // The first frame on the link after the fault is the gateway's, carrying the resource's
    // data (the resource sends at 4000 ms, the gateway 1 ms later); the second is the client's
    // first UDP datagram, at 5000 ms. The third frame passes.
    assert_eq!(
        outcome.drops,
        vec![
            PacketDrop {
                at_ms: 4001,
                place: link.clone(),
                reason: DropReason::DropNext,
                packet: tcp(
                    &format!("{resource}:443"),
                    &format!("{client}:30001"),
                    "P.",
                    5001,
                    1001,
                    100
                ),
                step: 2,
            },
            PacketDrop {
                at_ms: 5000,
                place: link,
                reason: DropReason::DropNext,
                packet: udp(&format!("{client}:45353"), &format!("{resource}:5353"), 64),
                step: 3,
            },
        ]
    );
    let to_client = Receiver::Client {
        client: ClientId(0),
        gateway: 0,
        outer: OuterContext {
            remote: addr("203.0.113.100:51820"),
            local: addr("203.0.113.10:51820"),
        },
    };
    let to_resource = Receiver::Resource { gateway: 0 };
    // Steps start at 2000, 3000, ... ms: the handshake is step 0's traffic, the echo step 4's.
    let delivery = |at_ms, step, to: Receiver, packet| Delivery {
        at_ms,
        to,
        packet,
        step,
    };
    let (c, r) = (format!("{client}:30001"), format!("{resource}:443"));
    assert_eq!(
        outcome.deliveries,
        vec![
            delivery(2011, 0, to_resource.clone(), tcp(&c, &r, "S", 1000, 0, 0)),
            delivery(2022, 0, to_client.clone(), tcp(&r, &c, "S.", 5000, 1001, 0)),
            delivery(
                2033,
                0,
                to_resource.clone(),
                tcp(&c, &r, ".", 1001, 5001, 0)
            ),
            delivery(
                6011,
                4,
                to_resource.clone(),
                udp(&format!("{client}:45353"), &format!("{resource}:5353"), 64)
            ),
            delivery(
                6022,
                4,
                to_client.clone(),
                udp(&format!("{resource}:5353"), &format!("{client}:45353"), 64)
            ),
        ]
    );
    // The gateway forwarded (and counted) the data the link then lost; the lost UDP datagram
    // never reached it.
    let mut flows = outcome.flows.clone();
    flows.sort_by_key(|flow| ms_of(flow.start));
    let summary: Vec<_> = flows
        .iter()
        .map(|f| {
            (
                ms_of(f.start),
                ms_of(f.last_packet),
                ms_of(f.end),
                f.tx_packets,
                f.tx_bytes,
                f.rx_packets,
                f.rx_bytes,
                f.close_reason,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (2010, 4001, 7000, 2, 0, 2, 100, CloseReason::Shutdown),
            (6010, 6012, 7000, 1, 64, 1, 64, CloseReason::Shutdown),
        ]
    );
    assert!(
        outcome
            .trace
            .iter()
            .any(|line| line.at_ms == 5000 && line.event.starts_with("lost on the link alice-gw"))
    );
}

const RELAYED_ROAM: &str = r#"
name: relayed-client-roams
topology:
  clients: [{ name: alice, stack: v4, relay: r1 }]
  gateways: [{ name: gw, stack: v4 }]
  relays: [{ name: r1, stack: v4 }]
  resources: [{ name: web, gateway: gw, cidr: 198.51.100.10/32 }]
  grants: [{ client: alice, resource: web }]
  latency: { default_ms: 10 }
steps:
  - path: { client: alice, gateway: gw, mode: client-relayed }
  - udp: { client: alice, resource: web, port: 5353, bytes: 64 }
  - roam: { client: alice }
  - udp: { client: alice, resource: web, port: 5353, bytes: 64 }
"#;

#[test]
fn a_relayed_client_that_roams_allocates_again_from_its_new_socket() {
    let outcome = run_yaml(RELAYED_ROAM, 11);
    // The outcome keeps the first allocation.
    let first = outcome.relayed["alice"].clone();
    assert_eq!(first.len(), 1, "{first:?}");
    let first = first[0];
    assert_eq!(first.ip().to_string(), "203.0.113.1");
    // One flow (the same 5-tuple before and after the roam), seen first from the first
    // allocation and then from the new one on the same relay.
    assert_eq!(outcome.flows.len(), 1, "{:?}", outcome.flows);
    let flow = &outcome.flows[0];
    assert_eq!(
        (ms_of(flow.start), ms_of(flow.last_packet), ms_of(flow.end)),
        (3020, 5022, 6000)
    );
    assert_eq!((flow.tx_packets, flow.rx_packets), (2, 2));
    let gateway_socket = addr("203.0.113.10:51820");
    assert_eq!(flow.outer_contexts.len(), 2, "{:?}", flow.outer_contexts);
    assert_eq!(
        flow.outer_contexts[0],
        OuterContext {
            remote: first,
            local: gateway_socket
        }
    );
    let second = flow.outer_contexts[1].remote;
    assert_eq!(flow.outer_contexts[1].local, gateway_socket);
    assert_eq!(second.ip(), first.ip());
    assert_ne!(second.port(), first.port());
    // The relay allocated for the new socket (port 51821) and relayed the second datagram
    // from it.
    let from_new_socket = outcome.hops.iter().filter(|hop| {
        hop.host == "r1"
            && hop.direction == sim::Direction::Received
            && hop.src == addr("203.0.113.100:51821")
    });
    assert!(
        from_new_socket.count() >= 3,
        "allocate twice and bind a channel"
    );
    // Each echo reached the client through the allocation its datagram left from: client
    // -> relay -> gateway -> resource and back is 2 x (10 + 10 + 1) ms.
    let to_client = |remote| Receiver::Client {
        client: ClientId(0),
        gateway: 0,
        outer: OuterContext {
            remote,
            local: gateway_socket,
        },
    };
    let echo = udp("198.51.100.10:5353", "100.64.0.2:45353", 64);
    let at_client: Vec<_> = outcome
        .deliveries
        .iter()
        .filter(|d| matches!(d.to, Receiver::Client { .. }))
        .cloned()
        .collect();
    assert_eq!(
        at_client,
        vec![
            Delivery {
                at_ms: 3042,
                to: to_client(first),
                packet: echo,
                step: 1,
            },
            Delivery {
                at_ms: 5042,
                to: to_client(second),
                packet: echo,
                step: 3,
            },
        ]
    );
    assert!(outcome.drops.is_empty(), "{:?}", outcome.drops);
}
