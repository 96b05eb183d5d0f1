//! What the control plane hands the gateway: its own configuration, client sessions and
//! resources, and the errors of control-plane calls.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use proto::flow::{ClientId, ResourceId, TimeOrigin};
use proto::tunnel::SessionKey;

use crate::cidr::IpCidr;
use crate::domain::DomainPattern;

/// Per-instance gateway configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Maps `now` arguments to UTC for flow-record timestamps.
    pub time_origin: TimeOrigin,
    /// Where the gateway sends its DNS queries; datagrams from this address are DNS answers.
    pub dns_server: SocketAddr,
    /// The gateway's own address DNS queries are sent from (with `dns_source_ports`, only its
    /// IP).
    pub dns_local: SocketAddr,
    /// `None` (default): queries go out from `dns_local`, a socket shared with tunnel frames,
    /// and a datagram is an answer when it comes from `dns_server`. `Some(ports)`: each query
    /// goes out from a port drawn from `ports` with the seeded generator (sockets of their own,
    /// disjoint from the tunnel's), so an off-path attacker must guess the port as well as the
    /// 16-bit id. Every datagram to one of these ports is taken as an answer, and accepted
    /// only from `dns_server` at the port its query left from (else `dns-unexpected-answer`).
    pub dns_source_ports: Option<RangeInclusive<u16>>,
    /// A flow with no packet for this long is closed with reason `idle` (default 120 s).
    pub idle_timeout: Duration,
    /// Emit flow records (`flow_logs` tracing events, `poll_flow_record`, `FlowStarted`
    /// events) for this instance. Flows are tracked either way.
    pub flow_logs: bool,
    /// Seed of the flow-table hash (lookups only; never affects output order).
    pub hash_seed: u64,
    /// Packets held per DNS proxy IP while its answer is pending (default 32).
    pub dns_queue_limit: usize,
    /// How long to wait for a DNS answer before asking again (default 2 s).
    pub dns_query_timeout: Duration,
    /// How many times a query is sent before the resolution fails (default 3).
    pub dns_query_attempts: u8,
    /// Answers with a smaller TTL are kept this long (default 1 s), so a TTL of 0 does not make
    /// the gateway query in a loop.
    pub dns_min_ttl: Duration,
    /// Answers with a larger TTL are kept only this long (default one day), so a forged or
    /// misconfigured answer cannot pin a mapping for years.
    pub dns_max_ttl: Duration,
    /// Open flows at most, over all clients (default 1,000,000); a packet that would start
    /// one more is dropped (`flow-table-full`).
    pub max_flows: usize,
    /// Open flows one client may hold (default 65,536), so one client cannot take the whole
    /// table.
    pub max_flows_per_client: usize,
}

impl GatewayConfig {
    /// A configuration with the defaults above and flow logs enabled.
    pub fn new(time_origin: TimeOrigin, dns_server: SocketAddr, dns_local: SocketAddr) -> Self {
        Self {
            time_origin,
            dns_server,
            dns_local,
            dns_source_ports: None,
            idle_timeout: Duration::from_secs(120),
            flow_logs: true,
            hash_seed: 0,
            dns_queue_limit: 32,
            dns_query_timeout: Duration::from_secs(2),
            dns_query_attempts: 3,
            dns_min_ttl: Duration::from_secs(1),
            dns_max_ttl: Duration::from_secs(86_400),
            max_flows: 1_000_000,
            max_flows_per_client: 65_536,
        }
    }
}

/// The fill of every table the gateway bounds ([`crate::Gateway::occupancy`]), so that a
/// host or a test can check after any call that each bound of the configuration holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Occupancy {
    /// Open flows (bound: `max_flows`).
    pub flows: usize,
    /// The most open flows of one client (bound: `max_flows_per_client`).
    pub most_flows_of_one_client: usize,
    /// The most packets one DNS mapping holds for its answer (bound: `dns_queue_limit`).
    pub most_held_for_dns: usize,
}

impl Occupancy {
    /// Every bound of `config` this occupancy is over, in words (empty when all hold).
    pub fn breaches(&self, config: &GatewayConfig) -> Vec<String> {
        proto::bounds::breaches([
            ("open flows", self.flows, config.max_flows),
            (
                "open flows of one client",
                self.most_flows_of_one_client,
                config.max_flows_per_client,
            ),
            (
                "packets held for one DNS answer",
                self.most_held_for_dns,
                config.dns_queue_limit,
            ),
        ])
    }
}

/// A client session: who the client is, how its frames are authenticated, and its tunnel
/// addresses (the only source addresses its inner packets may use).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The client.
    pub id: ClientId,
    /// The session id in its tunnel frames.
    pub session_id: u32,
    /// The session's MAC key.
    pub key: SessionKey,
    /// Tunnel IPv4, in 100.64.0.0/11.
    pub tunnel_v4: Ipv4Addr,
    /// Tunnel IPv6, in fd00:2021:1111::/107.
    pub tunnel_v6: Ipv6Addr,
}

impl ClientConfig {
    /// The tunnel IP of the given family.
    pub fn tunnel_ip(&self, ipv4: bool) -> IpAddr {
        if ipv4 {
            IpAddr::V4(self.tunnel_v4)
        } else {
            IpAddr::V6(self.tunnel_v6)
        }
    }
}

/// What a resource covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceAddress {
    /// Every address in a prefix.
    Cidr(IpCidr),
    /// Names matching a pattern, reached through DNS proxy IPs.
    Dns(DomainPattern),
}

/// A resource clients can be granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// Its id.
    pub id: ResourceId,
    /// What it covers.
    pub address: ResourceAddress,
}

/// A control-plane call was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// A client with this id exists.
    #[error("client {0} already exists")]
    DuplicateClient(ClientId),
    /// Another client uses this session id.
    #[error("session id {0} is already in use")]
    DuplicateSession(u32),
    /// Another client uses this tunnel IP.
    #[error("tunnel IP {0} is already in use")]
    TunnelIpInUse(IpAddr),
    /// The tunnel IP is outside 100.64.0.0/11 or fd00:2021:1111::/107.
    #[error("tunnel IP {0} is outside 100.64.0.0/11 and fd00:2021:1111::/107")]
    TunnelIpOutOfRange(IpAddr),
    /// No such client.
    #[error("no client {0}")]
    UnknownClient(ClientId),
    /// A resource with this id exists.
    #[error("resource {0} already exists")]
    DuplicateResource(ResourceId),
    /// No such resource.
    #[error("no resource {0}")]
    UnknownResource(ResourceId),
    /// The client has no grant for the resource.
    #[error("client {0} has no grant for resource {1}")]
    NoSuchGrant(ClientId, ResourceId),
    /// The proxy IP is outside 100.96.0.0/11 and fd00:2021:1111:8000::/107.
    #[error("DNS proxy IP {0} is outside 100.96.0.0/11 and fd00:2021:1111:8000::/107")]
    ProxyIpOutOfRange(IpAddr),
    /// The client has no mapping for this proxy IP.
    #[error("client {0} has no DNS mapping for {1}")]
    UnknownProxyIp(ClientId, IpAddr),
    /// The domain is not a valid DNS name.
    #[error(transparent)]
    InvalidDomain(#[from] crate::domain::DomainError),
    /// The gateway was shut down.
    #[error("the gateway is shut down")]
    ShutDown,
}
