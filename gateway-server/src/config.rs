//! The configuration file (YAML): what the gateway serves (clients, resources, grants, DNS
//! mappings, its settings) and where (TUN device, sockets, its own TURN allocation).
//!
//! [`Setup::parse`] checks everything before anything is opened: a bad file is an error that
//! names the field (`clients[1].key: ...`), and the gateway it returns already holds every
//! client, resource, grant and mapping of the file.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    ops::RangeInclusive,
    time::{Duration, Instant},
};

use gateway::{
    ClientConfig, ControlError, DomainPattern, Gateway, GatewayConfig, IpCidr, Resource,
    ResourceAddress,
};
use proto::{
    credentials::Credentials,
    flow::{ClientId, ResourceId, TimeOrigin, UtcTime},
    tunnel::{KEY_LEN, SessionKey},
};
use serde::Deserialize;
use turn_client::{Families, TurnClientConfig};

use crate::filter_text::parse_filter;

/// A configuration the gateway cannot run with; nothing was started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not YAML, or not of the file's shape (a missing or unknown field, a wrong type); the
    /// message names the field and the line.
    #[error("{0}")]
    Syntax(String),
    /// A field whose value is refused.
    #[error("{field}: {message}")]
    Invalid {
        /// Where, as a path into the file: `listen[1]`, `grants[0].filters[2]`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ConfigError {
    fn invalid(field: impl Into<String>, message: impl fmt::Display) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.to_string(),
        }
    }

    /// The field the error names (`None` for a syntax error, whose message has it).
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Syntax(_) => None,
            Self::Invalid { field, .. } => Some(field),
        }
    }
}

/// The file as written. Every field but `tun`, `listen` and `dns_server` is optional; the
/// settings default as [`GatewayConfig::new`] does.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    tun: String,
    listen: Vec<SocketAddr>,
    dns_server: SocketAddr,
    dns_source_ports: Option<PortsText>,
    idle_timeout_s: Option<u64>,
    dns_min_ttl_s: Option<u64>,
    dns_max_ttl_s: Option<u64>,
    dns_queue_limit: Option<usize>,
    max_flows: Option<usize>,
    max_flows_per_client: Option<usize>,
    #[serde(default)]
    seed: u64,
    time_origin_unix_ms: Option<u64>,
    relay: Option<RelayFile>,
    #[serde(default)]
    clients: Vec<ClientFile>,
    #[serde(default)]
    resources: Vec<ResourceFile>,
    #[serde(default)]
    grants: Vec<GrantFile>,
    #[serde(default)]
    dns_mappings: Vec<DnsMappingFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RelayFile {
    server: SocketAddr,
    username: String,
    password: String,
    families: Option<FamiliesFile>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FamiliesFile {
    V4,
    V6,
    #[serde(alias = "dual")]
    Both,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    id: u32,
    session_id: u32,
    key: String,
    tunnel_v4: Ipv4Addr,
    tunnel_v6: Ipv6Addr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceFile {
    id: u32,
    cidr: Option<String>,
    dns: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantFile {
    client: u32,
    resource: u32,
    #[serde(default)]
    filters: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DnsMappingFile {
    client: u32,
    proxy_ip: IpAddr,
    domain: String,
}

/// Where the gateway lives on the host.
#[derive(Debug, Clone)]
pub struct Network {
    /// The TUN device's name.
    pub tun: String,
    /// The tunnel sockets' addresses, at most one per family, in the file's order.
    pub listen: Vec<SocketAddr>,
    /// The DNS source ports: a socket for each on every listen IP.
    pub dns_source_ports: Option<RangeInclusive<u16>>,
    /// The gateway's own TURN allocation, from the listen socket of the relay's family.
    pub relay: Option<TurnClientConfig>,
}

impl Network {
    /// The listen address of `ip`'s family.
    pub fn listen_of_family(&self, ip: IpAddr) -> Option<SocketAddr> {
        self.listen
            .iter()
            .copied()
            .find(|listen| listen.is_ipv4() == ip.is_ipv4())
    }
}

/// A gateway built from the file, and where it is to run.
#[derive(Debug)]
pub struct Setup {
    /// The gateway with every client, resource, grant and DNS mapping of the file.
    pub gateway: Gateway,
    /// The TUN device, sockets and relay.
    pub network: Network,
}

impl Setup {
    /// Checks `text` and builds the gateway. `start` is the process start, which records show
    /// as `time_origin_unix_ms` if the file sets it, else as `wall_clock`. The file's DNS
    /// mappings start resolving at `start` (the queries wait in the gateway until it runs).
    pub fn parse(text: &str, start: Instant, wall_clock: UtcTime) -> Result<Self, ConfigError> {
        let file: ConfigFile = serde_yaml_ng::from_str(text)
            .map_err(|error| ConfigError::Syntax(error.to_string()))?;
        let network = network(&file)?;
        let unix = file.time_origin_unix_ms.map_or(wall_clock, |ms| {
            UtcTime::from_unix_nanos(ms.saturating_mul(1_000_000))
        });
        let config = gateway_config(
            &file,
            &network,
            TimeOrigin {
                instant: start,
                unix,
            },
        )?;
        let mut gateway = Gateway::new(config);
        add_clients(&mut gateway, &file.clients)?;
        add_resources(&mut gateway, &file.resources)?;
        add_grants(&mut gateway, &file.grants)?;
        add_dns_mappings(&mut gateway, &file.dns_mappings, start)?;
        Ok(Self { gateway, network })
    }
}

/// The TUN name, the listen addresses, the DNS ports and the relay, checked.
fn network(file: &ConfigFile) -> Result<Network, ConfigError> {
    check_interface_name(&file.tun).map_err(|message| ConfigError::invalid("tun", message))?;
    if file.listen.is_empty() {
        return Err(ConfigError::invalid("listen", "no address to listen on"));
    }
    for (index, addr) in file.listen.iter().enumerate() {
        let field = format!("listen[{index}]");
        if addr.port() == 0 {
            return Err(ConfigError::invalid(
                field,
                "port 0: name the port clients use",
            ));
        }
        if file.listen[..index]
            .iter()
            .any(|earlier| earlier.is_ipv4() == addr.is_ipv4())
        {
            return Err(ConfigError::invalid(
                field,
                format!(
                    "a second IPv{} address: one per family",
                    family_digit(addr.ip())
                ),
            ));
        }
    }
    let dns_source_ports = file
        .dns_source_ports
        .as_ref()
        .map(PortsText::range)
        .transpose()
        .map_err(|message| ConfigError::invalid("dns_source_ports", message))?;
    if let Some(ports) = &dns_source_ports
        && let Some(listen) = file.listen.iter().find(|addr| ports.contains(&addr.port()))
    {
        return Err(ConfigError::invalid(
            "dns_source_ports",
            format!("holds the tunnel port of {listen}: they need sockets of their own"),
        ));
    }
    let mut network = Network {
        tun: file.tun.clone(),
        listen: file.listen.clone(),
        dns_source_ports,
        relay: None,
    };
    if network.listen_of_family(file.dns_server.ip()).is_none() {
        return Err(ConfigError::invalid(
            "dns_server",
            format!(
                "no listen address of its family (IPv{}) to query it from",
                family_digit(file.dns_server.ip())
            ),
        ));
    }
    if file.dns_server.port() == 0 {
        return Err(ConfigError::invalid("dns_server", "port 0"));
    }
    if let Some(relay) = &file.relay {
        network.relay = Some(turn_config(relay, &network, file.seed)?);
    }
    Ok(network)
}

/// The TURN client of the gateway's own allocation.
fn turn_config(
    relay: &RelayFile,
    network: &Network,
    seed: u64,
) -> Result<TurnClientConfig, ConfigError> {
    if network.listen_of_family(relay.server.ip()).is_none() {
        return Err(ConfigError::invalid(
            "relay.server",
            format!(
                "no listen address of its family (IPv{}) to reach it from",
                family_digit(relay.server.ip())
            ),
        ));
    }
    if relay.username.is_empty() {
        return Err(ConfigError::invalid("relay.username", "empty"));
    }
    let families = match relay.families {
        Some(FamiliesFile::V4) => Families::V4,
        Some(FamiliesFile::V6) => Families::V6,
        Some(FamiliesFile::Both) => Families::Dual,
        None if relay.server.is_ipv4() => Families::V4,
        None => Families::V6,
    };
    Ok(TurnClientConfig {
        server: relay.server,
        credentials: Credentials {
            username: relay.username.clone(),
            password: relay.password.clone(),
        },
        families,
        lifetime: None,
        seed,
    })
}

/// The gateway's settings: the file's, else [`GatewayConfig::new`]'s defaults.
fn gateway_config(
    file: &ConfigFile,
    network: &Network,
    time_origin: TimeOrigin,
) -> Result<GatewayConfig, ConfigError> {
    let dns_local = network
        .listen_of_family(file.dns_server.ip())
        .ok_or_else(|| ConfigError::invalid("dns_server", "no listen address of its family"))?;
    let mut config = GatewayConfig::new(time_origin, file.dns_server, dns_local);
    config.dns_source_ports = network.dns_source_ports.clone();
    config.hash_seed = file.seed;
    if let Some(seconds) = file.idle_timeout_s {
        if seconds == 0 {
            return Err(ConfigError::invalid("idle_timeout_s", "must be at least 1"));
        }
        config.idle_timeout = Duration::from_secs(seconds);
    }
    if let Some(seconds) = file.dns_min_ttl_s {
        config.dns_min_ttl = Duration::from_secs(seconds);
    }
    if let Some(seconds) = file.dns_max_ttl_s {
        config.dns_max_ttl = Duration::from_secs(seconds);
    }
    if config.dns_max_ttl < config.dns_min_ttl {
        return Err(ConfigError::invalid(
            "dns_max_ttl_s",
            format!(
                "{} s is below dns_min_ttl_s ({} s)",
                config.dns_max_ttl.as_secs(),
                config.dns_min_ttl.as_secs()
            ),
        ));
    }
    if let Some(limit) = file.dns_queue_limit {
        config.dns_queue_limit = limit;
    }
    if let Some(max) = file.max_flows {
        config.max_flows = max;
    }
    if let Some(max) = file.max_flows_per_client {
        config.max_flows_per_client = max;
    }
    Ok(config)
}

fn add_clients(gateway: &mut Gateway, clients: &[ClientFile]) -> Result<(), ConfigError> {
    for (index, client) in clients.iter().enumerate() {
        let field = |name: &str| format!("clients[{index}].{name}");
        let key = parse_key(&client.key)
            .map_err(|message| ConfigError::invalid(field("key"), message))?;
        let config = ClientConfig {
            id: ClientId(client.id),
            session_id: client.session_id,
            key: SessionKey::new(key),
            tunnel_v4: client.tunnel_v4,
            tunnel_v6: client.tunnel_v6,
        };
        gateway.add_client(config).map_err(|error| {
            let name = match &error {
                ControlError::DuplicateClient(_) => "id",
                ControlError::DuplicateSession(_) => "session_id",
                ControlError::TunnelIpInUse(ip) | ControlError::TunnelIpOutOfRange(ip)
                    if ip.is_ipv6() =>
                {
                    "tunnel_v6"
                }
                _ => "tunnel_v4",
            };
            ConfigError::invalid(field(name), error)
        })?;
    }
    Ok(())
}

fn add_resources(gateway: &mut Gateway, resources: &[ResourceFile]) -> Result<(), ConfigError> {
    for (index, resource) in resources.iter().enumerate() {
        let field = |name: &str| format!("resources[{index}].{name}");
        let address = match (&resource.cidr, &resource.dns) {
            (Some(cidr), None) => ResourceAddress::Cidr(
                cidr.parse::<IpCidr>()
                    .map_err(|error| ConfigError::invalid(field("cidr"), error))?,
            ),
            (None, Some(pattern)) => ResourceAddress::Dns(
                pattern
                    .parse::<DomainPattern>()
                    .map_err(|error| ConfigError::invalid(field("dns"), error))?,
            ),
            _ => {
                return Err(ConfigError::invalid(
                    format!("resources[{index}]"),
                    "needs exactly one of `cidr` and `dns`",
                ));
            }
        };
        gateway
            .add_resource(Resource {
                id: ResourceId(resource.id),
                address,
            })
            .map_err(|error| ConfigError::invalid(field("id"), error))?;
    }
    Ok(())
}

fn add_grants(gateway: &mut Gateway, grants: &[GrantFile]) -> Result<(), ConfigError> {
    for (index, grant) in grants.iter().enumerate() {
        let field = |name: &str| format!("grants[{index}].{name}");
        let mut filters = Vec::with_capacity(grant.filters.len());
        for (position, text) in grant.filters.iter().enumerate() {
            filters.push(parse_filter(text).map_err(|message| {
                ConfigError::invalid(format!("grants[{index}].filters[{position}]"), message)
            })?);
        }
        gateway
            .grant(ClientId(grant.client), ResourceId(grant.resource), filters)
            .map_err(|error| {
                let name = match error {
                    ControlError::UnknownResource(_) => "resource",
                    _ => "client",
                };
                ConfigError::invalid(field(name), error)
            })?;
    }
    Ok(())
}

fn add_dns_mappings(
    gateway: &mut Gateway,
    mappings: &[DnsMappingFile],
    now: Instant,
) -> Result<(), ConfigError> {
    for (index, mapping) in mappings.iter().enumerate() {
        let field = |name: &str| format!("dns_mappings[{index}].{name}");
        gateway
            .map_dns(
                ClientId(mapping.client),
                mapping.proxy_ip,
                &mapping.domain,
                now,
            )
            .map_err(|error| {
                let name = match error {
                    ControlError::ProxyIpOutOfRange(_) => "proxy_ip",
                    ControlError::InvalidDomain(_) => "domain",
                    _ => "client",
                };
                ConfigError::invalid(field(name), error)
            })?;
    }
    Ok(())
}

/// A session key written as 64 hexadecimal digits.
fn parse_key(text: &str) -> Result<[u8; KEY_LEN], String> {
    let digits = text.as_bytes();
    if digits.len() != 2 * KEY_LEN {
        return Err(format!(
            "{} characters; a key is {} hexadecimal digits",
            digits.len(),
            2 * KEY_LEN
        ));
    }
    let mut key = [0u8; KEY_LEN];
    for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
        let nibble = |digit: u8| {
            char::from(digit)
                .to_digit(16)
                .ok_or_else(|| format!("`{}` is not a hexadecimal digit", char::from(digit)))
        };
        *byte = (nibble(pair[0])? << 4 | nibble(pair[1])?) as u8;
    }
    Ok(key)
}

/// A Linux interface name: 1 to 15 bytes, no `/`, no whitespace.
fn check_interface_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!(
            "`{name}` is {} bytes; an interface name has 1 to 15",
            name.len()
        ));
    }
    if name.contains('/') || name.chars().any(char::is_whitespace) || name == "." || name == ".." {
        return Err(format!("`{name}` is not an interface name"));
    }
    Ok(())
}

fn family_digit(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 4 } else { 6 }
}

/// `dns_source_ports` as written: `"34000-34007"`, `"34000"` or `34000`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PortsText {
    Port(u16),
    Text(String),
}

impl PortsText {
    /// The ports, nonzero, first to last.
    fn range(&self) -> Result<RangeInclusive<u16>, String> {
        let range = match self {
            Self::Port(port) => *port..=*port,
            Self::Text(text) => parse_port_range(text)?,
        };
        if *range.start() == 0 {
            return Err("port 0 is not a DNS source port".into());
        }
        Ok(range)
    }
}

/// `FIRST-LAST` or one port.
fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let (first, last) = text.split_once('-').unwrap_or((text, text));
    let parse = |port: &str| {
        port.trim()
            .parse::<u16>()
            .map_err(|error| format!("`{port}` is not a port: {error}"))
    };
    let (first, last) = (parse(first)?, parse(last)?);
    if first > last {
        return Err(format!("`{text}` is empty (FIRST-LAST, FIRST <= LAST)"));
    }
    Ok(first..=last)
}

#[cfg(test)]
mod tests;
