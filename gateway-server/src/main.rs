//! `gateway-server`: the VPN gateway on a TUN device and real UDP sockets. See
//! `gateway-server --help` and the README.

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use clap::Parser;
use gateway_server::{Options, Server, Setup, control, output::Destination};
use proto::flow::UtcTime;
use tracing_subscriber::EnvFilter;

/// Exit code of a configuration (or command line) the gateway cannot run with.
const EXIT_BAD_CONFIG: u8 = 2;

/// The VPN gateway: tunnel frames from clients on UDP (directly or through its own TURN
/// allocation), their packets to resources through a TUN device, and a flow log.
#[derive(Debug, Parser)]
#[command(name = "gateway-server", version)]
struct Args {
    /// The configuration (YAML): TUN device, listen addresses, DNS server, clients, resources,
    /// grants, DNS mappings, settings and the optional relay.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Where flow records go, one JSON line each: a file (appended to) or `-` for stdout.
    #[arg(long, value_name = "PATH|-", default_value = "-")]
    flow_log: Destination,
    /// Read control commands from stdin, one JSON object per line (map_dns, unmap_dns, grant,
    /// revoke, via_relay, direct, shutdown). EOF does not stop the gateway.
    #[arg(long)]
    control_stdin: bool,
    /// Where events for a runner go, one JSON line each (listening, relayed, channel_bound,
    /// drop, control_error, shut_down): a file (appended to) or `-` for stdout [default: none]
    #[arg(long, value_name = "PATH|-")]
    events: Option<Destination>,
}

fn main() -> ExitCode {
    let start = Instant::now();
    let wall_clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(UtcTime::UNIX_EPOCH, |since| {
            UtcTime::from_unix_nanos(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
        });
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let setup = match read_config(&args.config, start, wall_clock) {
        Ok(setup) => setup,
        Err(error) => {
            eprintln!("gateway-server: {error:#}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    match serve(args, setup) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(target: "gateway_server", "{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn read_config(path: &PathBuf, start: Instant, wall_clock: UtcTime) -> anyhow::Result<Setup> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration {}", path.display()))?;
    Setup::parse(&text, start, wall_clock)
        .with_context(|| format!("invalid configuration {}", path.display()))
}

fn serve(args: Args, setup: Setup) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        // Signals are caught from here on, so one that comes right after `listening` is not
        // lost to the default action.
        let shutdown = shutdown_signal()?;
        let options = Options {
            flow_log: args.flow_log,
            events: args.events,
        };
        let server = Server::start(setup, &options)?;
        let control = args.control_stdin.then(control::read_stdin);
        server.run(shutdown, control).await;
        Ok(())
    })
}

/// Completes on the first SIGINT or SIGTERM.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(target: "gateway_server", signal = name, "shutting down");
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
    fn flags_parse_with_their_defaults() {
        let args = Args::try_parse_from(["gateway-server", "--config", "g.yaml"]).expect("valid");
        assert_eq!(args.flow_log, Destination::Stdout);
        assert_eq!(args.events, None);
        assert!(!args.control_stdin);
        let args = Args::try_parse_from([
            "gateway-server",
            "--config",
            "g.yaml",
            "--flow-log",
            "flows.jsonl",
            "--control-stdin",
            "--events",
            "-",
        ])
        .expect("valid");
        assert_eq!(args.flow_log, Destination::File("flows.jsonl".into()));
        assert_eq!(args.events, Some(Destination::Stdout));
        assert!(args.control_stdin);
    }
}
