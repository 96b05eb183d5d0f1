//! The names and resources generated scenarios use: hosts, DNS names, grant filters and the
//! five resources a topology can have.

/// The names generated scenarios use.
pub(super) const CLIENTS: [&str; 3] = ["alice", "bob", "carol"];
pub(super) const GATEWAYS: [&str; 2] = ["gw", "gw2"];
pub(super) const RELAYS: [&str; 3] = ["r1", "r2", "r3"];
pub(super) const DOMAINS: [&str; 4] = [
    "api.example.com",
    "www.example.com",
    "db.internal.example.com",
    "cache.svc.example.net",
];

/// The filters of a filtered grant: some generated ports pass, others are denied.
pub(super) const FILTERS: [&str; 4] = ["tcp/443", "tcp/80", "udp/53", "udp/5000-5999"];

/// A resource of a generated topology.
pub(super) struct ResourceChoice {
    pub(super) name: &'static str,
    pub(super) gateway: usize,
    pub(super) address: &'static str,
    pub(super) dns: bool,
}

pub(super) const RESOURCES: [ResourceChoice; 5] = [
    ResourceChoice {
        name: "web",
        gateway: 0,
        address: "198.51.100.10/32",
        dns: false,
    },
    ResourceChoice {
        name: "app",
        gateway: 0,
        address: "**.example.com",
        dns: true,
    },
    ResourceChoice {
        name: "web6",
        gateway: 0,
        address: "2001:db8:100::10/128",
        dns: false,
    },
    ResourceChoice {
        name: "db",
        gateway: 1,
        address: "198.51.100.64/26",
        dns: false,
    },
    ResourceChoice {
        name: "svc",
        gateway: 1,
        address: "*.svc.example.net",
        dns: true,
    },
];
