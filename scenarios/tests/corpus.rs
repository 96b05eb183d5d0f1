//! The scenario corpus (`scenarios/corpus/*.yaml`): every story runs in the simulator with the
//! real gateway and relays and the fixed corpus seed, must match the reference model record
//! for record, and must match its snapshots in the workspace's `snapshots/` directory:
//! `<name>__flows.snap` holds its flow records, `<name>__routing.snap` its routing trace (every
//! datagram hop by hop, with the XDP verdict of each relay that received one:
//! `scenarios::routing`).
//!
//! A changed or new snapshot fails the test and is written next to the old one as `.snap.new`
//! (with `CI=true` nothing is written); review with `cargo insta review`, or accept with
//! `INSTA_UPDATE=always cargo test -p scenarios --test corpus`.

use std::{
    collections::BTreeSet,
    panic::{AssertUnwindSafe, catch_unwind},
};

use scenario_format::Scenario;
use scenarios::{
    check::run_and_check,
    corpus::{self, CORPUS_SEED, Entry},
    routing,
};

/// Runs, checks and snapshots one story; panics with the reason on any failure.
fn story(entry: &Entry) {
    let scenario = Scenario::from_file(&entry.path).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        scenario.name,
        entry.name,
        "{}: the scenario's name must be its file name",
        entry.path.display()
    );
    let checked = run_and_check(&scenario, CORPUS_SEED)
        .unwrap_or_else(|error| panic!("{} (seed {CORPUS_SEED}): {error}", entry.path.display()));
    assert!(
        !checked.prediction.flows.is_empty(),
        "{}: a story that predicts no flow checks nothing",
        entry.path.display()
    );
    let name = &entry.name;
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(corpus::snapshot_dir());
    settings.set_prepend_module_to_snapshot(false);
    settings.set_input_file(&entry.path);
    settings.set_description(scenario.description.clone());
    settings.set_omit_expression(true);
    settings.bind(|| {
        // One line per snapshot of the story.
        insta::assert_yaml_snapshot!(
            format!("{name}__flows"),
            corpus::flow_views(&scenario, &checked.outcome.flows)
        );
        // The routing trace shows the relays' XDP verdicts: without the program (no BPF here,
        // and not required) it cannot match, so it is skipped, loudly.
        if checked.outcome.datapath.runs_xdp() {
            insta::assert_snapshot!(
                format!("{name}__routing"),
                routing::render(&scenario, &checked.outcome)
            );
        } else {
            eprintln!(
                "!!! SKIPPED {name}__routing: the relays ran without their XDP program \
                 (the kernel's BPF is unavailable)"
            );
        }
    });
}

#[test]
fn every_story_matches_the_model_and_its_snapshots() {
    let entries = corpus::entries(&corpus::corpus_dir()).expect("the corpus directory");
    assert!(!entries.is_empty(), "the corpus is empty");
    let mut failed = Vec::new();
    for entry in &entries {
        // Every story runs, so one failure does not hide the others' snapshots.
        if catch_unwind(AssertUnwindSafe(|| story(entry))).is_err() {
            failed.push(entry.name.clone());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} stories failed (see above): {}",
        failed.len(),
        entries.len(),
        failed.join(", ")
    );
}

/// A snapshot whose story left the corpus would never be checked again.
#[test]
fn every_snapshot_belongs_to_a_story() {
    let names: BTreeSet<String> = corpus::entries(&corpus::corpus_dir())
        .expect("the corpus directory")
        .into_iter()
        .map(|entry| entry.name)
        .collect();
    let Ok(dir) = std::fs::read_dir(corpus::snapshot_dir()) else {
        return;
    };
    let mut orphans = Vec::new();
    for item in dir {
        let file = item.expect("a directory entry").file_name();
        let file = file.to_string_lossy();
        let Some(stem) = file.strip_suffix(".snap") else {
            continue;
        };
        if let Some((story, _kind)) = stem.split_once("__")
            && !names.contains(story)
        {
            orphans.push(file.into_owned());
        }
    }
    assert!(
        orphans.is_empty(),
        "snapshots without a story in scenarios/corpus (delete them): {}",
        orphans.join(", ")
    );
}
