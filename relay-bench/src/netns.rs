//! The bench's network: four namespaces of its own (`netns-kit`, removed on drop), with veths
//! through a router, as in `relay-server/tests/xdp_netns.rs`. Nothing in them has a route out,
//! so no datagram of the bench leaves them.
//!
//! ```text
//! client ns  10.202.1.2 --- 10.202.1.254 \
//!                                         router ns (forwarding) --- 10.202.0.254 --- 10.202.0.1  relay ns (eth0)
//! peer ns    10.202.2.2 --- 10.202.2.254 /
//! ```

use std::{collections::BTreeMap, net::Ipv4Addr, process::Command, time::Duration};

use anyhow::{Context, Result, anyhow, bail};
use netns_kit::{Namespaces, SubnetLink, TxChecksum};

use super::process::{self, output_within};

pub const RELAY: Ipv4Addr = Ipv4Addr::new(10, 202, 0, 1);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 202, 1, 2);
pub const PEER: Ipv4Addr = Ipv4Addr::new(10, 202, 2, 2);

/// How long one `ip`, `ethtool` or `sysctl` may take.
const COMMAND_LIMIT: Duration = Duration::from_secs(10);

/// A namespace of the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Router,
    Relay,
    Client,
    Peer,
}

impl Role {
    const ALL: [Self; 4] = [Self::Router, Self::Relay, Self::Client, Self::Peer];

    fn name(self) -> &'static str {
        match self {
            Self::Router => "router",
            Self::Relay => "relay",
            Self::Client => "client",
            Self::Peer => "peer",
        }
    }
}

/// The bench's namespaces; dropping it deletes them, and with them every veth, every XDP
/// attachment and every socket still open in them.
#[derive(Debug)]
pub struct Topology(Namespaces);

impl Topology {
    /// Builds the topology above, under a prefix naming this process. On failure, whatever
    /// was created is removed again.
    pub fn create() -> Result<Self> {
        let mut namespaces = Namespaces::new("xtask-bench");
        for role in Role::ALL {
            process::check_interrupt()?;
            namespaces.add(role.name())?;
        }
        let topology = Self(namespaces);
        let router = topology.name(Role::Router);
        for (role, subnet, host) in [
            (Role::Relay, 0, 1),
            (Role::Client, 1, 2),
            (Role::Peer, 2, 2),
        ] {
            process::check_interrupt()?;
            // The hosts checksum in software, as a host behind a NIC does: the XDP program
            // updates checksums incrementally, as for frames off a real NIC, which arrive
            // complete (xdp_netns.rs found this; every mode runs on the same setup).
            SubnetLink {
                host_ns: &topology.name(role),
                addresses: &[Ipv4Addr::new(10, 202, subnet, host)],
                router_ns: &router,
                router_side: &format!("to-{}", role.name()),
                router_address: Ipv4Addr::new(10, 202, subnet, 254),
                prefix: 24,
                tx: TxChecksum::Software,
            }
            .create()?;
        }
        topology.run_in(
            Role::Router,
            &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
        )?;
        Ok(topology)
    }

    /// The namespace's name, e.g. `xtask-bench-4242-relay`.
    pub fn name(&self, role: Role) -> String {
        self.0.name(role.name())
    }

    /// A command that runs `program` inside namespace `role` (`ip netns exec` execs it, so the
    /// child's pid is the program's own).
    pub fn command_in(&self, role: Role, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name(role), program]);
        command
    }

    /// Runs `args` inside namespace `role` and returns what it printed.
    pub fn run_in(&self, role: Role, args: &[&str]) -> Result<String> {
        let (program, rest) = args.split_first().context("no command")?;
        let mut command = self.command_in(role, program);
        command.args(rest);
        Ok(output_within(&mut command, COMMAND_LIMIT)?.stdout)
    }

    /// Runs `f` on a thread inside namespace `role`: sockets it opens live there (and stay
    /// there wherever they are used afterwards).
    pub fn inside<T: Send + 'static>(
        &self,
        role: Role,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let name = self.name(role);
        std::thread::Builder::new()
            .name(format!("in-{}", role.name()))
            .spawn(move || netns_kit::inside(&name, || Ok(f()))?)
            .context("cannot start a thread")?
            .join()
            .map_err(|_| anyhow!("a thread in the {} namespace panicked", role.name()))?
    }

    /// The UDP counters of namespace `role` (`/proc/net/snmp`, `Udp:`), e.g. `InDatagrams`,
    /// `RcvbufErrors`.
    pub fn udp_counters(&self, role: Role) -> Result<BTreeMap<String, u64>> {
        let snmp = self.run_in(role, &["cat", "/proc/net/snmp"])?;
        parse_udp_counters(&snmp)
    }

    /// How the XDP program is attached to the relay's eth0, if it is: `native` or `generic`.
    pub fn relay_xdp_attachment(&self) -> Result<Option<&'static str>> {
        let link = self.run_in(Role::Relay, &["ip", "link", "show", "dev", "eth0"])?;
        Ok(xdp_attachment(&link))
    }

    /// XDP_TX frames the relay's eth0 could not pass on (`ethtool -S`, every queue).
    pub fn relay_xdp_tx_errors(&self) -> Result<u64> {
        let statistics = self.run_in(Role::Relay, &["ethtool", "-S", "eth0"])?;
        Ok(statistics
            .lines()
            .filter_map(|line| line.trim().split_once(": "))
            .filter(|(name, _)| name.ends_with("xdp_tx_errors"))
            .filter_map(|(_, value)| value.trim().parse::<u64>().ok())
            .sum())
    }
}

/// The `Udp:` counters of a `/proc/net/snmp` text: a line of names, then a line of values.
fn parse_udp_counters(snmp: &str) -> Result<BTreeMap<String, u64>> {
    let mut udp_lines = snmp.lines().filter(|line| line.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp_lines.next(), udp_lines.next()) else {
        bail!("no Udp: lines in /proc/net/snmp");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .skip(1)
        .map(|(name, value)| {
            let value = value
                .parse::<u64>()
                .with_context(|| format!("Udp {name} = `{value}`"))?;
            Ok((name.to_owned(), value))
        })
        .collect()
}

/// How `ip link show` says an XDP program is attached: `xdpgeneric` (generic, skb mode),
/// `xdpoffload`, or `xdp` (native, in the driver).
fn xdp_attachment(link: &str) -> Option<&'static str> {
    let words: Vec<&str> = link.split_whitespace().collect();
    if words.contains(&"xdpgeneric") {
        Some("generic")
    } else if words.contains(&"xdpoffload") {
        Some("offload")
    } else if words.contains(&"xdp") || words.contains(&"xdpdrv") {
        Some("native")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_counters_are_read_by_name() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors\n\
                    Udp: 120 3 7 118 7\nUdpLite: InDatagrams\nUdpLite: 0\n";
        let counters = parse_udp_counters(snmp).expect("parsed");
        assert_eq!(counters["InDatagrams"], 120);
        assert_eq!(counters["RcvbufErrors"], 7);
        assert_eq!(counters.len(), 5);
    }

    #[test]
    fn the_attachment_is_read_from_ip_link() {
        let generic = "2: eth0@if3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 xdpgeneric qdisc \
                       noqueue\n    link/ether 0a:1b brd ff:ff\n    prog/xdp id 42";
        assert_eq!(xdp_attachment(generic), Some("generic"));
        let native = "2: eth0@if3: <UP> mtu 1500 xdp qdisc noqueue\n    prog/xdp id 43";
        assert_eq!(xdp_attachment(native), Some("native"));
        assert_eq!(
            xdp_attachment("2: eth0@if3: <UP> mtu 1500 qdisc noqueue"),
            None
        );
    }
}
