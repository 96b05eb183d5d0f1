//! Inputs, timers and control commands, handed to the gateway or to its endpoint.

use std::{net::SocketAddr, time::Instant};

use proto::flow::{ClientId, OuterContext, ResourceId};

use super::Server;
use crate::{
    control::{Command, ControlLine},
    input::Input,
    output::RunnerEvent,
};

impl Server {
    /// The earliest of the gateway's and the TURN client's deadlines.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let turn = self.endpoint.turn().and_then(|turn| turn.poll_timeout());
        [self.gateway.poll_timeout(), turn]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs whichever of the gateway's and the TURN client's timers are due.
    pub(super) fn handle_timeouts(&mut self, now: Instant) {
        if self
            .gateway
            .poll_timeout()
            .is_some_and(|deadline| deadline <= now)
        {
            self.gateway.handle_timeout(now);
        }
        if let Some(turn) = self.endpoint.turn_mut()
            && turn.poll_timeout().is_some_and(|deadline| deadline <= now)
        {
            turn.handle_timeout(now);
        }
    }

    /// A datagram or a TUN packet. What the gateway drops it reports as an event (drained by
    /// `pump`), so the call's own result says nothing more.
    pub(super) fn handle_input(&mut self, input: Input, now: Instant) {
        match input {
            Input::Datagram { from, to, payload } => {
                self.summary.datagrams_received += 1;
                self.handle_datagram(from, to, &payload, now);
            }
            Input::Tun(packet) => {
                self.summary.tun_received += 1;
                let _ = self.gateway.handle_tun_packet(&packet, now);
            }
        }
    }

    /// A datagram from `from` at the socket bound to `to`. From the gateway's relay (at the
    /// endpoint's socket) it goes through the endpoint: TURN responses stay there, relayed
    /// tunnel frames come out with the outer context the relay gives them (the peer and the
    /// relayed address). Everything else is the gateway's directly: a client's frame, a DNS
    /// answer, or something it drops.
    fn handle_datagram(&mut self, from: SocketAddr, to: SocketAddr, payload: &[u8], now: Instant) {
        let from_relay = to == self.endpoint.socket()
            && self
                .endpoint
                .turn()
                .is_some_and(|turn| turn.server() == from);
        if !from_relay {
            let _ = self.gateway.handle_input(from, to, payload, now);
            return;
        }
        match self.endpoint.receive(from, payload, now) {
            Ok(Some(arrival)) => {
                let outer = OuterContext {
                    remote: arrival.remote,
                    local: arrival.local,
                };
                let _ = self
                    .gateway
                    .handle_tunnel_frame(outer, &arrival.payload, now);
            }
            Ok(None) => {}
            Err(error) => tracing::debug!(%from, %error, "ignored a datagram from the relay"),
        }
    }

    /// Applies one control line; `true` if it asks the server to shut down. A refused line or
    /// call changes nothing and is reported (`control_error`).
    pub(super) fn handle_control(&mut self, line: ControlLine, now: Instant) -> bool {
        let command = match line {
            Ok(command) => command,
            Err(message) => {
                self.control_error(format!("refused a control line: {message}"));
                return false;
            }
        };
        tracing::info!(?command, "control command");
        let name = command.name();
        let result = match command {
            Command::MapDns {
                client,
                proxy_ip,
                domain,
            } => self
                .gateway
                .map_dns(ClientId(client), proxy_ip, &domain, now)
                .map_err(|error| error.to_string()),
            Command::UnmapDns { client, proxy_ip } => self
                .gateway
                .unmap_dns(ClientId(client), proxy_ip, now)
                .map_err(|error| error.to_string()),
            Command::Grant {
                client,
                resource,
                filters,
            } => self
                .gateway
                .grant(ClientId(client), ResourceId(resource), filters)
                .map_err(|error| error.to_string()),
            Command::Revoke { client, resource } => self
                .gateway
                .revoke(ClientId(client), ResourceId(resource), now)
                .map_err(|error| error.to_string()),
            Command::ViaRelay(remote) => self.route(remote, true, now),
            Command::Direct(remote) => self.route(remote, false, now),
            Command::Shutdown => return true,
        };
        match result {
            Ok(()) => self.outputs.event(&RunnerEvent::ControlApplied(name)),
            Err(message) => self.control_error(message),
        }
        false
    }

    /// Reaches `remote` through the gateway's own allocation (binding a channel to it) or
    /// directly again.
    fn route(&mut self, remote: SocketAddr, via_relay: bool, now: Instant) -> Result<(), String> {
        if via_relay && self.endpoint.turn().is_none() {
            return Err(format!(
                "cannot reach {remote} via the relay: the configuration has no relay"
            ));
        }
        if via_relay && !self.endpoint.turn().is_some_and(|turn| turn.is_allocated()) {
            return Err(format!(
                "cannot reach {remote} via the relay: no allocation yet"
            ));
        }
        self.endpoint
            .route_via_relay(remote, via_relay, now)
            .map_err(|error| format!("cannot route {remote}: {error}"))
    }

    fn control_error(&mut self, message: String) {
        tracing::warn!(%message, "control");
        self.outputs.event(&RunnerEvent::ControlError(message));
    }
}
