//! The gateway's own DNS resolution for DNS resources: one mapping per (client, proxy IP),
//! resolved by real queries to the configured DNS server (ids from a counter), answers kept
//! for their TTL and re-resolved on expiry, and a bounded queue of client packets waiting for
//! the first answer.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use proto::flow::{ClientId, OuterContext};

use crate::dns_wire;
use crate::drop_reason::DropReason;
use crate::flow_table::{DnsFlow, Nanos};
use crate::gateway::{Gateway, nanos_of};
use crate::output::{Event, Transmit};
use crate::packet::{self, IpPacket};

/// The answer in use for a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResolvedAnswer {
    /// The first address of the answer: where new flows go.
    pub(crate) ip: IpAddr,
    /// When to re-resolve.
    pub(crate) expires: Nanos,
}

/// A query on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InFlightQuery {
    pub(crate) id: u16,
    /// How many times this resolution has been sent (1 for the first).
    pub(crate) attempt: u8,
    /// When to give up on this attempt.
    pub(crate) deadline: Nanos,
}

/// A client packet waiting for the first answer.
#[derive(Debug, Clone)]
pub(crate) struct QueuedPacket {
    pub(crate) packet: Vec<u8>,
    pub(crate) outer: OuterContext,
}

/// A client's proxy IP -> domain mapping and its resolution state.
#[derive(Debug, Clone)]
pub(crate) struct DnsMapping {
    pub(crate) domain: Arc<str>,
    /// Shared by every flow started through this mapping.
    pub(crate) flow_info: Arc<DnsFlow>,
    /// The newest answer (kept while a refresh is in flight).
    pub(crate) answer: Option<ResolvedAnswer>,
    pub(crate) query: Option<InFlightQuery>,
    pub(crate) queue: Vec<QueuedPacket>,
}

impl DnsMapping {
    pub(crate) fn new(proxy_ip: IpAddr, domain: Arc<str>) -> Self {
        Self {
            flow_info: Arc::new(DnsFlow {
                proxy_ip,
                domain: domain.clone(),
            }),
            domain,
            answer: None,
            query: None,
            queue: Vec::new(),
        }
    }

    fn deadline(&self) -> Option<Nanos> {
        match (self.query, self.answer) {
            (Some(q), _) => Some(q.deadline),
            (None, Some(a)) => Some(a.expires),
            (None, None) => None,
        }
    }
}

impl Gateway {
    /// Holds a packet until the proxy IP resolves, and makes sure a query is on its way.
    pub(crate) fn queue_for_dns(
        &mut self,
        client_id: ClientId,
        proxy_ip: IpAddr,
        inner: &[u8],
        pkt: &IpPacket,
        outer: OuterContext,
        t: Nanos,
    ) -> Result<(), DropReason> {
        let limit = self.config.dns_queue_limit;
        let mapping = self
            .clients
            .get_mut(&client_id)
            .and_then(|c| c.dns.get_mut(&proxy_ip))
            .ok_or(DropReason::UnknownProxyIp)?;
        if mapping.queue.len() >= limit {
            return Err(DropReason::DnsQueueFull);
        }
        mapping.queue.push(QueuedPacket {
            packet: inner[..pkt.len].to_vec(),
            outer,
        });
        if mapping.query.is_none() {
            self.send_query(client_id, proxy_ip, 1, t);
        }
        Ok(())
    }

    /// Sends attempt `attempt` of the resolution of a mapping.
    pub(crate) fn send_query(
        &mut self,
        client_id: ClientId,
        proxy_ip: IpAddr,
        attempt: u8,
        t: Nanos,
    ) {
        let id = self.allocate_query_id();
        let timeout = nanos_of(self.config.dns_query_timeout);
        let Some(mapping) = self
            .clients
            .get_mut(&client_id)
            .and_then(|c| c.dns.get_mut(&proxy_ip))
        else {
            return;
        };
        if let Some(old) = mapping.query.take() {
            self.dns_pending.remove(&old.id);
        }
        // The domain was validated when mapped, so encoding cannot fail; if it ever did, the
        // attempt times out like a lost query.
        if let Some(payload) = dns_wire::query(id, &mapping.domain, proxy_ip.is_ipv6()) {
            self.transmits.push_back(Transmit::Udp {
                src: self.config.dns_local,
                dst: self.config.dns_server,
                payload,
            });
        }
        mapping.query = Some(InFlightQuery {
            id,
            attempt,
            deadline: t.saturating_add(timeout),
        });
        self.dns_pending.insert(id, (client_id, proxy_ip));
        self.recompute_dns_deadline();
    }

    /// The next query id: a counter (skipping 0 and ids still pending).
    fn allocate_query_id(&mut self) -> u16 {
        loop {
            let id = self.next_query_id;
            self.next_query_id = self.next_query_id.wrapping_add(1).max(1);
            if !self.dns_pending.contains_key(&id) {
                return id;
            }
        }
    }

    pub(crate) fn recompute_dns_deadline(&mut self) {
        self.next_dns_deadline = self
            .clients
            .values()
            .flat_map(|c| c.dns.values())
            .filter_map(DnsMapping::deadline)
            .min();
    }

    /// Retries timed-out queries, fails exhausted ones, and re-resolves expired answers.
    pub(crate) fn run_dns_timers(&mut self, t: Nanos) {
        let attempts = self.config.dns_query_attempts;
        let mut due = Vec::new();
        for (client_id, client) in &self.clients {
            for (proxy_ip, m) in &client.dns {
                if m.deadline().is_some_and(|d| d <= t) {
                    due.push((*client_id, *proxy_ip, m.query.map(|q| q.attempt)));
                }
            }
        }
        for (client_id, proxy_ip, attempt) in due {
            match attempt {
                Some(a) if a >= attempts => self.fail_resolution(client_id, proxy_ip),
                Some(a) => self.send_query(client_id, proxy_ip, a + 1, t),
                None => self.send_query(client_id, proxy_ip, 1, t),
            }
        }
        self.recompute_dns_deadline();
    }

    /// Resolution failed: the answer is forgotten, waiting packets are dropped.
    fn fail_resolution(&mut self, client_id: ClientId, proxy_ip: IpAddr) {
        let Some(mapping) = self
            .clients
            .get_mut(&client_id)
            .and_then(|c| c.dns.get_mut(&proxy_ip))
        else {
            return;
        };
        if let Some(q) = mapping.query.take() {
            self.dns_pending.remove(&q.id);
        }
        mapping.answer = None;
        let dropped = std::mem::take(&mut mapping.queue).len();
        let domain = mapping.domain.to_string();
        for _ in 0..dropped {
            self.count_drop(DropReason::DnsResolutionFailed);
        }
        tracing::warn!(client = %client_id, %proxy_ip, %domain, "DNS resolution failed");
        self.events.push_back(Event::DnsResolutionFailed {
            client: client_id,
            proxy_ip,
            domain,
        });
        self.recompute_dns_deadline();
    }

    /// A datagram from the DNS server.
    pub(crate) fn dns_answer(&mut self, payload: &[u8], t: Nanos) -> Result<(), DropReason> {
        let answer = dns_wire::parse_answer(payload).ok_or(DropReason::DnsUnexpectedAnswer)?;
        let &(client_id, proxy_ip) = self
            .dns_pending
            .get(&answer.id)
            .ok_or(DropReason::DnsUnexpectedAnswer)?;
        let mapping = self
            .clients
            .get(&client_id)
            .and_then(|c| c.dns.get(&proxy_ip))
            .ok_or(DropReason::DnsUnexpectedAnswer)?;
        let matches = mapping.query.is_some_and(|q| q.id == answer.id)
            && *mapping.domain == *answer.name
            && answer.ipv6 == proxy_ip.is_ipv6();
        if !matches {
            return Err(DropReason::DnsUnexpectedAnswer);
        }
        self.dns_pending.remove(&answer.id);
        let Some(&ip) = answer.addrs.first().filter(|_| answer.ok) else {
            self.fail_resolution(client_id, proxy_ip);
            return Ok(());
        };
        let ttl = Duration::from_secs(u64::from(answer.ttl)).max(self.config.dns_min_ttl);
        let Some(mapping) = self
            .clients
            .get_mut(&client_id)
            .and_then(|c| c.dns.get_mut(&proxy_ip))
        else {
            return Ok(());
        };
        mapping.query = None;
        mapping.answer = Some(ResolvedAnswer {
            ip,
            expires: t.saturating_add(nanos_of(ttl)),
        });
        let queued = std::mem::take(&mut mapping.queue);
        self.events.push_back(Event::DnsResolved {
            client: client_id,
            proxy_ip,
            domain: mapping.domain.to_string(),
            addr: ip,
            ttl,
        });
        self.recompute_dns_deadline();
        for q in queued {
            let r = match packet::parse(&q.packet) {
                Ok(pkt) => self.route_to_resource(client_id, &q.packet, &pkt, &q.outer, None, t),
                Err(_) => Err(DropReason::MalformedPacket),
            };
            if let Err(reason) = r {
                self.count_drop(reason);
            }
        }
        Ok(())
    }
}
