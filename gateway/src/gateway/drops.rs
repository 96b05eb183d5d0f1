//! Drops: the one place a drop is counted and reported (`record_drop`), so every drop moves one
//! counter and emits one [`Event::PacketDropped`], in the order of the drops. What is reported
//! is the IP packet as received, or the datagram the gateway did not open (see the crate docs).

use proto::flow::ClientId;

use super::Gateway;
use crate::dns_resolver::HeldPacket;
use crate::drop_reason::DropReason;
use crate::output::{DroppedPacket, Event};
use crate::packet::PacketError;

pub(super) fn packet_error(e: PacketError) -> DropReason {
    match e {
        PacketError::Malformed => DropReason::MalformedPacket,
        PacketError::Fragment => DropReason::Fragment,
        PacketError::Unsupported => DropReason::UnsupportedProtocol,
    }
}

impl Gateway {
    /// Counts a drop and reports it with [`Event::PacketDropped`]: the only place a drop
    /// counter moves, so counters and events agree by construction. Returns `reason`.
    #[cold]
    #[inline(never)]
    pub(super) fn record_drop(
        &mut self,
        reason: DropReason,
        client: Option<ClientId>,
        packet: DroppedPacket,
    ) -> DropReason {
        self.drops.bump(reason);
        tracing::debug!(%reason, "gateway dropped input");
        self.events.push_back(Event::PacketDropped {
            reason,
            client,
            packet,
        });
        reason
    }

    /// Drops what the gateway was handed, reported as a copy (in a recycled buffer if any):
    /// `as_dropped` says what it is (`DroppedPacket::Ip` or `DroppedPacket::Datagram`).
    #[cold]
    pub(super) fn drop_copy(
        &mut self,
        reason: DropReason,
        client: Option<ClientId>,
        bytes: &[u8],
        as_dropped: fn(Vec<u8>) -> DroppedPacket,
    ) -> DropReason {
        let copy = self.copy_of(bytes);
        self.record_drop(reason, client, as_dropped(copy))
    }

    /// Drops packets held for a DNS answer, in order.
    pub(super) fn drop_held(
        &mut self,
        reason: DropReason,
        client: ClientId,
        held: Vec<HeldPacket>,
    ) {
        for h in held {
            self.record_drop(reason, Some(client), DroppedPacket::Ip(h.packet));
        }
    }

    fn copy_of(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut copy = self.take_buffer(bytes.len());
        copy.extend_from_slice(bytes);
        copy
    }
}
