//! Turning open flows into flow records, and writing them as `flow_logs` tracing events.

use std::collections::HashMap;
use std::fmt::Write as _;

use foldhash::fast::FixedState;
use proto::flow::{CloseReason, FlowRecord, OuterContext, TimeOrigin, UtcTime};

use crate::flow_table::{Flow, Nanos};
use crate::output::FlowStarted;

/// The tracing target of flow-log events.
pub const TARGET: &str = "flow_logs";

/// Distinct outer contexts, each stored once; flows keep 4-byte indexes into it. It only
/// grows (by one entry per outer 4-tuple ever seen on an accepted frame).
#[derive(Debug, Default)]
pub(crate) struct OuterInterner {
    list: Vec<OuterContext>,
    index: HashMap<OuterContext, u32, FixedState>,
}

impl OuterInterner {
    pub(crate) fn intern(&mut self, outer: OuterContext) -> u32 {
        if let Some(&i) = self.index.get(&outer) {
            return i;
        }
        let i = self.list.len() as u32;
        self.list.push(outer);
        self.index.insert(outer, i);
        i
    }

    pub(crate) fn get(&self, i: u32) -> OuterContext {
        self.list[i as usize]
    }

    /// Interned contexts, live or not.
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// Keeps only the contexts at `live` (old indexes, in the order given; repeats allowed)
    /// and returns the new index of each kept old index.
    pub(crate) fn compact(
        &mut self,
        live: impl IntoIterator<Item = u32>,
    ) -> HashMap<u32, u32, FixedState> {
        let old = std::mem::take(&mut self.list);
        self.index.clear();
        let mut renumbered = HashMap::with_hasher(FixedState::default());
        for i in live {
            if let Some(&outer) = old.get(i as usize) {
                let new = self.intern(outer);
                renumbered.insert(i, new);
            }
        }
        renumbered
    }
}

pub(crate) fn utc(origin: &TimeOrigin, t: Nanos) -> UtcTime {
    origin.unix.plus(std::time::Duration::from_nanos(t))
}

pub(crate) fn started(origin: &TimeOrigin, outers: &OuterInterner, flow: &Flow) -> FlowStarted {
    FlowStarted {
        client: flow.client,
        resource: flow.resource,
        protocol: flow.protocol,
        start: utc(origin, flow.start),
        inner_src_ip: flow.client_ip,
        inner_src_port: flow.client_port,
        inner_dst_ip: flow.resource_ip,
        inner_dst_port: flow.resource_port,
        inner_domain: flow.dns.as_ref().map(|d| d.domain.to_string()),
        outer_context: outers.get(flow.outers().next().unwrap_or(0)),
    }
}

pub(crate) fn record(
    origin: &TimeOrigin,
    outers: &OuterInterner,
    flow: &Flow,
    reason: CloseReason,
    end: Nanos,
) -> FlowRecord {
    FlowRecord {
        client: flow.client,
        resource: flow.resource,
        protocol: flow.protocol,
        start: utc(origin, flow.start),
        end: utc(origin, end),
        last_packet: utc(origin, flow.last_packet),
        inner_src_ip: flow.client_ip,
        inner_src_port: flow.client_port,
        inner_dst_ip: flow.resource_ip,
        inner_dst_port: flow.resource_port,
        inner_domain: flow.dns.as_ref().map(|d| d.domain.to_string()),
        outer_contexts: flow.outers().map(|i| outers.get(i)).collect(),
        tx_packets: flow.tx_packets,
        tx_bytes: flow.tx_bytes,
        rx_packets: flow.rx_packets,
        rx_bytes: flow.rx_bytes,
        close_reason: reason,
    }
}

fn outer_list(outers: &[OuterContext]) -> String {
    let mut s = String::from("[");
    for (i, o) in outers.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{o}");
    }
    s.push(']');
    s
}

/// Emits the "flow started" event.
pub(crate) fn emit_started(s: &FlowStarted) {
    tracing::info!(
        target: TARGET,
        client = %s.client,
        resource = %s.resource,
        protocol = %s.protocol,
        start = %s.start,
        inner_src_ip = %s.inner_src_ip,
        inner_src_port = s.inner_src_port,
        inner_dst_ip = %s.inner_dst_ip,
        inner_dst_port = s.inner_dst_port,
        inner_domain = s.inner_domain.as_deref().unwrap_or("-"),
        outer_context = %s.outer_context,
        "flow started"
    );
}

/// Emits the "flow completed" event.
pub(crate) fn emit_completed(r: &FlowRecord) {
    tracing::info!(
        target: TARGET,
        client = %r.client,
        resource = %r.resource,
        protocol = %r.protocol,
        start = %r.start,
        end = %r.end,
        last_packet = %r.last_packet,
        inner_src_ip = %r.inner_src_ip,
        inner_src_port = r.inner_src_port,
        inner_dst_ip = %r.inner_dst_ip,
        inner_dst_port = r.inner_dst_port,
        inner_domain = r.inner_domain.as_deref().unwrap_or("-"),
        outer_contexts = %outer_list(&r.outer_contexts),
        tx_packets = r.tx_packets,
        tx_bytes = r.tx_bytes,
        rx_packets = r.rx_packets,
        rx_bytes = r.rx_bytes,
        close_reason = %r.close_reason,
        "flow completed"
    );
}
