//! The fuzz targets' bodies: one `pub fn TARGET(data: &[u8])` per target, each feeding the bytes
//! to a parser or a state machine and asserting what must hold (a broken invariant panics, which
//! libFuzzer reports as a crash). The cargo-fuzz crate in `fuzz/` wraps each in a
//! `fuzz_target!`; `tests/replay.rs` runs every file of `fuzz/corpus/` and `fuzz/regressions/`
//! through them on stable.
//!
//! | target | what it feeds | what it checks beyond "no panic" |
//! | --- | --- | --- |
//! | `stun_message` | `proto::stun::decode`, then the relay (raw, and re-signed by an allocated client) | decode/encode round trip; every datagram a reply, a relayed datagram or one counted drop |
//! | `channel_data` | `proto::channel_data`, then a relay with one bound channel (from the client and from the peer) | lengths and padding; relayed data equals the parsed data, to the bound peer only |
//! | `tunnel_frame` | `proto::tunnel::peek_header`, `open` with a known key, `seal` | header fields; opened frames re-seal to the same bytes; a changed byte never opens |
//! | `ip_packet` | an IP packet through the gateway, from a client (in a sealed frame) or from the TUN side | drop events equal counter deltas; output checksums valid when the input's were; addresses |
//! | `dns_answer` | a DNS answer to the gateway's own query, through its resolver | the resolved address is in the answer (hickory's reading), TTL floor, held packet released |
//! | `state_machines` | random operations and `now` advances through a relay and a gateway | deadlines not in the past, bounds, drop accounting, no relaying without a permission, event mirror equals the relay's table |

pub mod checksum;
pub mod fixtures;
pub mod seeds;
mod targets;

pub use targets::channel_data::channel_data;
pub use targets::dns_answer::dns_answer;
pub use targets::ip_packet::ip_packet;
pub use targets::state_machines::state_machines;
pub use targets::stun_message::stun_message;
pub use targets::tunnel_frame::tunnel_frame;

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target by name: the names of `fuzz/fuzz_targets/*.rs`, `fuzz/corpus/*/` and
/// `fuzz/regressions/*/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("stun_message", stun_message),
    ("channel_data", channel_data),
    ("tunnel_frame", tunnel_frame),
    ("ip_packet", ip_packet),
    ("dns_answer", dns_answer),
    ("state_machines", state_machines),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|&(_, run)| run)
}
