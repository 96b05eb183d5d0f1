//! What the host drains: the transmit, event and flow-record queues, and the buffers of sent
//! transmits it hands back ([`Gateway::recycle`]) for later ones to reuse.

use proto::flow::FlowRecord;

use super::Gateway;
use crate::output::{Event, Transmit};

/// How many returned buffers [`Gateway::recycle`] keeps.
pub(super) const SPARE_BUFFERS: usize = 64;
/// Returned buffers larger than this are dropped rather than kept.
const SPARE_MAX_CAPACITY: usize = 64 * 1024;

impl Gateway {
    /// The next thing to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Hands back the buffer of a sent [`Transmit`] (a `Udp` payload or a `Tun` packet), or of
    /// a [`DroppedPacket`] ([`DroppedPacket::into_bytes`]), so a later transmit (or drop
    /// report) can reuse its allocation. Optional: a host that drops its transmits
    /// instead only pays one allocation per transmit. Keeps at most 64 buffers of at most
    /// 64 KiB; the contents are never read.
    ///
    /// [`DroppedPacket`]: crate::DroppedPacket
    /// [`DroppedPacket::into_bytes`]: crate::DroppedPacket::into_bytes
    pub fn recycle(&mut self, buffer: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS && buffer.capacity() <= SPARE_MAX_CAPACITY {
            self.spare.push(buffer);
        }
    }

    /// An empty buffer with room for `capacity` bytes: a recycled one if there is one.
    pub(super) fn take_buffer(&mut self, capacity: usize) -> Vec<u8> {
        match self.spare.pop() {
            Some(mut buffer) => {
                buffer.clear();
                buffer.reserve(capacity);
                buffer
            }
            None => Vec::with_capacity(capacity),
        }
    }

    /// The next event.
    ///
    /// The queue is unbounded but fills only as fast as calls feed it: one call adds at most
    /// one [`Event::PacketDropped`] for its own input, one per packet held for DNS that it
    /// releases (at most `dns_queue_limit` per mapping), and one event per flow started,
    /// roaming, or DNS answer or failure. A host that drains it after every call keeps it
    /// that small; one that never drains it grows it like an undrained transmit queue.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next completed flow record (only with flow logs enabled).
    pub fn poll_flow_record(&mut self) -> Option<FlowRecord> {
        self.records.pop_front()
    }
}
