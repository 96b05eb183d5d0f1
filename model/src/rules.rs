//! The gateway's decision rules of `docs/flows.md`, restated: which resource a client packet
//! belongs to (CIDR longest prefix, DNS pattern ranking, grant filters), proxy IP ranges and
//! TCP sequence comparison.

use std::collections::BTreeMap;
use std::net::IpAddr;

use scenario_format::plan::{Filter, domain_matches, parse_resource_cidr};
use scenario_format::{ResourceAddress, Topology};

use crate::{GatewayDropReason, Packet, PacketKind, Protocol};

/// A resource as the gateway knows it.
#[derive(Debug, Clone)]
pub(crate) enum Resource {
    Cidr { network: IpAddr, length: u8 },
    Dns { pattern: String },
}

/// The control plane's view of one topology: resources per gateway and the current grants.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    /// `(gateway index, resource)` by resource id.
    pub resources: Vec<(usize, Resource)>,
    /// `(client, resource) -> filters` (empty: everything).
    pub grants: BTreeMap<(usize, usize), Vec<Filter>>,
}

impl Rules {
    pub fn new(topology: &Topology) -> Result<Self, String> {
        let gateway = |name: &str| topology.gateways.iter().position(|g| g.name == name);
        let mut resources = Vec::new();
        for spec in &topology.resources {
            let g = gateway(&spec.gateway).ok_or_else(|| format!("no gateway {}", spec.gateway))?;
            let resource = match &spec.address {
                ResourceAddress::Cidr(text) => {
                    let (network, length) = parse_resource_cidr(text)?;
                    Resource::Cidr { network, length }
                }
                ResourceAddress::Dns(pattern) => Resource::Dns {
                    pattern: pattern.clone(),
                },
            };
            resources.push((g, resource));
        }
        let mut rules = Self {
            resources,
            grants: BTreeMap::new(),
        };
        for grant in &topology.grants {
            rules.grant(topology, &grant.client, &grant.resource, &grant.filters)?;
        }
        Ok(rules)
    }

    /// Grants (or re-grants, replacing the filters).
    pub fn grant(
        &mut self,
        topology: &Topology,
        client: &str,
        resource: &str,
        filters: &[String],
    ) -> Result<(), String> {
        let c = client_index(topology, client)?;
        let r = resource_index(topology, resource)?;
        let filters = filters
            .iter()
            .map(|f| scenario_format::plan::parse_filter(f))
            .collect::<Result<Vec<_>, _>>()?;
        self.grants.insert((c, r), filters);
        Ok(())
    }

    fn allows(&self, client: usize, resource: usize, packet: &Packet) -> bool {
        let Some(filters) = self.grants.get(&(client, resource)) else {
            return false;
        };
        filters.is_empty()
            || filters.iter().any(|filter| match (filter, &packet.kind) {
                (Filter::Tcp { ports }, PacketKind::Tcp { .. })
                | (Filter::Udp { ports }, PacketKind::Udp { .. }) => {
                    (ports.0..=ports.1).contains(&packet.dst.port())
                }
                (Filter::Icmp, PacketKind::IcmpProhibited { .. }) => true,
                _ => false,
            })
    }

    /// Picks among `candidates` (resource ids, already in preference order) the first granted
    /// and allowed one, or the denial reason.
    fn pick(
        &self,
        client: usize,
        candidates: &[usize],
        packet: &Packet,
    ) -> Result<usize, GatewayDropReason> {
        if candidates.is_empty() {
            return Err(GatewayDropReason::NoResource);
        }
        let granted: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|r| self.grants.contains_key(&(client, *r)))
            .collect();
        if granted.is_empty() {
            return Err(GatewayDropReason::NotGranted);
        }
        granted
            .into_iter()
            .find(|r| self.allows(client, *r, packet))
            .ok_or(GatewayDropReason::FilterDenied)
    }

    /// The CIDR resource of `gateway` a client packet to a real IP belongs to: covering, granted,
    /// allowed; longest prefix, then lowest id.
    pub fn authorise_cidr(
        &self,
        gateway: usize,
        client: usize,
        packet: &Packet,
    ) -> Result<usize, GatewayDropReason> {
        let dst = packet.dst.ip();
        let mut candidates: Vec<(u8, usize)> = self
            .resources
            .iter()
            .enumerate()
            .filter_map(|(id, (g, resource))| match resource {
                Resource::Cidr { network, length }
                    if *g == gateway && cidr_contains(*network, *length, dst) =>
                {
                    Some((*length, id))
                }
                _ => None,
            })
            .collect();
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let ids: Vec<usize> = candidates.into_iter().map(|(_, id)| id).collect();
        self.pick(client, &ids, packet)
    }

    /// The DNS resource of `gateway` a client packet to a proxy IP mapped to `domain` belongs
    /// to: exact over `*.` over `**.`, then the longer suffix, then the lowest id.
    pub fn authorise_dns(
        &self,
        gateway: usize,
        client: usize,
        domain: &str,
        packet: &Packet,
    ) -> Result<usize, GatewayDropReason> {
        let mut candidates: Vec<((u8, std::cmp::Reverse<usize>), usize)> = self
            .resources
            .iter()
            .enumerate()
            .filter_map(|(id, (g, resource))| match resource {
                Resource::Dns { pattern } if *g == gateway && domain_matches(pattern, domain) => {
                    Some((pattern_rank(pattern), id))
                }
                _ => None,
            })
            .collect();
        candidates.sort();
        let ids: Vec<usize> = candidates.into_iter().map(|(_, id)| id).collect();
        self.pick(client, &ids, packet)
    }

    /// Whether `gateway` serves a DNS resource whose pattern matches `name`.
    pub fn gateway_has_domain(&self, gateway: usize, name: &str) -> bool {
        self.resources.iter().any(|(g, resource)| {
            *g == gateway
                && matches!(resource, Resource::Dns { pattern } if domain_matches(pattern, name))
        })
    }
}

/// Sort key of a matching pattern: exact (0) over `*.` (1) over `**.` (2), then longer suffix.
fn pattern_rank(pattern: &str) -> (u8, std::cmp::Reverse<usize>) {
    if let Some(suffix) = pattern.strip_prefix("**.") {
        (2, std::cmp::Reverse(suffix.len()))
    } else if let Some(suffix) = pattern.strip_prefix("*.") {
        (1, std::cmp::Reverse(suffix.len()))
    } else {
        (0, std::cmp::Reverse(pattern.len()))
    }
}

pub(crate) fn client_index(topology: &Topology, name: &str) -> Result<usize, String> {
    topology
        .clients
        .iter()
        .position(|c| c.name == name)
        .ok_or_else(|| format!("no client {name}"))
}

pub(crate) fn resource_index(topology: &Topology, name: &str) -> Result<usize, String> {
    topology
        .resources
        .iter()
        .position(|r| r.name == name)
        .ok_or_else(|| format!("no resource {name}"))
}

/// Whether `ip` is in `network/length`.
pub(crate) fn cidr_contains(network: IpAddr, length: u8, ip: IpAddr) -> bool {
    match (network, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(length)).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(length)).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// Whether `ip` is a DNS proxy IP (100.96.0.0/11, fd00:2021:1111:8000::/107).
pub(crate) fn is_proxy_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(_) => cidr_contains("100.96.0.0".parse().expect("literal"), 11, ip),
        IpAddr::V6(_) => cidr_contains("fd00:2021:1111:8000::".parse().expect("literal"), 107, ip),
    }
}

pub(crate) use observation::seq_ge;

/// The flow protocol of a packet the model builds. It builds only UDP, TCP and ICMP packets,
/// each of which has one; ICMP stands in for what never occurs.
pub(crate) fn protocol(packet: &Packet) -> Protocol {
    packet.protocol().unwrap_or(Protocol::Icmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_and_proxy_ranges() {
        let net: IpAddr = "198.51.100.0".parse().unwrap();
        assert!(cidr_contains(net, 24, "198.51.100.77".parse().unwrap()));
        assert!(!cidr_contains(net, 25, "198.51.100.200".parse().unwrap()));
        assert!(cidr_contains(net, 32, net));
        assert!(is_proxy_ip("100.96.0.1".parse().unwrap()));
        assert!(is_proxy_ip("100.127.255.255".parse().unwrap()));
        assert!(!is_proxy_ip("100.64.0.2".parse().unwrap()));
        assert!(is_proxy_ip("fd00:2021:1111:8000::1".parse().unwrap()));
        assert!(!is_proxy_ip("fd00:2021:1111::2".parse().unwrap()));
    }

    #[test]
    fn sequence_comparison_wraps() {
        assert!(seq_ge(5, 5));
        assert!(seq_ge(6, 5));
        assert!(!seq_ge(4, 5));
        assert!(seq_ge(2, u32::MAX - 1));
    }

    #[test]
    fn patterns_rank_exact_then_one_label_then_any_depth() {
        assert!(pattern_rank("a.example.com") < pattern_rank("*.example.com"));
        assert!(pattern_rank("*.example.com") < pattern_rank("**.example.com"));
        assert!(pattern_rank("**.b.example.com") < pattern_rank("**.example.com"));
    }
}
