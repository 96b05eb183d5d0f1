//! Forged DNS answers for the `dns-wrong-*` gateway attacks (docs/harness.md, "Attacks").
//!
//! The attacker races a gateway's DNS query, as an attacker who sees the gateway's network (or
//! guessed all but one field) would: it waits, up to a deadline, for a query of the gateway
//! that is still unanswered on the wire, and forges an answer to it with exactly one thing
//! wrong (the id, the name, the port or the source), pointing the name at itself. At the
//! deadline it forges against the gateway's last query instead (or a made-up one before any).

use std::net::{IpAddr, SocketAddr};

use hickory_proto::op::{Message, MessageType};
use scenario_format::{GatewayAttackKind, plan};

use crate::{dns_server, state::Shared, wire};

/// A forged answer: where it goes, its bytes, and the source it is spoofed from (none: the
/// attacker's own address).
pub(crate) struct Forgery {
    pub(crate) to: SocketAddr,
    pub(crate) payload: Vec<u8>,
    pub(crate) spoof_from: Option<SocketAddr>,
}

/// A query on the wire: the port it left from, its id, name and whether it asks for AAAA.
#[derive(Debug, Clone)]
struct Query {
    port: u16,
    id: u16,
    name: String,
    ipv6: bool,
}

/// The forgery of `kind` against gateway `gateway` (at `ip`): against its unanswered query if
/// there is one, else (when `now_or_never`) against its last query; `None` meanwhile.
pub(crate) fn forge(
    shared: &Shared,
    gateway: &str,
    ip: IpAddr,
    kind: GatewayAttackKind,
    now_or_never: bool,
) -> Option<Forgery> {
    let server = plan::dns_server(ip);
    let hops = &shared.journal.hops;
    let queries: Vec<Query> = hops
        .iter()
        .filter(|hop| {
            hop.host == gateway && hop.direction == wire::Direction::Sent && hop.dst == server
        })
        .filter_map(|hop| {
            let (id, name, ipv6) = dns_server::question(&hop.payload)?;
            Some(Query {
                port: hop.src.port(),
                id,
                name,
                ipv6,
            })
        })
        .collect();
    let answered = |query: &Query| {
        hops.iter().any(|hop| {
            hop.host == gateway
                && hop.direction == wire::Direction::Received
                && hop.src == server
                && hop.dst.port() == query.port
                && response_id(&hop.payload) == Some(query.id)
        })
    };
    let target = match queries.iter().rev().find(|query| !answered(query)) {
        Some(unanswered) => unanswered.clone(),
        None if now_or_never => queries.last().cloned().unwrap_or_else(|| Query {
            port: *plan::GATEWAY_DNS_PORTS.start(),
            id: 1,
            name: "forged.invalid".to_owned(),
            ipv6: ip.is_ipv6(),
        }),
        None => return None,
    };
    Some(forgery(&target, &queries, ip, server, kind))
}

fn forgery(
    target: &Query,
    queries: &[Query],
    ip: IpAddr,
    server: SocketAddr,
    kind: GatewayAttackKind,
) -> Forgery {
    let never_used = (1..=u16::MAX)
        .map(|step| target.id.wrapping_add(step))
        .find(|candidate| *candidate != 0 && queries.iter().all(|q| q.id != *candidate))
        .unwrap_or(0);
    let ports = plan::GATEWAY_DNS_PORTS;
    let another_port = ports.start() + (target.port - ports.start() + 1) % ports.len() as u16;
    let attacker_ip = if target.ipv6 {
        IpAddr::V6(plan::ATTACKER_V6)
    } else {
        IpAddr::V4(plan::ATTACKER_V4)
    };
    let (id, name, port, spoof_from) = match kind {
        GatewayAttackKind::DnsWrongId => {
            (never_used, target.name.clone(), target.port, Some(server))
        }
        GatewayAttackKind::DnsWrongName => (
            target.id,
            format!("forged.{}", target.name),
            target.port,
            Some(server),
        ),
        GatewayAttackKind::DnsWrongPort => {
            (target.id, target.name.clone(), another_port, Some(server))
        }
        _ => (target.id, target.name.clone(), target.port, None),
    };
    Forgery {
        to: SocketAddr::new(ip, port),
        payload: dns_server::forged_answer(id, &name, target.ipv6, attacker_ip),
        spoof_from,
    }
}

/// The id of a DNS response, `None` if it is not one.
fn response_id(datagram: &[u8]) -> Option<u16> {
    let message = Message::from_vec(datagram).ok()?;
    (message.metadata.message_type == MessageType::Response).then_some(message.metadata.id)
}
