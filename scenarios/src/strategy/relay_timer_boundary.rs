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
//! The allocation's own lifetime is aimed at the same way, through a held link: the gateway
//! allocates during the setup (an Allocate, the 401, the authenticated Allocate: it reaches the
//! relay after three one-way latencies), and its TURN client sends the Refresh
//! `ALLOCATION_REFRESH_MARGIN` before the lifetime ends. The link between the gateway and its
//! relay is held from just before that Refresh leaves (after the bindings' last refresh, so the
//! permission outlives the allocation); then either a datagram from the client reaches the
//! gateway's relayed address 1 ms before the allocation's deadline, on it or 1 ms after, or the
//! link is released so that the held Refresh reaches the relay then (late, exactly on time or
//! early by 1 ms).
//!
//! A client's own allocation is aimed at the same way, by its held Refresh: the one it made
//! during the setup, or the one it asks for from its new address when it roams (a roam written
//! by the action itself, or an earlier one), so that an allocation made mid-run has its
//! deadline crossed too.
//!
//! The gateway's TURN client's own transaction timers are aimed at through a held link too:
//! the link between the gateway and its relay is held from the path step on, so the
//! ChannelBind the step sends waits, and is released so that the relay's answer reaches the
//! gateway 1 ms before one instant of the transaction's schedule, on it, or 1 ms after (one of
//! its six retransmissions, or the give-up; `turn_client::transaction_schedule`). The copies
//! sent during the hold are released with it, and the relay answers each.
//!
//! The model does not predict what follows a fault on a relay link across an idle, so such a
//! case is held to the invariants only: the XDP program against the userspace relay on the
//! deadline, the XDP maps against the relay's table as the binding expires, the byte checks.

use relay::{CHANNEL_COOLDOWN, CHANNEL_LIFETIME, DEFAULT_ALLOCATION_LIFETIME, PERMISSION_LIFETIME};
use scenario_format::{Fault, PathMode, Scenario, Step, timing::Timeline};
use turn_client::{
    ALLOCATION_REFRESH_MARGIN, BINDING_REFRESH_INTERVAL, TRANSACTION_INSTANTS, transaction_schedule,
};

use super::action::Destination;
use super::step_writer::StepWriter;

/// The timers a boundary action aims at, by `timer % TIMERS`: the relay's for the binding (ms
/// after the bind), then the gateway's allocation's, by a peer's datagram or by the held
/// Refresh, then the TURN client's transaction (the instant of its schedule by
/// `timer / TIMERS`), then the client's allocation's by its held Refresh (after a roam first
/// when `timer / TIMERS` is odd).
const TIMERS: usize = 7;

/// The values of an action's `timer`: every timer, and for the transaction each instant of its
/// schedule.
pub(super) const TIMER_CHOICES: usize = TIMERS * TRANSACTION_INSTANTS;

fn ms(duration: std::time::Duration) -> u64 {
    duration.as_millis() as u64
}

fn lifetime_ms(timer: usize) -> u64 {
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
        match timer % TIMERS {
            3 => return self.write_allocation_boundary(client, offset_ms, false),
            4 => return self.write_allocation_boundary(client, offset_ms, true),
            5 => return self.write_transaction_boundary(client, timer / TIMERS, offset_ms),
            6 => {
                let roam_first = (timer / TIMERS) % 2 == 1;
                return self.write_client_allocation_boundary(client, roam_first, offset_ms);
            }
            _ => {}
        }
        let Some((c, gateway_name, relay)) = self.fresh_relayed_channel(client) else {
            return;
        };
        let latency = &self.topology.latency;
        let client_name = self.layout.clients[c].name.clone();
        // The ChannelBind leaves the gateway when the path step starts and installs the binding
        // and the permission when it reaches the relay.
        let path_at = self.now();
        let bound_at = path_at + latency.between(&gateway_name, &relay);
        self.push_path(c, 0, PathMode::GatewayRelayed);
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
            self.push_datagram_to_first_gateway(client);
        }
        self.steps.push(Step::Fault {
            between: [gateway_name, relay],
            fault: Fault::Heal,
        });
    }

    /// A datagram from the client at the first gateway's relayed address (or, with `refresh`,
    /// the gateway's held Refresh) reaching the relay `offset_ms` from the gateway's
    /// allocation's deadline. Nothing is written when the case is past the point where that
    /// can be arranged, or the gateway restarted or its relay link had a fault before.
    fn write_allocation_boundary(&mut self, client: usize, offset_ms: i64, refresh: bool) {
        let c = self.client_index(client);
        let g = 0;
        let gateway = &self.layout.gateways[g];
        let Some(relay) = gateway.relay.clone() else {
            return;
        };
        let gateway_name = gateway.name.clone();
        let client_name = self.layout.clients[c].name.clone();
        let link_touched = self.link_faulted(&gateway_name, &relay)
            || self
                .steps
                .iter()
                .any(|step| matches!(step, Step::GatewayRestart { .. }));
        let path = self
            .layout
            .usable(c, g, PathMode::GatewayRelayed, self.roamed[c]);
        if link_touched || path != Some(PathMode::GatewayRelayed) {
            return;
        }
        let latency = &self.topology.latency;
        let to_relay = latency.between(&gateway_name, &relay);
        let (deadline, refresh_sent) = allocation_times(0, to_relay);
        // The hold starts a second before the Refresh leaves (a fault step takes effect at its
        // start), so the Refresh and its retransmissions are all held.
        let hold_at = refresh_sent - 1000;
        // The bindings' refreshes every BINDING_REFRESH_INTERVAL from the path step on: the last
        // one before the hold must pass, so that the permission outlives the allocation.
        let path_at = self.now();
        if path_at + 2 * ms(BINDING_REFRESH_INTERVAL) + to_relay >= hold_at {
            return;
        }
        self.push_path(c, g, PathMode::GatewayRelayed);
        self.idle_until(hold_at);
        self.steps.push(Step::Fault {
            between: [gateway_name.clone(), relay.clone()],
            fault: Fault::Hold,
        });
        let arrival = deadline.cast_signed() + offset_ms;
        if refresh {
            // turmoil delivers what a link held the moment it is released.
            self.idle_until(arrival.cast_unsigned());
        } else {
            let sent_at = arrival - latency.between(&client_name, &relay).cast_signed();
            self.idle_until(sent_at.cast_unsigned());
            self.push_datagram_to_first_gateway(client);
        }
        self.steps.push(Step::Fault {
            between: [gateway_name, relay],
            fault: Fault::Release,
        });
    }

    /// The held Refresh of `client`'s own allocation reaching its relay `offset_ms` from the
    /// allocation's deadline: the allocation of the setup, or, after a roam (with
    /// `roam_first`, one written now), the one the client asked for from its new address at
    /// the roam's start. The model knows only first allocations, so a case that aims at a
    /// later one is held to the invariants. Nothing is written when the client has no relay,
    /// its relay link had a fault before, or the case is past the point where the Refresh can
    /// be held.
    fn write_client_allocation_boundary(
        &mut self,
        client: usize,
        roam_first: bool,
        offset_ms: i64,
    ) {
        let c = self.client_index(client);
        let Some(relay) = self.layout.clients[c].relay.clone() else {
            return;
        };
        let client_name = self.layout.clients[c].name.clone();
        if self.link_faulted(&client_name, &relay) {
            return;
        }
        if roam_first {
            self.write_roam(client, false);
        }
        let timeline = self.timeline();
        // The client allocates when the run starts, and again from its new address at the start
        // of each roam.
        let asked_at = self
            .steps
            .iter()
            .rposition(
                |step| matches!(step, Step::Roam { client: roamer, .. } if *roamer == client_name),
            )
            .map_or(0, |k| timeline.step_start[k]);
        let to_relay = self.topology.latency.between(&client_name, &relay);
        let (deadline, refresh_sent) = allocation_times(asked_at, to_relay);
        let hold_at = refresh_sent - 1000;
        if timeline.t_end >= hold_at {
            return;
        }
        self.idle_until(hold_at);
        self.steps.push(Step::Fault {
            between: [client_name.clone(), relay.clone()],
            fault: Fault::Hold,
        });
        // turmoil delivers what a link held the moment it is released.
        self.idle_until((deadline.cast_signed() + offset_ms).cast_unsigned());
        self.steps.push(Step::Fault {
            between: [client_name, relay],
            fault: Fault::Release,
        });
    }

    /// The client's index, the first gateway's name and its relay's, when a gateway-relayed
    /// path step to `client` now would bind a fresh channel on that relay (the gateway has
    /// none to the client at its current address, and the path is usable).
    fn fresh_relayed_channel(&self, client: usize) -> Option<(usize, String, String)> {
        let c = self.client_index(client);
        let g = 0;
        let gateway = &self.layout.gateways[g];
        let relay = gateway.relay.clone()?;
        let fresh = !self.gateway_bound.contains(&(c, g, self.roams[c]));
        let path = self
            .layout
            .usable(c, g, PathMode::GatewayRelayed, self.roamed[c]);
        (fresh && path == Some(PathMode::GatewayRelayed)).then(|| (c, gateway.name.clone(), relay))
    }

    /// The relay's answer to the ChannelBind of the first gateway's fresh channel to `client`
    /// reaching the gateway `offset_ms` from the `instant`-th instant of the transaction's
    /// schedule, through a hold of the link from the ChannelBind on. Nothing is written when
    /// the gateway has a channel to the client already or no relayed path to it.
    fn write_transaction_boundary(&mut self, client: usize, instant: usize, offset_ms: i64) {
        let Some((c, gateway_name, relay)) = self.fresh_relayed_channel(client) else {
            return;
        };
        let boundary = transaction_schedule()[instant % TRANSACTION_INSTANTS];
        let to_relay = self.topology.latency.between(&gateway_name, &relay);
        // A fault step takes effect at its start, so the ChannelBind the path step sends at
        // its start is held.
        self.steps.push(Step::Fault {
            between: [gateway_name.clone(), relay.clone()],
            fault: Fault::Hold,
        });
        let sent_at = self.now();
        self.push_path(c, 0, PathMode::GatewayRelayed);
        // turmoil delivers what a link held the moment it is released; the relay answers at
        // once, and its answer takes the link's latency back.
        let arrival = (sent_at + ms(boundary)).cast_signed() + offset_ms;
        let release = arrival - to_relay.cast_signed();
        let idle = release - self.now().cast_signed();
        if let Ok(idle @ 1..) = u64::try_from(idle) {
            self.steps.push(Step::Idle {
                seconds: idle / 1000,
                ms: idle % 1000,
            });
        }
        self.steps.push(Step::Fault {
            between: [gateway_name, relay],
            fault: Fault::Release,
        });
    }

    /// A one-byte datagram from `client` to the first resource, which is the first gateway's.
    fn push_datagram_to_first_gateway(&mut self, client: usize) {
        let target = self.target(Destination {
            client,
            resource: 0,
            port: 53,
            ipv6: false,
            domain: 0,
        });
        self.steps.push(Step::Udp { target, bytes: 1 });
    }

    /// Whether a step so far put a fault on the link between hosts `a` and `b`.
    fn link_faulted(&self, a: &str, b: &str) -> bool {
        self.steps.iter().any(|step| {
            matches!(step, Step::Fault { between, .. }
                if between.iter().any(|h| h == a) && between.iter().any(|h| h == b))
        })
    }

    /// An idle step to `at`, if that is later than the next step's start.
    fn idle_until(&mut self, at: u64) {
        let idle = at.saturating_sub(self.now());
        if idle > 0 {
            self.steps.push(Step::Idle {
                seconds: idle / 1000,
                ms: idle % 1000,
            });
        }
    }

    /// When the next step starts.
    fn now(&self) -> u64 {
        self.timeline().t_end
    }

    /// When each step written so far starts.
    fn timeline(&self) -> Timeline {
        Timeline::of(&Scenario {
            name: String::new(),
            description: String::new(),
            topology: self.topology.clone(),
            steps: self.steps.clone(),
        })
    }
}

/// The deadline of an allocation its TURN client asks for at `asked_at` over a link of
/// `to_relay` ms each way, and when the client sends its Refresh: the Allocate, the 401 and the
/// authenticated Allocate make it on the relay three one-way latencies later, and the client
/// counts the lifetime from the success response's arrival, refreshing
/// `ALLOCATION_REFRESH_MARGIN` before it ends.
fn allocation_times(asked_at: u64, to_relay: u64) -> (u64, u64) {
    let allocated_at = asked_at + 3 * to_relay;
    let deadline = allocated_at + ms(DEFAULT_ALLOCATION_LIFETIME);
    let refresh_sent =
        allocated_at + to_relay + ms(DEFAULT_ALLOCATION_LIFETIME) - ms(ALLOCATION_REFRESH_MARGIN);
    (deadline, refresh_sent)
}
