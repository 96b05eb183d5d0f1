//! Gateway benchmarks:
//! - ns per forwarded packet with flow tracking, full path (tunnel frame in: header, session,
//!   MAC, replay window, parse, flow lookup and accounting, DNS NAT rewrite; TUN packet out),
//!   for a CIDR resource and for a DNS resource. The host loop hands each sent packet's buffer
//!   back with `Gateway::recycle`, as a host should; the `_drop` variants drop it instead
//!   (one allocation and free per packet);
//! - bytes of heap per open flow at 100,000 open flows, measured with a counting global
//!   allocator (printed before the criterion runs).
//!
//! `cargo bench -p gateway --bench forwarding`

use std::alloc::System;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use cap::Cap;
use criterion::{Criterion, Throughput, criterion_group};
use gateway::{ClientConfig, Gateway, GatewayConfig, Resource, ResourceAddress, Transmit};
use hickory_proto::op::{Message, MessageType, OpCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};
use proto::flow::{ClientId, OuterContext, ResourceId, TimeOrigin, UtcTime};
use proto::tunnel::{self, FrameHeader, SessionKey};

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

const SESSION: u32 = 7;
const TUNNEL: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
const PROXY: Ipv4Addr = Ipv4Addr::new(100, 96, 0, 5);
const REAL: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 42);
const PAYLOAD: usize = 64;

fn key() -> SessionKey {
    SessionKey::new([0x42; 32])
}

fn dns_server() -> SocketAddr {
    "203.0.113.53:53".parse().unwrap()
}

fn outer() -> OuterContext {
    OuterContext {
        remote: "203.0.113.10:40000".parse().unwrap(),
        local: "203.0.113.1:51820".parse().unwrap(),
    }
}

fn setup(t0: Instant) -> Gateway {
    setup_with(t0, |_| {})
}

fn setup_with(t0: Instant, tweak: impl FnOnce(&mut GatewayConfig)) -> Gateway {
    let origin = TimeOrigin {
        instant: t0,
        unix: UtcTime::from_unix_secs(1_735_689_600),
    };
    let mut config = GatewayConfig::new(origin, dns_server(), "203.0.113.1:5300".parse().unwrap());
    tweak(&mut config);
    let mut gw = Gateway::new(config);
    gw.add_client(ClientConfig {
        id: ClientId(1),
        session_id: SESSION,
        key: key(),
        tunnel_v4: TUNNEL,
        tunnel_v6: "fd00:2021:1111::2".parse().unwrap(),
    })
    .unwrap();
    gw.add_resource(Resource {
        id: ResourceId(1),
        address: ResourceAddress::Cidr("198.51.100.0/24".parse().unwrap()),
    })
    .unwrap();
    gw.add_resource(Resource {
        id: ResourceId(2),
        address: ResourceAddress::Dns("*.example.com".parse().unwrap()),
    })
    .unwrap();
    gw.grant(ClientId(1), ResourceId(1), vec![]).unwrap();
    gw.grant(ClientId(1), ResourceId(2), vec![]).unwrap();
    gw
}

/// Maps the proxy IP and answers the gateway's DNS query.
fn resolve(gw: &mut Gateway, now: Instant) {
    gw.map_dns(ClientId(1), IpAddr::V4(PROXY), "app.example.com", now)
        .unwrap();
    let Some(Transmit::Udp { payload, .. }) = gw.poll_transmit() else {
        panic!("no DNS query")
    };
    let q = Message::from_vec(&payload).unwrap();
    let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    let name = q.queries[0].name().clone();
    r.add_query(q.queries[0].clone());
    r.add_answer(Record::from_rdata(name, 3600, RData::A(A(REAL))));
    gw.handle_input(
        dns_server(),
        "203.0.113.1:5300".parse().unwrap(),
        &r.to_vec().unwrap(),
        now,
    )
    .unwrap();
}

fn udp_packet(dst: Ipv4Addr, sport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    etherparse::PacketBuilder::ipv4(TUNNEL.octets(), dst.octets(), 64)
        .udp(sport, 443)
        .write(&mut out, &[0xAB; PAYLOAD])
        .unwrap();
    out
}

/// Measures `iters` forwarded packets of one open flow, frames sealed in batches outside the
/// timed part (each frame needs a fresh counter for the replay window). With `recycle`, the
/// TUN packet's buffer goes back to the gateway after "sending"; without, it is dropped.
fn forward(c: &mut Criterion, name: &str, dst: Ipv4Addr, dns: bool, recycle: bool) {
    let t0 = Instant::now();
    let mut gw = setup(t0);
    if dns {
        resolve(&mut gw, t0);
    }
    let inner = udp_packet(dst, 5000);
    let mut counter = 0u64;
    let o = outer();
    let mut group = c.benchmark_group("forward");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(256);
                left -= n;
                let frames: Vec<Vec<u8>> = (0..n)
                    .map(|_| {
                        counter += 1;
                        client_frame(counter, &inner)
                    })
                    .collect();
                let now = t0 + Duration::from_millis(counter / 1000);
                let start = Instant::now();
                for f in &frames {
                    gw.handle_input(o.remote, o.local, f, now).unwrap();
                    match gw.poll_transmit() {
                        Some(Transmit::Tun(packet)) if recycle => gw.recycle(black_box(packet)),
                        other => {
                            black_box(other);
                        }
                    }
                }
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
    assert_eq!(gw.open_flow_count(), 1);
}

/// The MAC check alone (header check + SipHash-2-4-128 over header and inner packet), for
/// comparison.
fn mac_only(c: &mut Criterion) {
    let inner = udp_packet(REAL, 5000);
    let frame = tunnel::seal(
        &key(),
        tunnel::Direction::ToGateway,
        FrameHeader {
            session_id: SESSION,
            counter: 1,
        },
        &inner,
    );
    let k = key();
    c.bench_function("tunnel_open_mac_only_64B", |b| {
        b.iter(|| {
            black_box(tunnel::open(&k, tunnel::Direction::ToGateway, black_box(&frame)).is_ok())
        })
    });
}

fn forwarding(c: &mut Criterion) {
    mac_only(c);
    forward(c, "cidr_udp_64B", REAL, false, true);
    forward(c, "dns_nat_udp_64B", PROXY, true, true);
    forward(c, "cidr_udp_64B_drop", REAL, false, false);
    forward(c, "dns_nat_udp_64B_drop", PROXY, true, false);
}

/// Heap bytes per open flow at 100,000 open flows (CIDR and DNS), printed.
fn memory_per_open_flow() {
    const FLOWS: u32 = 100_000;
    for dns in [false, true] {
        let t0 = Instant::now();
        // One client holds them all here: past the default per-client cap.
        let mut gw = setup_with(t0, |config| config.max_flows_per_client = FLOWS as usize);
        if dns {
            resolve(&mut gw, t0);
        }
        while gw.poll_transmit().is_some() {}
        let o = outer();
        let before = ALLOCATOR.allocated();
        for i in 0..FLOWS {
            // 50,000 source ports x 2 destinations.
            let dst = if dns { PROXY } else { REAL };
            let dst = if i % 2 == 0 {
                dst
            } else {
                Ipv4Addr::from(u32::from(dst) + 1)
            };
            let dst = if dns && i % 2 == 1 { PROXY } else { dst };
            let sport = if dns {
                1 + i as u16
            } else {
                1 + (i / 2) as u16
            };
            let sport = if dns && i >= 65_000 {
                (i - 65_000 + 1) as u16
            } else {
                sport
            };
            let inner = if dns && i >= 65_000 {
                // Second proxy-IP half: same ports, TCP instead of UDP (a distinct key).
                let mut out = Vec::new();
                etherparse::PacketBuilder::ipv4(TUNNEL.octets(), PROXY.octets(), 64)
                    .tcp(sport, 443, 1, 1000)
                    .syn()
                    .write(&mut out, &[])
                    .unwrap();
                out
            } else {
                udp_packet(dst, sport)
            };
            let frame = client_frame(u64::from(i), &inner);
            gw.handle_input(o.remote, o.local, &frame, t0).unwrap();
            while gw.poll_transmit().is_some() {}
            while gw.poll_event().is_some() {}
        }
        assert_eq!(gw.open_flow_count(), FLOWS as usize);
        let bytes = ALLOCATOR.allocated().saturating_sub(before);
        println!(
            "memory per open flow ({}): {} bytes ({} flows, {} bytes total)",
            if dns { "DNS resource" } else { "CIDR resource" },
            bytes / FLOWS as usize,
            FLOWS,
            bytes
        );
        black_box(&gw);
    }
}

/// A client's frame starting flow `n` (a distinct 5-tuple per `n` below 255 * 65,535).
fn new_flow_frame(n: u32, counter: u64) -> Vec<u8> {
    let dst = Ipv4Addr::from((u32::from(REAL) & 0xffff_ff00) | (n / 65_535));
    client_frame(counter, &udp_packet(dst, 1 + (n % 65_535) as u16))
}

/// The client's frame with `counter` carrying `inner`.
fn client_frame(counter: u64, inner: &[u8]) -> Vec<u8> {
    tunnel::seal(
        &key(),
        tunnel::Direction::ToGateway,
        FrameHeader {
            session_id: SESSION,
            counter,
        },
        inner,
    )
}

/// A flood of 10^6 new 5-tuples from one client against the default caps: the flows stop at
/// the per-client cap, every packet past it is refused and counted, memory stays where the
/// cap puts it, and the cost per refused packet is printed beside a forwarded one's.
fn flood_of_new_flows() {
    const ATTEMPTS: u32 = 1_000_000;
    let t0 = Instant::now();
    let mut gw = setup(t0);
    let cap = gw.config().max_flows_per_client;
    let o = outer();
    let before = ALLOCATOR.allocated();
    let mut refused_time = Duration::ZERO;
    let mut peak = 0usize;
    let mut counter = 0u64;
    for chunk in (0..ATTEMPTS).collect::<Vec<_>>().chunks(4096) {
        let frames: Vec<Vec<u8>> = chunk
            .iter()
            .map(|&n| {
                counter += 1;
                new_flow_frame(n, counter)
            })
            .collect();
        let start = Instant::now();
        for frame in &frames {
            let _ = gw.handle_input(o.remote, o.local, frame, t0);
            while gw.poll_transmit().is_some() {}
            while gw.poll_event().is_some() {}
        }
        if chunk[0] as usize >= cap {
            refused_time += start.elapsed();
        }
        peak = peak.max(ALLOCATOR.allocated().saturating_sub(before));
    }
    let refused = gw.drop_counters().get(gateway::DropReason::FlowTableFull);
    assert_eq!(gw.open_flow_count(), cap);
    assert_eq!(refused, u64::from(ATTEMPTS) - cap as u64);
    let measured = (ATTEMPTS as usize - cap.next_multiple_of(4096)) as u32;
    println!(
        "flood of {ATTEMPTS} new flows from one client: {} open (the per-client cap), {refused} \
         refused as flow-table-full; peak heap {} bytes ({} per open flow); {:.0} ns per \
         refused packet",
        gw.open_flow_count(),
        peak,
        peak / cap,
        refused_time.as_nanos() as f64 / f64::from(measured)
    );
    black_box(&gw);
}

criterion_group!(benches, forwarding);

fn main() {
    memory_per_open_flow();
    flood_of_new_flows();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
