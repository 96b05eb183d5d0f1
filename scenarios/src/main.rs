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
    /// Run the XDP relay program on its fixtures in the kernel and print verdicts and costs.
    Explore {
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
        Command::Explore { runs } => scenarios::xdp_table::run(runs),
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
