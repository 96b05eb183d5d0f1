//! The open-flow table: a slab of [`Flow`]s, two hash indexes that store only slot numbers
//! (client-side key and resource-side key, hashed from the flow's own fields, so no key is
//! stored twice), and a min-heap of idle deadlines that is checked lazily (a packet only
//! updates `last_packet`; a popped deadline that is no longer due is pushed back with the
//! flow's real deadline).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use foldhash::fast::FixedState;
use hashbrown::HashTable;
use proto::flow::{ClientId, MAX_OUTER_CONTEXTS, Protocol, ResourceId};

use crate::chunked_slots::ChunkedSlots;
use crate::packet::{IpPacket, Transport};
use crate::tcp_tracker::{Direction, TcpTracker, TcpVerdict};

/// Nanoseconds since the gateway's time origin.
pub(crate) type Nanos = u64;

/// A duration in [`Nanos`] (saturating).
pub(crate) fn nanos_of(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A flow lookup key: protocol and the two endpoints as seen on one side of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlowKey {
    pub(crate) protocol: Protocol,
    pub(crate) src: IpAddr,
    pub(crate) src_port: u16,
    pub(crate) dst: IpAddr,
    pub(crate) dst_port: u16,
}

/// An address as 128 bits and whether it is IPv6.
fn ip_bits(ip: IpAddr) -> (u128, bool) {
    match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), false),
        IpAddr::V6(v6) => (u128::from(v6), true),
    }
}

/// Hashes the key as few wide words (one 128-bit word for IPv4) instead of field by field:
/// every field, the address families included, goes in, so equal keys hash equally and keys
/// that differ in any field differ in the words hashed.
impl Hash for FlowKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let (src, src_v6) = ip_bits(self.src);
        let (dst, dst_v6) = ip_bits(self.dst);
        let protocol = match self.protocol {
            Protocol::Tcp => 0u64,
            Protocol::Udp => 1,
            Protocol::Icmp => 2,
        };
        let meta = protocol
            | u64::from(self.src_port) << 8
            | u64::from(self.dst_port) << 24
            | u64::from(src_v6) << 40
            | u64::from(dst_v6) << 41;
        if !src_v6 && !dst_v6 {
            state.write_u128(src << 96 | dst << 64 | u128::from(meta));
        } else {
            state.write_u128(src);
            state.write_u128(dst);
            state.write_u64(meta);
        }
    }
}

/// The DNS part of a flow to a DNS resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DnsFlow {
    pub(crate) proxy_ip: IpAddr,
    pub(crate) domain: Arc<str>,
}

/// One open flow. Kept small: see the memory benchmark, and the size test below.
#[derive(Debug)]
pub(crate) struct Flow {
    pub(crate) client: ClientId,
    pub(crate) resource: ResourceId,
    pub(crate) protocol: Protocol,
    pub(crate) tcp: TcpTracker,
    pub(crate) client_ip: IpAddr,
    pub(crate) client_port: u16,
    /// The real resource IP (after DNS NAT).
    pub(crate) resource_ip: IpAddr,
    pub(crate) resource_port: u16,
    pub(crate) dns: Option<Arc<DnsFlow>>,
    pub(crate) start: Nanos,
    pub(crate) last_packet: Nanos,
    pub(crate) tx_packets: u64,
    pub(crate) tx_bytes: u64,
    pub(crate) rx_packets: u64,
    pub(crate) rx_bytes: u64,
    generation: u32,
    /// First outer context (an index into the gateway's outer-context interner).
    outer_first: u32,
    /// Further distinct outer contexts, first-seen order (rare: a path change or roaming).
    /// Boxed behind a thin pointer, so that a flow with one context pays 8 bytes for them.
    outer_more: Option<Box<MoreOuters>>,
}

/// The outer contexts of a flow after its first, at most `MAX_OUTER_CONTEXTS - 1`.
#[derive(Debug)]
struct MoreOuters {
    len: u8,
    items: [u32; MAX_OUTER_CONTEXTS - 1],
}

impl MoreOuters {
    fn as_slice(&self) -> &[u32] {
        &self.items[..usize::from(self.len)]
    }
}

impl Flow {
    /// Counts one forwarded packet going `direction` (`payload` bytes: an ICMP error counts
    /// none), notes the outer context it came or went by, and advances the TCP state.
    #[inline]
    pub(crate) fn count(
        &mut self,
        direction: Direction,
        pkt: &IpPacket,
        payload: u64,
        outer_idx: u32,
        t: Nanos,
    ) -> TcpVerdict {
        let (packets, bytes) = match direction {
            Direction::ToResource => (&mut self.tx_packets, &mut self.tx_bytes),
            Direction::ToClient => (&mut self.rx_packets, &mut self.rx_bytes),
        };
        *packets += 1;
        *bytes += payload;
        self.last_packet = t;
        self.add_outer(outer_idx);
        match pkt.transport {
            Transport::Tcp {
                flags, seq, ack, ..
            } => self
                .tcp
                .on_packet(direction, flags, seq, ack, pkt.payload_len),
            _ => TcpVerdict::Open,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        client: ClientId,
        resource: ResourceId,
        protocol: Protocol,
        (client_ip, client_port): (IpAddr, u16),
        (resource_ip, resource_port): (IpAddr, u16),
        dns: Option<Arc<DnsFlow>>,
        now: Nanos,
        outer: u32,
    ) -> Self {
        Self {
            client,
            resource,
            protocol,
            tcp: TcpTracker::default(),
            client_ip,
            client_port,
            resource_ip,
            resource_port,
            dns,
            start: now,
            last_packet: now,
            tx_packets: 0,
            tx_bytes: 0,
            rx_packets: 0,
            rx_bytes: 0,
            generation: 0,
            outer_first: outer,
            outer_more: None,
        }
    }

    /// The key of the client's packets: client endpoint -> destination as the client sent it
    /// (the proxy IP for DNS resources).
    pub(crate) fn client_side_key(&self) -> FlowKey {
        FlowKey {
            protocol: self.protocol,
            src: self.client_ip,
            src_port: self.client_port,
            dst: self.dns.as_ref().map_or(self.resource_ip, |d| d.proxy_ip),
            dst_port: self.resource_port,
        }
    }

    /// The key of the resource's packets: real resource endpoint -> client endpoint.
    pub(crate) fn resource_side_key(&self) -> FlowKey {
        FlowKey {
            protocol: self.protocol,
            src: self.resource_ip,
            src_port: self.resource_port,
            dst: self.client_ip,
            dst_port: self.client_port,
        }
    }

    /// Records an outer context (interned index) if new and there is room.
    #[inline]
    pub(crate) fn add_outer(&mut self, outer: u32) {
        if self.outer_first != outer {
            self.add_further_outer(outer);
        }
    }

    #[cold]
    fn add_further_outer(&mut self, outer: u32) {
        let more = self.outer_more.get_or_insert_with(|| {
            Box::new(MoreOuters {
                len: 0,
                items: [0; MAX_OUTER_CONTEXTS - 1],
            })
        });
        let len = usize::from(more.len);
        if more.as_slice().contains(&outer) || len + 1 >= MAX_OUTER_CONTEXTS {
            return;
        }
        more.items[len] = outer;
        more.len += 1;
    }

    /// The outer contexts (interned indexes), first-seen order.
    pub(crate) fn outers(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::once(self.outer_first).chain(
            self.outer_more
                .iter()
                .flat_map(|more| more.as_slice().iter().copied()),
        )
    }
}

/// The open flows.
#[derive(Debug)]
pub(crate) struct FlowTable {
    slots: ChunkedSlots<Flow>,
    free: Vec<u32>,
    by_client_side: HashTable<u32>,
    by_resource_side: HashTable<u32>,
    hasher: FixedState,
    /// (deadline, slot, generation), earliest first. Entries may be early or stale.
    deadlines: BinaryHeap<Reverse<(Nanos, u32, u32)>>,
    next_generation: u32,
    idle_timeout: Nanos,
    /// Open flows per client, for the per-client cap.
    per_client: BTreeMap<ClientId, usize>,
}

impl FlowTable {
    pub(crate) fn new(hash_seed: u64, idle_timeout: Nanos) -> Self {
        Self {
            slots: ChunkedSlots::default(),
            free: Vec::new(),
            by_client_side: HashTable::new(),
            by_resource_side: HashTable::new(),
            hasher: FixedState::with_seed(hash_seed),
            deadlines: BinaryHeap::new(),
            next_generation: 0,
            idle_timeout,
            per_client: BTreeMap::new(),
        }
    }

    fn hash(&self, key: &FlowKey) -> u64 {
        self.hasher.hash_one(key)
    }

    fn slot(&self, idx: u32) -> Option<&Flow> {
        self.slots.get(idx as usize)
    }

    /// The open flow whose client-side key is `key`.
    pub(crate) fn find_client_side(&self, key: &FlowKey) -> Option<u32> {
        let slots = &self.slots;
        self.by_client_side
            .find(self.hash(key), |&i| {
                slots
                    .get(i as usize)
                    .is_some_and(|f| f.client_side_key() == *key)
            })
            .copied()
    }

    /// The open flow whose resource-side key is `key`.
    pub(crate) fn find_resource_side(&self, key: &FlowKey) -> Option<u32> {
        let slots = &self.slots;
        self.by_resource_side
            .find(self.hash(key), |&i| {
                slots
                    .get(i as usize)
                    .is_some_and(|f| f.resource_side_key() == *key)
            })
            .copied()
    }

    /// Adds a flow (the caller made sure neither key is in use) and returns its slot.
    pub(crate) fn insert(&mut self, mut flow: Flow) -> u32 {
        flow.generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let deadline = flow.last_packet.saturating_add(self.idle_timeout);
        let generation = flow.generation;
        let client_hash = self.hash(&flow.client_side_key());
        let resource_hash = self.hash(&flow.resource_side_key());
        *self.per_client.entry(flow.client).or_default() += 1;
        let idx = match self.free.pop() {
            Some(idx) => {
                *self.slots.slot_mut(idx as usize).expect("a freed slot") = Some(flow);
                idx
            }
            None => self.slots.push(flow) as u32,
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        let rehash = |key: FlowKey| hasher.hash_one(key);
        self.by_client_side.insert_unique(client_hash, idx, |&i| {
            slots
                .get(i as usize)
                .map_or(0, |f| rehash(f.client_side_key()))
        });
        self.by_resource_side
            .insert_unique(resource_hash, idx, |&i| {
                slots
                    .get(i as usize)
                    .map_or(0, |f| rehash(f.resource_side_key()))
            });
        // Grown by an eighth rather than doubled: the heap holds an entry per flow, and
        // doubling left up to as much room again standing empty.
        if self.deadlines.len() == self.deadlines.capacity() {
            self.deadlines
                .reserve_exact((self.deadlines.len() / 8).max(1024));
        }
        self.deadlines.push(Reverse((deadline, idx, generation)));
        idx
    }

    pub(crate) fn get(&self, idx: u32) -> Option<&Flow> {
        self.slot(idx)
    }

    pub(crate) fn get_mut(&mut self, idx: u32) -> Option<&mut Flow> {
        self.slots.get_mut(idx as usize)
    }

    /// Removes a flow from the table and its indexes.
    pub(crate) fn remove(&mut self, idx: u32) -> Option<Flow> {
        let flow = self.slots.slot_mut(idx as usize)?.take()?;
        if let Some(open) = self.per_client.get_mut(&flow.client) {
            *open -= 1;
            if *open == 0 {
                self.per_client.remove(&flow.client);
            }
        }
        let client_hash = self.hash(&flow.client_side_key());
        let resource_hash = self.hash(&flow.resource_side_key());
        if let Ok(e) = self.by_client_side.find_entry(client_hash, |&i| i == idx) {
            e.remove();
        }
        if let Ok(e) = self
            .by_resource_side
            .find_entry(resource_hash, |&i| i == idx)
        {
            e.remove();
        }
        self.free.push(idx);
        Some(flow)
    }

    /// The earliest idle deadline (possibly early: a flow that saw packets since is re-armed
    /// when it is reached).
    #[inline]
    pub(crate) fn next_deadline(&self) -> Option<Nanos> {
        self.deadlines.peek().map(|Reverse((d, _, _))| *d)
    }

    /// The next flow that is idle at `now` (`last_packet + idle_timeout <= now`), earliest
    /// deadline first, ties by slot.
    pub(crate) fn pop_idle(&mut self, now: Nanos) -> Option<u32> {
        while let Some(&Reverse((deadline, idx, generation))) = self.deadlines.peek() {
            if deadline > now {
                return None;
            }
            self.deadlines.pop();
            let Some(flow) = self.slot(idx) else { continue };
            if flow.generation != generation {
                continue;
            }
            let real = flow.last_packet.saturating_add(self.idle_timeout);
            if real <= now {
                return Some(idx);
            }
            self.deadlines.push(Reverse((real, idx, generation)));
        }
        None
    }

    /// Slots of all open flows, ascending.
    pub(crate) fn open_slots(&self) -> Vec<u32> {
        (0..self.slots.len() as u32)
            .filter(|&i| self.slots.is_occupied(i as usize))
            .collect()
    }

    /// Open flows of `client`.
    pub(crate) fn open_of(&self, client: ClientId) -> usize {
        self.per_client.get(&client).copied().unwrap_or(0)
    }

    /// The most flows one client holds open.
    pub(crate) fn most_of_one_client(&self) -> usize {
        self.per_client.values().copied().max().unwrap_or(0)
    }

    /// Renumbers every flow's outer contexts with `map` (the interner was compacted).
    pub(crate) fn remap_outers(&mut self, map: impl Fn(u32) -> u32) {
        for flow in self.slots.values_mut() {
            flow.outer_first = map(flow.outer_first);
            if let Some(more) = flow.outer_more.as_mut() {
                let len = usize::from(more.len);
                for outer in &mut more.items[..len] {
                    *outer = map(*outer);
                }
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every open flow costs this much in the slab, besides its index and deadline entries;
    /// a field added here shows up in the memory benchmark.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_flow_fits_in_128_bytes() {
        assert_eq!(size_of::<Flow>(), 128);
        assert_eq!(size_of::<Option<Flow>>(), 128);
    }
}
