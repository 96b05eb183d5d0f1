//! What the gateway and the TURN client queued, drained after every call: datagrams sent from
//! the right socket (through the relay where the path says so), packets written to the TUN
//! device, drops and TURN events reported, flow records written.

use std::{net::SocketAddr, time::Instant};

use gateway::{Event, Transmit};
use turn_client::{ClientEvent, TurnTransmit};

use super::Server;
use crate::output::RunnerEvent;

impl Server {
    /// Drains everything queued since the last call; `now` is the time of that call.
    pub(super) async fn pump(&mut self, now: Instant) {
        while let Some(transmit) = self.gateway.poll_transmit() {
            match transmit {
                Transmit::Udp { src, dst, payload } => {
                    self.send_udp(src, dst, &payload, now).await;
                    self.gateway.recycle(payload);
                }
                Transmit::Tun(packet) => {
                    self.write_tun(&packet).await;
                    self.gateway.recycle(packet);
                }
            }
        }
        self.report_gateway_events();
        while let Some(record) = self.gateway.poll_flow_record() {
            self.outputs.record(&record);
        }
        self.flush_turn().await;
    }

    /// A datagram the gateway sends from `src`. From a DNS source port: from that port's
    /// socket. Otherwise (a tunnel frame, or a DNS query from the tunnel socket) the endpoint
    /// says how it goes: as ChannelData to the relay, from the endpoint's socket, when `dst` is
    /// reached via the relay; else directly from the socket bound to `src`, or when `src` is
    /// no socket of ours (a relayed address the client's replies went to before the path
    /// turned direct), from the tunnel socket of `dst`'s family.
    async fn send_udp(&mut self, src: SocketAddr, dst: SocketAddr, payload: &[u8], now: Instant) {
        let is_dns_port = !self.sockets.tunnel_addrs().contains(&src);
        if is_dns_port && let Some(socket) = self.sockets.bound_to(src) {
            let sent = socket.send_to(payload, dst).await;
            self.count_send(sent.map(drop), src, dst);
            return;
        }
        let datagram = match self.endpoint.send(dst, payload, now) {
            Ok(datagram) => datagram,
            Err(error) => {
                self.summary.send_failures += 1;
                tracing::debug!(%dst, %error, "no way to send a datagram");
                return;
            }
        };
        let via_relay = datagram.dst != dst;
        let socket = if via_relay {
            let local = self.endpoint.socket();
            self.sockets.bound_to(local).map(|socket| (local, socket))
        } else {
            self.sockets
                .bound_to(src)
                .map(|socket| (src, socket))
                .or_else(|| self.sockets.tunnel_of_family(dst.ip()))
        };
        let Some((local, socket)) = socket else {
            self.summary.send_failures += 1;
            tracing::debug!(%src, %dst, "no socket of the destination's family");
            return;
        };
        let sent = socket.send_to(&datagram.payload, datagram.dst).await;
        self.count_send(sent.map(drop), local, datagram.dst);
    }

    fn count_send(&mut self, sent: std::io::Result<()>, src: SocketAddr, dst: SocketAddr) {
        match sent {
            Ok(()) => self.summary.datagrams_sent += 1,
            Err(error) => {
                self.summary.send_failures += 1;
                tracing::debug!(%src, %dst, %error, "send failed");
            }
        }
    }

    async fn write_tun(&mut self, packet: &[u8]) {
        match self.tun.send(packet).await {
            Ok(_) => self.summary.tun_written += 1,
            Err(error) => {
                self.summary.send_failures += 1;
                tracing::debug!(%error, len = packet.len(), "TUN write failed");
            }
        }
    }

    /// Reports every drop (and logs the gateway's other events; flow starts and ends it logs
    /// itself, on target `flow_logs`).
    fn report_gateway_events(&mut self) {
        while let Some(event) = self.gateway.poll_event() {
            match event {
                Event::PacketDropped {
                    reason,
                    client,
                    packet,
                } => {
                    self.summary.drops += 1;
                    tracing::debug!(
                        reason = reason.as_str(),
                        client = ?client.map(|client| client.0),
                        len = packet.bytes().len(),
                        "dropped"
                    );
                    self.outputs.event(&RunnerEvent::Drop {
                        reason: reason.as_str(),
                        client: client.map(|client| client.0),
                    });
                    self.gateway.recycle(packet.into_bytes());
                }
                Event::FlowStarted(_) => {}
                Event::ClientRoamed { client, from, to } => {
                    tracing::info!(%client, from = ?from.map(|from| from.to_string()), %to, "client roamed");
                }
                Event::DnsResolved {
                    client,
                    proxy_ip,
                    domain,
                    addr,
                    ttl,
                } => tracing::info!(
                    %client, %proxy_ip, %domain, %addr, ttl_s = ttl.as_secs(), "DNS resolved"
                ),
                Event::DnsResolutionFailed {
                    client,
                    proxy_ip,
                    domain,
                } => tracing::warn!(%client, %proxy_ip, %domain, "DNS resolution failed"),
            }
        }
    }

    /// Sends what the TURN client queued (from the endpoint's socket) and reports its events.
    async fn flush_turn(&mut self) {
        let local = self.endpoint.socket();
        let Some(turn) = self.endpoint.turn_mut() else {
            return;
        };
        let transmits: Vec<TurnTransmit> = std::iter::from_fn(|| turn.poll_transmit()).collect();
        let events: Vec<ClientEvent> = std::iter::from_fn(|| turn.poll_event()).collect();
        for transmit in transmits {
            let sent = match self.sockets.bound_to(local) {
                Some(socket) => socket
                    .send_to(&transmit.payload, transmit.dst)
                    .await
                    .map(drop),
                None => Err(std::io::Error::other("no socket")),
            };
            self.count_send(sent, local, transmit.dst);
        }
        for event in events {
            self.report_turn_event(event);
        }
    }

    fn report_turn_event(&mut self, event: ClientEvent) {
        match event {
            ClientEvent::Allocated {
                relayed,
                mapped,
                lifetime,
            } => {
                tracing::info!(
                    ?relayed,
                    ?mapped,
                    lifetime_s = lifetime.as_secs(),
                    "allocated at the relay"
                );
                self.outputs.event(&RunnerEvent::Relayed(relayed));
            }
            ClientEvent::AllocationRefreshed { lifetime } => {
                tracing::debug!(lifetime_s = lifetime.as_secs(), "allocation refreshed");
            }
            ClientEvent::AllocationFailed { code } => {
                tracing::warn!(?code, "the relay refused the allocation or did not answer");
                self.outputs.event(&RunnerEvent::AllocationFailed { code });
            }
            ClientEvent::AllocationLost => tracing::warn!("the allocation is gone"),
            ClientEvent::PermissionCreated { peer } => {
                tracing::debug!(%peer, "permission created");
            }
            ClientEvent::ChannelBound { peer, channel } => {
                tracing::info!(%peer, channel, "channel bound");
                self.outputs.event(&RunnerEvent::ChannelBound(peer));
            }
            ClientEvent::ChannelFailed {
                peer,
                channel,
                code,
            } => {
                tracing::warn!(%peer, channel, ?code, "channel binding failed");
                self.outputs.event(&RunnerEvent::ChannelFailed(peer));
            }
        }
    }
}
