//! Wire formats shared by every crate: STUN/TURN messages (RFC 8489, RFC 8656), ChannelData
//! framing, the client <-> gateway tunnel frame, and the plain vocabulary types (addresses,
//! ids, flow records) that the systems under test and the reference model both speak.
//!
//! Nothing here keeps state or does I/O: it encodes and decodes, and every decoder returns a
//! clear error for malformed input instead of panicking.

pub mod bounds;
pub mod channel_data;
pub mod credentials;
mod drop_reason;
pub mod flow;
pub mod relay_drop;
pub mod rng;
pub mod stun;
pub mod tunnel;
