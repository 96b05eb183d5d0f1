//! A scenario: the topology of a simulated VPN (clients, gateways, relays, resources, DNS
//! records, grants, link latencies) and the steps that happen in it (traffic, path changes,
//! faults, idle time). It is a YAML file a person can read, write and replay; the simulator
//! (`sim`) runs it, the reference model (`model`) predicts it, and `scenarios` compares the two.
//!
//! This crate holds only the vocabulary: the types, their YAML form, validation with clear
//! errors, the [`plan::AddressPlan`] that gives every host its addresses and sessions, the
//! time grid of the steps ([`timing`]) and the settings every host runs with ([`settings`]). It depends on no
//! system under test, so the model can use it without seeing the code it judges.

pub mod attack;
pub mod plan;
pub mod settings;
pub mod stray;
pub mod timing;
mod validate;

use std::{fmt, net::IpAddr, path::Path};

pub use attack::{AttackKind, GatewayAttackKind};
use serde::{Deserialize, Serialize};
pub use stray::StrayKind;
pub use validate::ValidationError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// The story, for a person reading the file or a failure.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub topology: Topology,
    /// Steps are written `- udp: { ... }` (one-key maps), not with YAML tags.
    #[serde(default, with = "serde_yaml_ng::with::singleton_map_recursive")]
    pub steps: Vec<Step>,
}

/// Which IP families a host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Stack {
    V4,
    V6,
    Dual,
}

impl Stack {
    pub fn has_v4(self) -> bool {
        matches!(self, Stack::V4 | Stack::Dual)
    }

    pub fn has_v6(self) -> bool {
        matches!(self, Stack::V6 | Stack::Dual)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub clients: Vec<ClientSpec>,
    pub gateways: Vec<GatewaySpec>,
    #[serde(default)]
    pub relays: Vec<RelaySpec>,
    pub resources: Vec<ResourceSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_records: Vec<DnsRecord>,
    #[serde(default)]
    pub grants: Vec<Grant>,
    #[serde(default)]
    pub latency: Latency,
    /// UDP flow idle timeout of the gateways, in seconds (120 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_s: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    pub name: String,
    pub stack: Stack,
    /// The relay this client allocates on, if it uses one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySpec {
    pub name: String,
    pub stack: Stack,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySpec {
    pub name: String,
    pub stack: Stack,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    pub name: String,
    /// The gateway that serves it.
    pub gateway: String,
    #[serde(flatten)]
    pub address: ResourceAddress,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceAddress {
    /// `198.51.100.10/32`, `2001:db8:100::/64`.
    Cidr(String),
    /// `app.example.com`, `*.example.com` (one label), `**.example.com` (any depth).
    Dns(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsRecord {
    pub name: String,
    pub addresses: Vec<IpAddr>,
    #[serde(default = "default_ttl")]
    pub ttl_s: u32,
}

fn default_ttl() -> u32 {
    300
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub client: String,
    pub resource: String,
    /// `tcp`, `tcp/443`, `udp/5000-5999`, `icmp`; none means everything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
}

/// Link latencies in whole milliseconds (the simulation's tick), so the model can compute exact
/// arrival times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    pub default_ms: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<LinkLatency>,
}

impl Latency {
    /// The latency between two hosts, in either order: their `links` entry, else the default.
    pub fn between(&self, a: &str, b: &str) -> u64 {
        self.links
            .iter()
            .find(|l| {
                (l.between[0] == a && l.between[1] == b) || (l.between[0] == b && l.between[1] == a)
            })
            .map_or(self.default_ms, |l| l.ms)
            .into()
    }
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            default_ms: 10,
            links: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkLatency {
    pub between: [String; 2],
    pub ms: u32,
}

/// How a client reaches a gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum PathMode {
    Direct,
    /// Through the client's relay to the gateway's own address.
    ClientRelayed,
    /// Directly to the gateway's relayed address.
    GatewayRelayed,
    /// Client and gateway on the same relay: the relay delivers to itself.
    SameRelay,
    /// Through the client's relay to the gateway's relayed address on another relay.
    DifferentRelays,
}

/// Which side of a TCP connection acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Client,
    Resource,
}

impl Side {
    /// The other end of the connection.
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Resource,
            Side::Resource => Side::Client,
        }
    }
}

/// A link fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// Drop everything on the link until `heal`.
    Partition,
    Heal,
    /// Keep datagrams in flight until `release`.
    Hold,
    Release,
    /// Drop the next N datagrams.
    DropNext(u32),
    /// Drop every CreatePermission and ChannelBind request on the link until `heal`; the
    /// allocation's own refreshes pass, so the relay's permissions and channel bindings run out
    /// while the allocation lives.
    DropBindingRequests,
}

/// Where traffic goes: a resource by name, optionally through one of its DNS names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub client: String,
    pub resource: String,
    /// For DNS resources: the name the client resolves (matching the resource's pattern).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Send over IPv6 inside the tunnel.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ipv6: bool,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Step {
    /// One UDP datagram from the client; the resource echoes it.
    Udp {
        #[serde(flatten)]
        target: Target,
        bytes: u16,
    },
    /// `flows` UDP datagrams from the client in one go, to `port` from source ports
    /// `plan::FLOOD_FIRST_PORT`, `+ 1`, ...: each starts a flow of its own (a flood of new
    /// 5-tuples); the resource echoes each.
    UdpFlood {
        #[serde(flatten)]
        target: Target,
        flows: u16,
    },
    /// One UDP datagram from the client (a compromised one) whose inner source is not its
    /// tunnel IP (`plan::forged_tunnel_ip`), in a valid frame of its session: the gateway
    /// drops it (`forged-source`) without taking the frame.
    ForgedSource {
        #[serde(flatten)]
        target: Target,
    },
    /// Opens TCP connection `conn` (a number the later TCP steps refer to): SYN, SYN-ACK, ACK.
    TcpOpen {
        conn: u32,
        #[serde(flatten)]
        target: Target,
        /// The client's source port; by default `30000 + conn`. Another connection's port
        /// reuses its 5-tuple (after it closed, or while it is still open).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        src_port: Option<u16>,
    },
    /// The client resends its SYN (as after a lost SYN-ACK).
    TcpRetransmitSyn {
        conn: u32,
    },
    /// `bytes` of data from `from`, acknowledged by the other side.
    TcpData {
        conn: u32,
        from: Side,
        bytes: u16,
    },
    /// FIN from `by`, answered by FIN-ACK and the final ACK.
    TcpClose {
        conn: u32,
        by: Side,
    },
    /// FIN from both sides at once (a simultaneous close): the FINs cross, each side
    /// acknowledges the other's.
    TcpSimultaneousClose {
        conn: u32,
    },
    /// FIN from `by`, acknowledged by the other side with a bare ACK: the connection is half
    /// closed, and the other side may still send data, close (its FIN gets the final ACK) or
    /// reset.
    TcpHalfClose {
        conn: u32,
        by: Side,
    },
    /// RST from `by`.
    TcpReset {
        conn: u32,
        by: Side,
    },
    /// A late ACK from the client after the connection closed.
    TcpLateAck {
        conn: u32,
    },
    /// The client's stub resolver answers a query for `name` (a proxy IP for DNS resources).
    DnsQuery {
        client: String,
        name: String,
    },
    /// Switches how `client` reaches `gateway`.
    Path {
        client: String,
        gateway: String,
        mode: PathMode,
    },
    /// The client moves to a new outer address (the next port), or with `back` to the address
    /// it had before its last move (the port below).
    Roam {
        client: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        back: bool,
    },
    Grant(Grant),
    Revoke {
        client: String,
        resource: String,
    },
    /// The DNS server's answer for `name` changes.
    DnsChange {
        name: String,
        addresses: Vec<IpAddr>,
    },
    /// A fault on the link between two hosts.
    Fault {
        between: [String; 2],
        fault: Fault,
    },
    /// The gateway restarts: its flows are flushed (shutdown) and its state is lost.
    GatewayRestart {
        gateway: String,
    },
    /// One datagram that is not TURN, to `relay` from the internet host (`stray::StrayKind`
    /// says what it is), over IPv6 if `ipv6`. `unpermitted-peer` goes to the relayed address
    /// of `allocation` (a client or gateway that names this relay).
    Stray {
        relay: String,
        kind: StrayKind,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ipv6: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        allocation: Option<String>,
    },
    /// The attacker host attacks `relay` (`attack::AttackKind` says how), over IPv6 if `ipv6`.
    Attack {
        relay: String,
        kind: AttackKind,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ipv6: bool,
    },
    /// The attacker host sends `gateway` one hostile datagram about `client`'s session
    /// (`attack::GatewayAttackKind` says which).
    GatewayAttack {
        gateway: String,
        client: String,
        kind: GatewayAttackKind,
    },
    /// Nothing happens for `seconds` plus `ms` milliseconds (either may be left out).
    Idle {
        #[serde(default, skip_serializing_if = "is_zero")]
        seconds: u64,
        #[serde(default, skip_serializing_if = "is_zero")]
        ms: u64,
    },
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read the file")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Format { path: String, message: String },
    #[error("{path}:{line}: {error}")]
    Invalid {
        path: String,
        line: usize,
        error: ValidationError,
    },
}

impl Topology {
    /// The index of the client named `name`.
    pub fn client_index(&self, name: &str) -> Option<usize> {
        self.clients.iter().position(|c| c.name == name)
    }

    /// The index of the gateway named `name`.
    pub fn gateway_index(&self, name: &str) -> Option<usize> {
        self.gateways.iter().position(|g| g.name == name)
    }

    /// The index of the resource named `name`.
    pub fn resource_index(&self, name: &str) -> Option<usize> {
        self.resources.iter().position(|r| r.name == name)
    }

    /// The index of the gateway that serves the resource named `name`.
    pub fn gateway_of_resource(&self, name: &str) -> Option<usize> {
        let resource = &self.resources[self.resource_index(name)?];
        self.gateway_index(&resource.gateway)
    }
}

impl Scenario {
    /// The `tcp-open` step of connection `conn` (the last one, if the number is used again):
    /// its target and the source port it chose.
    pub fn tcp_open_of(&self, conn: u32) -> Option<(&Target, Option<u16>)> {
        self.steps.iter().rev().find_map(|step| match step {
            Step::TcpOpen {
                conn: c,
                target,
                src_port,
            } if *c == conn => Some((target, *src_port)),
            _ => None,
        })
    }

    /// Parses and validates YAML text; `origin` names the text in errors (a file path).
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, LoadError> {
        let scenario: Scenario =
            serde_yaml_ng::from_str(text).map_err(|error| match error.location() {
                Some(location) => LoadError::Syntax {
                    path: origin.to_owned(),
                    line: location.line(),
                    column: location.column(),
                    message: error.to_string(),
                },
                None => LoadError::Format {
                    path: origin.to_owned(),
                    message: error.to_string(),
                },
            })?;
        scenario.validate().map_err(|error| LoadError::Invalid {
            path: origin.to_owned(),
            line: error.line_in(text),
            error,
        })?;
        Ok(scenario)
    }

    pub fn from_file(path: &Path) -> Result<Self, LoadError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: origin.clone(),
            source,
        })?;
        Self::from_yaml(&text, &origin)
    }

    pub fn to_yaml(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_yaml_ng::to_string(self).unwrap_or_else(|error| format!("# cannot print: {error}\n"))
    }

    /// Checks every cross reference and value; see [`ValidationError`].
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate::validate(self)
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_yaml())
    }
}
