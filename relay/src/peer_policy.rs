//! Which peer addresses an allocation may reach. A relay forwards for anyone holding
//! credentials, so without a policy it is a way into the relay host's own services and its
//! neighbours (loopback, link-local metadata services: the CVE-2020-26262 class). Like coturn's
//! `--denied-peer-ip` / `--allowed-peer-ip`: some ranges are always denied unless an operator
//! allows them, operators add denied ranges, and an allowed range wins over a denied one.

use std::net::IpAddr;

use ipnet::IpNet;

/// The peer address policy. The default denies only [`PeerPolicy::ALWAYS_DENIED`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerPolicy {
    /// Ranges refused beside the always-denied ones (`--denied-peer-ip`).
    pub denied: Vec<IpNet>,
    /// Ranges allowed even when denied (`--allowed-peer-ip`).
    pub allowed: Vec<IpNet>,
}

impl PeerPolicy {
    /// Denied unless allowed: loopback, unspecified, multicast and link-local, in both
    /// families, plus IPv4's limited broadcast and "this network".
    pub const ALWAYS_DENIED: [&'static str; 9] = [
        "127.0.0.0/8",
        "0.0.0.0/8",
        "169.254.0.0/16",
        "224.0.0.0/4",
        "255.255.255.255/32",
        "::1/128",
        "::/128",
        "fe80::/10",
        "ff00::/8",
    ];

    /// Whether an allocation may send to (and hear from) `peer`. An IPv4-mapped IPv6 address
    /// is judged as the IPv4 address it carries.
    pub fn permits(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        if self.allowed.iter().any(|range| range.contains(&peer)) {
            return true;
        }
        let always = Self::ALWAYS_DENIED
            .iter()
            .filter_map(|range| range.parse::<IpNet>().ok());
        !always
            .chain(self.denied.iter().copied())
            .any(|range| range.contains(&peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn the_default_denies_the_relay_hosts_own_and_link_scoped_addresses() {
        let policy = PeerPolicy::default();
        for denied in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "169.254.169.254",
            "224.0.0.251",
            "239.1.2.3",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!policy.permits(ip(denied)), "{denied} must be denied");
        }
        for permitted in ["198.51.100.7", "10.0.0.1", "192.168.1.1", "2001:db8::7"] {
            assert!(
                policy.permits(ip(permitted)),
                "{permitted} must be permitted"
            );
        }
    }

    #[test]
    fn operators_deny_more_and_an_allowed_range_wins() {
        let policy = PeerPolicy {
            denied: vec![
                "10.0.0.0/8".parse().unwrap(),
                "2001:db8:bad::/48".parse().unwrap(),
            ],
            allowed: vec![
                "10.1.0.0/16".parse().unwrap(),
                "127.0.0.2/32".parse().unwrap(),
            ],
        };
        assert!(!policy.permits(ip("10.2.3.4")));
        assert!(
            policy.permits(ip("10.1.3.4")),
            "allowed inside a denied range"
        );
        assert!(
            policy.permits(ip("127.0.0.2")),
            "allowed inside an always-denied range"
        );
        assert!(!policy.permits(ip("127.0.0.1")));
        assert!(!policy.permits(ip("2001:db8:bad::1")));
        assert!(policy.permits(ip("2001:db8:600d::1")));
    }
}
