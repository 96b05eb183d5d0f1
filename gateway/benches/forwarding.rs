//! Gateway forwarding benchmark: ns per forwarded packet with flow tracking, full path
//! (tunnel frame in: header, session, MAC, replay window, parse, flow lookup and accounting,
//! DNS NAT rewrite; TUN packet out), for a CIDR resource and for a DNS resource. The host loop
//! hands each sent packet's buffer back with `Gateway::recycle`, as a host should; the `_drop`
//! variants drop it instead (one allocation and free per packet, by the system allocator).
//! Memory is measured by `benches/memory.rs`, whose counting allocator would be timed here too.
//!
//! `cargo bench -p gateway --bench forwarding`

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gateway::Transmit;
use proto::tunnel::{self, FrameHeader};

mod support;
use support::{PROXY, REAL, SESSION, client_frame, key, outer, resolve, setup, udp_packet};

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

criterion_group!(benches, forwarding);
criterion_main!(benches);
