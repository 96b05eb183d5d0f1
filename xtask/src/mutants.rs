//! `cargo xtask mutants`: a mutation score for the relay, the gateway's flow, DNS and NAT
//! code, and the XDP program. cargo-mutants (pinned, installed here when missing) changes one thing
//! at a time (a `<` for a `<=`, a function body for a default value) and runs the oracle
//! `.cargo/mutants.toml` names: the crates' own tests and 256 generated cases. A mutant that
//! no test notices is a survivor: a blind spot of the harness, or a change that means nothing.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// The cargo-mutants release the score in the README was measured with.
const CARGO_MUTANTS_VERSION: &str = "25.3.1";
/// Generated cases per mutant (the CI test runs 1000).
const CASES_PER_MUTANT: &str = "256";

pub fn run(extra: &[String]) -> Result<()> {
    ensure_installed("cargo-mutants", Some(CARGO_MUTANTS_VERSION))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(&cargo)
        // The XDP program's crate is a workspace member but not a default one (it builds for
        // the host only as a stub), so the whole workspace is named; the globs in
        // `.cargo/mutants.toml` pick the files.
        .args(["mutants", "--workspace", "--output", "target/mutants"])
        .args(extra)
        .env("VPNSIM_CASES", CASES_PER_MUTANT)
        // Without the kernel's BPF the XDP program's tests would skip and its mutants would
        // all look like survivors: here a skip fails the oracle instead.
        .env("RELAY_XDP_REQUIRE_BPF", "1")
        .status()
        .with_context(|| format!("cannot start {cargo} mutants"))?;
    if !status.success() {
        bail!(
            "cargo mutants found survivors or could not run ({status}); the list is in \
             target/mutants/mutants.out/missed.txt"
        );
    }
    Ok(())
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
