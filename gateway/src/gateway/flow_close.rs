//! The end of flows: a TCP close (FIN or RST), an idle timeout, a revocation or the shutdown
//! removes a flow and, with flow logs on, emits its record.

use std::time::Instant;

use proto::flow::CloseReason;

use super::Gateway;
use crate::flow_log;
use crate::flow_table::{Flow, Nanos};
use crate::tcp_tracker::TcpVerdict;

impl Gateway {
    /// Closes every open flow with reason `shutdown` (end = `now`, after first closing those
    /// already idle at `now`), drops pending DNS work (packets held for an answer are dropped
    /// with reason `shut-down`, in (client, proxy IP, arrival) order), and refuses all later
    /// input.
    pub fn shutdown(&mut self, now: Instant) {
        let t = self.advance(now);
        if self.shut_down {
            return;
        }
        for idx in self.flows_in_start_order(|_| true) {
            self.close_flow(idx, CloseReason::Shutdown, t);
        }
        self.dns.shutdown();
        self.run_dns_actions(t);
        self.shut_down = true;
    }

    pub(super) fn close_if_done(&mut self, idx: u32, verdict: TcpVerdict, t: Nanos) {
        match verdict {
            TcpVerdict::Open => {}
            TcpVerdict::ClosedByFin => self.close_flow(idx, CloseReason::Fin, t),
            TcpVerdict::ClosedByRst => self.close_flow(idx, CloseReason::Rst, t),
        }
    }

    /// Removes a flow and, with flow logs on, emits its record.
    pub(crate) fn close_flow(&mut self, idx: u32, reason: CloseReason, end: Nanos) {
        let Some(flow) = self.flows.remove(idx) else {
            return;
        };
        if !self.config.flow_logs {
            return;
        }
        let record = flow_log::record(&self.config.time_origin, &self.outers, &flow, reason, end);
        flow_log::emit_completed(&record);
        self.records.push_back(record);
    }

    /// Slots of the open flows that satisfy `pred`, ordered by start time, then slot.
    pub(crate) fn flows_in_start_order(&self, pred: impl Fn(&Flow) -> bool) -> Vec<u32> {
        let mut v: Vec<(Nanos, u32)> = self
            .flows
            .open_slots()
            .into_iter()
            .filter_map(|i| self.flows.get(i).filter(|f| pred(f)).map(|f| (f.start, i)))
            .collect();
        v.sort_unstable();
        v.into_iter().map(|(_, i)| i).collect()
    }
}
