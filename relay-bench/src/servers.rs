//! The relays under test, each started in the relay namespace with the same realm, shared
//! secret, address and allocation ports: relay-server (a release build, with or without its
//! XDP program) and coturn's `turnserver`.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::{
    netns::{PEER, RELAY, Role, Topology},
    process::{self, ServerProcess},
};

/// The TURN REST API shared secret every relay and client of the bench uses.
pub const SHARED_SECRET: &str = "bench shared secret, 32 bytes ok";
pub const REALM: &str = "bench.relay";
pub const TURN_PORT: u16 = 3478;
pub const FIRST_RELAY_PORT: u16 = 61_000;
pub const LAST_RELAY_PORT: u16 = 61_099;
/// relay-server's metrics endpoint, in the relay namespace.
pub const METRICS_PORT: u16 = 9100;
/// How long `apt-get` may take to install coturn.
const INSTALL_LIMIT: Duration = Duration::from_secs(600);

/// How relay-server attaches its program (`--xdp-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpAttach {
    /// native if it relays (the first xdp run probes it), else generic.
    Auto,
    Native,
    Generic,
}

impl XdpAttach {
    fn flag(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Native => "native",
            Self::Generic => "generic",
        }
    }
}

/// A relay running in the relay namespace.
#[derive(Debug)]
pub struct Server {
    pub process: ServerProcess,
    pub log: PathBuf,
}

impl Server {
    /// Starts relay-server (`binary`), with its XDP program attached to eth0 if `xdp` says how.
    pub fn relay_server(
        topology: &Topology,
        binary: &Path,
        xdp: Option<XdpAttach>,
        run_dir: &Path,
    ) -> Result<Self> {
        let mut command = topology.command_in(Role::Relay, &binary.to_string_lossy());
        command
            .args(["--public-v4", &RELAY.to_string(), "--realm", REALM])
            .args([
                "--port-range",
                &format!("{FIRST_RELAY_PORT}-{LAST_RELAY_PORT}"),
            ])
            .args(["--metrics", &format!("{RELAY}:{METRICS_PORT}")])
            .env("RELAY_SHARED_SECRET", SHARED_SECRET)
            .env("RUST_LOG", "info");
        if let Some(attach) = xdp {
            command.args(["--xdp", "eth0", "--xdp-mode", attach.flag()]);
        }
        let log = run_dir.join("relay-server.log");
        let process = ServerProcess::start("relay-server", &mut command, &log)?;
        Ok(Self { process, log })
    }

    /// Starts coturn's turnserver with a configuration written into `run_dir`.
    pub fn coturn(topology: &Topology, turnserver: &Path, run_dir: &Path) -> Result<Self> {
        let config = run_dir.join("turnserver.conf");
        std::fs::write(&config, coturn_config(run_dir))
            .with_context(|| format!("cannot write {}", config.display()))?;
        let mut command = topology.command_in(Role::Relay, &turnserver.to_string_lossy());
        command.arg("-c").arg(&config);
        let log = run_dir.join("turnserver.out");
        let process = ServerProcess::start("turnserver", &mut command, &log)?;
        Ok(Self { process, log })
    }

    /// `Err` if the server has exited.
    pub fn check_running(&mut self) -> Result<()> {
        self.process.check_running(&self.log)
    }
}

/// coturn's configuration: the bench's secret, realm, address and ports; UDP only, no TLS,
/// DTLS or CLI; its log and pid file in `run_dir`; the peer's private address allowed.
fn coturn_config(run_dir: &Path) -> String {
    let run_dir = run_dir.display();
    format!(
        "\
# Written by `cargo xtask bench relay` for one run.
listening-ip={RELAY}
relay-ip={RELAY}
listening-port={TURN_PORT}
min-port={FIRST_RELAY_PORT}
max-port={LAST_RELAY_PORT}
realm={REALM}
use-auth-secret
static-auth-secret={SHARED_SECRET}
allowed-peer-ip={PEER}
no-tls
no-dtls
no-tcp
no-tcp-relay
no-cli
no-rfc5780
no-multicast-peers
log-file={run_dir}/turnserver.log
simple-log
pidfile={run_dir}/turnserver.pid
userdb={run_dir}/turndb
"
    )
}

/// relay-server from a release build: builds it (the XDP program with it) and returns the
/// binary's path.
pub fn build_relay_server(workspace: &Path) -> Result<PathBuf> {
    eprintln!("relay-bench: cargo build --release -p relay-server");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    process::status_within(
        Command::new(cargo).current_dir(workspace).args([
            "build",
            "--release",
            "-p",
            "relay-server",
        ]),
        Duration::from_secs(3600),
    )?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace.join("target"), PathBuf::from);
    let binary = target.join("release/relay-server");
    if !binary.is_file() {
        bail!("the build left no {}", binary.display());
    }
    Ok(binary)
}

/// coturn's `turnserver`: installed from Debian with apt-get if missing (the bench runs as
/// root). Returns its path.
pub fn ensure_coturn() -> Result<PathBuf> {
    if let Some(found) = find_turnserver() {
        return Ok(found);
    }
    eprintln!("relay-bench: installing coturn (turnserver) with apt-get");
    process::status_within(
        Command::new("apt-get").args(["update", "-q"]),
        INSTALL_LIMIT,
    )?;
    process::status_within(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends", "coturn"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        INSTALL_LIMIT,
    )?;
    find_turnserver().context("coturn was installed but no turnserver is on PATH or in /usr/bin")
}

fn find_turnserver() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("turnserver"))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coturn_gets_the_secret_the_addresses_and_a_log_in_the_run_dir() {
        let config = coturn_config(Path::new("/tmp/run-1"));
        for line in [
            "use-auth-secret",
            &format!("static-auth-secret={SHARED_SECRET}"),
            "listening-ip=10.202.0.1",
            "relay-ip=10.202.0.1",
            "allowed-peer-ip=10.202.2.2",
            "min-port=61000",
            "max-port=61099",
            "no-tls",
            "no-dtls",
            "no-cli",
            "log-file=/tmp/run-1/turnserver.log",
        ] {
            assert!(config.lines().any(|got| got == line), "{line} in\n{config}");
        }
    }
}
