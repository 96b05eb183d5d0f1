//! DNS wire format for the gateway's own lookups, through `hickory-proto`: an A or AAAA query
//! with a caller-chosen id, and the parts of an answer the gateway uses.

use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

/// The useful content of a DNS response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) id: u16,
    /// The question's name, normalised (lowercase, no trailing dot).
    pub(crate) name: String,
    /// Whether the question was AAAA (else A).
    pub(crate) ipv6: bool,
    /// `NOERROR`?
    pub(crate) ok: bool,
    /// Addresses of the question's type in the answer section, in answer order.
    pub(crate) addrs: Vec<IpAddr>,
    /// The smallest TTL among those records, in seconds.
    pub(crate) ttl: u32,
}

/// Encodes a recursive A (or AAAA) query for `domain`.
pub(crate) fn query(id: u16, domain: &str, ipv6: bool) -> Option<Vec<u8>> {
    let name = Name::from_ascii(format!("{domain}.")).ok()?;
    let ty = if ipv6 {
        RecordType::AAAA
    } else {
        RecordType::A
    };
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(name, ty));
    msg.to_vec().ok()
}

/// Decodes a response to one A or AAAA question. `None` if it is not that.
pub(crate) fn parse_answer(bytes: &[u8]) -> Option<Answer> {
    let msg = Message::from_vec(bytes).ok()?;
    if msg.metadata.message_type != MessageType::Response || msg.queries.len() != 1 {
        return None;
    }
    let q = &msg.queries[0];
    let ipv6 = match q.query_type() {
        RecordType::A => false,
        RecordType::AAAA => true,
        _ => return None,
    };
    let name = q.name().to_ascii();
    let name = name.strip_suffix('.').unwrap_or(&name).to_ascii_lowercase();
    let mut addrs = Vec::new();
    let mut ttl = u32::MAX;
    for record in &msg.answers {
        if let Some(ip) = record.data.ip_addr()
            && ip.is_ipv6() == ipv6
        {
            addrs.push(ip);
            ttl = ttl.min(record.ttl);
        }
    }
    Some(Answer {
        id: msg.metadata.id,
        name,
        ipv6,
        ok: msg.metadata.response_code == ResponseCode::NoError,
        addrs,
        ttl: if ttl == u32::MAX { 0 } else { ttl },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, AAAA, CNAME};
    use hickory_proto::rr::{RData, Record};

    fn response(id: u16, name: &str, ty: RecordType, records: Vec<Record>) -> Vec<u8> {
        let mut msg = Message::new(id, MessageType::Response, OpCode::Query);
        msg.add_query(Query::query(Name::from_ascii(name).unwrap(), ty));
        msg.add_answers(records);
        msg.to_vec().unwrap()
    }

    #[test]
    fn query_round_trips_through_hickory() {
        let bytes = query(7, "app.example.com", true).unwrap();
        let msg = Message::from_vec(&bytes).unwrap();
        assert_eq!(msg.metadata.id, 7);
        assert!(msg.metadata.recursion_desired);
        assert_eq!(msg.queries[0].query_type(), RecordType::AAAA);
        assert_eq!(msg.queries[0].name().to_ascii(), "app.example.com.");
    }

    #[test]
    fn answer_takes_matching_records_in_order_and_the_smallest_ttl() {
        let n = Name::from_ascii("App.Example.com.").unwrap();
        let bytes = response(
            9,
            "App.Example.com.",
            RecordType::A,
            vec![
                Record::from_rdata(n.clone(), 5, RData::CNAME(CNAME(n.clone()))),
                Record::from_rdata(n.clone(), 60, RData::A(A::new(198, 51, 100, 9))),
                Record::from_rdata(n.clone(), 30, RData::A(A::new(198, 51, 100, 3))),
                Record::from_rdata(
                    n,
                    1,
                    RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
                ),
            ],
        );
        let a = parse_answer(&bytes).unwrap();
        assert_eq!(a.id, 9);
        assert_eq!(a.name, "app.example.com");
        assert!(!a.ipv6 && a.ok);
        assert_eq!(
            a.addrs,
            vec![
                IpAddr::from([198, 51, 100, 9]),
                IpAddr::from([198, 51, 100, 3])
            ]
        );
        assert_eq!(a.ttl, 30);
    }

    #[test]
    fn queries_and_garbage_are_not_answers() {
        assert_eq!(
            parse_answer(&query(1, "a.example.com", false).unwrap()),
            None
        );
        assert_eq!(parse_answer(&[1, 2, 3]), None);
    }
}
