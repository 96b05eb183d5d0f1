//! Traffic on a relay timer's deadline. The first gateway switches to a `gateway-relayed` path
//! to a client it has not bound a channel to yet, so its relay installs a fresh channel binding
//! and permission for the client's address when the ChannelBind arrives. From the next step
//! on, the gateway's binding requests to its relay are dropped (its allocation's refreshes
//! pass), so the permission runs out after the relay's permission lifetime, the binding after
//! the channel lifetime and its reservation after the cooldown. An idle of the exact number of
//! milliseconds brings a datagram from the client to the relay 1 ms before one of those
//! deadlines, on it, or 1 ms after; the link then heals. The lifetimes are the relay's own
//! constants, the arrival times the topology's latencies (docs/harness.md).
//!
//! The model does not predict what follows a fault on a relay link across an idle, so such a
//! case is held to the invariants only: the XDP program against the userspace relay on the
//! deadline, the XDP maps against the relay's table as the binding expires, the byte checks.

use relay::{CHANNEL_COOLDOWN, CHANNEL_LIFETIME, PERMISSION_LIFETIME};
use scenario_format::{Fault, PathMode, Scenario, Step, timing::Timeline};

use super::action::Destination;
use super::step_writer::StepWriter;

/// The relay timers a boundary action aims at, by `timer % 3`, in ms after the bind.
fn lifetime_ms(timer: usize) -> u64 {
    let ms = |duration: std::time::Duration| duration.as_millis() as u64;
    match timer % 3 {
        0 => ms(PERMISSION_LIFETIME),
        1 => ms(CHANNEL_LIFETIME),
        _ => ms(CHANNEL_LIFETIME + CHANNEL_COOLDOWN),
    }
}

impl StepWriter<'_> {
    pub(super) fn write_relay_timer_boundary(
        &mut self,
        client: usize,
        timer: usize,
        offset_ms: i64,
    ) {
        let c = self.client_index(client);
        let g = 0;
        let gateway = &self.layout.gateways[g];
        let Some(relay) = gateway.relay.clone() else {
            return;
        };
        let fresh = !self.gateway_bound.contains(&(c, g, self.roams[c]));
        let path = self
            .layout
            .usable(c, g, PathMode::GatewayRelayed, self.roamed[c]);
        if !fresh || path != Some(PathMode::GatewayRelayed) {
            return;
        }
        let latency = &self.topology.latency;
        let gateway_name = gateway.name.clone();
        let client_name = self.layout.clients[c].name.clone();
        // The ChannelBind leaves the gateway when the path step starts and installs the binding
        // and the permission when it reaches the relay.
        let path_at = self.now();
        let bound_at = path_at + latency.between(&gateway_name, &relay);
        self.push_path(c, g, PathMode::GatewayRelayed);
        self.steps.push(Step::Fault {
            between: [gateway_name.clone(), relay.clone()],
            fault: Fault::DropBindingRequests,
        });
        let arrival = (bound_at + lifetime_ms(timer)).cast_signed() + offset_ms;
        let sent_at = arrival - latency.between(&client_name, &relay).cast_signed();
        let idle = sent_at - self.now().cast_signed();
        if let Ok(idle @ 1..) = u64::try_from(idle) {
            self.steps.push(Step::Idle {
                seconds: idle / 1000,
                ms: idle % 1000,
            });
            // To the first resource, which is the first gateway's.
            let target = self.target(Destination {
                client,
                resource: 0,
                port: 53,
                ipv6: false,
                domain: 0,
            });
            self.steps.push(Step::Udp { target, bytes: 1 });
        }
        self.steps.push(Step::Fault {
            between: [gateway_name, relay],
            fault: Fault::Heal,
        });
    }

    /// When the next step starts.
    fn now(&self) -> u64 {
        Timeline::of(&Scenario {
            name: String::new(),
            description: String::new(),
            topology: self.topology.clone(),
            steps: self.steps.clone(),
        })
        .t_end
    }
}
