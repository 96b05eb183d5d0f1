//! The forwarding path allocates nothing once warm when the host hands buffers back with
//! `recycle`: both directions, CIDR and DNS resources. The counting allocator is process-wide,
//! so this binary runs without the libtest harness (`harness = false`): its `main` is the only
//! thread.

mod common;

use std::alloc::System;

use cap::Cap;
use common::*;
use gateway::Transmit;

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

/// Sends `frames` from the client and `replies` from the resource, recycling every transmit.
fn forward(h: &mut Harness, frames: &[Vec<u8>], reply: &[u8]) {
    for f in frames {
        h.send_frame(f).unwrap();
        h.resource_sends(reply).unwrap();
        while let Some(t) = h.gw.poll_transmit() {
            match t {
                Transmit::Tun(p) => h.gw.recycle(p),
                Transmit::Udp { payload, .. } => h.gw.recycle(payload),
            }
        }
    }
}

fn steady_state_allocates_nothing(fam: Fam) {
    let mut h = Harness::new(fam);
    let real = fam.resource_ip(42);
    h.map_and_resolve(5, "app.example.com", real, 3600);
    let c = fam.tunnel_ip();
    let cidr = udp(c, 4000, fam.resource_ip(7), 53, &[0xAB; 64]);
    let cidr_reply = udp(fam.resource_ip(7), 53, c, 4000, &[0xCD; 64]);
    let dns = udp(c, 4001, fam.proxy_ip(5), 443, &[0xAB; 64]);
    let dns_reply = udp(real, 443, c, 4001, &[0xCD; 64]);
    for (packet, reply) in [(&cidr, &cidr_reply), (&dns, &dns_reply)] {
        // Warm up: the flow opens, queues and the spare-buffer pool reach their size.
        let warm: Vec<_> = (0..8).map(|_| h.frame(packet)).collect();
        forward(&mut h, &warm, reply);
        while h.gw.poll_event().is_some() {}
        let frames: Vec<_> = (0..1000).map(|_| h.frame(packet)).collect();
        let before = ALLOCATOR.total_allocated();
        forward(&mut h, &frames, reply);
        let allocated = ALLOCATOR.total_allocated() - before;
        assert_eq!(allocated, 0, "{fam:?}: bytes allocated while forwarding");
        assert!(
            h.gw.poll_event().is_none(),
            "nothing dropped, nothing reported"
        );
    }
}

fn main() {
    steady_state_allocates_nothing(Fam::V4);
    steady_state_allocates_nothing(Fam::V6);
    println!("no_alloc: forwarding allocates nothing once warm (IPv4, IPv6; CIDR, DNS NAT)");
}
