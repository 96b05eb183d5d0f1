//! Traffic on a timer's deadline. A timer boundary action asks the reference model which of the
//! gateways' timers are pending after the steps written so far (flows' idle timeouts, DNS
//! answers' TTLs, with the deadlines the configuration gives them), picks one that traffic so
//! far can reach again, and writes an idle of the exact number of milliseconds that makes that
//! traffic reach the gateway 1 ms before the deadline, on it, or 1 ms after. The idle is worked
//! out again whenever the steps before it change, so a shrunk case keeps its boundary.

use model::coverage::PendingDeadline;
use scenario_format::{
    Scenario, Side, Step,
    plan::AddressPlan,
    timing::{TUN_LATENCY_MS, Timeline},
};

use super::step_writer::StepWriter;
use model::Receiver;

impl StepWriter<'_> {
    pub(super) fn write_timer_boundary(&mut self, which: usize, offset_ms: i64) {
        let prefix = self.scenario_so_far();
        let Ok(prediction) = model::predict(&prefix) else {
            return;
        };
        let now = Timeline::of(&prefix).t_end;
        let probes: Vec<(u64, Step)> = prediction
            .coverage
            .pending_at_end
            .iter()
            .filter(|deadline| deadline.at_ms > now)
            .filter_map(|deadline| Some((deadline.at_ms, self.probe_for(deadline, which)?)))
            .collect();
        if probes.is_empty() {
            return;
        }
        let (deadline, probe) = probes[which % probes.len()].clone();
        let Some(lead) = self.lead_ms(&probe) else {
            return;
        };
        let idle = deadline.cast_signed() + offset_ms - now.cast_signed() - lead.cast_signed();
        // A deadline that traffic sent now already reaches too late for this offset: nothing
        // to aim at.
        let Ok(idle) = u64::try_from(idle) else {
            return;
        };
        if idle == 0 {
            return;
        }
        self.steps.push(Step::Idle {
            seconds: idle / 1000,
            ms: idle % 1000,
        });
        self.steps.push(probe);
    }

    fn scenario_so_far(&self) -> Scenario {
        Scenario {
            name: "generated".to_owned(),
            description: String::new(),
            topology: self.topology.clone(),
            steps: self.steps.clone(),
        }
    }

    /// A step whose packet belongs to the flow or DNS mapping of `deadline`, if the steps so
    /// far sent such traffic.
    fn probe_for(&self, deadline: &PendingDeadline, which: usize) -> Option<Step> {
        let client = &self.layout.clients.get(deadline.client)?.name;
        let bytes = 1 + (which % 200) as u16;
        if let Some((src_port, dst_port)) = deadline.ports {
            if let Some((conn, _)) = self.conns.iter().find(|(_, (target, port, open))| {
                *open && &target.client == client && *port == src_port && target.port == dst_port
            }) {
                // Either side's data refreshes the flow: both get their turn.
                let from = if which.is_multiple_of(2) {
                    Side::Client
                } else {
                    Side::Resource
                };
                return Some(Step::TcpData {
                    conn: *conn,
                    from,
                    bytes,
                });
            }
            let target = self.udp_targets.iter().rev().find(|target| {
                &target.client == client
                    && target.port == dst_port
                    && AddressPlan::udp_source_port(target.port) == src_port
            })?;
            return Some(Step::Udp {
                target: target.clone(),
                bytes,
            });
        }
        let (domain, v6) = deadline.domain.as_ref()?;
        let mut target = self
            .udp_targets
            .iter()
            .rev()
            .find(|target| {
                &target.client == client
                    && target.domain.as_ref() == Some(domain)
                    && target.ipv6 == *v6
            })?
            .clone();
        // Half the time the same flow meets the expiry; the other half a new flow (a new
        // source port, within the filtered grants' 5000-5999) starts on it, and takes
        // whatever answer the name has then.
        if which.is_multiple_of(2) {
            target.port = 5000 + (which % 1000) as u16;
        }
        Some(Step::Udp { target, bytes })
    }

    /// How long after its step starts the probe's packet reaches the gateway, by the model:
    /// a client's packet is at the resource one TUN link after the gateway; a resource's
    /// packet is at the gateway one TUN link after it leaves.
    fn lead_ms(&self, probe: &Step) -> Option<u64> {
        if let Step::TcpData {
            from: Side::Resource,
            ..
        } = probe
        {
            return Some(TUN_LATENCY_MS);
        }
        let mut with_probe = self.scenario_so_far();
        with_probe.steps.push(probe.clone());
        let step = with_probe.steps.len() - 1;
        let start = Timeline::of(&with_probe).step_start[step];
        let prediction = model::predict(&with_probe).ok()?;
        let at_resource = prediction
            .deliveries
            .iter()
            .filter(|d| d.step == step && matches!(d.to, Receiver::Resource { .. }))
            .map(|d| d.at_ms)
            .min()?;
        at_resource.checked_sub(TUN_LATENCY_MS + start)
    }
}
