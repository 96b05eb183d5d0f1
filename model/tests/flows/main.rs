//! Hand-computed expectations: small scenarios whose flow records, deliveries and drops are
//! worked out in the comments from docs/harness.md and docs/flows.md alone (never by running the
//! model twice). Times are sim milliseconds; t_0 = 2000, a step lasts 1000 ms, TUN 1 ms each way.
//!
//! Here: the helpers the tests share (times, addresses, the base scenario, expected records
//! and deliveries); the tests, by topic, in `udp`, `tcp`, `dns`, `paths` (relayed paths,
//! roaming and path switches), `grants` (revokes, filters, prefixes) and `faults` (restarts,
//! link faults, and what the model declines to predict).

mod dns;
mod faults;
mod grants;
mod paths;
mod tcp;
mod udp;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use model::{
    ClientId, CloseReason, Delivery, FlowRecord, OuterContext, Packet, PacketKind, Protocol,
    Receiver, ResourceId, TcpFlags, UtcTime,
};
use scenario_format::Scenario;

/// 2026-01-01T00:00:00Z plus `ms`.
fn at(ms: u64) -> UtcTime {
    UtcTime::from_unix_secs(1_767_225_600).plus(Duration::from_millis(ms))
}

fn sa(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn outer(remote: &str, local: &str) -> OuterContext {
    OuterContext {
        remote: sa(remote),
        local: sa(local),
    }
}

const ALICE: &str = "203.0.113.100:51820";
const GW: &str = "203.0.113.10:51820";

/// A record with the fields most tests share; callers override the rest.
#[allow(clippy::too_many_arguments)]
fn record(
    protocol: Protocol,
    (start, last, end): (u64, u64, u64),
    src: &str,
    dst: &str,
    contexts: Vec<OuterContext>,
    (tx_packets, tx_bytes, rx_packets, rx_bytes): (u64, u64, u64, u64),
    close_reason: CloseReason,
) -> FlowRecord {
    let (src, dst) = (sa(src), sa(dst));
    FlowRecord {
        client: ClientId(0),
        resource: ResourceId(0),
        protocol,
        start: at(start),
        end: at(end),
        last_packet: at(last),
        inner_src_ip: src.ip(),
        inner_src_port: src.port(),
        inner_dst_ip: dst.ip(),
        inner_dst_port: dst.port(),
        inner_domain: None,
        outer_contexts: contexts,
        tx_packets,
        tx_bytes,
        rx_packets,
        rx_bytes,
        close_reason,
    }
}

/// One v4 client `alice`, one v4 gateway `gw`, CIDR resource `web` (198.51.100.10/32, id 0),
/// DNS resource `app` (`*.example.com`, id 1), both granted, 10 ms links; `extra` is appended
/// to the topology, then the steps.
fn scenario(extra_topology: &str, steps: &str) -> Scenario {
    let text = format!(
        r#"
name: hand-computed
topology:
  clients:
    - {{ name: alice, stack: v4, relay: r1 }}
  gateways:
    - {{ name: gw, stack: v4, relay: r2 }}
  relays:
    - {{ name: r1, stack: v4 }}
    - {{ name: r2, stack: v4 }}
  resources:
    - {{ name: web, gateway: gw, cidr: 198.51.100.10/32 }}
    - {{ name: app, gateway: gw, dns: "*.example.com" }}
  dns_records:
    - {{ name: a.example.com, addresses: [198.51.100.20], ttl_s: 5 }}
  grants:
    - {{ client: alice, resource: web }}
    - {{ client: alice, resource: app }}
{extra_topology}
steps:
{steps}
"#
    );
    Scenario::from_yaml(&text, "test.yaml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn udp(payload: u16) -> PacketKind {
    PacketKind::Udp { payload }
}

fn tcp(flags: TcpFlags, seq: u32, ack: u32, payload: u16) -> PacketKind {
    PacketKind::Tcp {
        flags,
        seq,
        ack,
        payload,
    }
}

fn to_client(
    at_ms: u64,
    context: OuterContext,
    src: &str,
    dst: &str,
    kind: PacketKind,
) -> Delivery {
    Delivery {
        at_ms,
        to: Receiver::Client {
            client: ClientId(0),
            gateway: 0,
            outer: context,
        },
        packet: Packet {
            src: sa(src),
            dst: sa(dst),
            kind,
        },
        step: 0,
    }
}

fn client_deliveries(p: &model::Prediction) -> Vec<(u64, Packet)> {
    p.deliveries
        .iter()
        .filter(|d| matches!(d.to, Receiver::Client { .. }))
        .map(|d| (d.at_ms, d.packet))
        .collect()
}
