//! `vpnsim show FILE`: a scenario and what the reference model expects from it, without running
//! the simulation: the file itself, the timeline (when each step starts), the flow records, and
//! every delivery and drop, one line each.

use std::{fmt::Write as _, path::Path};

use model::{Delivery, DropPlace, DropReason, PacketDrop, Prediction, Receiver};
use proto::flow::{FlowRecord, UtcTime};
use scenario_format::{LoadError, Scenario, Step};
use serde::Serialize;
use serde_yaml_ng::Value;

use crate::corpus::{client_name, gateway_name, resource_name, socket};

/// Reads, validates and renders a scenario file (see [`render`]).
pub fn show_file(path: &Path) -> Result<String, LoadError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: origin.clone(),
        source,
    })?;
    let scenario = Scenario::from_yaml(&text, &origin)?;
    Ok(render(&scenario, &text, &origin))
}

/// The scenario's text, then the model's timeline, flow records, deliveries and drops.
pub fn render(scenario: &Scenario, text: &str, origin: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {origin}");
    out.push_str(text);
    if !text.ends_with('\n') {
        out.push('\n');
    }
    let timeline = scenario_format::timing::Timeline::of(scenario);
    out.push_str("\ntimeline:\n");
    let mut line = |label: String, ms: u64, what: &str| {
        let _ = writeln!(out, "  {label:<9}{:>10}  {what}", seconds(ms));
    };
    line(
        "setup".to_owned(),
        0,
        "relays start, peers allocate, every client on the direct path",
    );
    for (index, (step, start)) in scenario.steps.iter().zip(&timeline.step_start).enumerate() {
        line(format!("step {index}"), *start, &step_line(step));
    }
    line("end".to_owned(), timeline.t_end, "every gateway shuts down");
    match model::predict(scenario) {
        Ok(prediction) => render_prediction(&mut out, scenario, &prediction),
        Err(unpredictable) => {
            let _ = writeln!(
                out,
                "\nno prediction: {unpredictable}\n(see docs/harness.md, \"Model assumptions\")"
            );
        }
    }
    out
}

fn render_prediction(out: &mut String, scenario: &Scenario, prediction: &Prediction) {
    let relayed = scenario.topology.clients.iter().any(|c| c.relay.is_some())
        || scenario.topology.gateways.iter().any(|g| g.relay.is_some());
    if relayed {
        out.push_str(
            "\nrelayed addresses below are the model's placeholders (port 49152 + n on each relay);\n\
             a run uses the ports its relays pick (`vpnsim replay` prints them)\n",
        );
    }
    let _ = writeln!(out, "\nflow records ({}):", prediction.flows.len());
    for record in &prediction.flows {
        let _ = writeln!(out, "  {}", flow_line(scenario, record));
    }
    let _ = writeln!(out, "\ndeliveries ({}):", prediction.deliveries.len());
    for delivery in &prediction.deliveries {
        let _ = writeln!(out, "  {}", delivery_line(scenario, delivery));
    }
    let _ = writeln!(out, "\ndrops ({}):", prediction.drops.len());
    for drop in &prediction.drops {
        let _ = writeln!(out, "  {}", drop_line(scenario, drop));
    }
}

/// Sim milliseconds as seconds: `2.010s`.
pub fn seconds(ms: u64) -> String {
    format!("{}.{:03}s", ms / 1000, ms % 1000)
}

/// A flow-record time as sim seconds (the records count from 2026-01-01T00:00:00Z).
fn sim_seconds(time: UtcTime) -> String {
    let origin = model::utc(0).unix_nanos();
    seconds(time.unix_nanos().saturating_sub(origin) / 1_000_000)
}

/// One flow record on one line.
pub fn flow_line(scenario: &Scenario, record: &FlowRecord) -> String {
    let domain = record
        .inner_domain
        .as_deref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default();
    let contexts: Vec<String> = record
        .outer_contexts
        .iter()
        .map(ToString::to_string)
        .collect();
    format!(
        "{} {} -> {}: {} > {}{domain}, {} .. {} (last packet {}), tx {} packets {} bytes, rx {} packets {} bytes, closed by {}, outer [{}]",
        record.protocol,
        client_name(scenario, record.client.0),
        resource_name(scenario, record.resource.0),
        socket(record.inner_src_ip, record.inner_src_port),
        socket(record.inner_dst_ip, record.inner_dst_port),
        sim_seconds(record.start),
        sim_seconds(record.end),
        sim_seconds(record.last_packet),
        record.tx_packets,
        record.tx_bytes,
        record.rx_packets,
        record.rx_bytes,
        record.close_reason,
        contexts.join(", "),
    )
}

/// One delivery on one line: when, the step, who receives it, the packet.
pub fn delivery_line(scenario: &Scenario, delivery: &Delivery) -> String {
    let to = match &delivery.to {
        Receiver::Client {
            client,
            gateway,
            outer,
        } => format!(
            "to {} from {} (outer {outer})",
            client_name(scenario, client.0),
            gateway_name(scenario, *gateway)
        ),
        Receiver::Resource { gateway } => {
            format!(
                "to the resource behind {}",
                gateway_name(scenario, *gateway)
            )
        }
    };
    format!(
        "{:>9} step {:<3} {to}: {}",
        seconds(delivery.at_ms),
        delivery.step,
        delivery.packet
    )
}

/// One drop on one line: when, the step, where, why, the packet.
pub fn drop_line(scenario: &Scenario, drop: &PacketDrop) -> String {
    format!(
        "{:>9} step {:<3} {}",
        seconds(drop.at_ms),
        drop.step,
        drop_what(scenario, drop)
    )
}

/// Where, why and what was dropped: `by gw (client alice): tcp-without-syn: TCP ...`.
pub fn drop_what(scenario: &Scenario, drop: &PacketDrop) -> String {
    let place = match &drop.place {
        DropPlace::Gateway {
            gateway,
            client: Some(client),
        } => format!(
            "by {} (client {})",
            gateway_name(scenario, *gateway),
            client_name(scenario, client.0)
        ),
        DropPlace::Gateway {
            gateway,
            client: None,
        } => format!("by {} (no client)", gateway_name(scenario, *gateway)),
        DropPlace::Link { between } => format!("on the link {}-{}", between[0], between[1]),
    };
    let icmp = if matches!(drop.reason, DropReason::Gateway(reason) if reason.sends_icmp()) {
        ", ICMP prohibited back"
    } else {
        ""
    };
    format!("{place}: {}{icmp}: {}", drop.reason, drop.packet)
}

/// A step as it is written in a scenario file: `udp: { client: alice, resource: web, ... }`.
pub fn step_line(step: &Step) -> String {
    #[derive(Serialize)]
    struct One<'a>(#[serde(with = "serde_yaml_ng::with::singleton_map_recursive")] &'a Step);
    match serde_yaml_ng::to_value(One(step)) {
        Ok(Value::Mapping(map)) if map.len() == 1 => map
            .iter()
            .map(|(key, value)| format!("{}: {}", flow_yaml(key), flow_yaml(value)))
            .collect(),
        Ok(other) => flow_yaml(&other),
        Err(_) => format!("{step:?}"),
    }
}

/// A YAML value in flow style, on one line.
fn flow_yaml(value: &Value) -> String {
    match value {
        Value::Null => "~".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar(s),
        Value::Sequence(items) => format!(
            "[{}]",
            items.iter().map(flow_yaml).collect::<Vec<_>>().join(", ")
        ),
        Value::Mapping(map) if map.is_empty() => "{}".to_owned(),
        Value::Mapping(map) => format!(
            "{{ {} }}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", flow_yaml(k), flow_yaml(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Tagged(tagged) => format!("{} {}", tagged.tag, flow_yaml(&tagged.value)),
    }
}

/// A string plain when YAML reads it back as the same string, quoted otherwise.
fn scalar(s: &str) -> String {
    let plain = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && s.parse::<f64>().is_err()
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
        );
    if plain {
        s.to_owned()
    } else {
        format!("{s:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORY: &str = "\
# A comment that show keeps.
name: story
topology:
  clients: [{ name: alice, stack: v4 }]
  gateways: [{ name: gw, stack: v4 }]
  resources:
    - { name: web, gateway: gw, cidr: 198.51.100.10/32 }
    - { name: app, gateway: gw, dns: \"*.example.com\" }
  dns_records: [{ name: api.example.com, addresses: [198.51.100.42, \"2001:db8:100::42\"] }]
  grants: [{ client: alice, resource: web, filters: [udp/5000-6000] }, { client: alice, resource: app }]
steps:
  - udp: { client: alice, resource: web, port: 5353, bytes: 64 }
  - idle: { seconds: 3 }
  - udp: { client: alice, resource: web, port: 7000, bytes: 8 }
  - tcp-open: { conn: 1, client: alice, resource: app, domain: api.example.com, ipv6: true, port: 443 }
  - fault: { between: [alice, gw], fault: { drop-next: 2 } }
";

    fn story() -> Scenario {
        Scenario::from_yaml(STORY, "story.yaml").expect("valid")
    }

    #[test]
    fn steps_print_as_they_are_written() {
        let scenario = story();
        let lines: Vec<String> = scenario.steps.iter().map(step_line).collect();
        assert_eq!(
            lines,
            [
                "udp: { client: alice, resource: web, port: 5353, bytes: 64 }",
                "idle: { seconds: 3 }",
                "udp: { client: alice, resource: web, port: 7000, bytes: 8 }",
                "tcp-open: { conn: 1, client: alice, resource: app, domain: api.example.com, ipv6: true, port: 443 }",
                "fault: { between: [alice, gw], fault: { drop-next: 2 } }",
            ]
        );
        assert_eq!(scalar("*.example.com"), "\"*.example.com\"");
        assert_eq!(scalar("2001:db8::1"), "\"2001:db8::1\"");
        assert_eq!(scalar("true"), "\"true\"");
        assert_eq!(scalar("1.5"), "\"1.5\"");
        assert_eq!(scalar("198.51.100.10/32"), "198.51.100.10/32");
    }

    #[test]
    fn show_prints_the_file_the_timeline_and_the_prediction() {
        let mut scenario = story();
        scenario.steps.pop(); // drop-next: fine for the model, but keep the story short
        let text = STORY.replace(
            "  - fault: { between: [alice, gw], fault: { drop-next: 2 } }\n",
            "",
        );
        let out = render(&scenario, &text, "story.yaml");
        assert!(
            out.starts_with("# story.yaml\n# A comment that show keeps.\nname: story\n"),
            "{out}"
        );
        for expected in [
            "  setup        0.000s  relays start, peers allocate, every client on the direct path",
            "  step 0       2.000s  udp: { client: alice, resource: web, port: 5353, bytes: 64 }",
            "  step 1       3.000s  idle: { seconds: 3 }",
            "  step 2       6.000s  udp: { client: alice, resource: web, port: 7000, bytes: 8 }",
            "  end          8.000s  every gateway shuts down",
            "flow records (2):",
            "  udp alice -> web: 100.64.0.2:45353 > 198.51.100.10:5353, 2.010s .. 8.000s (last packet 2.012s), tx 1 packets 64 bytes, rx 1 packets 64 bytes, closed by shutdown, outer [203.0.113.100:51820->203.0.113.10:51820]",
            "     2.011s step 0   to the resource behind gw: UDP 100.64.0.2:45353 > 198.51.100.10:5353 len 64",
            "     2.022s step 0   to alice from gw (outer 203.0.113.100:51820->203.0.113.10:51820): UDP 198.51.100.10:5353 > 100.64.0.2:45353 len 64",
            "     6.010s step 2   by gw (client alice): filter-denied, ICMP prohibited back: UDP 100.64.0.2:47000 > 198.51.100.10:7000 len 8",
            "drops (1):",
        ] {
            assert!(
                out.lines().any(|line| line == expected),
                "missing line {expected:?} in\n{out}"
            );
        }
        assert!(out.contains("(api.example.com)"), "{out}");
        assert!(!out.contains("placeholders"), "no relay, no note: {out}");
    }

    #[test]
    fn show_says_when_the_model_cannot_predict() {
        let text = "\
name: unpredictable
topology:
  clients: [{ name: alice, stack: v4 }]
  gateways: [{ name: gw, stack: v4 }]
  resources: [{ name: web, gateway: gw, cidr: 198.51.100.10/32 }]
  grants: [{ client: alice, resource: web }]
  idle_timeout_s: 0
steps:
  - udp: { client: alice, resource: web, port: 53, bytes: 1 }
";
        let scenario = Scenario::from_yaml(text, "u.yaml").expect("valid");
        let out = render(&scenario, text, "u.yaml");
        assert!(
            out.contains(
                "\nno prediction: unpredictable: an idle timeout of 0 s is not modelled\n"
            ),
            "{out}"
        );
        assert!(out.contains("\n  step 0       2.000s  udp: "), "{out}");
    }

    #[test]
    fn show_file_reports_file_and_line() {
        let dir = std::env::temp_dir().join(format!("vpnsim-show-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("bad.yaml");
        std::fs::write(
            &path,
            STORY.replace("resource: app }]", "resource: ghost }]"),
        )
        .expect("write");
        let error = show_file(&path).expect_err("invalid").to_string();
        assert!(
            error.starts_with(&format!("{}:10: topology.grants[1]", path.display())),
            "{error}"
        );
        let missing = show_file(&dir.join("missing.yaml"))
            .expect_err("missing")
            .to_string();
        assert!(
            missing.ends_with("missing.yaml: cannot read the file"),
            "{missing}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
