//! `ip_packet`: the gateway's IP/TCP/UDP/ICMP parser and its checksum updates, through the
//! gateway's two packet entry points.
//!
//! The first byte chooses: bit 0, the side the packet comes from (0: sealed in a valid tunnel
//! frame from the fixture's client, 1: from the TUN device, after the client opened the flow
//! the packet would answer); bit 1, put the fixture's addresses in the packet (the client's
//! tunnel IP and a host of the CIDR resource, or with bit 3 a DNS proxy IP); bit 2, recompute
//! its checksums. The rest is the packet.
//!
//! Checked on every call: the drop accounting ([`super::gateway_call`]); an accepted packet
//! goes somewhere (a TUN packet, a frame to the client, a DNS query) unless it waits for a DNS
//! answer; a TUN packet goes from the client's tunnel IP to a host the client is granted; a
//! frame to the client opens under its key, carries a packet to its tunnel IP, and counts up;
//! and whenever the input's checksums verify (by this crate's own RFC 1071 sums), every packet
//! the gateway writes verifies too (the gateway updates checksums incrementally).

use std::net::IpAddr;
use std::time::Instant;

use gateway::{Gateway, Transmit};
use proto::flow::OuterContext;
use proto::tunnel;

use super::{GatewayOutcome, gateway_call, ip_addrs};
use crate::checksum;
use crate::fixtures::{self, GATEWAY_ADDR};

const FROM_TUN: u8 = 1;
const PLACE_ADDRESSES: u8 = 2;
const FIX_CHECKSUMS: u8 = 4;
const TO_PROXY: u8 = 8;

pub fn ip_packet(data: &[u8]) {
    let Some((&mode, packet)) = data.split_first() else {
        return;
    };
    let now = Instant::now();
    let mut gateway = fixtures::gateway(now);
    let mut world = Sent::default();
    let mut packet = packet.to_vec();
    if mode & PLACE_ADDRESSES != 0 {
        place_addresses(&mut packet, mode & FROM_TUN != 0, mode & TO_PROXY != 0);
    }
    if mode & FIX_CHECKSUMS != 0 {
        checksum::fix(&mut packet);
    }
    if mode & FROM_TUN == 0 {
        world.send_from_client(&mut gateway, &packet, now);
    } else {
        if let Some(mut opener) = mirror(&packet) {
            checksum::fix(&mut opener);
            world.send_from_client(&mut gateway, &opener, now);
        }
        let outcome = gateway_call(&mut gateway, now, |g| g.handle_tun_packet(&packet, now));
        world.check_outputs(&packet, &outcome, false);
        if outcome.result.is_ok() {
            assert!(
                !outcome.transmits.is_empty(),
                "an accepted TUN packet went nowhere"
            );
        }
    }
}

/// The frames sent to the gateway and received from it so far.
#[derive(Default)]
struct Sent {
    counter: u64,
    last_received: Option<u64>,
}

impl Sent {
    fn send_from_client(&mut self, gateway: &mut Gateway, packet: &[u8], now: Instant) {
        self.counter += 1;
        let frame = fixtures::client_frame(self.counter, packet);
        let outer = OuterContext {
            remote: fixtures::CLIENT_OUTER,
            local: GATEWAY_ADDR,
        };
        let outcome = gateway_call(gateway, now, |g| g.handle_tunnel_frame(outer, &frame, now));
        self.check_outputs(packet, &outcome, true);
        if outcome.result.is_ok() {
            let waits_for_dns = ip_addrs(packet).is_some_and(|(_, dst)| gateway::is_proxy_ip(dst));
            assert!(
                !outcome.transmits.is_empty() || waits_for_dns,
                "an accepted client packet went nowhere"
            );
        }
    }

    /// `from_client`: the input came from the client, so a frame back to it carries a packet the
    /// gateway wrote itself (an ICMP error), whose checksums must verify whatever the input's.
    fn check_outputs(&mut self, input: &[u8], outcome: &GatewayOutcome, from_client: bool) {
        let input_verifies = checksum::verifies(input) == Some(true);
        for transmit in &outcome.transmits {
            match transmit {
                Transmit::Tun(out) => {
                    let (src, dst) = ip_addrs(out).expect("a TUN packet has an IP header");
                    assert_eq!(src, tunnel_ip(src), "a TUN packet not from the tunnel IP");
                    assert!(granted(dst), "a TUN packet to {dst}, which is not granted");
                    if input_verifies {
                        assert_ne!(checksum::verifies(out), Some(false), "TUN checksum broken");
                    }
                }
                Transmit::Udp { src, dst, payload } if *dst == fixtures::CLIENT_OUTER => {
                    assert_eq!(*src, GATEWAY_ADDR);
                    let (header, inner) = tunnel::open(
                        &fixtures::session_key(),
                        tunnel::Direction::ToClient,
                        payload,
                    )
                    .expect("a frame to the client opens under its key");
                    assert_eq!(header.session_id, fixtures::SESSION_ID);
                    assert!(
                        self.last_received.is_none_or(|last| header.counter > last),
                        "frame counters to the client do not count up"
                    );
                    self.last_received = Some(header.counter);
                    let (_, inner_dst) = ip_addrs(inner).expect("an IP packet in the frame");
                    assert_eq!(inner_dst, tunnel_ip(inner_dst));
                    if input_verifies || from_client {
                        assert_ne!(
                            checksum::verifies(inner),
                            Some(false),
                            "frame checksum broken"
                        );
                    }
                }
                Transmit::Udp { src, dst, .. } => {
                    assert_eq!((*src, *dst), (fixtures::DNS_LOCAL, fixtures::DNS_SERVER));
                }
            }
        }
    }
}

/// The client's tunnel IP of `ip`'s family.
fn tunnel_ip(ip: IpAddr) -> IpAddr {
    if ip.is_ipv4() {
        fixtures::TUNNEL_V4.into()
    } else {
        fixtures::TUNNEL_V6.into()
    }
}

/// Whether the fixture's client may reach `ip` (its CIDR resources; no DNS answer arrives here).
fn granted(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[..3] == fixtures::RESOURCE_V4.octets()[..3],
        IpAddr::V6(v6) => v6.segments()[..3] == fixtures::RESOURCE_V6.segments()[..3],
    }
}

/// Writes the fixture's addresses into the IP header: client -> resource (or proxy IP), or
/// resource -> client for a TUN packet.
fn place_addresses(packet: &mut [u8], from_tun: bool, to_proxy: bool) {
    let (client, resource) = match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= 20 => (
            IpAddr::V4(fixtures::TUNNEL_V4),
            if to_proxy {
                IpAddr::V4(fixtures::PROXY_V4)
            } else {
                IpAddr::V4(fixtures::RESOURCE_V4)
            },
        ),
        Some(6) if packet.len() >= 40 => (
            IpAddr::V6(fixtures::TUNNEL_V6),
            if to_proxy {
                IpAddr::V6(fixtures::PROXY_V6)
            } else {
                IpAddr::V6(fixtures::RESOURCE_V6)
            },
        ),
        _ => return,
    };
    let (src, dst) = if from_tun {
        (resource, client)
    } else {
        (client, resource)
    };
    write_addrs(packet, src, dst);
}

fn write_addrs(packet: &mut [u8], src: IpAddr, dst: IpAddr) {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            packet[12..16].copy_from_slice(&s.octets());
            packet[16..20].copy_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            packet[8..24].copy_from_slice(&s.octets());
            packet[24..40].copy_from_slice(&d.octets());
        }
        _ => {}
    }
}

/// The client's packet that opens the flow a resource packet answers: addresses and ports
/// swapped, a TCP segment turned into a pure SYN, an echo reply into an echo request.
fn mirror(packet: &[u8]) -> Option<Vec<u8>> {
    let (src, dst) = ip_addrs(packet)?;
    let (l4, protocol) = match packet[0] >> 4 {
        4 => (usize::from(packet[0] & 0x0F) * 4, packet[9]),
        _ => (40, packet[6]),
    };
    let mut out = packet.to_vec();
    write_addrs(&mut out, dst, src);
    let segment = out.get_mut(l4..)?;
    match protocol {
        6 | 17 if segment.len() >= 4 => {
            let (a, b) = segment.split_at_mut(2);
            a.swap_with_slice(&mut b[..2]);
            if protocol == 6 && segment.len() >= 14 {
                segment[13] = 0x02;
            }
        }
        1 | 58 if !segment.is_empty() => {
            segment[0] = match segment[0] {
                0 => 8,
                129 => 128,
                other => other,
            };
        }
        _ => return None,
    }
    Some(out)
}
