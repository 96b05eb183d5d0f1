//! The address plan: which addresses every host of a scenario gets, and the parsing of the
//! scenario's address-like strings (CIDRs, domain patterns, filters). The simulator builds its
//! world from this plan and the model predicts with it, so both agree on every address.
//!
//! Only documentation ranges are used: hosts in 203.0.113.0/24 and 2001:db8::/32 (the internet
//! host that sends stray datagrams in 192.0.2.0/24 and 2001:db8:ffff::/48), resources in
//! 198.51.100.0/24 and 2001:db8:100::/48, client tunnel IPs in 100.64.0.0/11 and
//! fd00:2021:1111::/107, DNS proxy IPs in 100.96.0.0/11 and fd00:2021:1111:8000::/107.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::{Scenario, Stack};

/// The port clients and gateways send tunnel traffic from (before any roaming).
pub const TUNNEL_PORT: u16 = 51820;

/// The ports a gateway sends its DNS queries from, one drawn per query (the gateway's
/// `dns_source_ports`): sockets of their own beside the tunnel's.
pub const GATEWAY_DNS_PORTS: std::ops::RangeInclusive<u16> = 34_000..=34_007;
/// The DNS server every gateway asks.
pub const DNS_SERVER_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 53);
pub const DNS_SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x53);

/// The DNS server's address a host at `host` asks: the one in its family.
pub fn dns_server(host: IpAddr) -> SocketAddr {
    match host {
        IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(DNS_SERVER_V4), 53),
        IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(DNS_SERVER_V6), 53),
    }
}

/// The port relays take TURN (STUN and ChannelData) on.
pub const TURN_PORT: u16 = 3478;

/// The internet host: a host on no TURN path that sends relays the datagrams of `stray` steps
/// (`crate::stray`). It is at the default latency from every relay (no `links` entry can name
/// it).
pub const INTERNET_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const INTERNET_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);
/// The attacker host of `attack` steps (`crate::attack`): on no TURN path, at the default
/// latency from every relay, with credentials of its own.
pub const ATTACKER_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 66);
pub const ATTACKER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x66);
/// The client's first source port of a `udp-flood` step: below the TCP (30000 + conn) and UDP
/// (40000 + port) source ports, so a flood never reuses another step's 5-tuple.
pub const FLOOD_FIRST_PORT: u16 = 20_000;

/// The inner source of a `forged-source` step: inside the tunnel ranges, but no client's
/// tunnel IP (scenarios have at most 3 clients, at .2-.4 and ::2-::4).
pub fn forged_tunnel_ip(ipv6: bool) -> IpAddr {
    if ipv6 {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0x2021, 0x1111, 0, 0, 0, 0, 0x250))
    } else {
        IpAddr::V4(Ipv4Addr::new(100, 64, 0, 250))
    }
}

/// Whether `ip` is the attacker host's.
pub fn is_attacker(ip: IpAddr) -> bool {
    ip == IpAddr::V4(ATTACKER_V4) || ip == IpAddr::V6(ATTACKER_V6)
}

/// The relay host's own resolver socket and NTP client socket: ephemeral ports (Linux takes
/// them from 32768-60999) below the relays' allocation range (49152-65535), open all run.
pub const RELAY_HOST_DNS_PORT: u16 = 33053;
pub const RELAY_HOST_NTP_PORT: u16 = 33123;

/// The internet host's address in the family of `other`.
pub fn internet_host(other: IpAddr) -> IpAddr {
    match other {
        IpAddr::V4(_) => IpAddr::V4(INTERNET_V4),
        IpAddr::V6(_) => IpAddr::V6(INTERNET_V6),
    }
}

/// A host's public addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostAddresses {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

impl HostAddresses {
    fn new(stack: Stack, v4: Ipv4Addr, v6: Ipv6Addr) -> Self {
        Self {
            v4: stack.has_v4().then_some(v4),
            v6: stack.has_v6().then_some(v6),
        }
    }

    /// The IPv4 address if the host has one, else the IPv6 address.
    pub fn preferred(&self) -> IpAddr {
        self.v4
            .map(IpAddr::V4)
            .or(self.v6.map(IpAddr::V6))
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    /// An address of the same family as `other`, if this host has one.
    pub fn matching(&self, other: IpAddr) -> Option<IpAddr> {
        match other {
            IpAddr::V4(_) => self.v4.map(IpAddr::V4),
            IpAddr::V6(_) => self.v6.map(IpAddr::V6),
        }
    }
}

/// Every address in a scenario, by host index in the topology's lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPlan {
    pub relays: Vec<HostAddresses>,
    pub gateways: Vec<HostAddresses>,
    pub clients: Vec<HostAddresses>,
    /// Each client's tunnel IPs (inner source addresses).
    pub tunnel_v4: Vec<Ipv4Addr>,
    pub tunnel_v6: Vec<Ipv6Addr>,
}

impl AddressPlan {
    pub fn new(scenario: &Scenario) -> Self {
        let topology = &scenario.topology;
        let host = |base: u8, index: usize, stack: Stack| {
            let last = base.saturating_add(index as u8);
            HostAddresses::new(
                stack,
                Ipv4Addr::new(203, 0, 113, last),
                Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(last)),
            )
        };
        Self {
            relays: topology
                .relays
                .iter()
                .enumerate()
                .map(|(i, r)| host(1, i, r.stack))
                .collect(),
            gateways: topology
                .gateways
                .iter()
                .enumerate()
                .map(|(i, g)| host(10, i, g.stack))
                .collect(),
            clients: topology
                .clients
                .iter()
                .enumerate()
                .map(|(i, c)| host(100, i, c.stack))
                .collect(),
            tunnel_v4: (0..topology.clients.len())
                .map(|i| Ipv4Addr::new(100, 64, 0, 2 + i as u8))
                .collect(),
            tunnel_v6: (0..topology.clients.len())
                .map(|i| Ipv6Addr::new(0xfd00, 0x2021, 0x1111, 0, 0, 0, 0, 2 + i as u16))
                .collect(),
        }
    }

    /// The client's source port of a UDP datagram to `dst_port`: `40000 + dst_port % 20000`.
    pub fn flood_source_port(index: u16) -> u16 {
        FLOOD_FIRST_PORT + index
    }

    pub fn udp_source_port(dst_port: u16) -> u16 {
        40000 + dst_port % 20000
    }

    /// The client's source port of TCP connection `conn`: the one its `tcp-open` step chose,
    /// else `30000 + conn`; none if that is not a port (past 65535, or 0).
    pub fn tcp_source_port(conn: u32, chosen: Option<u16>) -> Option<u16> {
        let port = match chosen {
            Some(port) => port,
            None => u16::try_from(30000 + u64::from(conn)).ok()?,
        };
        (port != 0).then_some(port)
    }

    /// The `n`-th DNS proxy IP handed to a client, in the family asked for.
    pub fn proxy_ip(n: usize, ipv6: bool) -> IpAddr {
        let n = n as u32 + 1;
        if ipv6 {
            IpAddr::V6(Ipv6Addr::new(
                0xfd00,
                0x2021,
                0x1111,
                0x8000,
                0,
                0,
                (n >> 16) as u16,
                n as u16,
            ))
        } else {
            IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 96, 0, 0)) + n))
        }
    }

    /// A client's outer (tunnel) socket after `roams` moves.
    pub fn client_socket(&self, client: usize, roams: u16) -> SocketAddr {
        SocketAddr::new(self.clients[client].preferred(), TUNNEL_PORT + roams)
    }

    /// Client `client`'s tunnel session: the id its frames carry and its MAC key, fixed by the
    /// client's place in the topology so that a run's frames are the same every time.
    pub fn session(client: usize) -> Session {
        Session {
            id: FIRST_SESSION_ID + client as u32,
            key: [client as u8 + 1; 32],
        }
    }

    /// The client whose session a frame's session id names, if it names one [`Self::session`]
    /// can make (keys exist for clients 0 to 254: `[i + 1; 32]`).
    pub fn client_of_session(session_id: u32) -> Option<usize> {
        let client = usize::try_from(session_id.checked_sub(FIRST_SESSION_ID)?).ok()?;
        (client < usize::from(u8::MAX)).then_some(client)
    }
}

/// Client 0's session id; client `i` has `FIRST_SESSION_ID + i`.
const FIRST_SESSION_ID: u32 = 1000;

/// A client's tunnel session, as the control plane hands it to the client and its gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub id: u32,
    /// The key of the frames' MAC (`proto::tunnel::SessionKey::new(key)`).
    pub key: [u8; 32],
}

/// Whether `ip` is in the resource ranges (198.51.100.0/24, 2001:db8:100::/48).
pub fn is_resource_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[..3] == [198, 51, 100],
        IpAddr::V6(v6) => v6.segments()[..3] == [0x2001, 0xdb8, 0x100],
    }
}

/// Parses a resource CIDR (`198.51.100.10/32`) inside the resource ranges.
pub fn parse_resource_cidr(text: &str) -> Result<(IpAddr, u8), String> {
    let (address, length) = text
        .split_once('/')
        .ok_or_else(|| format!("`{text}` is not a CIDR (address/length)"))?;
    let address: IpAddr = address
        .parse()
        .map_err(|_| format!("`{address}` is not an IP address"))?;
    let length: u8 = length
        .parse()
        .map_err(|_| format!("`{length}` is not a prefix length"))?;
    let (least, most) = match address {
        IpAddr::V4(_) => (24, 32),
        IpAddr::V6(_) => (48, 128),
    };
    if !(least..=most).contains(&length) {
        return Err(format!(
            "prefix length {length} must be {least} to {most} for this family"
        ));
    }
    if !is_resource_address(address) {
        return Err(format!(
            "`{text}` is outside the resource ranges 198.51.100.0/24 and 2001:db8:100::/48"
        ));
    }
    Ok((address, length))
}

/// Checks a domain or a pattern (`app.example.com`, `*.example.com`, `**.example.com`).
pub fn check_domain_pattern(pattern: &str) -> Result<(), String> {
    let rest = pattern
        .strip_prefix("**.")
        .or_else(|| pattern.strip_prefix("*."))
        .unwrap_or(pattern);
    let labels: Vec<&str> = rest.split('.').collect();
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if labels.len() < 2 || !labels.iter().all(|label| valid_label(label)) || pattern.len() > 253 {
        return Err(format!("`{pattern}` is not a domain name or pattern"));
    }
    Ok(())
}

/// Whether `name` matches `pattern`: an exact name, `*.` for exactly one more label, `**.` for
/// one or more.
pub fn domain_matches(pattern: &str, name: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let name = name.to_ascii_lowercase();
    if let Some(parent) = pattern.strip_prefix("**.") {
        name.strip_suffix(parent)
            .and_then(|head| head.strip_suffix('.'))
            .is_some_and(|head| !head.is_empty())
    } else if let Some(parent) = pattern.strip_prefix("*.") {
        name.strip_suffix(parent)
            .and_then(|head| head.strip_suffix('.'))
            .is_some_and(|head| !head.is_empty() && !head.contains('.'))
    } else {
        pattern == name
    }
}

/// A grant filter: a protocol and, for TCP and UDP, a port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Tcp { ports: (u16, u16) },
    Udp { ports: (u16, u16) },
    Icmp,
}

/// Parses `tcp`, `tcp/443`, `udp/5000-5999`, `icmp`.
pub fn parse_filter(text: &str) -> Result<Filter, String> {
    let (protocol, ports) = match text.split_once('/') {
        Some((protocol, ports)) => (protocol, Some(ports)),
        None => (text, None),
    };
    let ports = match ports {
        None => (1, u16::MAX),
        Some(ports) => {
            let (low, high) = ports.split_once('-').unwrap_or((ports, ports));
            let parse = |port: &str| {
                port.parse::<u16>()
                    .ok()
                    .filter(|&port| port > 0)
                    .ok_or_else(|| format!("`{port}` is not a port"))
            };
            let (low, high) = (parse(low)?, parse(high)?);
            if low > high {
                return Err(format!("port range `{ports}` runs backwards"));
            }
            (low, high)
        }
    };
    match protocol {
        "tcp" => Ok(Filter::Tcp { ports }),
        "udp" => Ok(Filter::Udp { ports }),
        "icmp" if text == "icmp" => Ok(Filter::Icmp),
        _ => Err(format!(
            "`{text}` is not a filter (tcp, udp or icmp, with /port or /low-high)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_one_label_or_any_depth() {
        assert!(domain_matches("app.example.com", "APP.example.com"));
        assert!(domain_matches("*.example.com", "a.example.com"));
        assert!(!domain_matches("*.example.com", "a.b.example.com"));
        assert!(!domain_matches("*.example.com", "example.com"));
        assert!(domain_matches("**.example.com", "a.b.example.com"));
        assert!(domain_matches("**.example.com", "a.example.com"));
        assert!(!domain_matches("**.example.com", "example.com"));
        assert!(!domain_matches("**.example.com", "badexample.com"));
    }

    #[test]
    fn filters_parse_and_reject() {
        assert_eq!(parse_filter("tcp"), Ok(Filter::Tcp { ports: (1, 65535) }));
        assert_eq!(parse_filter("udp/53"), Ok(Filter::Udp { ports: (53, 53) }));
        assert_eq!(
            parse_filter("tcp/80-443"),
            Ok(Filter::Tcp { ports: (80, 443) })
        );
        assert_eq!(parse_filter("icmp"), Ok(Filter::Icmp));
        assert!(parse_filter("icmp/1").is_err());
        assert!(parse_filter("tcp/443-80").is_err());
        assert!(parse_filter("sctp").is_err());
        assert!(parse_filter("udp/0").is_err());
    }

    #[test]
    fn cidrs_stay_in_the_resource_ranges() {
        assert!(parse_resource_cidr("198.51.100.10/32").is_ok());
        assert!(parse_resource_cidr("2001:db8:100::/64").is_ok());
        assert!(parse_resource_cidr("10.0.0.1/32").is_err());
        assert!(parse_resource_cidr("198.51.100.0/16").is_err());
        assert!(parse_resource_cidr("198.51.100.10").is_err());
    }

    #[test]
    fn proxy_ips_are_in_their_ranges() {
        assert_eq!(
            AddressPlan::proxy_ip(0, false),
            "100.96.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            AddressPlan::proxy_ip(0, true),
            "fd00:2021:1111:8000::1".parse::<IpAddr>().unwrap()
        );
    }
}
