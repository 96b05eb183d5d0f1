//! Grant filters: which protocols and destination ports of a resource a client may use.

use proto::flow::Protocol;

/// An inclusive range of destination ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// First port allowed.
    pub first: u16,
    /// Last port allowed (inclusive).
    pub last: u16,
}

impl PortRange {
    /// All ports.
    pub const ALL: PortRange = PortRange {
        first: 0,
        last: u16::MAX,
    };

    /// A single port.
    pub const fn single(port: u16) -> Self {
        Self {
            first: port,
            last: port,
        }
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

/// One allowed protocol (and for TCP/UDP, destination ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Filter {
    /// TCP to a destination port in the range.
    Tcp(PortRange),
    /// UDP to a destination port in the range.
    Udp(PortRange),
    /// ICMP / ICMPv6 echo.
    Icmp,
}

impl Filter {
    /// Whether this filter lets a packet of `protocol` to `dst_port` through (ICMP has no port).
    pub fn allows(&self, protocol: Protocol, dst_port: u16) -> bool {
        match (self, protocol) {
            (Filter::Tcp(range), Protocol::Tcp) | (Filter::Udp(range), Protocol::Udp) => {
                range.contains(dst_port)
            }
            (Filter::Icmp, Protocol::Icmp) => true,
            _ => false,
        }
    }
}

/// Whether a grant with `filters` allows the packet: no filters means everything is allowed,
/// otherwise any one filter must allow it.
pub fn grant_allows(filters: &[Filter], protocol: Protocol, dst_port: u16) -> bool {
    filters.is_empty() || filters.iter().any(|f| f.allows(protocol, dst_port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_filters_allow_everything() {
        assert!(grant_allows(&[], Protocol::Tcp, 1));
        assert!(grant_allows(&[], Protocol::Icmp, 0));
    }

    #[test]
    fn port_ranges_are_inclusive_and_per_protocol() {
        let f = [Filter::Tcp(PortRange {
            first: 80,
            last: 443,
        })];
        assert!(grant_allows(&f, Protocol::Tcp, 80));
        assert!(grant_allows(&f, Protocol::Tcp, 443));
        assert!(!grant_allows(&f, Protocol::Tcp, 444));
        assert!(!grant_allows(&f, Protocol::Udp, 80));
        assert!(!grant_allows(&f, Protocol::Icmp, 0));
        let g = [Filter::Udp(PortRange::single(53)), Filter::Icmp];
        assert!(grant_allows(&g, Protocol::Udp, 53));
        assert!(grant_allows(&g, Protocol::Icmp, 0));
        assert!(!grant_allows(&g, Protocol::Tcp, 53));
    }
}
