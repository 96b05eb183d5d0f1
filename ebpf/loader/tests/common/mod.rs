//! Shared by the loader's kernel tests: installing a fixture's relay state and checking a
//! fixture's run.

#![allow(dead_code)]

use relay_xdp::{Verdict, XdpRelay, reason};
use xdp_fixtures::{Fixture, Setup, frame};

/// Makes the program's maps hold exactly `setup`.
pub fn install(relay: &mut XdpRelay, setup: &Setup) {
    relay
        .configure(setup.relay_v4, setup.relay_v6, &setup.bindings)
        .expect("install the fixture's relay state");
}

/// Runs a fixture (whose setup is installed) and checks the verdict, that exactly its reason
/// was counted once, the output byte for byte, and, for a rewritten frame, every checksum
/// recomputed from scratch.
pub fn run_fixture(relay: &XdpRelay, fixture: &Fixture) {
    let before = relay.reason_counters().expect("read counters");
    let outcome = relay
        .run(&fixture.frame)
        .unwrap_or_else(|error| panic!("{}: test run failed: {error}", fixture.name));
    let after = relay.reason_counters().expect("read counters");
    let delta = after.since(&before);
    assert_eq!(
        delta.non_zero(),
        vec![(reason::name(fixture.reason), 1)],
        "{}: exactly one count, for the expected reason ({})",
        fixture.name,
        fixture.description
    );
    assert_eq!(
        outcome.verdict,
        Verdict::from_action(fixture.verdict),
        "{}: {}",
        fixture.name,
        fixture.description
    );
    assert_eq!(
        hex(&outcome.frame_out),
        hex(&fixture.expected),
        "{}: output frame differs from the expected one ({})",
        fixture.name,
        fixture.description
    );
    if outcome.verdict == Verdict::Tx {
        frame::verify_checksums(&outcome.frame_out)
            .unwrap_or_else(|error| panic!("{}: output checksums: {error}", fixture.name));
    }
}

/// Hex dump, 16 bytes per line, so a failing comparison shows where frames differ.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .enumerate()
        .map(|(line, chunk)| {
            let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
            format!("{:04x}: {}\n", line * 16, hex.join(" "))
        })
        .collect()
}
