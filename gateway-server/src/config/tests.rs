use super::*;

const KEY: &str = "0101010101010101010101010101010101010101010101010101010101010101";

/// A complete file; each test breaks one thing in it.
fn good() -> String {
    format!(
        r#"
tun: tun0
listen: ["203.0.113.10:51820", "[2001:db8::10]:51820"]
dns_server: "203.0.113.53:53"
dns_source_ports: "34000-34007"
idle_timeout_s: 60
dns_min_ttl_s: 2
dns_max_ttl_s: 3600
dns_queue_limit: 8
max_flows: 1000
max_flows_per_client: 100
seed: 7
time_origin_unix_ms: 1767225600000
relay:
  server: "203.0.113.1:3478"
  username: "1767312000:g0"
  password: "secret"
  families: both
clients:
  - {{ id: 0, session_id: 12345, key: "{KEY}", tunnel_v4: "100.64.0.2", tunnel_v6: "fd00:2021:1111::2" }}
resources:
  - {{ id: 0, cidr: "198.51.100.10/32" }}
  - {{ id: 1, dns: "api.example.com" }}
grants:
  - {{ client: 0, resource: 0, filters: ["tcp/443", "udp/5000-5010"] }}
  - {{ client: 0, resource: 1 }}
dns_mappings:
  - {{ client: 0, proxy_ip: "100.96.0.1", domain: "api.example.com" }}
"#
    )
}

fn parse(text: &str) -> Result<Setup, ConfigError> {
    Setup::parse(text, Instant::now(), UtcTime::from_unix_secs(1_000))
}

/// The error of `good()` with `from` replaced by `to`.
fn error_with(from: &str, to: &str) -> ConfigError {
    let text = good();
    assert!(text.contains(from), "the test file has no `{from}`");
    match parse(&text.replacen(from, to, 1)) {
        Ok(_) => panic!("`{to}` in place of `{from}` was accepted"),
        Err(error) => error,
    }
}

#[test]
fn a_complete_file_builds_the_gateway_it_describes() {
    let setup = parse(&good()).expect("a good file");
    let config = setup.gateway.config();
    assert_eq!(config.dns_local, "203.0.113.10:51820".parse().unwrap());
    assert_eq!(config.dns_source_ports, Some(34_000..=34_007));
    assert_eq!(config.idle_timeout, Duration::from_secs(60));
    assert_eq!(config.dns_queue_limit, 8);
    assert_eq!(config.max_flows, 1000);
    assert_eq!(config.max_flows_per_client, 100);
    assert_eq!(config.hash_seed, 7);
    assert_eq!(
        config.time_origin.unix,
        UtcTime::from_unix_secs(1_767_225_600)
    );
    let relay = setup.network.relay.expect("a relay");
    assert_eq!(relay.families, Families::Dual);
    assert_eq!(relay.credentials.username, "1767312000:g0");
    assert_eq!(setup.network.listen.len(), 2);
    assert_eq!(setup.network.tun, "tun0");
}

#[test]
fn omitted_settings_take_the_gateways_defaults_and_the_wall_clock() {
    let setup = parse("tun: tun0\nlisten: [\"10.0.0.1:51820\"]\ndns_server: \"10.0.0.53:53\"\n")
        .expect("a minimal file");
    let config = setup.gateway.config();
    let defaults = GatewayConfig::new(config.time_origin, config.dns_server, config.dns_local);
    assert_eq!(config.idle_timeout, defaults.idle_timeout);
    assert_eq!(config.dns_max_ttl, defaults.dns_max_ttl);
    assert_eq!(config.max_flows, defaults.max_flows);
    assert_eq!(config.dns_source_ports, None);
    assert_eq!(config.time_origin.unix, UtcTime::from_unix_secs(1_000));
    assert!(setup.network.relay.is_none());
}

#[test]
fn every_refused_value_names_its_field() {
    let cases: &[(&str, &str, &str)] = &[
        ("tun: tun0", "tun: a-name-longer-than-15", "tun"),
        (
            r#""[2001:db8::10]:51820""#,
            r#""203.0.113.11:51820""#,
            "listen[1]",
        ),
        (
            r#""203.0.113.10:51820""#,
            r#""203.0.113.10:0""#,
            "listen[0]",
        ),
        ("34000-34007", "51000-52000", "dns_source_ports"),
        ("34000-34007", "34000-", "dns_source_ports"),
        (r#""34000-34007""#, "0", "dns_source_ports"),
        (
            r#"dns_server: "203.0.113.53:53""#,
            r#"dns_server: "[2001:db8::53]:0""#,
            "dns_server",
        ),
        ("idle_timeout_s: 60", "idle_timeout_s: 0", "idle_timeout_s"),
        ("dns_max_ttl_s: 3600", "dns_max_ttl_s: 1", "dns_max_ttl_s"),
        (
            r#"username: "1767312000:g0""#,
            r#"username: """#,
            "relay.username",
        ),
        (KEY, "0101", "clients[0].key"),
        (KEY, &format!("zz{}", &KEY[2..]), "clients[0].key"),
        (
            r#"tunnel_v4: "100.64.0.2""#,
            r#"tunnel_v4: "10.0.0.2""#,
            "clients[0].tunnel_v4",
        ),
        (
            r#"tunnel_v6: "fd00:2021:1111::2""#,
            r#"tunnel_v6: "fd00::2""#,
            "clients[0].tunnel_v6",
        ),
        (
            r#""198.51.100.10/32""#,
            r#""198.51.100.10/33""#,
            "resources[0].cidr",
        ),
        (
            r#"dns: "api.example.com""#,
            r#"dns: "bad..name""#,
            "resources[1].dns",
        ),
        (r#"{ id: 1, dns"#, r#"{ id: 0, dns"#, "resources[1].id"),
        (
            r#""udp/5000-5010""#,
            r#""udp/5010-5000""#,
            "grants[0].filters[1]",
        ),
        (
            "{ client: 0, resource: 1 }",
            "{ client: 9, resource: 1 }",
            "grants[1].client",
        ),
        (
            "{ client: 0, resource: 1 }",
            "{ client: 0, resource: 9 }",
            "grants[1].resource",
        ),
        (
            r#"proxy_ip: "100.96.0.1""#,
            r#"proxy_ip: "100.64.0.9""#,
            "dns_mappings[0].proxy_ip",
        ),
        (
            r#"domain: "api.example.com""#,
            r#"domain: "bad..name""#,
            "dns_mappings[0].domain",
        ),
    ];
    for (from, to, field) in cases {
        let error = error_with(from, to);
        assert_eq!(error.field(), Some(*field), "{to}: {error}");
        assert!(error.to_string().starts_with(field), "{error}");
    }
}

#[test]
fn a_relay_out_of_every_listen_family_is_refused() {
    let text = good().replace(
        r#"listen: ["203.0.113.10:51820", "[2001:db8::10]:51820"]"#,
        r#"listen: ["[2001:db8::10]:51820"]"#,
    );
    let error = parse(&text.replace("203.0.113.53:53", "[2001:db8::53]:53"))
        .expect_err("an IPv4 relay without an IPv4 socket");
    assert_eq!(error.field(), Some("relay.server"), "{error}");
}

#[test]
fn a_resource_must_be_a_cidr_or_a_name() {
    let error = error_with(
        r#"{ id: 0, cidr: "198.51.100.10/32" }"#,
        r#"{ id: 0, cidr: "198.51.100.10/32", dns: "a.example.com" }"#,
    );
    assert_eq!(error.field(), Some("resources[0]"), "{error}");
}

#[test]
fn shape_errors_name_the_field_and_line() {
    for (from, to, field) in [
        ("seed: 7", "seed: -1", "seed"),
        ("seed: 7", "sede: 7", "sede"),
        (r#"session_id: 12345, "#, "", "session_id"),
        ("families: both", "families: all", "relay.families"),
    ] {
        let error = error_with(from, to);
        let ConfigError::Syntax(message) = &error else {
            panic!("{to}: not a syntax error: {error}");
        };
        assert!(message.contains(field), "{to}: {message}");
        assert!(message.contains("line"), "{to}: {message}");
    }
    assert!(matches!(
        parse("tun: [unclosed"),
        Err(ConfigError::Syntax(_))
    ));
    assert!(matches!(parse(""), Err(ConfigError::Syntax(_))));
}

#[test]
fn keys_are_64_hex_digits_in_either_case() {
    let mut expected = [0u8; KEY_LEN];
    expected[0] = 0xAB;
    expected[31] = 0x0F;
    let text = format!("ab{}0F", "0".repeat(60));
    assert_eq!(parse_key(&text), Ok(expected));
    assert_eq!(parse_key(&text.to_uppercase()), Ok(expected));
    assert!(parse_key(&"é".repeat(32)).is_err());
}

#[test]
fn port_ranges_parse() {
    assert_eq!(parse_port_range("34000-34007"), Ok(34_000..=34_007));
    assert_eq!(parse_port_range("53"), Ok(53..=53));
    assert!(parse_port_range("2-1").is_err());
    assert!(parse_port_range("1-70000").is_err());
}
