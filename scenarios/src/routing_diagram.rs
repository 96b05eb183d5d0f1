//! `routing.md`: a run's routing as a Mermaid sequence diagram, which GitHub draws wherever it
//! shows a Markdown file (a pull request, a repository, a downloaded artifact opened in an
//! editor with a Mermaid preview).
//!
//! One lane per host (clients, relays, gateways, the resources behind each gateway, then the
//! DNS server, the internet host and the attacker where they take part), one arrow per
//! datagram in the order it was sent, labelled as [`crate::routing`] describes it in
//! `routing.txt` (`ChannelData 0x4000 (128 bytes)`, `tunnel alice: UDP ...`, `STUN Allocate
//! request`), with the time in ms and, in brackets, the XDP verdict of the relay that received
//! it. A dashed arrow ending in a cross is a datagram that never arrived (with the link fault
//! that took it) or an inner packet a gateway dropped (with its reason); an arrow from a
//! gateway to its resources is an inner packet the resource received over the TUN link. Each
//! step is a shaded section headed by the step as the scenario writes it; a link fault's step
//! sits over the two hosts of the link.
//!
//! Long runs are cut after [`MAX_ARROWS`] arrows (or before the text grows past what Mermaid
//! reads), with a note that says how many were left out; `routing.txt` has them all.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::IpAddr,
};

use scenario_format::{
    ResourceAddress, Scenario, Step,
    plan::{self, AddressPlan},
};
use sim::{
    Outcome,
    observation::{ClientId, Delivery, DropPlace, DropReason, PacketDrop, Receiver, StrayArrival},
};

use crate::{
    corpus,
    routing::{self, Arrival, Entry, Route, Section},
    show,
};

/// The most arrows a diagram draws: past a few hundred a sequence diagram is too long to read,
/// and `routing.txt` is the place for the rest.
pub const MAX_ARROWS: usize = 300;
/// Mermaid refuses a diagram longer than 50,000 characters (its `maxTextSize`); arrows stop
/// once the text passes this, leaving room for the sections still to close.
const TEXT_BUDGET: usize = 45_000;
/// The shades of the steps' sections, in turn.
const SECTION_SHADES: [&str; 2] = ["rgb(240, 244, 255)", "rgb(255, 248, 232)"];

/// `routing.md`: a header (the scenario, the seed, the command that replays it, the failure if
/// there is one) and the run's sequence diagram in a ```` ```mermaid ```` block.
pub fn markdown(
    scenario: &Scenario,
    outcome: &Outcome,
    seed: u64,
    replay_command: &str,
    failure: &str,
) -> String {
    let mut out = format!("# Routing of `{}`, seed {seed}\n\n", scenario.name);
    if !scenario.description.is_empty() {
        let _ = writeln!(out, "{}\n", scenario.description);
    }
    let _ = writeln!(out, "Replay it: `{replay_command}`\n");
    let failure = failure.trim_end();
    if !failure.is_empty() {
        let _ = writeln!(out, "It failed:\n\n```text\n{failure}\n```\n");
    }
    out.push_str(
        "One lane per host, one arrow per datagram in the order sent: the time it was sent (ms \
         since the start), what it is, and in brackets the XDP verdict of the relay that \
         received it. A dashed arrow ending in a cross is a datagram that never arrived or a \
         packet a gateway dropped; an arrow to a gateway's resources is a packet the resource \
         received. Every datagram with its addresses: `routing.txt` beside this file.\n\n",
    );
    let _ = write!(out, "```mermaid\n{}```\n", diagram(scenario, outcome));
    out
}

/// The run as a Mermaid `sequenceDiagram`.
pub fn diagram(scenario: &Scenario, outcome: &Outcome) -> String {
    let routes = routing::routes(scenario, outcome);
    let lanes = Lanes::new(scenario, &routes);
    let events = events(outcome, &routes, &lanes);
    let mut out = String::from("sequenceDiagram\n");
    for lane in &lanes.lanes {
        let _ = writeln!(out, "    participant {} as {}", lane.id, lane.title);
    }
    let arrows_in_all = events.iter().filter(|(_, event)| event.is_arrow()).count();
    let mut arrows = 0;
    let mut sections = 0;
    let mut cut = false;
    for entry in routing::sectioned(scenario, events) {
        let one_arrow_too_many =
            arrows >= MAX_ARROWS && matches!(&entry, Entry::Item(event) if event.is_arrow());
        if one_arrow_too_many || out.len() >= TEXT_BUDGET {
            cut = true;
            break;
        }
        match entry {
            Entry::Section(section) => {
                if sections > 0 {
                    out.push_str("    end\n");
                }
                let _ = writeln!(
                    out,
                    "    rect {}",
                    SECTION_SHADES[sections % SECTION_SHADES.len()]
                );
                sections += 1;
                let _ = writeln!(
                    out,
                    "        Note over {}: {}",
                    lanes.section_span(&section),
                    label(&section.title(ms))
                );
            }
            Entry::Item(event) => {
                arrows += usize::from(event.is_arrow());
                let _ = writeln!(out, "        {}", event.statement(scenario, &lanes));
            }
        }
    }
    if sections > 0 {
        out.push_str("    end\n");
    }
    if cut {
        let _ = writeln!(
            out,
            "    Note over {}: {}",
            lanes.all(),
            label(&format!(
                "{} more arrows (and what happened between them) left out after the first \
                 {arrows}: routing.txt has every datagram",
                arrows_in_all - arrows
            ))
        );
    }
    out
}

/// `3025 ms`.
fn ms(at_ms: u64) -> String {
    format!("{at_ms} ms")
}

/// `text` as Mermaid takes it in a label: `#`, `;`, `<`, `>` and `&` as its entity codes (a
/// `;` would end the statement, `#` starts an entity, `<` a tag).
pub fn label(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '#' => out.push_str("#35;"),
            ';' => out.push_str("#59;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '&' => out.push_str("#amp;"),
            '\n' => out.push_str("<br/>"),
            c => out.push(c),
        }
    }
    out
}

/// Lines of a label, each escaped, joined by Mermaid's line break.
fn lines<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    parts
        .into_iter()
        .map(label)
        .collect::<Vec<_>>()
        .join("<br/>")
}

/// One lane of the diagram.
#[derive(Debug)]
struct Lane {
    /// The participant's id in the diagram's text: letters, digits and `_`, with a prefix by
    /// kind, so no host name can be one of Mermaid's keywords.
    id: String,
    /// What the lane's box says (escaped, with line breaks).
    title: String,
}

/// The diagram's lanes, and which host or gateway's resources each one is.
#[derive(Debug)]
struct Lanes {
    lanes: Vec<Lane>,
    /// Lane index by host name.
    hosts: BTreeMap<String, usize>,
    /// Lane index of the resources behind each gateway (by the gateway's index).
    resources: BTreeMap<u32, usize>,
    /// The host of every address.
    hosts_by_ip: BTreeMap<IpAddr, String>,
}

impl Lanes {
    fn new(scenario: &Scenario, routes: &[Route]) -> Self {
        let topology = &scenario.topology;
        let hosts_by_ip = sim::hosts_by_ip(scenario, &AddressPlan::new(scenario));
        let mut lanes = Self {
            lanes: Vec::new(),
            hosts: BTreeMap::new(),
            resources: BTreeMap::new(),
            hosts_by_ip,
        };
        for client in &topology.clients {
            lanes.add_host(&client.name, "client");
        }
        for relay in &topology.relays {
            lanes.add_host(&relay.name, "relay");
        }
        for gateway in &topology.gateways {
            lanes.add_host(&gateway.name, "gateway");
        }
        for (index, gateway) in topology.gateways.iter().enumerate() {
            let served: Vec<String> = topology
                .resources
                .iter()
                .filter(|resource| resource.gateway == gateway.name)
                .map(|resource| match &resource.address {
                    ResourceAddress::Cidr(cidr) => format!("{} {cidr}", resource.name),
                    ResourceAddress::Dns(pattern) => format!("{} {pattern}", resource.name),
                })
                .collect();
            if served.is_empty() {
                continue;
            }
            let title = format!("resources behind {}\n{}", gateway.name, served.join("\n"));
            lanes.resources.insert(index as u32, lanes.lanes.len());
            lanes.lanes.push(Lane {
                id: format!("resources_{}", id_part(&gateway.name)),
                title: label(&title),
            });
        }
        // The hosts outside the topology where they take part: the DNS server, the internet
        // host, the attacker, then any address no host has.
        let mut others: BTreeSet<(usize, String, &str)> = BTreeSet::new();
        for route in routes {
            for (host, ip) in [
                (route.host.clone(), route.src.ip()),
                (lanes.host_at(route.dst.ip()), route.dst.ip()),
            ] {
                if !lanes.hosts.contains_key(&host) {
                    let (rank, kind) = outside_role(ip);
                    others.insert((rank, host, kind));
                }
            }
        }
        for (_, host, kind) in others {
            if !lanes.hosts.contains_key(&host) {
                lanes.add_host(&host, kind);
            }
        }
        lanes
    }

    /// A lane for host `name` (of `kind`: client, relay, ...) with its addresses.
    fn add_host(&mut self, name: &str, kind: &str) {
        let addresses: Vec<String> = self
            .hosts_by_ip
            .iter()
            .filter(|(_, host)| *host == name)
            .map(|(ip, _)| ip.to_string())
            .collect();
        let mut title = format!("{name} ({kind})");
        for address in addresses {
            title.push('\n');
            title.push_str(&address);
        }
        self.hosts.insert(name.to_owned(), self.lanes.len());
        self.lanes.push(Lane {
            id: format!("host_{}", id_part(name)),
            title: label(&title),
        });
    }

    /// The host at `ip`: its name, or the address itself if no host has it.
    fn host_at(&self, ip: IpAddr) -> String {
        self.hosts_by_ip
            .get(&ip)
            .cloned()
            .unwrap_or_else(|| ip.to_string())
    }

    /// The lane id of host `name`.
    fn host(&self, name: &str) -> &str {
        // Every host a route names got a lane in `new`.
        self.hosts
            .get(name)
            .map_or("host_unknown", |&lane| self.lanes[lane].id.as_str())
    }

    /// `first,last`: every lane.
    fn all(&self) -> String {
        match (self.lanes.first(), self.lanes.last()) {
            (Some(first), Some(last)) if self.lanes.len() > 1 => {
                format!("{},{}", first.id, last.id)
            }
            (Some(only), _) => only.id.clone(),
            _ => "host_unknown".to_owned(),
        }
    }

    /// The lanes a section's note spans: the two hosts of a link fault's link, else all.
    fn section_span(&self, section: &Section<'_>) -> String {
        match section {
            Section::Step {
                step: Step::Fault { between, .. },
                ..
            } if between.iter().all(|host| self.hosts.contains_key(host)) => {
                format!("{},{}", self.host(&between[0]), self.host(&between[1]))
            }
            _ => self.all(),
        }
    }
}

/// What a host outside the topology is, by an address of its, and where its lane goes among
/// the others.
fn outside_role(ip: IpAddr) -> (usize, &'static str) {
    if ip == IpAddr::V4(plan::DNS_SERVER_V4) || ip == IpAddr::V6(plan::DNS_SERVER_V6) {
        (0, "DNS server")
    } else if ip == IpAddr::V4(plan::INTERNET_V4) || ip == IpAddr::V6(plan::INTERNET_V6) {
        (1, "stray datagrams")
    } else if plan::is_attacker(ip) {
        (2, "attacker")
    } else {
        (3, "no host of the scenario")
    }
}

/// A host name as part of a lane id: `-` becomes `_` (names are letters, digits and `-`).
fn id_part(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// One thing the diagram shows.
#[derive(Debug)]
enum Event<'a> {
    /// A datagram, from the host that sent it to the host of its destination; `lost` is the
    /// link and the fault that took it, if it never arrived.
    Datagram {
        route: &'a Route,
        to: String,
        lost: Option<(&'a [String; 2], DropReason)>,
    },
    /// An inner packet the resource responder behind `gateway` received.
    ToResource {
        gateway: u32,
        delivery: &'a Delivery,
    },
    /// An inner packet `gateway` dropped, of (or to) `client`.
    GatewayDrop {
        gateway: u32,
        client: Option<ClientId>,
        drop: &'a PacketDrop,
    },
    /// A frame a link fault took that no datagram accounts for (held until the end).
    LinkDrop {
        between: &'a [String; 2],
        drop: &'a PacketDrop,
    },
    /// A stray datagram at a relay, and what the relay host did with it.
    Stray(&'a StrayArrival),
}

/// Everything the diagram shows, with its time, in time order (datagrams by when they were
/// sent, the rest by when it happened).
fn events<'a>(outcome: &'a Outcome, routes: &'a [Route], lanes: &Lanes) -> Vec<(u64, Event<'a>)> {
    let mut link_drops: Vec<(&[String; 2], &PacketDrop)> = outcome
        .drops
        .iter()
        .filter_map(|drop| match &drop.place {
            DropPlace::Link { between } => Some((between, drop)),
            DropPlace::Gateway { .. } => None,
        })
        .collect();
    let mut events: Vec<(u64, Event<'a>)> = routes
        .iter()
        .map(|route| {
            let to = lanes.host_at(route.dst.ip());
            let lost = (route.arrival == Arrival::NotReceived)
                .then(|| {
                    // A link fault records the frame it takes when the sender puts it on the
                    // link.
                    let position = link_drops.iter().position(|(between, drop)| {
                        drop.at_ms == route.at_ms
                            && between.contains(&route.host)
                            && between.contains(&to)
                    })?;
                    let (between, drop) = link_drops.remove(position);
                    Some((between, drop.reason))
                })
                .flatten();
            (route.at_ms, Event::Datagram { route, to, lost })
        })
        .collect();
    events.extend(
        link_drops
            .into_iter()
            .map(|(between, drop)| (drop.at_ms, Event::LinkDrop { between, drop })),
    );
    events.extend(
        outcome
            .deliveries
            .iter()
            .filter_map(|delivery| match delivery.to {
                Receiver::Resource { gateway } => {
                    Some((delivery.at_ms, Event::ToResource { gateway, delivery }))
                }
                Receiver::Client { .. } => None,
            }),
    );
    events.extend(outcome.drops.iter().filter_map(|drop| match drop.place {
        DropPlace::Gateway { gateway, client } => Some((
            drop.at_ms,
            Event::GatewayDrop {
                gateway,
                client,
                drop,
            },
        )),
        DropPlace::Link { .. } => None,
    }));
    events.extend(
        outcome
            .strays
            .iter()
            .map(|stray| (stray.at_ms, Event::Stray(stray))),
    );
    // Stable: the datagrams of one millisecond keep their order, before what they caused.
    events.sort_by_key(|(at_ms, _)| *at_ms);
    events
}

impl Event<'_> {
    /// Whether the diagram draws it as an arrow (else as a note).
    fn is_arrow(&self) -> bool {
        matches!(
            self,
            Event::Datagram { .. } | Event::ToResource { .. } | Event::GatewayDrop { .. }
        )
    }

    /// The event as one statement of the diagram.
    fn statement(&self, scenario: &Scenario, lanes: &Lanes) -> String {
        match self {
            Event::Datagram { route, to, lost } => {
                let mut parts: Vec<String> = route.kind.split(", ").map(str::to_owned).collect();
                parts[0] = format!("{} {}", ms(route.at_ms), parts[0]);
                let arrow = match route.arrival {
                    Arrival::NotReceived => "--x",
                    _ => "->>",
                };
                if let Some(annotation) = route.arrival.annotation() {
                    let why = match lost {
                        Some((between, reason)) => {
                            format!(": {reason} on the link {}-{}", between[0], between[1])
                        }
                        None => String::new(),
                    };
                    parts.push(format!("[{annotation}{why}]"));
                }
                format!(
                    "{}{arrow}{}: {}",
                    lanes.host(&route.host),
                    lanes.host(to),
                    lines(parts.iter().map(String::as_str))
                )
            }
            Event::ToResource { gateway, delivery } => {
                let from = lanes
                    .host(&corpus::gateway_name(scenario, *gateway))
                    .to_owned();
                let to = lanes
                    .resources
                    .get(gateway)
                    .map_or(from.as_str(), |&lane| lanes.lanes[lane].id.as_str());
                format!(
                    "{from}->>{to}: {}",
                    lines([
                        format!("{} over the TUN link", ms(delivery.at_ms)).as_str(),
                        &delivery.packet.to_string(),
                    ])
                )
            }
            Event::GatewayDrop {
                gateway,
                client,
                drop,
            } => {
                let from = lanes.host(&corpus::gateway_name(scenario, *gateway));
                // Where the packet was going: to the client if it came from a resource, else
                // to the resources.
                let from_resource = plan::is_resource_address(drop.packet.src.ip());
                let to = match client {
                    Some(client) if from_resource => {
                        lanes.host(&corpus::client_name(scenario, client.0))
                    }
                    _ => lanes
                        .resources
                        .get(gateway)
                        .map_or(from, |&lane| lanes.lanes[lane].id.as_str()),
                };
                format!(
                    "{from}--x{to}: {}",
                    lines([
                        format!("{} dropped", ms(drop.at_ms)).as_str(),
                        &show::drop_what(scenario, drop),
                    ])
                )
            }
            Event::LinkDrop { between, drop } => {
                let over = format!("{},{}", lanes.host(&between[0]), lanes.host(&between[1]));
                let what = match drop.reason {
                    DropReason::StillHeld => "never arrived",
                    _ => "lost",
                };
                format!(
                    "Note over {over}: {}",
                    lines([
                        format!("{} {what}", ms(drop.at_ms)).as_str(),
                        &show::drop_what(scenario, drop),
                    ])
                )
            }
            Event::Stray(stray) => {
                let relay = scenario
                    .topology
                    .relays
                    .get(stray.relay as usize)
                    .map_or("host_unknown", |relay| lanes.host(&relay.name));
                format!(
                    "Note over {relay}: {}",
                    label(&format!(
                        "{} stray from {}: {}",
                        ms(stray.at_ms),
                        stray.from,
                        stray.fate
                    ))
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use proto::{channel_data, tunnel};
    use sim::{
        Direction, Hop, RunOptions, XdpNote,
        observation::{Packet, PacketDrop},
        packets,
    };

    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("an address")
    }

    /// The statements of a diagram that draw arrows.
    fn arrows(diagram: &str) -> Vec<&str> {
        diagram
            .lines()
            .map(str::trim)
            .filter(|line| !line.starts_with("Note") && line.contains(": "))
            .filter(|line| line.contains("->>") || line.contains("--x"))
            .collect()
    }

    /// Fails on a label with a character Mermaid would read as syntax: `;` (ends a
    /// statement), `#` outside an entity code, `<` or `>` outside a `<br/>`.
    fn assert_labels_escaped(diagram: &str) {
        for line in diagram.lines().skip(1) {
            let Some((_, label)) = line.split_once(": ").or_else(|| line.split_once(" as ")) else {
                continue;
            };
            let mut rest = label.replace("<br/>", "\n");
            for entity in ["#35;", "#59;", "#lt;", "#gt;", "#amp;"] {
                rest = rest.replace(entity, "");
            }
            assert!(
                !rest.contains([';', '#', '<', '>', '&']),
                "a label Mermaid cannot take: {line}"
            );
        }
    }

    #[test]
    fn labels_escape_what_mermaid_reads_as_syntax() {
        assert_eq!(
            label("a;b #1 <c> & d\ne"),
            "a#59;b #35;1 #lt;c#gt; #amp; d<br/>e"
        );
        assert_eq!(label("STUN Allocate request"), "STUN Allocate request");
        assert_eq!(lines(["x > y", "z"]), "x #gt; y<br/>z");
    }

    /// A corpus story with both peers on one relay, across families: a lane per host with its
    /// addresses (the relay's two, the gateway's IPv6 one), one arrow per datagram labelled as
    /// `routing.txt` labels it, the TUN deliveries to the resource, the steps as sections,
    /// the XDP verdicts at the relay, every label escaped.
    #[test]
    fn a_same_relay_story_has_a_lane_per_host_and_an_arrow_per_datagram() {
        let path = corpus::corpus_dir().join("same-relay-cross-family.yaml");
        let scenario = Scenario::from_file(&path).expect("a corpus story");
        let outcome =
            sim::run(&scenario, &RunOptions::seeded(corpus::CORPUS_SEED)).expect("the story runs");
        let diagram = diagram(&scenario, &outcome);
        let participants: Vec<&str> = diagram
            .lines()
            .filter_map(|line| line.trim().strip_prefix("participant "))
            .collect();
        assert_eq!(
            participants,
            [
                "host_alice as alice (client)<br/>203.0.113.100",
                "host_r1 as r1 (relay)<br/>203.0.113.1<br/>2001:db8::1",
                "host_gw as gw (gateway)<br/>2001:db8::a",
                "resources_gw as resources behind gw<br/>web 198.51.100.10/32",
            ]
        );

        let routes = routing::routes(&scenario, &outcome);
        let to_resource = outcome
            .deliveries
            .iter()
            .filter(|delivery| matches!(delivery.to, Receiver::Resource { .. }))
            .count();
        let arrows = arrows(&diagram);
        assert!(routes.len() >= 20, "{} datagrams", routes.len());
        assert_eq!(
            arrows.len(),
            routes.len() + to_resource + outcome.drops.len()
        );
        assert_eq!(
            arrows
                .iter()
                .filter(|arrow| arrow.starts_with("host_gw->>resources_gw: "))
                .count(),
            to_resource
        );
        // Each datagram's arrow, in order, from its sender's lane, with its label from
        // `routing.txt`'s words.
        let datagram_arrows = arrows
            .iter()
            .filter(|arrow| !arrow.contains("resources_gw"));
        for (route, arrow) in routes.iter().zip(datagram_arrows) {
            let first_words = route.kind.split(", ").next().expect("a kind");
            let start = format!("host_{}->>", route.host);
            assert!(
                arrow.starts_with(&start),
                "{arrow} is not from {}",
                route.host
            );
            assert!(
                arrow.contains(&format!(": {} ms {}", route.at_ms, label(first_words))),
                "{arrow} is not {first_words}"
            );
        }
        for step in 0..scenario.steps.len() {
            assert!(
                diagram.contains(&format!(
                    "        Note over host_alice,resources_gw: step {step} at "
                )),
                "no section for step {step}"
            );
        }
        assert_eq!(
            diagram.matches("    rect ").count(),
            scenario.steps.len() + 2
        );
        assert_eq!(
            diagram.matches("\n    end\n").count(),
            scenario.steps.len() + 2
        );
        assert!(diagram.contains(
            "host_alice->>host_r1: 3000 ms ChannelData 0x4000 (128 bytes)<br/>tunnel alice: UDP \
             100.64.0.2:45000 #gt; 198.51.100.10:5000 len 64"
        ));
        if outcome.datapath.runs_xdp() {
            assert!(diagram.contains("len 64<br/>[r1 XDP_TX tx/chan4-to-chan6]\n"));
            assert!(diagram.contains("<br/>[r1 XDP_PASS pass/stun]\n"));
        }
        assert_labels_escaped(&diagram);

        let markdown = markdown(&scenario, &outcome, 1, "cargo xtask replay x.yaml", "");
        assert!(
            markdown.starts_with(
                "# Routing of `same-relay-cross-family`, seed 1\n\nAn IPv4 client and an IPv6 \
                 gateway on one dual-stack relay.\n\nReplay it: `cargo xtask replay x.yaml`\n\n"
            ),
            "{markdown}"
        );
        assert!(markdown.ends_with(&format!("```mermaid\n{diagram}```\n")));
        assert!(!markdown.contains("It failed"));
    }

    fn scenario() -> Scenario {
        Scenario::from_yaml(
            "name: t\n\
             topology:\n  \
               clients: [{ name: alice, stack: v4, relay: r1 }]\n  \
               gateways: [{ name: gw, stack: v4, relay: r1 }]\n  \
               relays: [{ name: r1, stack: v4 }]\n  \
               resources: [{ name: web, gateway: gw, cidr: 198.51.100.10/32 }]\n  \
               grants: [{ client: alice, resource: web }]\n\
             steps:\n  \
               - udp: { client: alice, resource: web, port: 5000, bytes: 64 }\n  \
               - fault: { between: [alice, gw], fault: partition }\n  \
               - udp: { client: alice, resource: web, port: 5000, bytes: 64 }\n",
            "t.yaml",
        )
        .expect("a valid scenario")
    }

    /// Alice's UDP packet to web in a tunnel frame of her session.
    fn inner() -> Vec<u8> {
        packets::udp(
            addr("100.64.0.2:45000"),
            addr("198.51.100.10:5000"),
            &[7; 64],
        )
    }

    fn frame() -> Vec<u8> {
        let session = AddressPlan::session(0);
        tunnel::seal(
            &tunnel::SessionKey::new(session.key),
            tunnel::Direction::ToGateway,
            tunnel::FrameHeader {
                session_id: session.id,
                counter: 1,
            },
            &inner(),
        )
    }

    fn hop(
        at_ms: u64,
        host: &str,
        direction: Direction,
        path: (&str, &str),
        payload: &[u8],
    ) -> Hop {
        Hop {
            at_ms,
            host: host.to_owned(),
            direction,
            src: addr(path.0),
            dst: addr(path.1),
            payload: payload.to_vec(),
            xdp: None,
        }
    }

    /// A datagram relayed by XDP, one lost to a partition, a packet the resource got, and a
    /// gateway's drops both ways.
    fn outcome() -> Outcome {
        let frame = frame();
        let mut wrapped = channel_data::header(0x4000, frame.len()).to_vec();
        wrapped.extend_from_slice(&frame);
        let (alice, r1, gw) = (
            "203.0.113.100:51820",
            "203.0.113.1:3478",
            "203.0.113.10:51820",
        );
        let packet = Packet::parse(&inner());
        let reply = Packet::parse(&packets::udp(
            addr("198.51.100.10:5000"),
            addr("100.64.0.2:45000"),
            &[7; 64],
        ));
        let gateway_drop = |at_ms, packet| PacketDrop {
            at_ms,
            place: DropPlace::Gateway {
                gateway: 0,
                client: Some(ClientId(0)),
            },
            reason: DropReason::Gateway(proto::flow::DropReason::FilterDenied),
            packet,
            step: 2,
        };
        Outcome {
            hops: vec![
                hop(3000, "alice", Direction::Sent, (alice, r1), &wrapped),
                Hop {
                    xdp: Some(XdpNote {
                        verdict: "XDP_TX".to_owned(),
                        reason: "tx/chan4-to-chan4".to_owned(),
                    }),
                    ..hop(3010, "r1", Direction::Received, (alice, r1), &wrapped)
                },
                hop(3010, "r1", Direction::Sent, (r1, gw), &wrapped),
                hop(3020, "gw", Direction::Received, (r1, gw), &wrapped),
                hop(4000, "alice", Direction::Sent, (alice, gw), &frame),
            ],
            deliveries: vec![Delivery {
                at_ms: 3021,
                to: Receiver::Resource { gateway: 0 },
                packet,
                step: 1,
            }],
            drops: vec![
                PacketDrop {
                    at_ms: 4000,
                    place: DropPlace::Link {
                        between: ["alice".to_owned(), "gw".to_owned()],
                    },
                    reason: DropReason::Partition,
                    packet,
                    step: 2,
                },
                gateway_drop(4500, packet),
                gateway_drop(4600, reply),
            ],
            ..Outcome::default()
        }
    }

    #[test]
    fn verdicts_drops_and_faults_are_marked() {
        let diagram = diagram(&scenario(), &outcome());
        let frame_len = frame().len();
        let tunnel = "tunnel alice: UDP 100.64.0.2:45000 #gt; 198.51.100.10:5000 len 64";
        for expected in [
            format!(
                "        host_alice->>host_r1: 3000 ms ChannelData 0x4000 ({} bytes)<br/>{tunnel}\
                 <br/>[r1 XDP_TX tx/chan4-to-chan4]\n",
                frame_len + 4
            ),
            format!(
                "        host_r1->>host_gw: 3010 ms ChannelData 0x4000 ({} bytes)<br/>{tunnel}\n",
                frame_len + 4
            ),
            "        host_gw->>resources_gw: 3021 ms over the TUN link<br/>UDP 100.64.0.2:45000 \
             #gt; 198.51.100.10:5000 len 64\n"
                .to_owned(),
            // The fault's step over the link's two lanes.
            "        Note over host_alice,host_gw: step 1 at 3000 ms: fault: { between: [alice, \
             gw], fault: partition }\n"
                .to_owned(),
            format!(
                "        host_alice--xhost_gw: 4000 ms UDP ({frame_len} bytes)<br/>{tunnel}<br/>\
                 [not received: partition on the link alice-gw]\n"
            ),
            // A packet from the client dropped on its way to the resource, and one from the
            // resource on its way to the client.
            "        host_gw--xresources_gw: 4500 ms dropped<br/>by gw (client alice): \
             filter-denied, ICMP prohibited back: UDP 100.64.0.2:45000 #gt; 198.51.100.10:5000 \
             len 64\n"
                .to_owned(),
            "        host_gw--xhost_alice: 4600 ms dropped<br/>by gw (client alice): \
             filter-denied, ICMP prohibited back: UDP 198.51.100.10:5000 #gt; 100.64.0.2:45000 \
             len 64\n"
                .to_owned(),
        ] {
            assert!(diagram.contains(&expected), "no {expected:?} in\n{diagram}");
        }
        // The partition took the frame: it is the lost datagram's reason, not a note of its
        // own.
        assert!(!diagram.contains("Note over host_alice,host_gw: 4000 ms"));
        assert_labels_escaped(&diagram);
    }

    /// A long run is cut after `MAX_ARROWS` arrows, with a note of how many are left out.
    #[test]
    fn long_runs_are_cut_with_a_note() {
        let outcome = Outcome {
            hops: (0..1000u64)
                .map(|at_ms| {
                    let payload = at_ms.to_be_bytes();
                    hop(
                        at_ms,
                        "alice",
                        Direction::Sent,
                        ("203.0.113.100:51820", "203.0.113.10:51820"),
                        &payload,
                    )
                })
                .collect(),
            ..Outcome::default()
        };
        let diagram = diagram(&scenario(), &outcome);
        assert_eq!(arrows(&diagram).len(), MAX_ARROWS);
        assert!(
            diagram.ends_with(
                "    end\n    Note over host_alice,resources_gw: 700 more arrows (and what \
                 happened between them) left out after the first 300: routing.txt has every \
                 datagram\n"
            ),
            "{}",
            &diagram[diagram.len() - 300..]
        );
        assert!(diagram.len() < TEXT_BUDGET + 1000);
    }
}
