//! What the relay hands back to its host: datagrams, events, and reasons for dropping input.

use std::{net::SocketAddr, time::Instant};

use proto::channel_data;

/// A control datagram (a STUN response or a Data indication) for the host to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// A data datagram to send right away, borrowing its data from the input: relaying never
/// copies or allocates. With a channel, the datagram is ChannelData (`header()` then `data`);
/// without, it is a plain UDP payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed<'p> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub channel: Option<u16>,
    pub data: &'p [u8],
}

impl Relayed<'_> {
    /// The ChannelData header to put before `data`, if this is ChannelData.
    pub fn header(&self) -> Option<[u8; channel_data::HEADER_LEN]> {
        self.channel
            .map(|channel| channel_data::header(channel, self.data.len()))
    }

    /// Length of the datagram on the wire.
    pub fn len(&self) -> usize {
        self.data.len()
            + if self.channel.is_some() {
                channel_data::HEADER_LEN
            } else {
                0
            }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The datagram as owned bytes (for hosts that queue).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        if let Some(header) = self.header() {
            out.extend_from_slice(&header);
        }
        out.extend_from_slice(self.data);
        out
    }

    pub fn to_transmit(&self) -> Transmit {
        Transmit {
            src: self.src,
            dst: self.dst,
            payload: self.to_vec(),
        }
    }
}

/// An active channel: data flows on it in both directions. This is exactly what an XDP fast
/// path needs in its maps: (client, channel) -> (allocation port, peer) and back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelBinding {
    /// The client's transport address (as the relay sees it).
    pub client: SocketAddr,
    pub channel: u16,
    /// The allocation's port; its relayed address of the peer's family is the source of the
    /// data sent to the peer.
    pub allocation_port: u16,
    pub peer: SocketAddr,
}

/// Why an allocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreeReason {
    /// A Refresh with LIFETIME 0.
    Deleted,
    /// Its lifetime ran out.
    Expired,
    /// The host could not bind its socket ([`crate::Relay::handle_bind_failure`]); the client
    /// was answered 508 instead of a relayed address.
    Unbindable,
}

/// State changes the host may mirror elsewhere (an XDP map, a log).
///
/// A channel is *active* while its binding is alive (600 s from the last ChannelBind) and the
/// permission for its peer's IP is alive (300 s from the last ChannelBind or CreatePermission).
/// `ChannelBound` and `ChannelUnbound` bracket exactly the time a channel is active, so a
/// consumer that installs on `ChannelBound` and removes on `ChannelUnbound` holds the relay's
/// own table of active channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    AllocationCreated {
        client: SocketAddr,
        port: u16,
        relayed: Vec<SocketAddr>,
        expires_at: Instant,
    },
    AllocationRefreshed {
        client: SocketAddr,
        port: u16,
        expires_at: Instant,
    },
    AllocationFreed {
        client: SocketAddr,
        port: u16,
        reason: FreeReason,
    },
    ChannelBound(ChannelBinding),
    /// The binding or its permission was extended while active; nothing to re-install.
    ChannelRefreshed(ChannelBinding),
    ChannelUnbound(ChannelBinding),
}

/// Why an input datagram was dropped. Dropping never changes state but the drop counter of
/// the reason ([`crate::Relay::drop_counts`]). The reasons are shared vocabulary
/// (`proto::relay_drop`): the reference model predicts them.
pub use proto::relay_drop::RelayDropReason as Drop;
