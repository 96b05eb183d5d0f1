//! `cargo xtask fuzz [TARGET] [--seconds N]`: coverage-guided fuzzing of the parsers and the two
//! state machines with cargo-fuzz (libFuzzer).
//!
//! Installs what it needs (cargo-fuzz, pinned; a nightly toolchain, or stable with
//! `RUSTC_BOOTSTRAP=1` when no nightly can be had), seeds a working corpus per target in
//! `target/fuzz/corpus/<target>/` from the committed seeds (`fuzz/corpus/<target>/`) and from the
//! harness's own captures (the pcaps `vpnsim replay` writes for the corpus stories, sorted by
//! kind by `fuzz-seeds`), runs each target (or the one named) for N seconds, and prints a table
//! of executions, executions per second and crashes. Crash inputs land in
//! `fuzz/artifacts/<target>/`; once fixed, they belong in `fuzz/regressions/<target>/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The cargo-fuzz release the README's numbers were measured with.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// The targets, as `fuzz/fuzz_targets/*.rs` names them.
const TARGETS: [&str; 6] = [
    "stun_message",
    "channel_data",
    "tunnel_frame",
    "ip_packet",
    "dns_answer",
    "state_machines",
];
const DEFAULT_SECONDS: u64 = 60;
/// Where the libFuzzer builds and the working corpora go (under the ignored `target/`).
const WORK_DIR: &str = "target/fuzz";

/// What one target's run did.
struct Run {
    target: &'static str,
    executions: u64,
    per_second: u64,
    crashes: Vec<PathBuf>,
}

pub fn run(args: &[String]) -> Result<()> {
    let (targets, seconds) = parse_args(args)?;
    let toolchain = toolchain()?;
    crate::mutants::ensure_installed("cargo-fuzz", Some(CARGO_FUZZ_VERSION))?;
    let paths = Paths::new()?;
    seed_corpora(&paths)?;

    let mut build = toolchain.cargo(&paths);
    build.args(["fuzz", "build", "--fuzz-dir", "fuzz", "--sanitizer", "none"]);
    build.args(["--target-dir", WORK_DIR]);
    crate::setup::run(&mut build)?;

    let mut runs = Vec::new();
    for target in targets {
        runs.push(fuzz_one(&toolchain, &paths, target, seconds)?);
    }
    print_table(&paths, &runs, seconds);
    let crashed: Vec<&Run> = runs.iter().filter(|run| !run.crashes.is_empty()).collect();
    if !crashed.is_empty() {
        for run in &crashed {
            for crash in &run.crashes {
                eprintln!(
                    "{}: crash input {}; replay it with `cargo +nightly fuzz run --fuzz-dir {} \
                     -s none {} {}`",
                    run.target,
                    paths.shown(crash),
                    paths.shown(&paths.root.join("fuzz")),
                    run.target,
                    paths.shown(crash)
                );
            }
        }
        bail!("{} target(s) crashed", crashed.len());
    }
    Ok(())
}

fn parse_args(args: &[String]) -> Result<(Vec<&'static str>, u64)> {
    let mut targets = Vec::new();
    let mut seconds = DEFAULT_SECONDS;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                let value = args.next().context("--seconds needs a number")?;
                seconds = value
                    .parse()
                    .with_context(|| format!("--seconds {value}: not a number"))?;
            }
            name => {
                let target = TARGETS
                    .iter()
                    .find(|known| **known == name)
                    .with_context(|| {
                        format!(
                            "unknown fuzz target `{name}` (known: {})",
                            TARGETS.join(", ")
                        )
                    })?;
                targets.push(*target);
            }
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    Ok((targets, seconds))
}

/// The workspace root, where commands run (printed paths are relative to the user's working
/// directory instead).
struct Paths {
    root: PathBuf,
}

impl Paths {
    fn new() -> Result<Self> {
        Ok(Self {
            root: crate::workspace_root()?,
        })
    }

    /// `path` (absolute, or relative to the root) as the user's working directory sees it.
    fn shown(&self, path: &Path) -> String {
        crate::shown::shown(&self.root.join(path))
            .display()
            .to_string()
    }
}

/// How cargo is run for libFuzzer builds: a nightly toolchain, or stable told to allow
/// nightly flags.
enum Toolchain {
    Nightly,
    StableBootstrap,
}

impl Toolchain {
    /// `cargo` of this toolchain, run in the workspace root.
    fn cargo(&self, paths: &Paths) -> Command {
        let mut command = Command::new("cargo");
        command.current_dir(&paths.root);
        match self {
            Toolchain::Nightly => command.arg("+nightly"),
            Toolchain::StableBootstrap => command.env("RUSTC_BOOTSTRAP", "1"),
        };
        command
    }
}

/// A nightly toolchain (installed through rustup when missing), else stable with
/// `RUSTC_BOOTSTRAP=1`.
fn toolchain() -> Result<Toolchain> {
    let has_nightly = || {
        Command::new("rustup")
            .args(["run", "nightly", "rustc", "--version"])
            .output()
            .is_ok_and(|out| out.status.success())
    };
    if has_nightly() {
        return Ok(Toolchain::Nightly);
    }
    eprintln!("xtask fuzz: installing a nightly toolchain (libFuzzer builds need nightly flags)");
    let installed = Command::new("rustup")
        .args(["toolchain", "install", "nightly", "--profile", "minimal"])
        .status()
        .is_ok_and(|status| status.success());
    if installed && has_nightly() {
        return Ok(Toolchain::Nightly);
    }
    eprintln!(
        "xtask fuzz: no nightly toolchain could be installed; building with the stable one and \
         RUSTC_BOOTSTRAP=1 (which lets stable accept nightly flags)"
    );
    Ok(Toolchain::StableBootstrap)
}

/// Fills `target/fuzz/corpus/<target>/` with the committed seeds' company: the datagrams of the
/// corpus stories' captures (a story is replayed once, when its pcap is missing) and the inputs
/// built on the targets' fixtures.
fn seed_corpora(paths: &Paths) -> Result<()> {
    let mut stories: Vec<PathBuf> = std::fs::read_dir(paths.root.join("scenarios/corpus"))
        .context("cannot list the corpus stories")?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    stories.sort();
    let missing = |story: &PathBuf| !capture_of(paths, story).exists();
    if stories.iter().any(missing) {
        let built = Command::new("cargo")
            .current_dir(&paths.root)
            .args(["build", "--quiet", "--release", "--package", "scenarios"])
            .args(["--bin", "vpnsim"])
            .status()
            .is_ok_and(|status| status.success());
        if built {
            for story in stories.iter().filter(|story| missing(story)) {
                eprintln!("xtask fuzz: capturing {}", paths.shown(story));
                // A story that fails its checks still leaves its capture; one that cannot run
                // only costs its seeds.
                let replayed = Command::new(paths.root.join("target/release/vpnsim"))
                    .current_dir(&paths.root)
                    .arg("replay")
                    .arg(story)
                    .output();
                if !replayed.is_ok_and(|out| out.status.success()) {
                    eprintln!("xtask fuzz: replaying {} failed", paths.shown(story));
                }
            }
        } else {
            eprintln!("xtask fuzz: vpnsim does not build; seeding from the captures there are");
        }
    }
    let pcaps: Vec<PathBuf> = stories
        .iter()
        .map(|story| capture_of(paths, story))
        .filter(|pcap| pcap.exists())
        .collect();
    let corpus = format!("{WORK_DIR}/corpus");
    crate::setup::run(
        Command::new("cargo")
            .current_dir(&paths.root)
            .args(["run", "--quiet", "--release", "--package", "fuzz-targets"])
            .args(["--bin", "fuzz-seeds", "--"])
            .arg(&corpus)
            .args(&pcaps),
    )
}

/// The pcap `vpnsim replay` writes for a story.
fn capture_of(paths: &Paths, story: &Path) -> PathBuf {
    let name = story.file_stem().unwrap_or_default().to_string_lossy();
    paths
        .root
        .join(format!("target/vpnsim/replay/{name}/hops.pcap"))
}

/// Runs one target for `seconds` and reads libFuzzer's statistics.
fn fuzz_one(
    toolchain: &Toolchain,
    paths: &Paths,
    target: &'static str,
    seconds: u64,
) -> Result<Run> {
    let working = format!("{WORK_DIR}/corpus/{target}");
    std::fs::create_dir_all(paths.root.join(&working))
        .with_context(|| format!("cannot create {}", paths.shown(Path::new(&working))))?;
    let artifacts = paths.root.join(format!("fuzz/artifacts/{target}"));
    let before = list(&artifacts);
    eprintln!("xtask fuzz: {target} for {seconds} s");
    let mut command = toolchain.cargo(paths);
    command
        .args(["fuzz", "run", "--fuzz-dir", "fuzz", "--sanitizer", "none"])
        .args(["--target-dir", WORK_DIR, target])
        .arg(&working)
        .arg(format!("fuzz/corpus/{target}"))
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1");
    let out = command
        .output()
        .with_context(|| format!("cannot start cargo fuzz run {target}"))?;
    let log = String::from_utf8_lossy(&out.stderr);
    let log_path = paths.root.join(format!("{WORK_DIR}/{target}.log"));
    std::fs::write(&log_path, log.as_bytes())
        .with_context(|| format!("cannot write {}", paths.shown(&log_path)))?;
    let crashes: Vec<PathBuf> = list(&artifacts)
        .into_iter()
        .filter(|path| !before.contains(path))
        .collect();
    if !out.status.success() && crashes.is_empty() {
        bail!(
            "cargo fuzz run {target} failed ({}) without a crash input; its log is {}",
            out.status,
            paths.shown(&log_path)
        );
    }
    let executions = stat(&log, "stat::number_of_executed_units:")
        .or_else(|| last_status_count(&log))
        .unwrap_or(0);
    let per_second = stat(&log, "stat::average_exec_per_sec:")
        .unwrap_or_else(|| executions / Duration::from_secs(seconds.max(1)).as_secs());
    Ok(Run {
        target,
        executions,
        per_second,
        crashes,
    })
}

/// The files in `dir`, sorted (none if it does not exist).
fn list(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| Some(entry.ok()?.path()))
        .collect();
    files.sort();
    files
}

/// The number after `key` on the line that starts with it.
fn stat(log: &str, key: &str) -> Option<u64> {
    log.lines()
        .find_map(|line| line.trim().strip_prefix(key))
        .and_then(|value| value.trim().parse().ok())
}

/// The execution count of libFuzzer's last status line (`#123456 ...`), for a run a crash ended.
fn last_status_count(log: &str) -> Option<u64> {
    log.lines().rev().find_map(|line| {
        let rest = line.strip_prefix('#')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn print_table(paths: &Paths, runs: &[Run], seconds: u64) {
    println!();
    println!("fuzzing, {seconds} s per target:");
    println!(
        "{:<16} {:>14} {:>10} {:>8}",
        "target", "executions", "exec/s", "crashes"
    );
    for run in runs {
        println!(
            "{:<16} {:>14} {:>10} {:>8}",
            run.target,
            run.executions,
            run.per_second,
            run.crashes.len()
        );
    }
    let work = paths.shown(Path::new(WORK_DIR));
    println!("working corpora: {work}/corpus/<target>/; logs: {work}/<target>.log");
}
