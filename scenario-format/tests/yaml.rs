//! Scenario files: a readable file parses and round-trips; a broken one gets an error that
//! names the problem, the file and the line.

use scenario_format::{LoadError, PathMode, Scenario, Step};

const STORY: &str = r#"
name: both-peers-on-one-relay
description: The client and the gateway allocate on the same relay; UDP goes through it.
topology:
  clients:
    - name: alice
      stack: v4
      relay: r1
  gateways:
    - name: gw
      stack: v4
      relay: r1
  relays:
    - name: r1
      stack: dual
  resources:
    - name: web
      gateway: gw
      cidr: 198.51.100.10/32
    - name: app
      gateway: gw
      dns: "*.example.com"
  dns_records:
    - name: a.example.com
      addresses: [198.51.100.20]
  grants:
    - client: alice
      resource: web
      filters: [udp/5000-6000]
    - client: alice
      resource: app
  latency:
    default_ms: 10
    links:
      - between: [alice, r1]
        ms: 25
steps:
  - path: { client: alice, gateway: gw, mode: same-relay }
  - udp: { client: alice, resource: web, port: 5353, bytes: 64 }
  - dns-query: { client: alice, name: a.example.com }
  - tcp-open: { conn: 1, client: alice, resource: app, domain: a.example.com, port: 443 }
  - tcp-data: { conn: 1, from: client, bytes: 100 }
  - tcp-close: { conn: 1, by: resource }
  - fault: { between: [alice, r1], fault: { drop-next: 2 } }
  - idle: { seconds: 130 }
"#;

#[test]
fn a_story_parses_and_round_trips() {
    let scenario = Scenario::from_yaml(STORY, "story.yaml").expect("valid");
    assert_eq!(scenario.steps.len(), 8);
    assert!(matches!(
        scenario.steps[0],
        Step::Path {
            mode: PathMode::SameRelay,
            ..
        }
    ));
    let again = Scenario::from_yaml(&scenario.to_yaml(), "again.yaml").expect("round trip");
    assert_eq!(again, scenario);
}

fn error_of(text: &str) -> String {
    Scenario::from_yaml(text, "broken.yaml")
        .expect_err("invalid")
        .to_string()
}

#[test]
fn a_grant_to_a_missing_resource_names_the_file_line_and_problem() {
    let broken = STORY.replace("      resource: app\n", "      resource: ghost\n");
    let message = error_of(&broken);
    let line = broken
        .lines()
        .position(|l| l.contains("ghost"))
        .expect("line")
        + 1;
    assert_eq!(
        message,
        format!("broken.yaml:{line}: topology.grants[1]: no resource named `ghost`")
    );
}

#[test]
fn a_bad_step_points_at_its_line() {
    let broken = STORY.replace("tcp-data: { conn: 1,", "tcp-data: { conn: 2,");
    let message = error_of(&broken);
    let line = broken
        .lines()
        .position(|l| l.contains("conn: 2"))
        .expect("line")
        + 1;
    assert_eq!(
        message,
        format!("broken.yaml:{line}: steps[4]: connection 2 was never opened")
    );
}

#[test]
fn syntax_and_type_errors_carry_line_and_column() {
    let broken = STORY.replace("default_ms: 10", "default_ms: ten");
    let error = Scenario::from_yaml(&broken, "broken.yaml").expect_err("invalid");
    assert!(matches!(error, LoadError::Syntax { .. }), "{error}");
    let line = broken
        .lines()
        .position(|l| l.contains("default_ms: ten"))
        .expect("line")
        + 1;
    assert!(
        error
            .to_string()
            .starts_with(&format!("broken.yaml:{line}:")),
        "{error}"
    );
    let unknown = STORY.replace("  - idle: { seconds: 130 }", "  - nap: { seconds: 130 }");
    assert!(error_of(&unknown).contains("nap"));
}

#[test]
fn paths_need_the_relays_they_use() {
    let broken = STORY.replace("mode: same-relay", "mode: different-relays");
    assert!(
        error_of(&broken)
            .contains("different-relays needs the client and the gateway on two relays")
    );
}
