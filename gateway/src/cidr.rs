//! IP prefixes (CIDR) for resources, and the fixed address ranges that tunnel IPs
//! (100.64.0.0/11, fd00:2021:1111::/107) and DNS proxy IPs (100.96.0.0/11,
//! fd00:2021:1111:8000::/107) come from (docs/flows.md, "Authorisation").

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 or IPv6 prefix. The address is stored with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpCidr {
    addr: IpAddr,
    prefix: u8,
}

/// A prefix length is too long for its address family, or the text is not `addr/len`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {0:?}: expected ADDRESS/LENGTH with LENGTH <= 32 (IPv4) or <= 128 (IPv6)")]
pub struct CidrError(pub String);

impl IpCidr {
    /// `addr/prefix`; host bits of `addr` are cleared.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, CidrError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(CidrError(format!("{addr}/{prefix}")));
        }
        Ok(Self {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` (same family) is inside this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpCidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrError(s.to_owned());
        let (addr, prefix) = s.split_once('/').ok_or_else(err)?;
        let addr: IpAddr = addr.parse().map_err(|_| err())?;
        let prefix: u8 = prefix.parse().map_err(|_| err())?;
        Self::new(addr, prefix).map_err(|_| err())
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> IpCidr {
    IpCidr {
        addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        prefix,
    }
}

const fn v6(segments: [u16; 8], prefix: u8) -> IpCidr {
    let [a, b, c, d, e, f, g, h] = segments;
    IpCidr {
        addr: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
        prefix,
    }
}

/// Client tunnel IPv4 addresses: 100.64.0.0/11.
pub const TUNNEL_V4: IpCidr = v4(100, 64, 0, 0, 11);
/// Client tunnel IPv6 addresses: fd00:2021:1111::/107.
pub const TUNNEL_V6: IpCidr = v6([0xfd00, 0x2021, 0x1111, 0, 0, 0, 0, 0], 107);
/// DNS proxy IPv4 addresses: 100.96.0.0/11.
pub const PROXY_V4: IpCidr = v4(100, 96, 0, 0, 11);
/// DNS proxy IPv6 addresses: fd00:2021:1111:8000::/107.
pub const PROXY_V6: IpCidr = v6([0xfd00, 0x2021, 0x1111, 0x8000, 0, 0, 0, 0], 107);

/// Whether `ip` is in the DNS proxy range of its family.
pub fn is_proxy_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(_) => PROXY_V4.contains(ip),
        IpAddr::V6(_) => PROXY_V6.contains(ip),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn contains_respects_prefix_and_family() {
        let c: IpCidr = "198.51.100.0/24".parse().unwrap();
        assert!(c.contains(ip("198.51.100.255")));
        assert!(!c.contains(ip("198.51.101.0")));
        assert!(!c.contains(ip("::ffff:198.51.100.1")));
        let all: IpCidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("1.2.3.4")));
        let host: IpCidr = "2001:db8:100::7/128".parse().unwrap();
        assert!(host.contains(ip("2001:db8:100::7")));
        assert!(!host.contains(ip("2001:db8:100::8")));
    }

    #[test]
    fn host_bits_are_cleared_and_bad_prefixes_refused() {
        assert_eq!(
            "10.1.2.3/8".parse::<IpCidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert!("10.0.0.0/33".parse::<IpCidr>().is_err());
        assert!("::/129".parse::<IpCidr>().is_err());
        assert!("10.0.0.0".parse::<IpCidr>().is_err());
    }

    #[test]
    fn design_ranges() {
        assert!(TUNNEL_V4.contains(ip("100.64.0.1")));
        assert!(TUNNEL_V4.contains(ip("100.95.255.255")));
        assert!(!TUNNEL_V4.contains(ip("100.96.0.1")));
        assert!(is_proxy_ip(ip("100.96.0.1")));
        assert!(is_proxy_ip(ip("100.127.255.255")));
        assert!(!is_proxy_ip(ip("100.128.0.0")));
        assert!(TUNNEL_V6.contains(ip("fd00:2021:1111::1f:ffff")));
        assert!(!TUNNEL_V6.contains(ip("fd00:2021:1111::20:0")));
        assert!(is_proxy_ip(ip("fd00:2021:1111:8000::1")));
        assert!(!is_proxy_ip(ip("fd00:2021:1111::1")));
    }
}
