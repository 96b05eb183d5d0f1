//! `cargo xtask`: the project's tasks.
//!
//! - `setup`: installs what the eBPF build needs (rust-src, bpf-linker), once.
//! - `test`: setup (actionlint too), then the whole test suite, XDP tests in the kernel
//!   included, and the time each crate's tests took (`test_report`).
//! - `explore`: setup, then the main job (see `vpnsim explore --help`).
//! - `merge`: setup, then shards' summaries merged into one (see `vpnsim merge --help`).
//! - `replay`: setup, then one scenario file run and checked (see `vpnsim replay --help`).
//! - `show`: setup, then a scenario file and what the model expects from it (`vpnsim show`).
//! - `promote`: setup, then a scenario file copied into the corpus (`vpnsim promote`).
//! - `real`: setup, then one scenario file played on real Linux networking and checked
//!   against the model (`vpnsim real`), with relay-server and gateway-server built first.
//! - `bench`: setup, then the XDP fast path's twelve paths timed against a floor (see
//!   `vpnsim bench --help`).
//! - `bench relay`: relay throughput in network namespaces, relay-server (userspace and XDP)
//!   against coturn (see `cargo xtask bench relay --help`).
//! - `mutants`: setup, then a mutation score with cargo-mutants (installed when missing).
//! - `fuzz`: cargo-fuzz (installed when missing) on every parser and both state machines.
//!
//! Arguments after the task name go to the underlying command.
//!
//! `explore`, `merge`, `replay`, `show` and `promote` run the `vpnsim` that `cargo xtask test`
//! builds (the dev profile, whose simulation crates and dependencies are optimised), so the
//! main job right after the suite compiles nothing; `--release` before the other arguments
//! builds and runs a release build instead, about a quarter faster per case, for long
//! explorations. `real` and `bench` always run release builds.

mod fuzz;
mod mutants;
mod real_world;
mod setup;
mod shown;
mod test_report;

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <task> [args...]

tasks:
  setup      install rust-src and bpf-linker if they are missing (does nothing otherwise)
  test       setup (actionlint and shellcheck too), then `cargo test --workspace` (extra args
             are passed to cargo test), then the time per crate and the slowest test binaries.
             Without extra args the real world's tests play while the rest compiles
             (their output in target/tools/real-world.log)
  explore    setup, then run the main job: generated scenarios checked against the model
             (`vpnsim explore`; extra args are passed to it, e.g. --count 500 --seed 7,
             --seconds 60, --shard 2/4, --datapath xdp-first, --out DIR); writes
             summary.json, coverage.html and failures/ into DIR (default target/vpnsim).
             It runs the build `test` makes (the dev profile, optimised); `--release` first
             builds and runs a release build, about a quarter faster per case, for long runs
  merge      setup, then merge the summaries of explorations (shards, each the directory it
             wrote with --out) into one summary.json and coverage.html: `vpnsim merge --out
             DIR SHARD_DIR...`; fails if any shard found a failure
  replay     setup, then run one scenario and print its timeline, writing pcap, trace and
             flow log: `vpnsim replay FILE` or `vpnsim replay --case SEED`
  show       setup, then print a scenario file and what the model expects from it (timeline,
             flow records, deliveries, drops): `vpnsim show FILE`
  promote    setup, then copy a scenario file (e.g. an explore failure) into the corpus as
             scenarios/corpus/NAME.yaml: `vpnsim promote FILE NAME`
  real       as root: setup, then play one scenario file on real Linux networking (network
             namespaces, relay-server with XDP, gateway-server on a TUN, kernel TCP) and check
             it against the model: `vpnsim real FILE` (extra args go to it, e.g.
             --tolerance-ms 80)
  bench      setup, then time the XDP fast path's 12 paths against a floor program:
             `vpnsim bench` in release (extra args are passed to it, e.g. --calls N)
  bench relay
             as root: relay throughput in network namespaces, packets/s and CPU per packet
             of relay-server in userspace, relay-server with XDP and coturn on the same load;
             a table on stdout and in target/bench/relay.md (see `bench relay --help`)
  mutants    setup, then mutation testing of the relay and the gateway's flow, DNS and NAT
             code (.cargo/mutants.toml) with cargo-mutants, installed when missing; extra
             args go to it, e.g. --shard 1/8, --list, --file relay/src/lib.rs
  fuzz       fuzz the parsers (STUN, ChannelData, tunnel frames, IP packets, DNS answers) and
             the relay and gateway state machines with cargo-fuzz, installed when missing
             (and a nightly toolchain): `fuzz [TARGET] [--seconds N]` (default: every
             target, 60 s each); seeds the corpora from the corpus stories' pcaps and prints
             executions, exec/s and crashes per target
";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next();
    let rest: Vec<String> = args.collect();
    match task.as_deref() {
        Some("setup") => setup::ensure_ebpf_toolchain(),
        Some("test") => {
            let started = std::time::Instant::now();
            // The XDP program is compiled with bpf-linker, so that comes first; the packages
            // the tests drive download and unpack while the suite compiles, the network tools
            // the real world needs first.
            setup::ensure_ebpf_toolchain()?;
            test_report::phase(started, "the eBPF toolchain is ready");
            let installs = setup::in_background(|| {
                setup::ensure_net_tools()?;
                setup::ensure_browser()?;
                setup::ensure_workflow_lint()
            })?;
            // The whole suite: the real world's tests are built first and play alone once
            // the rest is built (`real_world`). With arguments (a package, a filter), the run is
            // cargo test's own.
            let real_world = if rest.is_empty() {
                let tests = real_world::build()?;
                test_report::phase(started, "the real world's tests are built");
                Some(tests)
            } else {
                None
            };
            let built = test_report::build_tests(&rest);
            installs.finish()?;
            built?;
            test_report::phase(started, "the suite is built");
            test_report::mark_suite_built(&target_dir()?)?;
            setup::report_bpf_availability();
            let played = match real_world {
                Some(tests) => {
                    let played = real_world::play(tests)?;
                    test_report::phase(
                        started,
                        "the real world has ended; the rest of the suite runs",
                    );
                    Some(played)
                }
                None => None,
            };
            test_report::cargo_test(&rest, started, played)
        }
        Some("mutants") => {
            setup::ensure_ebpf_toolchain()?;
            mutants::run(&rest)
        }
        Some("fuzz") => fuzz::run(&rest),
        Some("bench") if rest.first().is_some_and(|first| first == "relay") => {
            // The bench itself is the `relay-bench` crate, so that xtask, compiled before
            // anything else on a fresh machine, stays small.
            setup::ensure_net_tools()?;
            setup::ensure_ebpf_toolchain()?;
            let started = std::time::SystemTime::now();
            cargo(
                &["run", "--quiet", "--package", "relay-bench", "--"],
                &rest[1..],
            )?;
            let table = workspace_root()?.join("target/bench/relay.md");
            // Not after `--help`, which writes nothing.
            let written = std::fs::metadata(&table)
                .and_then(|meta| meta.modified())
                .is_ok_and(|modified| modified >= started);
            if written {
                println!("written to {}", shown::shown(&table).display());
            }
            Ok(())
        }
        Some("real") => {
            setup::ensure_ebpf_toolchain()?;
            setup::ensure_net_tools()?;
            // `vpnsim real` finds the two servers next to itself, in the same profile.
            cargo(
                &[
                    "build",
                    "--quiet",
                    "--release",
                    "--package",
                    "relay-server",
                    "--package",
                    "gateway-server",
                ],
                &[],
            )?;
            vpnsim(Profile::Release, "real", &rest)
        }
        Some("bench") => {
            setup::ensure_ebpf_toolchain()?;
            vpnsim(Profile::Release, "bench", &rest)
        }
        Some(task @ ("explore" | "merge" | "replay" | "show" | "promote")) => {
            setup::ensure_ebpf_toolchain()?;
            let (profile, rest) = match rest.split_first() {
                Some((first, rest)) if first == "--release" => (Profile::Release, rest),
                _ => (Profile::Dev, rest.as_slice()),
            };
            vpnsim(profile, task, rest)
        }
        Some("-h" | "--help" | "help") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown task `{other}`\n\n{USAGE}"),
    }
}

/// Which build of `vpnsim` a task runs.
#[derive(Clone, Copy)]
enum Profile {
    /// The one `cargo test` builds: debug assertions on, the simulation crates and every
    /// dependency optimised (`[profile.dev.package]` in the workspace manifest).
    Dev,
    Release,
}

/// Runs a `vpnsim` subcommand from the given build.
fn vpnsim(profile: Profile, subcommand: &str, rest: &[String]) -> Result<()> {
    match profile {
        Profile::Release => cargo(
            &[
                "run",
                "--quiet",
                "--release",
                "--package",
                "scenarios",
                "--bin",
                "vpnsim",
                "--",
                subcommand,
            ],
            rest,
        ),
        Profile::Dev => {
            // `cargo run -p scenarios` would resolve dependency features for `scenarios` alone
            // and rebuild a dozen crates (serde and what depends on it, among others) that the
            // suite built with the whole workspace's features, dev-dependencies included. Where
            // the suite has been built, building it again is what reuses its `vpnsim` for
            // sure (right after the suite, nothing to do); elsewhere, building only the suite's
            // CLI test, which runs `vpnsim`, builds what `vpnsim` needs and little else.
            let mut build = vec!["test", "--quiet", "--workspace", "--no-run"];
            if !test_report::suite_built(&target_dir()?) {
                build.extend_from_slice(&["--test", "cli"]);
            }
            cargo(&build, &[])?;
            let binary = target_dir()?.join("debug/vpnsim");
            let status = Command::new(&binary)
                .arg(subcommand)
                .args(rest)
                .status()
                .with_context(|| format!("cannot start {}", shown::shown(&binary).display()))?;
            if !status.success() {
                bail!("`vpnsim {subcommand}` failed ({status})");
            }
            Ok(())
        }
    }
}

/// The workspace's root directory: xtask's parent.
pub(crate) fn workspace_root() -> Result<std::path::PathBuf> {
    Ok(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf())
}

/// Where cargo builds: `$CARGO_TARGET_DIR`, or `target/` in the workspace.
pub(crate) fn target_dir() -> Result<std::path::PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return Ok(dir.into());
    }
    Ok(workspace_root()?.join("target"))
}

/// Runs cargo with `args` then `extra`, failing if cargo fails.
fn cargo(args: &[&str], extra: &[String]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(&cargo)
        .args(args)
        .args(extra)
        .status()
        .with_context(|| format!("cannot start {cargo}"))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
