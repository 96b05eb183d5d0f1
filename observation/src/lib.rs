//! One vocabulary for what happens in a run, shared by the simulator (`sim`), which observes
//! it, and the reference model (`model`), which predicts it; the harness (`scenarios`)
//! compares the two without translating. Neither side imports the other: both import this.
//!
//! - [`Packet`]: an inner IP packet as its receiver sees it, read from bytes by an
//!   independent parser ([`Packet::parse`]), with one way to print it.
//! - [`Delivery`]: a packet reaching a client or the resource responder behind a gateway.
//! - [`PacketDrop`]: a packet a gateway dropped (with the gateway's own [`GatewayDropReason`])
//!   or a link fault took.
//! - [`Hop`]: one datagram sent or received by one host, with the relay's XDP verdict.
//! - [`StrayArrival`]: a datagram that is not TURN at a relay (a `stray` step's), with the XDP
//!   verdict and its [`HostFate`]: the host stack, or a relay drop with its [`RelayDropReason`].
//! - Flow records are [`FlowRecord`]s, the gateway's own record type (`proto::flow`).
//!
//! Clients, resources and gateways are named by their index in the scenario's topology.

mod attack;
mod hop;
mod outcome;
mod packet;
mod stray;
mod wire_check;

pub use attack::{AttackAnswer, AttackOutcome};
pub use hop::{Direction, FrameArrival, Hop, XdpNote};
pub use outcome::{Delivery, DropPlace, DropReason, PacketDrop, Receiver};
pub use packet::{Packet, PacketKind, TcpFlags, ip_addresses, seq_ge};
pub use proto::flow::{
    ClientId, DropReason as GatewayDropReason, FlowRecord, OuterContext, Protocol,
};
pub use stray::{HostFate, RelayDropReason, StrayArrival, XdpVerdict};
pub use wire_check::{check_datagram, check_ip_packet};
