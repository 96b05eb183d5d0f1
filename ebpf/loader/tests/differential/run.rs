//! One packet run through both the XDP program and the userspace relay, at the same instant.

use relay_xdp::{ReasonCounters, RunOutcome, XdpRelay};

use crate::decode::Decoded;
use crate::packet::Packet;
use crate::support::World;

/// The userspace relay's outcome, as a short label for the tally.
fn user_label(result: &Result<Option<relay::Relayed<'_>>, relay::Drop>) -> String {
    match result {
        Ok(Some(relayed)) if relayed.channel.is_some() => "relayed/channel-data".to_owned(),
        Ok(Some(_)) => "relayed/udp".to_owned(),
        Ok(None) => "handled (control or Data indication)".to_owned(),
        Err(drop) => format!("dropped: {drop:?}"),
    }
}

/// One packet run through both: what XDP did and what the userspace relay did.
pub(crate) struct Run<'a> {
    pub(crate) packet: &'a Packet,
    /// Where the packet was sent, for failure reports.
    pub(crate) context: &'a str,
    pub(crate) frame_in: Vec<u8>,
    pub(crate) xdp: RunOutcome,
    /// The reasons XDP counted, and how often.
    pub(crate) counted: Vec<(&'static str, u64)>,
    /// The datagram userspace relayed, and whether it left as ChannelData.
    pub(crate) relayed: Option<(Decoded, bool)>,
    /// The userspace relay's outcome, as a short label.
    pub(crate) user: String,
}

impl Run<'_> {
    /// A failure report: where, the packet, both outcomes, and `detail`.
    pub(crate) fn example(&self, detail: &str) -> String {
        format!(
            "{}\n    packet: {}\n    XDP: {} {:?}; userspace: {}\n    {detail}",
            self.context,
            self.packet.describe(),
            self.xdp.verdict,
            self.counted,
            self.user
        )
    }
}

/// Runs the packet's frame through the XDP program and its datagram through the userspace
/// relay, at the same instant; `counters` move on to the counts after the run.
pub(crate) fn run_both<'a>(
    xdp: &XdpRelay,
    world: &mut World,
    counters: &mut ReasonCounters,
    packet: &'a Packet,
    context: &'a str,
) -> Run<'a> {
    let frame_in = packet.frame();
    let outcome = xdp
        .run(&frame_in)
        .expect("a frame of 14+ bytes always runs");
    let after = xdp.reason_counters().expect("counters");
    let counted = after.since(counters).non_zero();
    *counters = after;
    let now = world.now;
    let user = world
        .relay
        .handle_input(packet.from, packet.to, &packet.payload, now);
    let relayed = match &user {
        Ok(Some(relayed)) => Some((
            Decoded {
                src: relayed.src,
                dst: relayed.dst,
                payload: relayed.to_vec(),
            },
            relayed.channel.is_some(),
        )),
        _ => None,
    };
    let label = user_label(&user);
    world.discard_transmits();
    Run {
        packet,
        context,
        frame_in,
        xdp: outcome,
        counted,
        relayed,
        user: label,
    }
}
