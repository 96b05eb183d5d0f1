//! The tunnel endpoint used by both the client and the gateway, as sans-IO state machines:
//! TURN client allocations (answering the 401 challenge, refreshing before expiry, permissions
//! and channel bindings), path selection (direct or through a relay), and tunnel framing.
//!
//! [`TurnClient`] is the client side of TURN (RFC 8656) against one relay.

mod client;
mod endpoint;

pub use endpoint::{Arrival, Endpoint};

pub use client::{
    ALLOCATION_REFRESH_MARGIN, BINDING_REFRESH_INTERVAL, ClientError, ClientEvent, Families,
    PeerData, TRANSACTION_INSTANTS, TurnClient, TurnClientConfig, TurnTransmit,
    transaction_schedule,
};
