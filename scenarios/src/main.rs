//! `vpnsim`: the harness's command line.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Result;
use clap::{Parser, Subcommand};
use scenarios::{corpus, promote, show};

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
        file: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Print a scenario file and what the reference model expects from it: the timeline, the
    /// flow records, and every delivery and drop (nothing is simulated).
    Show {
        /// A scenario file (YAML).
        file: PathBuf,
    },
    /// Copy a scenario file (e.g. one a failing `explore` wrote) into the corpus as
    /// `scenarios/corpus/NAME.yaml`, after validating it, and print how to snapshot it.
    Promote {
        /// A scenario file (YAML).
        file: PathBuf,
        /// The story's name in the corpus: lowercase words joined by dashes, e.g.
        /// `same-relay-roam`.
        name: String,
        /// The corpus directory (default: the source tree's `scenarios/corpus`).
        #[arg(long)]
        corpus: Option<PathBuf>,
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
        Command::Show { file } => show::show_file(&file)
            .map(|text| print!("{text}"))
            .map_err(Into::into),
        Command::Promote { file, name, corpus } => run_promote(&file, &name, corpus),
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

fn run_promote(file: &Path, name: &str, corpus: Option<PathBuf>) -> Result<()> {
    let corpus = corpus.unwrap_or_else(corpus::corpus_dir);
    let promoted = promote::promote(file, name, &corpus)?;
    let shown = std::env::current_dir()
        .ok()
        .and_then(|cwd| promoted.path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| promoted.path.clone());
    println!(
        "promoted {} to {} ({} steps)",
        file.display(),
        shown.display(),
        promoted.scenario.steps.len()
    );
    println!(
        "say in its header comment what the story shows and what must happen, then create its\n\
         snapshots (the corpus test runs the story with seed {} and checks it against the model\n\
         first; a story that fails its check gets no snapshot until the bug is fixed):",
        corpus::CORPUS_SEED
    );
    let [insta_env, cargo_insta] = promote::SNAPSHOT_COMMANDS;
    println!("  {insta_env}");
    println!("or, with cargo-insta installed:");
    println!("  {cargo_insta}");
    Ok(())
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
