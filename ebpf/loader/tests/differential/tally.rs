//! What a run counted (reasons, outcomes, disagreements), its report, and the assertions made
//! on it at the end.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
};

use relay_xdp::reason;

use crate::run::Run;

/// The floor per run.
const MIN_PACKETS: usize = 10_000;

/// Tallies of one run.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) packets: usize,
    /// Client operations performed.
    pub(crate) operations: usize,
    /// The most channel bindings the relay held at once.
    pub(crate) most_bindings: usize,
    /// Runs per XDP reason name.
    pub(crate) reasons: BTreeMap<&'static str, usize>,
    /// (packet kind, XDP reason, userspace outcome) -> count.
    pub(crate) outcomes: BTreeMap<(&'static str, &'static str, String), usize>,
    /// Allowed passes of datagrams userspace relayed, by reason.
    pub(crate) allowed_passes: BTreeMap<&'static str, usize>,
    /// Datagrams on a binding removed earlier: all must pass.
    pub(crate) on_removed_bindings: usize,
    /// Disagreements: one example per kind, and how many.
    pub(crate) failures: BTreeMap<String, (usize, String)>,
}

impl Tally {
    pub(crate) fn fail(&mut self, kind: String, example: String) {
        let entry = self.failures.entry(kind).or_insert((0, example));
        entry.0 += 1;
    }

    /// Counts a run under `name`, the one reason XDP counted for it.
    pub(crate) fn count(&mut self, run: &Run<'_>, name: &'static str) {
        *self.reasons.entry(name).or_default() += 1;
        *self
            .outcomes
            .entry((run.packet.kind, name, run.user.clone()))
            .or_default() += 1;
        if run.packet.kind.ends_with("removed-binding") && run.relayed.is_none() {
            self.on_removed_bindings += 1;
        }
    }
}

/// The run's counts: XDP reasons, allowed passes, and outcomes by packet kind.
pub(crate) fn report(tally: &Tally, seeds: usize) -> String {
    let mut report = String::new();
    let _ = writeln!(
        report,
        "differential: {} packets over {seeds} seeds, {} client operations, up to {} bindings \
         at once, {} packets on removed bindings (neither relayed them)",
        tally.packets, tally.operations, tally.most_bindings, tally.on_removed_bindings
    );
    let _ = writeln!(report, "XDP reasons:");
    for (name, count) in &tally.reasons {
        let _ = writeln!(report, "  {name:<34} {count:>6}");
    }
    let _ = writeln!(
        report,
        "allowed passes of datagrams userspace relays: {:?}",
        tally.allowed_passes
    );
    let _ = writeln!(report, "outcomes (packet kind, XDP reason, userspace):");
    for ((kind, name, user), count) in &tally.outcomes {
        let _ = writeln!(report, "  {kind:<26} {name:<34} {user:<42} {count:>6}");
    }
    report
}

/// Every kind of disagreement, with its count and first example, in one panic.
pub(crate) fn assert_no_disagreements(tally: &Tally) {
    if tally.failures.is_empty() {
        return;
    }
    let mut message = format!("{} kinds of disagreement:\n", tally.failures.len());
    for (kind, (count, example)) in &tally.failures {
        let _ = writeln!(message, "\n[{count}x] {kind}\n  first: {example}");
    }
    panic!("{message}");
}

/// The default run reaches the floor of packets, every TX path, enough packets on
/// removed bindings, and most of the allowed pass reasons.
pub(crate) fn assert_the_default_run_covers_enough(tally: &Tally) {
    assert!(tally.packets >= MIN_PACKETS, "{} packets", tally.packets);
    let missing: Vec<&str> = (reason::TX_FIRST..reason::TX_END)
        .map(reason::name)
        .filter(|name| !tally.reasons.contains_key(name))
        .collect();
    assert!(missing.is_empty(), "TX paths never hit: {missing:?}");
    assert!(
        tally.on_removed_bindings >= 100,
        "only {} packets on removed bindings",
        tally.on_removed_bindings
    );
    let seen: BTreeSet<&str> = tally.allowed_passes.keys().copied().collect();
    assert!(
        seen.len() >= 4,
        "the allowed pass reasons are exercised: {seen:?}"
    );
}
