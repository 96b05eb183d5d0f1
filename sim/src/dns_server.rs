//! The DNS server host: answers A and AAAA questions from the scenario's records (which a
//! `dns-change` step rewrites), in real DNS wire format through hickory-proto.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    rc::Rc,
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::{
        RData, Record, RecordType,
        rdata::{A, AAAA},
    },
};

use scenario_format::plan;
use turmoil::net::UdpSocket;

use crate::{endpoint_io::unspecified, state::Shared, wire};

/// The answer to one query datagram from the run's current records, or `None` if it is not a
/// query.
pub(crate) fn answer(query: &[u8], shared: &Rc<RefCell<Shared>>) -> Option<Vec<u8>> {
    answer_from(query, &shared.borrow().dns_records)
}

/// The answer to one query datagram from `records` (lower-case name without the trailing dot
/// -> addresses and TTL), or `None` if it is not a query: what the simulated DNS server says,
/// and what the real world's DNS server says too.
pub fn answer_from(
    query: &[u8],
    records: &BTreeMap<String, (Vec<IpAddr>, u32)>,
) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    if request.metadata.message_type != MessageType::Query || request.queries.len() != 1 {
        return None;
    }
    let question = request.queries[0].clone();
    let name = question.name().to_ascii();
    let name = name.strip_suffix('.').unwrap_or(&name).to_ascii_lowercase();
    let mut response = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_query(question.clone());
    match records.get(&name) {
        None => response.metadata.response_code = ResponseCode::NXDomain,
        Some((addresses, ttl)) => {
            for address in addresses {
                let data = match (address, question.query_type()) {
                    (IpAddr::V4(v4), RecordType::A) => RData::A(A::from(*v4)),
                    (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA::from(*v6)),
                    _ => continue,
                };
                response.add_answer(Record::from_rdata(question.name().clone(), *ttl, data));
            }
        }
    }
    response.to_vec().ok()
}

/// A query's id, its question's name (lower case, no trailing dot) and whether it asks for
/// AAAA; `None` if it is not a query of one A or AAAA question.
pub(crate) fn question(query: &[u8]) -> Option<(u16, String, bool)> {
    let request = Message::from_vec(query).ok()?;
    if request.metadata.message_type != MessageType::Query || request.queries.len() != 1 {
        return None;
    }
    let question = &request.queries[0];
    let ipv6 = match question.query_type() {
        RecordType::A => false,
        RecordType::AAAA => true,
        _ => return None,
    };
    let name = question.name().to_ascii();
    let name = name.strip_suffix('.').unwrap_or(&name).to_ascii_lowercase();
    Some((request.metadata.id, name, ipv6))
}

/// An answer the attacker forges: id `id`, one question for `name` (A, or AAAA if `ipv6`),
/// and one record pointing it at `address` for a day.
pub(crate) fn forged_answer(id: u16, name: &str, ipv6: bool, address: IpAddr) -> Vec<u8> {
    let Ok(owner) = hickory_proto::rr::Name::from_ascii(format!("{name}.")) else {
        return Vec::new();
    };
    let (ty, data) = match address {
        IpAddr::V4(v4) if !ipv6 => (RecordType::A, RData::A(A::from(v4))),
        IpAddr::V6(v6) if ipv6 => (RecordType::AAAA, RData::AAAA(AAAA::from(v6))),
        _ => return Vec::new(),
    };
    let mut response = Message::new(id, MessageType::Response, OpCode::Query);
    response.metadata.recursion_desired = true;
    response.metadata.recursion_available = true;
    response.add_query(hickory_proto::op::Query::query(owner.clone(), ty));
    response.add_answer(Record::from_rdata(owner, 86_400, data));
    response.to_vec().unwrap_or_default()
}

/// The DNS server: one turmoil host per address family, answering from the same records.
pub(crate) fn add_dns_server(sim: &mut turmoil::Sim<'_>, shared: &Rc<RefCell<Shared>>) {
    for ip in [
        IpAddr::V4(plan::DNS_SERVER_V4),
        IpAddr::V6(plan::DNS_SERVER_V6),
    ] {
        add_dns_host(sim, shared, ip);
    }
}

fn add_dns_host(sim: &mut turmoil::Sim<'_>, shared: &Rc<RefCell<Shared>>, ip: IpAddr) {
    let shared = shared.clone();
    sim.host(ip, move || {
        let shared = shared.clone();
        async move {
            let local = plan::dns_server(ip);
            let socket = UdpSocket::bind(SocketAddr::new(unspecified(ip), 53)).await?;
            let mut buf = vec![0u8; 2048];
            let waker = shared.borrow().spoof_waker.clone();
            loop {
                // Asleep until a query comes or the attacker wants a datagram spoofed from
                // this address: the server has no timer of its own.
                let received = tokio::select! {
                    // In this order: an unbiased select picks at random, and the run must
                    // replay exactly.
                    biased;
                    received = socket.recv_from(&mut buf) => Some(received?),
                    () = waker.notified() => None,
                };
                if let Some((len, from)) = received {
                    wire::received(&shared, "dns", from, local, &buf[..len], None);
                    let reply = answer(&buf[..len], &shared);
                    if let Some(reply) = reply {
                        shared
                            .borrow_mut()
                            .journal
                            .trace("dns", format!("answer {} bytes to {from}", reply.len()));
                        wire::send(&socket, &shared, "dns", local, from, &reply);
                    }
                }
                let orders = shared.borrow_mut().take_spoof_orders_at(ip);
                for order in orders {
                    wire::send_spoofed(&socket, &shared, order);
                }
            }
        }
    });
}
