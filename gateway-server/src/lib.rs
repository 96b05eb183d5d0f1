//! The sans-IO VPN gateway ([`gateway::Gateway`]) on a TUN device and real UDP sockets, with
//! tokio: the `gateway-server` binary.
//!
//! - [`config`]: the YAML file, checked whole before anything opens ([`Setup::parse`]);
//! - [`server`]: the loop ([`Server`]) that feeds the gateway and its tunnel endpoint (the
//!   TURN client of its own allocation) and drains what they queue;
//! - [`control`]: the JSON-line commands of `--control-stdin`;
//! - [`output`]: the flow log and the runner's events, as JSON lines;
//! - `sockets`, `tun_device`, `input`: the sockets, the TUN device and their readers.
//!
//! # Addresses
//!
//! The gateway sees the real addresses: a datagram read from the socket bound to `to` is
//! `handle_input(from, to, ...)`, and a transmit from `src` leaves from the socket bound to
//! `src` (a tunnel socket or a DNS source-port socket). A frame that came through the
//! gateway's relay has the outer context the relay gives it (the peer, and the relayed
//! address), and a reply to a peer reached via the relay goes back as ChannelData from the
//! tunnel socket of the relay's family.

pub mod config;
pub mod control;
mod filter_text;
mod input;
pub mod output;
pub mod server;
mod sockets;
mod tun_device;

pub use config::{ConfigError, Setup};
pub use filter_text::parse_filter;
pub use server::{Options, Server, StartError, Summary};
pub use sockets::BindError;
