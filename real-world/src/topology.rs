//! A scenario's hosts as network namespaces, wired the way the simulation wires them:
//!
//! ```text
//!   client ns (eth0) ─┐
//!   relay ns  (eth0) ─┤── router ns (forwards; one veth per host) ──┬─ dns ns (eth0)
//!   gateway ns(eth0) ─┘                                             │
//!        └─ tun0 (gateway-server) ── res0 ── resource ns (eth0: every resource IP of that gateway)
//! ```
//!
//! Every host keeps the address the simulation gives it ([`AddressPlan`]), as a /32 or /128 on
//! its `eth0`, with a default route to the router through link-local next hops (169.254.0.1,
//! fe80::1; behind a gateway, 169.254.1.1 and fe80::2:1), so the whole run stays inside these
//! namespaces: nothing has a route out. Senders
//! checksum in software (`ethtool -K eth0 tx off`): the XDP program rewrites headers with
//! incremental checksums and needs complete ones, as a NIC delivers them (docs/harness.md,
//! "Real networking").

use std::net::IpAddr;

use scenario_format::{
    ResourceAddress, Scenario, Step,
    plan::{self, AddressPlan, HostAddresses},
};

use crate::{
    RealError,
    netns::{Namespaces, TxChecksum, ip, run, veth},
};

const ROUTER_V4: &str = "169.254.0.1";
const ROUTER_V6: &str = "fe80::1";
/// The gateway's side of the link to its resources: not the router's addresses, which the
/// gateway namespace must not hold (it would take the router's ARP requests for its own).
const RESOURCE_HOP_V4: &str = "169.254.1.1";
const RESOURCE_HOP_V6: &str = "fe80::2:1";

/// The name of every host's namespace, by topology index.
#[derive(Debug, Clone)]
pub struct Topology {
    pub router: String,
    pub dns: String,
    pub relays: Vec<String>,
    pub gateways: Vec<String>,
    /// The namespace behind each gateway's TUN side that holds its resources.
    pub resources: Vec<String>,
    pub clients: Vec<String>,
    /// The router's side of every host's link (`to-<role>`).
    pub router_links: Vec<String>,
}

impl Topology {
    /// Creates every namespace and link of `scenario`.
    pub fn build(
        namespaces: &mut Namespaces,
        scenario: &Scenario,
        plan: &AddressPlan,
    ) -> Result<Self, RealError> {
        let router = namespaces.add("router")?;
        for setting in [
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            // Datagrams leave the router by another link than they came in on (links0).
            "net.ipv4.conf.all.send_redirects=0",
        ] {
            run("ip", &["netns", "exec", &router, "sysctl", "-qw", setting])?;
        }
        let mut router_links = Vec::new();
        let mut attach = |role: String, addresses: HostAddresses| -> Result<String, RealError> {
            let ns = namespaces.add(&role)?;
            link_to_router(&ns, &router, &role, addresses)?;
            router_links.push(format!("to-{role}"));
            Ok(ns)
        };
        let dns = attach(
            "dns".into(),
            HostAddresses {
                v4: Some(plan::DNS_SERVER_V4),
                v6: Some(plan::DNS_SERVER_V6),
            },
        )?;
        let relays = (0..plan.relays.len())
            .map(|i| attach(format!("r{i}"), plan.relays[i]))
            .collect::<Result<Vec<_>, _>>()?;
        let gateways = (0..plan.gateways.len())
            .map(|i| attach(format!("g{i}"), plan.gateways[i]))
            .collect::<Result<Vec<_>, _>>()?;
        let clients = (0..plan.clients.len())
            .map(|i| attach(format!("c{i}"), plan.clients[i]))
            .collect::<Result<Vec<_>, _>>()?;
        let mut resources = Vec::new();
        for (index, gateway_ns) in gateways.iter().enumerate() {
            let ns = namespaces.add(&format!("g{index}-res"))?;
            link_resources(
                gateway_ns,
                &ns,
                &resource_ips(scenario, &scenario.topology.gateways[index].name),
            )?;
            resources.push(ns);
        }
        Ok(Self {
            router,
            dns,
            relays,
            gateways,
            resources,
            clients,
            router_links,
        })
    }
}

/// A veth between `ns` (`eth0`, the host's addresses) and the router (`to-<role>`).
fn link_to_router(
    ns: &str,
    router: &str,
    role: &str,
    addresses: HostAddresses,
) -> Result<(), RealError> {
    let router_side = format!("to-{role}");
    veth(ns, "eth0", router, &router_side, TxChecksum::Software)?;
    ip(&[
        "-n",
        router,
        "addr",
        "add",
        &format!("{ROUTER_V4}/32"),
        "dev",
        &router_side,
    ])?;
    ip(&[
        "-n",
        router,
        "addr",
        "add",
        &format!("{ROUTER_V6}/64"),
        "dev",
        &router_side,
        "nodad",
    ])?;
    if let Some(v4) = addresses.v4 {
        ip(&["-n", ns, "addr", "add", &format!("{v4}/32"), "dev", "eth0"])?;
        ip(&[
            "-n", ns, "route", "add", "default", "via", ROUTER_V4, "dev", "eth0", "onlink",
        ])?;
        ip(&[
            "-n",
            router,
            "route",
            "add",
            &format!("{v4}/32"),
            "dev",
            &router_side,
        ])?;
    }
    if let Some(v6) = addresses.v6 {
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{v6}/128"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        ip(&[
            "-n", ns, "-6", "route", "add", "default", "via", ROUTER_V6, "dev", "eth0",
        ])?;
        ip(&[
            "-n",
            router,
            "-6",
            "route",
            "add",
            &format!("{v6}/128"),
            "dev",
            &router_side,
        ])?;
    }
    Ok(())
}

/// The resource namespace behind a gateway: a veth (`res0` in the gateway's namespace, `eth0`
/// in the resources'), every resource IP on it, and routes both ways; the gateway's side
/// forwards between `res0` and its TUN device, which the runner creates (`tun0`) for
/// gateway-server to attach to. Client tunnel IPs and proxy IPs route into `tun0`.
fn link_resources(gateway_ns: &str, ns: &str, ips: &[IpAddr]) -> Result<(), RealError> {
    for setting in [
        "net.ipv4.ip_forward=1",
        "net.ipv6.conf.all.forwarding=1",
        "net.ipv4.conf.all.rp_filter=0",
    ] {
        run(
            "ip",
            &["netns", "exec", gateway_ns, "sysctl", "-qw", setting],
        )?;
    }
    veth(ns, "eth0", gateway_ns, "res0", TxChecksum::Offload)?;
    ip(&[
        "-n",
        gateway_ns,
        "addr",
        "add",
        &format!("{RESOURCE_HOP_V4}/32"),
        "dev",
        "res0",
    ])?;
    ip(&[
        "-n",
        gateway_ns,
        "addr",
        "add",
        &format!("{RESOURCE_HOP_V6}/64"),
        "dev",
        "res0",
        "nodad",
    ])?;
    ip(&[
        "-n",
        ns,
        "route",
        "add",
        "default",
        "via",
        RESOURCE_HOP_V4,
        "dev",
        "eth0",
        "onlink",
    ])?;
    ip(&[
        "-n",
        ns,
        "-6",
        "route",
        "add",
        "default",
        "via",
        RESOURCE_HOP_V6,
        "dev",
        "eth0",
    ])?;
    for address in ips {
        let (prefix, family) = match address {
            IpAddr::V4(_) => (32, "-4"),
            IpAddr::V6(_) => (128, "-6"),
        };
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{address}/{prefix}"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        ip(&[
            "-n",
            gateway_ns,
            family,
            "route",
            "add",
            &format!("{address}/{prefix}"),
            "dev",
            "res0",
        ])?;
    }
    // No IPv6 address of its own and no router role on it (the namespace forwards between
    // its links all the same), so the kernel sends nothing into the gateway on its own: no
    // router solicitation, and no MLD report for the all-routers group, which the gateway
    // would count as `unsupported-protocol` drops. A deployment configures its TUN device
    // like this. The router role is off from the device's creation: turned off later, the
    // kernel reports leaving the group instead.
    let sysctl = |setting: &str| {
        run(
            "ip",
            &["netns", "exec", gateway_ns, "sysctl", "-qw", setting],
        )
    };
    sysctl("net.ipv6.conf.default.forwarding=0")?;
    ip(&[
        "-n", gateway_ns, "tuntap", "add", "dev", "tun0", "mode", "tun",
    ])?;
    sysctl("net.ipv6.conf.default.forwarding=1")?;
    ip(&[
        "-n",
        gateway_ns,
        "link",
        "set",
        "tun0",
        "addrgenmode",
        "none",
    ])?;
    ip(&["-n", gateway_ns, "link", "set", "tun0", "up"])?;
    for range in ["100.64.0.0/10", "fd00:2021:1111::/48"] {
        ip(&["-n", gateway_ns, "route", "add", range, "dev", "tun0"])?;
    }
    Ok(())
}

/// Every address a resource of gateway `name` answers on: the first address of each CIDR
/// resource (where the steps send), and every address the DNS records (or a `dns-change`)
/// give a name that one of its DNS resources matches.
pub fn resource_ips(scenario: &Scenario, name: &str) -> Vec<IpAddr> {
    let mut ips = Vec::new();
    for resource in scenario
        .topology
        .resources
        .iter()
        .filter(|r| r.gateway == name)
    {
        match &resource.address {
            ResourceAddress::Cidr(cidr) => {
                if let Ok((ip, _)) = plan::parse_resource_cidr(cidr) {
                    ips.push(ip);
                }
            }
            ResourceAddress::Dns(pattern) => {
                for record in &scenario.topology.dns_records {
                    if plan::domain_matches(pattern, &record.name) {
                        ips.extend(record.addresses.iter().copied());
                    }
                }
                for step in &scenario.steps {
                    if let Step::DnsChange { name, addresses } = step
                        && plan::domain_matches(pattern, name)
                    {
                        ips.extend(addresses.iter().copied());
                    }
                }
            }
        }
    }
    ips.sort();
    ips.dedup();
    ips
}
