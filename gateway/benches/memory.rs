//! Gateway memory benchmark, measured with a counting global allocator:
//! - bytes of heap per open flow at 100,000 open flows, for a CIDR and a DNS resource;
//! - a flood of 10^6 new flows from one client against the default caps: flows stop at the
//!   per-client cap, every packet past it is refused and counted, the heap stays where the cap
//!   puts it, and the time per refused packet is printed.
//!
//! `cargo bench -p gateway --bench memory`

use std::alloc::System;
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use cap::Cap;

mod support;
use support::{PROXY, REAL, TUNNEL, client_frame, outer, resolve, setup, setup_with, udp_packet};

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

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

fn main() {
    memory_per_open_flow();
    flood_of_new_flows();
}
