//! Whether a packet may start a flow, and where the flow goes: the client's grants and their
//! filters decide, for a CIDR resource covering the destination (the longest prefix wins) or
//! a DNS resource matching the domain mapped to the destination proxy IP (the most specific
//! pattern wins). A proxy IP whose answer is pending makes the packet wait for it.

use std::net::IpAddr;
use std::sync::Arc;

use proto::flow::{ClientId, Protocol, ResourceId};

use super::{Client, Gateway};
use crate::cidr::is_proxy_ip;
use crate::config::ResourceAddress;
use crate::dns_resolver::DnsLookup;
use crate::drop_reason::DropReason;
use crate::filter::grant_allows;
use crate::flow_table::DnsFlow;

/// What a packet that starts a flow gets.
pub(super) enum NewFlow {
    Create {
        resource: ResourceId,
        real_ip: IpAddr,
        dns: Option<Arc<DnsFlow>>,
    },
    Deny(DropReason),
    AwaitDns,
}

impl Gateway {
    /// Decides what a packet that starts a new flow gets: which resource and real IP, or a
    /// denial, or a wait for the DNS answer.
    pub(super) fn plan_new_flow(
        &self,
        client_id: ClientId,
        dst: IpAddr,
        protocol: Protocol,
        dst_port: u16,
    ) -> Result<NewFlow, DropReason> {
        let client = self
            .clients
            .get(&client_id)
            .ok_or(DropReason::UnknownSession)?;
        if !is_proxy_ip(dst) {
            return Ok(
                match self.select_cidr_resource(client, dst, protocol, dst_port) {
                    Ok(resource) => NewFlow::Create {
                        resource,
                        real_ip: dst,
                        dns: None,
                    },
                    Err(reason) => NewFlow::Deny(reason),
                },
            );
        }
        let Some(mapping) = self.dns.lookup(client_id, dst) else {
            return Ok(NewFlow::Deny(DropReason::UnknownProxyIp));
        };
        let resource = match self.select_dns_resource(client, mapping.domain(), protocol, dst_port)
        {
            Ok(r) => r,
            Err(reason) => return Ok(NewFlow::Deny(reason)),
        };
        Ok(match mapping {
            DnsLookup::Resolved { real_ip, flow, .. } => NewFlow::Create {
                resource,
                real_ip,
                dns: Some(flow.clone()),
            },
            DnsLookup::Pending { .. } => NewFlow::AwaitDns,
        })
    }

    fn select_cidr_resource(
        &self,
        client: &Client,
        dst: IpAddr,
        protocol: Protocol,
        dst_port: u16,
    ) -> Result<ResourceId, DropReason> {
        let mut reason = DropReason::NoResource;
        let mut best: Option<(u8, ResourceId)> = None;
        for (id, resource) in &self.resources {
            let ResourceAddress::Cidr(cidr) = &resource.address else {
                continue;
            };
            if !cidr.contains(dst) {
                continue;
            }
            if !Self::granted(client, *id, protocol, dst_port, &mut reason) {
                continue;
            }
            // Longest prefix wins; on a tie the lowest id (the first in BTreeMap order).
            if best.is_none_or(|(p, _)| cidr.prefix() > p) {
                best = Some((cidr.prefix(), *id));
            }
        }
        best.map(|(_, id)| id).ok_or(reason)
    }

    /// Whether `client` may reach resource `id` with this protocol and port; if not, raises
    /// `reason` to the most telling drop reason seen so far.
    fn granted(
        client: &Client,
        id: ResourceId,
        protocol: Protocol,
        dst_port: u16,
        reason: &mut DropReason,
    ) -> bool {
        let Some(filters) = client.grants.get(&id) else {
            *reason = (*reason).max(DropReason::NotGranted);
            return false;
        };
        if !grant_allows(filters, protocol, dst_port) {
            *reason = DropReason::FilterDenied;
            return false;
        }
        true
    }

    fn select_dns_resource(
        &self,
        client: &Client,
        domain: &str,
        protocol: Protocol,
        dst_port: u16,
    ) -> Result<ResourceId, DropReason> {
        let mut reason = DropReason::NoResource;
        let mut best: Option<((u8, usize), ResourceId)> = None;
        for (id, resource) in &self.resources {
            let ResourceAddress::Dns(pattern) = &resource.address else {
                continue;
            };
            if !pattern.matches(domain) {
                continue;
            }
            if !Self::granted(client, *id, protocol, dst_port, &mut reason) {
                continue;
            }
            let rank = pattern.specificity();
            if best.is_none_or(|(r, _)| rank > r) {
                best = Some((rank, *id));
            }
        }
        best.map(|(_, id)| id).ok_or(reason)
    }
}
