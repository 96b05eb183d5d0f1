//! The routing trace of a run: every datagram every host put on the simulated wire, hop by
//! hop, one line each, in the order they were sent, with what it is (TURN ChannelData, STUN,
//! DNS, a tunnel frame and the inner packet it carries) and, for a datagram a relay received
//! while its XDP program ran beside it, the program's verdict.
//!
//! ```text
//! # step 1 at 3.000s: udp: { client: alice, resource: web, port: 5000, bytes: 64 }
//!    3.000s alice 203.0.113.100:51820 > 203.0.113.1:3478       ChannelData 0x4000 (128 bytes), tunnel alice: UDP 100.64.0.2:45000 > 198.51.100.10:5000 len 64  [r1 XDP_TX tx/chan4-to-chan6]
//!    3.011s r1    [2001:db8::1]:3478 > [2001:db8::a]:51820     ChannelData 0x4000 (128 bytes), tunnel alice: UDP 100.64.0.2:45000 > 198.51.100.10:5000 len 64
//! ```
//!
//! Kinds: `ChannelData 0xNNNN (N bytes)` and what it carries, `UDP (N bytes)` (a tunnel frame
//! sent directly or from a relay's allocation), `STUN <method> <class>` with the attributes an
//! engineer reads (channel, peer, relayed and mapped addresses, lifetime, error), `DNS query` /
//! `DNS answer` with name, type and addresses. The annotation at the end says what the far end
//! did: `[r1 XDP_TX tx/chan4-to-chan6]` is the verdict of the receiving relay's XDP program,
//! `[not received]` a datagram no host took off a socket (a fault took or kept it, or no
//! socket was open there).
//!
//! Everything in it comes from the run's datagrams and the scenario, so one seed gives one
//! text: it is snapshotted for the corpus (`tests/corpus.rs`) and reviewed as a diff.
//! Tunnel frames are opened with the simulation's deterministic session keys
//! ([`sim::wire::open_tunnel_frame`]); frame counters, STUN transaction ids, nonces and DNS
//! ids are left out, so one datagram more or less early in a run changes one line, not every
//! line after it.

use std::{collections::BTreeMap, fmt::Write as _, net::SocketAddr};

use hickory_proto::{
    op::{Message as DnsMessage, MessageType, ResponseCode},
    rr::RData,
};
use proto::{
    channel_data::{self, ChannelData},
    stun::{self, Attribute, MessageClass},
    tunnel,
};
use scenario_format::{Scenario, Step};
use sim::{Direction, Hop, Outcome, XdpNote};

use crate::show::{seconds, step_line};

/// The port DNS servers answer on.
const DNS_PORT: u16 = 53;
/// Width of the `src > dst` column: an IPv6 pair of this harness's addresses fits.
const ADDRESS_WIDTH: usize = 44;

/// One datagram on one hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// When the host sent it, in ms since sim time 0.
    pub at_ms: u64,
    /// The host that sent it.
    pub host: String,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// What it is: `ChannelData 0x4000 (112 bytes), tunnel alice: UDP ...`.
    pub kind: String,
    /// What happened at the far end: the receiving relay's XDP verdict, or that nothing
    /// received it (a fault took it, or no socket was there).
    pub arrival: Arrival,
}

/// What became of a datagram at the host it was sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrival {
    /// Received.
    Received,
    /// Received by a relay whose XDP program saw it first.
    Xdp { relay: String, note: XdpNote },
    /// Never taken off a socket (a partition or `drop-next` took it, a hold kept it, or no
    /// socket was open there).
    NotReceived,
}

/// Every datagram of the run as a [`Route`], in the order the hosts sent them, and every frame
/// that is not UDP (an ICMP error to a relay), shown with the ports of the datagram it quotes.
pub fn routes(scenario: &Scenario, outcome: &Outcome) -> Vec<Route> {
    let mut routes = datagram_routes(scenario, outcome);
    routes.extend(outcome.frames.iter().map(|frame| {
        let (quoted_src, quoted_dst) = frame.about;
        Route {
            at_ms: frame.sent_ms,
            host: sim::INTERNET_HOST.to_owned(),
            src: quoted_dst,
            dst: quoted_src,
            kind: format!(
                "ICMP {} quoting {quoted_src} > {quoted_dst}",
                frame
                    .kind
                    .strip_prefix("icmp-")
                    .unwrap_or(&frame.kind)
                    .replace('-', " ")
            ),
            arrival: match &frame.xdp {
                Some(note) => Arrival::Xdp {
                    relay: frame.host.clone(),
                    note: note.clone(),
                },
                None => Arrival::Received,
            },
        }
    }));
    // Stable: datagrams sent in the same millisecond keep their order.
    routes.sort_by_key(|route| route.at_ms);
    routes
}

fn datagram_routes(scenario: &Scenario, outcome: &Outcome) -> Vec<Route> {
    let arrivals = arrivals(&outcome.hops);
    outcome
        .hops
        .iter()
        .zip(arrivals)
        .filter(|(hop, _)| hop.direction == Direction::Sent)
        .map(|(hop, arrived)| {
            let arrival = match arrived {
                None => Arrival::NotReceived,
                Some(Hop {
                    host,
                    xdp: Some(note),
                    ..
                }) => Arrival::Xdp {
                    relay: host.clone(),
                    note: note.clone(),
                },
                Some(_) => Arrival::Received,
            };
            Route {
                at_ms: hop.at_ms,
                host: hop.host.clone(),
                src: hop.src,
                dst: hop.dst,
                kind: describe(scenario, hop.src, hop.dst, &hop.payload),
                arrival,
            }
        })
        .collect()
}

/// For each hop (by index), the `Received` hop that took a `Sent` one off a socket, if any.
///
/// Hops carry no identity beyond their bytes, so a received datagram is paired with the latest
/// identical one (same source, destination and payload) sent at or before it and not paired
/// yet. Identical datagrams are rare (a STUN request retransmitted after a loss is one): the
/// retransmission is the one that arrived, not the lost original.
fn arrivals(hops: &[Hop]) -> Vec<Option<&Hop>> {
    let mut pending: BTreeMap<(SocketAddr, SocketAddr, &[u8]), Vec<usize>> = BTreeMap::new();
    let mut arrived = vec![None; hops.len()];
    for (index, hop) in hops.iter().enumerate() {
        let key = (hop.src, hop.dst, hop.payload.as_slice());
        match hop.direction {
            Direction::Sent => pending.entry(key).or_default().push(index),
            Direction::Received => {
                // Hops are in time order, so every pending one was sent at or before this.
                if let Some(sent) = pending.get_mut(&key).and_then(Vec::pop) {
                    arrived[sent] = Some(hop);
                }
            }
        }
    }
    arrived
}

impl Route {
    /// The route on one line; `host_width` aligns the columns of a whole trace.
    pub fn line(&self, host_width: usize) -> String {
        let addresses = format!("{} > {}", self.src, self.dst);
        let mut line = format!(
            "{:>9} {:<host_width$} {addresses:<ADDRESS_WIDTH$} {}",
            seconds(self.at_ms),
            self.host,
            self.kind
        );
        if let Some(annotation) = self.arrival.annotation() {
            let _ = write!(line, "  [{annotation}]");
        }
        line
    }
}

impl Arrival {
    /// What the far end did, when there is more to say than that it received the datagram:
    /// `r1 XDP_TX tx/chan4-to-chan6`, `not received`.
    pub fn annotation(&self) -> Option<String> {
        match self {
            Arrival::Received => None,
            Arrival::Xdp { relay, note } => {
                Some(format!("{relay} {} {}", note.verdict, note.reason))
            }
            Arrival::NotReceived => Some("not received".to_owned()),
        }
    }
}

/// A part of a run, as the routing trace heads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section<'a> {
    /// Before the first step: relays start, peers allocate.
    Setup,
    /// Step `index`, from its start.
    Step {
        index: usize,
        start_ms: u64,
        step: &'a Step,
    },
    /// After the last step.
    End { at_ms: u64 },
}

impl Section<'_> {
    /// `step 1 at 3.000s: udp: { client: alice, ... }`, with the time as `time` writes it.
    pub fn title(&self, time: impl Fn(u64) -> String) -> String {
        match self {
            Section::Setup => format!(
                "setup at {}: relays start, peers allocate, every client on the direct path",
                time(0)
            ),
            Section::Step {
                index,
                start_ms,
                step,
            } => format!("step {index} at {}: {}", time(*start_ms), step_line(step)),
            Section::End { at_ms } => format!("end at {}: every gateway shuts down", time(*at_ms)),
        }
    }
}

/// One entry of a sectioned trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry<'a, T> {
    /// A section begins.
    Section(Section<'a>),
    /// Something that happened in the section begun last.
    Item(T),
}

/// `items` (each with its time in ms, in time order) under the sections of the run they fall
/// in: the setup first, each step before the first item at or after its start, the end before
/// the first item at or after it once every step has begun, and the steps and end no item
/// reached after the last item.
pub fn sectioned<'a, T>(
    scenario: &'a Scenario,
    items: impl IntoIterator<Item = (u64, T)>,
) -> Vec<Entry<'a, T>> {
    let timeline = scenario_format::timing::Timeline::of(scenario);
    let mut steps = scenario
        .steps
        .iter()
        .zip(timeline.step_start)
        .enumerate()
        .map(|(index, (step, start_ms))| Section::Step {
            index,
            start_ms,
            step,
        })
        .peekable();
    let end = Section::End {
        at_ms: timeline.t_end,
    };
    let mut entries = vec![Entry::Section(Section::Setup)];
    let mut end_said = false;
    for (at_ms, item) in items {
        while let Some(step) = steps
            .next_if(|step| matches!(step, Section::Step { start_ms, .. } if *start_ms <= at_ms))
        {
            entries.push(Entry::Section(step));
        }
        if !end_said && steps.peek().is_none() && at_ms >= timeline.t_end {
            entries.push(Entry::Section(end));
            end_said = true;
        }
        entries.push(Entry::Item(item));
    }
    entries.extend(steps.map(Entry::Section));
    if !end_said {
        entries.push(Entry::Section(end));
    }
    entries
}

/// The routing trace as text: a header per step (`# step 1 at 3.000s: udp: { ... }`), and under
/// it one line per datagram per hop, in the order they were sent.
pub fn render(scenario: &Scenario, outcome: &Outcome) -> String {
    let routes = routes(scenario, outcome);
    let host_width = routes.iter().map(|r| r.host.len()).max().unwrap_or(0);
    let mut out = String::new();
    for entry in sectioned(scenario, routes.iter().map(|route| (route.at_ms, route))) {
        match entry {
            Entry::Section(section) => {
                let _ = writeln!(out, "# {}", section.title(seconds));
            }
            Entry::Item(route) => {
                out.push_str(&route.line(host_width));
                out.push('\n');
            }
        }
    }
    out
}

/// What a datagram from `src` to `dst` is, in words.
pub fn describe(scenario: &Scenario, src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> String {
    let len = payload.len();
    // DNS first, by port: a query id is random, and one whose first bits are 0b01 would
    // look like ChannelData.
    if (src.port() == DNS_PORT || dst.port() == DNS_PORT)
        && let Some(dns) = dns_line(payload)
    {
        return dns;
    }
    if tunnel::is_tunnel_frame(payload) {
        return format!("UDP ({len} bytes), {}", frame(scenario, payload));
    }
    if channel_data::looks_like_channel_data(payload) {
        return match ChannelData::parse(payload) {
            Ok(message) => format!(
                "ChannelData {:#06x} ({len} bytes), {}",
                message.channel,
                data(scenario, message.data)
            ),
            Err(error) => format!("malformed ChannelData ({len} bytes): {error}"),
        };
    }
    if stun::looks_like_stun(payload) {
        return match stun::decode(payload) {
            Ok(message) => stun_line(scenario, &message),
            Err(error) => format!("malformed STUN ({len} bytes): {error}"),
        };
    }
    format!("UDP ({len} bytes)")
}

/// What a relayed datagram carries: a tunnel frame, or so many bytes.
fn data(scenario: &Scenario, data: &[u8]) -> String {
    if tunnel::is_tunnel_frame(data) {
        frame(scenario, data)
    } else {
        format!("{} bytes of data", data.len())
    }
}

/// A tunnel frame: whose session, and the inner packet.
fn frame(scenario: &Scenario, frame: &[u8]) -> String {
    match sim::wire::open_tunnel_frame(frame) {
        Some((client, inner)) => format!(
            "tunnel {}: {}",
            crate::corpus::client_name(scenario, client as u32),
            observation::Packet::parse(inner)
        ),
        None => match tunnel::peek_header(frame) {
            Ok(header) => format!(
                "tunnel session {} (does not open under its key)",
                header.session_id
            ),
            Err(error) => format!("broken tunnel frame: {error}"),
        },
    }
}

fn method_name(method: stun::Method) -> String {
    match method.as_u16() {
        0x001 => "Binding".to_owned(),
        0x003 => "Allocate".to_owned(),
        0x004 => "Refresh".to_owned(),
        0x006 => "Send".to_owned(),
        0x007 => "Data".to_owned(),
        0x008 => "CreatePermission".to_owned(),
        0x009 => "ChannelBind".to_owned(),
        other => format!("method {other:#05x}"),
    }
}

/// `STUN ChannelBind request 0x4000 peer 203.0.113.1:56898`, `STUN Allocate error 401
/// Unauthorized`, `STUN Send indication peer ..., tunnel alice: ...`.
fn stun_line(scenario: &Scenario, message: &stun::Message) -> String {
    let class = match message.class() {
        MessageClass::Request => "request",
        MessageClass::Indication => "indication",
        MessageClass::SuccessResponse => "success",
        MessageClass::ErrorResponse => "error",
    };
    let mut line = format!("STUN {} {class}", method_name(message.method()));
    let family = |family: stun::AddressFamily| match family {
        stun::AddressFamily::V4 => "IPv4",
        stun::AddressFamily::V6 => "IPv6",
    };
    let mut details = Vec::new();
    let mut relayed = Vec::new();
    for attribute in message.attributes() {
        match attribute {
            Attribute::ErrorCode(error) => {
                details.push(format!("{} {}", error.code(), error.reason_phrase()));
            }
            Attribute::ChannelNumber(channel) => details.push(format!("{:#06x}", channel.value())),
            Attribute::XorPeerAddress(peer) => details.push(format!("peer {}", peer.address())),
            Attribute::XorRelayAddress(address) => relayed.push(address.address().to_string()),
            Attribute::XorMappedAddress(mapped) => {
                details.push(format!("mapped {}", mapped.address()));
            }
            Attribute::Lifetime(lifetime) => {
                details.push(format!("lifetime {}s", lifetime.lifetime().as_secs()));
            }
            Attribute::RequestedAddressFamily(requested) => {
                details.push(format!("family {}", family(requested.address_family())));
            }
            Attribute::AdditionalAddressFamily(additional) => {
                details.push(format!(
                    "additional family {}",
                    family(additional.address_family())
                ));
            }
            // Responses to authenticated requests always carry it; requests show whether the
            // client sent credentials (the first Allocate does not, and gets a 401).
            Attribute::MessageIntegrity(_) if message.class() == MessageClass::Request => {
                details.push("authenticated".to_owned());
            }
            _ => {}
        }
    }
    if !relayed.is_empty() {
        details.insert(0, format!("relayed {}", relayed.join(" and ")));
    }
    if !details.is_empty() {
        line.push(' ');
        line.push_str(&details.join(", "));
    }
    if let Some(carried) = message.attributes().find_map(|attribute| match attribute {
        Attribute::Data(carried) => Some(carried.data()),
        _ => None,
    }) {
        let _ = write!(line, ", {}", data(scenario, carried));
    }
    line
}

/// `DNS query api.example.com A`, `DNS answer api.example.com A 198.51.100.42 ttl 300`,
/// `DNS answer ghost.example.com AAAA NXDomain`; `None` if it is not DNS.
fn dns_line(payload: &[u8]) -> Option<String> {
    let message = DnsMessage::from_vec(payload).ok()?;
    let questions: Vec<String> = message
        .queries
        .iter()
        .map(|query| {
            let name = query.name().to_ascii();
            format!(
                "{} {}",
                name.strip_suffix('.').unwrap_or(&name),
                query.query_type()
            )
        })
        .collect();
    let mut line = match message.metadata.message_type {
        MessageType::Query => format!("DNS query {}", questions.join(", ")),
        MessageType::Response => format!("DNS answer {}", questions.join(", ")),
    };
    if message.metadata.message_type == MessageType::Response {
        if message.metadata.response_code != ResponseCode::NoError {
            let _ = write!(line, " {:?}", message.metadata.response_code);
        }
        let answers: Vec<String> = message
            .answers
            .iter()
            .map(|record| match &record.data {
                RData::A(a) => format!("{} ttl {}", a.0, record.ttl),
                RData::AAAA(aaaa) => format!("{} ttl {}", aaaa.0, record.ttl),
                other => format!("{} ttl {}", other.record_type(), record.ttl),
            })
            .collect();
        if answers.is_empty() && message.metadata.response_code == ResponseCode::NoError {
            line.push_str(" no address");
        } else if !answers.is_empty() {
            let _ = write!(line, " {}", answers.join(", "));
        }
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sim::packets;

    fn scenario() -> Scenario {
        Scenario::from_yaml(
            "name: t\n\
             topology:\n  \
               clients: [{ name: alice, stack: v4 }]\n  \
               gateways: [{ name: gw, stack: v4 }]\n  \
               resources: [{ name: web, gateway: gw, cidr: 198.51.100.10/32 }]\n  \
               grants: [{ client: alice, resource: web }]\n\
             steps: []\n",
            "t.yaml",
        )
        .expect("a valid scenario")
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn tunnel_frames_show_their_inner_packet() {
        let inner = packets::udp(
            addr("100.64.0.2:45000"),
            addr("198.51.100.10:5000"),
            &[7; 64],
        );
        let key = tunnel::SessionKey::new([1; 32]);
        let frame = tunnel::seal(
            &key,
            tunnel::Direction::ToGateway,
            tunnel::FrameHeader {
                session_id: 1000,
                counter: 3,
            },
            &inner,
        );
        let line = describe(
            &scenario(),
            addr("203.0.113.100:51820"),
            addr("203.0.113.10:51820"),
            &frame,
        );
        assert_eq!(
            line,
            format!(
                "UDP ({} bytes), tunnel alice: UDP 100.64.0.2:45000 > 198.51.100.10:5000 len 64",
                frame.len()
            )
        );
        let mut wrapped = channel_data::header(0x4001, frame.len()).to_vec();
        wrapped.extend_from_slice(&frame);
        let line = describe(
            &scenario(),
            addr("203.0.113.100:51820"),
            addr("203.0.113.1:3478"),
            &wrapped,
        );
        assert!(
            line.starts_with(&format!(
                "ChannelData 0x4001 ({} bytes), tunnel alice: UDP",
                wrapped.len()
            )),
            "{line}"
        );
        let wrong_key = tunnel::seal(
            &tunnel::SessionKey::new([9; 32]),
            tunnel::Direction::ToGateway,
            tunnel::FrameHeader {
                session_id: 1000,
                counter: 3,
            },
            &inner,
        );
        let line = describe(
            &scenario(),
            addr("203.0.113.100:51820"),
            addr("203.0.113.10:51820"),
            &wrong_key,
        );
        assert!(
            line.ends_with("tunnel session 1000 (does not open under its key)"),
            "{line}"
        );
    }

    #[test]
    fn stun_and_dns_and_plain_udp() {
        let request = stun::Message::new(
            MessageClass::Request,
            stun::methods::CHANNEL_BIND,
            stun::TransactionId::new([1; 12]),
        );
        let mut request = request;
        request.add_attribute(Attribute::ChannelNumber(
            stun::ChannelNumber::new(0x4000).expect("a channel"),
        ));
        request.add_attribute(Attribute::XorPeerAddress(stun::XorPeerAddress::new(addr(
            "203.0.113.1:50000",
        ))));
        let bytes = stun::encode(request).expect("encodes");
        assert_eq!(
            describe(
                &scenario(),
                addr("203.0.113.100:51820"),
                addr("203.0.113.1:3478"),
                &bytes
            ),
            "STUN ChannelBind request 0x4000, peer 203.0.113.1:50000"
        );
        let error = stun::error_response(
            stun::methods::ALLOCATE,
            stun::TransactionId::new([2; 12]),
            401,
        );
        let bytes = stun::encode(error).expect("encodes");
        assert_eq!(
            describe(
                &scenario(),
                addr("203.0.113.1:3478"),
                addr("203.0.113.100:51820"),
                &bytes
            ),
            "STUN Allocate error 401 Unauthorized"
        );

        let mut query = DnsMessage::new(7, MessageType::Query, hickory_proto::op::OpCode::Query);
        query.add_query(hickory_proto::op::Query::query(
            hickory_proto::rr::Name::from_ascii("api.example.com.").expect("a name"),
            hickory_proto::rr::RecordType::AAAA,
        ));
        let bytes = query.to_vec().expect("encodes");
        assert_eq!(
            describe(
                &scenario(),
                addr("203.0.113.10:50000"),
                addr("203.0.113.53:53"),
                &bytes
            ),
            "DNS query api.example.com AAAA"
        );
        assert_eq!(
            describe(
                &scenario(),
                addr("203.0.113.10:50000"),
                addr("203.0.113.1:9"),
                &[1, 2, 3]
            ),
            "UDP (3 bytes)"
        );
    }

    fn hop(at_ms: u64, host: &str, direction: Direction, payload: &[u8]) -> Hop {
        Hop {
            at_ms,
            host: host.to_owned(),
            direction,
            src: addr("203.0.113.100:51820"),
            dst: addr("203.0.113.1:3478"),
            payload: payload.to_vec(),
            xdp: None,
        }
    }

    /// A lost datagram and its identical retransmission: the retransmission arrived.
    #[test]
    fn a_retransmission_is_the_one_that_arrived() {
        let note = XdpNote {
            verdict: "XDP_PASS".to_owned(),
            reason: "pass/stun".to_owned(),
        };
        let outcome = Outcome {
            hops: vec![
                hop(0, "alice", Direction::Sent, &[1, 2, 3, 4]),
                hop(500, "alice", Direction::Sent, &[1, 2, 3, 4]),
                Hop {
                    xdp: Some(note.clone()),
                    ..hop(510, "r1", Direction::Received, &[1, 2, 3, 4])
                },
                hop(600, "alice", Direction::Sent, &[5, 6, 7, 8]),
                hop(610, "r1", Direction::Received, &[5, 6, 7, 8]),
            ],
            ..Outcome::default()
        };
        let arrivals: Vec<Arrival> = routes(&scenario(), &outcome)
            .into_iter()
            .map(|route| route.arrival)
            .collect();
        assert_eq!(
            arrivals,
            [
                Arrival::NotReceived,
                Arrival::Xdp {
                    relay: "r1".to_owned(),
                    note
                },
                Arrival::Received
            ]
        );
        let lines: Vec<String> = routes(&scenario(), &outcome)
            .iter()
            .map(|route| route.line(5))
            .collect();
        assert_eq!(
            lines[0],
            "   0.000s alice 203.0.113.100:51820 > 203.0.113.1:3478       UDP (4 bytes)  [not received]"
        );
        assert!(
            lines[1].ends_with("UDP (4 bytes)  [r1 XDP_PASS pass/stun]"),
            "{}",
            lines[1]
        );
    }
}
