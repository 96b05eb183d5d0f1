//! The XDP program's parser, run in the kernel through BPF_PROG_TEST_RUN: every fixture gets
//! its verdict and exactly its reason counter, and random frames never abort.

mod common;

use common::{install, run_fixture};
use proptest::prelude::*;
use relay_xdp::{RunError, Verdict, load_or_skip};
use xdp_fixtures::parser_fixtures;

#[test]
fn every_parser_fixture_gets_its_verdict_and_reason() {
    let Some(mut relay) = load_or_skip("every_parser_fixture_gets_its_verdict_and_reason") else {
        return;
    };
    let fixtures = parser_fixtures();
    assert!(fixtures.len() >= 12);
    for fixture in &fixtures {
        install(&mut relay, &fixture.setup);
        run_fixture(&relay, fixture);
    }
}

#[test]
fn the_program_passes_the_verifier_and_reports_its_size() {
    let Some(relay) = load_or_skip("the_program_passes_the_verifier_and_reports_its_size") else {
        return;
    };
    let verified = relay
        .verified_instruction_count()
        .expect("Linux 5.16+ reports the verified instruction count");
    eprintln!("verifier accepted the XDP program after {verified} instructions");
    assert!(
        verified > 10,
        "a parser that reads headers is more than 10 instructions"
    );
}

#[test]
fn a_frame_shorter_than_ethernet_is_a_clear_error_not_a_panic() {
    let Some(relay) = load_or_skip("a_frame_shorter_than_ethernet_is_a_clear_error") else {
        return;
    };
    let before = relay.reason_counters().expect("read counters");
    for len in 0..relay_xdp::MIN_FRAME_LEN {
        let error = relay.run(&vec![0u8; len]).expect_err("too short");
        assert!(matches!(error, RunError::FrameTooShort { len: l } if l == len));
        assert!(
            error
                .to_string()
                .contains("shorter than an Ethernet header")
        );
    }
    let after = relay.reason_counters().expect("read counters");
    assert_eq!(after, before, "a refused frame never reaches the program");
}

/// Frames that are mostly plausible: random bytes behind a random choice of real headers, so
/// that the parser's deeper branches are reached too, not only the ethertype check.
fn plausible_frame() -> impl Strategy<Value = Vec<u8>> {
    let ethertype = prop_oneof![
        Just([0x08, 0x00]),
        Just([0x86, 0xDD]),
        Just([0x08, 0x06]),
        any::<[u8; 2]>(),
    ];
    (
        any::<[u8; 12]>(),
        ethertype,
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(macs, ethertype, rest)| {
            let mut frame = macs.to_vec();
            frame.extend_from_slice(&ethertype);
            frame.extend_from_slice(&rest);
            frame
        })
}

#[test]
fn random_frames_never_abort_and_every_run_is_counted() {
    let Some(relay) = load_or_skip("random_frames_never_abort_and_every_run_is_counted") else {
        return;
    };
    let before = relay.reason_counters().expect("read counters");
    let runs = std::cell::Cell::new(0u64);
    let config = ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(frame in plausible_frame())| {
        let outcome = relay.run(&frame).expect("a frame of 14+ bytes always runs");
        runs.set(runs.get() + 1);
        prop_assert_ne!(outcome.verdict, Verdict::Aborted);
        prop_assert!(!matches!(outcome.verdict, Verdict::Invalid(_)));
    });
    let after = relay.reason_counters().expect("read counters");
    assert_eq!(runs.get(), 1000);
    assert_eq!(
        after.since(&before).total(),
        runs.get(),
        "one reason counted per run"
    );
}
