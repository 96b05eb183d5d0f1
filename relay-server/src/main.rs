//! `relay`: a TURN server (RFC 8656 over UDP) with TURN REST API credentials, on the sans-IO
//! relay of the `relay` crate. See `relay --help`.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    ops::RangeInclusive,
    process::ExitCode,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use clap::{ArgGroup, Parser};
use relay_server::{RelayConfig, Server, ServerConfig, TURN_PORT};
use tracing_subscriber::EnvFilter;

/// A TURN relay (RFC 8656 over UDP) with long-term credentials in the TURN REST API
/// convention: username `<expiry-unix>:<id>`, password base64(HMAC-SHA1(secret, username)).
#[derive(Debug, Parser)]
#[command(name = "relay-server", version)]
#[command(group(
    ArgGroup::new("public").required(true).multiple(true).args(["public_v4", "public_v6"])
))]
struct Args {
    /// The relay's public IPv4 address: clients send to it, IPv4 relayed addresses use it.
    #[arg(long, value_name = "IP")]
    public_v4: Option<Ipv4Addr>,
    /// The relay's public IPv6 address.
    #[arg(long, value_name = "IP")]
    public_v6: Option<Ipv6Addr>,
    /// Local IPv4 address to bind [default: the public IPv4 address if this host has it,
    /// else 0.0.0.0]
    #[arg(long, value_name = "IP", requires = "public_v4")]
    listen_v4: Option<Ipv4Addr>,
    /// Local IPv6 address to bind [default: the public IPv6 address if this host has it,
    /// else ::]
    #[arg(long, value_name = "IP", requires = "public_v6")]
    listen_v6: Option<Ipv6Addr>,
    /// UDP port for clients (STUN, TURN control and ChannelData).
    #[arg(long, value_name = "PORT", default_value_t = TURN_PORT)]
    turn_port: u16,
    /// TURN REST API shared secret (prefer the environment variable: flags show in `ps`).
    #[arg(
        long,
        env = "RELAY_SHARED_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    shared_secret: String,
    /// The authentication realm.
    #[arg(long)]
    realm: String,
    /// Ports for allocations, within 49152-65535. The default stays above Linux's default
    /// ephemeral range (32768-60999); an overlap is refused at start.
    #[arg(long, value_name = "FIRST-LAST", default_value = "61000-65535", value_parser = parse_port_range)]
    port_range: RangeInclusive<u16>,
    /// Attach the relay's XDP program to this interface: data on bound channels is then
    /// relayed in the kernel. Detached on exit.
    #[arg(long, value_name = "IFACE")]
    xdp: Option<String>,
    /// How to attach it: `auto` is native where the driver has it, else generic (warned).
    #[arg(long, value_enum, default_value_t = XdpMode::Auto, requires = "xdp")]
    xdp_mode: XdpMode,
    /// Serve metrics for Prometheus at http://ADDR/metrics (OpenMetrics text): allocations,
    /// datagrams relayed, drops by reason, refusals by code, how full the bounded tables are.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Start even if --port-range overlaps net.ipv4.ip_local_port_range (with a warning): an
    /// outgoing socket on the host may then take an allocation's port, which is answered 508.
    #[arg(long)]
    allow_ephemeral_overlap: bool,
    /// Allocations one username may hold at once.
    #[arg(long, value_name = "N", default_value_t = 10)]
    allocation_quota: usize,
    /// Peer IPs one allocation may hold permissions for at once (508 beyond).
    #[arg(long, value_name = "N", default_value_t = 128)]
    max_permissions: usize,
    /// Channels one allocation may hold at once (508 beyond).
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_channels: usize,
    /// Ports kept reserved at once, over all users, for the RESERVATION-TOKEN of an Allocate
    /// with EVEN-PORT's R bit set (508 beyond); each is kept 30 s.
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_reservations: usize,
    /// Peer range refused with 403, beside loopback, unspecified, multicast and link-local,
    /// which are always refused (repeatable).
    #[arg(long, value_name = "CIDR")]
    denied_peer_ip: Vec<ipnet::IpNet>,
    /// Peer range allowed even when denied (repeatable).
    #[arg(long, value_name = "CIDR")]
    allowed_peer_ip: Vec<ipnet::IpNet>,
    /// Seeds port choice, nonces and transaction ids [default: from the start time].
    #[arg(long)]
    seed: Option<u64>,
}

/// `--xdp-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum XdpMode {
    Auto,
    Native,
    Generic,
}

impl From<XdpMode> for relay_xdp::AttachMode {
    fn from(mode: XdpMode) -> Self {
        match mode {
            XdpMode::Auto => Self::Auto,
            XdpMode::Native => Self::Native,
            XdpMode::Generic => Self::Generic,
        }
    }
}

fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let (first, last) = text
        .split_once('-')
        .ok_or_else(|| format!("`{text}` is not FIRST-LAST"))?;
    let parse = |port: &str| {
        port.trim()
            .parse::<u16>()
            .map_err(|error| format!("`{port}`: {error}"))
    };
    let (first, last) = (parse(first)?, parse(last)?);
    if first > last {
        return Err(format!("{first}-{last} is empty"));
    }
    Ok(first..=last)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(target: "relay_server", "{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("the system clock is before 1970")?;
        let mut relay = RelayConfig::new(&args.realm, args.shared_secret.as_bytes());
        relay.public_v4 = args.public_v4;
        relay.public_v6 = args.public_v6;
        relay.port_range = args.port_range;
        relay.allocation_quota = args.allocation_quota;
        relay.max_permissions = args.max_permissions;
        relay.max_channels = args.max_channels;
        relay.max_reservations = args.max_reservations;
        relay.peer_policy = relay::PeerPolicy {
            denied: args.denied_peer_ip,
            allowed: args.allowed_peer_ip,
        };
        relay.unix_time_at_start = since_epoch.as_secs();
        relay.seed = args.seed.unwrap_or_else(|| {
            (since_epoch.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
        });
        let server = Server::bind(ServerConfig {
            relay,
            listen_v4: args.listen_v4,
            listen_v6: args.listen_v6,
            turn_port: args.turn_port,
            xdp: args.xdp.map(|interface| relay_server::XdpSetting {
                interface,
                mode: args.xdp_mode.into(),
            }),
            metrics: args.metrics,
            allow_ephemeral_overlap: args.allow_ephemeral_overlap,
        })
        .await?;
        let shutdown = shutdown_signal()?;
        tracing::info!(target: "relay_server", realm = %args.realm, "relay running");
        server.run(shutdown).await;
        Ok(())
    })
}

/// Completes on the first SIGINT or SIGTERM.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(target: "relay_server", signal = name, "shutting down");
    })
}

/// Completes on the first Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!(target: "relay_server", "shutting down");
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_flags_are_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn flags_parse() {
        let args = Args::try_parse_from([
            "relay-server",
            "--public-v4",
            "203.0.113.1",
            "--public-v6",
            "2001:db8::1",
            "--shared-secret",
            "s3cret",
            "--realm",
            "example.org",
            "--port-range",
            "50000-50999",
        ])
        .expect("valid flags");
        assert_eq!(args.public_v4, Some(Ipv4Addr::new(203, 0, 113, 1)));
        assert_eq!(args.port_range, 50_000..=50_999);
        assert_eq!(args.turn_port, TURN_PORT);
        assert_eq!(args.allocation_quota, 10);
        // The bounds default as the relay's own configuration does.
        let relay = RelayConfig::new("example.org", b"s3cret");
        assert_eq!(
            (
                args.allocation_quota,
                args.max_permissions,
                args.max_channels,
                args.max_reservations
            ),
            (
                relay.allocation_quota,
                relay.max_permissions,
                relay.max_channels,
                relay.max_reservations
            )
        );
        assert_eq!(args.listen_v4, None);
    }

    #[test]
    fn a_public_address_is_required() {
        let error = Args::try_parse_from(["relay-server", "--shared-secret", "s", "--realm", "r"])
            .expect_err("no public address");
        assert_eq!(
            error.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn port_ranges_parse() {
        assert_eq!(parse_port_range("49152-65535"), Ok(49_152..=65_535));
        assert_eq!(parse_port_range("61000-61000"), Ok(61_000..=61_000));
        assert!(parse_port_range("61001-61000").is_err());
        assert!(parse_port_range("61000").is_err());
        assert!(parse_port_range("1-70000").is_err());
    }
}
