//! The binary refuses a configuration it cannot run with before it opens anything: exit code
//! 2 and one line on stderr that names the field. Needs no privileges.

use std::{path::PathBuf, process::Command};

fn config_file(name: &str, text: &str) -> PathBuf {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "gateway-server-cli-{}-{name}.yaml",
        std::process::id()
    ));
    std::fs::write(&path, text).expect("a configuration file");
    path
}

/// Runs the binary on `text`; its exit code and stderr.
fn run_with(name: &str, text: &str) -> (Option<i32>, String) {
    let path = config_file(name, text);
    let output = Command::new(env!("CARGO_BIN_EXE_gateway-server"))
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "off")
        .output()
        .expect("gateway-server runs");
    let _ = std::fs::remove_file(&path);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_refused_field_exits_2_naming_it() {
    let base = "tun: tun0\nlisten: [\"10.0.0.1:51820\"]\ndns_server: \"10.0.0.53:53\"\n";
    for (name, extra, field) in [
        (
            "filter",
            "resources: [{ id: 0, cidr: \"10.1.0.0/16\" }]\nclients: []\ngrants: [{ client: 0, resource: 0, filters: [\"tcp/99999\"] }]\n",
            "grants[0].filters[0]",
        ),
        (
            "family",
            "relay: { server: \"[2001:db8::1]:3478\", username: \"1:a\", password: \"p\" }\n",
            "relay.server",
        ),
        ("unknown", "listen_v4: 1\n", "listen_v4"),
    ] {
        let (code, stderr) = run_with(name, &format!("{base}{extra}"));
        assert_eq!(code, Some(2), "{name}: {stderr}");
        assert!(stderr.contains(field), "{name}: {stderr}");
        assert!(stderr.contains("invalid configuration"), "{name}: {stderr}");
    }
}

#[test]
fn a_missing_file_exits_2() {
    let output = Command::new(env!("CARGO_BIN_EXE_gateway-server"))
        .args(["--config", "/nonexistent/gateway.yaml"])
        .output()
        .expect("gateway-server runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/gateway.yaml"));
}
