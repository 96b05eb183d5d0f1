//! DNS: the gateway's DNS NAT (the proxy IP mappings it keeps per client, their queries and
//! answers, and the client packets queued until an answer comes), the clients' stub resolver
//! that hands out proxy IPs, and the DNS server's records.

use std::collections::BTreeMap;
use std::net::IpAddr;

use scenario_format::Topology;
use scenario_format::plan::AddressPlan;

use super::coverage;
use super::gateway::{Authorised, Inbound};
use super::{Engine, Event, Result};
use scenario_format::settings::{DNS_MAX_TTL_S, DNS_MIN_TTL_S, DNS_QUEUE_LIMIT};

use crate::{GatewayDropReason, Packet};

/// The DNS server's records: lowercase name -> (addresses, ttl seconds).
pub(super) type Records = BTreeMap<String, (Vec<IpAddr>, u32)>;

/// The DNS server's records at the start of the run.
pub(super) fn server_records(topology: &Topology) -> Records {
    let mut records = BTreeMap::new();
    for record in &topology.dns_records {
        records.insert(
            record.name.to_ascii_lowercase(),
            (record.addresses.clone(), record.ttl_s),
        );
    }
    records
}

/// One proxy IP a gateway maps for a client: the name behind it and the real IP in use.
#[derive(Debug)]
pub(super) struct Mapping {
    client: usize,
    proxy: IpAddr,
    domain: String,
    v6: bool,
    in_use: Option<IpAddr>,
    resolving: bool,
    generation: u64,
    queue: Vec<Inbound>,
    /// Last time a client packet looked for an answer to start a flow.
    new_flow_at: Option<u64>,
    /// Last time an answer changed the real IP in use or failed.
    change_at: Option<u64>,
    /// When the answer in use runs out (the gateway then resolves the name again).
    expires_at: Option<u64>,
}

impl Mapping {
    /// Notes that a new flow's first packet looks for an answer at `t`. Returns whether an
    /// answer changed the real IP (or failed) in that same millisecond, an order the contract
    /// does not fix.
    fn note_new_flow(&mut self, t: u64) -> bool {
        self.new_flow_at = Some(t);
        self.change_at == Some(t)
    }

    /// Notes that an answer changes the real IP in use (or fails) at `t`. Returns whether a new
    /// flow's first packet looked for an answer in that same millisecond.
    fn note_change(&mut self, t: u64) -> bool {
        self.change_at = Some(t);
        self.new_flow_at == Some(t)
    }

    /// Forgets the answer and what was under way, as a restarted gateway does.
    fn forget(&mut self) {
        self.in_use = None;
        self.expires_at = None;
        self.resolving = false;
        self.generation += 1;
        self.new_flow_at = None;
        self.change_at = None;
    }
}

impl Engine<'_> {
    // ---------------------------------------------------------------- resolver and server

    /// The client's stub resolver answers a query: a name matching a DNS resource gets the next
    /// proxy index, and every gateway serving a matching DNS resource is told both proxy IPs
    /// (A and AAAA), resolving them at once.
    pub(super) fn stub_query(&mut self, c: usize, name: &str, t: u64) {
        let lower = name.to_ascii_lowercase();
        if self.clients[c].domains.contains(&lower) {
            return;
        }
        let gateways: Vec<usize> = (0..self.gateways.len())
            .filter(|g| self.rules.gateway_has_domain(*g, name))
            .collect();
        if gateways.is_empty() {
            return;
        }
        let n = self.clients[c].domains.len();
        self.clients[c].domains.push(lower);
        for g in gateways {
            for v6 in [false, true] {
                self.gateways[g].mappings.push(Mapping {
                    client: c,
                    proxy: AddressPlan::proxy_ip(n, v6),
                    domain: name.to_owned(),
                    v6,
                    in_use: None,
                    resolving: false,
                    generation: 0,
                    queue: Vec::new(),
                    new_flow_at: None,
                    change_at: None,
                    expires_at: None,
                });
                let mapping = self.gateways[g].mappings.len() - 1;
                self.start_query(g, mapping, t);
            }
        }
    }

    /// A `dns-change` step: the server answers `name` with `addresses` from now on (a name it
    /// did not know gets a TTL of 300 s).
    pub(super) fn change_record(&mut self, name: &str, addresses: Vec<IpAddr>) {
        let entry = self
            .records
            .entry(name.to_ascii_lowercase())
            .or_insert((Vec::new(), 300));
        entry.0 = addresses;
    }

    fn start_query(&mut self, g: usize, mapping: usize, t: u64) {
        self.gateways[g].mappings[mapping].resolving = true;
        let epoch = self.gateways[g].epoch;
        self.schedule(
            t + self.dns_ms,
            Event::DnsAtServer {
                gateway: g,
                epoch,
                mapping,
            },
        );
    }

    /// A DNS exchange that was under way when the gateway restarted is not modelled.
    fn ensure_same_epoch(&self, g: usize, epoch: u32, what: &str) -> Result<()> {
        if epoch != self.gateways[g].epoch {
            return self.fail(format!(
                "a DNS {what} was in flight across a gateway restart"
            ));
        }
        Ok(())
    }

    /// A gateway's query reaches the DNS server, which answers with the first address of the
    /// family asked for, to be kept for its TTL (at least `DNS_MIN_TTL_S`).
    pub(super) fn dns_at_server(
        &mut self,
        g: usize,
        epoch: u32,
        mapping: usize,
        at: u64,
    ) -> Result<()> {
        self.ensure_same_epoch(g, epoch, "query")?;
        let m = &self.gateways[g].mappings[mapping];
        let answer =
            self.records
                .get(&m.domain.to_ascii_lowercase())
                .and_then(|(addresses, ttl)| {
                    addresses
                        .iter()
                        .find(|a| a.is_ipv6() == m.v6)
                        .map(|a| (*a, kept_for_ms(*ttl)))
                });
        self.schedule(
            at + self.dns_ms,
            Event::DnsAnswer {
                gateway: g,
                epoch,
                mapping,
                answer,
            },
        );
        Ok(())
    }

    // ---------------------------------------------------------------- answers at the gateway

    /// The server's answer (an IP and how long to keep it, or none) reaches the gateway.
    pub(super) fn dns_answer(
        &mut self,
        g: usize,
        epoch: u32,
        mapping: usize,
        answer: Option<(IpAddr, u64)>,
        t: u64,
    ) -> Result<()> {
        self.ensure_same_epoch(g, epoch, "answer")?;
        if t >= self.timeline.t_end {
            // The gateway has shut down when it reads the answer, and drops it as bytes whose
            // length is the server's encoding, which the model does not know.
            return self.fail("a DNS answer reaches the gateway in the millisecond it shuts down");
        }
        self.expire(g, t);
        self.gateways[g].mappings[mapping].resolving = false;
        match answer {
            Some((ip, ttl_ms)) => self.dns_resolved(g, mapping, ip, ttl_ms, t),
            None => self.dns_failed(g, mapping, t),
        }
    }

    /// An answer puts `ip` in use until its TTL runs out and lets the queued packets through.
    fn dns_resolved(
        &mut self,
        g: usize,
        mapping: usize,
        ip: IpAddr,
        ttl_ms: u64,
        t: u64,
    ) -> Result<()> {
        let epoch = self.gateways[g].epoch;
        let state = &mut self.gateways[g].mappings[mapping];
        if state.in_use.is_some_and(|previous| previous != ip) && state.note_change(t) {
            return self.fail(
                "a DNS answer that changes the real IP and a new flow's first packet reach the \
                 gateway in the same millisecond",
            );
        }
        state.in_use = Some(ip);
        state.expires_at = Some(t + ttl_ms);
        state.generation += 1;
        let generation = state.generation;
        let c = state.client;
        let queue = std::mem::take(&mut state.queue);
        self.schedule(
            t + ttl_ms,
            Event::DnsExpiry {
                gateway: g,
                epoch,
                mapping,
                generation,
            },
        );
        for inbound in queue {
            self.within_step(inbound.traffic.step, t)?;
            self.client_packet(g, c, inbound, t, true)?;
        }
        Ok(())
    }

    /// A first answer with no record drops the queued packets.
    fn dns_failed(&mut self, g: usize, mapping: usize, t: u64) -> Result<()> {
        let state = &mut self.gateways[g].mappings[mapping];
        if state.in_use.is_some() {
            return self.fail(
                "a DNS refresh found no record: what happens to the answer in use is not in the \
                 contract",
            );
        }
        if state.note_change(t) {
            return self.fail(
                "a failed DNS answer and a new flow's first packet reach the gateway in the same \
                 millisecond",
            );
        }
        let c = state.client;
        let queue = std::mem::take(&mut state.queue);
        for inbound in queue {
            self.drop_client_packet(g, c, GatewayDropReason::DnsResolutionFailed, &inbound, t);
        }
        Ok(())
    }

    /// An answer's TTL ran out: unless a newer answer or a restart replaced it, the gateway
    /// resolves the name again (keeping the IP in use meanwhile).
    pub(super) fn dns_expiry(
        &mut self,
        g: usize,
        epoch: u32,
        mapping: usize,
        generation: u64,
        at: u64,
    ) {
        let m = &self.gateways[g].mappings[mapping];
        if epoch == self.gateways[g].epoch && generation == m.generation {
            self.expire(g, at);
            self.start_query(g, mapping, at);
        }
    }

    /// When gateway `g`'s DNS answers in use run out.
    pub(super) fn pending_dns_timers(&self, g: usize) -> Vec<coverage::PendingDeadline> {
        self.gateways[g]
            .mappings
            .iter()
            .filter(|m| m.in_use.is_some())
            .filter_map(|m| {
                Some(coverage::PendingDeadline {
                    timer: coverage::DNS_TTL,
                    at_ms: m.expires_at?,
                    client: m.client,
                    ports: None,
                    domain: Some((m.domain.clone(), m.v6)),
                })
            })
            .collect()
    }

    // ---------------------------------------------------------------- proxy IPs

    /// The DNS resource of a client packet to a proxy IP and the mapping of that IP, or why it
    /// is denied.
    pub(super) fn authorise_proxy(&self, g: usize, c: usize, packet: &Packet) -> Authorised {
        let mappings = &self.gateways[g].mappings;
        let proxy = packet.dst.ip();
        let Some(m) = mappings
            .iter()
            .position(|m| m.client == c && m.proxy == proxy)
        else {
            return Err(GatewayDropReason::UnknownProxyIp);
        };
        self.rules
            .authorise_dns(g, c, &mappings[m].domain, packet)
            .map(|r| (r, Some(m)))
    }

    /// The real IP (and name) a new flow through mapping `m` goes to, or `None` while the
    /// mapping has no answer. `from_queue`: the packet already waited for an answer.
    pub(super) fn mapped_destination(
        &mut self,
        g: usize,
        m: usize,
        t: u64,
        from_queue: bool,
    ) -> Result<Option<(IpAddr, Option<String>)>> {
        let state = &mut self.gateways[g].mappings[m];
        if let Some(deadline) = state.expires_at {
            self.coverage.note_boundary(coverage::DNS_TTL, t, deadline);
        }
        let state = &mut self.gateways[g].mappings[m];
        if !from_queue && state.note_new_flow(t) {
            return self.fail(
                "a new flow's first packet and a DNS answer that changes its real IP reach the \
                 gateway in the same millisecond",
            );
        }
        Ok(state.in_use.map(|ip| (ip, Some(state.domain.clone()))))
    }

    /// Queues a new flow's packet until mapping `m` has an answer (dropping it when the queue
    /// is full), and asks for one unless a query is under way.
    pub(super) fn queue_for_answer(
        &mut self,
        g: usize,
        c: usize,
        m: usize,
        inbound: Inbound,
        t: u64,
    ) {
        let state = &mut self.gateways[g].mappings[m];
        if state.queue.len() >= DNS_QUEUE_LIMIT {
            self.drop_client_packet(g, c, GatewayDropReason::DnsQueueFull, &inbound, t);
            return;
        }
        state.queue.push(inbound);
        if !state.resolving {
            self.start_query(g, m, t);
        }
    }

    // ---------------------------------------------------------------- restarts

    /// Packets queued for an answer across a gateway restart are not modelled.
    pub(super) fn ensure_no_dns_queue(&self, g: usize) -> Result<()> {
        if self.gateways[g]
            .mappings
            .iter()
            .any(|m| !m.queue.is_empty())
        {
            return self.fail("packets were queued for DNS across a gateway restart");
        }
        Ok(())
    }

    /// A restarted gateway forgets every answer and resolves every proxy IP again.
    pub(super) fn resolve_all_again(&mut self, g: usize, t: u64) {
        for m in &mut self.gateways[g].mappings {
            m.forget();
        }
        for mapping in 0..self.gateways[g].mappings.len() {
            self.start_query(g, mapping, t);
        }
    }
}

/// How long the gateway keeps an answer of TTL `ttl_s`: a TTL with the top bit set counts as 0
/// (RFC 2181 §8), then at least `DNS_MIN_TTL_S` and at most `DNS_MAX_TTL_S`.
fn kept_for_ms(ttl_s: u32) -> u64 {
    let ttl_s = if ttl_s > i32::MAX as u32 { 0 } else { ttl_s };
    u64::from(ttl_s).clamp(DNS_MIN_TTL_S, DNS_MAX_TTL_S) * 1000
}

#[cfg(test)]
mod tests {
    use super::kept_for_ms;

    #[test]
    fn answers_are_kept_between_the_floor_and_the_cap_and_a_top_bit_ttl_counts_as_zero() {
        let (floor, cap) = (super::DNS_MIN_TTL_S * 1000, super::DNS_MAX_TTL_S * 1000);
        assert_eq!(kept_for_ms(0), floor);
        assert_eq!(kept_for_ms(30), 30_000);
        assert_eq!(kept_for_ms(i32::MAX as u32), cap);
        assert_eq!(kept_for_ms(u32::MAX), floor);
        assert_eq!(kept_for_ms(1 << 31), floor);
    }
}
