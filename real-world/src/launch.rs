//! How the run starts its servers: relay-server with the simulation's secret, realm and caps
//! and the XDP program attached, and gateway-server's configuration from the topology.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use proto::credentials;
use scenario_format::{
    ResourceAddress, Scenario, Stack,
    plan::{self, AddressPlan, TUNNEL_PORT},
    settings::{
        DEFAULT_IDLE_TIMEOUT_S, DNS_MAX_TTL_S, DNS_MIN_TTL_S, DNS_QUEUE_LIMIT,
        GATEWAY_MAX_FLOWS_PER_CLIENT, RELAY_ALLOCATION_QUOTA, RELAY_MAX_CHANNELS,
        RELAY_MAX_PERMISSIONS, RELAY_REALM, RELAY_SECRET,
    },
};
use serde_json::json;
use turn_client::Families;

use crate::{
    RealError,
    netns::Namespaces,
    processes::{Child, METRICS_PORT, scrape},
    run::RealOptions,
    topology::Topology,
};

fn secret() -> String {
    String::from_utf8_lossy(RELAY_SECRET).into_owned()
}

/// REST credentials valid for a day from now (real relays check the expiry with the clock).
pub(crate) fn credentials_for(name: &str) -> credentials::Credentials {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    credentials::rest_api_credentials(RELAY_SECRET, now + 86_400, name)
}

pub(crate) fn families(stack: Stack) -> Families {
    match stack {
        Stack::V4 => Families::V4,
        Stack::V6 => Families::V6,
        Stack::Dual => Families::Dual,
    }
}

pub(crate) fn start_relays(
    scenario: &Scenario,
    plan: &AddressPlan,
    topology: &Topology,
    namespaces: &Namespaces,
    options: &RealOptions,
) -> Result<Vec<Child>, RealError> {
    let mut relays = Vec::new();
    for (r, ns) in topology.relays.iter().enumerate() {
        let addresses = plan.relays[r];
        let mut args = Vec::new();
        if let Some(v4) = addresses.v4 {
            args.extend(["--public-v4".to_owned(), v4.to_string()]);
        }
        if let Some(v6) = addresses.v6 {
            args.extend(["--public-v6".to_owned(), v6.to_string()]);
        }
        args.extend(
            [
                "--shared-secret",
                &secret(),
                "--realm",
                RELAY_REALM,
                "--xdp",
                "eth0",
                "--xdp-mode",
                "auto",
                "--metrics",
                &SocketAddr::new(addresses.preferred(), METRICS_PORT).to_string(),
                "--seed",
                &options.seed.wrapping_add(r as u64).to_string(),
                "--allocation-quota",
                &RELAY_ALLOCATION_QUOTA.to_string(),
                "--max-permissions",
                &RELAY_MAX_PERMISSIONS.to_string(),
                "--max-channels",
                &RELAY_MAX_CHANNELS.to_string(),
            ]
            .map(str::to_owned),
        );
        let mut child = Child::spawn(
            &format!("relay-server {}", scenario.topology.relays[r].name),
            ns,
            &options.binaries.relay_server,
            &args,
            &options.dir.join(format!("relay-{r}.log")),
            false,
        )?;
        // Ready once its metrics answer.
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            if namespaces
                .inside(ns, || scrape(addresses.preferred()))
                .is_ok()
            {
                break;
            }
            if let Some(status) = child.exited() {
                return Err(RealError::Process(format!(
                    "{} exited at start ({status}); see {}",
                    child.name,
                    options.dir.join(format!("relay-{r}.log")).display()
                )));
            }
            if Instant::now() >= give_up {
                return Err(RealError::Process(format!("{} did not start", child.name)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        relays.push(child);
    }
    Ok(relays)
}

/// gateway-server's configuration for gateway `index`: the settings, sessions, resources and
/// grants the simulation gives it.
pub(crate) fn gateway_config(
    scenario: &Scenario,
    plan: &AddressPlan,
    index: usize,
    seed: u64,
) -> String {
    let topology = &scenario.topology;
    let spec = &topology.gateways[index];
    let addresses = plan.gateways[index];
    let ip = addresses.preferred();
    let listen: Vec<String> = [addresses.v4.map(IpAddr::V4), addresses.v6.map(IpAddr::V6)]
        .into_iter()
        .flatten()
        .map(|ip| SocketAddr::new(ip, TUNNEL_PORT).to_string())
        .collect();
    let clients: Vec<serde_json::Value> = (0..topology.clients.len())
        .map(|c| {
            let session = AddressPlan::session(c);
            json!({
                "id": c,
                "session_id": session.id,
                "key": session.key.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                "tunnel_v4": plan.tunnel_v4[c],
                "tunnel_v6": plan.tunnel_v6[c],
            })
        })
        .collect();
    let resources: Vec<serde_json::Value> = topology
        .resources
        .iter()
        .enumerate()
        .filter(|(_, r)| r.gateway == spec.name)
        .map(|(id, r)| match &r.address {
            ResourceAddress::Cidr(cidr) => json!({ "id": id, "cidr": cidr }),
            ResourceAddress::Dns(pattern) => json!({ "id": id, "dns": pattern }),
        })
        .collect();
    let grants: Vec<serde_json::Value> = topology
        .grants
        .iter()
        .filter_map(|grant| {
            let client = topology
                .clients
                .iter()
                .position(|c| c.name == grant.client)?;
            let resource = topology
                .resources
                .iter()
                .position(|r| r.name == grant.resource)?;
            (topology.resources[resource].gateway == spec.name).then(
                || json!({ "client": client, "resource": resource, "filters": grant.filters }),
            )
        })
        .collect();
    let relay = spec.relay.as_ref().and_then(|name| {
        let r = topology.relays.iter().position(|x| &x.name == name)?;
        let credentials = credentials_for(&spec.name);
        let families = match topology.relays[r].stack {
            Stack::V4 => "v4",
            Stack::V6 => "v6",
            Stack::Dual => "both",
        };
        Some(json!({
            "server": SocketAddr::new(
                plan.relays[r].matching(ip).unwrap_or(plan.relays[r].preferred()),
                plan::TURN_PORT,
            ),
            "username": credentials.username,
            "password": credentials.password,
            "families": families,
        }))
    });
    let ports = plan::GATEWAY_DNS_PORTS;
    let mut config = json!({
        "tun": "tun0",
        "listen": listen,
        "dns_server": plan::dns_server(ip),
        "dns_source_ports": format!("{}-{}", ports.start(), ports.end()),
        "idle_timeout_s": topology.idle_timeout_s.unwrap_or(DEFAULT_IDLE_TIMEOUT_S),
        "dns_min_ttl_s": DNS_MIN_TTL_S,
        "dns_max_ttl_s": DNS_MAX_TTL_S,
        "dns_queue_limit": DNS_QUEUE_LIMIT,
        "max_flows_per_client": GATEWAY_MAX_FLOWS_PER_CLIENT,
        "seed": seed,
        "clients": clients,
        "resources": resources,
        "grants": grants,
    });
    if let Some(relay) = relay {
        config["relay"] = relay;
    }
    serde_yaml_ng::to_string(&config).unwrap_or_default()
}
