//! The gateway's own DNS resolution for DNS resources: one mapping per (client, proxy IP),
//! resolved by real queries to the configured DNS server (ids, and source ports if configured, drawn
//! from the seeded generator), answers kept
//! for their TTL and re-resolved on expiry, and a bounded queue of client packets waiting for
//! the first answer.
//!
//! The [`DnsResolver`] owns all of that state and knows nothing of the gateway: the gateway
//! calls it ([`map`](DnsResolver::map), [`unmap`](DnsResolver::unmap),
//! [`remove_client`](DnsResolver::remove_client), [`lookup`](DnsResolver::lookup),
//! [`hold`](DnsResolver::hold), [`handle_answer`](DnsResolver::handle_answer),
//! [`handle_timeout`](DnsResolver::handle_timeout) at [`poll_timeout`](DnsResolver::poll_timeout),
//! [`shutdown`](DnsResolver::shutdown)), then drains [`DnsResolver::poll_action`] and carries
//! out each [`DnsAction`] in order: send a query, route held packets again, or drop them.

use proto::rng::SplitMix64;
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use proto::flow::{ClientId, OuterContext};

use crate::config::GatewayConfig;
use crate::dns_wire;
use crate::drop_reason::DropReason;
use crate::flow_table::{DnsFlow, Nanos, nanos_of};

/// A client packet held until its proxy IP resolves.
#[derive(Debug)]
pub(crate) struct HeldPacket {
    /// The inner packet exactly as the client sent it (before DNS NAT).
    pub(crate) packet: Vec<u8>,
    /// The outer context of the frame that carried it.
    pub(crate) outer: OuterContext,
}

/// A mapping, as a packet that may start a flow sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DnsLookup<'a> {
    /// Mapped to `domain`, no answer yet: the packet waits ([`DnsResolver::hold`]).
    Pending { domain: &'a str },
    /// Mapped to `domain` and resolved: new flows go to `real_ip`, with `flow` as their DNS
    /// part.
    Resolved {
        domain: &'a str,
        real_ip: IpAddr,
        flow: &'a Arc<DnsFlow>,
    },
}

impl<'a> DnsLookup<'a> {
    /// The mapped domain.
    pub(crate) fn domain(self) -> &'a str {
        match self {
            DnsLookup::Pending { domain } | DnsLookup::Resolved { domain, .. } => domain,
        }
    }
}

/// What the gateway must do after a resolver call, in the order the resolver asks.
#[derive(Debug)]
pub(crate) enum DnsAction {
    /// Send this query to the DNS server, from `port` (`None`: from the gateway's shared
    /// socket).
    Query { port: Option<u16>, payload: Vec<u8> },
    /// `proxy_ip` resolved to `addr`, used for `ttl`: new flows go there, and the packets held
    /// for it (arrival order) go through the data path again.
    Resolved {
        client: ClientId,
        proxy_ip: IpAddr,
        domain: Arc<str>,
        addr: IpAddr,
        ttl: Duration,
        held: Vec<HeldPacket>,
    },
    /// The resolution failed (error code, no address, or no answer after every attempt): the
    /// packets held for it are dropped (`dns-resolution-failed`).
    Failed {
        client: ClientId,
        proxy_ip: IpAddr,
        domain: Arc<str>,
        held: Vec<HeldPacket>,
    },
    /// A mapping with held packets went away (replaced, unmapped, its client removed, or the
    /// resolver shut down): they are dropped with `reason`. Never sent for no packets.
    Discarded {
        client: ClientId,
        reason: DropReason,
        held: Vec<HeldPacket>,
    },
}

/// The answer in use for a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ResolvedAnswer {
    /// The first address of the answer: where new flows go.
    ip: IpAddr,
    /// When to re-resolve.
    expires: Nanos,
}

/// A query on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlightQuery {
    id: u16,
    /// The source port it went from, where its answer must arrive (`None`: the shared socket).
    port: Option<u16>,
    /// How many times this resolution has been sent (1 for the first).
    attempt: u8,
    /// When to give up on this attempt.
    deadline: Nanos,
}

/// A client's proxy IP -> domain mapping and its resolution state.
#[derive(Debug)]
struct Mapping {
    domain: Arc<str>,
    /// Shared by every flow started through this mapping.
    flow_info: Arc<DnsFlow>,
    /// The newest answer (kept while a refresh is in flight).
    answer: Option<ResolvedAnswer>,
    query: Option<InFlightQuery>,
    /// Packets waiting for the first answer, at most `queue_limit`.
    held: Vec<HeldPacket>,
}

impl Mapping {
    fn new(proxy_ip: IpAddr, domain: Arc<str>) -> Self {
        Self {
            flow_info: Arc::new(DnsFlow {
                proxy_ip,
                domain: domain.clone(),
            }),
            domain,
            answer: None,
            query: None,
            held: Vec::new(),
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

/// The resolver's settings, from the gateway configuration.
#[derive(Debug, Clone, Copy)]
struct Settings {
    queue_limit: usize,
    query_timeout: Nanos,
    attempts: u8,
    min_ttl: Duration,
    max_ttl: Duration,
    /// Source ports to draw from, as (first, count).
    source_ports: Option<(u16, u32)>,
}

/// Mixed into the hash seed to seed the query ids, so they differ from the flow table's hash.
const QUERY_ID_SEED: u64 = 0x646e_735f_6964_735f;

/// Every DNS mapping of every client, the queries in flight and the held packets.
#[derive(Debug)]
pub(crate) struct DnsResolver {
    settings: Settings,
    /// Iterated in (client, proxy IP) order, which fixes the order of timer actions.
    mappings: BTreeMap<(ClientId, IpAddr), Mapping>,
    /// Query id -> the mapping that sent it.
    pending: BTreeMap<u16, (ClientId, IpAddr)>,
    /// Draws query ids: an off-path attacker who cannot see the queries must guess 16 bits
    /// per forged answer, not read the next id off a counter.
    query_ids: SplitMix64,
    /// Earliest deadline (query timeout or answer expiry), recomputed on every change.
    next_deadline: Option<Nanos>,
    /// What the gateway must do next; drained by the gateway after every call.
    actions: VecDeque<DnsAction>,
}

impl DnsResolver {
    pub(crate) fn new(config: &GatewayConfig) -> Self {
        Self {
            settings: Settings {
                queue_limit: config.dns_queue_limit,
                query_timeout: nanos_of(config.dns_query_timeout),
                attempts: config.dns_query_attempts,
                min_ttl: config.dns_min_ttl,
                max_ttl: config.dns_max_ttl.max(config.dns_min_ttl),
                source_ports: config.dns_source_ports.as_ref().map(|ports| {
                    let first = *ports.start();
                    (first, u32::from(ports.end().saturating_sub(first)) + 1)
                }),
            },
            mappings: BTreeMap::new(),
            pending: BTreeMap::new(),
            query_ids: SplitMix64::new(config.hash_seed ^ QUERY_ID_SEED),
            next_deadline: None,
            actions: VecDeque::new(),
        }
    }

    /// The next thing the gateway must do.
    pub(crate) fn poll_action(&mut self) -> Option<DnsAction> {
        self.actions.pop_front()
    }

    /// When [`DnsResolver::handle_timeout`] is due (query timeout or answer expiry).
    #[inline]
    pub(crate) fn poll_timeout(&self) -> Option<Nanos> {
        self.next_deadline
    }

    /// The most packets one mapping holds for its answer.
    pub(crate) fn most_held(&self) -> usize {
        self.mappings
            .values()
            .map(|m| m.held.len())
            .max()
            .unwrap_or(0)
    }

    /// What `client`'s mapping of `proxy_ip` offers a packet that may start a flow. `None`: no
    /// such mapping.
    pub(crate) fn lookup(&self, client: ClientId, proxy_ip: IpAddr) -> Option<DnsLookup<'_>> {
        let m = self.mappings.get(&(client, proxy_ip))?;
        Some(match m.answer {
            Some(a) => DnsLookup::Resolved {
                domain: &m.domain,
                real_ip: a.ip,
                flow: &m.flow_info,
            },
            None => DnsLookup::Pending { domain: &m.domain },
        })
    }

    /// Maps `proxy_ip` to `domain` (already validated) for `client` and starts resolving it.
    /// The same domain again changes nothing; another domain replaces the mapping (its held
    /// packets are discarded with `dns-resolution-failed`).
    pub(crate) fn map(&mut self, client: ClientId, proxy_ip: IpAddr, domain: &str, t: Nanos) {
        let key = (client, proxy_ip);
        if self
            .mappings
            .get(&key)
            .is_some_and(|m| *m.domain == *domain)
        {
            return;
        }
        let mapping = Mapping::new(proxy_ip, Arc::from(domain));
        if let Some(old) = self.mappings.insert(key, mapping) {
            self.forget(client, old);
        }
        self.send_query(key, 1, t);
    }

    /// Forgets a mapping (its held packets are discarded with `dns-resolution-failed`).
    /// `false` if there was none.
    pub(crate) fn unmap(&mut self, client: ClientId, proxy_ip: IpAddr) -> bool {
        let Some(old) = self.mappings.remove(&(client, proxy_ip)) else {
            return false;
        };
        self.forget(client, old);
        self.recompute_deadline();
        true
    }

    /// Forgets every mapping of `client`, in proxy-IP order (held packets are discarded with
    /// `dns-resolution-failed`).
    pub(crate) fn remove_client(&mut self, client: ClientId) {
        let keys: Vec<_> = self
            .mappings
            .keys()
            .filter(|(c, _)| *c == client)
            .copied()
            .collect();
        for key in keys {
            if let Some(old) = self.mappings.remove(&key) {
                self.forget(client, old);
            }
        }
        self.recompute_deadline();
    }

    /// Holds `packet` (a client's inner packet, as sent) until `proxy_ip` resolves, and makes
    /// sure a query is on its way. Refused when the mapping's queue is full (or there is no
    /// mapping); the caller drops the packet then.
    pub(crate) fn hold(
        &mut self,
        client: ClientId,
        proxy_ip: IpAddr,
        packet: &[u8],
        outer: OuterContext,
        t: Nanos,
    ) -> Result<(), DropReason> {
        let key = (client, proxy_ip);
        let mapping = self
            .mappings
            .get_mut(&key)
            .ok_or(DropReason::UnknownProxyIp)?;
        if mapping.held.len() >= self.settings.queue_limit {
            return Err(DropReason::DnsQueueFull);
        }
        mapping.held.push(HeldPacket {
            packet: packet.to_vec(),
            outer,
        });
        if mapping.query.is_none() {
            self.send_query(key, 1, t);
        }
        Ok(())
    }

    /// A datagram from the DNS server that arrived at source port `port` (`None`: the shared
    /// socket). Refused (`dns-unexpected-answer`) unless it answers the query in flight of a
    /// mapping, at the port that query left from; the caller drops the datagram then.
    pub(crate) fn handle_answer(
        &mut self,
        payload: &[u8],
        port: Option<u16>,
        t: Nanos,
    ) -> Result<(), DropReason> {
        let answer = dns_wire::parse_answer(payload).ok_or(DropReason::DnsUnexpectedAnswer)?;
        let &key = self
            .pending
            .get(&answer.id)
            .ok_or(DropReason::DnsUnexpectedAnswer)?;
        let mapping = self
            .mappings
            .get(&key)
            .ok_or(DropReason::DnsUnexpectedAnswer)?;
        let matches = mapping
            .query
            .is_some_and(|q| q.id == answer.id && q.port == port)
            && *mapping.domain == *answer.name
            && answer.ipv6 == key.1.is_ipv6();
        if !matches {
            return Err(DropReason::DnsUnexpectedAnswer);
        }
        self.pending.remove(&answer.id);
        let Some(&ip) = answer.addrs.first().filter(|_| answer.ok) else {
            self.fail(key);
            return Ok(());
        };
        let ttl = Duration::from_secs(u64::from(answer.ttl))
            .clamp(self.settings.min_ttl, self.settings.max_ttl);
        let Some(mapping) = self.mappings.get_mut(&key) else {
            return Ok(());
        };
        mapping.query = None;
        mapping.answer = Some(ResolvedAnswer {
            ip,
            expires: t.saturating_add(nanos_of(ttl)),
        });
        self.actions.push_back(DnsAction::Resolved {
            client: key.0,
            proxy_ip: key.1,
            domain: mapping.domain.clone(),
            addr: ip,
            ttl,
            held: std::mem::take(&mut mapping.held),
        });
        self.recompute_deadline();
        Ok(())
    }

    /// Retries timed-out queries, fails exhausted ones, and re-resolves expired answers, in
    /// (client, proxy IP) order.
    pub(crate) fn handle_timeout(&mut self, t: Nanos) {
        let due: Vec<_> = self
            .mappings
            .iter()
            .filter(|(_, m)| m.deadline().is_some_and(|d| d <= t))
            .map(|(key, m)| (*key, m.query.map(|q| q.attempt)))
            .collect();
        for (key, attempt) in due {
            match attempt {
                Some(a) if a >= self.settings.attempts => self.fail(key),
                Some(a) => self.send_query(key, a + 1, t),
                None => self.send_query(key, 1, t),
            }
        }
        self.recompute_deadline();
    }

    /// Stops all resolution: queries in flight and answers are forgotten, held packets are
    /// discarded with `shut-down`, and no deadline is left.
    pub(crate) fn shutdown(&mut self) {
        for (&(client, _), m) in &mut self.mappings {
            m.query = None;
            m.answer = None;
            let held = std::mem::take(&mut m.held);
            if !held.is_empty() {
                self.actions.push_back(DnsAction::Discarded {
                    client,
                    reason: DropReason::ShutDown,
                    held,
                });
            }
        }
        self.pending.clear();
        self.next_deadline = None;
    }

    /// A mapping that was removed or replaced: its query no longer counts, its held packets are
    /// discarded.
    fn forget(&mut self, client: ClientId, old: Mapping) {
        if let Some(q) = old.query {
            self.pending.remove(&q.id);
        }
        if !old.held.is_empty() {
            self.actions.push_back(DnsAction::Discarded {
                client,
                reason: DropReason::DnsResolutionFailed,
                held: old.held,
            });
        }
    }

    /// Sends attempt `attempt` of the resolution of a mapping.
    fn send_query(&mut self, key: (ClientId, IpAddr), attempt: u8, t: Nanos) {
        let id = self.allocate_query_id();
        let port = self.draw_source_port();
        let Some(mapping) = self.mappings.get_mut(&key) else {
            return;
        };
        if let Some(old) = mapping.query.take() {
            self.pending.remove(&old.id);
        }
        // The domain was validated when mapped, so encoding cannot fail; if it ever did, the
        // attempt times out like a lost query.
        if let Some(payload) = dns_wire::query(id, &mapping.domain, key.1.is_ipv6()) {
            self.actions.push_back(DnsAction::Query { port, payload });
        }
        mapping.query = Some(InFlightQuery {
            id,
            port,
            attempt,
            deadline: t.saturating_add(self.settings.query_timeout),
        });
        self.pending.insert(id, key);
        self.recompute_deadline();
    }

    /// A query id drawn from the seeded generator (skipping 0 and ids still pending; at most
    /// a few hundred are pending, so a free one comes up at once).
    fn allocate_query_id(&mut self) -> u16 {
        loop {
            let id = self.query_ids.next_u64() as u16;
            if id != 0 && !self.pending.contains_key(&id) {
                return id;
            }
        }
    }

    /// The source port of the next query, from the same seeded generator as the ids (`None`
    /// without a range).
    fn draw_source_port(&mut self) -> Option<u16> {
        let (first, count) = self.settings.source_ports?;
        let offset = (self.query_ids.next_u64() % u64::from(count)) as u16;
        Some(first + offset)
    }

    /// Resolution failed: the answer is forgotten, held packets are dropped.
    fn fail(&mut self, key: (ClientId, IpAddr)) {
        let Some(mapping) = self.mappings.get_mut(&key) else {
            return;
        };
        if let Some(q) = mapping.query.take() {
            self.pending.remove(&q.id);
        }
        mapping.answer = None;
        let (client, proxy_ip) = key;
        let domain = mapping.domain.clone();
        tracing::warn!(client = %client, %proxy_ip, %domain, "DNS resolution failed");
        self.actions.push_back(DnsAction::Failed {
            client,
            proxy_ip,
            domain,
            held: std::mem::take(&mut mapping.held),
        });
        self.recompute_deadline();
    }

    fn recompute_deadline(&mut self) {
        self.next_deadline = self.mappings.values().filter_map(Mapping::deadline).min();
    }
}
