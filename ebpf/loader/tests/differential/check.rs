//! The checks of one packet: XDP counts exactly one reason, whose action is its verdict; an
//! XDP_TX relays what userspace relays, on the path the reason names, with correct checksums
//! and header fields; an XDP_PASS leaves the frame unchanged and is an allowed one.

use std::net::SocketAddr;

use relay_xdp::{ReasonCounters, Verdict, XdpRelay, reason};
use xdp_fixtures::frame::{self, PEER_MAC, RELAY_MAC, UdpChecksum};

use crate::decode::{Decoded, Output, decode};
use crate::packet::{Framing, Packet, is_relay_ip};
use crate::run::{Run, run_both};
use crate::support::World;
use crate::tally::Tally;

/// Pass reasons with which XDP may leave to userspace a datagram that userspace relays as
/// data. Each is a deliberate part of the fast path's design, backed by a property of the
/// packet that [`pass_is_allowed`] checks independently of the program:
///
/// - `pass/ipv4-options`, `pass/ipv6-extension-header`, `pass/fragment`: IP framing the fast
///   path does not parse (the kernel reassembles fragments, userspace relays the datagram);
/// - `pass/zero-udp-checksum-to-ipv6`: IPv4 UDP without a checksum whose output would be IPv6,
///   where a checksum is mandatory and the program does not compute one in full;
/// - `pass/dns-reply`: a datagram from port 53 to an allocation port belongs to the host's
///   resolver (the kernel delivers it to the resolver's socket if one is bound to that port);
///   the userspace relay, which does not know about the host's resolver, relays it;
/// - `pass/from-relay-address`: a datagram to an allocation port "from" the relay's own address
///   is spoofed: the relay never puts one on the wire (relay-to-self stays inside), and the
///   kernel drops such martians. The userspace relay, fed it directly, treats it as
///   relay-to-self data.
const ALLOWED_PASS: [u32; 6] = [
    reason::PASS_IPV4_OPTIONS,
    reason::PASS_IPV6_EXTENSION,
    reason::PASS_FRAGMENT,
    reason::PASS_ZERO_CHECKSUM_TO_IPV6,
    reason::PASS_DNS_REPLY,
    reason::PASS_FROM_RELAY_ADDRESS,
];

/// The TX reason the program must count for a datagram that userspace relays as `relayed`.
fn expected_tx_reason(packet: &Packet, relayed: &Decoded, channel_out: bool) -> u32 {
    let base = match (packet.to.port() == relay::TURN_PORT, channel_out) {
        (true, false) => reason::TX_CHAN_TO_UDP_BASE,
        (true, true) => reason::TX_CHAN_TO_CHAN_BASE,
        (false, _) => reason::TX_UDP_TO_CHAN_BASE,
    };
    base + if packet.from.is_ipv6() { 2 } else { 0 } + if relayed.dst.is_ipv6() { 1 } else { 0 }
}

/// Whether XDP may pass, with reason `why`, a datagram that userspace relays as data that
/// leaves to `relayed_dst`: `why` is in [`ALLOWED_PASS`] and the packet has the property that
/// the reason names.
fn pass_is_allowed(why: u32, packet: &Packet, relayed_dst: SocketAddr) -> bool {
    ALLOWED_PASS.contains(&why)
        && match why {
            reason::PASS_IPV4_OPTIONS | reason::PASS_IPV6_EXTENSION => {
                packet.framing == Framing::Options
            }
            reason::PASS_FRAGMENT => packet.framing == Framing::Fragment,
            reason::PASS_ZERO_CHECKSUM_TO_IPV6 => {
                packet.framing == Framing::ZeroChecksum && relayed_dst.is_ipv6()
            }
            reason::PASS_DNS_REPLY => {
                packet.from.port() == 53 && packet.to.port() != relay::TURN_PORT
            }
            reason::PASS_FROM_RELAY_ADDRESS => is_relay_ip(packet.from.ip()),
            _ => false,
        }
}

/// Runs one packet through both and checks them against each other.
pub(crate) fn check_packet(
    xdp: &XdpRelay,
    world: &mut World,
    counters: &mut ReasonCounters,
    packet: &Packet,
    context: &str,
    tally: &mut Tally,
) {
    let run = run_both(xdp, world, counters, packet, context);
    tally.packets += 1;
    let Some((name, why)) = the_one_reason(&run, tally) else {
        return;
    };
    tally.count(&run, name);
    if run.xdp.verdict != Verdict::from_action(reason::action(why)) {
        tally.fail(
            format!("verdict {} with reason {name}", run.xdp.verdict),
            run.example(""),
        );
    }
    match run.xdp.verdict {
        Verdict::Tx => check_tx(&run, name, why, tally),
        Verdict::Pass => check_pass(&run, name, why, tally),
        other => tally.fail(
            format!("{other} ({name})"),
            run.example("XDP never drops or aborts"),
        ),
    }
}

/// The name and number of the one reason the run counted; none (a failure) if it counted
/// none or several.
fn the_one_reason(run: &Run<'_>, tally: &mut Tally) -> Option<(&'static str, u32)> {
    let [(name, 1)] = run.counted[..] else {
        tally.fail(
            "not exactly one reason counted".to_owned(),
            run.example("one run must count one reason once"),
        );
        return None;
    };
    let why = reason::ALL
        .into_iter()
        .find(|&why| reason::name(why) == name)
        .expect("a named reason");
    Some((name, why))
}

/// XDP_TX: userspace relayed the same datagram, on the path the reason names, and the output
/// frame has correct checksums and the header fields the program sets.
fn check_tx(run: &Run<'_>, name: &str, why: u32, tally: &mut Tally) {
    let Some((expected, channel_out)) = &run.relayed else {
        tally.fail(
            format!("XDP_TX ({name}) but userspace: {}", run.user),
            run.example("XDP relayed a datagram the userspace relay does not relay"),
        );
        return;
    };
    let output = match decode(&run.xdp.frame_out) {
        Ok(output) => output,
        Err(error) => {
            tally.fail(
                format!("XDP_TX output undecodable ({name})"),
                run.example(&error),
            );
            return;
        }
    };
    if output.datagram != *expected {
        tally.fail(
            format!("XDP_TX output differs from userspace ({name})"),
            run.example(&format!(
                "XDP: {}\n    userspace: {}",
                output.datagram.describe(),
                expected.describe()
            )),
        );
    }
    let want = expected_tx_reason(run.packet, expected, *channel_out);
    if why != want {
        tally.fail(
            format!(
                "XDP_TX counted {name} for a {} datagram",
                reason::name(want)
            ),
            run.example(""),
        );
    }
    check_tx_checksums(run, name, expected, tally);
    check_tx_header_fields(run, name, &output, tally);
}

/// Every checksum of the output is correct; only IPv4 -> IPv4 of an input without a UDP
/// checksum may go without one.
fn check_tx_checksums(run: &Run<'_>, name: &str, expected: &Decoded, tally: &mut Tally) {
    let zero_allowed = run.packet.framing == Framing::ZeroChecksum && expected.dst.is_ipv4();
    match frame::verify_checksums(&run.xdp.frame_out) {
        Ok(UdpChecksum::Valid) => {}
        Ok(UdpChecksum::Absent) if zero_allowed => {}
        Ok(UdpChecksum::Absent) => tally.fail(
            format!("XDP_TX output without a UDP checksum ({name})"),
            run.example("only IPv4 -> IPv4 of an input without checksum may go without"),
        ),
        Err(error) => tally.fail(
            format!("XDP_TX output checksum or length wrong ({name})"),
            run.example(&error),
        ),
    }
}

/// MACs swapped, TTL 64, TOS carried over.
fn check_tx_header_fields(run: &Run<'_>, name: &str, output: &Output, tally: &mut Tally) {
    let &Output {
        tos,
        ttl,
        src_mac,
        dst_mac,
        ..
    } = output;
    if (src_mac, dst_mac) != (RELAY_MAC, PEER_MAC) || ttl != 64 || tos != run.packet.tos() {
        tally.fail(
            format!("XDP_TX output header fields ({name})"),
            run.example(&format!(
                "MACs {src_mac:02x?} -> {dst_mac:02x?}, TTL {ttl}, TOS {tos:#04x}"
            )),
        );
    }
}

/// XDP_PASS: the frame is unchanged, and if userspace relays the datagram, the pass is one of
/// the allowed ones.
fn check_pass(run: &Run<'_>, name: &'static str, why: u32, tally: &mut Tally) {
    if run.xdp.frame_out != run.frame_in {
        tally.fail(
            format!("XDP_PASS changed the frame ({name})"),
            run.example(""),
        );
    }
    let Some((expected, _)) = &run.relayed else {
        return;
    };
    if pass_is_allowed(why, run.packet, expected.dst) {
        *tally.allowed_passes.entry(name).or_default() += 1;
    } else {
        tally.fail(
            format!(
                "XDP_PASS ({name}) of a datagram userspace relays ({})",
                run.user
            ),
            run.example(&format!(
                "userspace relays it: {} -> {} ({} bytes)",
                expected.src,
                expected.dst,
                expected.payload.len()
            )),
        );
    }
}
