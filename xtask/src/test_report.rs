//! `cargo xtask test`'s own clock: runs `cargo test --workspace`, passing its output through to
//! the terminal as it comes, and reads it on the way: each test binary's `Running ...
//! (target/debug/deps/NAME-HASH)` or `Doc-tests NAME` line (cargo's) and the `test result:`
//! line that follows it (the binary's). At the end it prints the time per crate (summed over
//! the crate's binaries), the slowest binaries, the test time and the wall time with set-up
//! and compiling, so a slow test is seen.
//!
//! cargo's stdout and stderr go into one pipe, so the lines arrive in the order they were
//! written: a result line belongs to the binary announced last. A binary's time is the wall
//! time from its announcement to the next one's (or to the end): that counts its start-up, and
//! also times a binary with a harness of its own that prints no result line.
//!
//! A binary's crate comes from its dep-info file (`target/debug/deps/NAME-HASH.d`, written by
//! rustc), whose first source is the binary's root (`relay/tests/properties.rs`): the package
//! is the `Cargo.toml` above it. Integration tests are named after their file, not their crate
//! (`gateway` and `relay` both have `tests/properties.rs`), so the name alone would not do.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{IsTerminal, Read, Write},
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

/// How many of the slowest binaries the table lists.
const SLOWEST: usize = 10;

/// Says where `cargo xtask test` stands, with the time since it `started`: where a run's time
/// went, set-up and compiling included.
pub(crate) fn phase(started: Instant, what: &str) {
    eprintln!("xtask: [{:>5.0} s] {what}", started.elapsed().as_secs_f64());
}

/// The cargo that runs xtask.
pub(crate) fn cargo_command() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
}

/// Compiles every test binary (`cargo test --workspace --no-run` with `extra` up to a `--`),
/// its output passed through. Exits with cargo's exit status when the build failed.
pub fn build_tests(extra: &[String]) -> Result<()> {
    let cargo_args = extra.split(|arg| arg == "--").next().unwrap_or_default();
    let status = cargo_command()
        .args(["test", "--workspace", "--no-run"])
        .args(cargo_args)
        .current_dir(crate::workspace_root()?)
        .status()
        .context("cannot start cargo")?;
    if !status.success() {
        eprintln!("xtask: `cargo test --workspace --no-run` failed ({status})");
        std::process::exit(exit_code(status));
    }
    Ok(())
}

/// Marks `target` as holding the whole suite's build: from then on `cargo xtask explore` (and
/// the other `vpnsim` tasks) build through the suite's own command, which reuses its `vpnsim`.
pub fn mark_suite_built(target: &Path) -> Result<()> {
    let marker = target.join(SUITE_BUILT);
    std::fs::create_dir_all(marker.parent().expect("a file in a directory"))
        .context("cannot make target/tools")?;
    std::fs::write(&marker, "cargo xtask test built the whole suite here\n")
        .context("cannot mark the suite as built")
}

/// Whether `cargo xtask test` has built the whole suite in `target`.
pub fn suite_built(target: &Path) -> bool {
    target.join(SUITE_BUILT).is_file()
}

/// The marker of [`mark_suite_built`], under the target directory.
const SUITE_BUILT: &str = "tools/suite-built";

/// Runs `cargo test --workspace` with `extra`, then prints the timing table, its wall time
/// counted from `started` (the set-up and the build before included). With the real world
/// `played` already ([`crate::real_world`]), the run leaves its package out, and its binaries
/// join the report. Exits with a failure's exit status when cargo or the real world failed.
pub fn cargo_test(
    extra: &[String],
    started: Instant,
    played: Option<Vec<crate::real_world::Played>>,
) -> Result<()> {
    let root = crate::workspace_root()?;
    let mut args = extra.to_vec();
    if played.is_some() {
        args.splice(
            0..0,
            [
                "--exclude".to_owned(),
                crate::real_world::PACKAGE.to_owned(),
            ],
        );
    }
    let (status, mut transcript, _) = run_teed(&root, &args)?;
    let mut failed = None;
    if !status.success() {
        eprintln!("xtask: `cargo test --workspace` failed ({status})");
        failed = Some(exit_code(status));
    }
    for played in played.into_iter().flatten() {
        if !played.status.success() {
            eprintln!(
                "xtask: the real world's `{}` failed ({})",
                played.binary.what, played.status
            );
            failed = failed.or(Some(exit_code(played.status)));
        }
        transcript.add_played(played.binary, &played.output, played.status);
    }
    let wall = started.elapsed();
    let report = transcript.report(|binary| crate_of(&root, binary));
    if !report.binaries.is_empty() {
        print!("\n{}", report.table(wall));
    }
    if let Some(code) = failed {
        std::process::exit(code);
    }
    Ok(())
}

pub(crate) fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1)
}

/// Runs cargo test, copying its output to ours and reading every line of it.
fn run_teed(root: &Path, extra: &[String]) -> Result<(ExitStatus, Transcript, Duration)> {
    let (mut output, writer) = std::io::pipe().context("cannot make a pipe")?;
    let mut command = cargo_command();
    command
        .args(["test", "--workspace"])
        .args(extra)
        // The paths cargo prints and rustc's dep-info files are relative to the workspace.
        .current_dir(root)
        .stdout(writer.try_clone().context("cannot share the pipe")?)
        .stderr(writer);
    // Through a pipe cargo would drop its colours.
    if std::io::stdout().is_terminal() && std::env::var_os("CARGO_TERM_COLOR").is_none() {
        command.env("CARGO_TERM_COLOR", "always");
    }
    let start = Instant::now();
    let mut child = command.spawn().context("cannot start cargo")?;
    // The pipe ends when cargo and every test binary have closed it: not while `command` still
    // holds our copies of its writing end.
    drop(command);
    let mut transcript = Transcript::default();
    let mut terminal = std::io::stdout();
    let mut chunk = [0u8; 8192];
    let mut pending = Vec::new();
    loop {
        let read = match output.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        // Partial lines too: a test's progress shows as it comes.
        let _ = terminal.write_all(&chunk[..read]);
        let _ = terminal.flush();
        pending.extend_from_slice(&chunk[..read]);
        while let Some(end) = pending.iter().position(|&byte| byte == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            transcript.line(&String::from_utf8_lossy(&line), start.elapsed());
        }
    }
    if !pending.is_empty() {
        transcript.line(&String::from_utf8_lossy(&pending), start.elapsed());
    }
    let status = child.wait().context("cannot wait for cargo test")?;
    let wall = start.elapsed();
    transcript.end(wall);
    Ok((status, transcript, wall))
}

/// One test binary as cargo announced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Binary {
    /// What cargo says it runs: `unittests src/lib.rs`, `tests/corpus.rs`, `doc-tests`.
    pub what: String,
    /// The binary, as cargo prints it (`target/debug/deps/corpus-0fab8a6932f0e0e4`); none for
    /// doc-tests.
    pub path: Option<String>,
    /// The binary's name without its hash (`corpus`), or the crate of doc-tests (`relay_xdp`).
    pub name: String,
    /// Died without a result (a signal, or an exit status other than a failed test's 101).
    pub crashed: bool,
    /// Its `test result:` line, if it printed one.
    pub outcome: Option<Outcome>,
    /// When cargo announced it, since cargo test started.
    pub started: Duration,
    /// From its announcement to the next binary's (or the end).
    pub seconds: f64,
    /// Played alone before cargo test ([`crate::real_world`]), not by it.
    pub played_alone: bool,
}

impl Binary {
    /// The source file cargo names (`src/lib.rs`, `tests/corpus.rs`), if any.
    fn source(&self) -> Option<&str> {
        let source = self.what.strip_prefix("unittests ").unwrap_or(&self.what);
        source.ends_with(".rs").then_some(source)
    }

    fn file_name(&self) -> Option<&str> {
        let path = self.path.as_deref()?;
        Some(path.rsplit('/').next().unwrap_or(path))
    }
}

/// The counts and time of one `test result:` line.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Outcome {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    pub seconds: f64,
}

/// What was read from cargo test's output so far.
#[derive(Debug, Default)]
pub struct Transcript {
    binaries: Vec<Binary>,
}

impl Transcript {
    /// Reads one line, which arrived `at` since cargo test started.
    pub fn line(&mut self, raw: &str, at: Duration) {
        let text = strip_ansi(raw);
        let line = text.trim();
        if let Some(rest) = line.strip_prefix("Running ") {
            self.announce(running(rest), at);
        } else if let Some(name) = line.strip_prefix("Doc-tests ") {
            let binary = Binary {
                what: "doc-tests".to_owned(),
                path: None,
                name: name.trim().to_owned(),
                crashed: false,
                outcome: None,
                started: at,
                seconds: 0.0,
                played_alone: false,
            };
            self.announce(binary, at);
        } else if let Some(outcome) = line.strip_prefix("test result: ").and_then(outcome) {
            if let Some(last) = self.binaries.last_mut() {
                last.outcome.get_or_insert(outcome);
            }
        } else if let Some(rest) = line.strip_prefix("process didn't exit successfully: `") {
            self.note_crash(rest);
        }
    }

    /// A new binary starts: the one before it has ended.
    fn announce(&mut self, mut binary: Binary, at: Duration) {
        self.end(at);
        binary.started = at;
        self.binaries.push(binary);
    }

    /// The binary running at `at` has ended.
    pub fn end(&mut self, at: Duration) {
        if let Some(last) = self.binaries.last_mut()
            && last.seconds == 0.0
        {
            last.seconds = at.saturating_sub(last.started).as_secs_f64();
        }
    }

    /// A binary that played alone before cargo test ([`crate::real_world`]): its time already
    /// measured, its result line read from `output`, a crash from its exit `status` (a failed
    /// test exits with 101, as under cargo test).
    pub fn add_played(&mut self, mut binary: Binary, output: &str, status: ExitStatus) {
        binary.outcome = output.lines().find_map(|line| {
            strip_ansi(line)
                .trim()
                .strip_prefix("test result: ")
                .and_then(outcome)
        });
        binary.crashed = !status.success() && status.code() != Some(101);
        binary.played_alone = true;
        self.binaries.push(binary);
    }

    /// cargo's `process didn't exit successfully: `PATH ARGS` (STATUS)`: a failed test exits
    /// with 101 after its result line; anything else left no result.
    fn note_crash(&mut self, rest: &str) {
        let Some((command, status)) = rest.split_once('`') else {
            return;
        };
        if status.contains("exit status: 101") {
            return;
        }
        let program = command.split_whitespace().next().unwrap_or_default();
        let file = program.rsplit('/').next().unwrap_or(program);
        if let Some(binary) = self
            .binaries
            .iter_mut()
            .rev()
            .find(|binary| binary.file_name() == Some(file))
        {
            binary.crashed = true;
        }
    }

    /// Pairs binaries with results and names each binary's crate with `crate_of` (or, failing
    /// that, after the binary).
    pub fn report(&self, crate_of: impl Fn(&Binary) -> Option<String>) -> Report {
        let mut lib_crates: BTreeMap<&str, String> = BTreeMap::new();
        let mut binaries = Vec::new();
        for binary in &self.binaries {
            let krate = if binary.path.is_none() {
                // Doc-tests name the library; its unit tests came earlier.
                lib_crates
                    .get(binary.name.as_str())
                    .cloned()
                    .unwrap_or_else(|| binary.name.clone())
            } else {
                let krate = crate_of(binary).unwrap_or_else(|| binary.name.clone());
                if binary.source().is_some_and(|source| source == "src/lib.rs") {
                    lib_crates.insert(&binary.name, krate.clone());
                }
                krate
            };
            binaries.push(Timed {
                krate,
                binary: binary.clone(),
            });
        }
        Report { binaries }
    }
}

/// The part of a `Running` line after the word: `unittests src/lib.rs (target/debug/deps/x-h)`,
/// or an older cargo's bare path.
pub(crate) fn running(rest: &str) -> Binary {
    let rest = rest.trim();
    let (what, path) = match rest.rsplit_once(" (") {
        Some((what, path)) if path.ends_with(')') => (what, &path[..path.len() - 1]),
        _ => (rest, rest),
    };
    let file = path.rsplit('/').next().unwrap_or(path);
    let name = match file.rsplit_once('-') {
        Some((name, hash)) if !hash.is_empty() && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            name
        }
        _ => file,
    };
    Binary {
        what: what.to_owned(),
        path: Some(path.to_owned()),
        name: name.to_owned(),
        crashed: false,
        outcome: None,
        started: Duration::ZERO,
        seconds: 0.0,
        played_alone: false,
    }
}

/// `ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.03s`.
fn outcome(rest: &str) -> Option<Outcome> {
    let mut outcome = Outcome::default();
    let mut finished = false;
    for part in rest.split(';') {
        let part = part.trim();
        let part = part.split_once(". ").map_or(part, |(_, count)| count);
        if let Some(time) = part.strip_prefix("finished in ") {
            outcome.seconds = time.trim().strip_suffix('s')?.parse().ok()?;
            finished = true;
        } else if let Some((count, what)) = part.split_once(' ') {
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match what {
                "passed" => outcome.passed = count,
                "failed" => outcome.failed = count,
                "ignored" => outcome.ignored = count,
                _ => {}
            }
        }
    }
    finished.then_some(outcome)
}

/// `text` without terminal colour sequences (`ESC [ ... letter`).
pub(crate) fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The package a test binary belongs to, from its dep-info file and the `Cargo.toml` above
/// its root source file.
pub(crate) fn crate_of(root: &Path, binary: &Binary) -> Option<String> {
    let path = root.join(binary.path.as_deref()?);
    let dep_info = std::fs::read_to_string(PathBuf::from(format!("{}.d", path.display()))).ok()?;
    let sources = dep_info_sources(&dep_info);
    let source = match binary.source() {
        Some(source) => sources.iter().find(|dep| {
            dep.strip_suffix(source)
                .is_some_and(|dir| dir.is_empty() || dir.ends_with('/'))
        })?,
        None => sources.first()?,
    };
    let package_dir = match binary.source() {
        Some(name) => source[..source.len() - name.len()].to_owned(),
        None => {
            // `dir/src/lib.rs` or `dir/tests/x.rs`: the package is two levels up.
            let path = Path::new(source);
            path.parent()?.parent()?.display().to_string()
        }
    };
    let manifest = std::fs::read_to_string(root.join(package_dir).join("Cargo.toml")).ok()?;
    package_name(&manifest)
}

/// The sources of a dep-info file's first rule (`target: a.rs b.rs`), spaces unescaped.
pub fn dep_info_sources(dep_info: &str) -> Vec<String> {
    let first = dep_info.lines().next().unwrap_or_default();
    // The target is a path too; its `: ` is the first one not escaped.
    let Some(split) = first.find(": ") else {
        return Vec::new();
    };
    let mut sources = Vec::new();
    let mut current = String::new();
    let mut chars = first[split + 2..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            ' ' => {
                if !current.is_empty() {
                    sources.push(std::mem::take(&mut current));
                }
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        sources.push(current);
    }
    sources
}

/// `name` in a manifest's `[package]` table.
pub fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package
            && let Some((key, value)) = line.split_once('=')
            && key.trim() == "name"
        {
            return Some(value.trim().trim_matches('"').to_owned());
        }
    }
    None
}

/// A binary with its crate.
#[derive(Debug, Clone)]
pub struct Timed {
    pub krate: String,
    pub binary: Binary,
}

/// Every binary of a run, in the order they ran.
#[derive(Debug)]
pub struct Report {
    pub binaries: Vec<Timed>,
}

#[derive(Default)]
struct CrateTotal {
    binaries: usize,
    tests: u64,
    failed: u64,
    seconds: f64,
}

impl Report {
    /// The table: time per crate, the slowest binaries, test time and wall time.
    pub fn table(&self, wall: Duration) -> String {
        let mut crates: BTreeMap<&str, CrateTotal> = BTreeMap::new();
        let mut total = Outcome::default();
        for timed in &self.binaries {
            let binary = &timed.binary;
            let entry = crates.entry(&timed.krate).or_default();
            entry.binaries += 1;
            entry.seconds += binary.seconds;
            total.seconds += binary.seconds;
            if let Some(outcome) = binary.outcome {
                entry.tests += outcome.passed + outcome.failed;
                entry.failed += outcome.failed;
                total.passed += outcome.passed;
                total.failed += outcome.failed;
                total.ignored += outcome.ignored;
            }
        }
        let mut rows: Vec<(&str, CrateTotal)> = crates.into_iter().collect();
        rows.sort_by(|a, b| b.1.seconds.total_cmp(&a.1.seconds).then(a.0.cmp(b.0)));
        let width = rows
            .iter()
            .map(|(name, _)| name.len())
            .max()
            .unwrap_or(0)
            .max("crate".len());
        let share = |seconds: f64| {
            if total.seconds > 0.0 {
                format!("{:.0}%", 100.0 * seconds / total.seconds)
            } else {
                "-".to_owned()
            }
        };
        let mut out = String::new();
        let _ = writeln!(out, "test time per crate (summed over its test binaries)");
        let _ = writeln!(
            out,
            "  {:<width$}  {:>8}  {:>6}  {:>6}  {:>9}  {:>5}",
            "crate", "binaries", "tests", "failed", "time", "share"
        );
        for (name, row) in &rows {
            let _ = writeln!(
                out,
                "  {:<width$}  {:>8}  {:>6}  {:>6}  {:>8.2}s  {:>5}",
                name,
                row.binaries,
                row.tests,
                row.failed,
                row.seconds,
                share(row.seconds)
            );
        }
        let mut slowest: Vec<&Timed> = self.binaries.iter().collect();
        slowest.sort_by(|a, b| b.binary.seconds.total_cmp(&a.binary.seconds));
        let _ = writeln!(out, "slowest test binaries");
        for timed in slowest.iter().take(SLOWEST) {
            let binary = &timed.binary;
            let result = match binary.outcome {
                Some(outcome) if outcome.failed > 0 => format!("{} failed", outcome.failed),
                Some(outcome) => format!("{} passed", outcome.passed),
                None if binary.crashed => "died without a result".to_owned(),
                None => "no result line".to_owned(),
            };
            let result = if binary.played_alone {
                format!("{result}, played alone")
            } else {
                result
            };
            let _ = writeln!(
                out,
                "  {:>8.2}s  {:<width$}  {}  ({result})",
                binary.seconds, timed.krate, binary.what
            );
        }
        let wall = wall.as_secs_f64();
        let _ = writeln!(
            out,
            "test time {:.1}s in {} binaries ({} passed, {} failed, {} ignored); wall time {:.1}s \
             with set-up and compiling ({:.1}s not in a test)",
            total.seconds,
            self.binaries.len(),
            total.passed,
            total.failed,
            total.ignored,
            wall,
            (wall - total.seconds).max(0.0)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cargo test's output as it reaches us, one stream in the order it was written, each
    /// line with the second it arrived.
    const SAMPLE: &[(f64, &str)] = &[
        (1.0, "   Compiling relay v0.1.0 (/work/main/relay)"),
        (
            41.2,
            "    Finished `test` profile [unoptimized + debuginfo] target(s) in 41.20s",
        ),
        (
            41.3,
            "     Running unittests src/lib.rs (target/debug/deps/relay-0a1b2c3d4e5f6789)",
        ),
        (41.3, "running 31 tests"),
        (41.5, "test allocation::tests::refresh ... ok"),
        (
            41.7,
            "test result: ok. 30 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; \
             finished in 0.42s",
        ),
        (
            41.8,
            "     Running tests/properties.rs (target/debug/deps/properties-53e71cb1e7b198be)",
        ),
        (
            54.3,
            "test result: ok. 4 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; \
             finished in 12.50s",
        ),
        (
            54.3,
            "\u{1b}[1m\u{1b}[92m     Running\u{1b}[0m tests/properties.rs \
             (target/debug/deps/properties-6373752050cfb1d5)",
        ),
        (
            57.4,
            "test result: FAILED. 7 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; \
             finished in 3.05s",
        ),
        (
            57.4,
            "error: test failed, to rerun pass `-p gateway --test properties`",
        ),
        (57.4, "Caused by:"),
        (
            57.4,
            "  process didn't exit successfully: \
             `/work/main/target/debug/deps/properties-6373752050cfb1d5` (exit status: 101)",
        ),
        (
            57.5,
            "     Running tests/no_alloc.rs (target/debug/deps/no_alloc-0123456789abcdef)",
        ),
        (57.5, "no allocation on the forwarding path: ok"),
        (
            59.5,
            "     Running tests/corpus.rs (target/debug/deps/corpus-0fab8a6932f0e0e4)",
        ),
        (
            60.0,
            "  process didn't exit successfully: \
             `/work/main/target/debug/deps/corpus-0fab8a6932f0e0e4 --nocapture` \
             (signal: 11, SIGSEGV: invalid memory reference)",
        ),
        (
            60.0,
            "     Running tests/generated.rs (target/debug/deps/generated-1043dc2e9b5ab987)",
        ),
        (
            155.1,
            "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; \
             finished in 95.10s",
        ),
        (155.2, "   Doc-tests relay"),
        (
            156.2,
            "test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; \
             finished in 1.00s",
        ),
    ];

    fn sample_report() -> Report {
        let mut transcript = Transcript::default();
        for (at, line) in SAMPLE {
            transcript.line(&format!("{line}\n"), Duration::from_secs_f64(*at));
        }
        transcript.end(Duration::from_secs_f64(156.2));
        transcript.report(|binary| {
            let path = binary.path.as_deref()?;
            Some(
                match path.rsplit('/').next()? {
                    "relay-0a1b2c3d4e5f6789" | "properties-53e71cb1e7b198be" => "relay",
                    "properties-6373752050cfb1d5" | "no_alloc-0123456789abcdef" => "gateway",
                    _ => "scenarios",
                }
                .to_owned(),
            )
        })
    }

    #[test]
    fn running_lines_name_the_binary_and_its_source() {
        let binary = running("unittests src/lib.rs (target/debug/deps/relay_xdp-0a1b2c3d4e5f6789)");
        assert_eq!(binary.what, "unittests src/lib.rs");
        assert_eq!(binary.source(), Some("src/lib.rs"));
        assert_eq!(binary.name, "relay_xdp");
        assert_eq!(
            binary.path.as_deref(),
            Some("target/debug/deps/relay_xdp-0a1b2c3d4e5f6789")
        );
        let old = running("target/debug/deps/corpus-0fab8a6932f0e0e4");
        assert_eq!(old.name, "corpus");
        assert_eq!(old.source(), None);
    }

    #[test]
    fn result_lines_give_counts_and_time() {
        assert_eq!(
            outcome(
                "FAILED. 7 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out; finished in 3.05s"
            ),
            Some(Outcome {
                passed: 7,
                failed: 1,
                ignored: 2,
                seconds: 3.05
            })
        );
        assert_eq!(outcome("ok. 1 passed; 0 failed"), None);
    }

    #[test]
    fn results_and_times_belong_to_the_binary_announced_last() {
        let report = sample_report();
        let seen: Vec<(&str, &str, Option<u64>, bool, f64)> = report
            .binaries
            .iter()
            .map(|timed| {
                let binary = &timed.binary;
                (
                    timed.krate.as_str(),
                    binary.what.as_str(),
                    binary.outcome.map(|outcome| outcome.passed),
                    binary.crashed,
                    (binary.seconds * 10.0).round() / 10.0,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("relay", "unittests src/lib.rs", Some(30), false, 0.5),
                ("relay", "tests/properties.rs", Some(4), false, 12.5),
                ("gateway", "tests/properties.rs", Some(7), false, 3.2),
                // A harness of its own: no result line, but a time.
                ("gateway", "tests/no_alloc.rs", None, false, 2.0),
                ("scenarios", "tests/corpus.rs", None, true, 0.5),
                ("scenarios", "tests/generated.rs", Some(3), false, 95.2),
                // The library's doc-tests go to the crate of its unit tests.
                ("relay", "doc-tests", Some(2), false, 1.0),
            ]
        );
    }

    #[test]
    fn the_table_sums_per_crate_and_lists_the_slowest() {
        let table = sample_report().table(Duration::from_secs_f64(200.0));
        let expected = "\
test time per crate (summed over its test binaries)
  crate      binaries   tests  failed       time  share
  scenarios         2       3       0     95.70s    83%
  relay             3      36       0     14.00s    12%
  gateway           2       8       1      5.20s     5%
slowest test binaries
     95.20s  scenarios  tests/generated.rs  (3 passed)
     12.50s  relay      tests/properties.rs  (4 passed)
      3.20s  gateway    tests/properties.rs  (1 failed)
      2.00s  gateway    tests/no_alloc.rs  (no result line)
      1.00s  relay      doc-tests  (2 passed)
      0.50s  relay      unittests src/lib.rs  (30 passed)
      0.50s  scenarios  tests/corpus.rs  (died without a result)
test time 114.9s in 7 binaries (46 passed, 1 failed, 1 ignored); wall time 200.0s with \
set-up and compiling (85.1s not in a test)
";
        assert_eq!(table, expected, "\n{table}");
    }

    #[test]
    fn binaries_played_alone_join_the_report() {
        use std::os::unix::process::ExitStatusExt;
        let mut transcript = Transcript::default();
        transcript.line(
            "     Running unittests src/lib.rs (target/debug/deps/relay-0a)\n",
            Duration::ZERO,
        );
        transcript.line(
            "test result: ok. 3 passed; 0 failed; 0 ignored; finished in 0.1s\n",
            Duration::ZERO,
        );
        transcript.end(Duration::from_secs(2));
        let mut stories = running("tests/corpus_stories.rs (target/debug/deps/corpus_stories-1f)");
        stories.seconds = 170.0;
        let output = "running 6 tests\ntest same_relay_v4 ... ok\n\ntest result: FAILED. 5 passed; \
                      1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 169.90s\n";
        // A failed test exits with 101: a failure, not a crash.
        transcript.add_played(stories, output, ExitStatus::from_raw(101 << 8));
        let mut compare = running("tests/compare.rs (target/debug/deps/compare-2e)");
        compare.seconds = 0.5;
        transcript.add_played(compare, "", ExitStatus::from_raw(9));
        let report = transcript.report(|binary| {
            Some(
                if binary.name == "relay" {
                    "relay"
                } else {
                    "real-world"
                }
                .to_owned(),
            )
        });
        let stories = &report.binaries[1].binary;
        assert_eq!(stories.outcome.map(|o| (o.passed, o.failed)), Some((5, 1)));
        assert!(stories.played_alone && !stories.crashed);
        assert!(report.binaries[2].binary.crashed, "killed by a signal");
        let table = report.table(Duration::from_secs(300));
        assert!(
            table.contains(
                "  170.00s  real-world  tests/corpus_stories.rs  (1 failed, played alone)"
            ),
            "{table}"
        );
        // 300 s of wall time, of which the 2 s cargo test ran and the real world's 170.5 s
        // were in a test.
        assert!(
            table.ends_with(
                "test time 172.5s in 3 binaries (8 passed, 1 failed, 0 ignored); wall time 300.0s \
                 with set-up and compiling (127.5s not in a test)\n"
            ),
            "{table}"
        );
    }

    #[test]
    fn dep_info_gives_the_root_source_first() {
        let dep_info = "/work/main/target/debug/deps/properties-63.d: relay/tests/properties.rs \
                        relay/tests/support/mod.rs\n\nrelay/tests/properties.rs:\n";
        assert_eq!(
            dep_info_sources(dep_info),
            ["relay/tests/properties.rs", "relay/tests/support/mod.rs"]
        );
        assert_eq!(
            dep_info_sources("/w/a\\ b/x.d: my\\ dir/src/lib.rs\n"),
            ["my dir/src/lib.rs"]
        );
    }

    #[test]
    fn the_package_name_is_read_from_its_table() {
        let manifest = "[package]\nname = \"relay-test-support\"\nversion.workspace = true\n\n\
                        [dependencies]\nname = \"not-this\"\n";
        assert_eq!(
            package_name(manifest).as_deref(),
            Some("relay-test-support")
        );
        assert_eq!(package_name("[workspace]\nmembers = []\n"), None);
    }

    #[test]
    fn this_workspace_resolves_an_integration_test_to_its_package() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let dir = std::env::temp_dir().join(format!("xtask-test-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let binary = dir.join("properties-0123456789abcdef");
        std::fs::write(
            dir.join("properties-0123456789abcdef.d"),
            format!(
                "{}.d: gateway/tests/properties.rs gateway/tests/common/mod.rs\n",
                binary.display()
            ),
        )
        .unwrap();
        let found = crate_of(
            root,
            &running(&format!("tests/properties.rs ({})", binary.display())),
        );
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(found.as_deref(), Some("gateway"));
    }

    #[test]
    fn colours_are_stripped() {
        assert_eq!(
            strip_ansi("\u{1b}[1m\u{1b}[92m     Running\u{1b}[0m x"),
            "     Running x"
        );
    }
}
