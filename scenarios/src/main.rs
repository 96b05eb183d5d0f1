//! `vpnsim`: the harness's command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "vpnsim",
    about = "Deterministic simulation harness for a VPN data plane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate scenarios, run each with the real gateway and relays, and check every flow
    /// record against the reference model. A failure is shrunk, written to a file and replayable.
    Explore {
        /// Scenarios to check.
        #[arg(long, default_value_t = 200)]
        count: u32,
        /// Seed of the generator: the same seed explores the same scenarios.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Explore shard k of n (disjoint seeds), e.g. `--shard 2/4`.
        #[arg(long, default_value = "1/1", value_parser = parse_shard)]
        shard: (u32, u32),
    },
    /// Run one scenario file, print its timeline and flow records, and check it.
    Replay {
        /// A scenario file (YAML).
        file: std::path::PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Run the XDP relay program on its fixtures in the kernel and print verdicts and costs.
    XdpFixtures {
        /// Test runs per fixture (each one BPF_PROG_TEST_RUN call with repeat = 1).
        #[arg(long, default_value_t = 2000)]
        runs: u32,
    },
    /// Time each of the XDP fast path's twelve rewriting paths against a floor program that
    /// only returns XDP_TX (median of many BPF_PROG_TEST_RUN calls with repeat = 1).
    Bench {
        /// Calls per path, and as many for the floor on the same frame.
        #[arg(long, default_value_t = relay_xdp::bench::DEFAULT_CALLS)]
        calls: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Explore { count, seed, shard } => {
            scenarios::explore::explore(count, seed, shard).map(|_| ())
        }
        Command::Replay { file, seed } => scenarios::explore::replay(&file, seed),
        Command::XdpFixtures { runs } => scenarios::xdp_table::run(runs),
        Command::Bench { calls } => scenarios::xdp_bench::run(calls),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vpnsim: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_shard(text: &str) -> Result<(u32, u32), String> {
    let (k, n) = text
        .split_once('/')
        .ok_or_else(|| format!("`{text}` is not k/n"))?;
    let k: u32 = k.parse().map_err(|_| format!("`{k}` is not a number"))?;
    let n: u32 = n.parse().map_err(|_| format!("`{n}` is not a number"))?;
    if k == 0 || n == 0 || k > n {
        return Err(format!("shard {k}/{n}: want 1 <= k <= n"));
    }
    Ok((k, n))
}
