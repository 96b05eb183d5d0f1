//! The topology of a generated scenario: its hosts from the [`Layout`], the resources that
//! exist, one DNS record per name, every grant, and the shape's latencies.

use scenario_format::{
    DnsRecord, Grant, Latency, LinkLatency, RelaySpec, ResourceAddress, ResourceSpec, Topology,
};

use super::layout::Layout;
use super::names::{DOMAINS, FILTERS, GATEWAYS, RESOURCES};
use super::shape::Shape;

pub(super) fn topology(shape: &Shape, layout: &Layout, relays: Vec<RelaySpec>) -> Topology {
    Topology {
        clients: layout.clients.clone(),
        gateways: layout.gateways.clone(),
        relays,
        resources: resource_specs(layout),
        dns_records: dns_records(shape.dns_ttl_s),
        grants: grants(shape, layout),
        latency: Latency {
            default_ms: shape.latency_ms,
            links: vec![LinkLatency {
                between: ["alice".to_owned(), "gw".to_owned()],
                ms: shape.client_link_ms,
            }],
        },
        idle_timeout_s: None,
    }
}

fn resource_specs(layout: &Layout) -> Vec<ResourceSpec> {
    layout
        .resources
        .iter()
        .map(|index| {
            let choice = &RESOURCES[*index];
            ResourceSpec {
                name: choice.name.to_owned(),
                gateway: GATEWAYS[choice.gateway].to_owned(),
                address: if choice.dns {
                    ResourceAddress::Dns(choice.address.to_owned())
                } else {
                    ResourceAddress::Cidr(choice.address.to_owned())
                },
            }
        })
        .collect()
}

/// One IPv4 and one IPv6 address for each of [`DOMAINS`], kept for `ttl_s`.
fn dns_records(ttl_s: u32) -> Vec<DnsRecord> {
    DOMAINS
        .iter()
        .enumerate()
        .map(|(index, name)| DnsRecord {
            name: (*name).to_owned(),
            addresses: vec![
                format!("198.51.100.{}", 40 + index).parse().expect("ip"),
                format!("2001:db8:100::{}", 40 + index).parse().expect("ip"),
            ],
            ttl_s,
        })
        .collect()
}

/// Every client is granted every resource, with [`FILTERS`] if the shape filters its grants.
fn grants(shape: &Shape, layout: &Layout) -> Vec<Grant> {
    layout
        .clients
        .iter()
        .enumerate()
        .flat_map(|(c, client)| {
            layout.resources.iter().map(move |index| Grant {
                client: client.name.clone(),
                resource: RESOURCES[*index].name.to_owned(),
                filters: if shape.filtered[c] {
                    FILTERS.iter().map(|filter| (*filter).to_owned()).collect()
                } else {
                    Vec::new()
                },
            })
        })
        .collect()
}
