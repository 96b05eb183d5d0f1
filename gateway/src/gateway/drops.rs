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

    /// Drops an IP packet the gateway was handed (copied, into a recycled buffer if any).
    #[cold]
    pub(super) fn drop_ip(
        &mut self,
        reason: DropReason,
        client: Option<ClientId>,
        bytes: &[u8],
    ) -> DropReason {
        let copy = self.copy_of(bytes);
        self.record_drop(reason, client, DroppedPacket::Ip(copy))
    }

    /// Drops a datagram the gateway did not open (copied, into a recycled buffer if any).
    #[cold]
    pub(super) fn drop_datagram(
        &mut self,
        reason: DropReason,
        client: Option<ClientId>,
        bytes: &[u8],
    ) -> DropReason {
        let copy = self.copy_of(bytes);
        self.record_drop(reason, client, DroppedPacket::Datagram(copy))
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
