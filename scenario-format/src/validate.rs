//! Validation: every name a scenario refers to exists, every value is in range, and every step
//! makes sense where it stands (a TCP step needs an open connection, a relayed path needs
//! relays). Errors say where (`steps[3]`, `topology.grants[0]`) and what is wrong.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use crate::{
    AttackKind, DnsRecord, Latency, PathMode, ResourceAddress, ResourceSpec, Scenario, Stack, Step,
    StrayKind, Target, plan,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {message}")]
pub struct ValidationError {
    /// Where: `topology.grants[1]`, `steps[4]`.
    pub at: String,
    pub message: String,
    /// The step index, when a step is at fault (to find its line in the file).
    pub step: Option<usize>,
    /// A name to look for in the file when no step is at fault.
    pub token: Option<String>,
}

impl ValidationError {
    fn topology(at: impl Into<String>, token: &str, message: impl Into<String>) -> Self {
        Self {
            at: at.into(),
            message: message.into(),
            step: None,
            token: Some(token.to_owned()),
        }
    }

    fn step(index: usize, message: impl Into<String>) -> Self {
        Self {
            at: format!("steps[{index}]"),
            message: message.into(),
            step: Some(index),
            token: None,
        }
    }

    /// The 1-based line of `text` the error points at (1 if it cannot tell).
    pub fn line_in(&self, text: &str) -> usize {
        let lines: Vec<&str> = text.lines().collect();
        if let Some(index) = self.step {
            let start = lines.iter().position(|line| line.trim_start() == "steps:");
            if let Some(start) = start {
                let items: Vec<usize> = lines
                    .iter()
                    .enumerate()
                    .skip(start + 1)
                    .filter(|(_, line)| line.trim_start().starts_with("- "))
                    .filter(|(_, line)| {
                        let indent = line.len() - line.trim_start().len();
                        indent <= 2
                    })
                    .map(|(number, _)| number + 1)
                    .collect();
                if let Some(line) = items.get(index) {
                    return *line;
                }
            }
        }
        if let Some(token) = &self.token {
            let quoted = [
                format!(" {token}"),
                format!("\"{token}\""),
                format!("'{token}'"),
            ];
            if let Some(number) = lines
                .iter()
                .position(|line| quoted.iter().any(|form| line.contains(form.as_str())))
            {
                return number + 1;
            }
        }
        1
    }
}

struct Names<'a> {
    clients: BTreeMap<&'a str, Stack>,
    gateways: BTreeMap<&'a str, Stack>,
    relays: BTreeMap<&'a str, Stack>,
    resources: BTreeMap<&'a str, &'a ResourceAddress>,
    client_relay: BTreeMap<&'a str, Option<&'a str>>,
    gateway_relay: BTreeMap<&'a str, Option<&'a str>>,
}

pub(crate) fn validate(scenario: &Scenario) -> Result<(), ValidationError> {
    let topology = &scenario.topology;
    if scenario.name.trim().is_empty() {
        return Err(ValidationError::topology(
            "name",
            "name",
            "the scenario needs a name",
        ));
    }
    check_counts(scenario)?;
    let names = collect_names(scenario)?;
    for (index, resource) in topology.resources.iter().enumerate() {
        check_resource(&names, resource, format!("topology.resources[{index}]"))?;
    }
    for (index, record) in topology.dns_records.iter().enumerate() {
        check_dns_record(record, format!("topology.dns_records[{index}]"))?;
    }
    for (index, grant) in topology.grants.iter().enumerate() {
        check_grant(&names, grant, &format!("topology.grants[{index}]"))?;
    }
    check_latency(&names, &topology.latency)?;
    check_steps(scenario, &names)
}

fn check_resource(
    names: &Names<'_>,
    resource: &ResourceSpec,
    at: String,
) -> Result<(), ValidationError> {
    names
        .check_gateway(&resource.gateway)
        .map_err(|message| ValidationError::topology(&at, &resource.gateway, message))?;
    match &resource.address {
        ResourceAddress::Cidr(cidr) => {
            plan::parse_resource_cidr(cidr)
                .map_err(|message| ValidationError::topology(at, cidr, message))?;
        }
        ResourceAddress::Dns(pattern) => {
            plan::check_domain_pattern(pattern)
                .map_err(|message| ValidationError::topology(at, pattern, message))?;
        }
    }
    Ok(())
}

fn check_dns_record(record: &DnsRecord, at: String) -> Result<(), ValidationError> {
    if record.addresses.is_empty() {
        return Err(ValidationError::topology(
            at,
            &record.name,
            "a DNS record needs an address",
        ));
    }
    for address in &record.addresses {
        if !plan::is_resource_address(*address) {
            return Err(ValidationError::topology(
                at,
                &record.name,
                format!(
                    "{address} is outside the resource ranges 198.51.100.0/24 and 2001:db8:100::/48"
                ),
            ));
        }
    }
    Ok(())
}

/// Every link between hosts that exist, and every latency at least 1 ms.
fn check_latency(names: &Names<'_>, latency: &Latency) -> Result<(), ValidationError> {
    for (index, link) in latency.links.iter().enumerate() {
        let at = format!("topology.latency.links[{index}]");
        for host in &link.between {
            names
                .check_host(host)
                .map_err(|message| ValidationError::topology(&at, host, message))?;
        }
        if link.ms == 0 {
            return Err(ValidationError::topology(
                at,
                &link.between[0],
                "latency must be at least 1 ms",
            ));
        }
    }
    if latency.default_ms == 0 {
        return Err(ValidationError::topology(
            "topology.latency",
            "default_ms",
            "latency must be at least 1 ms",
        ));
    }
    Ok(())
}

fn check_counts(scenario: &Scenario) -> Result<(), ValidationError> {
    let topology = &scenario.topology;
    let counts = [
        ("clients", topology.clients.len(), 1, 3),
        ("gateways", topology.gateways.len(), 1, 2),
        ("relays", topology.relays.len(), 0, 3),
        ("resources", topology.resources.len(), 1, 16),
    ];
    for (what, count, least, most) in counts {
        if count < least || count > most {
            return Err(ValidationError::topology(
                format!("topology.{what}"),
                what,
                format!("{count} {what}; a scenario has {least} to {most}"),
            ));
        }
    }
    Ok(())
}

impl<'a> Names<'a> {
    fn is_host(&self, name: &str) -> bool {
        self.clients.contains_key(name)
            || self.gateways.contains_key(name)
            || self.relays.contains_key(name)
    }

    fn check_client(&self, name: &str) -> Result<(), String> {
        known(self.clients.contains_key(name), "client", name)
    }

    fn check_gateway(&self, name: &str) -> Result<(), String> {
        known(self.gateways.contains_key(name), "gateway", name)
    }

    fn check_resource(&self, name: &str) -> Result<(), String> {
        self.resource(name).map(|_| ())
    }

    fn resource(&self, name: &str) -> Result<&'a ResourceAddress, String> {
        let address = self.resources.get(name).copied();
        address.ok_or_else(|| format!("no resource named `{name}`"))
    }

    fn check_host(&self, name: &str) -> Result<(), String> {
        known(self.is_host(name), "host", name)
    }
}

/// An error unless the `kind` (client, gateway, ...) named `name` is `known`.
fn known(known: bool, kind: &str, name: &str) -> Result<(), String> {
    if known {
        Ok(())
    } else {
        Err(format!("no {kind} named `{name}`"))
    }
}

fn collect_names(scenario: &Scenario) -> Result<Names<'_>, ValidationError> {
    let topology = &scenario.topology;
    let mut seen = BTreeSet::new();
    let mut unique = |name: &str, at: String| {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(ValidationError::topology(
                at,
                name,
                format!("`{name}` is not a name (letters, digits and `-`)"),
            ));
        }
        if !seen.insert(name.to_owned()) {
            return Err(ValidationError::topology(
                at,
                name,
                format!("`{name}` is used twice"),
            ));
        }
        Ok(())
    };
    for (index, relay) in topology.relays.iter().enumerate() {
        unique(&relay.name, format!("topology.relays[{index}]"))?;
    }
    for (index, client) in topology.clients.iter().enumerate() {
        unique(&client.name, format!("topology.clients[{index}]"))?;
    }
    for (index, gateway) in topology.gateways.iter().enumerate() {
        unique(&gateway.name, format!("topology.gateways[{index}]"))?;
    }
    for (index, resource) in topology.resources.iter().enumerate() {
        unique(&resource.name, format!("topology.resources[{index}]"))?;
    }
    let relays: BTreeMap<&str, Stack> = topology
        .relays
        .iter()
        .map(|relay| (relay.name.as_str(), relay.stack))
        .collect();
    let check_relay = |relay: &Option<String>, at: String| match relay {
        Some(name) if !relays.contains_key(name.as_str()) => Err(ValidationError::topology(
            at,
            name,
            format!("no relay named `{name}`"),
        )),
        _ => Ok(()),
    };
    for (index, client) in topology.clients.iter().enumerate() {
        check_relay(&client.relay, format!("topology.clients[{index}]"))?;
    }
    for (index, gateway) in topology.gateways.iter().enumerate() {
        check_relay(&gateway.relay, format!("topology.gateways[{index}]"))?;
    }
    Ok(Names {
        clients: topology
            .clients
            .iter()
            .map(|c| (c.name.as_str(), c.stack))
            .collect(),
        gateways: topology
            .gateways
            .iter()
            .map(|g| (g.name.as_str(), g.stack))
            .collect(),
        relays,
        resources: topology
            .resources
            .iter()
            .map(|r| (r.name.as_str(), &r.address))
            .collect(),
        client_relay: topology
            .clients
            .iter()
            .map(|c| (c.name.as_str(), c.relay.as_deref()))
            .collect(),
        gateway_relay: topology
            .gateways
            .iter()
            .map(|g| (g.name.as_str(), g.relay.as_deref()))
            .collect(),
    })
}

fn check_grant(names: &Names<'_>, grant: &crate::Grant, at: &str) -> Result<(), ValidationError> {
    names
        .check_client(&grant.client)
        .map_err(|message| ValidationError::topology(at, &grant.client, message))?;
    names
        .check_resource(&grant.resource)
        .map_err(|message| ValidationError::topology(at, &grant.resource, message))?;
    for filter in &grant.filters {
        plan::parse_filter(filter)
            .map_err(|message| ValidationError::topology(at, filter, message))?;
    }
    Ok(())
}

fn check_target(names: &Names<'_>, target: &Target) -> Result<(), String> {
    names.check_client(&target.client)?;
    let address = names.resource(&target.resource)?;
    if target.port == 0 {
        return Err("port 0 is not a destination".to_owned());
    }
    match (address, &target.domain) {
        (ResourceAddress::Dns(pattern), Some(domain)) => {
            if !plan::domain_matches(pattern, domain) {
                return Err(format!(
                    "`{domain}` does not match the resource's pattern `{pattern}`"
                ));
            }
        }
        (ResourceAddress::Dns(pattern), None) => {
            return Err(format!(
                "`{}` is a DNS resource (`{pattern}`): say which `domain`",
                target.resource
            ));
        }
        (ResourceAddress::Cidr(_), Some(_)) => {
            return Err(format!(
                "`{}` is a CIDR resource: it has no domain",
                target.resource
            ));
        }
        (ResourceAddress::Cidr(cidr), None) => {
            let is_v6 = cidr.contains(':');
            if is_v6 != target.ipv6 {
                return Err(format!(
                    "`{}` is an IPv{} resource but the step says ipv6: {}",
                    target.resource,
                    if is_v6 { 6 } else { 4 },
                    target.ipv6
                ));
            }
        }
    }
    Ok(())
}

fn check_path(
    names: &Names<'_>,
    client: &str,
    gateway: &str,
    mode: PathMode,
) -> Result<(), String> {
    let client_relay = *names
        .client_relay
        .get(client)
        .ok_or_else(|| format!("no client named `{client}`"))?;
    let gateway_relay = *names
        .gateway_relay
        .get(gateway)
        .ok_or_else(|| format!("no gateway named `{gateway}`"))?;
    fn need<'a>(relay: Option<&'a str>, who: &str, mode: PathMode) -> Result<&'a str, String> {
        relay.ok_or_else(|| format!("{mode:?} needs a relay for `{who}`"))
    }
    match mode {
        PathMode::Direct => {}
        PathMode::ClientRelayed => {
            need(client_relay, client, mode)?;
        }
        PathMode::GatewayRelayed => {
            need(gateway_relay, gateway, mode)?;
        }
        PathMode::SameRelay => {
            if need(client_relay, client, mode)? != need(gateway_relay, gateway, mode)? {
                return Err("same-relay needs the client and the gateway on one relay".to_owned());
            }
        }
        PathMode::DifferentRelays => {
            if need(client_relay, client, mode)? == need(gateway_relay, gateway, mode)? {
                return Err(
                    "different-relays needs the client and the gateway on two relays".to_owned(),
                );
            }
        }
    }
    Ok(())
}

fn check_steps(scenario: &Scenario, names: &Names<'_>) -> Result<(), ValidationError> {
    let mut connections = Connections::default();
    for (index, step) in scenario.steps.iter().enumerate() {
        if let Step::Grant(grant) = step {
            // Checked as a grant of the topology is, but pointing at the step.
            check_grant(names, grant, &format!("steps[{index}]")).map_err(|error| {
                ValidationError {
                    step: Some(index),
                    ..error
                }
            })?;
        } else {
            check_step(names, &mut connections, step)
                .and_then(|()| check_attack_fits(scenario, step))
                .map_err(|message| ValidationError::step(index, message))?;
        }
    }
    Ok(())
}

/// An attack's rounds all end inside its step at the topology's default latency.
fn check_attack_fits(scenario: &Scenario, step: &Step) -> Result<(), String> {
    let Step::Attack { kind, .. } = step else {
        return Ok(());
    };
    let latency = scenario.topology.latency.default_ms;
    let needed = kind.rounds() as u64 * AttackKind::round_ms(latency);
    if needed >= crate::timing::STEP_MS {
        return Err(format!(
            "attack {} takes {needed} ms at {latency} ms latency, more than a step",
            kind.as_str()
        ));
    }
    Ok(())
}

/// What is wrong with a step other than a grant (which [`check_steps`] checks), if anything.
/// TCP steps open and close `connections`.
fn check_step(names: &Names<'_>, connections: &mut Connections, step: &Step) -> Result<(), String> {
    match step {
        Step::Udp { target, bytes } => {
            check_target(names, target)?;
            check_payload(*bytes, "a datagram")
        }
        Step::ForgedSource { target } => check_target(names, target),
        Step::UdpFlood { target, flows } => {
            check_target(names, target)?;
            if *flows == 0 || *flows > 512 {
                return Err(format!("a flood of 1 to 512 flows, not {flows}"));
            }
            Ok(())
        }
        Step::TcpOpen {
            conn,
            target,
            src_port,
        } => {
            check_target(names, target)?;
            if plan::AddressPlan::tcp_source_port(*conn, *src_port).is_none() {
                return Err(format!(
                    "connection {conn} has no source port: give `src_port` (30000 + conn is \
                     past 65535), and not 0"
                ));
            }
            connections.open(*conn)
        }
        Step::TcpRetransmitSyn { conn } | Step::TcpHalfClose { conn, .. } => {
            connections.check_open(*conn)
        }
        Step::TcpData { conn, bytes, .. } => {
            connections.check_open(*conn)?;
            check_payload(*bytes, "a segment")
        }
        Step::TcpClose { conn, .. }
        | Step::TcpReset { conn, .. }
        | Step::TcpSimultaneousClose { conn } => connections.close(*conn),
        Step::TcpLateAck { conn } => connections.check_closed(*conn),
        Step::DnsQuery { client, name } => {
            names.check_client(client)?;
            plan::check_domain_pattern(name)
        }
        Step::Path {
            client,
            gateway,
            mode,
        } => check_path(names, client, gateway, *mode),
        Step::Roam { client, .. } => names.check_client(client),
        // Checked against the topology by `check_steps`.
        Step::Grant(_) => Ok(()),
        Step::Revoke { client, resource } => {
            names.check_client(client)?;
            names.check_resource(resource)
        }
        Step::DnsChange { name, addresses } => check_dns_change(name, addresses),
        Step::Fault { between, .. } => check_link(names, between),
        Step::GatewayRestart { gateway } => names.check_gateway(gateway),
        Step::Stray {
            relay,
            kind,
            ipv6,
            allocation,
        } => check_stray(names, relay, *kind, *ipv6, allocation.as_deref()),
        Step::Attack { relay, ipv6, .. } => check_relay_family(names, relay, *ipv6),
        Step::GatewayAttack {
            gateway, client, ..
        } => {
            names.check_gateway(gateway)?;
            names.check_client(client)
        }
        Step::Idle { seconds, ms } => {
            let total = seconds.saturating_mul(1000).saturating_add(*ms);
            if total == 0 || total > 3_600_000 {
                return Err("idle for 1 ms to 3600 seconds".to_owned());
            }
            Ok(())
        }
    }
}

/// The relay exists and has an address of the family asked for.
fn check_relay_family(names: &Names<'_>, relay: &str, ipv6: bool) -> Result<(), String> {
    let stack = *names
        .relays
        .get(relay)
        .ok_or_else(|| format!("no relay named `{relay}`"))?;
    if !(if ipv6 { stack.has_v6() } else { stack.has_v4() }) {
        return Err(format!(
            "relay `{relay}` has no IPv{} address",
            if ipv6 { 6 } else { 4 }
        ));
    }
    Ok(())
}

/// A stray datagram goes to a relay of the family asked for; `unpermitted-peer` and the ICMP
/// errors to (or about) the allocation of a client or gateway that names that relay, and only
/// they name one.
fn check_stray(
    names: &Names<'_>,
    relay: &str,
    kind: StrayKind,
    ipv6: bool,
    allocation: Option<&str>,
) -> Result<(), String> {
    check_relay_family(names, relay, ipv6)?;
    match (kind.needs_allocation(), allocation) {
        (true, Some(host)) => {
            let on = names
                .client_relay
                .get(host)
                .or_else(|| names.gateway_relay.get(host))
                .ok_or_else(|| format!("no client or gateway named `{host}`"))?;
            if *on != Some(relay) {
                return Err(format!("`{host}` has no allocation on relay `{relay}`"));
            }
            Ok(())
        }
        (true, None) => Err(format!("{} needs an allocation", kind.as_str())),
        (false, Some(_)) => Err(format!("{} takes no allocation", kind.as_str())),
        (false, None) => Ok(()),
    }
}

/// The TCP connections of the steps so far: open (true) or closed (false).
#[derive(Default)]
struct Connections(BTreeMap<u32, bool>);

impl Connections {
    fn open(&mut self, conn: u32) -> Result<(), String> {
        if self.0.get(&conn) == Some(&true) {
            return Err(format!("connection {conn} is already open"));
        }
        self.0.insert(conn, true);
        Ok(())
    }

    fn check_open(&self, conn: u32) -> Result<(), String> {
        match self.0.get(&conn) {
            Some(true) => Ok(()),
            Some(false) => Err(format!("connection {conn} is closed")),
            None => Err(format!("connection {conn} was never opened")),
        }
    }

    fn close(&mut self, conn: u32) -> Result<(), String> {
        self.check_open(conn)?;
        self.0.insert(conn, false);
        Ok(())
    }

    fn check_closed(&self, conn: u32) -> Result<(), String> {
        if self.0.get(&conn) != Some(&false) {
            return Err(format!("connection {conn} is not closed"));
        }
        Ok(())
    }
}

/// The size of a datagram or a segment (`what`).
fn check_payload(bytes: u16, what: &str) -> Result<(), String> {
    if bytes == 0 || bytes > 1200 {
        return Err(format!("{what} carries 1 to 1200 bytes"));
    }
    Ok(())
}

fn check_dns_change(name: &str, addresses: &[IpAddr]) -> Result<(), String> {
    plan::check_domain_pattern(name)?;
    if let Some(address) = addresses.iter().find(|a| !plan::is_resource_address(**a)) {
        return Err(format!("{address} is outside the resource ranges"));
    }
    Ok(())
}

/// The link of a fault: two different hosts that exist.
fn check_link(names: &Names<'_>, between: &[String; 2]) -> Result<(), String> {
    for host in between {
        names.check_host(host)?;
    }
    if between[0] == between[1] {
        return Err("a link joins two different hosts".to_owned());
    }
    Ok(())
}
