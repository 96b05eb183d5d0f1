//! The VPN gateway, as a sans-IO state machine: client sessions and grants from the control
//! plane, CIDR and DNS resources, DNS NAT (proxy IP <-> real IP per client), filters, ICMP
//! errors, and the flow tracker that writes the flow log (`flow_logs` tracing events and
//! `poll_flow_record`).
//!
//! # The state machine
//!
//! A [`Gateway`] owns no clock, socket, thread or randomness. Its caller feeds it input with
//! the current time and drains its output:
//!
//! - [`Gateway::handle_input`]`(from, to, payload, now)`: a UDP datagram for the gateway.
//!   From the configured DNS server it is a DNS answer; otherwise it must be a tunnel frame
//!   ([`proto::tunnel`]) from a client, handed to [`Gateway::handle_tunnel_frame`] with the
//!   outer context `(from, to)`. A caller that unwrapped a frame from a relay (ChannelData)
//!   calls `handle_tunnel_frame` itself with the outer 4-tuple replies should use.
//! - [`Gateway::handle_tun_packet`]`(packet, now)`: an IP packet from a resource.
//! - [`Gateway::handle_timeout`]`(now)` at [`Gateway::poll_timeout`]: idle flows close, DNS
//!   queries are retried, expired answers are re-resolved. Every entry point runs what is due
//!   first, so the result does not depend on whether the caller called `handle_timeout` at
//!   exactly the deadline.
//! - [`Gateway::poll_transmit`] ([`Transmit::Udp`]: tunnel frames to clients, DNS queries;
//!   [`Transmit::Tun`]: packets to resources), [`Gateway::poll_event`] ([`Event`]),
//!   [`Gateway::poll_flow_record`] ([`proto::flow::FlowRecord`]). Optionally,
//!   [`Gateway::recycle`] hands a sent transmit's buffer back (or a dropped packet's,
//!   [`DroppedPacket::into_bytes`]), so the data path allocates nothing per packet.
//! - [`Gateway::shutdown`]`(now)`: flushes every open flow (reason `shutdown`) and drops the
//!   packets held for DNS answers.
//!
//! # Drops
//!
//! Every drop the gateway decides increments one counter ([`Gateway::drop_counters`], by
//! [`DropReason`]) and emits exactly one [`Event::PacketDropped`] with the reason, the client
//! the packet came from or was for (`None` where it names none), and the [`DroppedPacket`]:
//! the IP packet as received ([`DroppedPacket::Ip`]: a client's inner packet before DNS NAT, a
//! TUN packet) or, for a datagram it did not open (a tunnel frame that failed before its MAC
//! verified, a non-frame, a DNS datagram), the datagram ([`DroppedPacket::Datagram`]). There
//! is no drop without its event and no event without a counter increment, and the events come
//! in the order of the drops. That covers the input a call refuses (the call returns the same
//! `Err(reason)`) and the later drops of packets held for a DNS answer: the resolution failed,
//! the mapping was replaced or removed (`dns-resolution-failed`), the packet was refused when
//! handled again after the answer, or `shutdown` (`shut-down`). A host that drains
//! [`Gateway::poll_event`] after every call keeps the event queue bounded by what one call can
//! produce (see there); nothing is dropped from it.
//!
//! The control plane ([`Gateway::add_client`], [`Gateway::add_resource`],
//! [`Gateway::grant`], [`Gateway::revoke`], [`Gateway::map_dns`], ...) stands in for a portal.
//!
//! # A client packet, step by step
//!
//! 1. Tunnel header, session, MAC, replay window, inner IP packet, source = the client's
//!    tunnel IP. A failure drops the frame with a [`DropReason`] and changes nothing else
//!    (but the drop's counter and event).
//! 2. An open flow with the packet's key: forward it (DNS NAT: destination proxy IP -> the
//!    flow's real IP), count it.
//! 3. Otherwise the packet may start a flow (TCP: a pure SYN only): the client must have a
//!    grant whose filters allow it, for a CIDR resource covering the destination, or for a
//!    DNS resource matching the domain mapped to the destination proxy IP. Denied: an ICMP
//!    administratively-prohibited error goes back to the client. A proxy IP whose answer is
//!    pending queues the packet (bounded); when the answer comes, queued packets go through
//!    steps 2 and 3 again.
//! 4. Every accepted frame (step 1 passed), forwarded or not, updates the replay window and
//!    moves the client to the frame's outer context (roaming).
//!
//! Resource packets pass only for open flows (source NAT back to the proxy IP; ICMP errors
//! translated including the quoted header) and go in a tunnel frame to the client's current
//! outer context. The flow rules are in `docs/flows.md`.
//!
//! Outputs never depend on `HashMap` iteration order: hash maps are used for lookups only;
//! everything iterated is a `BTreeMap`, a queue or sorted.

mod checksum;
mod chunked_slots;
mod cidr;
mod config;
mod control;
mod dns_resolver;
mod dns_wire;
mod domain;
mod drop_reason;
mod filter;
mod flow_log;
mod flow_table;
mod gateway;
mod output;
mod packet;
mod replay_window;
mod tcp_tracker;

pub use cidr::{CidrError, IpCidr, PROXY_V4, PROXY_V6, TUNNEL_V4, TUNNEL_V6, is_proxy_ip};
pub use config::{ClientConfig, ControlError, GatewayConfig, Occupancy, Resource, ResourceAddress};
pub use domain::{DomainError, DomainPattern};
pub use drop_reason::{DropCounters, DropReason};
pub use filter::{Filter, PortRange};
pub use flow_log::TARGET as FLOW_LOG_TARGET;
pub use gateway::Gateway;
pub use output::{DroppedPacket, Event, FlowStarted, Transmit};
pub use replay_window::WINDOW as REPLAY_WINDOW;
