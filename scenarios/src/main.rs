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
    /// Generate scenarios, run each with the real gateway and relays (their XDP program beside
    /// them), and check deliveries, drops, flow records and invariants against the reference
    /// model. A failure is shrunk, written to a file and replayable with one command.
    Explore(ExploreArgs),
    /// Merge the summaries of explorations (e.g. the shards of one search, each given as the
    /// directory it wrote with --out, or its summary.json) into one `summary.json` and
    /// `coverage.html`: counts and coverage grids added, runs and failures listed. Fails when
    /// any of them found a failure.
    Merge {
        /// Directories (or summary.json files) of the explorations to merge.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Where the merged summary goes (default: target/vpnsim/merged).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run one scenario (a file, or a generated case by its seed), print its timeline and flow
    /// records, write pcap, trace and flow log, and check it.
    Replay {
        /// A scenario file (YAML); its `# seed:` line gives the run's seed.
        #[arg(required_unless_present = "case")]
        file: Option<PathBuf>,
        /// Regenerate and run the generated case with this seed instead (as `explore` printed).
        #[arg(long, conflicts_with = "file")]
        case: Option<u64>,
        /// The run's seed (default: the file's `# seed:` line, else 1).
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, default_value = "differential")]
        datapath: sim::Datapath,
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
    /// Play a scenario file on real Linux networking (as root): its hosts in network
    /// namespaces, relay-server with XDP attached, gateway-server on a TUN device, real
    /// sockets and kernel TCP; check flow records, deliveries and drops against the same model
    /// as the simulation, and write logs, flow logs and a pcap of the router.
    Real {
        /// A scenario file (YAML).
        #[arg(required_unless_present = "case")]
        file: Option<PathBuf>,
        /// Play the generated case with this seed instead (as `explore` printed it).
        #[arg(long, conflicts_with = "file")]
        case: Option<u64>,
        /// How far a real time may be from the model's, in ms (the test suite's tolerance: a
        /// virtual machine's host takes its CPU away for several ms at a time even when idle).
        #[arg(long, default_value_t = 25)]
        tolerance_ms: u64,
        /// Seeds the relays, the gateways and the TURN clients.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Plays at most, counting the first: the story is played again only while every
        /// finding is about time and the run's own machinery ran late by half the tolerance or
        /// more (a stalled machine, not the systems under test).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
        attempts: u32,
    },
    /// Run the XDP relay program on its fixtures in the kernel and print verdicts and costs.
    XdpFixtures {
        /// Test runs per fixture (each one BPF_PROG_TEST_RUN call with repeat = 1).
        #[arg(long, default_value_t = 2000)]
        runs: u32,
    },
    /// Time each of the XDP fast path's twelve rewriting paths against a floor program that
    /// only returns XDP_TX (interleaved BPF_PROG_TEST_RUN calls with repeat = 1, mid-mean ratio).
    Bench {
        /// Calls per path, and as many for the floor on the same frame.
        #[arg(long, default_value_t = relay_xdp::bench::DEFAULT_CALLS)]
        calls: usize,
    },
}

/// What the command line asks of an exploration.
#[derive(Debug, clap::Args)]
struct ExploreArgs {
    /// Cases to generate (default 1000 unless --seconds is given).
    #[arg(long)]
    count: Option<u64>,
    /// Wall-time budget in seconds.
    #[arg(long)]
    seconds: Option<f64>,
    /// Seed of the exploration: the same seed explores the same cases. Without it, a fresh
    /// seed is drawn (and printed first), so each run explores new cases.
    #[arg(long)]
    seed: Option<u64>,
    /// Explore shard k of n (disjoint cases), e.g. `--shard 2/4`.
    #[arg(long, default_value = "1/1", value_parser = parse_shard)]
    shard: (u32, u32),
    /// How relays move data: differential (XDP and userspace on every datagram, compared),
    /// xdp-first, or userspace.
    #[arg(long, default_value = "differential")]
    datapath: sim::Datapath,
    /// Run cases twice and fail on any difference between the two runs: `every` case,
    /// every N-th case, or `off`.
    #[arg(long, default_value = "every")]
    determinism: scenarios::determinism::Determinism,
    /// Where `summary.json`, `coverage.html` and `failures/` go (default: target/vpnsim).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Explore(args) => run_explore(args),
        Command::Merge { inputs, out } => run_merge(
            &inputs,
            &out.unwrap_or_else(|| scenarios::artifacts::vpnsim_dir().join("merged")),
        ),
        Command::Replay {
            file,
            case,
            seed,
            datapath,
        } => match (file, case) {
            (_, Some(case)) => scenarios::explore::generated_case(case).and_then(|scenario| {
                scenarios::replay::replay_scenario(&scenario, seed.unwrap_or(case), datapath)
            }),
            (Some(file), None) => scenarios::replay::replay(&file, seed, datapath),
            (None, None) => Err(anyhow::anyhow!("give a scenario file or --case SEED")),
        },
        Command::Show { file } => show::show_file(&file)
            .map(|text| print!("{text}"))
            .map_err(Into::into),
        Command::Promote { file, name, corpus } => run_promote(&file, &name, corpus),
        Command::Real {
            file,
            case,
            tolerance_ms,
            seed,
            attempts,
        } => match (file, case) {
            (_, Some(case)) => scenarios::explore::generated_case(case).and_then(|scenario| {
                scenarios::real::run_scenario(
                    &scenario,
                    &format!("case-{case}"),
                    tolerance_ms,
                    seed,
                    attempts,
                )
            }),
            (Some(file), None) => scenarios::real::run_file(&file, tolerance_ms, seed, attempts),
            (None, None) => Err(anyhow::anyhow!("give a scenario file or --case SEED")),
        },
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

fn run_explore(args: ExploreArgs) -> Result<()> {
    let out = args.out.clone().unwrap_or_else(explore::default_out_dir);
    use scenarios::{
        artifacts::shown,
        explore::{self, ExploreOptions},
        summary::Summary,
    };
    let seed = args.seed.unwrap_or_else(explore::fresh_seed);
    println!("exploration seed {seed} (repeat this exploration with --seed {seed})");
    let options = ExploreOptions {
        count: args.count.or(if args.seconds.is_some() {
            None
        } else {
            Some(1000)
        }),
        budget: args.seconds.map(std::time::Duration::from_secs_f64),
        seed,
        shard: args.shard,
        datapath: args.datapath,
        determinism: args.determinism,
        progress: true,
        out: out.clone(),
    };
    let report = explore::explore(&options)?;
    let written = match &report.failure {
        Some(failure) => Some(explore::write_failure(failure, args.datapath, &out)?),
        None => None,
    };
    let summary = Summary::of_report(&report, written.as_ref(), &out);
    print!("{}", summary.table());
    let (json, html) = summary.write(&out)?;
    println!(
        "\nsummary: {}, heat map: {}",
        shown(&json).display(),
        shown(&html).display()
    );
    let (Some(failure), Some(written)) = (&report.failure, written) else {
        return Ok(());
    };
    let path = shown(&written.scenario);
    anyhow::bail!(
        "case {} (exploration seed {seed}, swarm profile {}) failed; shrunk from {} to {} steps \
         in {} simplifications:\n\n{}\n\n\
         written to {} (scenario.yaml, routing.md, trace.txt, routing.txt, hops.pcap, flows.log)\n\
         replay it with:\n  {}\nthe case as generated:\n  cargo xtask replay --case {}\n\
         keep it as a corpus story with:\n  cargo xtask promote {} NAME",
        failure.case_seed,
        failure.profile,
        failure.original.steps.len(),
        failure.shrunk.steps.len(),
        failure.shrink_steps,
        failure.error,
        shown(&written.dir).display(),
        scenarios::artifacts::replay_command(&written.scenario),
        failure.case_seed,
        path.display(),
    )
}

fn run_merge(inputs: &[PathBuf], out: &Path) -> Result<()> {
    use scenarios::artifacts::shown;
    let merged = scenarios::summary::merge_into(inputs, out)?;
    print!("{}", merged.table());
    println!(
        "\nmerged {} summaries into {}",
        inputs.len(),
        shown(out).display()
    );
    if !merged.missing.is_empty() {
        println!(
            "required coverage no run reached: {}",
            merged.missing.join("; ")
        );
    }
    if !merged.failures.is_empty() {
        anyhow::bail!(
            "{} of {} runs found a failure",
            merged.runs.iter().filter(|run| run.failed).count(),
            merged.runs.len()
        );
    }
    Ok(())
}

fn run_promote(file: &Path, name: &str, corpus: Option<PathBuf>) -> Result<()> {
    let corpus = corpus.unwrap_or_else(corpus::corpus_dir);
    let promoted = promote::promote(file, name, &corpus)?;
    println!(
        "promoted {} to {} ({} steps)",
        scenarios::artifacts::shown(file).display(),
        scenarios::artifacts::shown(&promoted.path).display(),
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
