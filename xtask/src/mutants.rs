//! `cargo xtask mutants`: a mutation score for the relay, the gateway's flow, DNS and NAT
//! code, and the XDP program. cargo-mutants (pinned, installed here when missing) changes one thing
//! at a time (a `<` for a `<=`, a function body for a default value) and runs the oracle
//! `.cargo/mutants.toml` names: the crates' own tests and 256 generated cases. A mutant that
//! no test notices is a survivor: a blind spot of the harness, or a change that means nothing.

use std::process::Command;

use anyhow::{Context, Result};

/// The cargo-mutants release the score in the README was measured with.
const CARGO_MUTANTS_VERSION: &str = "25.3.1";
/// Generated cases per mutant (the CI test runs 1000).
const CASES_PER_MUTANT: &str = "256";

pub fn run(extra: &[String]) -> Result<()> {
    ensure_installed("cargo-mutants", Some(CARGO_MUTANTS_VERSION))?;
    let root = crate::workspace_root()?;
    let status = crate::test_report::cargo_command()
        // The XDP program's crate is a workspace member but not a default one (it builds for
        // the host only as a stub), so the whole workspace is named; the globs in
        // `.cargo/mutants.toml` pick the files.
        .args(["mutants", "--workspace", "--output", "target/mutants"])
        .args(extra)
        .current_dir(&root)
        .env("VPNSIM_CASES", CASES_PER_MUTANT)
        // Without the kernel's BPF the XDP program's tests would skip and its mutants would
        // all look like survivors: here a skip fails the oracle instead.
        .env("RELAY_XDP_REQUIRE_BPF", "1")
        .status()
        .context("cannot start cargo mutants")?;
    let results = root.join("target/mutants/mutants.out");
    let listed = |name: &str| {
        std::fs::read_to_string(results.join(name))
            .map(|text| text.lines().filter(|line| !line.is_empty()).count())
            .unwrap_or(0)
    };
    let shown = |name: &str| {
        crate::shown::shown(&results.join(name))
            .display()
            .to_string()
    };
    verdict(status.code(), listed("missed.txt"), listed("timeout.txt"))
        .map_err(|problem| anyhow::anyhow!("{problem} (results in {})", shown(".")))
        .map(|timeouts| {
            if let Some(timeouts) = timeouts {
                eprintln!(
                    "xtask: {timeouts} mutant(s) made the oracle run past the timeout (a hang \
                     it never passed), counted as caught: {}",
                    shown("timeout.txt")
                );
            }
        })
}

/// What cargo-mutants' exit `code` means for the score, with the number of mutants it listed
/// as `missed` and as `timeouts`: a survivor is a failure, a timeout alone is not (the oracle
/// never passed the mutant; cargo-mutants gives timeouts precedence over survivors in its
/// code, so the lists decide). Ok with the number of timeouts, if any.
fn verdict(code: Option<i32>, missed: usize, timeouts: usize) -> Result<Option<usize>, String> {
    // The lists are this run's only when it tested mutants (0, 2 or 3); otherwise they may be
    // an earlier run's.
    match code {
        Some(0 | 2 | 3) if missed > 0 => Err(format!(
            "{missed} mutant(s) survived the oracle, listed in missed.txt"
        )),
        Some(0) => Ok(None),
        Some(3) if timeouts > 0 => Ok(Some(timeouts)),
        Some(2 | 3) => Err("cargo mutants reported survivors or timeouts it did not list".into()),
        Some(4) => Err("the oracle fails on the unmutated tree, so no mutant was tested".into()),
        Some(code) => Err(format!("cargo mutants could not run (exit code {code})")),
        None => Err("cargo mutants was killed by a signal".into()),
    }
}

/// Installs a cargo subcommand (at `version`, if given) unless it is there already.
pub(crate) fn ensure_installed(binary: &str, version: Option<&str>) -> Result<()> {
    let subcommand = binary.trim_start_matches("cargo-");
    let installed = Command::new(binary)
        .args([subcommand, "--version"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned());
    let wanted = match (&installed, version) {
        (Some(text), Some(version)) => !text.contains(version),
        (Some(_), None) => false,
        (None, _) => true,
    };
    if !wanted {
        return Ok(());
    }
    eprintln!(
        "xtask: installing {binary} {}",
        version.unwrap_or("(latest)")
    );
    let mut install = Command::new("cargo");
    install.args(["install", "--locked", binary]);
    if let Some(version) = version {
        install.args(["--version", version]);
    }
    crate::setup::run(&mut install)
}

#[cfg(test)]
mod tests {
    use super::verdict;

    #[test]
    fn survivors_fail_the_run_and_timeouts_alone_do_not() {
        assert_eq!(verdict(Some(0), 0, 0), Ok(None));
        assert_eq!(verdict(Some(3), 0, 2), Ok(Some(2)));
        // Exit code 3 wins over 2 when a run has both, so the list of survivors decides.
        assert!(
            verdict(Some(3), 1, 2)
                .unwrap_err()
                .contains("1 mutant(s) survived")
        );
        assert!(
            verdict(Some(2), 3, 0)
                .unwrap_err()
                .contains("3 mutant(s) survived")
        );
        assert!(
            verdict(Some(4), 0, 0)
                .unwrap_err()
                .contains("unmutated tree")
        );
        assert!(verdict(Some(1), 0, 0).unwrap_err().contains("exit code 1"));
        assert!(verdict(None, 0, 0).is_err());
    }
}
