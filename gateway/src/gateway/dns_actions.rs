//! The gateway's side of DNS: answers from the DNS server go to the [`DnsResolver`], and what
//! the resolver asks for ([`DnsAction`]) is carried out (`run_dns_actions`, after every resolver
//! call): queries sent, resolutions and failures reported, held packets routed again or dropped.
//!
//! [`DnsResolver`]: crate::dns_resolver::DnsResolver

use std::net::SocketAddr;

use proto::flow::ClientId;

use super::Gateway;
use super::drops::packet_error;
use crate::dns_resolver::{DnsAction, HeldPacket};
use crate::drop_reason::DropReason;
use crate::flow_table::Nanos;
use crate::output::{DroppedPacket, Event, Transmit};
use crate::packet;

impl Gateway {
    /// A datagram from the DNS server, at source port `port` (`None`: the shared socket).
    pub(super) fn dns_answer(
        &mut self,
        payload: &[u8],
        port: Option<u16>,
        t: Nanos,
    ) -> Result<(), DropReason> {
        self.dns.handle_answer(payload, port, t)?;
        self.run_dns_actions(t);
        Ok(())
    }

    /// Carries out what the resolver asks for, in order: queries go to the DNS server; a
    /// resolution is reported and the packets held for it go through the data path again
    /// (each forwarded or dropped); a failure is reported and its held packets dropped; held
    /// packets of a mapping that went away are dropped. Called after every resolver call.
    pub(crate) fn run_dns_actions(&mut self, t: Nanos) {
        while let Some(action) = self.dns.poll_action() {
            match action {
                DnsAction::Query { port, payload } => self.transmits.push_back(Transmit::Udp {
                    src: port.map_or(self.config.dns_local, |port| {
                        SocketAddr::new(self.config.dns_local.ip(), port)
                    }),
                    dst: self.config.dns_server,
                    payload,
                }),
                DnsAction::Resolved {
                    client,
                    proxy_ip,
                    domain,
                    addr,
                    ttl,
                    held,
                } => {
                    self.events.push_back(Event::DnsResolved {
                        client,
                        proxy_ip,
                        domain: domain.to_string(),
                        addr,
                        ttl,
                    });
                    for h in held {
                        self.route_held(client, h, t);
                    }
                }
                DnsAction::Failed {
                    client,
                    proxy_ip,
                    domain,
                    held,
                } => {
                    self.events.push_back(Event::DnsResolutionFailed {
                        client,
                        proxy_ip,
                        domain: domain.to_string(),
                    });
                    self.drop_held(DropReason::DnsResolutionFailed, client, held);
                }
                DnsAction::Discarded {
                    client,
                    reason,
                    held,
                } => self.drop_held(reason, client, held),
            }
        }
    }

    /// A packet held for a DNS answer that has arrived: handled like a new client packet at
    /// time `t` (the client's authorisation is checked again), dropped if refused.
    fn route_held(&mut self, client_id: ClientId, held: HeldPacket, t: Nanos) {
        let r = match packet::parse(&held.packet) {
            Ok(pkt) => self.route_to_resource(client_id, &held.packet, &pkt, &held.outer, None, t),
            Err(e) => Err(packet_error(e)),
        };
        if let Err(reason) = r {
            self.record_drop(reason, Some(client_id), DroppedPacket::Ip(held.packet));
        }
    }
}
