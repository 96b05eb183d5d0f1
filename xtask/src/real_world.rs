//! The real world's tests, played alone between the suite's build and the rest of its tests.
//!
//! The real world plays its stories on the wall clock, two at a time, for about a minute and
//! a half, and checks each packet's time against the model's within a tolerance of 25 ms. So
//! nothing else runs beside them. They once played while the rest of the suite compiled
//! under `nice`, which saved that minute and a half; on CI's two cores a busy compiler still
//! put whole stories 40 to 100 ms late. Other tests beside the stories once put a story's TCP
//! ACK 29 ms late. `cargo xtask test` builds the `real-world` package's tests first, with the
//! two server binaries they start, then the rest of the suite; it plays the stories once all
//! is built and the set-up in the background has ended, then runs the rest without the
//! package (`--exclude real-world`). The real world's output and results join the suite's
//! report.
//!
//! The package's tests are its integration tests only (its library has `test = false`), so
//! this set is the whole of them.

use std::{
    fs::File,
    io::{BufRead, BufReader, IsTerminal, Read, Seek, SeekFrom, Write},
    path::Path,
    process::{Command, ExitStatus, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::test_report::{self, Binary};

/// The package, as cargo names it and as its directory is named.
pub const PACKAGE: &str = "real-world";

/// One integration test of each server's package, built for the binary cargo builds beside
/// it: the stories start `relay-server` and `gateway-server`, and a `cargo build` of those
/// (without the test profile's features) would compile their dependencies a second time.
const SERVER_TESTS: [&str; 2] = ["uclient", "netns"];

/// The servers the stories start, from `target/debug`, where the build above put them.
const SERVERS: [(&str, &str); 2] = [
    ("relay-server", "VPNSIM_RELAY_SERVER"),
    ("gateway-server", "VPNSIM_GATEWAY_SERVER"),
];

/// The package's test targets: each `tests/NAME.rs` and `tests/NAME/main.rs`.
fn test_targets(root: &Path) -> Result<Vec<String>> {
    let dir = root.join(PACKAGE).join("tests");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot list {PACKAGE}/tests"))? {
        let path = entry?.path();
        let name = if path.is_dir() && path.join("main.rs").is_file() {
            path.file_name()
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            path.file_stem()
        } else {
            None
        };
        if let Some(name) = name {
            names.push(name.to_string_lossy().into_owned());
        }
    }
    names.sort();
    if names.is_empty() {
        bail!("{PACKAGE}/tests holds no test");
    }
    Ok(names)
}

/// Builds the package's tests and the servers (`cargo test --workspace --no-run --test ...`,
/// so that every crate is built with the features the whole suite's build gives it and is not
/// compiled twice); its binaries. Exits with cargo's status when the build failed.
pub fn build() -> Result<Vec<Binary>> {
    let root = crate::workspace_root()?;
    let mut command = test_report::cargo_command();
    command.args(["test", "--workspace", "--no-run"]);
    for name in test_targets(&root)?
        .iter()
        .map(String::as_str)
        .chain(SERVER_TESTS)
    {
        command.args(["--test", name]);
    }
    if std::io::stderr().is_terminal() && std::env::var_os("CARGO_TERM_COLOR").is_none() {
        command.env("CARGO_TERM_COLOR", "always");
    }
    eprintln!("xtask: building the real world's tests first");
    let mut child = command
        .current_dir(&root)
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start cargo")?;
    // cargo names each test binary it built on stderr, which is passed on as it comes.
    let mut binaries = Vec::new();
    let stderr = child.stderr.take().expect("stderr is piped");
    for line in BufReader::new(stderr).lines() {
        let line = line.context("cannot read cargo's output")?;
        eprintln!("{line}");
        let text = test_report::strip_ansi(&line);
        if let Some(rest) = text.trim().strip_prefix("Executable ") {
            let binary = test_report::running(rest);
            if test_report::crate_of(&root, &binary).as_deref() == Some(PACKAGE) {
                binaries.push(binary);
            }
        }
    }
    let status = child.wait().context("cannot wait for cargo")?;
    if !status.success() {
        eprintln!("xtask: building the real world's tests failed ({status})");
        std::process::exit(test_report::exit_code(status));
    }
    if binaries.is_empty() {
        bail!("cargo built no test of {PACKAGE}");
    }
    Ok(binaries)
}

/// One test binary that played, with its output and how it ended.
pub struct Played {
    pub binary: Binary,
    pub output: String,
    pub status: ExitStatus,
}

/// Plays `binaries`, one after the other as cargo test would run them, each in the package's
/// directory (where cargo runs a package's tests), their output in
/// `target/tools/real-world.log`; then prints what each wrote under cargo's kind of heading.
pub fn play(binaries: Vec<Binary>) -> Result<Vec<Played>> {
    let root = crate::workspace_root()?;
    let debug = crate::target_dir()?.join("debug");
    let env = SERVERS.map(|(name, variable)| (variable, debug.join(name)));
    let log = crate::target_dir()?.join("tools/real-world.log");
    let shown = crate::shown::shown(&log).display().to_string();
    // Read back after each binary, for its output.
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&log)
        .context("cannot write target/tools/real-world.log")?;
    eprintln!("xtask: the real world plays, alone (output in {shown})");
    let dir = root.join(PACKAGE);
    let mut played = Vec::new();
    let mut terminal = std::io::stdout();
    for mut binary in binaries {
        let start = file.stream_position().context("the log's position")?;
        let begun = Instant::now();
        let status = Command::new(root.join(binary.path.as_deref().unwrap_or_default()))
            // What the passing stories say too: how close to the tolerance each came.
            .arg("--show-output")
            .current_dir(&dir)
            .envs(env.iter().map(|(variable, path)| (variable, path)))
            .stdout(file.try_clone().context("cannot share the log")?)
            .stderr(file.try_clone().context("cannot share the log")?)
            .stdin(Stdio::null())
            .status()
            .with_context(|| format!("cannot start {} (log in {shown})", binary.name))?;
        binary.seconds = begun.elapsed().as_secs_f64();
        let mut output = String::new();
        file.seek(SeekFrom::Start(start)).context("the log")?;
        file.read_to_string(&mut output)
            .context("cannot read the log")?;
        file.seek(SeekFrom::End(0)).context("the log")?;
        let _ = writeln!(
            terminal,
            "\n     Running {} ({}), played alone before the rest\n",
            binary.what,
            binary.path.as_deref().unwrap_or_default()
        );
        let _ = terminal.write_all(output.as_bytes());
        if !status.success() {
            let _ = writeln!(
                terminal,
                "error: test failed, `{}` exited with {status}",
                binary.what
            );
        }
        let _ = terminal.flush();
        played.push(Played {
            binary,
            output,
            status,
        });
    }
    Ok(played)
}
