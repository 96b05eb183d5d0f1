//! Generated scenarios: every one the model can predict must match the simulation record for
//! record, and one seed must replay the same run.

use proptest::{
    prelude::*,
    test_runner::{RngSeed, TestCaseError},
};
use scenarios::{
    check::{CheckError, run_and_check},
    strategy,
};

proptest! {
    // A fixed seed, so CI runs the same cases every time; VPNSIM_PROPTEST_SEED explores others.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("VPNSIM_PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(24),
        rng_seed: RngSeed::Fixed(
            std::env::var("VPNSIM_PROPTEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1),
        ),
        failure_persistence: None,
        max_global_rejects: 10_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn generated_scenarios_match_the_model(scenario in strategy::scenario(), seed in 0u64..1000) {
        match run_and_check(&scenario, seed) {
            Ok(_) => {}
            // A case the model says it cannot predict is not a failure of the systems; the
            // explorer counts these.
            Err(CheckError::Model(_)) => return Err(TestCaseError::reject("unpredictable")),
            Err(CheckError::Sim(sim::SimError::Unsupported(_))) => return Err(TestCaseError::reject("unsupported")),
            Err(error) => {
                return Err(TestCaseError::fail(format!("{error}\n--- scenario ---\n{}", scenario.to_yaml())));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 6,
        rng_seed: RngSeed::Fixed(2),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// One seed is one run: the same scenario and seed give the same trace, hop for hop, and the
    /// same flow records.
    #[test]
    fn a_seed_replays_the_same_run(scenario in strategy::scenario(), seed in 0u64..1000) {
        let first = sim::run(&scenario, &sim::RunOptions::seeded(seed));
        let second = sim::run(&scenario, &sim::RunOptions::seeded(seed));
        match (first, second) {
            (Ok(first), Ok(second)) => {
                prop_assert_eq!(&first.trace, &second.trace);
                prop_assert_eq!(&first.flows, &second.flows);
                prop_assert!(!first.trace.is_empty());
            }
            (Err(sim::SimError::Unsupported(_)), Err(sim::SimError::Unsupported(_))) => {
                return Err(TestCaseError::reject("unsupported"));
            }
            (first, second) => {
                prop_assert!(false, "runs differ: {:?} vs {:?}", first.err(), second.err());
            }
        }
    }
}
